"""``csd``: Contrastive Style Descriptors (Somepalli et al. 2024, "Measuring Style Similarity in Diffusion Models").

A CLIP ViT-L/14 vision tower (OpenAI's architecture, QuickGELU) whose output
projection is replaced by the paper's style projection head (1024 → 768);
the style embedding is L2-normalised and two images are compared by cosine
distance ``1 − cos`` (the paper's similarity is the cosine). Input as CLIP's:
resize to 224 (bicubic), centre crop, OpenAI's mean and std.

Real weights come from the authors' checkpoint file (``checkpoint.pth`` of
learn2phoenix/CSD), read from ``csd/PATH`` or, for plain ``csd``, from
torch hub's checkpoints folder as :data:`CSD_CHECKPOINT`. Its
``model_state_dict`` holds ``module.backbone.*`` (the vision tower, without
its projection) and ``module.last_layer_style`` (the head). The tiny mode
is the tiny CLIP vision tower with a random head.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from cpdm.backbones import BackboneError, backbone_key, check_mode, torch_hub_checkpoint_dir
from cpdm.compute_device import resolve_device
from cpdm.backbones.embedding import EmbeddingBackbone
from cpdm.errors import MissingWeightsError

CSD_CHECKPOINT = "csd_checkpoint.pth"
VISION_MODEL = "ViT-L-14"  # open_clip's name for the architecture CSD fine-tunes


def checkpoint_path(name: str) -> Path:
    """``csd`` -> torch hub's checkpoints folder; ``csd/PATH`` -> PATH."""
    _, _, rest = name.partition("/")
    return Path(rest).expanduser() if rest else torch_hub_checkpoint_dir() / CSD_CHECKPOINT


def csd_vision_state(checkpoint: dict) -> dict:
    """The vision tower's state dict, its projection replaced by CSD's style head, from the authors' checkpoint."""
    state = checkpoint.get("model_state_dict", checkpoint) if isinstance(checkpoint, dict) else None
    if not isinstance(state, dict):
        raise ValueError("no model_state_dict in the file")
    state = {key.removeprefix("module."): value for key, value in state.items()}
    if "last_layer_style" not in state:
        raise ValueError("no last_layer_style (the style head) in the file")
    vision = {key.removeprefix("backbone."): value for key, value in state.items() if key.startswith("backbone.")}
    vision.pop("proj", None)
    vision["proj"] = state["last_layer_style"]
    return vision


def load_csd_weights(visual: nn.Module, path: Path) -> nn.Module:
    """Load the authors' checkpoint into an open_clip vision tower (strict: every tensor must match)."""
    if not path.is_file():
        raise MissingWeightsError(
            f"CSD weights are not on this machine: expected {path}. Download the authors' checkpoint.pth "
            "(github.com/learn2phoenix/CSD, 'pretrained model' link) on a machine with network and copy it to "
            f"{path}, or pass its path as --style csd/PATH; --offline-tiny uses a tiny random model instead"
        )
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
        visual.load_state_dict(csd_vision_state(checkpoint))
    except Exception as exc:  # a wrong or truncated file
        raise MissingWeightsError(f"{path}: not a CSD ViT-L/14 checkpoint ({exc})") from exc
    return visual


# --- the registry's interface (see cpdm.backbones) ---
PACKAGE = "open_clip_torch"
TINY = "the tiny CLIP vision tower (2 layers, 32x32) with a random 16-d style head"


def load(name: str, mode: str = "real", device="cpu", seed: int = 0, image_size: int | None = None) -> EmbeddingBackbone:
    from cpdm.backbones import clip

    check_mode(mode)
    torch_device = resolve_device(device)
    if image_size is not None:
        raise BackboneError(f"{name} uses CLIP's 224x224 input; it takes no image_size")
    if mode == "tiny":
        clip.register_tiny_config()
        model, preprocess = clip.build_model(clip.TINY_CLIP_NAME, None, seed)
    else:
        model, preprocess = clip.build_model(VISION_MODEL, None, seed, force_quick_gelu=True)
    visual = model.visual
    if mode == "real":
        load_csd_weights(visual, checkpoint_path(name))
    visual = visual.to(torch_device).eval()
    return EmbeddingBackbone(name=name, key=backbone_key(name, mode), model=visual, forward=visual,
                             preprocess=preprocess, device=torch_device, role="style", comparison="cosine")


def find_weights(name: str) -> Path | None:
    path = checkpoint_path(name)
    return path if path.is_file() else None
