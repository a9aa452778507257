"""Models behind the metric, looked up by name in one registry (:data:`REGISTRY`).

Semantic backbones give one embedding per image, compared by the squared L2
distance of L2-normalised embeddings (M_sem). Style backbones give Gram
matrices of feature maps (``vgg19``, ``cpdm-inception``) or a style
embedding compared by cosine distance (``csd``); their distance is M_style.

Each backbone is one file in this package offering ``load(name, mode,
device, seed, image_size)``, ``find_weights(name)`` (the local weights file
or None), ``PACKAGE`` (what it needs installed) and ``TINY`` (how its tiny
mode runs), plus one line in :data:`REGISTRY`.

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

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from cpdm.errors import CpdmError

if TYPE_CHECKING:  # torch is imported where it is used: `cpdm --help` stays fast
    import torch

# The defaults are the CPDM release's metric (the authors' ``cpdm_metric.py``): CLIP ViT-L-14/openai image
# features (as clip-interrogator computes them) for semantics and pytorch-fid's InceptionV3 Gram matrices
# (``cpdm-inception``) for style. VGG19 (Gatys et al.) and the others stay named options.
DEFAULT_SEMANTIC = "ViT-L-14/openai"
DEFAULT_STYLE = "cpdm-inception"
PAPER_COMBINATION = (DEFAULT_SEMANTIC, DEFAULT_STYLE)
MODES = ("real", "tiny", "random")
MODE_PREFIXES = {"real": "", "tiny": "tiny:", "random": "random:"}
DEFAULT_SEED = 0


class BackboneError(CpdmError):
    """An unknown backbone name, or weights that cannot be loaded."""


def backbone_key(name: str, mode: str = "real", image_size: int | None = None) -> str:
    """The name stored in ``features.backbone`` and ``scores.semantic/style``.

    ``image_size`` is given only when a non-default input size was forced
    (benchmarks), so that features at different sizes never share a cache key.
    """
    check_mode(mode)
    key = MODE_PREFIXES[mode] + name
    return f"{key}@{image_size}" if image_size else key


def key_name_and_mode(key: str) -> tuple[str, str]:
    """The (name, mode) a stored key was made from: ``tiny:vgg19`` -> (``vgg19``, ``tiny``)."""
    for mode, prefix in MODE_PREFIXES.items():
        if prefix and key.startswith(prefix):
            return key[len(prefix):], mode
    return key, "real"


def is_paper_combination(semantic_key: str, style_key: str) -> bool:
    """Whether stored keys are the paper's combination (:data:`PAPER_COMBINATION`), in any mode."""
    return (key_name_and_mode(semantic_key)[0], key_name_and_mode(style_key)[0]) == PAPER_COMBINATION


def check_mode(mode: str) -> str:
    if mode not in MODES:
        raise BackboneError(f"unknown backbone mode {mode!r} (use one of: {', '.join(MODES)})")
    return mode


def torch_hub_checkpoint_dir() -> Path:
    """Where torchvision keeps downloaded weights (``$TORCH_HOME/hub/checkpoints``)."""
    import torch

    return Path(torch.hub.get_dir()) / "checkpoints"


@dataclass(frozen=True)
class Entry:
    """One registry line: a name users type, its role, and the file (``cpdm.backbones.<module>``) that builds it.

    ``family`` entries also take ``NAME/ARGUMENT`` (a checkpoint path, a
    Hugging Face repo): ``csd/ckpt/csd.pth``, ``dinov2/facebook/dinov2-large``.
    """

    name: str
    role: str  # "semantic" or "style"
    module: str
    note: str = ""
    family: bool = False


REGISTRY: tuple[Entry, ...] = (
    Entry("ViT-L-14/openai", "semantic", "clip", "the paper's CLIP (its interrogator's model); the default"),
    Entry("ViT-H-14/laion2b_s32b_b79k", "semantic", "clip", "the release's other interrogator model"),
    Entry("dinov2", "semantic", "dinov2", "DINOv2 ViT-B/14 CLS embedding, trained without text", family=True),
    Entry("vgg19", "style", "vision", "Gatys et al. Gram matrices, relu1_1..relu5_1"),
    Entry("cpdm-inception", "style", "inception",
          "the CPDM release's style term, exactly (pytorch-fid InceptionV3); the default"),
    Entry("csd", "style", "csd", "CSD style embedding (Somepalli et al. 2024), cosine distance", family=True),
)
# Any other open_clip MODEL/TAG is a semantic backbone too (the "clip" file checks it against open_clip).
OPEN_CLIP_FAMILY = Entry("MODEL/TAG", "semantic", "clip", "any open_clip model and pretrained tag, or MODEL/CHECKPOINT")


def lookup(name: str, role: str | None = None) -> Entry:
    """The registry entry for a backbone name; ``role`` refuses a backbone of the other kind."""
    if not isinstance(name, str) or not name:
        raise BackboneError(f"a backbone name must be a non-empty string, got {name!r}")
    entry = next((e for e in REGISTRY if e.name == name), None)
    if entry is None:
        head = name.partition("/")[0]
        entry = next((e for e in REGISTRY if e.family and e.name == head), None)
    if entry is None and "/" in name:
        entry = OPEN_CLIP_FAMILY
    if entry is None:
        known = ", ".join(e.name for e in REGISTRY if role in (None, e.role))
        kind = f"{role} backbone" if role else "backbone"
        clip_hint = "" if role == "style" else "; or an open_clip MODEL/TAG"
        raise BackboneError(f"unknown {kind} {name!r} (use one of: {known}{clip_hint})")
    if role is not None and entry.role != role:
        raise BackboneError(f"{name} is a {entry.role} backbone, not a {role} one")
    return entry


def names(role: str | None = None) -> tuple[str, ...]:
    """Registered backbone names (of one role)."""
    return tuple(e.name for e in REGISTRY if role in (None, e.role))


def backbone_module(entry: Entry):
    """The file that builds an entry's backbone."""
    import importlib

    return importlib.import_module(f"cpdm.backbones.{entry.module}")


def load_backbone(
    name: str, mode: str = "real", device="cpu", seed: int = DEFAULT_SEED, image_size: int | None = None,
    role: str | None = None,
):
    """Build the backbone ``name`` in eval mode on ``device``; ``role`` checks its kind first."""
    entry = lookup(name, role)
    check_mode(mode)
    return backbone_module(entry).load(name, mode=mode, device=device, seed=seed, image_size=image_size)


def load_semantic(name: str = DEFAULT_SEMANTIC, mode: str = "real", device="cpu", seed: int = DEFAULT_SEED):
    """A semantic backbone (:class:`cpdm.backbones.embedding.EmbeddingBackbone`).

    ``name`` is a registry name, or ``MODEL/TAG`` as open_clip spells them
    (``ViT-L-14/openai``); TAG may also be a path to a local checkpoint file.
    """
    return load_backbone(name, mode=mode, device=device, seed=seed, role="semantic")


def load_style(
    name: str = DEFAULT_STYLE,
    mode: str = "real",
    device="cpu",
    seed: int = DEFAULT_SEED,
    image_size: int | None = None,
):
    """A style backbone: ``vgg19``, ``cpdm-inception`` or ``csd`` (see :data:`REGISTRY`)."""
    return load_backbone(name, mode=mode, device=device, seed=seed, image_size=image_size, role="style")


def check_style_name(name: str) -> str:
    """Refuse a name that is not a style backbone, listing the known ones."""
    lookup(name, "style")
    return name


def check_semantic_name(name: str) -> str:
    """Refuse a name that is not a semantic backbone (open_clip names are checked when loaded)."""
    lookup(name, "semantic")
    return name


@dataclass
class BackboneStatus:
    """One row of ``cpdm backbones list``."""

    name: str
    role: str
    package: str
    installed: bool
    weights: str  # the local weights file, or "missing"
    tiny: str
    note: str


def registry_status() -> list[BackboneStatus]:
    """Every registered backbone: what it needs, whether that is installed and real weights are here."""
    import importlib.util

    rows = []
    for entry in REGISTRY:
        module = backbone_module(entry)
        distribution = module.PACKAGE.split()[0]
        import_name = {"open_clip_torch": "open_clip", "pytorch-fid": "pytorch_fid"}.get(distribution, distribution)
        installed = importlib.util.find_spec(import_name) is not None
        try:
            found = module.find_weights(entry.name) if installed else None
        except CpdmError:
            found = None
        rows.append(
            BackboneStatus(entry.name, entry.role, module.PACKAGE, installed, str(found) if found else "missing",
                           module.TINY, entry.note)
        )
    return rows
