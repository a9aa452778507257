"""Dataset exchange: a workspace's curation as plain files, and back.

``export_dataset`` writes (layout documented in the README)::

    DIR/metadata.json      format, format_version, cpdm_version, counts, sha256 of every other file
    DIR/anchors.csv        id, file, sha256, artist, title, category, source, license
    DIR/prompts.csv        id, anchor, text, origin, author, parent, params
    DIR/variants.csv       id, name, base_model, method, concepts, params, parent, status, artifact_path, artifact_sha256
    DIR/generations.csv    id, prompt, variant, seed, steps, guidance, file, sha256, params
    DIR/pairs.csv          id, anchor, generation, image, kind
    DIR/anchors/ID.EXT     anchor images, named by anchor id, bytes as stored
    DIR/generations/ID.EXT generated images, named by generation id

Ids are the exporting workspace's; ``import_dataset`` maps them to new ids
and keeps every image's bytes (so every hash). It reads and checks the
whole dataset first (every file against metadata.json, every file inside
the folder, every value and every reference between the CSVs), then writes
it in one transaction (:mod:`cpdm.curation.dataset_plan`): a bad dataset is
refused with nothing written. Importing the same dataset twice adds
nothing.

``import_dataset`` also reads the CPDM release's generation layout and
cpdm's per-anchor folders, and ``import_paired_folders`` the release's
metric layout (:mod:`cpdm.curation.dataset_layouts`); the report says which
layout was read. A folder holding cpdm's CSVs without metadata.json is
refused rather than read as another layout.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

from cpdm import __version__
from cpdm.curation.dataset_layouts import read_per_anchor_folders, read_release_generation, read_release_metric
from cpdm.curation.dataset_plan import (
    AnchorPlan,
    CheckPlan,
    DatasetError,
    DatasetFolder,
    DatasetImportReport,
    GenerationPlan,
    ImportPlan,
    PromptPlan,
    SourceImage,
    VariantPlan,
    check_variants_against,
    read_csv_rows,
    refused,
    write_plan,
)
from cpdm.curation.prompts import prompt_rows
from cpdm.diffusion.settings import BASELINE_VARIANT, PAPER_SD_MODEL, UNKNOWN_BASE
from cpdm.store.rows import list_variants
from cpdm.store.workspace import PAIR_KINDS

FORMAT = "cpdm-dataset"
FORMAT_VERSION = 1
COLUMNS = {
    "anchors": ("id", "file", "sha256", "artist", "title", "category", "source", "license"),
    "prompts": ("id", "anchor", "text", "origin", "author", "parent", "params"),
    "variants": ("id", "name", "base_model", "method", "concepts", "params", "parent", "status", "artifact_path",
                 "artifact_sha256"),
    "generations": ("id", "prompt", "variant", "seed", "steps", "guidance", "file", "sha256", "params"),
    "pairs": ("id", "anchor", "generation", "image", "kind"),
}


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _none(value):
    return "" if value is None else value


# --------------------------------------------------------------------------
# Export
# --------------------------------------------------------------------------


def _export_rows(ws) -> dict[str, list[dict]]:
    """The rows of every CSV, image files still named by their workspace path (``_source``)."""
    def source(sha):
        return ws.image_path(sha)

    anchors = [
        {"id": aid, "file": f"anchors/{aid}{source(sha).suffix}", "sha256": sha, "artist": artist, "title": title,
         "category": category, "source": src, "license": lic, "_source": source(sha)}
        for aid, sha, artist, title, category, src, lic in ws.conn.execute(
            "SELECT id, image, artist, title, category, source, license FROM anchors ORDER BY id")
    ]
    prompts = [{"id": p.id, "anchor": p.anchor, "text": p.text, "origin": p.origin, "author": p.author,
                "parent": p.parent, "params": json.dumps(p.params, sort_keys=True)} for p in prompt_rows(ws)]
    variants = [{"id": v.id, "name": v.name, "base_model": v.base_model, "method": v.method,
                 "concepts": json.dumps(list(v.concepts)), "params": json.dumps(v.params, sort_keys=True),
                 "parent": v.parent, "status": v.status, "artifact_path": v.artifact_path,
                 "artifact_sha256": v.artifact_sha256} for v in list_variants(ws)]
    generations = [
        {"id": gid, "prompt": prompt, "variant": variant, "seed": seed, "steps": steps, "guidance": guidance,
         "file": f"generations/{gid}{source(sha).suffix}", "sha256": sha, "params": params, "_source": source(sha)}
        for gid, prompt, variant, seed, steps, guidance, sha, params in ws.conn.execute(
            "SELECT id, prompt, variant, seed, steps, guidance, image, params FROM generations ORDER BY id")
    ]
    pairs = [dict(zip(COLUMNS["pairs"], row)) for row in ws.conn.execute(
        "SELECT id, anchor, generation, image, kind FROM pairs ORDER BY id")]
    return {"anchors": anchors, "prompts": prompts, "variants": variants, "generations": generations, "pairs": pairs}


def export_dataset(ws, folder: str | os.PathLike) -> dict[str, int]:
    """Write the workspace's curation to ``folder`` (new or empty); returns the row counts.

    Everything is written into a staging folder beside it, then moved into
    place, so a failed export leaves no half-written dataset.
    """
    target = Path(folder)
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise DatasetError(f"{target} exists and is not an empty folder; export into a new folder")
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        tables = _export_rows(ws)
        for table, rows in tables.items():
            for row in rows:
                if "_source" in row:
                    (staging / row["file"]).parent.mkdir(exist_ok=True)
                    shutil.copyfile(row.pop("_source"), staging / row["file"])
            with open(staging / f"{table}.csv", "w", encoding="utf-8", newline="") as handle:
                writer = csv.DictWriter(handle, fieldnames=COLUMNS[table], lineterminator="\n")
                writer.writeheader()
                writer.writerows({key: _none(value) for key, value in row.items()} for row in rows)
        files = sorted(p.relative_to(staging).as_posix() for p in staging.rglob("*") if p.is_file())
        metadata = {
            "format": FORMAT, "format_version": FORMAT_VERSION, "cpdm_version": __version__,
            "counts": {table: len(rows) for table, rows in tables.items()},
            "checksums": {name: _sha256_file(staging / name) for name in files},
        }
        (staging / "metadata.json").write_text(json.dumps(metadata, indent=1) + "\n", encoding="utf-8")
        if target.exists():
            target.rmdir()
        os.replace(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return metadata["counts"]


# --------------------------------------------------------------------------
# Import
# --------------------------------------------------------------------------


def import_dataset(ws, folder: str | os.PathLike, *, variant: str = BASELINE_VARIANT,
                   base_model: str | None = None) -> DatasetImportReport:
    """Import a dataset folder in whichever layout it holds (see the module docstring and the README).

    ``variant`` and ``base_model`` name the model the images were made with,
    for layouts that do not say (all but cpdm's export); ``base_model``
    defaults to Stable Diffusion 2.1 for the release's generation layout,
    to "unknown" otherwise. A DatasetError means nothing was written.
    """
    def read() -> ImportPlan:
        source = DatasetFolder.of(folder)
        if (source.shown / "metadata.json").is_file():
            return read_exported(source)
        _refuse_export_without_metadata(source)
        if (source.shown / "caption.csv").is_file():
            return read_release_generation(source, variant, base_model or PAPER_SD_MODEL)
        if (source.shown / "anchors").is_dir():
            return read_per_anchor_folders(source, variant, base_model or UNKNOWN_BASE)
        raise DatasetError(f"{source.shown} is none of the layouts cpdm reads: no metadata.json (a cpdm export), "
                           f"no caption.csv (the release's generation layout), no anchors/ folder (per-anchor "
                           f"folders); two folders paired file by file are read with --anchors and --generated")

    return _import(ws, read)


def import_paired_folders(ws, anchors: str | os.PathLike, generated: str | os.PathLike, *,
                          variant: str = BASELINE_VARIANT, base_model: str | None = None) -> DatasetImportReport:
    """Import the release's metric layout: anchor images and generated images in two folders, paired by sorted name."""
    return _import(ws, lambda: read_release_metric(DatasetFolder.of(anchors), DatasetFolder.of(generated), variant,
                                                   base_model or UNKNOWN_BASE))


def _import(ws, read) -> DatasetImportReport:
    """Read a plan (``read()``), check it against the workspace and write it; a refusal says nothing was imported."""
    try:
        plan = read()
        check_variants_against(ws, plan)
        new_anchors = write_plan(ws, plan)
    except DatasetError as exc:
        raise refused(exc) from exc
    return DatasetImportReport(plan.layout, counts=plan.counts, new_anchors=new_anchors, warnings=plan.warnings)


def _refuse_export_without_metadata(source: DatasetFolder) -> None:
    """A folder holding an export's CSVs but no metadata.json is a damaged export, not another layout."""
    found = [f"{table}.csv" for table in COLUMNS if (source.shown / f"{table}.csv").exists()]
    if found:
        raise DatasetError(f"{source.shown} holds {', '.join(found)} of a cpdm export but no metadata.json; "
                           f"export the dataset again, or restore its metadata.json")


def _check_files(source: DatasetFolder) -> dict:
    """metadata.json, after checking every file it lists against its checksum."""
    meta_path = source.shown / "metadata.json"
    try:
        metadata = json.loads(source.file("metadata.json", str(meta_path)).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DatasetError(f"{meta_path}: not readable JSON ({exc})") from exc
    if not isinstance(metadata, dict) or metadata.get("format") != FORMAT:
        raise DatasetError(f"{meta_path}: not a {FORMAT} metadata file")
    if not isinstance(metadata.get("format_version"), int) or metadata["format_version"] > FORMAT_VERSION:
        raise DatasetError(f"{source.shown}: dataset format version {metadata.get('format_version')!r} is newer "
                           f"than this cpdm reads ({FORMAT_VERSION}); upgrade cpdm")
    checksums = metadata.get("checksums") or {}
    if not isinstance(checksums, dict):
        raise DatasetError(f"{meta_path}: checksums must map file names to sha256")
    bad = []
    for name, expected in sorted(checksums.items()):
        try:
            path = source.file(name, name)
        except DatasetError as exc:
            bad.append(str(exc))
            continue
        if not path.is_file():
            bad.append(f"{name}: missing")
        elif _sha256_file(path) != expected:
            bad.append(f"{name}: checksum differs from metadata.json (changed or damaged)")
    if bad:
        raise DatasetError(f"{source.shown}: {len(bad)} bad files\n  " + "\n  ".join(bad[:20]))
    return metadata


def _whole(row: dict, column: str, *, required: bool = True, minimum: int | None = None) -> int | None:
    """A column's whole number (None when empty and not required), or a DatasetError naming the row."""
    text = (row[column] or "").strip()
    if not text and not required:
        return None
    try:
        value = int(text)
    except ValueError:
        raise DatasetError(f"{row['_where']}: {column} must be a whole number, got {row[column]!r}") from None
    if minimum is not None and value < minimum:
        raise DatasetError(f"{row['_where']}: {column} must be at least {minimum}, got {value}")
    return value


def _number(row: dict, column: str) -> float | None:
    text = (row[column] or "").strip()
    if not text:
        return None
    try:
        return float(text)
    except ValueError:
        raise DatasetError(f"{row['_where']}: {column} must be a number, got {row[column]!r}") from None


def _json(row: dict, column: str, kind: type, default):
    """A JSON column parsed (``default`` when empty); the wrong JSON or type is a DatasetError naming the row."""
    text = (row[column] or "").strip()
    if not text:
        return default
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DatasetError(f"{row['_where']}: {column} is not valid JSON ({exc.msg} at character {exc.pos})") from None
    if not isinstance(value, kind):
        raise DatasetError(f"{row['_where']}: {column} must be a JSON {'object' if kind is dict else 'list'}, "
                           f"got {type(value).__name__}")
    return value


def _check_ids(tables: dict[str, list[dict]]) -> None:
    """Every id is a whole number, used once in its table."""
    for table, rows in tables.items():
        seen: dict[int, str] = {}
        for row in rows:
            row_id = _whole(row, "id")
            if row_id in seen:
                raise DatasetError(f"{row['_where']}: id {row_id} is also the id of {seen[row_id]}")
            seen[row_id] = row["_where"]
            row["id"] = str(row_id)


def _check_references(source: DatasetFolder, tables: dict[str, list[dict]]) -> None:
    """Every id a row points at is in the dataset (and, for parents, comes before the row)."""
    ids = {table: {row["id"] for row in rows} for table, rows in tables.items()}
    refs = (("prompts", "anchor", "anchors"), ("prompts", "parent", "prompts"), ("generations", "prompt", "prompts"),
            ("generations", "variant", "variants"), ("pairs", "anchor", "anchors"),
            ("pairs", "generation", "generations"), ("variants", "parent", "variants"))
    for table, column, target in refs:
        for row in tables[table]:
            if row[column] and row[column] not in ids[target]:
                raise DatasetError(f"{row['_where']}: row {row['id']} points at {target[:-1]} {row[column]}, "
                                   f"which the dataset does not hold")
            if target == table and row[column] and int(row[column]) >= int(row["id"]):
                raise DatasetError(f"{row['_where']}: row {row['id']} names {row[column]} as its parent; a parent "
                                   f"must come before the rows made from it")


def _listed_image(source: DatasetFolder, row: dict) -> SourceImage:
    """The image file a row names, read and checked against the row's sha256."""
    image = source.image(row["file"], row["_where"])
    if image.info.sha256 != row["sha256"]:
        raise DatasetError(f"{image.shown}: its sha256 is not the one {row['_where']} gives")
    return image


def _anchor_plans(source: DatasetFolder, rows: list[dict]) -> list[AnchorPlan]:
    plans = []
    for row in rows:
        image = _listed_image(source, row)
        plans.append(AnchorPlan(row["id"], image, row["_where"], artist=row["artist"] or None,
                                title=row["title"] or None, category=row["category"] or "style",
                                source=row["source"] or None, license=row["license"] or None))
    return plans


def _variant_plans(rows: list[dict]) -> list[VariantPlan]:
    """Variants parents first; a name used twice in the dataset is refused."""
    plans, named = [], {}
    for row in sorted(rows, key=lambda r: int(r["id"])):
        name = row["name"].strip()
        if name in named:
            raise DatasetError(f"{row['_where']}: variant name {name!r} is also the name at {named[name]}; "
                               f"variant names are unique")
        named[name] = row["_where"]
        concepts = _json(row, "concepts", list, [])
        if not all(isinstance(concept, str) for concept in concepts):
            raise DatasetError(f"{row['_where']}: concepts must be a JSON list of texts")
        plans.append(VariantPlan(
            row["id"], name, row["_where"], base_model=row["base_model"], method=row["method"],
            concepts=tuple(concepts), params=_json(row, "params", dict, {}), parent=row["parent"] or None,
            status=row["status"] or "ready", artifact_path=row["artifact_path"] or None,
            artifact_sha256=row["artifact_sha256"] or None))
    return plans


def _prompt_plans(rows: list[dict]) -> list[PromptPlan]:
    """Prompts parents first."""
    return [PromptPlan(row["id"], row["anchor"], row["text"].strip(), row["origin"], row["_where"],
                       author=row["author"] or None, parent=row["parent"] or None,
                       params=_json(row, "params", dict, {}))
            for row in sorted(rows, key=lambda r: int(r["id"]))]


def _generation_plans(source: DatasetFolder, rows: list[dict]) -> list[GenerationPlan]:
    plans = []
    for row in rows:
        image = _listed_image(source, row)
        plans.append(GenerationPlan(
            row["id"], row["prompt"], row["variant"], _whole(row, "seed", minimum=0),
            _whole(row, "steps", required=False, minimum=1), _number(row, "guidance"), image, row["_where"],
            params=_json(row, "params", dict, {})))
    return plans


def _pair_plans(tables: dict[str, list[dict]], plan: ImportPlan) -> None:
    """Normal pairs from their generations; checks with the same unrelated anchor as in the dataset."""
    anchor_of_prompt = {row["id"]: row["anchor"] for row in tables["prompts"]}
    anchor_of_generation = {row["id"]: anchor_of_prompt[row["prompt"]] for row in tables["generations"]}
    anchor_by_sha = {row["sha256"]: row["id"] for row in tables["anchors"]}
    for row in tables["pairs"]:
        kind, where = row["kind"], row["_where"]
        if kind not in PAIR_KINDS:
            raise DatasetError(f"{where}: pair kind {kind!r} is not one of {', '.join(PAIR_KINDS)}")
        if kind == "normal":
            if not row["generation"]:
                raise DatasetError(f"{where}: a normal pair needs its generation")
            if anchor_of_generation[row["generation"]] != row["anchor"]:
                raise DatasetError(f"{where}: the pair's anchor {row['anchor']} is not the anchor of generation "
                                   f"{row['generation']}'s prompt")
            plan.normal_pairs.append(row["generation"])
        elif kind == "check_identical":
            plan.checks.append(CheckPlan(row["anchor"]))
        elif row["image"] not in anchor_by_sha:
            raise DatasetError(f"{where}: an unrelated check shows image {row['image'][:12]}…, which is no anchor "
                               f"of the dataset")
        else:
            plan.checks.append(CheckPlan(row["anchor"], anchor_by_sha[row["image"]]))


def read_exported(source: DatasetFolder) -> ImportPlan:
    """A cpdm export, checked in full (files, counts, ids, values, references, images); nothing is written."""
    metadata = _check_files(source)
    tables = {table: read_csv_rows(source, f"{table}.csv", COLUMNS[table]) for table in COLUMNS}
    for table, rows in tables.items():
        if (metadata.get("counts") or {}).get(table, len(rows)) != len(rows):
            raise DatasetError(f"{source.shown / (table + '.csv')}: {len(rows)} rows, but metadata.json counts "
                               f"{metadata['counts'][table]}")
    _check_ids(tables)
    _check_references(source, tables)
    plan = ImportPlan("cpdm export", counts={table: len(rows) for table, rows in tables.items()})
    plan.anchors = _anchor_plans(source, tables["anchors"])
    plan.variants = _variant_plans(tables["variants"])
    plan.prompts = _prompt_plans(tables["prompts"])
    plan.generations = _generation_plans(source, tables["generations"])
    _pair_plans(tables, plan)
    return plan
