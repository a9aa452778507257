"""What a running job sees of its worker: progress, a log, and whether it was cancelled.

A job kind's function receives a :class:`JobContext`. Library code does not
take one as an argument: it reports through :func:`cpdm.progress.progress_bar`,
which forwards to the context that :func:`running` made current. The same
function therefore shows a tqdm bar when a command runs it in a terminal,
and updates the job's row when a worker runs it.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Iterator

from cpdm.errors import CpdmError


class JobCancelled(CpdmError):
    """Raised at a job's next step once someone asked to cancel it; what it stored so far stays."""


class JobContext:
    """The running job's side of the queue. This base class keeps everything in memory (tests, direct calls).

    The worker's subclass writes progress and log lines to the workspace (at
    most every few seconds) and reads the cancel flag there.
    """

    def __init__(self, job_id: int | None = None, params: dict | None = None, device: str = "cpu"):
        self.job_id = job_id
        self.params = dict(params or {})
        self.device = device
        self.fraction = 0.0
        self.message: str | None = None
        self.eta_seconds: float | None = None
        self.lines: list[str] = []
        self.cancel_requested = False
        # Where generation and scoring batches run: None runs them in this process;
        # a worker started with ``--executor ray`` sets a Ray executor.
        self.executor = None
        self._started = time.monotonic()

    def progress(self, fraction: float, message: str | None = None) -> None:
        """Record how far the job is (0..1) and what it is doing; estimate the time left from the pace so far."""
        fraction = min(1.0, max(0.0, float(fraction)))
        elapsed = time.monotonic() - self._started
        self.eta_seconds = elapsed * (1 - fraction) / fraction if fraction > 0 else None
        self.fraction = fraction
        if message is not None:
            self.message = message
        self._publish()

    def log(self, line: str) -> None:
        """Append a line to the job's log."""
        self.lines.append(str(line).rstrip("\n"))
        self._publish()

    def cancelled(self) -> bool:
        """Whether someone asked this job to stop."""
        return self.cancel_requested

    def check_cancelled(self) -> None:
        """Raise :class:`JobCancelled` if someone asked this job to stop; call it between steps."""
        if self.cancelled():
            raise JobCancelled(f"job {self.job_id} was cancelled" if self.job_id else "cancelled")

    def _publish(self) -> None:
        """Hook for subclasses that store progress elsewhere."""


_current: ContextVar[JobContext | None] = ContextVar("cpdm_current_job", default=None)


def current_job() -> JobContext | None:
    """The job running in this thread, if a worker is running one."""
    return _current.get()


@contextmanager
def running(context: JobContext) -> Iterator[JobContext]:
    """Make ``context`` the current job while the block runs, so progress bars report to it."""
    token = _current.set(context)
    try:
        yield context
    finally:
        _current.reset(token)
