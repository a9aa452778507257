"""Models behind the metric: CLIP (semantics) and VGG19 / InceptionV3 (style).

Every backbone comes in three modes:

- ``real``: pretrained weights, loaded only from files already on this
  machine (the open_clip / Hugging Face caches, a local checkpoint path, or
  torch hub's ``checkpoints`` folder). A missing file raises
  :class:`~cpdm.errors.MissingWeightsError` saying which file and how to get
  it; nothing is ever downloaded and nothing is silently substituted.
- ``tiny``: small random-initialised models with a fixed seed, built from
  configs; what tests, CI and the offline demo use (``--offline-tiny``).
- ``random``: the full-size architectures with random weights, for speed
  measurements (benchmarks) where the numbers themselves do not matter.

The name stored with features and scores says which: real backbones keep
their plain name (``ViT-L-14/openai``, ``vgg19``), the others carry a prefix
(``tiny:vgg19``), so numbers from random models never mix with real ones.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING


from cpdm.errors import CpdmError

if TYPE_CHECKING:  # torch is imported where it is used: `cpdm --help` stays fast
    import torch

DEFAULT_SEMANTIC = "ViT-L-14/openai"
DEFAULT_STYLE = "vgg19"
STYLE_BACKBONES = ("vgg19", "cpdm-inception")
MODES = ("real", "tiny", "random")
MODE_PREFIXES = {"real": "", "tiny": "tiny:", "random": "random:"}
DEFAULT_SEED = 0


class BackboneError(CpdmError):
    """An unknown backbone name or an unusable device."""


def backbone_key(name: str, mode: str = "real", image_size: int | None = None) -> str:
    """The name stored in ``features.backbone`` and ``scores.semantic/style``.

    ``image_size`` is given only when a non-default input size was forced
    (benchmarks), so that features at different sizes never share a cache key.
    """
    check_mode(mode)
    key = MODE_PREFIXES[mode] + name
    return f"{key}@{image_size}" if image_size else key


def check_mode(mode: str) -> str:
    if mode not in MODES:
        raise BackboneError(f"unknown backbone mode {mode!r} (use one of: {', '.join(MODES)})")
    return mode


def resolve_device(device: str | torch.device) -> torch.device:
    """A torch device, refusing CUDA on a machine without it (clear message, no traceback)."""
    import torch

    text = str(device)
    if text.startswith("cuda"):
        if not torch.cuda.is_available():
            raise BackboneError(f"--device {text} was asked for, but CUDA is not available on this machine (use --device cpu)")
    elif text not in ("cpu", "mps"):
        raise BackboneError(f"unknown device {text!r} (use cpu or cuda)")
    try:
        return torch.device(text)
    except RuntimeError as exc:
        raise BackboneError(f"unknown device {text!r}: {exc}") from exc


def torch_hub_checkpoint_dir() -> Path:
    """Where torchvision keeps downloaded weights (``$TORCH_HOME/hub/checkpoints``)."""
    import torch

    return Path(torch.hub.get_dir()) / "checkpoints"


def load_semantic(name: str = DEFAULT_SEMANTIC, mode: str = "real", device="cpu", seed: int = DEFAULT_SEED):
    """A CLIP image encoder (:class:`cpdm.backbones.clip.ClipBackbone`).

    ``name`` is ``MODEL/TAG`` as open_clip spells them (``ViT-L-14/openai``);
    TAG may also be a path to a local checkpoint file (``ViT-L-14/ckpt/vitl.bin``).
    """
    from cpdm.backbones.clip import load_clip

    return load_clip(name, mode=mode, device=device, seed=seed)


def load_style(
    name: str = DEFAULT_STYLE,
    mode: str = "real",
    device="cpu",
    seed: int = DEFAULT_SEED,
    image_size: int | None = None,
):
    """A style feature extractor (:class:`cpdm.backbones.vision.StyleBackbone`): ``vgg19`` or ``cpdm-inception``."""
    from cpdm.backbones.vision import load_style_backbone

    return load_style_backbone(name, mode=mode, device=device, seed=seed, image_size=image_size)


def check_style_name(name: str) -> str:
    """Refuse an unknown style backbone name, listing the known ones."""
    if name not in STYLE_BACKBONES:
        raise BackboneError(f"unknown style backbone {name!r} (use one of: {', '.join(STYLE_BACKBONES)})")
    return name
