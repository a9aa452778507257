"""The analyze kind: ``cpdm analyze`` as a job (a campaign's analysis report)."""

from __future__ import annotations

from pathlib import Path

from cpdm.jobs.kinds import json_number, log_notes
from cpdm.jobs.parameters import Parameter
from cpdm.jobs.registry import parameterised_kind


def _analyze_parameters() -> list[Parameter]:
    from cpdm.analysis.agreement import LEVELS
    from cpdm.analysis.campaign_report import AnalysisOptions

    defaults = AnalysisOptions()
    return [
        Parameter("campaign", "str", None, "campaign name", required=True),
        Parameter("group", "str", None, "rater group (default: artists, lay and all; calibration on artists)",
                  choices=("artists", "lay", "all")),
        Parameter("target", "str", defaults.target, "protocol question the metric is compared with"),
        Parameter("level", "str", defaults.level, "level of measurement for Krippendorff's alpha", choices=LEVELS),
        Parameter("include_flagged", "bool", defaults.include_flagged, "keep ratings of flagged raters"),
        Parameter("exclude_simulated", "bool", not defaults.include_simulated, "leave out simulated raters"),
        Parameter("zscore", "bool", defaults.zscore, "z-score each rater's ratings before averaging per pair"),
        Parameter("semantic", "str", defaults.semantic, "semantic backbone of the scores, as stored"),
        Parameter("style", "str", defaults.style, "style backbone of the scores, as stored"),
        Parameter("n_boot", "int", defaults.n_boot, "bootstrap resamples for the 95% intervals", minimum=0,
                  maximum=10_000),
        Parameter("resample", "str", defaults.resample, "what the bootstrap resamples", choices=("anchors", "pairs")),
        Parameter("folds", "int", defaults.folds, "cross-validation folds (grouped by anchor)", minimum=2, maximum=50),
        Parameter("step", "float", defaults.step, "step of the w grid over [0, 1]", minimum=0.001, maximum=0.05),
        Parameter("seed", "int", defaults.seed, "seed for resampling and folds"),
        Parameter("out", "path", None, "report folder (default: WORKSPACE/exports/report-CAMPAIGN)"),
    ]


def _run_analyze(ws, params: dict, context) -> dict:
    """``cpdm analyze``: the campaign's report folder (agreement, correlation, calibration)."""
    from cpdm.analysis.campaign_report import AnalysisOptions, default_report_dir, run_analysis, write_report

    group = params["group"]
    options = AnalysisOptions(
        groups=(group,) if group else AnalysisOptions.groups, strict_groups=group is not None,
        calibration_group=group or AnalysisOptions.calibration_group, include_flagged=params["include_flagged"],
        include_simulated=not params["exclude_simulated"], zscore=params["zscore"], semantic=params["semantic"],
        style=params["style"], n_boot=params["n_boot"], folds=params["folds"], step=params["step"],
        seed=params["seed"], resample=params["resample"], level=params["level"], target=params["target"],
    )
    analysis = run_analysis(ws, params["campaign"], options)
    out_dir = Path(params["out"]) if params["out"] else default_report_dir(ws, params["campaign"])
    written = write_report(analysis, out_dir)
    log_notes(context, analysis.notes)
    result = {"report_dir": str(out_dir), "files": len(written), "calibrated_w": None}
    if analysis.calibration is not None:
        result["calibrated_w"] = json_number(analysis.calibration.chosen_w)
    return result


KIND = parameterised_kind(
    "analyze", "write a campaign's analysis report",
    _analyze_parameters, _run_analyze,
)
