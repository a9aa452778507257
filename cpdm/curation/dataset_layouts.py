"""Folders of plain images that ``cpdm import-dataset`` reads besides its own export.

The CPDM release's two layouts (arXiv 2403.12052, the authors' scripts):

* **Generation layout**, as ``sd_inference_v2_1.py`` leaves it: ``DIR/anchors/``
  holds the anchor images, ``DIR/caption.csv`` (columns ``image,prompt``)
  names one anchor file and one prompt per row, and ``DIR/output/`` is the
  script's one flat output folder of ``{stem}_{n:05}.jpg``, n = row × 9 + k
  for the k-th of the 9 images of row ``row`` (0-based, header not
  counted). The script calls ``seed_everything(23)`` before each prompt and
  draws its 9 images in sequence, so every image has seed 23 and is told
  apart by k, recorded in its params (``seed_mode`` "release", ``index`` k)
  with the script's sampler settings (DDIM, 50 steps, guidance 9).
* **Metric layout**, as ``cpdm_metric.py`` reads it: two flat folders, the
  anchors and the generated images, paired file by file. The script zipped
  two ``os.listdir`` results (an arbitrary order); here both are sorted by
  name, and folders holding different numbers of images are refused. Each
  anchor gets an "unknown prompt" placeholder; the seed recorded is the
  image's position among its anchor's images.

And cpdm's own **per-anchor folders** layout (no release script writes it):
``DIR/anchors/`` with one image per anchor and, per anchor, a folder named
like the anchor's file without its suffix holding its generated images,
under ``DIR/generations/`` (or beside ``anchors/``), taken in sorted order
with the index in that order as the seed and an "unknown prompt".

Each reader checks the whole folder and returns an
:class:`~cpdm.curation.dataset_plan.ImportPlan`; it writes nothing. A
folder in which no generated image is found is refused; anchors without a
generated image are named in the plan's warnings.
"""

from __future__ import annotations

import re
from pathlib import Path

from cpdm.curation.dataset_plan import (
    AnchorPlan,
    DatasetError,
    DatasetFolder,
    GenerationPlan,
    ImportPlan,
    PromptPlan,
    VariantPlan,
    read_csv_rows,
)
from cpdm.diffusion.settings import DEFAULT_SCHEDULER, PAPER_GUIDANCE, PAPER_PER_PROMPT, PAPER_SEED, PAPER_STEPS
from cpdm.store.images import IMAGE_SUFFIXES
from cpdm.store.workspace import BASELINE_METHOD

# The author recorded for the per-anchor folders layout's placeholder prompts. Earlier cpdm versions
# took that layout for the release's; the name stays so that re-importing such a folder adds nothing.
PLACEHOLDER_AUTHOR = "cpdm-release"
CAPTION_CSV = "caption.csv"
CAPTION_COLUMNS = ("image", "prompt")
# How sd_inference_v2_1.py names its images: the anchor's stem, "_", the image's number (at least 5 digits).
RELEASE_IMAGE_NAME = re.compile(r"^(?P<stem>.+)_(?P<number>\d{5,})$")
# Anchors listed in a warning before "and N more".
LISTED_ANCHORS = 10


def image_names(folder: Path) -> list[str]:
    """The image files directly in ``folder``, by name in sorted order (hidden files left out)."""
    return sorted(p.name for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES
                  and not p.name.startswith(".") and not p.is_dir())


def imported_variant(name: str, base_model: str) -> VariantPlan:
    """The variant a layout's images are recorded under: the one of that name here, or a new baseline."""
    return VariantPlan("variant", name, "--variant", base_model=base_model, method=BASELINE_METHOD,
                       must_match=False)


def _listing(names: list[str]) -> str:
    """The first names, then how many more."""
    shown = ", ".join(names[:LISTED_ANCHORS])
    return shown + (f" and {len(names) - LISTED_ANCHORS} more" if len(names) > LISTED_ANCHORS else "")


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def finish(plan: ImportPlan, where: str) -> ImportPlan:
    """Refuse a plan without generations; warn about anchors that have none; record the counts."""
    if not plan.generations:
        raise DatasetError(f"{where}: no generated images found (read as the {plan.layout} layout)")
    prompted = {plan_prompt.key: plan_prompt.anchor for plan_prompt in plan.prompts}
    generated = {prompted[generation.prompt] for generation in plan.generations}
    bare = [anchor.image.shown for anchor in plan.anchors if anchor.key not in generated]
    if bare:
        plan.warnings.append(f"no generated images for {_count(len(bare), 'anchor')}: {_listing(bare)}")
    plan.counts = {"anchors": len(plan.anchors), "prompts": len(plan.prompts),
                   "generations": len(plan.generations)}
    return plan


# --------------------------------------------------------------------------
# cpdm's per-anchor folders
# --------------------------------------------------------------------------


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
            anchors = source.shown / "anchors"
            raise DatasetError(f"{sub}: no anchor named {sub.name} in {anchors}; if its images are paired file by "
                               f"file with those of anchors/ (the release's metric layout), import them with "
                               f"--anchors {anchors} --generated {sub}")
        found[sub.name] = f"{base}{sub.name}"
    return found


def read_per_anchor_folders(source: DatasetFolder, variant: str, base_model: str) -> ImportPlan:
    """The per-anchor folders layout, checked in full; nothing is written."""
    plan = ImportPlan("per-anchor folders")
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
    return finish(plan, str(source.shown))


# --------------------------------------------------------------------------
# The release's generation layout (sd_inference_v2_1.py)
# --------------------------------------------------------------------------


def _caption_rows(source: DatasetFolder) -> list[dict]:
    """caption.csv's rows (with ``_where``), in file order: the order the script numbers them."""
    rows = read_csv_rows(source, CAPTION_CSV, CAPTION_COLUMNS)
    for row in rows:
        if not (row["image"] or "").strip() or not (row["prompt"] or "").strip():
            raise DatasetError(f"{row['_where']}: both image and prompt are needed")
    return rows


def _anchor_file(names: list[str], image: str, where: str, folder: Path) -> str:
    """The file in anchors/ a caption.csv row names: by its name, or (without a suffix) by its stem."""
    if image in names:
        return image
    same_stem = [name for name in names if Path(name).stem == Path(image).stem]
    if len(same_stem) == 1 and not Path(image).suffix:
        return same_stem[0]
    raise DatasetError(f"{where}: no image {image!r} in {folder}")


def _release_image(name: str, rows: list[dict], where: str) -> tuple[int, int]:
    """(row, k) of an output image, from its name; a name the release's script would not give is refused."""
    match = RELEASE_IMAGE_NAME.match(Path(name).stem)
    if match is None:
        raise DatasetError(f"{where}: not named STEM_NNNNN{Path(name).suffix} as sd_inference_v2_1.py names "
                           f"its images")
    row, k = divmod(int(match["number"]), PAPER_PER_PROMPT)
    if row >= len(rows):
        raise DatasetError(f"{where}: its number makes it an image of row {row + 1} of {CAPTION_CSV}, which has "
                           f"{len(rows)} rows")
    expected = Path(rows[row]["image"].strip()).stem
    if match["stem"] != expected:
        raise DatasetError(f"{where}: its number makes it an image of {rows[row]['_where']}, which names "
                           f"{expected!r}, not {match['stem']!r}")
    return row, k


def _caption_plans(source: DatasetFolder, plan: ImportPlan) -> list[dict]:
    """The anchors and one prompt per caption.csv row; warns about anchor images no row names."""
    rows = _caption_rows(source)
    names = image_names(source.shown / "anchors")
    anchors: dict[str, AnchorPlan] = {}
    for index, row in enumerate(rows):
        where = row["_where"]
        name = _anchor_file(names, row["image"].strip(), where, source.shown / "anchors")
        if name not in anchors:
            shown = str(source.shown / "anchors" / name)
            anchors[name] = AnchorPlan(name, source.image(f"anchors/{name}", shown), shown)
        plan.prompts.append(PromptPlan(str(index), name, row["prompt"].strip(), "manual", where,
                                       author=CAPTION_CSV, params={"source": "release generation layout"}))
    plan.anchors = list(anchors.values())
    unnamed = [name for name in names if name not in anchors]
    if unnamed:
        plan.warnings.append(f"{_count(len(unnamed), 'image')} in {source.shown / 'anchors'} named in no row "
                             f"of {CAPTION_CSV} left out: {_listing(unnamed)}")
    return rows


def read_release_generation(source: DatasetFolder, variant: str, base_model: str) -> ImportPlan:
    """The folder sd_inference_v2_1.py leaves (anchors/, caption.csv, output/), checked in full."""
    plan = ImportPlan("release generation (caption.csv)")
    for needed in ("anchors", "output"):
        if not (source.shown / needed).is_dir():
            raise DatasetError(f"{source.shown} holds {CAPTION_CSV} but no {needed}/ folder (the release's "
                               f"generation layout: anchors/, {CAPTION_CSV}, output/)")
    rows = _caption_plans(source, plan)
    plan.variants = [imported_variant(variant, base_model)]
    per_row = [0] * len(rows)
    for name in image_names(source.shown / "output"):
        where = str(source.shown / "output" / name)
        row, k = _release_image(name, rows, where)
        per_row[row] += 1
        key = f"output/{name}"
        plan.generations.append(GenerationPlan(
            key, str(row), "variant", PAPER_SEED, PAPER_STEPS, PAPER_GUIDANCE, source.image(key, where), where,
            params={"seed_mode": "release", "index": k, "scheduler": DEFAULT_SCHEDULER, "file": key}))
        plan.normal_pairs.append(key)
    short = [f"{rows[row]['_where']} ({count})" for row, count in enumerate(per_row) if 0 < count < PAPER_PER_PROMPT]
    if short:
        plan.warnings.append(f"{_count(len(short), 'row')} of {CAPTION_CSV} with fewer than the script's "
                             f"{PAPER_PER_PROMPT} images: {_listing(short)}")
    return finish(plan, str(source.shown))


# --------------------------------------------------------------------------
# The release's metric layout (cpdm_metric.py)
# --------------------------------------------------------------------------


def read_release_metric(anchors: DatasetFolder, generated: DatasetFolder, variant: str,
                        base_model: str) -> ImportPlan:
    """Two flat folders paired file by file in sorted order (the same image twice is one anchor)."""
    anchor_names, generated_names = image_names(anchors.shown), image_names(generated.shown)
    if len(anchor_names) != len(generated_names):
        raise DatasetError(f"{anchors.shown} holds {len(anchor_names)} images and {generated.shown} holds "
                           f"{len(generated_names)}; the metric pairs them file by file, so the counts must match")
    plan = ImportPlan("release metric (two folders)")
    plan.variants = [imported_variant(variant, base_model)]
    anchor_of_sha: dict[str, AnchorPlan] = {}
    position: dict[str, int] = {}  # per anchor, how many of its generated images came before
    for anchor_name, generated_name in zip(anchor_names, generated_names):
        image = anchors.image(anchor_name, str(anchors.shown / anchor_name))
        anchor = anchor_of_sha.get(image.info.sha256)
        if anchor is None:
            anchor = anchor_of_sha[image.info.sha256] = AnchorPlan(anchor_name, image, image.shown)
            text = f"unknown prompt (generations paired with {anchor_name}, imported from {generated.shown.name})"
            plan.prompts.append(PromptPlan(anchor_name, anchor_name, text, "manual", image.shown,
                                           author=PLACEHOLDER_AUTHOR, params={"source": "release metric layout"}))
        where = str(generated.shown / generated_name)
        k = position.get(anchor.key, 0)
        position[anchor.key] = k + 1
        plan.generations.append(GenerationPlan(
            generated_name, anchor.key, "variant", k, None, None, generated.image(generated_name, where), where,
            params={"source": "release metric layout", "file": generated_name, "paired_with": anchor_name}))
        plan.normal_pairs.append(generated_name)
    plan.anchors = list(anchor_of_sha.values())
    return finish(plan, f"{generated.shown}")
