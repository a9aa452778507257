"""What the Jobs page needs, without Streamlit: form fields from job parameters, requests that queue jobs,
and how a queued, running or finished job is described.

The page only writes to the queue; workers (``cpdm worker``) run the jobs.
Every request checks all its jobs' parameters before it queues the first
one, so a bad value queues nothing.

* Fields: :func:`form_field` says how a form shows one
  :class:`~cpdm.jobs.parameters.Parameter` (widget, default, help);
  :func:`changed_values` keeps the values a user changed from their defaults
  (an unlearning method's presets apply unless a value overrides them).
* Requests: :func:`enqueue_generation` (optionally with a score job after
  it), :func:`enqueue_unlearning`, :func:`enqueue_scoring`,
  :func:`enqueue_chain` (the whole unlearning chain).
* Watching: :func:`status_badge`, :func:`progress_text`, :func:`job_facts`,
  :func:`can_cancel`, :func:`can_retry`, and :func:`stalled_queue` (jobs wait
  while no worker has been seen: how to start one).
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from cpdm.errors import CpdmError
from cpdm.jobs.parameters import HYPERPARAMETERS, OFFLINE_TINY, Parameter
from cpdm.jobs.queue import Job, enqueue, get_job, last_heartbeat, list_jobs
from cpdm.jobs.registry import get_kind, kind_parameters
from cpdm.store.time import parse_time, utc_now

# --- form fields -------------------------------------------------------------------------------------

# Widgets a field is shown with.
WIDGETS = ("checkbox", "select", "int", "float", "text")


@dataclass(frozen=True)
class Field:
    """How a form shows one parameter: widget, label, default value, choices, bounds and help."""

    name: str
    label: str
    widget: str  # one of WIDGETS
    value: Any
    help: str
    options: tuple = ()  # for "select"; None among them stands for "the default"
    minimum: float | None = None
    maximum: float | None = None


def field_label(name: str) -> str:
    """``per_prompt`` -> ``Per prompt``."""
    text = name.replace("_", " ")
    return text[:1].upper() + text[1:]


def form_field(parameter: Parameter, label: str | None = None) -> Field:
    """The widget for a parameter: a checkbox, a choice, a number box, or text (lists comma-separated).

    ``label`` defaults to the name in words (``per_prompt`` -> ``Per prompt``).
    """
    label, default, help_text = label or field_label(parameter.name), parameter.default, parameter.help
    if parameter.type == "bool":
        return Field(parameter.name, label, "checkbox", bool(default), help_text)
    if parameter.choices:
        options = tuple(parameter.choices) if default is not None else (None, *parameter.choices)
        return Field(parameter.name, label, "select", default, help_text, options=options)
    if parameter.type in ("int", "float"):
        cast = int if parameter.type == "int" else float
        value = None if default is None else cast(default)
        return Field(parameter.name, label, parameter.type, value, help_text, minimum=parameter.minimum,
                     maximum=parameter.maximum)
    if parameter.type in ("ids", "strings"):
        text = ", ".join(str(item) for item in default) if default else ""
        return Field(parameter.name, label, "text", text, f"{help_text} (separate them with commas)".strip())
    if parameter.type == "mapping":
        raise CpdmError(f"parameter {parameter.name!r} is a mapping: show its section's parameters instead")
    return Field(parameter.name, label, "text", "" if default is None else str(default), help_text)


def form_fields(kind: str, names: tuple[str, ...] | None = None, skip: tuple[str, ...] = ()) -> list[Field]:
    """Fields for a kind's parameters (only ``names`` if given, in that order; never those in ``skip``)."""
    parameters = {parameter.name: parameter for parameter in kind_parameters(kind) if not parameter.section}
    chosen = names if names is not None else tuple(parameters)
    unknown = [name for name in chosen if name not in parameters]
    if unknown:
        raise CpdmError(f"{kind} jobs have no parameter {', '.join(unknown)}")
    return [form_field(parameters[name]) for name in chosen
            if name not in skip and parameters[name].type != "mapping"]


def hyperparameter_fields(method: str) -> list[Field]:
    """An unlearning method's hyperparameters as fields, with the method's defaults and help.

    Labelled by their names as ``cpdm unlearn -p NAME=VALUE`` and the method's docstring give them.
    """
    return [form_field(parameter, label=parameter.name) for parameter in kind_parameters("unlearn", method)
            if parameter.section == HYPERPARAMETERS]


def changed_values(fields: list[Field], values: dict) -> dict:
    """The values that differ from their field's default; an empty box means the default."""
    changed = {}
    for field in fields:
        value = values.get(field.name)
        if value is None or isinstance(value, str) and not value.strip():
            continue
        if value != field.value:
            changed[field.name] = value
    return changed


# --- where a job runs --------------------------------------------------------------------------------

# What the forms offer: auto = a CUDA worker for GPU kinds, or a CPU worker with the offline tiny models.
DEVICE_CHOICES = ("auto", "cuda", "cpu")


def job_device(choice: str, offline_tiny: bool) -> str | None:
    """The device a job asks for (None: its kind's default) from a form's choice."""
    if choice not in DEVICE_CHOICES:
        raise CpdmError(f"device must be one of {', '.join(DEVICE_CHOICES)}, got {choice!r}")
    if choice == "auto":
        return "cpu" if offline_tiny else None
    return choice


# --- requests ----------------------------------------------------------------------------------------

# Which prompts a generation uses.
PROMPT_CHOICES = {
    "latest": "each anchor's latest prompts",
    "all": "every prompt",
    "chosen": "the prompts chosen below",
}


def prompt_selection(ws, choice: str, chosen=()) -> list[int] | None:
    """Prompt ids for a generate job (None: each anchor's latest prompts, the kind's default)."""
    from cpdm.curation.prompts import prompt_rows

    if choice not in PROMPT_CHOICES:
        raise CpdmError(f"prompts must be one of {', '.join(PROMPT_CHOICES)}, got {choice!r}")
    if choice == "latest":
        return None
    rows = prompt_rows(ws, prompt_ids=[int(prompt_id) for prompt_id in chosen] or None)
    if not rows:
        raise CpdmError("this workspace has no prompts yet: import anchors and write prompts first")
    if choice == "chosen" and not chosen:
        raise CpdmError("choose at least one prompt (or generate from each anchor's latest prompts)")
    return [row.id for row in rows]


def _checked(kind: str, params: dict) -> dict:
    return get_kind(kind).check_params(params)


def enqueue_generation(ws, params: dict, *, score_after: bool = False, device: str | None = None) -> list[int]:
    """Queue a generate job, and with ``score_after`` a score job for the variant's pairs once it is done.

    Returns the queued ids (generate first). Both jobs are checked before either is queued.
    """
    generate = _checked("generate", params)
    variant = generate["variant"]
    score = _checked("score", {"variant": variant, "offline_tiny": generate["offline_tiny"]}) if score_after else None
    prompts = generate["prompt_ids"]
    which = f"{len(prompts)} prompt{'s' if len(prompts) != 1 else ''}" if prompts else "latest prompts"
    ids = [enqueue(ws, "generate", generate, device=device,
                   title=f"generate with {variant}: {which} x {generate['per_prompt']}")]
    if score is not None:
        ids.append(enqueue(ws, "score", score, after=ids, device=device, title=f"score the new pairs of {variant}"))
    return ids


def enqueue_unlearning(ws, method: str, params: dict, hyperparameters: dict | None = None,
                       device: str | None = None) -> int:
    """Queue an unlearn job; an empty variant name becomes METHOD-CONCEPT (see ``default_variant_name``)."""
    from cpdm.jobs.chain import default_variant_name, refuse_existing_variant

    given = {**params, "method": method, HYPERPARAMETERS: dict(hyperparameters or {})}
    concepts = [str(concept).strip() for concept in (given.get("concepts") or []) if str(concept).strip()]
    if not concepts:
        raise CpdmError("choose at least one concept to erase")
    given["concepts"] = concepts
    if not str(given.get("variant_name") or "").strip():
        given["variant_name"] = default_variant_name(method, concepts[0])
    checked = _checked("unlearn", given)
    refuse_existing_variant(ws, checked["variant_name"])  # the runner would refuse it only once a worker ran it
    return enqueue(ws, "unlearn", checked, device=device,
                   title=f"unlearn {', '.join(checked['concepts'])} with {method} -> {checked['variant_name']}")


# What a score job scores.
SCORE_SCOPES = {
    "variant": "the pairs of a variant",
    "campaign": "the pairs of a campaign",
    "all": "every pair",
}


def enqueue_scoring(ws, scope: str, target: str | None, params: dict, device: str | None = None) -> int:
    """Queue a score job for a variant's pairs, a campaign's, or every pair (``scope``, see SCORE_SCOPES)."""
    if scope not in SCORE_SCOPES:
        raise CpdmError(f"score scope must be one of {', '.join(SCORE_SCOPES)}, got {scope!r}")
    given = dict(params)
    if scope != "all":
        if not str(target or "").strip():
            raise CpdmError(f"choose the {scope} whose pairs to score")
        given[scope] = target
    checked = _checked("score", given)
    title = "score every pair" if scope == "all" else f"score the pairs of {scope} {target}"
    return enqueue(ws, "score", checked, device=device, title=title)


def chain_fields() -> list[Field]:
    """The unlearning chain's own settings, with ``cpdm pipeline run``'s defaults."""
    from cpdm.diffusion.settings import PAPER_PER_PROMPT, PAPER_STEPS

    return [
        Field("variant_name", "Variant name", "text", "", "name of the new variant (empty: METHOD-CONCEPT)"),
        Field("retain_prompts", "Retain prompts", "int", None,
              "at most this many prompts of other anchors, oldest first (empty: all)", minimum=1),
        Field("per_prompt", "Per prompt", "int", PAPER_PER_PROMPT, "images per prompt the generate job makes",
              minimum=1),
        Field("steps", "Steps", "int", PAPER_STEPS, "sampling steps of the generations", minimum=1),
        Field("size", "Size", "int", None, "image side in pixels, a multiple of 8 (empty: the model's)", minimum=8),
        form_field(OFFLINE_TINY),
    ]


def enqueue_chain(ws, concept: str, method: str, *, device: str | None = None, **options) -> list[int]:
    """Queue unlearn -> generate -> score -> report (``cpdm pipeline run``); ``options`` as enqueue_pipeline's."""
    from cpdm.jobs.chain import enqueue_pipeline

    options["variant_name"] = str(options.get("variant_name") or "").strip() or None
    return enqueue_pipeline(ws, concept, method, device=device, **options)


# --- watching ----------------------------------------------------------------------------------------

# Badge colour and icon of each status.
STATUS_LOOKS = {
    "queued": ("gray", ":material/schedule:"),
    "running": ("blue", ":material/autorenew:"),
    "done": ("green", ":material/check_circle:"),
    "failed": ("red", ":material/error:"),
    "cancelled": ("orange", ":material/cancel:"),
}


def status_badge(job: Job) -> tuple[str, str, str]:
    """(label, colour, icon) of the job's status badge; a running job someone cancelled shows 'cancelling'."""
    colour, icon = STATUS_LOOKS[job.status]
    if job.status == "running" and job.cancel_requested:
        return "cancelling", "orange", STATUS_LOOKS["cancelled"][1]
    return job.status, colour, icon


def format_duration(seconds: float | None) -> str:
    """``3725`` -> ``1 h 2 min``; ``65`` -> ``1 min 5 s``; ``0.4`` -> ``under 1 s``."""
    if seconds is None:
        return ""
    seconds = max(0, int(round(float(seconds))))
    if seconds < 1:
        return "under 1 s"
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    if minutes:
        return f"{minutes} min {secs} s" if secs else f"{minutes} min"
    return f"{secs} s"


def _seconds_since(moment_text: str | None, now: datetime) -> float | None:
    return None if not moment_text else (now - parse_time(moment_text)).total_seconds()


def progress_text(job: Job) -> str:
    """The line under a job's progress bar: percent, message, and the time left while it runs."""
    parts = [f"{job.progress * 100:.0f}%"]
    if job.message:
        parts.append(job.message)
    if job.status == "running" and job.eta_seconds is not None:
        parts.append(f"about {format_duration(job.eta_seconds)} left")
    return " · ".join(parts)


def job_facts(job: Job, now: datetime | None = None) -> list[str]:
    """Short facts about a job: kind, worker and device, attempts, parents, and when it was queued, ran, ended."""
    now = now or utc_now()
    facts = [f"kind {job.kind}"]
    if job.worker:
        facts.append(f"worker {job.worker} on {job.ran_on or 'its device'}")
    else:
        facts.append(f"needs {'a ' + job.device + ' worker' if job.device else 'any worker'}")
    facts.append(f"attempt {job.attempts} of {job.max_attempts}")
    if job.parents:
        facts.append(f"after job{'s' if len(job.parents) > 1 else ''} {', '.join(map(str, job.parents))}")
    facts.append(f"queued {format_duration(_seconds_since(job.created_at, now))} ago")
    if job.started_at and job.finished_at:
        ran = (parse_time(job.finished_at) - parse_time(job.started_at)).total_seconds()
        facts.append(f"ran {format_duration(ran)}")
    elif job.started_at and job.status == "running":
        facts.append(f"running for {format_duration(_seconds_since(job.started_at, now))}")
    return facts


def can_cancel(job: Job) -> bool:
    """Whether a Cancel button applies: the job is queued, or running and not already being cancelled."""
    return not job.finished and not job.cancel_requested


def can_retry(job: Job) -> bool:
    """Whether a Retry button applies: the job failed or was cancelled and has attempts left."""
    return job.status in ("failed", "cancelled") and job.attempts < job.max_attempts


def error_summary(job: Job) -> str:
    """The last line of a failed job's error (a traceback ends with the exception)."""
    lines = [line for line in (job.error or "").strip().splitlines() if line.strip()]
    return lines[-1].strip() if lines else ""


# --- is a worker there? ------------------------------------------------------------------------------

# A worker renews its job's lease (a heartbeat) every 20 s; none for this long means none is running jobs.
QUIET_SECONDS = 60.0
# An idle worker looks for jobs every second: a job waiting longer than this was not taken.
WAITING_SECONDS = 5.0


@dataclass(frozen=True)
class StalledQueue:
    """Jobs ready to run that no worker has taken, when no worker has been seen for a while."""

    waiting: list[Job]
    last_heartbeat: str | None  # the newest heartbeat of any job, or None if no worker ever ran one
    commands: list[str]  # how to start workers that would take them


def _ready(ws, queued: list[Job]) -> list[Job]:
    """The queued jobs whose parents are all done."""
    statuses: dict[int, str] = {}
    ready = []
    for job in queued:
        for parent in job.parents:
            if parent not in statuses:
                statuses[parent] = get_job(ws, parent).status
        if all(statuses[parent] == "done" for parent in job.parents):
            ready.append(job)
    return ready


def worker_commands(ws, jobs: list[Job]) -> list[str]:
    """``cpdm worker`` command lines that would take these jobs: one on a GPU, one on any machine."""
    workspace = shlex.quote(str(ws.root))
    gpu_devices = sorted({job.device for job in jobs if job.device and job.device.startswith("cuda")})
    commands = []
    if gpu_devices:
        device = next((name for name in gpu_devices if ":" in name), "cuda:0")
        commands.append(f"cpdm worker --workspace {workspace} --device {device}")
    if any(not job.device or job.device.startswith("cpu") for job in jobs):
        commands.append(f"cpdm worker --workspace {workspace}")
    return commands or [f"cpdm worker --workspace {workspace} --device {jobs[0].device}"]


def stalled_queue(ws, now: datetime | None = None) -> StalledQueue | None:
    """Ready jobs waiting (past :data:`WAITING_SECONDS`) while no heartbeat came in the last :data:`QUIET_SECONDS`.

    None when nothing waits or a worker was seen recently.
    """
    now = now or utc_now()
    waiting = [job for job in _ready(ws, list_jobs(ws, status="queued"))
               if _seconds_since(job.created_at, now) > WAITING_SECONDS]
    if not waiting:
        return None
    heartbeat = last_heartbeat(ws)
    if heartbeat is not None and _seconds_since(heartbeat, now) < QUIET_SECONDS:
        return None
    return StalledQueue(waiting, heartbeat, worker_commands(ws, waiting))
