"""What a dataset import will write, checked in full before anything is written, then written all at once.

Every layout's reader (:mod:`cpdm.curation.dataset`,
:mod:`cpdm.curation.release_layouts`) turns a folder into an
:class:`ImportPlan`: the anchors, variants, prompts, generations and pairs
it holds, each row with the place in the user's files it came from
(``where``), each image already read and checked. Readers write nothing.

:func:`write_plan` then stores the image files (each read again and its
hash compared) and inserts every row in one transaction. A row the store
refuses rolls the whole transaction back and the image files this import
created are removed, so a failed import leaves the workspace as it was.

Files a dataset names are confined to its folder: absolute paths and ``..``
are refused before anything is opened (so an error never tells whether a
file outside exists), and a symlink that leads out of the folder is refused
too.
"""

from __future__ import annotations

import csv
import io
import os
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath, PureWindowsPath

from cpdm.errors import CpdmError
from cpdm.store.images import (
    ImageInfo,
    insert_image_row,
    read_image_file,
    relative_image_path,
    remove_unrecorded,
    write_image_file,
)
from cpdm.store.rows import (
    DEFAULT_AUTHORS,
    GenerationRow,
    add_anchor_in,
    add_generations_in,
    add_prompt_in,
    add_variant_in,
    make_check_pairs_in,
    make_pairs_in,
)
from cpdm.user_files import read_user_text

NOTHING_IMPORTED = "nothing was imported"


class DatasetError(CpdmError):
    """A dataset folder that cannot be written or read; nothing was imported."""


def refused(exc: DatasetError) -> DatasetError:
    """The same refusal, saying on its first line that nothing was imported."""
    first, newline, rest = str(exc).partition("\n")
    return DatasetError(f"{first}; {NOTHING_IMPORTED}{newline}{rest}")


# --------------------------------------------------------------------------
# Files inside the dataset
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class DatasetFolder:
    """A dataset's folder: as the user named it (for messages) and resolved (for confinement)."""

    shown: Path
    resolved: Path

    @classmethod
    def of(cls, folder: str | os.PathLike) -> "DatasetFolder":
        shown = Path(folder)
        if not shown.is_dir():
            raise DatasetError(f"{shown}: no such folder")
        return cls(shown, shown.resolve())

    def file(self, relative: str, where: str) -> Path:
        """The file ``relative`` names inside this folder, symlinks followed; anything leading out is refused.

        The path is judged as text first: an absolute path or one with
        ``..`` is refused before the file system is asked about it.
        """
        text = relative.replace("\\", "/")
        if not text.strip():
            raise DatasetError(f"{where}: no file named")
        posix = PurePosixPath(text)
        if posix.is_absolute() or PureWindowsPath(relative).drive or ".." in posix.parts:
            raise DatasetError(f"{where}: {relative!r} is not a path inside {self.shown} (absolute paths and '..' "
                               f"are refused)")
        try:
            resolved = (self.resolved / posix).resolve()
        except (OSError, RuntimeError) as exc:  # a symlink loop
            raise DatasetError(f"{where}: cannot follow {relative!r} ({exc})") from exc
        if not resolved.is_relative_to(self.resolved):
            raise DatasetError(f"{where}: {relative!r} is a symlink that leads outside {self.shown}")
        return resolved

    def image(self, relative: str, where: str) -> "SourceImage":
        """The image file ``relative`` names, confined, read and checked (a CpdmError names it as the user does)."""
        path = self.file(relative, where)
        shown = str(self.shown / relative)
        try:
            _, info = read_image_file(path, shown)
        except CpdmError as exc:
            raise DatasetError(str(exc)) from exc
        return SourceImage(path, shown, info)


def read_csv_rows(source: DatasetFolder, name: str, columns: tuple[str, ...]) -> list[dict]:
    """The rows of a CSV file inside the dataset, each with ``_where`` (file and line) for messages."""
    shown = source.shown / name
    text = read_user_text(source.file(name, str(shown)), shown, DatasetError, missing="missing")
    reader = csv.DictReader(io.StringIO(text, newline=""))
    try:
        missing = [c for c in columns if c not in (reader.fieldnames or ())]
        if missing:
            raise DatasetError(f"{shown}: missing column {', '.join(missing)} (expected {','.join(columns)})")
        return [{**row, "_where": f"{shown} line {reader.line_num}"} for row in reader]
    except csv.Error as exc:
        raise DatasetError(f"{shown} line {reader.line_num}: malformed CSV ({exc})") from exc


@dataclass(frozen=True)
class SourceImage:
    """An image file of the dataset, checked: where it is, how the user knows it, what it holds."""

    path: Path  # resolved, inside the dataset
    shown: str  # the dataset folder as given, joined with the file's relative path
    info: ImageInfo


# --------------------------------------------------------------------------
# The plan
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class AnchorPlan:
    key: str  # how the dataset refers to it (its id, or its file's name)
    image: SourceImage
    where: str
    artist: str | None = None
    title: str | None = None
    category: str = "style"
    source: str | None = None
    license: str | None = None  # noqa: A003 (the column's name)


@dataclass(frozen=True)
class VariantPlan:
    """A variant the dataset's generations were made with; one of that name already here is used as it is."""

    key: str
    name: str
    where: str
    base_model: str
    method: str
    concepts: tuple[str, ...] = ()
    params: dict = field(default_factory=dict)
    parent: str | None = None  # key of its parent variant, which comes earlier in the plan
    status: str = "ready"
    artifact_path: str | None = None
    artifact_sha256: str | None = None
    must_match: bool = True  # an existing variant of the name must have the same base model and method


@dataclass(frozen=True)
class PromptPlan:
    """A prompt; one already here with the same anchor, text, origin, author and parent is used as it is."""

    key: str
    anchor: str  # anchor key
    text: str
    origin: str
    where: str
    author: str | None = None
    parent: str | None = None  # key of the prompt it was refined from, earlier in the plan
    params: dict = field(default_factory=dict)


@dataclass(frozen=True)
class GenerationPlan:
    key: str
    prompt: str  # prompt key
    variant: str  # variant key
    seed: int
    steps: int | None
    guidance: float | None
    image: SourceImage
    where: str
    params: dict = field(default_factory=dict)


@dataclass(frozen=True)
class CheckPlan:
    """Attention checks for an anchor: identical, and unrelated against ``unrelated`` (an anchor key)."""

    anchor: str
    unrelated: str | None = None


@dataclass
class ImportPlan:
    """Everything an import writes, in the order it is written; keys tie the rows together."""

    layout: str  # what the folder was read as, for the summary
    counts: dict[str, int] = field(default_factory=dict)  # rows the dataset holds per table, when it says
    anchors: list[AnchorPlan] = field(default_factory=list)
    variants: list[VariantPlan] = field(default_factory=list)
    prompts: list[PromptPlan] = field(default_factory=list)
    generations: list[GenerationPlan] = field(default_factory=list)
    normal_pairs: list[str] = field(default_factory=list)  # generation keys
    checks: list[CheckPlan] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


@dataclass
class DatasetImportReport:
    layout: str
    counts: dict[str, int] = field(default_factory=dict)  # rows the dataset holds, per table
    new_anchors: int = 0
    warnings: list[str] = field(default_factory=list)

    def summary(self) -> str:
        held = ", ".join(f"{n} {table}" for table, n in self.counts.items())
        return f"imported the {self.layout} layout: {held} ({self.new_anchors} new anchors)"


# --------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------


def check_variants_against(ws, plan: ImportPlan) -> None:
    """Refuse a planned variant whose name is taken here by another base model or method (before writing)."""
    for variant in plan.variants:
        if variant.must_match:
            _existing_variant(ws.conn, variant)


def _existing_variant(conn, variant: VariantPlan) -> int | None:
    """The id of the workspace's variant of this name, or None; a conflicting one is an error."""
    row = conn.execute("SELECT id, base_model, method FROM variants WHERE name = ?", (variant.name,)).fetchone()
    if row is None:
        return None
    if variant.must_match and (row[1], row[2]) != (variant.base_model, variant.method):
        raise DatasetError(f"{variant.where}: variant {variant.name!r} exists here with another base model or "
                           f"method ({row[1]}, {row[2]}); rename one of them first")
    return row[0]


def _store_files(ws, images: list[SourceImage]) -> list[Path]:
    """Copy the images into the workspace's store; returns the files this call created.

    Each file is read again and its hash compared with the one checked, so a
    file changed since it was checked is refused rather than stored under
    the wrong name.
    """
    created: list[Path] = []
    try:
        for image in images:
            target = ws.root / relative_image_path(image.info)
            if target.exists():
                continue
            data, info = read_image_file(image.path, image.shown)
            if info.sha256 != image.info.sha256:
                raise DatasetError(f"{image.shown}: the file changed during the import; run it again")
            write_image_file(ws.root, info, data)
            created.append(target)
    except BaseException:
        remove_unrecorded(ws, created)
        raise
    return created


def _row(where: str, action):
    """Run one insert; a refusal by the store names the row of the dataset it came from."""
    try:
        return action()
    except DatasetError:
        raise
    except CpdmError as exc:
        raise DatasetError(f"{where}: {exc}") from exc


def _insert_anchor(conn, anchor: AnchorPlan) -> tuple[int, bool]:
    """(workspace id, whether it is new); an image that is an anchor already keeps that anchor."""
    new_id = _row(anchor.where, lambda: add_anchor_in(
        conn, anchor.image.info.sha256, artist=anchor.artist, title=anchor.title, category=anchor.category,
        source=anchor.source, license=anchor.license))
    if new_id is not None:
        return new_id, True
    return conn.execute("SELECT id FROM anchors WHERE image = ?", (anchor.image.info.sha256,)).fetchone()[0], False


def _insert_variant(conn, variant: VariantPlan, ids: dict[str, int]) -> int:
    existing = _existing_variant(conn, variant)
    if existing is not None:
        return existing
    return _row(variant.where, lambda: add_variant_in(
        conn, variant.name, base_model=variant.base_model, method=variant.method, concepts=variant.concepts,
        params=variant.params, parent=ids.get(variant.parent) if variant.parent else None, status=variant.status,
        artifact_path=variant.artifact_path, artifact_sha256=variant.artifact_sha256))


def _insert_prompt(conn, prompt: PromptPlan, anchor_ids: dict[str, int], ids: dict[str, int]) -> int:
    anchor = anchor_ids[prompt.anchor]
    parent = ids[prompt.parent] if prompt.parent else None
    author = DEFAULT_AUTHORS.get(prompt.origin) if prompt.author is None else prompt.author
    same = conn.execute(
        "SELECT id FROM prompts WHERE anchor = ? AND text = ? AND origin = ? AND author IS ? AND parent IS ? "
        "ORDER BY id LIMIT 1", (anchor, prompt.text.strip(), prompt.origin, author, parent)).fetchone()
    if same is not None:
        return same[0]
    return _row(prompt.where, lambda: add_prompt_in(conn, anchor, prompt.text, origin=prompt.origin,
                                                    author=prompt.author, parent=parent, params=prompt.params))


def _insert_generations(conn, plan: ImportPlan, prompt_ids, variant_ids) -> dict[str, int]:
    ids = {}
    for generation in plan.generations:
        row = GenerationRow(prompt_ids[generation.prompt], variant_ids[generation.variant], generation.seed,
                            generation.steps, generation.guidance, generation.image.info.sha256, generation.params)
        (ids[generation.key],) = _row(generation.where, lambda: add_generations_in(conn, [row]))
    return ids


def write_plan(ws, plan: ImportPlan) -> int:
    """Store the plan's images and insert all its rows in one transaction; returns how many anchors are new.

    On any failure the transaction is rolled back and the image files this
    call created are removed.
    """
    images = list({image.info.sha256: image for image in
                   [a.image for a in plan.anchors] + [g.image for g in plan.generations]}.values())
    created = _store_files(ws, images)
    try:
        with ws.transaction() as conn:
            for image in images:
                insert_image_row(conn, image.info)
            anchor_ids, new_anchors = {}, 0
            for anchor in plan.anchors:
                anchor_ids[anchor.key], is_new = _insert_anchor(conn, anchor)
                new_anchors += is_new
            variant_ids: dict[str, int] = {}
            for variant in plan.variants:
                variant_ids[variant.key] = _insert_variant(conn, variant, variant_ids)
            prompt_ids: dict[str, int] = {}
            for prompt in plan.prompts:
                prompt_ids[prompt.key] = _insert_prompt(conn, prompt, anchor_ids, prompt_ids)
            generation_ids = _insert_generations(conn, plan, prompt_ids, variant_ids)
            make_pairs_in(conn, [generation_ids[key] for key in plan.normal_pairs])
            checked = sorted({anchor_ids[check.anchor] for check in plan.checks})
            if checked:
                make_check_pairs_in(conn, checked, {anchor_ids[c.anchor]: anchor_ids[c.unrelated]
                                                    for c in plan.checks if c.unrelated})
    except BaseException:
        remove_unrecorded(ws, created)
        raise
    return new_anchors
