"""The job kinds a worker can run, looked up by name: what a kind is, and the one registry of them.

A kind is a function ``run(ws, params, context) -> result`` (a JSON-able
dict) plus what it needs: whether it wants a GPU by default, a checker that
turns user parameters into complete ones (so errors show when the job is
enqueued, not when a worker claims it), and the parameters its form shows.
The library's kinds live one per module in :mod:`cpdm.jobs.kinds`, each
calling the library function its CLI command calls; the registry imports
them on first use, so importing it loads neither torch nor their wings.

The environment variable ``CPDM_EXTRA_KINDS`` names more modules to import
(comma-separated, e.g. ``tests.jobs_support``), each registering kinds of
its own: how a worker process started for a test or a plugin learns kinds
the library does not ship.
"""

from __future__ import annotations

import functools
import importlib
import os
from dataclasses import dataclass, field
from typing import Callable

from cpdm.errors import CpdmError
from cpdm.jobs.parameters import Parameter, check_against, method_parameters
from cpdm.progress import running

# The library's kinds: the modules of cpdm.jobs.kinds, each defining KIND.
BUILTIN_KINDS = ("generate", "unlearn", "score", "interrogate", "refine", "analyze", "report", "noop",
                "refresh_triplets")


@dataclass(frozen=True)
class JobKind:
    """One kind of job: its name, what it does, the function a worker calls, and what it checks and shows."""

    name: str
    summary: str
    run: Callable  # run(ws, params: dict, context: JobContext) -> dict
    check_params: Callable[[dict], dict] = field(default=lambda params: dict(params))
    wants_gpu: bool = False
    parameters: Callable[[], list[Parameter]] | None = None  # what its form shows; None: no form


def parameterised_kind(name: str, summary: str, parameters: Callable[[], list[Parameter]], run: Callable, *,
                       wants_gpu: bool = False, extra_check: Callable[[dict], None] | None = None) -> JobKind:
    """A kind whose checker converts and checks its ``parameters``, then runs ``extra_check`` on the result.

    Its body runs as the current job (so progress bars report to it) and
    ends by marking the job complete.
    """

    def check_params(params: dict | None) -> dict:
        checked = check_against(name, parameters(), params)
        if extra_check is not None:
            prefix = f"{name} job: "
            try:
                extra_check(checked)
            except CpdmError as exc:
                message = str(exc)
                raise CpdmError(message if message.startswith(prefix) else prefix + message) from exc
        return checked

    @functools.wraps(run)
    def body(ws, params: dict, context) -> dict:
        with running(context):
            result = run(ws, params, context)
        context.progress(1.0, "done")
        return result

    return JobKind(name, summary, body, check_params, wants_gpu, parameters)


_KINDS: dict[str, JobKind] = {}
_builtin_loaded = False


def register_kind(kind: JobKind) -> JobKind:
    """Add (or replace) a kind in the registry; return it."""
    _KINDS[kind.name] = kind
    return kind


def _load_builtin_kinds() -> None:
    global _builtin_loaded
    if not _builtin_loaded:
        for module in BUILTIN_KINDS:
            kind = importlib.import_module(f"cpdm.jobs.kinds.{module}").KIND
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


def kind_parameters(kind_name: str, method: str | None = None) -> list[Parameter]:
    """The parameters a form for ``kind_name`` shows, with defaults and help.

    For ``unlearn`` with a ``method``, the method's hyperparameters follow,
    each in the ``hyperparameters`` section with the method's default and help.
    """
    _load_builtin_kinds()
    kind = _KINDS.get(kind_name)
    if kind is None or kind.parameters is None:
        with_forms = sorted(k.name for k in _KINDS.values() if k.parameters is not None)
        raise CpdmError(f"no form for job kind {kind_name!r} (kinds with forms: {', '.join(with_forms)})")
    parameters = kind.parameters()
    if method is not None:
        if kind_name != "unlearn":
            raise CpdmError(f"only unlearn jobs take a method, not {kind_name} jobs")
        parameters += method_parameters(method)
    return parameters
