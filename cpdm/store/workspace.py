"""The workspace: one folder holding the SQLite database and the image files.

Layout::

    WORKSPACE/
      cpdm.db              SQLite (WAL, foreign keys, busy timeout)
      images/ab/abcd….png  image files, stored once, named by sha256
      exports/             reports and exported files (default output place)

The schema and its migrations live in :mod:`cpdm.store.schema`; the version
is kept in ``PRAGMA user_version``. Opening an older workspace runs the
missing migrations in one transaction; opening a workspace made by a newer
cpdm refuses. Every write goes through :meth:`Workspace.transaction`, which
hands it to the process's one writer of the file (:mod:`cpdm.store.writer`).
"""

from __future__ import annotations

import os
import sqlite3
from functools import cached_property
from pathlib import Path
from contextlib import AbstractContextManager

import sqlite_utils

from cpdm.errors import CpdmError
from cpdm.store.schema import (  # noqa: F401  (the value sets are read from here by the wings above)
    ANCHOR_CATEGORIES,
    BASELINE_METHOD,
    CAMPAIGN_KINDS,
    GENERATION_KEY,
    JUDGMENT_ANSWERS,
    MIGRATIONS,
    PAIR_KINDS,
    PROMPT_ORIGINS,
    RATING_ROLES,
    ROLES,
    TRIPLET_DESIGNS,
    TRIPLET_KINDS,
    VARIANT_STATUSES,
    canonical_json,
)
from cpdm.store.writer import release_writer, write_transaction

DEFAULT_WORKSPACE = Path("annotations") / "workspace"
DB_NAME = "cpdm.db"
BUSY_TIMEOUT_MS = 10_000


def schema_version() -> int:
    """The schema version this cpdm writes."""
    return len(MIGRATIONS)


class WorkspaceError(CpdmError):
    """A workspace that is missing, unreadable or from a newer cpdm."""


class Workspace:
    """An open workspace: ``ws.conn`` reads, :meth:`transaction` writes.

    Use :func:`open_workspace` or :func:`init_workspace` rather than calling
    this directly.
    """

    def __init__(self, root: Path, conn: sqlite3.Connection):
        self.root = Path(root)
        self.conn = conn

    @cached_property
    def db(self) -> sqlite_utils.Database:
        """A sqlite_utils view of the reading connection (``rows_where`` and the like); writes go through
        :meth:`transaction`, whose connection ``sqlite_utils.Database(conn)`` wraps for ``insert_all``/``upsert``."""
        return sqlite_utils.Database(self.conn)

    @property
    def images_dir(self) -> Path:
        return self.root / "images"

    @property
    def exports_dir(self) -> Path:
        return self.root / "exports"

    @property
    def db_path(self) -> Path:
        return self.root / DB_NAME

    def image_path(self, sha256: str) -> Path:
        """Absolute path of a stored image, from its hash."""
        row = self.conn.execute("SELECT path FROM images WHERE sha256 = ?", (sha256,)).fetchone()
        if row is None:
            raise CpdmError(f"image {sha256[:12]} is not in the workspace")
        return self.root / row[0]

    def transaction(self) -> AbstractContextManager[sqlite3.Connection]:
        """A short write transaction (``BEGIN IMMEDIATE``) on the process's one write connection of this file.

        It waits its turn behind the process's other writers of the file,
        rolls back on any error, and joins the thread's open transaction as
        a savepoint when there is one (see :mod:`cpdm.store.writer`). Inside
        it, read through the connection it yields: ``self.conn`` sees its
        writes only once they are committed.
        """
        return write_transaction(self)

    def open_write_connection(self) -> sqlite3.Connection:
        """A new connection to this workspace's database, for the process's writer of the file."""
        return _connect(self.db_path)

    def get_meta(self, key: str, default: str | None = None) -> str | None:
        row = self.conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return default if row is None else row[0]

    def set_meta(self, key: str, value: str) -> None:
        """Set one ``meta`` value (the table's one writer); inside an open transaction it joins it."""
        with self.transaction() as conn:
            sqlite_utils.Database(conn)["meta"].upsert({"key": key, "value": value}, pk="key")

    def ensure_meta(self, key: str, value: str) -> str:
        """Store ``value`` under ``key`` unless the key has one already (a secret made once); returns the stored one."""
        with self.transaction() as conn:
            conn.execute("INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT(key) DO NOTHING", (key, value))
            return conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()[0]

    @property
    def is_demo(self) -> bool:
        return self.get_meta("demo") == "1"

    def close(self) -> None:
        release_writer(self)
        self.conn.close()

    def __enter__(self) -> "Workspace":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def resolve_workspace_path(path: str | os.PathLike | None = None) -> Path:
    """The workspace folder: the argument, else $CPDM_WORKSPACE, else the default."""
    if path:
        return Path(path)
    return Path(os.environ.get("CPDM_WORKSPACE") or DEFAULT_WORKSPACE)


def _connect(db_path: Path) -> sqlite3.Connection:
    # isolation_level=None: we manage transactions ourselves (see Workspace.transaction).
    conn = sqlite3.connect(db_path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None, check_same_thread=False)
    conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = NORMAL")
    conn.execute("PRAGMA foreign_keys = ON")
    return conn


def _upgrade(conn: sqlite3.Connection, db_path: Path) -> None:
    current = conn.execute("PRAGMA user_version").fetchone()[0]
    target = schema_version()
    if current > target:
        raise WorkspaceError(
            f"{db_path} has schema version {current}, newer than this cpdm understands ({target}); "
            "upgrade cpdm (pip install -U cpdm) to open it"
        )
    if current == target:
        return
    conn.execute("BEGIN IMMEDIATE")
    try:
        for version in range(current + 1, target + 1):
            MIGRATIONS[version - 1](conn)
            conn.execute(f"PRAGMA user_version = {version}")
    except BaseException as exc:
        conn.execute("ROLLBACK")
        if isinstance(exc, Exception):
            raise WorkspaceError(
                f"{db_path}: upgrading the schema from version {current} to {target} failed "
                f"at version {version} ({exc}); the workspace was left unchanged"
            ) from exc
        raise
    conn.execute("COMMIT")


def open_workspace(path: str | os.PathLike | None = None, *, create: bool = False) -> Workspace:
    """Open a workspace, upgrading its schema if it is older than this cpdm.

    With ``create=True`` a missing workspace is created; otherwise a missing
    one is an error that says how to make it.
    """
    root = resolve_workspace_path(path)
    if root.exists() and not root.is_dir():
        raise WorkspaceError(f"{root} is a file, not a workspace folder")
    db_path = root / DB_NAME
    if not db_path.exists():
        if not create:
            raise WorkspaceError(f"no workspace at {root} (run `cpdm init --workspace {root}` or `cpdm demo` first)")
        root.mkdir(parents=True, exist_ok=True)
    conn = None
    try:
        conn = _connect(db_path)
        _upgrade(conn, db_path)
    except sqlite3.DatabaseError as exc:
        if conn is not None:
            conn.close()
        raise WorkspaceError(f"{db_path} is not a readable cpdm database: {exc}") from exc
    except BaseException:
        if conn is not None:
            conn.close()
        raise
    ws = Workspace(root, conn)
    ws.images_dir.mkdir(parents=True, exist_ok=True)
    return ws


def init_workspace(path: str | os.PathLike | None = None) -> Workspace:
    """Create (or open and upgrade) a workspace."""
    return open_workspace(path, create=True)
