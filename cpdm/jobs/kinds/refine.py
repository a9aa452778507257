"""The refine kind: ``cpdm prompts refine`` as a job (prompts rewritten to elicit close imitation)."""

from __future__ import annotations

from cpdm.jobs.parameters import Parameter
from cpdm.jobs.registry import parameterised_kind


def _refine_parameters() -> list[Parameter]:
    from cpdm.curation.refine import DEFAULT_MAX_RETRIES, DEFAULT_TIMEOUT_S, REFINERS

    return [
        Parameter("refiner", "str", REFINERS[0], "template: offline; openai: an endpoint from the environment",
                  choices=REFINERS),
        Parameter("model", "str", None, "LLM model name (openai refiner)"),
        Parameter("prompt_ids", "ids", None, "prompts to refine (default: every interrogator and manual prompt)"),
        Parameter("timeout_s", "float", DEFAULT_TIMEOUT_S, "seconds to wait for each answer (openai)", minimum=0.1),
        Parameter("retries", "int", DEFAULT_MAX_RETRIES, "retries after a timeout, 429 or 5xx (openai)", minimum=0),
    ]


def _make_refiner(ws, params: dict):
    from cpdm.curation.refine import make_refiner

    extra = {"timeout_s": params["timeout_s"], "max_retries": params["retries"]} if params["refiner"] == "openai" else {}
    return make_refiner(params["refiner"], ws, model=params["model"], **extra)


def _check_refine(params: dict) -> None:
    if params["refiner"] == "template":
        _make_refiner(None, params)  # refuses a model for the template refiner


def _run_refine(ws, params: dict, context) -> dict:
    """``cpdm prompts refine``: rewrite prompts so they elicit close imitation."""
    from cpdm.curation.refine import refine_prompts

    report = refine_prompts(ws, _make_refiner(ws, params), params["prompt_ids"])
    context.log(report.summary())
    return {"added": len(report.added), "skipped": len(report.skipped), "prompt_ids": report.added}


KIND = parameterised_kind(
    "refine", "rewrite prompts to elicit close imitation",
    _refine_parameters, _run_refine, extra_check=_check_refine,
)
