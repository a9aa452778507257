"""The serialised writer: one fair lock and one shared connection per database file and process.

Every rating claim and submit, and any other short write that many threads
of one process make (a job queue's claims), goes through
:func:`write_transaction`.
"""

from __future__ import annotations

import collections
import threading
import weakref
from contextlib import contextmanager

from cpdm.store.workspace import open_workspace


class FairLock:
    """A lock handed over to its waiters in the order they asked for it.

    ``threading.Lock`` lets whichever thread the scheduler wakes first take
    it, so under many raters some wait far longer than others. Handing the
    lock to the longest waiter keeps every rater's wait close to the mean.
    """

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._held = False
        self._waiters: collections.deque[threading.Lock] = collections.deque()

    def acquire(self) -> None:
        with self._guard:
            if not self._held:
                self._held = True
                return
            waiter = threading.Lock()
            waiter.acquire()
            self._waiters.append(waiter)
        waiter.acquire()  # released by the previous holder, who passes the lock on to us

    def release(self) -> None:
        with self._guard:
            if self._waiters:
                self._waiters.popleft().release()
            else:
                self._held = False

    def __enter__(self) -> "FairLock":
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()


class _Writer:
    """The fair lock and the one connection through which this process writes to one database file.

    Every rater's page has its own connection, but SQLite admits one writer
    at a time anyway. Writing through one connection keeps its page cache
    warm: a connection that another one wrote behind must reread every page
    it touches, which costs more than the claim itself.
    """

    def __init__(self, root) -> None:
        self.root = root
        self.lock = FairLock()
        self.ws = None  # opened on first use, under the lock
        self.users = 0  # live Workspace objects of this file
        self.commits = 0  # since the last checkpoint
        self.checkpointing = threading.Lock()
        self.finish_checkpoint = False  # a checkpoint ran outside the lock: complete it inside


# Commits between two checkpoints of the write-ahead log (each adds about a dozen pages to it).
CHECKPOINT_EVERY = 100
_WRITERS: dict[str, _Writer] = {}
_WRITERS_GUARD = threading.Lock()
# Found once per Workspace object: resolving its path costs more than a claim.
_WRITER_OF_WORKSPACE: "weakref.WeakKeyDictionary[object, _Writer]" = weakref.WeakKeyDictionary()
# Files whose Workspace objects were collected; handled under the guard at the next lookup, never
# inside the garbage collector (which may run while this thread holds the guard).
_RELEASED: collections.deque[str] = collections.deque()


def _release_writers() -> None:
    """Close the writers of files no live Workspace uses any more (call with the guard held)."""
    while _RELEASED:
        key = _RELEASED.popleft()
        writer = _WRITERS.get(key)
        if writer is None:
            continue
        writer.users -= 1
        if writer.users <= 0:
            del _WRITERS[key]
            if writer.ws is not None:
                writer.ws.close()


def _writer(ws) -> _Writer:
    """The process-wide writer of the workspace's database (one per file, shared by its Workspace objects)."""
    writer = _WRITER_OF_WORKSPACE.get(ws)
    if writer is None:
        key = str(ws.db_path.resolve())
        with _WRITERS_GUARD:
            _release_writers()
            writer = _WRITERS.get(key)
            if writer is None:
                writer = _WRITERS[key] = _Writer(ws.root)
            writer.users += 1
            _WRITER_OF_WORKSPACE[ws] = writer
        weakref.finalize(ws, _RELEASED.append, key)
    return writer


@contextmanager
def write_transaction(ws):
    """A write transaction queued behind this process's other writes to the same database file.

    SQLite lets one writer in at a time and makes the others poll with
    growing sleeps, which under many raters leaves a few waiting for
    seconds. Queuing the writers of one process (the app server) on a fair
    lock first keeps the wait short and even; other processes still meet
    SQLite's own lock and busy timeout. The transaction runs on the file's
    shared writer connection (see :class:`_Writer`), not on ``ws.conn``:
    what it commits, ``ws.conn`` reads at once.
    """
    writer = _writer(ws)
    with writer.lock:
        if writer.ws is None:
            writer.ws = open_workspace(writer.root)
            # Checkpoints run outside the lock (below), not inside whichever commit fills the log.
            writer.ws.conn.execute("PRAGMA wal_autocheckpoint = 0")
        with writer.ws.transaction() as conn:
            yield conn
        writer.commits += 1
        due = writer.commits >= CHECKPOINT_EVERY
        if writer.finish_checkpoint:
            # Copy the few pages written since, with no writer adding more, so the log is
            # wholly checkpointed and the next write can start it over instead of growing it.
            writer.finish_checkpoint = False
            writer.ws.conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
    if due and writer.checkpointing.acquire(blocking=False):
        try:
            writer.commits = 0
            # The bulk of the copying, while the next writers go on, on this caller's own connection.
            ws.conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
            writer.finish_checkpoint = True
        finally:
            writer.checkpointing.release()


def close_writer_connection(ws) -> None:
    """Close the shared writer connection of the workspace's file; the next write opens it again.

    For code that is about to move or delete a workspace's files (the demo
    build), so no connection is left open on them.
    """
    writer = _writer(ws)
    with writer.lock:
        if writer.ws is not None:
            writer.ws.close()
            writer.ws = None
