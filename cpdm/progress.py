"""One progress bar for all long work: tqdm on the terminal, and the job's progress when a worker runs it.

Every long loop in cpdm (generation, unlearning, scoring, interrogation,
refinement) uses :func:`progress_bar`. Inside a job (see
:mod:`cpdm.jobs.context`) each update also moves the job's progress and
checks whether the job was cancelled, so a cancel stops the work at its next
step, after what that step stored.
"""

from __future__ import annotations

import sys

from tqdm import tqdm

from cpdm.jobs.context import current_job


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
