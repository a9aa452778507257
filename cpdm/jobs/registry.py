"""The job kinds a worker can run, looked up by name.

A kind is a function ``run(ws, params, context) -> result`` (a JSON-able
dict) plus what it needs: whether it wants a GPU by default, and a checker
that turns user parameters into complete ones (so errors show when the job
is enqueued, not when a worker claims it). The real kinds (generate,
unlearn, score, …) live in :mod:`cpdm.jobs.kinds`, each calling the library
function its CLI command calls; the registry loads them on first use.

The environment variable ``CPDM_EXTRA_KINDS`` names more modules to import
(comma-separated, e.g. ``tests.jobs_support``), each registering kinds of
its own: how a worker process started for a test or a plugin learns kinds
the library does not ship.
"""

from __future__ import annotations

import importlib
import os
import time

from cpdm.errors import CpdmError
from cpdm.jobs.jobkind import JobKind
from cpdm.progress import progress_bar

_KINDS: dict[str, JobKind] = {}
_builtin_loaded = False


def register_kind(kind: JobKind) -> JobKind:
    """Add (or replace) a kind in the registry; return it."""
    _KINDS[kind.name] = kind
    return kind


def _load_builtin_kinds() -> None:
    global _builtin_loaded
    if not _builtin_loaded:
        from cpdm.jobs.kinds import BUILTIN_KINDS

        for kind in BUILTIN_KINDS:
            _KINDS.setdefault(kind.name, kind)  # a kind registered under the same name first stays
        _builtin_loaded = True

    for module in filter(None, (name.strip() for name in os.environ.get("CPDM_EXTRA_KINDS", "").split(","))):
        try:
            importlib.import_module(module)
        except ImportError as exc:
            raise CpdmError(f"CPDM_EXTRA_KINDS names {module!r}, which cannot be imported: {exc}") from exc


def get_kind(name: str) -> JobKind:
    """The kind called ``name``; a clear error naming the known kinds otherwise."""
    _load_builtin_kinds()
    try:
        return _KINDS[name]
    except KeyError:
        raise CpdmError(f"unknown job kind {name!r} (known: {', '.join(sorted(_KINDS))})") from None


def all_kinds() -> list[JobKind]:
    """Every registered kind, by name."""
    _load_builtin_kinds()
    return [_KINDS[name] for name in sorted(_KINDS)]


def _run_noop(ws, params: dict, context) -> dict:
    """Do nothing for ``params['seconds']`` (default 0) in ``params['steps']`` steps: queue benchmarks and tests."""
    steps = int(params.get("steps", 1))
    pause = float(params.get("seconds", 0)) / max(steps, 1)
    with progress_bar(steps, "waiting", enabled=False) as bar:
        for _ in range(steps):
            time.sleep(pause)
            bar.update(1)
    return {"steps": steps}


register_kind(JobKind("noop", "do nothing (queue benchmarks and tests)", _run_noop))
