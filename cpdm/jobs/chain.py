"""The unlearning chain as queued jobs: unlearn → generate → score → unlearning report.

:func:`enqueue_pipeline` queues four jobs, each waiting for the one before:

1. ``unlearn``: erase the concept with a method into a new variant;
2. ``generate``: images with the new variant from the concept's prompts and
   the retain prompts (the prompts of other anchors), as the unlearning
   report splits them (:func:`cpdm.analysis.unlearning.split_prompts`: the
   anchors whose artist or title is the concept, and the others);
3. ``score``: the new variant's pairs;
4. ``report``: CM on the concept and on the retain set against the baseline.
   It generates with the generate job's settings, so it finds the variant's
   images and makes only the baseline's that are missing.

Every job's parameters are checked before the first is queued, so a bad
parameter queues nothing; so is the base model, which must be the
baseline's for the report to compare like with like.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from cpdm.errors import CpdmError
from cpdm.diffusion.settings import (
    BASELINE_VARIANT,
    DEFAULT_SD_MODEL,
    PAPER_PER_PROMPT,
    PAPER_STEPS,
    TINY_BASE,
    UNKNOWN_BASE,
)

STEPS = ("unlearn", "generate", "score", "report")


@dataclass(frozen=True)
class PlannedJob:
    """One job of the chain before it is queued."""

    kind: str
    params: dict
    title: str


def default_variant_name(method: str, concept: str) -> str:
    """``esd-x`` and ``Van Gogh`` -> ``esd-x-van-gogh``."""
    slug = re.sub(r"[^a-z0-9]+", "-", concept.lower()).strip("-")
    return f"{method.lower()}-{slug or 'concept'}"


def _baseline(ws):
    """The variant the report compares with; it must exist and be ready."""
    from cpdm.store.rows import get_variant

    try:
        baseline = get_variant(ws, BASELINE_VARIANT)
    except CpdmError:
        raise CpdmError(f"the unlearning report compares with the baseline variant {BASELINE_VARIANT!r}, which this "
                        "workspace lacks: generate with it first (cpdm generate)") from None
    if baseline.status != "ready":
        raise CpdmError(f"the baseline variant {BASELINE_VARIANT!r} is {baseline.status}, not ready")
    return baseline


def refuse_existing_variant(ws, name: str) -> None:
    """Refuse a variant name already taken, before any job is queued (a worker would refuse it only later)."""
    from cpdm.store.rows import get_variant

    try:
        get_variant(ws, name)
    except CpdmError:
        return
    raise CpdmError(f"a variant named {name!r} already exists; choose another name (--variant-name)")


def plan_pipeline(ws, concept: str, method: str, *, variant_name: str | None = None, base: str | None = None,
                  preserve=(), retain_prompts: int | None = None, per_prompt: int = PAPER_PER_PROMPT,
                  steps: int = PAPER_STEPS, size: int | None = None, offline_tiny: bool = False,
                  hyperparameters: dict | None = None) -> list[PlannedJob]:
    """The chain's four jobs with complete, checked parameters (nothing is queued).

    ``retain_prompts``: at most this many retain prompts (oldest first; None:
    all). ``base`` defaults to the baseline variant's base model. ``steps``
    and ``size`` apply to the generations of both the generate job and the report.
    """
    from cpdm.jobs.registry import get_kind
    from cpdm.analysis.unlearning import TargetRule, check_same_base, split_prompts

    concept = str(concept).strip()
    if not concept:
        raise CpdmError("name the concept to erase (--concept)")
    if retain_prompts is not None and retain_prompts < 1:
        raise CpdmError(f"retain_prompts must be at least 1, got {retain_prompts}")
    baseline = _baseline(ws)
    name = variant_name or default_variant_name(method, concept)
    refuse_existing_variant(ws, name)
    split = split_prompts(ws, TargetRule(concepts=(concept,)), max_retain_prompts=retain_prompts)
    prompt_ids = [prompt_id for group in ("target", "retain") for prompt_id, _, _ in split[group]]
    if base is None:
        base = DEFAULT_SD_MODEL if baseline.base_model in (TINY_BASE, UNKNOWN_BASE) else baseline.base_model
    # The report at the end of the chain refuses another base model than the baseline's: refuse it now.
    check_same_base(name, TINY_BASE if offline_tiny else base, baseline.name, baseline.base_model)
    planned = [
        PlannedJob("unlearn", {"method": method, "variant_name": name, "base": base, "concepts": [concept],
                               "preserve": list(preserve), "hyperparameters": dict(hyperparameters or {}),
                               "offline_tiny": offline_tiny},
                   f"unlearn {concept} with {method} -> {name}"),
        PlannedJob("generate", {"variant": name, "prompt_ids": prompt_ids, "per_prompt": per_prompt, "steps": steps,
                                "height": size, "width": size, "offline_tiny": offline_tiny},
                   f"generate with {name}: {len(split['target'])} concept and {len(split['retain'])} retain prompts"),
        PlannedJob("score", {"variant": name, "offline_tiny": offline_tiny}, f"score the pairs of {name}"),
        PlannedJob("report", {"variant": name, "vs": baseline.name, "steps": steps, "size": size,
                              "max_retain_prompts": retain_prompts, "offline_tiny": offline_tiny},
                   f"unlearning report: {name} vs {baseline.name}"),
    ]
    return [PlannedJob(job.kind, get_kind(job.kind).check_params(job.params), job.title) for job in planned]


def enqueue_pipeline(ws, concept: str, method: str, *, variant_name: str | None = None, base: str | None = None,
                     preserve=(), retain_prompts: int | None = None, per_prompt: int = PAPER_PER_PROMPT,
                     steps: int = PAPER_STEPS, size: int | None = None, offline_tiny: bool = False,
                     hyperparameters: dict | None = None, device: str | None = None) -> list[int]:
    """Queue unlearn → generate → score → report, each after the one before; return the four job ids.

    ``device`` None: each kind's default (a CUDA worker), or any CPU worker
    with ``offline_tiny``.
    """
    from cpdm.jobs.queue import enqueue

    planned = plan_pipeline(ws, concept, method, variant_name=variant_name, base=base, preserve=preserve,
                            retain_prompts=retain_prompts, per_prompt=per_prompt, steps=steps, size=size,
                            offline_tiny=offline_tiny, hyperparameters=hyperparameters)
    if device is None and offline_tiny:
        device = "cpu"
    ids: list[int] = []
    for job in planned:
        ids.append(enqueue(ws, job.kind, job.params, title=job.title, after=ids[-1:], device=device))
    return ids
