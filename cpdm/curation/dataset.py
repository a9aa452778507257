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
and keeps every image's bytes (so every hash). It first checks every
file against metadata.json and every reference between the CSVs; a bad
dataset is refused with nothing written. Importing the same dataset twice
adds nothing.

``import_dataset`` also reads the CPDM release's plain layout: ``DIR/anchors/``
holding one image per anchor and, per anchor, a folder named like the
anchor's file (without suffix) holding its generated images, under
``DIR/generations/`` (or beside ``anchors/``). The release paired anchors
and folders in ``os.listdir`` order, which is arbitrary; here files are
matched by name and taken in sorted order.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from cpdm import __version__
from cpdm.curation.prompts import prompt_rows
from cpdm.store.rows import (
    GenerationRow,
    add_generations,
    add_prompt,
    add_variant,
    list_variants,
    make_check_pairs,
    make_pairs,
)
from cpdm.errors import CpdmError
from cpdm.generation.settings import UNKNOWN_BASE
from cpdm.store.images import IMAGE_SUFFIXES, read_image_file, store_image_bytes
from cpdm.store.workspace import BASELINE_METHOD

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


class DatasetError(CpdmError):
    """A dataset folder that cannot be written or read; nothing was imported."""


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


@dataclass
class DatasetImportReport:
    layout: str
    counts: dict[str, int] = field(default_factory=dict)  # rows the dataset holds, per table
    new_anchors: int = 0

    def summary(self) -> str:
        held = ", ".join(f"{n} {table}" for table, n in self.counts.items())
        return f"imported the {self.layout} layout: {held} ({self.new_anchors} new anchors)"


def import_dataset(ws, folder: str | os.PathLike, *, variant: str = "original",
                   base_model: str = UNKNOWN_BASE) -> DatasetImportReport:
    """Import an exported dataset, or the CPDM release's plain layout (``variant``/``base_model`` apply there)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DatasetError(f"{folder}: no such folder")
    if (folder / "metadata.json").is_file():
        return _import_exported(ws, folder)
    if (folder / "anchors").is_dir():
        return _import_plain(ws, folder, variant, base_model)
    raise DatasetError(
        f"{folder} is neither an exported dataset (no metadata.json) nor the plain layout (no anchors/ folder)"
    )


def _read_csv(folder: Path, table: str) -> list[dict]:
    path = folder / f"{table}.csv"
    try:
        with open(path, encoding="utf-8", newline="") as handle:
            reader = csv.DictReader(handle)
            missing = [c for c in COLUMNS[table] if c not in (reader.fieldnames or ())]
            if missing:
                raise DatasetError(f"{path}: missing column {', '.join(missing)}")
            return [dict(row) for row in reader]
    except FileNotFoundError:
        raise DatasetError(f"{path}: missing") from None
    except (UnicodeDecodeError, csv.Error) as exc:
        raise DatasetError(f"{path}: not a readable UTF-8 CSV ({exc})") from exc


def _check_files(folder: Path) -> dict:
    """metadata.json, after checking every file it lists against its checksum."""
    try:
        metadata = json.loads((folder / "metadata.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DatasetError(f"{folder / 'metadata.json'}: not readable JSON ({exc})") from exc
    if not isinstance(metadata, dict) or metadata.get("format") != FORMAT:
        raise DatasetError(f"{folder / 'metadata.json'}: not a {FORMAT} metadata file")
    if not isinstance(metadata.get("format_version"), int) or metadata["format_version"] > FORMAT_VERSION:
        raise DatasetError(f"{folder}: dataset format version {metadata.get('format_version')!r} is newer than this "
                           f"cpdm reads ({FORMAT_VERSION}); upgrade cpdm")
    checksums = metadata.get("checksums") or {}
    bad = []
    for name, expected in sorted(checksums.items()):
        path = folder / name
        if ".." in Path(name).parts or Path(name).is_absolute():
            bad.append(f"{name}: a path outside the dataset")
        elif not path.is_file():
            bad.append(f"{name}: missing")
        elif _sha256_file(path) != expected:
            bad.append(f"{name}: checksum differs from metadata.json (changed or damaged)")
    if bad:
        raise DatasetError(f"{folder}: {len(bad)} bad files; nothing was imported:\n  " + "\n  ".join(bad[:20]))
    return metadata


def _int_or_none(value: str) -> int | None:
    return int(value) if value not in ("", None) else None


def _check_references(folder: Path, tables: dict[str, list[dict]]) -> None:
    """Every id a row points at is in the dataset, and every image matches its sha256."""
    ids = {table: {row["id"] for row in rows} for table, rows in tables.items()}
    refs = (("prompts", "anchor", "anchors"), ("prompts", "parent", "prompts"), ("generations", "prompt", "prompts"),
            ("generations", "variant", "variants"), ("pairs", "anchor", "anchors"),
            ("pairs", "generation", "generations"), ("variants", "parent", "variants"))
    for table, column, target in refs:
        for row in tables[table]:
            if row[column] and row[column] not in ids[target]:
                raise DatasetError(f"{folder / (table + '.csv')}: row {row['id']} points at {target[:-1]} "
                                   f"{row[column]}, which the dataset does not hold; nothing was imported")
    for table in ("anchors", "generations"):
        for row in tables[table]:
            data, info = read_image_file(folder / row["file"], f"{folder.name}/{row['file']}")
            if info.sha256 != row["sha256"]:
                raise DatasetError(f"{folder / row['file']}: its sha256 is not the one {table}.csv gives")


def _import_exported(ws, folder: Path) -> DatasetImportReport:
    metadata = _check_files(folder)
    tables = {table: _read_csv(folder, table) for table in COLUMNS}
    _check_references(folder, tables)
    for table, rows in tables.items():
        if (metadata.get("counts") or {}).get(table, len(rows)) != len(rows):
            raise DatasetError(f"{folder / (table + '.csv')}: {len(rows)} rows, but metadata.json counts "
                               f"{metadata['counts'][table]}; nothing was imported")
    report = DatasetImportReport("cpdm export", counts={t: len(rows) for t, rows in tables.items()})
    anchor_ids, report.new_anchors = _import_anchor_rows(ws, folder, tables["anchors"])
    variant_ids = _import_variants(ws, tables["variants"])
    prompt_ids = _import_prompts(ws, tables["prompts"], anchor_ids)
    generation_ids = _import_generations(ws, folder, tables["generations"], prompt_ids, variant_ids)
    _import_pairs(ws, tables, anchor_ids, generation_ids)
    return report


def _import_anchor_rows(ws, folder: Path, rows: list[dict]) -> tuple[dict[str, int], int]:
    """Import the anchor images with their metadata; returns (dataset id -> workspace id, new anchors)."""
    from cpdm.curation.anchors import import_anchors

    with tempfile.TemporaryDirectory(prefix="cpdm-dataset-") as tmp:
        meta = Path(tmp) / "anchors.csv"
        with open(meta, "w", encoding="utf-8", newline="") as handle:
            writer = csv.writer(handle, lineterminator="\n")
            writer.writerow(("file", "artist", "title", "category", "source", "license"))
            writer.writerows((row["file"], row["artist"], row["title"], row["category"] or "style", row["source"],
                              row["license"]) for row in rows)
        report = import_anchors(ws, folder, meta_csv=meta) if rows else None
    by_sha = dict(ws.conn.execute("SELECT image, id FROM anchors").fetchall())
    return {row["id"]: by_sha[row["sha256"]] for row in rows}, len(report.imported) if report else 0


def _import_variants(ws, rows: list[dict]) -> dict[str, int]:
    """Variants by name: an existing one of the same name must have the same base model and method."""
    existing = {v.name: v for v in list_variants(ws)}
    mapping: dict[str, int] = {}
    for row in sorted(rows, key=lambda r: int(r["id"])):
        found = existing.get(row["name"])
        if found is not None:
            if (found.base_model, found.method) != (row["base_model"], row["method"]):
                raise DatasetError(f"variant {row['name']!r} exists here with another base model or method "
                                   f"({found.base_model}, {found.method}); rename one of them first")
            mapping[row["id"]] = found.id
            continue
        mapping[row["id"]] = add_variant(
            ws, row["name"], base_model=row["base_model"], method=row["method"],
            concepts=tuple(json.loads(row["concepts"] or "[]")), params=json.loads(row["params"] or "{}"),
            parent=mapping.get(row["parent"]), status=row["status"] or "ready",
            artifact_path=row["artifact_path"] or None, artifact_sha256=row["artifact_sha256"] or None,
        )
    return mapping


def _import_prompts(ws, rows: list[dict], anchor_ids: dict[str, int]) -> dict[str, int]:
    """Prompts in id order (parents first); one already here (same anchor, text, origin, author, parent) is reused."""
    mapping: dict[str, int] = {}
    for row in sorted(rows, key=lambda r: int(r["id"])):
        anchor = anchor_ids[row["anchor"]]
        parent = mapping.get(row["parent"]) if row["parent"] else None
        author = row["author"] or None
        same = [p.id for p in prompt_rows(ws, anchor_id=anchor)
                if (p.text, p.origin, p.author, p.parent) == (row["text"], row["origin"], author, parent)]
        mapping[row["id"]] = same[0] if same else add_prompt(
            ws, anchor, row["text"], origin=row["origin"], author=author, parent=parent,
            params=json.loads(row["params"] or "{}"))
    return mapping


def _import_generations(ws, folder: Path, rows: list[dict], prompt_ids, variant_ids) -> dict[str, int]:
    """Store each generated image as it is (same bytes, same hash) and record the generations."""
    records = []
    for row in rows:
        data, _ = read_image_file(folder / row["file"], row["file"])
        info = store_image_bytes(ws, data, row["file"])
        guidance = float(row["guidance"]) if row["guidance"] else None
        records.append(GenerationRow(prompt_ids[row["prompt"]], variant_ids[row["variant"]], _int_or_none(row["seed"]),
                                     _int_or_none(row["steps"]), guidance, info.sha256, json.loads(row["params"] or "{}")))
    new_ids = add_generations(ws, records) if records else []
    return {row["id"]: new for row, new in zip(rows, new_ids)}


def _import_pairs(ws, tables: dict[str, list[dict]], anchor_ids, generation_ids) -> None:
    """Normal pairs from their generations; checks with the same unrelated anchor as in the dataset."""
    pairs = tables["pairs"]
    make_pairs(ws, [generation_ids[p["generation"]] for p in pairs if p["kind"] == "normal"])
    anchor_by_sha = {row["sha256"]: anchor_ids[row["id"]] for row in tables["anchors"]}
    checked = sorted({anchor_ids[p["anchor"]] for p in pairs if p["kind"] == "check_identical"})
    unrelated = {anchor_ids[p["anchor"]]: anchor_by_sha[p["image"]] for p in pairs if p["kind"] == "check_unrelated"}
    if checked:
        make_check_pairs(ws, checked, unrelated=unrelated)


def _plain_generation_folders(folder: Path, stems: list[str]) -> dict[str, Path]:
    """Anchor name -> its folder of generated images; a folder named after no anchor is an error."""
    root = folder / "generations" if (folder / "generations").is_dir() else folder
    found = {}
    for sub in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        if sub.name in ("anchors", "generations"):
            continue
        if sub.name not in stems:
            raise DatasetError(f"{sub}: no anchor named {sub.name} in {folder / 'anchors'}; nothing was imported")
        found[sub.name] = sub
    return found


def _image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
                  and not p.name.startswith("."))


def _import_plain(ws, folder: Path, variant: str, base_model: str) -> DatasetImportReport:
    """The CPDM release's layout: anchors/NAME.ext and, per anchor, a folder NAME of generated images."""
    from cpdm.curation.anchors import import_anchors

    anchor_files = _image_files(folder / "anchors")
    if not anchor_files:
        raise DatasetError(f"{folder / 'anchors'}: no images")
    stems = [p.stem for p in anchor_files]
    repeated = sorted({s for s in stems if stems.count(s) > 1})
    if repeated:
        raise DatasetError(f"{folder / 'anchors'}: two anchors named {repeated[0]} (with different suffixes)")
    folders = _plain_generation_folders(folder, stems)
    generated = {stem: _image_files(path) for stem, path in folders.items()}
    checked = {path: read_image_file(path, f"{path.parent.name}/{path.name}") for files in generated.values()
               for path in files}  # every generated image is checked before anything is written
    report = import_anchors(ws, folder / "anchors")
    by_sha = dict(ws.conn.execute("SELECT image, id FROM anchors").fetchall())
    anchor_of = {p.stem: by_sha[read_image_file(p)[1].sha256] for p in anchor_files}
    known = {v.name: v.id for v in list_variants(ws)}
    variant_id = known.get(variant) or add_variant(ws, variant, base_model=base_model, method=BASELINE_METHOD)
    rows = []
    for stem, files in generated.items():
        anchor = anchor_of[stem]
        text = f"unknown prompt (generations of {stem}, imported from {folder.name})"
        existing = [p.id for p in prompt_rows(ws, anchor_id=anchor) if p.text == text]
        prompt = existing[0] if existing else add_prompt(ws, anchor, text, origin="manual", author="cpdm-release",
                                                         params={"source": "plain layout"})
        for k, path in enumerate(files):
            data, _ = checked[path]
            info = store_image_bytes(ws, data, path.name)
            rows.append(GenerationRow(prompt, variant_id, k, None, None, info.sha256,
                                      {"source": "plain layout", "file": f"{stem}/{path.name}"}))
    ids = add_generations(ws, rows) if rows else []
    make_pairs(ws, ids)
    return DatasetImportReport("plain", counts={"anchors": len(anchor_files), "generations": len(rows)},
                               new_anchors=len(report.imported))
