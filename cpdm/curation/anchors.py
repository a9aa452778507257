"""Anchor images: import a folder of artworks safely, list what is there.

An import is all or nothing. Every file is checked first (inside the folder,
a real PNG/JPEG/WebP, complete, not a decompression bomb, metadata valid);
only when all pass are the image files written and every row inserted in one
transaction. With ``skip_bad`` the bad files are reported and left out and the
rest is imported. The same image twice (in the folder, or already an anchor)
is stored once (with the first file's metadata) and reported as a duplicate,
so re-importing a folder adds nothing.

The optional metadata CSV names exactly the files to import, one per row::

    file,artist,title,category,source,license
    monet/water-lilies.jpg,Claude Monet,Water Lilies,style,wikiart,public domain

``file`` is required and relative to the folder; the other columns are
optional. Unknown columns are an error (a misspelt ``artsit`` column would
otherwise lose every artist name silently).
"""

from __future__ import annotations

import csv
import io
import os
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath


from cpdm.errors import CpdmError
from cpdm.store.images import (
    IMAGE_SUFFIXES,
    ImageError,
    ImageInfo,
    insert_image_row,
    read_image_file,
    relative_image_path,
    remove_unrecorded,
    write_image_file,
)
from cpdm.store.rows import add_anchor_in
from cpdm.store.workspace import ANCHOR_CATEGORIES, Workspace
from cpdm.progress import track
from cpdm.user_files import read_user_text

META_COLUMNS = ("file", "artist", "title", "category", "source", "license")
REQUIRED_COLUMNS = ("file",)
# Folders with at least this many images get a progress bar on stderr.
PROGRESS_MIN_FILES = 50
# A refused import lists this many bad files, then says how many more there are.
LISTED_BAD_FILES = 20


class AnchorImportError(CpdmError):
    """An import that was refused; nothing was written."""


@dataclass(frozen=True)
class Candidate:
    """A file the import will try: where it is, how to name it, its metadata."""

    path: Path  # absolute, symlinks resolved
    name: str  # as shown to the user: the folder argument joined with the relative path
    artist: str | None = None
    title: str | None = None
    category: str = "style"
    source: str | None = None
    license: str | None = None


@dataclass(frozen=True)
class FileNote:
    """A file that was not imported, and why."""

    name: str
    reason: str

    def __str__(self) -> str:
        return f"{self.name}: {self.reason}"


@dataclass(frozen=True)
class ImportedAnchor:
    name: str
    anchor_id: int
    sha256: str


@dataclass
class ImportReport:
    """What an import did: anchors added, duplicates left out, bad files skipped."""

    imported: list[ImportedAnchor] = field(default_factory=list)
    duplicates: list[FileNote] = field(default_factory=list)
    skipped: list[FileNote] = field(default_factory=list)
    ignored: int = 0  # files without an image suffix (folder walk only)

    def summary(self) -> str:
        """One line: ``imported N, duplicates M, skipped K``."""
        line = f"imported {len(self.imported)}, duplicates {len(self.duplicates)}, skipped {len(self.skipped)}"
        if self.ignored:
            line += f" (ignored {self.ignored} files without an image suffix)"
        if not self.imported:
            line += "; nothing new was added"
        return line


class _Problems:
    """Bad files found while checking: raised at once, or collected when skipping."""

    def __init__(self, skip_bad: bool):
        self.skip_bad = skip_bad
        self.notes: list[FileNote] = []

    def add(self, name: str, reason: str) -> None:
        self.notes.append(FileNote(name, reason))

    def raise_unless_skipping(self) -> None:
        """Refuse the import, naming every bad file with its reason (up to ``LISTED_BAD_FILES``)."""
        if not self.notes or self.skip_bad:
            return
        outcome = "nothing was imported (--skip-bad imports the rest)"
        if len(self.notes) == 1:
            raise AnchorImportError(f"{self.notes[0]}; {outcome}")
        lines = [f"{len(self.notes)} bad files; {outcome}:"]
        lines += [f"  {note}" for note in self.notes[:LISTED_BAD_FILES]]
        if len(self.notes) > LISTED_BAD_FILES:
            lines.append(f"  and {len(self.notes) - LISTED_BAD_FILES} more")
        raise AnchorImportError("\n".join(lines))


def _display_name(folder_arg: Path, relative: str) -> str:
    return str(folder_arg / relative)


def _resolve_inside(folder: Path, candidate: Path, folder_arg: Path) -> tuple[Path | None, str]:
    """``(resolved path, "")`` if the path stays inside ``folder`` after following symlinks, else ``(None, why)``."""
    try:
        resolved = candidate.resolve()
    except (RuntimeError, OSError) as exc:  # symlink loops
        return None, f"cannot follow the path ({exc})"
    try:
        resolved.relative_to(folder)
    except ValueError:
        kind = "symlink points" if candidate.is_symlink() else "path leads"
        return None, f"{kind} outside {folder_arg}"
    return resolved, ""


def _walk_folder(folder_arg: Path, folder: Path, default_category: str, problems: _Problems):
    """Every image file under the folder, recursively, in a stable order.

    Hidden files and folders (``.DS_Store``, ``.git``) are not looked at;
    files without an image suffix are counted, not imported. Symlinked
    folders are not followed (their target, when inside, is walked anyway);
    a symlink that leads outside the folder is a bad file.
    """
    candidates: list[Candidate] = []
    ignored = 0
    for directory, subdirs, files in os.walk(folder, followlinks=False):
        subdirs[:] = sorted(d for d in subdirs if not d.startswith("."))
        here = Path(directory)
        for subdir in subdirs:
            if (here / subdir).is_symlink():
                resolved, why = _resolve_inside(folder, here / subdir, folder_arg)
                if resolved is None:
                    relative = (here / subdir).relative_to(folder).as_posix()
                    problems.add(_display_name(folder_arg, relative), why)
        for filename in sorted(files):
            if filename.startswith("."):
                continue
            path = here / filename
            relative = path.relative_to(folder).as_posix()
            if path.suffix.lower() not in IMAGE_SUFFIXES:
                ignored += 1
                continue
            name = _display_name(folder_arg, relative)
            resolved, why = _resolve_inside(folder, path, folder_arg)
            if resolved is None:
                problems.add(name, why)
                continue
            if not resolved.is_file():  # a pipe or device named like an image
                problems.add(name, "not a regular file")
                continue
            candidates.append(Candidate(resolved, name, category=default_category))
    return candidates, ignored


def _read_meta_rows(meta_csv: Path) -> list[tuple[int, dict[str, str]]]:
    """The CSV's rows as (line number, column -> value); any structural problem is an error."""
    text = read_user_text(meta_csv, meta_csv, AnchorImportError)
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader, None)
        if header is None or not any(cell.strip() for cell in header):
            raise AnchorImportError(f"{meta_csv}: empty file (expected a header row with a 'file' column)")
        columns = [cell.strip().lower() for cell in header]
        _check_columns(meta_csv, columns)
        rows = []
        for values in reader:
            line = reader.line_num
            if not any(value.strip() for value in values):
                continue  # blank line
            if len(values) > len(columns):
                raise AnchorImportError(
                    f"{meta_csv} line {line}: {len(values)} fields but the header has {len(columns)}"
                )
            values = values + [""] * (len(columns) - len(values))
            rows.append((line, {column: value.strip() for column, value in zip(columns, values)}))
    except csv.Error as exc:
        raise AnchorImportError(f"{meta_csv} line {reader.line_num}: malformed CSV ({exc})") from exc
    if not rows:
        raise AnchorImportError(f"{meta_csv}: no rows below the header")
    return rows


def _check_columns(meta_csv: Path, columns: list[str]) -> None:
    """Refuse unknown, duplicated and missing columns, naming them."""
    unknown = [c for c in columns if c not in META_COLUMNS]
    if unknown:
        listed = ", ".join(repr(c) for c in unknown)
        raise AnchorImportError(
            f"{meta_csv}: unknown column{'s' if len(unknown) > 1 else ''} {listed} (allowed: {', '.join(META_COLUMNS)})"
        )
    repeated = sorted({c for c in columns if columns.count(c) > 1})
    if repeated:
        raise AnchorImportError(f"{meta_csv}: column {', '.join(repr(c) for c in repeated)} appears more than once")
    missing = [c for c in REQUIRED_COLUMNS if c not in columns]
    if missing:
        raise AnchorImportError(f"{meta_csv}: missing required column {', '.join(repr(c) for c in missing)}")


# The metadata a CSV row gives its file (what two rows for one file must agree on).
META_FIELDS = ("artist", "title", "category", "source", "license")


def _refuse_disagreeing_rows(meta_csv: Path, earlier: tuple[int, Candidate], line: int, later: Candidate) -> None:
    """Two rows for one file must give it the same metadata: which one is meant cannot be guessed."""
    first_line, first = earlier
    differing = [f"{name} {getattr(first, name)!r} vs {getattr(later, name)!r}"
                 for name in META_FIELDS if getattr(first, name) != getattr(later, name)]
    if differing:
        raise AnchorImportError(
            f"{meta_csv} lines {first_line} and {line} both describe {later.name} with different values "
            f"({'; '.join(differing)}); keep one row (nothing was imported)"
        )


def _meta_candidates(folder_arg: Path, folder: Path, meta_csv: Path, default_category: str, problems: _Problems):
    """One candidate per CSV row; rows naming bad paths or categories become problems.

    Two rows for the same file that disagree on its metadata are refused at
    once; identical ones are harmless (the second is reported as a duplicate).
    """
    candidates: list[Candidate] = []
    by_file: dict[Path, tuple[int, Candidate]] = {}  # resolved file -> (line, candidate) of its first row
    for line, row in _read_meta_rows(meta_csv):
        where = f"{meta_csv} line {line}"
        relative = row["file"].replace("\\", "/")  # CSVs written on Windows
        if not relative:
            problems.add(where, "empty 'file' value")
            continue
        name = _display_name(folder_arg, relative)
        if PurePosixPath(relative).is_absolute() or Path(relative).is_absolute() or Path(relative).drive:
            problems.add(f"{where}: {relative}", f"absolute path; give the path relative to {folder_arg}")
            continue
        path = folder / relative
        resolved, why = _resolve_inside(folder, path, folder_arg)
        if resolved is None:
            problems.add(f"{where}: {relative}", why)
            continue
        if not resolved.exists():
            problems.add(f"{where}: {name}", "no such file")
            continue
        if not resolved.is_file():
            problems.add(f"{where}: {name}", "not a regular file")
            continue
        category = (row.get("category") or default_category).lower()
        if category not in ANCHOR_CATEGORIES:
            problems.add(
                f"{where}: {name}", f"category {row['category']!r} is not one of {', '.join(ANCHOR_CATEGORIES)}"
            )
            continue
        candidate = Candidate(
            resolved,
            name,
            artist=row.get("artist") or None,
            title=row.get("title") or None,
            category=category,
            source=row.get("source") or None,
            license=row.get("license") or None,
        )
        if resolved in by_file:
            _refuse_disagreeing_rows(meta_csv, by_file[resolved], line, candidate)
        else:
            by_file[resolved] = (line, candidate)
        candidates.append(candidate)
    return candidates


@dataclass(frozen=True)
class _Checked:
    candidate: Candidate
    info: ImageInfo


def _check_images(candidates: list[Candidate], problems: _Problems, progress: bool) -> list[_Checked]:
    """Read and validate every candidate image (nothing is written)."""
    checked = []
    for candidate in track(candidates, "checking", unit="img", enabled=progress):
        try:
            _, info = read_image_file(candidate.path, candidate.name)
        except ImageError as exc:
            # The message already starts with the file's name.
            problems.add(candidate.name, str(exc).removeprefix(f"{candidate.name}: "))
            continue
        checked.append(_Checked(candidate, info))
    return checked


def _split_duplicates(ws: Workspace, checked: list[_Checked], report: ImportReport) -> list[_Checked]:
    """Keep the first file of each image that is not yet an anchor; report the rest as duplicates."""
    first_name: dict[str, str] = {}
    fresh = []
    for item in checked:
        sha = item.info.sha256
        if sha in first_name:
            report.duplicates.append(FileNote(item.candidate.name, f"same image as {first_name[sha]}"))
            continue
        first_name[sha] = item.candidate.name
        existing = ws.conn.execute("SELECT id FROM anchors WHERE image = ?", (sha,)).fetchone()
        if existing:
            report.duplicates.append(FileNote(item.candidate.name, f"already in the workspace as anchor {existing[0]}"))
            continue
        fresh.append(item)
    return fresh


def _write_files(ws: Workspace, items: list[_Checked], progress: bool) -> list[Path]:
    """Copy the images into the workspace; returns the files this call created.

    Each file is read again and its hash compared, so a file changed since it
    was checked is refused rather than stored under the wrong name.
    """
    created: list[Path] = []
    try:
        for item in track(items, "storing", unit="img", enabled=progress):
            data, info = read_image_file(item.candidate.path, item.candidate.name)
            if info.sha256 != item.info.sha256:
                raise AnchorImportError(f"{item.candidate.name}: file changed during the import; run it again")
            target = ws.root / relative_image_path(info)
            if not target.exists():
                write_image_file(ws.root, info, data)
                created.append(target)
    except BaseException:
        remove_unrecorded(ws, created)
        raise
    return created


def _insert_rows(ws: Workspace, items: list[_Checked], report: ImportReport) -> None:
    """All image and anchor rows in one transaction."""
    with ws.transaction() as conn:
        for item in items:
            c = item.candidate
            insert_image_row(conn, item.info)
            anchor_id = add_anchor_in(conn, item.info.sha256, artist=c.artist, title=c.title, category=c.category,
                                      source=c.source, license=c.license)
            if anchor_id is not None:
                report.imported.append(ImportedAnchor(c.name, anchor_id, item.info.sha256))
            else:  # another import added it since we looked
                report.duplicates.append(FileNote(c.name, "already in the workspace"))


def import_anchors(
    ws: Workspace,
    folder: str | os.PathLike,
    meta_csv: str | os.PathLike | None = None,
    skip_bad: bool = False,
    default_category: str = "style",
    progress: bool | None = None,
) -> ImportReport:
    """Import anchor images from ``folder`` (all of them, or exactly the rows of ``meta_csv``).

    Raises :class:`AnchorImportError` naming each bad file with its reason
    (the first ``LISTED_BAD_FILES``, then how many more) with nothing written,
    unless ``skip_bad``: then bad files
    are listed in ``report.skipped`` and the rest is imported.
    ``default_category`` applies to files without a category in the CSV.
    ``progress`` shows bars on stderr (default: for folders of
    ``PROGRESS_MIN_FILES`` images or more).
    """
    if default_category not in ANCHOR_CATEGORIES:
        raise AnchorImportError(f"category {default_category!r} is not one of {', '.join(ANCHOR_CATEGORIES)}")
    folder_arg = Path(folder)
    if not folder_arg.is_dir():
        raise AnchorImportError(
            f"{folder_arg}: no such folder" if not folder_arg.exists() else f"{folder_arg}: not a folder"
        )
    root = folder_arg.resolve()
    problems = _Problems(skip_bad)
    report = ImportReport()
    if meta_csv is not None:
        candidates = _meta_candidates(folder_arg, root, Path(meta_csv), default_category, problems)
    else:
        candidates, report.ignored = _walk_folder(folder_arg, root, default_category, problems)
    if progress is None:
        progress = len(candidates) >= PROGRESS_MIN_FILES
    checked = _check_images(candidates, problems, progress)
    problems.raise_unless_skipping()
    report.skipped = list(problems.notes)
    fresh = _split_duplicates(ws, checked, report)
    created = _write_files(ws, fresh, progress)
    try:
        _insert_rows(ws, fresh, report)
    except BaseException:
        remove_unrecorded(ws, created)
        raise
    return report


def list_anchors(ws: Workspace, artist: str | None = None) -> list[dict]:
    """Anchors in id order, optionally one artist's (case-insensitive), with their image's size."""
    query = (
        "SELECT a.id, a.artist, a.title, a.category, a.source, a.license, i.width, i.height, i.format, a.image "
        "FROM anchors a JOIN images i ON i.sha256 = a.image"
    )
    params: tuple = ()
    if artist is not None:
        query += " WHERE a.artist = ? COLLATE NOCASE"
        params = (artist,)
    rows = ws.conn.execute(query + " ORDER BY a.id", params).fetchall()
    keys = ("id", "artist", "title", "category", "source", "license", "width", "height", "format", "sha256")
    anchors = []
    for row in rows:
        record = dict(zip(keys, row))
        record["size"] = f"{record['width']}x{record['height']}"
        anchors.append(record)
    return anchors
