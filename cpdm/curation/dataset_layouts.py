"""Folders of plain images that ``cpdm import-dataset`` reads besides its own export.

Per-anchor folders: ``DIR/anchors/`` holds one image per anchor and, per
anchor, a folder named like the anchor's file without its suffix holds the
images generated for it, under ``DIR/generations/`` (or beside
``anchors/``). Files are matched by name and taken in sorted order; the
index in that order is recorded as the seed, and each anchor gets an
"unknown prompt" placeholder since the layout holds no prompts.

Each reader checks the whole folder and returns an
:class:`~cpdm.curation.dataset_plan.ImportPlan`; it writes nothing.
"""

from __future__ import annotations

from pathlib import Path

from cpdm.curation.dataset_plan import (
    AnchorPlan,
    DatasetError,
    DatasetFolder,
    GenerationPlan,
    ImportPlan,
    PromptPlan,
    VariantPlan,
)
from cpdm.store.images import IMAGE_SUFFIXES
from cpdm.store.workspace import BASELINE_METHOD

# Who the placeholder prompts of layouts without prompts name as their author.
PLACEHOLDER_AUTHOR = "cpdm-release"


def image_names(folder: Path) -> list[str]:
    """The image files directly in ``folder``, by name in sorted order (hidden files left out)."""
    return sorted(p.name for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES
                  and not p.name.startswith(".") and not p.is_dir())


def imported_variant(name: str, base_model: str) -> VariantPlan:
    """The variant a layout's images are recorded under: the one of that name here, or a new baseline."""
    return VariantPlan("variant", name, "--variant", base_model=base_model, method=BASELINE_METHOD,
                       must_match=False)


def _anchor_plans(source: DatasetFolder) -> list[AnchorPlan]:
    """One anchor per image in ``anchors/``, keyed by its file's stem (two files of one stem are refused)."""
    names = image_names(source.shown / "anchors")
    if not names:
        raise DatasetError(f"{source.shown / 'anchors'}: no images")
    plans, seen = [], set()
    for name in names:
        stem = Path(name).stem
        if stem in seen:
            raise DatasetError(f"{source.shown / 'anchors'}: two anchors named {stem} (with different suffixes)")
        seen.add(stem)
        where = str(source.shown / "anchors" / name)
        plans.append(AnchorPlan(stem, source.image(f"anchors/{name}", where), where))
    return plans


def _generation_folders(source: DatasetFolder, stems: set[str]) -> dict[str, str]:
    """Anchor stem -> its folder of generated images (relative); a folder named after no anchor is an error."""
    base = "generations/" if (source.shown / "generations").is_dir() else ""
    found = {}
    for sub in sorted(p for p in (source.shown / base).iterdir() if p.is_dir() and not p.name.startswith(".")):
        if sub.name in ("anchors", "generations"):
            continue
        if sub.name not in stems:
            raise DatasetError(f"{sub}: no anchor named {sub.name} in {source.shown / 'anchors'}")
        found[sub.name] = f"{base}{sub.name}"
    return found


def read_per_anchor_folders(source: DatasetFolder, variant: str, base_model: str) -> ImportPlan:
    """The per-anchor folders layout, checked in full; nothing is written."""
    plan = ImportPlan("plain")
    plan.anchors = _anchor_plans(source)
    folders = _generation_folders(source, {anchor.key for anchor in plan.anchors})
    plan.variants = [imported_variant(variant, base_model)]
    for stem, relative in folders.items():
        text = f"unknown prompt (generations of {stem}, imported from {source.shown.name})"
        plan.prompts.append(PromptPlan(stem, stem, text, "manual", str(source.shown / relative),
                                       author=PLACEHOLDER_AUTHOR, params={"source": "plain layout"}))
        for k, name in enumerate(image_names(source.shown / relative)):
            where = str(source.shown / relative / name)
            key = f"{relative}/{name}"
            plan.generations.append(GenerationPlan(
                key, stem, "variant", k, None, None, source.image(key, where), where,
                params={"source": "plain layout", "file": f"{stem}/{name}"}))
            plan.normal_pairs.append(key)
    plan.counts = {"anchors": len(plan.anchors), "generations": len(plan.generations)}
    return plan
