"""``cpdm worker``: claim jobs from the workspace's queue and run them, one at a time.

A :class:`Worker` claims a job (see :func:`cpdm.jobs.queue.claim`), runs its
kind's function inside :func:`cpdm.progress.running` with a
:class:`WorkerContext`, and records the result, or the error with its
traceback. While the job runs:

* a heartbeat thread, on its own connection, renews the lease; if the lease
  is lost (another worker took the job over) the job stops at its next step
  and this worker writes nothing more to it;
* progress, message and ETA go to the job's row at most every
  :data:`PROGRESS_EVERY_SECONDS` (and once at the end);
* what the job prints and logs (Python ``logging``) goes to its log file;
* a cancel request is read from the row (at most every
  :data:`CANCEL_CHECK_SECONDS`) and stops the job at its next step: it ends
  ``cancelled`` and keeps what it stored.

:meth:`Worker.request_stop` (SIGTERM or Ctrl-C under ``cpdm worker``) lets
the current step finish, then gives the job back to the queue and exits.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import signal
import socket
import sqlite3
import sys
import threading
import time
import traceback
from typing import Iterator

from cpdm.errors import CpdmError
from cpdm.jobs import queue
from cpdm.progress import JobCancelled, JobContext, running
from cpdm.jobs.queue import Job
from cpdm.jobs.registry import get_kind
from cpdm.store.time import format_time, utc_now
from cpdm.store.workspace import open_workspace

# A job's row is written at most this often (a progress bar may tick thousands of times a second).
PROGRESS_EVERY_SECONDS = 1.0
# And the cancel flag is read at most this often.
CANCEL_CHECK_SECONDS = 1.0
DEFAULT_IDLE_SECONDS = 1.0
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def default_worker_name() -> str:
    """A name no other live worker has: host and process id."""
    return f"{socket.gethostname()}:{os.getpid()}"


class WorkerContext(JobContext):
    """What a job run by a :class:`Worker` sees: progress and log go to the workspace, cancel is read from it."""

    def __init__(self, worker: "Worker", job: Job, lease_lost: threading.Event):
        super().__init__(job.id, job.params, worker.device)
        self.executor = worker.executor
        self._worker = worker
        self._lease_lost = lease_lost
        self._last_write = float("-inf")
        self._last_check = time.monotonic()
        # Why the job must stop early (queue.STOP_CANCEL, queue.STOP_LEASE_LOST), once known.
        self.stop_reason: str | None = None

    def log(self, line: str) -> None:
        """Append a line to the job's log file."""
        queue.append_log(self._worker.ws, self.job_id, str(line).rstrip("\n"))

    def cancelled(self) -> bool:
        """Whether the job must stop: cancelled, its lease lost, or the worker shutting down."""
        if self._lease_lost.is_set():
            self.stop_reason = queue.STOP_LEASE_LOST
        now = time.monotonic()
        if self.stop_reason is None and now - self._last_check >= CANCEL_CHECK_SECONDS:
            self._last_check = now
            self._read_stop_reason(lambda: queue.stop_reason(self._worker.queue_ws, self.job_id, self._worker.name))
        return self.stop_reason is not None or self._worker.stopping

    def _publish(self) -> None:
        if time.monotonic() - self._last_write >= PROGRESS_EVERY_SECONDS:
            self.flush()

    def flush(self) -> None:
        """Write progress, message and ETA to the job's row now (and learn whether it must stop)."""
        self._last_write = self._last_check = time.monotonic()
        self._read_stop_reason(lambda: queue.report_progress(
            self._worker.queue_ws, self.job_id, self._worker.name, self.fraction, self.message, self.eta_seconds))

    def _read_stop_reason(self, read) -> None:
        """Run a row read or write that tells whether to stop; a busy database only delays it."""
        try:
            reason = read()
        except sqlite3.OperationalError as exc:  # locked for longer than the busy timeout: next time
            self.log(f"[worker] could not reach the job's row ({exc}); trying again at the next step")
            return
        if reason is not None and self.stop_reason != queue.STOP_LEASE_LOST:
            self.stop_reason = reason


class _Heartbeat(threading.Thread):
    """Renews a job's lease every ``every`` seconds on its own connection; sets ``lost`` if the lease is gone."""

    def __init__(self, ws_root, job_id: int, worker: str, lease_seconds: float, every: float):
        super().__init__(name=f"heartbeat-job-{job_id}", daemon=True)
        self.ws_root = ws_root
        self.job_id = job_id
        self.worker = worker
        self.lease_seconds = lease_seconds
        self.every = every
        self.lost = threading.Event()
        self._done = threading.Event()

    def run(self) -> None:
        ws = None  # opened at the first beat: most short jobs end before it
        try:
            while not self._done.wait(self.every):
                try:
                    ws = ws or open_workspace(self.ws_root)
                    held = queue.heartbeat(ws, self.job_id, self.worker, self.lease_seconds)
                except (sqlite3.OperationalError, CpdmError):
                    continue  # the database was busy past its timeout; the lease still has time left
                if not held:
                    self.lost.set()
                    return
        finally:
            if ws is not None:
                ws.close()

    def stop(self) -> None:
        self._done.set()
        self.join()


class _LogLines(io.TextIOBase):
    """A text stream that copies complete lines into a job's log, and everything to the stream it replaces."""

    def __init__(self, context: WorkerContext, original):
        self.context = context
        self.original = original
        self.pending = ""

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        if self.original is not None:
            self.original.write(text)
        lines = (self.pending + text).split("\n")
        self.pending = lines.pop()
        for line in lines:
            self.context.log(line)
        return len(text)

    def flush(self) -> None:
        if self.original is not None:
            self.original.flush()

    def close_lines(self) -> None:
        """Log a last line that ended without a newline."""
        if self.pending:
            self.context.log(self.pending)
            self.pending = ""


class _LogRecords(logging.Handler):
    """A logging handler writing records into a job's log."""

    def __init__(self, context: WorkerContext):
        super().__init__(logging.INFO)
        self.context = context
        self.setFormatter(logging.Formatter(LOG_FORMAT))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.context.log(self.format(record))
        except Exception:  # a log line must never break the job
            self.handleError(record)


@contextlib.contextmanager
def _capture_output(context: WorkerContext) -> Iterator[None]:
    """Copy what the job prints (stdout, stderr) and logs (INFO and above) into its log file."""
    out, err = _LogLines(context, sys.stdout), _LogLines(context, sys.stderr)
    handler = _LogRecords(context)
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    if root.getEffectiveLevel() > logging.INFO:
        root.setLevel(logging.INFO)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            yield
    finally:
        out.close_lines()
        err.close_lines()
        root.removeHandler(handler)
        root.setLevel(level)


class Worker:
    """Claims jobs from one workspace and runs them, one at a time.

    ``device`` is where this worker runs jobs ('cpu', 'cuda:0', ...): it
    takes jobs that ask for no device, for this one or for its type ('cuda').
    ``kinds`` limits it to some job kinds. ``executor`` (Ray, say) is handed
    to each job through its context. ``name`` must differ from every other
    live worker's (the default does).
    """

    def __init__(self, ws_path, name: str | None = None, device: str = "cpu", kinds=None, executor=None,
                 lease_seconds: float = queue.LEASE_SECONDS, heartbeat_seconds: float | None = None):
        self.kinds = None if kinds is None else [get_kind(kind).name for kind in kinds]
        if lease_seconds <= 0:
            raise CpdmError(f"a worker's lease must last some time, not {lease_seconds} s")
        self.ws = open_workspace(ws_path)  # what jobs read and write
        self.queue_ws = open_workspace(ws_path)  # the queue's own connection, free while a job holds ws.conn
        self.name = name or default_worker_name()
        self.device = device
        self.executor = executor
        self.lease_seconds = float(lease_seconds)
        # A third of the lease: two heartbeats may be missed (a busy database) before the lease lapses.
        self.heartbeat_seconds = float(heartbeat_seconds) if heartbeat_seconds else self.lease_seconds / 3
        self._stop = threading.Event()

    @property
    def stopping(self) -> bool:
        """Whether :meth:`request_stop` was called: the current job stops at its next step, then the worker exits."""
        return self._stop.is_set()

    def request_stop(self) -> None:
        """Stop after the current step: the running job goes back to the queue, and no new job is claimed."""
        self._stop.set()

    def claim_next(self) -> Job | None:
        """Claim the oldest job this worker can run (None if there is none, or the worker is stopping)."""
        if self.stopping:
            return None
        return queue.claim(self.queue_ws, self.name, kinds=self.kinds, device=self.device,
                           lease_seconds=self.lease_seconds)

    def run_once(self) -> Job | None:
        """Claim one job and run it; return it as it ended, or None if there was nothing to claim."""
        job = self.claim_next()
        return None if job is None else self.run(job)

    def run_forever(self, idle_seconds: float = DEFAULT_IDLE_SECONDS, stop_when_idle: bool = False) -> int:
        """Run jobs until stopped (or, with ``stop_when_idle``, until none is claimable); return how many ran."""
        count = 0
        while not self.stopping:
            if self.run_once() is not None:
                count += 1
            elif stop_when_idle:
                break
            else:
                self._stop.wait(idle_seconds)
        return count

    def run(self, job: Job) -> Job:
        """Run a job this worker has claimed; record how it ended and return it as stored."""
        heartbeat = _Heartbeat(self.ws.root, job.id, self.name, self.lease_seconds, self.heartbeat_seconds)
        context = WorkerContext(self, job, heartbeat.lost)
        context.log(f"[worker] {format_time(utc_now())} attempt {job.attempts} of {job.max_attempts} "
                    f"on {self.name} ({self.device})")
        heartbeat.start()
        try:
            with running(context), _capture_output(context):
                result = get_kind(job.kind).run(self.ws, job.params, context)
        except JobCancelled:
            self._record_stopped(job, context)
        except Exception:
            self._record_failure(job, context, traceback.format_exc())
        except BaseException:
            # Interrupted outside the worker's control (a second Ctrl-C): leave the job to the next worker.
            context.log("[worker] interrupted; job queued again")
            queue.requeue(self.queue_ws, job.id, self.name, f"worker {self.name} was interrupted; queued again")
            raise
        else:
            self._record_result(job, context, result)
        finally:
            heartbeat.stop()
        return queue.get_job(self.queue_ws, job.id)

    def _record_result(self, job: Job, context: WorkerContext, result) -> None:
        try:
            json.dumps(result if result is not None else {})
        except (TypeError, ValueError) as exc:
            self._record_failure(job, context, f"the job's result is not JSON: {exc}")
            return
        context.fraction, context.eta_seconds = 1.0, 0.0
        context.flush()
        if queue.finish(self.queue_ws, job.id, self.name, result):
            context.log(f"[worker] {format_time(utc_now())} done")
        else:
            context.log(f"[worker] lease lost: another worker holds job {job.id}; its result here is not recorded")

    def _record_failure(self, job: Job, context: WorkerContext, error: str) -> None:
        context.flush()
        context.log(error)
        if not queue.fail(self.queue_ws, job.id, self.name, error):
            context.log(f"[worker] lease lost: another worker holds job {job.id}; this failure is not recorded")

    def _record_stopped(self, job: Job, context: WorkerContext) -> None:
        """The job stopped at a step: cancelled, taken over, or given back because the worker is stopping."""
        context.flush()
        reason = context.stop_reason
        if reason == queue.STOP_LEASE_LOST:
            context.log(f"[worker] lease lost: another worker took job {job.id} over; stopped here")
        elif reason == queue.STOP_CANCEL:
            context.log(f"[worker] {format_time(utc_now())} cancelled; what it stored stays")
            queue.record_cancelled(self.queue_ws, job.id, self.name)
        elif self.stopping:
            context.log(f"[worker] worker {self.name} is stopping; job queued again")
            queue.requeue(self.queue_ws, job.id, self.name, f"worker {self.name} stopped; queued again")
        else:
            self._record_failure(job, context, traceback.format_exc())

    @contextlib.contextmanager
    def handle_signals(self) -> Iterator[None]:
        """While the block runs, SIGTERM and Ctrl-C stop the worker after the current step.

        A second signal acts as usual (the process ends at once; the job is
        reclaimed once its lease expires).
        """
        previous = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}

        def stop(signum, frame):
            print(f"worker {self.name}: stopping after the current step", file=sys.__stderr__, flush=True)
            self.request_stop()
            for sig, handler in previous.items():
                signal.signal(sig, handler)

        for sig in previous:
            signal.signal(sig, stop)
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def close(self) -> None:
        """Close the worker's connections."""
        self.ws.close()
        self.queue_ws.close()

    def __enter__(self) -> "Worker":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
