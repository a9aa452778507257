"""The serialised writer: one fair lock and one write connection per database file and process.

Every write to a workspace goes through :func:`write_transaction`, which
:meth:`cpdm.store.workspace.Workspace.transaction` delegates to: a rater's
claim and submit, a job queue's claims and heartbeats, the scoring engine's
scores, a migration's caller excepted (opening a workspace upgrades it on
its own connection, before any write). As datasette's ``Database`` owns its
one write connection, each process writes to a file through one
connection, taken in turn by its threads:

* the threads of one process queue on a fair lock (:class:`FairLock`),
  so under many raters every wait stays close to the mean; other processes
  still meet SQLite's own lock and busy timeout;
* the transaction runs on the file's shared write connection, not on
  ``ws.conn``: what it commits, ``ws.conn`` reads at once, but what it has
  not committed yet, ``ws.conn`` does not see. Code inside a transaction
  reads through the connection it was given;
* a transaction opened inside another on the same thread (an owning
  module's write called inside a larger one) joins it as a savepoint: an
  error in the inner one rolls back only its own writes, and nothing is
  committed before the outer one ends;
* the write-ahead log is checkpointed every ``CHECKPOINT_EVERY`` commits
  outside the lock, on the caller's own connection, so no rater waits
  for a checkpoint (and at ``WAL_AUTOCHECKPOINT_PAGES`` by SQLite itself,
  which bounds the log under bulk writes).
"""

from __future__ import annotations

import collections
import os
import threading
import weakref
from contextlib import contextmanager
from typing import Iterator


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

    def __init__(self, connect) -> None:
        self.connect = connect  # opens the file's write connection
        self.lock = FairLock()
        self.conn = None  # opened on first use, under the lock
        self.holder: int | None = None  # the thread in a transaction now
        self.depth = 0  # transactions that thread has open inside its outermost one
        self.users = 0  # live Workspace objects of this file
        self.commits = 0  # since the last checkpoint
        self.checkpointing = threading.Lock()
        self.finish_checkpoint = False  # a checkpoint ran outside the lock: complete it inside

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None


# Commits between two checkpoints of the write-ahead log (each claim adds about a dozen pages to it).
CHECKPOINT_EVERY = 100
# SQLite's own checkpoint, at this many pages in the log: far above what CHECKPOINT_EVERY claims add, so it
# only bounds the log when large transactions (a batch of features, say) fill it before the count is reached.
WAL_AUTOCHECKPOINT_PAGES = 10_000
_WRITERS: dict[tuple[int, str], _Writer] = {}  # by (process id, resolved database path)
_WRITERS_GUARD = threading.Lock()
# Found once per Workspace object: resolving its path costs more than a claim.
_WRITER_OF_WORKSPACE: "weakref.WeakKeyDictionary[object, _Writer]" = weakref.WeakKeyDictionary()
_FINALIZERS: "weakref.WeakKeyDictionary[object, weakref.finalize]" = weakref.WeakKeyDictionary()
# Files whose Workspace objects were collected or closed; handled under the guard at the next lookup, never
# inside the garbage collector (which may run while this thread holds the guard).
_RELEASED: collections.deque[tuple[int, str]] = collections.deque()


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
            if key[0] == os.getpid():  # a connection inherited through fork is left alone
                writer.close()


def _writer(ws) -> _Writer:
    """The process-wide writer of the workspace's database (one per file, shared by its Workspace objects)."""
    writer = _WRITER_OF_WORKSPACE.get(ws)
    if writer is None:
        key = (os.getpid(), str(ws.db_path.resolve()))
        with _WRITERS_GUARD:
            _release_writers()
            writer = _WRITERS.get(key)
            if writer is None:
                writer = _WRITERS[key] = _Writer(ws.open_write_connection)
            writer.users += 1
            _WRITER_OF_WORKSPACE[ws] = writer
        _FINALIZERS[ws] = weakref.finalize(ws, _RELEASED.append, key)
    return writer


def release_writer(ws) -> None:
    """The workspace object is closed: its file's writer closes when no other open Workspace uses it."""
    finalizer = _FINALIZERS.pop(ws, None)
    _WRITER_OF_WORKSPACE.pop(ws, None)
    if finalizer is not None and finalizer.alive:
        finalizer()  # queues the release once; the collector will not queue it again
        with _WRITERS_GUARD:
            _release_writers()


@contextmanager
def write_transaction(ws) -> Iterator:
    """A write transaction queued behind this process's other writes to the same database file.

    SQLite lets one writer in at a time and makes the others poll with
    growing sleeps, which under many raters leaves a few waiting for
    seconds. Queuing the writers of one process (the app server) on a fair
    lock first keeps the wait short and even; other processes still meet
    SQLite's own lock and busy timeout. The transaction (``BEGIN
    IMMEDIATE``: the write lock is taken up front, so two writers that read
    then write never interleave) runs on the file's shared writer
    connection (see :class:`_Writer`), not on ``ws.conn``: what it commits,
    ``ws.conn`` reads at once. It rolls back on any error. Opened inside
    another transaction of the same file on the same thread, it joins it as
    a savepoint.
    """
    writer = _writer(ws)
    if writer.holder == threading.get_ident():
        yield from _nested(writer)
        return
    with writer.lock:
        writer.holder = threading.get_ident()
        try:
            if writer.conn is None:
                writer.conn = writer.connect()
                # Checkpoints run outside the lock (below), not inside whichever commit fills the log.
                writer.conn.execute(f"PRAGMA wal_autocheckpoint = {WAL_AUTOCHECKPOINT_PAGES}")
            conn = writer.conn
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                if conn.in_transaction:  # an error may have ended it already
                    conn.execute("ROLLBACK")
                raise
            try:
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
            writer.commits += 1
            due = writer.commits >= CHECKPOINT_EVERY
            if writer.finish_checkpoint:
                # Copy the few pages written since, with no writer adding more, so the log is
                # wholly checkpointed and the next write can start it over instead of growing it.
                writer.finish_checkpoint = False
                conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
        finally:
            writer.holder = None
            writer.depth = 0
    if due and writer.checkpointing.acquire(blocking=False):
        try:
            writer.commits = 0
            # The bulk of the copying, while the next writers go on, on this caller's own connection.
            ws.conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
            writer.finish_checkpoint = True
        finally:
            writer.checkpointing.release()


def _nested(writer: _Writer):
    """A transaction inside the one this thread holds: a savepoint of it."""
    conn = writer.conn
    writer.depth += 1
    savepoint = f"cpdm_nested_{writer.depth}"
    conn.execute(f"SAVEPOINT {savepoint}")
    try:
        yield conn
    except BaseException:
        if conn.in_transaction:
            conn.execute(f"ROLLBACK TO SAVEPOINT {savepoint}")
            conn.execute(f"RELEASE SAVEPOINT {savepoint}")
        raise
    else:
        conn.execute(f"RELEASE SAVEPOINT {savepoint}")
    finally:
        writer.depth -= 1


def close_writer_connection(ws) -> None:
    """Close the shared writer connection of the workspace's file; the next write opens it again.

    For code that is about to move or delete a workspace's files (the demo
    build), so no connection is left open on them.
    """
    writer = _writer(ws)
    with writer.lock:
        writer.close()
