"""Stable Diffusion pipelines: real weights from disk (or the tiny random twin), a variant's, and running one.

* :func:`load_sd_pipeline` loads real weights from a local folder or from the
  Hugging Face cache. It never downloads: when the weights are absent it
  raises :class:`~cpdm.errors.MissingWeightsError` saying how to get them.
  With ``offline_tiny`` it builds :func:`cpdm.diffusion.tiny.tiny_sd_pipeline`.
* :func:`variant_pipeline` builds the pipeline of a variant (the one place
  where an unlearned variant changes the model).
* :func:`generate_images` turns prompts into images, each from its own seeded
  generator, with the CPDM paper's defaults (DDIM, 50 steps, classifier-free
  guidance 9, seed 23).

Full-size architectures with random weights, for speed measurements, are
in :mod:`cpdm.diffusion.architectures`.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import diffusers
import torch
from diffusers import StableDiffusionPipeline
from diffusers.models.attention_processor import AttnProcessor2_0
from PIL import Image
from transformers import CLIPTokenizer

from cpdm.diffusion.settings import (
    DEFAULT_SD_MODEL,
    PAPER_GUIDANCE,
    PAPER_SEED,
    PAPER_STEPS,
    PER_IMAGE_SEEDS,
    RELEASE_SEEDS,
    SCHEDULERS,
    TINY_BASE,
    uses_tiny_model,
)
from cpdm.diffusion.tiny import tiny_clip_tokenizer, tiny_sd_pipeline
from cpdm.diffusion.variants import apply_variant
from cpdm.errors import CpdmError, MissingWeightsError
from cpdm.hf_cache import hf_hub_cache
from cpdm.store.images import encode_png
from cpdm.store.workspace import BASELINE_METHOD

# runwayml took its repository down; the same files live on under this id.
SD15_MIRROR = "stable-diffusion-v1-5/stable-diffusion-v1-5"

# cpdm refuses an image side above this many times the side the model was trained at. A model makes
# nothing useful that far out, and memory, not the model, would then end the run: a 100000-pixel side
# asks for tens of gigabytes for the first latent alone.
MAX_SIDE_FACTOR = 4


def _looks_like_path(model: str) -> bool:
    """True for an existing folder, or a name that can only be one (./x, /x, ~/x), not a hub id."""
    return model.startswith((".", "/", "~")) or Path(model).expanduser().exists()


def _pretrained_source(model: str) -> str:
    """What ``from_pretrained`` reads for ``model``: a local diffusers folder (checked), or the hub id itself."""
    if not _looks_like_path(model):
        return model
    folder = Path(model).expanduser()
    if not (folder / "model_index.json").is_file():
        raise MissingWeightsError(
            f"{model}: not a Stable Diffusion folder (no model_index.json); "
            f"pass a folder saved by diffusers, or a model id such as {DEFAULT_SD_MODEL}"
        )
    return str(folder)


def _missing_weights_message(model: str) -> str:
    """Say which weights are missing, where we looked, and how to get them."""
    message = (
        f"Stable Diffusion weights for {model!r} are not on this machine (looked in the Hugging Face cache "
        f"{hf_hub_cache()}). On a machine with a network run `hf download {model}` "
        "(older huggingface_hub: `huggingface-cli download`) and copy the cache here, or pass a local folder "
        "in diffusers layout; --offline-tiny uses a tiny random model instead"
    )
    if model == DEFAULT_SD_MODEL:
        message += f" (the {model} repository is mirrored as {SD15_MIRROR})"
    return message


def load_sd_pipeline(
    model: str = DEFAULT_SD_MODEL,
    device: str | torch.device = "cpu",
    dtype: torch.dtype | str | None = None,
    offline_tiny: bool = False,
):
    """Load a Stable Diffusion pipeline without ever downloading.

    ``model`` is a local folder in diffusers layout or a Hugging Face model id
    already in the local cache. With ``offline_tiny`` the tiny random pipeline
    is returned instead (``model`` is ignored). Missing weights raise
    :class:`MissingWeightsError` naming the model and how to get it; nothing
    is substituted silently. The safety checker is not loaded: generations
    are compared with artworks, not shown to the public.
    """
    if offline_tiny:
        return tiny_sd_pipeline(device=device)
    torch_dtype = resolve_dtype(dtype, device)
    kwargs = {
        "dtype": torch_dtype,
        "safety_checker": None,
        "feature_extractor": None,
        "requires_safety_checker": False,
        "local_files_only": True,
        "cache_dir": str(hf_hub_cache()),
    }
    source = _pretrained_source(model)
    try:
        pipeline = StableDiffusionPipeline.from_pretrained(source, **kwargs)
    except (OSError, ValueError) as exc:
        # diffusers/huggingface_hub report a cache miss as OSError (LocalEntryNotFoundError)
        # or EnvironmentError; a partial download surfaces as a missing component file.
        if source is model:
            raise MissingWeightsError(_missing_weights_message(model)) from exc
        raise MissingWeightsError(f"{source}: could not load Stable Diffusion weights ({exc})") from exc
    pipeline.set_progress_bar_config(disable=True)
    return pipeline.to(device)


def resolve_dtype(dtype: torch.dtype | str | None, device: str | torch.device) -> torch.dtype:
    """float16 on CUDA and float32 elsewhere, unless a dtype is given ("float16", torch.bfloat16, ...)."""
    if dtype is None:
        return torch.float16 if str(device).startswith("cuda") else torch.float32
    if isinstance(dtype, torch.dtype):
        return dtype
    resolved = getattr(torch, str(dtype), None)
    if not isinstance(resolved, torch.dtype):
        raise CpdmError(f"unknown dtype {dtype!r} (use float32, float16 or bfloat16)")
    return resolved


def set_scheduler(pipeline, name: str) -> None:
    """Swap the pipeline's sampler for ``name`` (ddim, pndm, lms, euler, euler-a, dpm), keeping its config."""
    if name not in SCHEDULERS:
        raise CpdmError(f"unknown scheduler {name!r} (use one of: {', '.join(SCHEDULERS)})")
    scheduler_class = getattr(diffusers, SCHEDULERS[name])
    pipeline.scheduler = scheduler_class.from_config(pipeline.scheduler.config)


def variant_pipeline(variant, *, root=None, device="cpu", dtype: str | None = None, offline_tiny: bool = False,
                     scheduler: str = "ddim"):
    """The pipeline that generates as ``variant``: its base model, then whatever the variant changes.

    The base model is a local diffusers folder or a model id in the Hugging
    Face cache (never downloaded); ``offline_tiny`` (or a variant whose base
    model is ``TINY_BASE``) gives the tiny random pipeline. ``root`` is
    the workspace folder that relative artifact paths start from. On CUDA the
    attention runs through PyTorch's scaled-dot-product attention.
    """
    tiny = uses_tiny_model(variant.base_model, offline_tiny)
    pipeline = load_sd_pipeline(variant.base_model, device=device, dtype=dtype, offline_tiny=tiny)
    if tiny and dtype:
        pipeline = pipeline.to(dtype=resolve_dtype(dtype, device))
    prepare_for_generation(pipeline, device, scheduler)
    # The one place a variant changes the model: an unlearning method's artifact
    # (replaced UNet parameters) or inference-time settings. The baseline
    # ("original") is used exactly as loaded. apply_variant returns the pipeline to
    # use (an inference-time method wraps the loaded one).
    if variant.method != BASELINE_METHOD:
        pipeline = apply_variant(pipeline, variant, root, base_model=TINY_BASE if tiny else variant.base_model)
    return pipeline


def prepare_for_generation(pipeline, device, scheduler: str = "ddim") -> None:
    """What generation sets on any loaded pipeline: the sampler, and on CUDA PyTorch's scaled-dot-product attention."""
    set_scheduler(pipeline, scheduler)
    if str(device).startswith("cuda"):
        pipeline.unet.set_attn_processor(AttnProcessor2_0())


def variant_tokenizer(variant, offline_tiny: bool = False):
    """The tokenizer of the variant's text encoder, read without loading the model.

    A run counts prompt tokens with it (a truncated prompt is recorded with its
    images) before it knows whether anything is left to generate.
    """
    if uses_tiny_model(variant.base_model, offline_tiny):
        return tiny_clip_tokenizer()
    source = _pretrained_source(variant.base_model)
    try:
        return CLIPTokenizer.from_pretrained(source, subfolder="tokenizer", local_files_only=True,
                                             cache_dir=str(hf_hub_cache()))
    except (OSError, ValueError) as exc:
        if source is variant.base_model:
            raise MissingWeightsError(_missing_weights_message(source)) from exc
        raise MissingWeightsError(f"{source}: could not load the Stable Diffusion tokenizer ({exc})") from exc


def prompt_token_count(tokenizer, text: str) -> int:
    """Tokens a pipeline's text encoder would need for ``text`` (with start and end tokens), by its ``tokenizer``."""
    return len(tokenizer(text, truncation=False, verbose=False).input_ids)


def native_side(pipeline) -> int:
    """The image side (pixels) the model was trained at: its UNet's latent side times the VAE's downscaling."""
    sample = pipeline.unet.config.sample_size
    latent_side = max(sample) if isinstance(sample, (list, tuple)) else sample
    return int(latent_side) * int(pipeline.vae_scale_factor)


def check_image_size(pipeline, height: int | None, width: int | None) -> None:
    """Refuse a side that is not a positive multiple of 8, or beyond what the model supports (None: the model's)."""
    for label, value in (("height", height), ("width", width)):
        if value is None:
            continue
        if value <= 0 or value % 8:
            raise CpdmError(f"{label} must be a positive multiple of 8, got {value}")
        native = native_side(pipeline)
        if value > MAX_SIDE_FACTOR * native:
            raise CpdmError(f"{label} {value} is beyond what this model supports: at most {MAX_SIDE_FACTOR * native} "
                            f"pixels ({MAX_SIDE_FACTOR} times the {native} it was trained at)")


def generate_images(
    pipeline,
    prompts: list[str],
    seeds: list[int],
    steps: int = PAPER_STEPS,
    guidance: float = PAPER_GUIDANCE,
    height: int | None = None,
    width: int | None = None,
    negative_prompt: str | None = None,
    seed_mode: str = PER_IMAGE_SEEDS,
) -> list[Image.Image]:
    """One image per (prompt, seed), in one batch.

    Per-image seeds (the default): each image's starting noise comes from its
    own torch Generator seeded with its seed, so image i depends only on its
    prompt, seed and settings and can be made again alone (on the CPU bit for
    bit up to the batch's arithmetic order, which may move a pixel value by
    one). Release seeds: the batch shares one Generator seeded with the one
    seed all its images name, and its latents are drawn from it in sequence,
    image i the i-th, as the CPDM release drew a prompt's images.
    ``height``/``width`` default to the model's native size and must be
    multiples of 8, at most ``MAX_SIDE_FACTOR`` times it.
    """
    check_image_size(pipeline, height, width)
    if steps < 1:
        raise CpdmError(f"steps must be at least 1, got {steps}")
    if len(prompts) != len(seeds) or not prompts:
        raise CpdmError(f"one seed per prompt is needed, got {len(prompts)} prompts and {len(seeds)} seeds")
    generator_device = "cpu" if pipeline.device.type == "mps" else pipeline.device
    if seed_mode == RELEASE_SEEDS:
        if len(set(seeds)) != 1:
            raise CpdmError(f"release seeds draw one batch from one seed, got seeds {sorted(set(seeds))}")
        generators = torch.Generator(device=generator_device).manual_seed(int(seeds[0]))
    else:
        generators = [torch.Generator(device=generator_device).manual_seed(int(seed)) for seed in seeds]
    with torch.inference_mode():
        output = pipeline(
            list(prompts),
            height=height,
            width=width,
            num_inference_steps=steps,
            guidance_scale=guidance,
            negative_prompt=[negative_prompt] * len(prompts) if negative_prompt else None,
            generator=generators,
            output_type="pil",
        )
    return list(output.images)


@dataclass(frozen=True)
class ImageRequest:
    """One batch of images to make: :func:`generate_images`'s arguments, small enough to send to another machine."""

    prompts: tuple[str, ...]
    seeds: tuple[int, ...]
    steps: int = PAPER_STEPS
    guidance: float = PAPER_GUIDANCE
    height: int | None = None
    width: int | None = None
    negative_prompt: str | None = None
    seed_mode: str = PER_IMAGE_SEEDS


@dataclass(frozen=True)
class EncodedImage:
    """A generated image as the workspace stores it: PNG bytes and their sha256."""

    sha256: str
    png: bytes


def encoded_images(pipeline, request: ImageRequest) -> list[EncodedImage]:
    """Make a request's images and encode each as PNG (the bytes the workspace stores, wherever they were made)."""
    images = generate_images(pipeline, list(request.prompts), list(request.seeds), request.steps, request.guidance,
                             request.height, request.width, request.negative_prompt, request.seed_mode)
    encoded = [encode_png(image.convert("RGB")) for image in images]
    return [EncodedImage(hashlib.sha256(data).hexdigest(), data) for data in encoded]


def generate(
    pipeline,
    prompt: str,
    seed: int = PAPER_SEED,
    steps: int = PAPER_STEPS,
    guidance: float = PAPER_GUIDANCE,
    height: int | None = None,
    width: int | None = None,
    negative_prompt: str | None = None,
) -> Image.Image:
    """One image for ``prompt``; the same pipeline, prompt and settings give the same image."""
    return generate_images(pipeline, [prompt], [seed], steps, guidance, height, width, negative_prompt)[0]
