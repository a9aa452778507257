"""The noop kind: does nothing for a while, in steps (queue benchmarks and tests)."""

from __future__ import annotations

import time

from cpdm.jobs.parameters import Parameter
from cpdm.jobs.registry import JobKind
from cpdm.progress import progress_bar


def _noop_parameters() -> list[Parameter]:
    return [Parameter("steps", "int", 1, "steps", minimum=1), Parameter("seconds", "float", 0.0, "seconds in all",
                                                                         minimum=0)]


def _run_noop(ws, params: dict, context) -> dict:
    """Do nothing for ``params['seconds']`` (default 0) in ``params['steps']`` steps."""
    steps = int(params.get("steps", 1))
    pause = float(params.get("seconds", 0)) / max(steps, 1)
    with progress_bar(steps, "waiting", enabled=False) as bar:
        for _ in range(steps):
            time.sleep(pause)
            bar.update(1)
    return {"steps": steps}


# Its own body and checker (none: it takes what it is given); its form shows the parameters above.
KIND = JobKind("noop", "do nothing (queue benchmarks and tests)", _run_noop, parameters=_noop_parameters)
