"""The job queue: rows of the workspace's ``jobs`` table, claimed by workers under a lease.

A job is enqueued ``queued``. A worker claims the oldest job it can run (its
kind and device fit, every parent is ``done``) in one ``BEGIN IMMEDIATE``
transaction, so two workers never take the same job, and holds a lease on it
that its heartbeat renews. A worker that dies (SIGKILL, a lost machine) stops
renewing: once the lease has expired the next claim takes the job over, up to
the job's ``max_attempts`` claims; after that the job fails ("worker lost N
times") instead of being reclaimed forever.

A job ends ``done`` (with a JSON result), ``failed`` (with the error and its
traceback) or ``cancelled``. Jobs still waiting for a parent that failed or
was cancelled fail too, with a reason naming that parent. A failed or
cancelled job can be retried while it has attempts left.

Each job's log is a text file ``WORKSPACE/jobs/<id>.log``; its row holds
progress (0..1), a message and an estimate of the seconds left.

Why one file of this length: it is the whole life of one table's rows.
Every transition of a job (enqueue, claim, heartbeat, progress, finish,
fail, requeue, cancel, retry) is a short transaction that keeps the others'
invariants (the lease, the attempts, the dependencies), so they stay side
by side.
"""

from __future__ import annotations

import codecs
import json
import re
import sqlite3
import time
from collections import deque
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Iterable, Iterator

import sqlite_utils

from cpdm.errors import CpdmError
from cpdm.jobs.registry import get_kind
from cpdm.store.time import format_time, utc_now
from cpdm.store.workspace import canonical_json

JOB_STATUSES = ("queued", "running", "done", "failed", "cancelled")
FINISHED_STATUSES = ("done", "failed", "cancelled")
# How long a claim holds a job without a heartbeat; a real job's worker renews it every third of this.
LEASE_SECONDS = 60.0
DEFAULT_MAX_ATTEMPTS = 3
LOG_DIR = "jobs"
# The error of a job failed because a parent failed or was cancelled starts so; a retry of the parent
# puts such children back in the queue.
PARENT_FAILED_PREFIX = "parent job "
# A device a job may ask for: a type (cpu, cuda, mps) with an optional index.
_DEVICE_PATTERN = re.compile(r"^[a-z]+(:\d+)?$")

_COLUMNS = (
    "id, kind, params, status, progress, message, worker, device, ran_on, attempts, max_attempts, "
    "cancel_requested, eta_seconds, result, error, title, created_at, started_at, finished_at, "
    "heartbeat_at, lease_expires_at"
)


@dataclass
class Job:
    """One job as stored: what to run, where it stands, and who runs it."""

    id: int
    kind: str
    params: dict
    status: str
    progress: float
    message: str | None
    worker: str | None
    device: str | None  # what the job asked for: None runs anywhere, 'cuda' needs a CUDA worker
    ran_on: str | None  # the device the worker that claimed it used
    attempts: int
    max_attempts: int
    cancel_requested: bool
    eta_seconds: float | None
    result: dict | None
    error: str | None
    title: str | None
    created_at: str
    started_at: str | None
    finished_at: str | None
    heartbeat_at: str | None
    lease_expires_at: str | None
    parents: list[int] = field(default_factory=list)

    @property
    def finished(self) -> bool:
        """Whether the job has ended (done, failed or cancelled)."""
        return self.status in FINISHED_STATUSES

    @property
    def label(self) -> str:
        """The job's title, or its kind when it has none (how the Jobs page and ``cpdm jobs list`` name it)."""
        return self.title or self.kind


def _job_from_row(row: tuple, parents: list[int]) -> Job:
    (job_id, kind, params, status, progress, message, worker, device, ran_on, attempts, max_attempts,
     cancel_requested, eta_seconds, result, error, title, created_at, started_at, finished_at,
     heartbeat_at, lease_expires_at) = row
    return Job(
        id=job_id, kind=kind, params=json.loads(params or "{}"), status=status, progress=progress or 0.0,
        message=message, worker=worker, device=device, ran_on=ran_on, attempts=attempts,
        max_attempts=max_attempts, cancel_requested=bool(cancel_requested), eta_seconds=eta_seconds,
        result=None if result is None else json.loads(result), error=error, title=title,
        created_at=created_at, started_at=started_at, finished_at=finished_at,
        heartbeat_at=heartbeat_at, lease_expires_at=lease_expires_at, parents=parents,
    )


def _parents_of(conn: sqlite3.Connection, job_ids: list[int]) -> dict[int, list[int]]:
    """Each job's parents (the jobs it waits for), in id order."""
    found: dict[int, list[int]] = {job_id: [] for job_id in job_ids}
    if not job_ids:
        return found
    marks = ", ".join("?" for _ in job_ids)
    for job_id, parent in conn.execute(
        f"SELECT job, parent FROM job_dependencies WHERE job IN ({marks}) ORDER BY job, parent", job_ids
    ):
        found[job_id].append(parent)
    return found


def _read_job(conn: sqlite3.Connection, job_id: int) -> Job | None:
    row = conn.execute(f"SELECT {_COLUMNS} FROM jobs WHERE id = ?", (job_id,)).fetchone()
    return None if row is None else _job_from_row(row, _parents_of(conn, [job_id])[job_id])


def get_job(ws, job_id: int) -> Job:
    """The job with this id; a clear error if there is none."""
    job = _read_job(ws.conn, int(job_id))
    if job is None:
        raise CpdmError(f"no job {job_id} in this workspace (see `cpdm jobs list`)")
    return job


def list_jobs(ws, status: str | Iterable[str] | None = None, limit: int | None = None) -> list[Job]:
    """Jobs, newest first; ``status`` keeps one status (or several), ``limit`` the newest few."""
    statuses = [status] if isinstance(status, str) else list(status or [])
    unknown = [name for name in statuses if name not in JOB_STATUSES]
    if unknown:
        raise CpdmError(f"unknown job status {unknown[0]!r} (one of: {', '.join(JOB_STATUSES)})")
    where = f"WHERE status IN ({', '.join('?' for _ in statuses)})" if statuses else ""
    sql = f"SELECT {_COLUMNS} FROM jobs {where} ORDER BY id DESC"
    arguments: list = list(statuses)
    if limit is not None:
        sql += " LIMIT ?"
        arguments.append(int(limit))
    rows = ws.conn.execute(sql, arguments).fetchall()
    parents = _parents_of(ws.conn, [row[0] for row in rows])
    return [_job_from_row(row, parents[row[0]]) for row in rows]


def _now_text() -> str:
    return format_time(utc_now())


def _later_text(seconds: float) -> str:
    return format_time(utc_now() + timedelta(seconds=seconds))


def _check_device(device: str | None) -> str | None:
    if device is None:
        return None
    if not isinstance(device, str) or not _DEVICE_PATTERN.match(device):
        raise CpdmError(f"device {device!r} is not a device name (like cpu, cuda or cuda:0)")
    return device


def enqueue(ws, kind: str, params: dict | None = None, *, title: str | None = None, after: Iterable[int] = (),
            device: str | None = None, max_attempts: int = DEFAULT_MAX_ATTEMPTS) -> int:
    """Add a job; return its id. Everything is checked first, so a refused job writes nothing.

    The kind must exist and accept the parameters (its ``check_params``
    completes them, so the stored params are what will run). ``after`` lists
    jobs that must be done first; they must exist and must not have failed or
    been cancelled. ``device=None`` means the kind's default: ``'cuda'`` for
    a kind that wants a GPU, otherwise any worker.
    """
    job_kind = get_kind(kind)
    if params is not None and not isinstance(params, dict):
        raise CpdmError(f"job parameters must be a mapping of names to values, not {type(params).__name__}")
    try:
        checked = job_kind.check_params(dict(params or {}))
    except CpdmError:
        raise
    except (TypeError, ValueError, KeyError) as exc:
        raise CpdmError(f"bad parameters for a {kind} job: {exc}") from exc
    try:
        params_text = canonical_json(checked)
    except (TypeError, ValueError) as exc:
        raise CpdmError(f"parameters of a {kind} job must be JSON values (text, numbers, lists, mappings): {exc}") \
            from exc
    if device is None and job_kind.wants_gpu:
        device = "cuda"
    device = _check_device(device)
    if isinstance(max_attempts, bool) or not isinstance(max_attempts, int) or max_attempts < 1:
        raise CpdmError(f"max_attempts must be a whole number of at least 1, not {max_attempts!r}")
    parents = sorted({int(parent) for parent in after})
    with ws.transaction() as conn:
        for parent in parents:
            row = conn.execute("SELECT status FROM jobs WHERE id = ?", (parent,)).fetchone()
            if row is None:
                raise CpdmError(f"job to wait for does not exist: no job {parent} in this workspace")
            if row[0] in ("failed", "cancelled"):
                raise CpdmError(f"job {parent} is {row[0]}; retry it (cpdm jobs retry {parent}) before adding "
                                "jobs that wait for it")
        db = sqlite_utils.Database(conn)
        job_id = db["jobs"].insert({"kind": kind, "params": params_text, "title": title, "device": device,
                                    "max_attempts": max_attempts, "created_at": _now_text()}).last_pk
        db["job_dependencies"].insert_all({"job": job_id, "parent": parent} for parent in parents)
    return job_id


def _fail_waiting_children(conn: sqlite3.Connection, parent: int, what: str, now_text: str) -> None:
    """Fail every queued job that waits on ``parent`` (and theirs, recursively), naming the parent."""
    pending = deque([(parent, what)])
    while pending:
        job_id, outcome = pending.popleft()
        children = [row[0] for row in conn.execute(
            "SELECT d.job FROM job_dependencies d JOIN jobs j ON j.id = d.job "
            "WHERE d.parent = ? AND j.status = 'queued' ORDER BY d.job", (job_id,)
        )]
        for child in children:
            conn.execute(
                "UPDATE jobs SET status = 'failed', error = ?, finished_at = ?, message = NULL WHERE id = ?",
                (f"{PARENT_FAILED_PREFIX}{job_id} {outcome}", now_text, child),
            )
            pending.append((child, "failed"))


def _device_types(device: str) -> tuple[str, str]:
    """The job devices a worker on ``device`` serves: 'cuda:0' serves jobs asking 'cuda:0' or 'cuda'."""
    return device, device.split(":", 1)[0]


def _settle_expired(conn: sqlite3.Connection, now_text: str) -> None:
    """End the running jobs whose worker is gone and that must not be reclaimed.

    A job someone asked to cancel is cancelled; a job that used all its
    attempts fails. Others stay running, for a claim to take over.
    """
    rows = conn.execute(
        "SELECT id, attempts, max_attempts, cancel_requested FROM jobs "
        "WHERE status = 'running' AND lease_expires_at < ?", (now_text,)
    ).fetchall()
    for job_id, attempts, max_attempts, cancel_requested in rows:
        if cancel_requested:
            _end(conn, job_id, "cancelled", now_text, message="cancelled (its worker had stopped)")
        elif attempts >= max_attempts:
            _end(conn, job_id, "failed", now_text,
                 error=f"worker lost {attempts} times: each worker that claimed this job stopped renewing its "
                       f"lease (killed, or its machine lost); no attempts left of {max_attempts}")


def _end(conn: sqlite3.Connection, job_id: int, status: str, now_text: str, *, error: str | None = None,
         message: str | None = None) -> None:
    """Move a job to failed or cancelled and fail its waiting children."""
    conn.execute(
        "UPDATE jobs SET status = ?, error = COALESCE(?, error), message = COALESCE(?, message), finished_at = ?, "
        "lease_expires_at = NULL, eta_seconds = NULL WHERE id = ?",
        (status, error, message, now_text, job_id),
    )
    _fail_waiting_children(conn, job_id, "failed" if status == "failed" else "was cancelled", now_text)


def claim(ws, worker: str, *, kinds: Iterable[str] | None = None, device: str = "cpu",
          lease_seconds: float = LEASE_SECONDS) -> Job | None:
    """Take the oldest job this worker can run, or None; atomic, so no two workers take the same job.

    Claimable: a queued job whose parents are all done, or a running job
    whose lease expired (its worker died; it is taken over). Its kind must be
    in ``kinds`` (any when None) and its device fit ``device``. The claim
    counts an attempt and holds the job for ``lease_seconds``.
    """
    kinds = None if kinds is None else list(kinds)
    if kinds == []:
        return None
    now_text = _now_text()
    kind_filter = f"AND kind IN ({', '.join('?' for _ in kinds)})" if kinds else ""
    with ws.transaction() as conn:
        _settle_expired(conn, now_text)
        row = conn.execute(
            f"""
            SELECT id FROM jobs j
            WHERE status IN ('queued', 'running')
              AND ((status = 'queued' AND NOT EXISTS (
                        SELECT 1 FROM job_dependencies d JOIN jobs p ON p.id = d.parent
                        WHERE d.job = j.id AND p.status != 'done'))
                   OR (status = 'running' AND lease_expires_at < ?))
              AND (device IS NULL OR device IN (?, ?)) {kind_filter}
            ORDER BY id LIMIT 1
            """,
            (now_text, *_device_types(device), *(kinds or [])),
        ).fetchone()
        if row is None:
            return None
        conn.execute(
            "UPDATE jobs SET status = 'running', worker = ?, ran_on = ?, attempts = attempts + 1, started_at = ?, "
            "heartbeat_at = ?, lease_expires_at = ?, finished_at = NULL, error = NULL, eta_seconds = NULL "
            "WHERE id = ?",
            (worker, device, now_text, now_text, _later_text(lease_seconds), row[0]),
        )
        return _read_job(conn, row[0])


def heartbeat(ws, job_id: int, worker: str, lease_seconds: float = LEASE_SECONDS) -> bool:
    """Renew this worker's lease on a running job; False if the worker no longer holds it (it must stop)."""
    now_text = _now_text()
    with ws.transaction() as conn:
        cursor = conn.execute(
            "UPDATE jobs SET heartbeat_at = ?, lease_expires_at = ? WHERE id = ? AND worker = ? AND status = 'running'",
            (now_text, _later_text(lease_seconds), job_id, worker),
        )
        return cursor.rowcount == 1


# Why a running job must stop early (see :func:`stop_reason`).
STOP_CANCEL = "cancel requested"
STOP_LEASE_LOST = "lease lost"


def last_heartbeat(ws) -> str | None:
    """The newest heartbeat any worker wrote for any job (None: no job has run yet)."""
    return ws.conn.execute("SELECT MAX(heartbeat_at) FROM jobs").fetchone()[0]


def report_progress(ws, job_id: int, worker: str, fraction: float, message: str | None,
                    eta_seconds: float | None) -> str | None:
    """Store a running job's progress; return why it must stop (see :func:`stop_reason`), None to go on."""
    with ws.transaction() as conn:
        row = conn.execute(
            "UPDATE jobs SET progress = ?, message = COALESCE(?, message), eta_seconds = ? "
            "WHERE id = ? AND worker = ? AND status = 'running' RETURNING cancel_requested",
            (min(1.0, max(0.0, float(fraction))), message, eta_seconds, job_id, worker),
        ).fetchone()
    return _stop_reason_of(row)


def stop_reason(ws, job_id: int, worker: str) -> str | None:
    """Why a running job must stop: :data:`STOP_CANCEL` (someone cancelled it), :data:`STOP_LEASE_LOST`
    (this worker no longer holds it: another one took it over), or None."""
    row = ws.conn.execute(
        "SELECT cancel_requested FROM jobs WHERE id = ? AND worker = ? AND status = 'running'", (job_id, worker)
    ).fetchone()
    return _stop_reason_of(row)


def _stop_reason_of(row: tuple | None) -> str | None:
    if row is None:
        return STOP_LEASE_LOST
    return STOP_CANCEL if row[0] else None


def finish(ws, job_id: int, worker: str, result: dict | None) -> bool:
    """Mark a running job done with its JSON result; False if this worker no longer holds it."""
    result_text = canonical_json(result if result is not None else {})
    with ws.transaction() as conn:
        cursor = conn.execute(
            "UPDATE jobs SET status = 'done', progress = 1, result = ?, finished_at = ?, eta_seconds = 0, "
            "lease_expires_at = NULL WHERE id = ? AND worker = ? AND status = 'running'",
            (result_text, _now_text(), job_id, worker),
        )
        return cursor.rowcount == 1


def _end_held(ws, job_id: int, worker: str, status: str, **texts) -> bool:
    """End a job this worker holds as failed or cancelled; False if it no longer holds it."""
    with ws.transaction() as conn:
        held = conn.execute("SELECT 1 FROM jobs WHERE id = ? AND worker = ? AND status = 'running'",
                            (job_id, worker)).fetchone()
        if held is None:
            return False
        _end(conn, job_id, status, _now_text(), **texts)
        return True


def fail(ws, job_id: int, worker: str, error: str) -> bool:
    """Mark a running job failed with ``error`` (the traceback); its waiting children fail too."""
    return _end_held(ws, job_id, worker, "failed", error=error)


def record_cancelled(ws, job_id: int, worker: str) -> bool:
    """A worker stopped a job someone cancelled: mark it cancelled (what it stored stays)."""
    return _end_held(ws, job_id, worker, "cancelled", message="cancelled")


def requeue(ws, job_id: int, worker: str, reason: str) -> bool:
    """Give a running job back to the queue (its worker is shutting down); the claim's attempt is not counted.

    A job someone asked to cancel meanwhile is cancelled instead. False if
    this worker no longer holds the job.
    """
    with ws.transaction() as conn:
        row = conn.execute("SELECT cancel_requested FROM jobs WHERE id = ? AND worker = ? AND status = 'running'",
                           (job_id, worker)).fetchone()
        if row is None:
            return False
        if row[0]:
            _end(conn, job_id, "cancelled", _now_text(), message="cancelled")
            return True
        conn.execute(
            "UPDATE jobs SET status = 'queued', worker = NULL, lease_expires_at = NULL, heartbeat_at = NULL, "
            "eta_seconds = NULL, attempts = MAX(attempts - 1, 0), message = ? WHERE id = ?",
            (reason, job_id),
        )
        return True


def cancel(ws, job_id: int) -> Job:
    """Cancel a job: a queued one at once (its waiting children fail), a running one at its next step.

    A running job whose worker is gone (lease expired) is cancelled at once.
    A finished job cannot be cancelled.
    """
    now_text = _now_text()
    with ws.transaction() as conn:
        job = _read_job(conn, int(job_id))
        if job is None:
            raise CpdmError(f"no job {job_id} in this workspace (see `cpdm jobs list`)")
        if job.finished:
            raise CpdmError(f"job {job_id} is already {job.status}; only queued or running jobs can be cancelled")
        if job.status == "queued":
            _end(conn, job.id, "cancelled", now_text, message="cancelled before it ran")
        elif job.lease_expires_at is not None and job.lease_expires_at < now_text:
            _end(conn, job.id, "cancelled", now_text, message="cancelled (its worker had stopped)")
        else:
            conn.execute("UPDATE jobs SET cancel_requested = 1 WHERE id = ?", (job.id,))
        return _read_job(conn, job.id)


def retry(ws, job_id: int) -> Job:
    """Put a failed or cancelled job back in the queue, with the children its failure failed.

    Refused for queued, running and done jobs, for a job that used all its
    attempts, and while one of its parents is failed or cancelled.
    """
    with ws.transaction() as conn:
        job = _read_job(conn, int(job_id))
        if job is None:
            raise CpdmError(f"no job {job_id} in this workspace (see `cpdm jobs list`)")
        if job.status not in ("failed", "cancelled"):
            raise CpdmError(f"job {job_id} is {job.status}; only failed or cancelled jobs can be retried")
        if job.attempts >= job.max_attempts:
            raise CpdmError(
                f"job {job_id} already used all its {job.max_attempts} attempts; add a new job instead "
                f"(cpdm jobs add {job.kind} ...)"
            )
        for parent in job.parents:
            status = conn.execute("SELECT status FROM jobs WHERE id = ?", (parent,)).fetchone()[0]
            if status in ("failed", "cancelled"):
                raise CpdmError(f"job {job_id} waits for job {parent}, which is {status}; retry job {parent} first")
        _requeue_with_children(conn, job.id)
        return _read_job(conn, job.id)


def _requeue_with_children(conn: sqlite3.Connection, job_id: int) -> None:
    """Queue a job again, and the descendants that failed only because it did."""
    pending = deque([job_id])
    while pending:
        current = pending.popleft()
        conn.execute(
            "UPDATE jobs SET status = 'queued', progress = 0, message = NULL, error = NULL, worker = NULL, "
            "result = NULL, started_at = NULL, finished_at = NULL, heartbeat_at = NULL, lease_expires_at = NULL, "
            "cancel_requested = 0, eta_seconds = NULL, ran_on = NULL WHERE id = ?",
            (current,),
        )
        pending.extend(row[0] for row in conn.execute(
            "SELECT d.job FROM job_dependencies d JOIN jobs j ON j.id = d.job "
            "WHERE d.parent = ? AND j.status = 'failed' AND j.error LIKE ? ORDER BY d.job",
            (current, f"{PARENT_FAILED_PREFIX}{current} %"),
        ))


def log_path(ws, job_id: int) -> Path:
    """The job's log file (``WORKSPACE/jobs/<id>.log``; it may not exist yet)."""
    return Path(ws.root) / LOG_DIR / f"{int(job_id)}.log"


def append_log(ws, job_id: int, text: str) -> None:
    """Append text to the job's log, ending it with a newline."""
    path = log_path(ws, job_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not text.endswith("\n"):
        text += "\n"
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(text)


def read_log(ws, job_id: int, tail_lines: int | None = None) -> str:
    """The job's log (its last ``tail_lines`` lines if given); empty while it has logged nothing."""
    get_job(ws, job_id)
    path = log_path(ws, job_id)
    if not path.exists():
        return ""
    with open(path, encoding="utf-8", errors="replace") as handle:
        if tail_lines is None:
            return handle.read()
        return "".join(deque(handle, maxlen=max(int(tail_lines), 0)))


def follow_log(ws, job_id: int, poll_seconds: float = 0.5, tail_lines: int | None = None) -> Iterator[str]:
    """Yield the job's log as it grows (starting with its last ``tail_lines`` lines) until the job has finished."""
    get_job(ws, job_id)
    path = log_path(ws, job_id)
    offset = 0
    first = True
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")  # a chunk may end inside a character
    while True:
        finished = get_job(ws, job_id).finished
        chunk = b""
        if path.exists():
            with open(path, "rb") as handle:
                handle.seek(offset)
                chunk = handle.read()
            offset += len(chunk)
        text = decoder.decode(chunk, final=finished)
        if first and tail_lines is not None:
            text = "".join(text.splitlines(keepends=True)[-max(int(tail_lines), 0):] if tail_lines else [])
        first = False
        if text:
            yield text
        if finished:
            return
        time.sleep(poll_seconds)
