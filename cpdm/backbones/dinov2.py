"""``dinov2``: a semantic embedding trained without text (Oquab et al. 2023), through transformers.

The embedding is the CLS token after the final layer norm (``pooler_output``
of ``Dinov2Model``), L2-normalised; M_sem compares it like CLIP's. Input as
the model's image processor does it: shorter side resized to 256 (bicubic),
centre crop 224, ImageNet mean and std.

``dinov2`` is ViT-B/14 (``facebook/dinov2-base``); ``dinov2/REPO`` names
another Hugging Face repo (``dinov2/facebook/dinov2-large``) and
``dinov2/DIR`` a local folder holding ``config.json`` and the weights.
Real weights come only from the Hugging Face cache or that folder.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torchvision import transforms

from cpdm.backbones import BackboneError, backbone_key, check_mode
from cpdm.compute_device import resolve_device
from cpdm.backbones.embedding import EmbeddingBackbone, seeded
from cpdm.backbones.vision import IMAGENET_MEAN, IMAGENET_STD
from cpdm.errors import MissingWeightsError

DEFAULT_REPO = "facebook/dinov2-base"
RESIZE, CROP = 256, 224
TINY_CONFIG = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                   patch_size=8, image_size=32)
TINY_SIZE = 32


def repo_of(name: str) -> str:
    """``dinov2`` -> the default repo; ``dinov2/X`` -> X (a repo id or a local folder)."""
    _, _, rest = name.partition("/")
    return rest or DEFAULT_REPO


def preprocessing(resize: int, crop: int) -> transforms.Compose:
    return transforms.Compose([
        transforms.Resize(resize, interpolation=transforms.InterpolationMode.BICUBIC, antialias=True),
        transforms.CenterCrop(crop),
        transforms.ToTensor(),
        transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD),
    ])


def _random_model(config):
    from transformers import Dinov2Model

    return Dinov2Model(config)


def build_model(name: str, mode: str, seed: int):
    """A ``Dinov2Model`` with the weights of ``mode`` (tiny: 2 layers, 32-wide; random: the repo's size)."""
    from transformers import Dinov2Config

    if mode == "tiny":
        return seeded(seed, lambda: _random_model(Dinov2Config(**TINY_CONFIG)))
    repo = repo_of(name)
    if mode == "random":
        if repo != DEFAULT_REPO:
            raise BackboneError(f"{name}: random mode builds ViT-B/14 only (its config is known without a download)")
        config = Dinov2Config(hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                              intermediate_size=3072, patch_size=14, image_size=518)
        return seeded(seed, lambda: _random_model(config))
    from transformers import Dinov2Model

    try:
        return Dinov2Model.from_pretrained(repo, local_files_only=True)
    except (OSError, ValueError) as exc:
        raise MissingWeightsError(
            f"DINOv2 weights {repo} are not on this machine ({exc.__class__.__name__}). On a machine with network run: "
            f"python -c \"from transformers import Dinov2Model; Dinov2Model.from_pretrained('{repo}')\" and copy the "
            "Hugging Face cache here, or give a local folder as dinov2/DIR; --offline-tiny uses a tiny random model instead"
        ) from exc


# --- the registry's interface (see cpdm.backbones) ---
PACKAGE = "transformers"
TINY = "a 2-layer, 32-wide DINOv2 ViT on 32x32 inputs (patch 8), seeded random weights"


def load(name: str, mode: str = "real", device="cpu", seed: int = 0, image_size: int | None = None) -> EmbeddingBackbone:
    check_mode(mode)
    torch_device = resolve_device(device)
    if image_size is not None:
        raise BackboneError(f"{name} uses its processor's 224x224 input; it takes no image_size")
    model = build_model(name, mode, seed).to(torch_device).eval()
    preprocess = preprocessing(TINY_SIZE, TINY_SIZE) if mode == "tiny" else preprocessing(RESIZE, CROP)

    def forward(batch: torch.Tensor) -> torch.Tensor:
        return model(pixel_values=batch).pooler_output

    return EmbeddingBackbone(name=name, key=backbone_key(name, mode), model=model, forward=forward,
                             preprocess=preprocess, device=torch_device)


def find_weights(name: str) -> Path | None:
    repo = repo_of(name)
    if Path(repo).expanduser().is_dir():
        return Path(repo).expanduser()
    from huggingface_hub import try_to_load_from_cache

    from cpdm.hf_cache import hf_hub_cache

    for filename in ("model.safetensors", "pytorch_model.bin"):
        found = try_to_load_from_cache(repo, filename, cache_dir=hf_hub_cache())
        if isinstance(found, str) and Path(found).is_file():
            return Path(found)
    return None
