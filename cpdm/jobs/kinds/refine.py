"""The refine kind: ``cpdm prompts refine`` as a job (prompts rewritten to elicit close imitation)."""

from __future__ import annotations

from cpdm.curation.refine import (
    DEFAULT_MAX_RETRIES,
    DEFAULT_SAMPLING_SEED,
    DEFAULT_TIMEOUT_S,
    REFINERS,
    make_refiner,
    refine_prompts,
)
from cpdm.jobs.parameters import Parameter
from cpdm.jobs.registry import parameterised_kind


def _refine_parameters() -> list[Parameter]:
    return [
        Parameter("refiner", "str", REFINERS[0],
                  "template: offline; openai: an endpoint from the environment; local: a chat model run here",
                  choices=REFINERS),
        Parameter("model", "str", None, "LLM model name (openai) or model folder / cached id (local)"),
        Parameter("n", "int", 1, "rewrites per source prompt", minimum=1),
        Parameter("seed", "int", DEFAULT_SAMPLING_SEED, "LLM sampling seed when n > 1 (rewrite k: seed + k)"),
        Parameter("prompt_ids", "ids", None, "prompts to refine (default: every interrogator and manual prompt)"),
        Parameter("timeout_s", "float", DEFAULT_TIMEOUT_S, "seconds to wait for each answer (openai)", minimum=0.1),
        Parameter("retries", "int", DEFAULT_MAX_RETRIES, "retries after a timeout, 429 or 5xx (openai)", minimum=0),
    ]


def _make_refiner(ws, params: dict, device: str = "cpu"):
    extra = {"timeout_s": params["timeout_s"], "max_retries": params["retries"]} if params["refiner"] == "openai" else {}
    return make_refiner(params["refiner"], ws, model=params["model"], device=device, **extra)


def _check_refine(params: dict) -> None:
    if params["refiner"] == "template":
        _make_refiner(None, params)  # refuses a model for the template refiner


def _run_refine(ws, params: dict, context) -> dict:
    """``cpdm prompts refine``: rewrite prompts so they elicit close imitation."""
    refiner = _make_refiner(ws, params, context.device)
    report = refine_prompts(ws, refiner, params["prompt_ids"], n=params["n"], seed=params["seed"])
    context.log(report.summary())
    return {"added": len(report.added), "skipped": len(report.skipped), "prompt_ids": report.added}


KIND = parameterised_kind(
    "refine", "rewrite prompts to elicit close imitation",
    _refine_parameters, _run_refine, extra_check=_check_refine,
)
