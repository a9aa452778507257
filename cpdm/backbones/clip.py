"""CLIP image encoders (open_clip) for the semantic distance M_sem.

M_sem is the squared L2 distance of L2-normalised ``encode_image`` features
after open_clip's own preprocessing for the model (``ViT-L-14/openai``:
shorter side resized to 224, bicubic; centre crop; OpenAI's mean and std),
the transform ``create_model_and_transforms`` returns. The CPDM release's
interrogator (clip-interrogator) embeds images the same way: its
``clip_preprocess`` is that transform and it normalises the features.

Real weights are looked up, never downloaded, in this order:

1. ``TAG`` itself, when it is a path to a checkpoint file
   (``--semantic ViT-L-14/models/vitl14.bin``);
2. the Hugging Face cache (``$HF_HUB_CACHE``), where open_clip puts weights
   it fetches from the hub;
3. open_clip's URL cache (``~/.cache/clip``), where it puts OpenAI's files.

The tiny mode builds a two-layer ViT from a registered config (32×32 input)
with a fixed seed; it accepts the same model names as the real mode (the name
is checked against open_clip's registry) so that commands behave alike.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from pathlib import Path

import torch

from cpdm.backbones import BackboneError, backbone_key, check_mode
from cpdm.compute_device import resolve_device
from cpdm.backbones.embedding import EmbeddingBackbone
from cpdm.errors import MissingWeightsError
from cpdm.hf_cache import hf_hub_cache

TINY_CLIP_NAME = "cpdm-tiny-clip"
# A two-layer ViT on 32x32 inputs with 16-dim embeddings: about 1.7M parameters,
# nearly all in the text tower's token table (which the metric never runs).
TINY_CLIP_CONFIG = {
    "embed_dim": 16,
    "quick_gelu": True,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 32, "head_width": 16, "patch_size": 8},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}
OPENCLIP_URL_CACHE = Path("~/.cache/clip")

_tiny_registered = False


# A CLIP image encoder is an embedding backbone whose forward is ``encode_image``.
ClipBackbone = EmbeddingBackbone


def split_name(name: str) -> tuple[str, str]:
    """``ViT-L-14/openai`` -> (``ViT-L-14``, ``openai``); the tag may be a file path."""
    model, sep, tag = name.partition("/")
    if not sep or not model or not tag:
        raise BackboneError(f"semantic backbone {name!r} must read MODEL/TAG, e.g. ViT-L-14/openai")
    return model, tag


def check_clip_name(name: str) -> tuple[str, str]:
    """Refuse a model or pretrained tag that open_clip does not know (a file tag is accepted)."""
    import open_clip

    model, tag = split_name(name)
    if model not in open_clip.list_models():
        raise BackboneError(f"unknown semantic backbone {name!r}: open_clip has no model {model!r} (see open_clip.list_models())")
    if not Path(tag).expanduser().is_file() and tag not in open_clip.list_pretrained_tags_by_model(model):
        tags = ", ".join(open_clip.list_pretrained_tags_by_model(model)) or "none"
        raise BackboneError(
            f"unknown semantic backbone {name!r}: no pretrained tag {tag!r} for {model} "
            f"(known tags: {tags}; or give a checkpoint file as {model}/PATH)"
        )
    return model, tag


def register_tiny_config() -> None:
    """Make the tiny config known to open_clip (once per process)."""
    global _tiny_registered
    if _tiny_registered:
        return
    import open_clip

    folder = Path(tempfile.mkdtemp(prefix="cpdm-clip-config-"))
    (folder / f"{TINY_CLIP_NAME}.json").write_text(json.dumps(TINY_CLIP_CONFIG), encoding="utf-8")
    open_clip.add_model_config(folder)
    _tiny_registered = True


def find_cached_checkpoint(model: str, tag: str) -> Path | None:
    """The local file holding ``model/tag`` weights, or None. Never downloads."""
    import open_clip

    as_path = Path(tag).expanduser()
    if as_path.is_file():
        return as_path
    cfg = open_clip.get_pretrained_cfg(model, tag)
    hf_hub = cfg.get("hf_hub", "")
    if hf_hub:
        from huggingface_hub import try_to_load_from_cache

        repo_id, filename = os.path.split(hf_hub)
        candidates = [filename] if filename else ["open_clip_model.safetensors", "open_clip_pytorch_model.bin"]
        if filename.endswith((".bin", ".pth")):
            candidates.insert(0, filename[:-4] + ".safetensors")
        for candidate in candidates:
            found = try_to_load_from_cache(repo_id, candidate, cache_dir=hf_hub_cache())
            if isinstance(found, str) and Path(found).is_file():
                return Path(found)
    url = cfg.get("url", "")
    if url:
        cached = OPENCLIP_URL_CACHE.expanduser() / os.path.basename(url)
        if cached.is_file():
            return cached
    return None


def missing_clip_message(model: str, tag: str) -> str:
    """How to get the weights, for the error raised when they are not here."""
    import open_clip

    cfg = open_clip.get_pretrained_cfg(model, tag)
    places = []
    if cfg.get("hf_hub"):
        places.append(f"the Hugging Face cache {hf_hub_cache()} (repo {cfg['hf_hub'].rstrip('/')})")
    if cfg.get("url"):
        places.append(f"{OPENCLIP_URL_CACHE.expanduser() / os.path.basename(cfg['url'])}")
    return (
        f"CLIP weights {model}/{tag} are not on this machine (looked in {' and '.join(places) or 'no known place'}). "
        f"On a machine with network run: python -c \"import open_clip; "
        f"open_clip.create_model_and_transforms('{model}', pretrained='{tag}')\" and copy its cache here, "
        f"or pass a checkpoint file as --semantic {model}/PATH; --offline-tiny uses a tiny random model instead"
    )


def build_model(model_name: str, pretrained, seed: int, **kwargs):
    import open_clip

    # open_clip logs a warning when it builds a model without weights; in the
    # tiny and random modes that is the intent, so it is silenced there.
    if pretrained is None:
        logging.disable(logging.WARNING)
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model, _, preprocess = open_clip.create_model_and_transforms(
                model_name, pretrained=pretrained, pretrained_text=False, **kwargs
            )
    finally:
        logging.disable(logging.NOTSET)
    return model, preprocess


def load_clip(name: str, mode: str = "real", device="cpu", seed: int = 0) -> ClipBackbone:
    """Build the CLIP image encoder ``name`` (MODEL/TAG) in the given mode, in eval mode on ``device``."""
    import open_clip

    check_mode(mode)
    torch_device = resolve_device(device)
    model_name, tag = check_clip_name(name)
    cfg = open_clip.get_pretrained_cfg(model_name, tag)
    quick_gelu = bool(cfg.get("quick_gelu", False))
    if mode == "tiny":
        register_tiny_config()
        model, preprocess = build_model(TINY_CLIP_NAME, None, seed)
    elif mode == "random":
        model, preprocess = build_model(model_name, None, seed, force_quick_gelu=quick_gelu)
    else:
        checkpoint = find_cached_checkpoint(model_name, tag)
        if checkpoint is None:
            raise MissingWeightsError(missing_clip_message(model_name, tag))
        extra = {}
        if cfg.get("mean"):
            extra = {"image_mean": cfg["mean"], "image_std": cfg["std"]}
        model, preprocess = build_model(model_name, str(checkpoint), seed, force_quick_gelu=quick_gelu, **extra)
    model = model.to(torch_device).eval()
    return EmbeddingBackbone(
        name=name, key=backbone_key(name, mode), model=model, forward=model.encode_image, preprocess=preprocess,
        device=torch_device,
    )


# --- the registry's interface (see cpdm.backbones) ---
PACKAGE = "open_clip_torch"
TINY = "a 2-layer ViT on 32x32 inputs, 16-d embeddings, seeded random weights"


def load(name: str, mode: str = "real", device="cpu", seed: int = 0, image_size: int | None = None) -> EmbeddingBackbone:
    """The registry's entry point: :func:`load_clip` (CLIP takes no input-size override)."""
    if image_size is not None:
        raise BackboneError(f"{name} uses open_clip's own preprocessing; it takes no image_size")
    return load_clip(name, mode=mode, device=device, seed=seed)


def find_weights(name: str) -> Path | None:
    """The local file holding the weights of ``name`` (MODEL/TAG), or None."""
    model, tag = check_clip_name(name)
    return find_cached_checkpoint(model, tag)
