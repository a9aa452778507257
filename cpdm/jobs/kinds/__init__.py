"""The library's job kinds, one module each: each runs the function its CLI command runs, through the job's context.

Kinds: generate, unlearn, score, interrogate, refine, analyze, report (the
unlearning report), refresh-triplets (an active 2afc campaign's queue), noop. Each module defines ``KIND`` (see
:func:`cpdm.jobs.registry.parameterised_kind`) and declares its parameters
(:class:`cpdm.jobs.parameters.Parameter`: name, type, default, help) with the
defaults its command uses, read from the same constants. ``check_params``
turns what a user gave into complete, converted parameters, or refuses them
with a clear error before anything is queued. ``run(ws, params, context)``
calls the library function on the worker's device and returns a small
JSON-able result.

Importing a kind's module loads no torch, and neither do the checks and the
forms: an unlearn job's method is checked against the unlearning methods'
table (:data:`cpdm.unlearning.REGISTRY`), not their code. This package holds
what the kinds share.
"""

from __future__ import annotations

import math


def log_notes(context, notes) -> None:
    """Log each note of a report as ``note: ...``."""
    for note in notes:
        context.log(f"note: {note}")


def json_number(value):
    """A float for JSON: NaN and infinities become None."""
    value = float(value)
    return value if math.isfinite(value) else None
