"""The interrogate kind: ``cpdm prompts interrogate`` as a job (a first prompt for each anchor)."""

from __future__ import annotations

from cpdm.curation.interrogate import DEFAULT_INTERROGATOR_CLIP, DEFAULT_MODE, MODES, TOP_FLAVORS, interrogate_anchors
from cpdm.jobs.kinds import log_notes
from cpdm.jobs.parameters import OFFLINE_TINY, Parameter
from cpdm.jobs.registry import parameterised_kind


def _interrogate_parameters() -> list[Parameter]:
    return [
        Parameter("anchor_ids", "ids", None, "anchors to interrogate (default: all)"),
        Parameter("mode", "str", DEFAULT_MODE, "best, fast, classic, negative (clip-interrogator's) or metadata",
                  choices=MODES),
        Parameter("model", "str", DEFAULT_INTERROGATOR_CLIP, "open_clip MODEL/TAG ranking the terms"),
        Parameter("caption_model", "str", None, "BLIP caption weights (default: the large BLIP when cached)"),
        Parameter("banks_dir", "path", None, "folder with the term banks (default: clip-interrogator's)"),
        Parameter("top_flavors", "int", TOP_FLAVORS, "flavour terms in each metadata prompt", minimum=0),
        OFFLINE_TINY,
    ]


def _run_interrogate(ws, params: dict, context) -> dict:
    """``cpdm prompts interrogate``: a first prompt for each anchor from CLIP-ranked term banks."""
    report = interrogate_anchors(ws, params["anchor_ids"], mode=params["mode"], model=params["model"],
                                 offline_tiny=params["offline_tiny"],
                                 device=context.device, caption_model=params["caption_model"],
                                 banks_dir=params["banks_dir"], top_flavors=params["top_flavors"])
    log_notes(context, report.notes)
    context.log(report.summary())
    return {"added": len(report.added), "skipped": len(report.skipped), "prompt_ids": report.added}


KIND = parameterised_kind(
    "interrogate", "write a first prompt for each anchor (CLIP interrogation)",
    _interrogate_parameters, _run_interrogate, wants_gpu=True,
)
