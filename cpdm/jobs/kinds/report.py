"""The report kind: ``cpdm unlearning report`` as a job (CM on the erased concept and on the retain set)."""

from __future__ import annotations

from pathlib import Path

from cpdm.analysis.unlearning import ReportSettings, format_report, unlearning_report
from cpdm.compute_device import check_device
from cpdm.diffusion.settings import BASELINE_VARIANT, PAPER_GUIDANCE, PAPER_SEED, PAPER_STEPS
from cpdm.errors import CpdmError
from cpdm.jobs.kinds import json_number
from cpdm.jobs.parameters import OFFLINE_TINY, Parameter
from cpdm.jobs.registry import parameterised_kind


def _report_parameters() -> list[Parameter]:
    return [
        Parameter("variant", "str", None, "the unlearned variant", required=True),
        Parameter("vs", "str", BASELINE_VARIANT, "the variant to compare with"),
        Parameter("seeds", "ids", [PAPER_SEED], "generation seeds", minimum=0),
        Parameter("steps", "int", PAPER_STEPS, "sampling steps", minimum=1),
        Parameter("guidance", "float", PAPER_GUIDANCE, "classifier-free guidance scale", minimum=0),
        Parameter("size", "int", None, "image side in pixels, a multiple of 8 (default: the model's)", minimum=8),
        Parameter("max_prompts", "int", None, "at most this many prompts per set", minimum=1),
        Parameter("max_retain_prompts", "int", None, "at most this many prompts in the retain set", minimum=1),
        Parameter("target_artists", "strings", [], "the concept's anchors are these artists' (default: the anchors "
                  "whose artist or title is the concept)"),
        Parameter("target_anchors", "ids", [], "the concept's anchors are these (anchor ids)"),
        Parameter("semantic", "str", None, "semantic backbone (default: the scoring default)"),
        Parameter("style", "str", None, "style backbone (default: the scoring default)"),
        Parameter("out", "path", None, "CSV file of the table (default: WORKSPACE/exports/unlearning-NAME-HASH.csv)"),
        OFFLINE_TINY,
    ]


def _check_report(params: dict) -> None:
    if not params["seeds"]:
        raise CpdmError("report job: give at least one seed")
    if params["size"] is not None and params["size"] % 8:
        raise CpdmError(f"report job: size must be a multiple of 8, got {params['size']}")


def report_path(ws, variant: str) -> Path:
    """Where a report job writes a variant's table unless told otherwise (named like the variant's folder)."""
    from cpdm.unlearning.runner import variant_dir

    return ws.exports_dir / f"unlearning-{variant_dir(ws.root, variant).name}.csv"


def _run_report(ws, params: dict, context) -> dict:
    """``cpdm unlearning report``: CM on the target concept and on the retain set, written as CSV."""
    settings = ReportSettings(seeds=tuple(params["seeds"]), steps=params["steps"], guidance=params["guidance"],
                              size=params["size"], max_prompts=params["max_prompts"],
                              max_retain_prompts=params["max_retain_prompts"],
                              device=check_device(context.device), offline_tiny=params["offline_tiny"],
                              semantic=params["semantic"], style=params["style"],
                              target_artists=tuple(params["target_artists"]),
                              target_anchors=tuple(params["target_anchors"]))
    table = unlearning_report(ws, params["variant"], params["vs"], settings)
    path = Path(params["out"]) if params["out"] else report_path(ws, params["variant"])
    path.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(path, index=False)
    context.log(format_report(table))
    rows = [{key: json_number(value) if isinstance(value, float) else value for key, value in row.items()}
            for row in table.to_dict(orient="records")]
    return {"variant": params["variant"], "vs": params["vs"], "report_path": str(path), "rows": rows}


KIND = parameterised_kind(
    "report", "unlearning report: CM on the concept and the retain set",
    _report_parameters, _run_report, wants_gpu=True, extra_check=_check_report,
)
