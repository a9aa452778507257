"""Progress and cancellation for all long work: one bar, and what a running job sees of its worker.

Every long loop in cpdm (generation, unlearning, scoring, interrogation,
refinement) uses :func:`progress_bar`: tqdm on the terminal. Inside a job
each update also moves the job's progress and checks whether the job was
cancelled, so a cancel stops the work at its next step, after what that step
stored.

A job kind's function receives a :class:`JobContext`. Library code does not
take one as an argument: its progress bar forwards to the context that
:func:`running` made current. The same function therefore shows a tqdm bar
when a command runs it in a terminal, and updates the job's row when a
worker runs it. This module sits on the lowest floor, so every wing can
report progress without importing the jobs wing.
"""

from __future__ import annotations

import sys
import time
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Iterator

from tqdm import tqdm


class JobCancelled(Exception):
    """Raised at a job's next step once someone asked to cancel it; what it stored so far stays.

    A control signal, not a :class:`~cpdm.errors.CpdmError`: code that reports
    bad input and carries on must not swallow a cancel.
    """


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



class ProgressBar:
    """A tqdm bar that also reports to the current job (if any). Use it as a context manager or close it."""

    def __init__(self, total: int | None, desc: str, unit: str = "it", enabled: bool = True, initial: int = 0):
        self.job = current_job()
        self.total = total
        self.desc = desc
        self.count = initial
        self.postfix = ""
        # A job's log is not a terminal: the bar would only fill it with carriage returns.
        self.bar = tqdm(total=total, initial=initial, desc=desc, unit=unit, file=sys.stderr,
                        disable=not enabled or self.job is not None)
        self._report()

    def update(self, n: int = 1) -> None:
        """Count ``n`` more steps done; inside a job, raise :class:`JobCancelled` if it was cancelled."""
        self.count += n
        self.bar.update(n)
        self._report()

    def set_postfix(self, refresh: bool = False, **values) -> None:
        """Show values beside the bar (a loss, say) from its next update on; inside a job they join its message."""
        self.bar.set_postfix(refresh=refresh, **values)
        self.postfix = ", ".join(f"{key}={value}" for key, value in values.items())

    def _report(self) -> None:
        if self.job is None:
            return
        fraction = self.count / self.total if self.total else 0.0
        message = f"{self.desc}: {self.count}/{self.total if self.total is not None else '?'}"
        self.job.progress(fraction, f"{message} ({self.postfix})" if self.postfix else message)
        self.job.check_cancelled()

    def close(self) -> None:
        self.bar.close()

    def __enter__(self) -> "ProgressBar":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def progress_bar(total: int | None, desc: str, unit: str = "it", enabled: bool = True, initial: int = 0) -> ProgressBar:
    """A progress bar over ``total`` steps; ``enabled=False`` hides the terminal bar (a job still gets progress)."""
    return ProgressBar(total, desc, unit=unit, enabled=enabled, initial=initial)


def track(items, desc: str, unit: str = "it", enabled: bool = True):
    """Iterate over ``items`` with a progress bar (the counted form of :func:`progress_bar`)."""
    items = list(items)
    with progress_bar(len(items), desc, unit=unit, enabled=enabled) as bar:
        for item in items:
            yield item
            bar.update(1)
