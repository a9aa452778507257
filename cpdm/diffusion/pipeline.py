"""Stable Diffusion pipelines: real weights from disk, or a tiny random model.

Two ways to get a :class:`diffusers.StableDiffusionPipeline`:

* :func:`load_sd_pipeline` loads real weights from a local folder or from the
  Hugging Face cache. It never downloads: when the weights are absent it
  raises :class:`~cpdm.errors.MissingWeightsError` saying how to get them.
* :func:`tiny_sd_pipeline` builds a pipeline of the same architecture from
  tiny, randomly initialised parts (as diffusers' own tests do). It needs no
  files and no network, runs in about a second on a CPU, and is what tests,
  CI and the offline demo use. Its images are noise-like but deterministic.

:func:`variant_pipeline` builds the pipeline of a variant (the one place
where an unlearned variant changes the model); :func:`generate_images` turns
prompts into images, each from its own seeded generator, with the CPDM paper's
defaults (DDIM, 50 steps, classifier-free guidance 9, seed 23).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image

from cpdm.errors import CpdmError, MissingWeightsError
from cpdm.store.workspace import BASELINE_METHOD
from cpdm.diffusion.settings import (  # noqa: F401  (re-exported: the model loaders' defaults)
    DEFAULT_SD_MODEL,
    DTYPES,
    PAPER_GUIDANCE,
    PAPER_SEED,
    PAPER_STEPS,
    SCHEDULERS,
    TINY_BASE,
    uses_tiny_model,
)

# runwayml took its repository down; the same files live on under this id.
SD15_MIRROR = "stable-diffusion-v1-5/stable-diffusion-v1-5"

BOS_TOKEN = "<|startoftext|>"
EOS_TOKEN = "<|endoftext|>"
TOKENIZER_MAX_LENGTH = 77  # as in Stable Diffusion's CLIP tokenizer
# cpdm refuses an image side above this many times the side the model was trained at. A model makes
# nothing useful that far out, and memory, not the model, would then end the run: a 100000-pixel side
# asks for tens of gigabytes for the first latent alone.
MAX_SIDE_FACTOR = 4


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP's reversible map from bytes to printable unicode characters.

    Byte-level BPE works on these characters, so a vocabulary that holds all
    256 of them can encode any text without unknown tokens.
    """
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    printable += list(range(ord("®"), ord("ÿ") + 1))
    codes = printable[:]
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            codes.append(256 + extra)
            extra += 1
    return {byte: chr(code) for byte, code in zip(printable, codes)}


def tiny_tokenizer_vocab() -> dict[str, int]:
    """A 514-token CLIP vocabulary: every byte character, alone and word-final, plus BOS/EOS.

    With no merges, every word is spelled out byte by byte; that is all a
    random-initialised text encoder needs, and prompts never hit unknown tokens.
    """
    characters = list(_bytes_to_unicode().values())
    tokens = characters + [character + "</w>" for character in characters] + [BOS_TOKEN, EOS_TOKEN]
    return {token: index for index, token in enumerate(tokens)}


def write_tiny_tokenizer_files(folder: str | os.PathLike) -> Path:
    """Write ``vocab.json`` and ``merges.txt`` of the tiny tokenizer into ``folder``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps(tiny_tokenizer_vocab(), ensure_ascii=False), encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n", encoding="utf-8")
    return folder


def tiny_clip_tokenizer():
    """A CLIPTokenizer read from freshly written tiny vocabulary files (no hub access)."""
    from transformers import CLIPTokenizer

    with tempfile.TemporaryDirectory(prefix="cpdm-tiny-tokenizer-") as folder:
        write_tiny_tokenizer_files(folder)
        return CLIPTokenizer.from_pretrained(folder, local_files_only=True, model_max_length=TOKENIZER_MAX_LENGTH)


def _tiny_parts(vocab: dict[str, int]) -> dict:
    """The random-initialised UNet, VAE, text encoder and scheduler (diffusers' test sizes)."""
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    unet = UNet2DConditionModel(
        block_out_channels=(4, 8),
        layers_per_block=1,
        sample_size=32,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=8,
        norm_num_groups=2,
    )
    vae = AutoencoderKL(
        block_out_channels=(4, 8),
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        latent_channels=4,
        norm_num_groups=2,
    )
    text_config = CLIPTextConfig(
        hidden_size=8,
        intermediate_size=16,
        num_attention_heads=2,
        num_hidden_layers=2,
        vocab_size=1000,
        max_position_embeddings=TOKENIZER_MAX_LENGTH,
        bos_token_id=vocab[BOS_TOKEN],
        eos_token_id=vocab[EOS_TOKEN],
        pad_token_id=vocab[EOS_TOKEN],
        layer_norm_eps=1e-5,
    )
    text_encoder = CLIPTextModel(text_config)
    scheduler = DDIMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,  # as in Stable Diffusion v1's scheduler config
    )
    return {"unet": unet, "vae": vae, "text_encoder": text_encoder, "scheduler": scheduler}


def tiny_sd_pipeline(seed: int = 0, device: str | torch.device = "cpu"):
    """A Stable Diffusion pipeline from tiny random-initialised parts; the same seed gives the same weights.

    The global torch random state is left as it was. Height and width must be
    multiples of 8 (64x64 by default; 32x32 is enough for tests).
    """
    from diffusers import StableDiffusionPipeline

    tokenizer = tiny_clip_tokenizer()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        parts = _tiny_parts(tokenizer.get_vocab())
    pipeline = StableDiffusionPipeline(
        **parts,
        tokenizer=tokenizer,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    for module in (pipeline.unet, pipeline.vae, pipeline.text_encoder):
        module.eval()
    pipeline.set_progress_bar_config(disable=True)
    return pipeline.to(device)


def full_size_random_sd_pipeline(seed: int = 0, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32):
    """Stable Diffusion v1's architecture (860M-parameter UNet, 512x512) with random weights, for speed measurements.

    Its images are noise; only its cost is that of the real model. The tiny
    tokenizer stands in for CLIP's (token ids only index the embedding table).
    """
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    tokenizer = tiny_clip_tokenizer()
    vocab = tokenizer.get_vocab()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        unet = UNet2DConditionModel(sample_size=64, cross_attention_dim=768)
        vae = AutoencoderKL(
            block_out_channels=(128, 256, 512, 512),
            down_block_types=("DownEncoderBlock2D",) * 4,
            up_block_types=("UpDecoderBlock2D",) * 4,
            layers_per_block=2,
            latent_channels=4,
            sample_size=512,
        )
        text_encoder = CLIPTextModel(CLIPTextConfig(
            vocab_size=49408, hidden_size=768, intermediate_size=3072, num_attention_heads=12,
            num_hidden_layers=12, max_position_embeddings=TOKENIZER_MAX_LENGTH, hidden_act="quick_gelu",
            bos_token_id=vocab[BOS_TOKEN], eos_token_id=vocab[EOS_TOKEN], pad_token_id=vocab[EOS_TOKEN],
        ))
    scheduler = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
                              set_alpha_to_one=False, steps_offset=1)
    pipeline = StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                                       scheduler=scheduler, safety_checker=None, feature_extractor=None,
                                       requires_safety_checker=False)
    pipeline.set_progress_bar_config(disable=True)
    return pipeline.to(device, dtype=dtype)


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
        f"{_hf_cache_dir()}). On a machine with a network run `hf download {model}` "
        "(older huggingface_hub: `huggingface-cli download`) and copy the cache here, or pass a local folder "
        "in diffusers layout; --offline-tiny uses a tiny random model instead"
    )
    if model == DEFAULT_SD_MODEL:
        message += f" (the {model} repository is mirrored as {SD15_MIRROR})"
    return message


def _hf_cache_dir() -> str:
    """The Hugging Face hub cache, read from the environment now (HF_HUB_CACHE, then HF_HOME).

    huggingface_hub reads these once at import; reading them per call lets a
    process (or a test) point at another cache after diffusers was imported.
    """
    if os.environ.get("HF_HUB_CACHE"):
        return os.environ["HF_HUB_CACHE"]
    if os.environ.get("HF_HOME"):
        return os.path.join(os.environ["HF_HOME"], "hub")
    from huggingface_hub import constants

    return constants.HF_HUB_CACHE


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
    from diffusers import StableDiffusionPipeline

    torch_dtype = resolve_dtype(dtype, device)
    kwargs = {
        "dtype": torch_dtype,
        "safety_checker": None,
        "feature_extractor": None,
        "requires_safety_checker": False,
        "local_files_only": True,
        "cache_dir": _hf_cache_dir(),
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
    import diffusers

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
    set_scheduler(pipeline, scheduler)
    if str(device).startswith("cuda"):
        from diffusers.models.attention_processor import AttnProcessor2_0

        pipeline.unet.set_attn_processor(AttnProcessor2_0())
    # The one place a variant changes the model: an unlearning method's artifact
    # (replaced UNet parameters) or inference-time settings. The baseline
    # ("original") is used exactly as loaded. apply_variant returns the pipeline to
    # use (an inference-time method wraps the loaded one).
    if variant.method != BASELINE_METHOD:
        from cpdm.diffusion.variants import apply_variant

        pipeline = apply_variant(pipeline, variant, root, base_model=TINY_BASE if tiny else variant.base_model)
    return pipeline


def variant_tokenizer(variant, offline_tiny: bool = False):
    """The tokenizer of the variant's text encoder, read without loading the model.

    A run counts prompt tokens with it (a truncated prompt is recorded with its
    images) before it knows whether anything is left to generate.
    """
    if uses_tiny_model(variant.base_model, offline_tiny):
        return tiny_clip_tokenizer()
    from transformers import CLIPTokenizer

    source = _pretrained_source(variant.base_model)
    try:
        return CLIPTokenizer.from_pretrained(source, subfolder="tokenizer", local_files_only=True,
                                             cache_dir=_hf_cache_dir())
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
) -> list[Image.Image]:
    """One image per (prompt, seed), in one batch; image i depends only on its prompt, seed and settings.

    Each image's starting noise comes from its own torch Generator seeded
    with its seed, so an image made in a batch can be made again alone (on
    the CPU bit for bit up to the batch's arithmetic order, which may move a
    pixel value by one). ``height``/``width`` default to the model's native
    size and must be multiples of 8, at most ``MAX_SIDE_FACTOR`` times it.
    """
    check_image_size(pipeline, height, width)
    if steps < 1:
        raise CpdmError(f"steps must be at least 1, got {steps}")
    if len(prompts) != len(seeds) or not prompts:
        raise CpdmError(f"one seed per prompt is needed, got {len(prompts)} prompts and {len(seeds)} seeds")
    generator_device = "cpu" if pipeline.device.type == "mps" else pipeline.device
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


@dataclass(frozen=True)
class EncodedImage:
    """A generated image as the workspace stores it: PNG bytes and their sha256."""

    sha256: str
    png: bytes


def encoded_images(pipeline, request: ImageRequest) -> list[EncodedImage]:
    """Make a request's images and encode each as PNG (the bytes the workspace stores, wherever they were made)."""
    from cpdm.store.images import encode_png

    images = generate_images(pipeline, list(request.prompts), list(request.seeds), request.steps, request.guidance,
                             request.height, request.width, request.negative_prompt)
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
