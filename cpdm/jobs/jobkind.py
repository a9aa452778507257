"""What a job kind is: a name, a summary, the function a worker calls, a parameter checker, a device wish.

Kept apart from :mod:`cpdm.jobs.registry` so that the modules defining kinds
need not import the registry that loads them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable


@dataclass(frozen=True)
class JobKind:
    """One kind of job: its name, what it does, and the function a worker calls."""

    name: str
    summary: str
    run: Callable  # run(ws, params: dict, context: JobContext) -> dict
    check_params: Callable[[dict], dict] = field(default=lambda params: dict(params))
    wants_gpu: bool = False
