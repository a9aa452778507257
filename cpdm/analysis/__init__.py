"""Analysis of ratings and comparative (2AFC) judgments: agreement, metric–human correlation and 2AFC
scores, calibration of w, Bradley–Terry strengths, per-variant benchmark.

Pure functions on DataFrames live in the submodules; :mod:`cpdm.analysis.campaign_report`
ties them to a workspace (loading in :mod:`~cpdm.analysis.campaign_data`,
Markdown in :mod:`~cpdm.analysis.report_markdown`, files in
:mod:`~cpdm.analysis.report_files`; 2AFC campaigns in
:mod:`~cpdm.analysis.two_afc_report`). The names most callers need are re-exported here,
each loaded on first use: importing one submodule (the unlearning report
needs only :mod:`cpdm.analysis.resampling`) does not load the others, nor
what they import (krippendorff, matplotlib).
"""

import importlib

# Each re-exported name and the submodule that defines it.
_EXPORTS = {
    "AlphaResult": "agreement", "agreement_table": "agreement", "krippendorff_alpha": "agreement",
    "CalibrationResult": "calibration", "calibrate": "calibration", "grouped_folds": "calibration",
    "weight_grid": "calibration",
    "correlate": "correlation", "correlation_table": "correlation", "split_half_ceiling": "correlation",
    "GROUPS": "data", "export_frame": "data", "human_scores": "data", "load_ratings": "data", "write_table": "data",
    "Analysis": "campaign_report", "AnalysisOptions": "campaign_report", "calibrate_campaign": "campaign_report",
    "campaign_fingerprint": "campaign_report", "record_calibration": "campaign_report",
    "run_analysis": "campaign_report", "save_weights": "campaign_report", "write_report": "campaign_report",
    "variant_benchmark": "variants",
    "load_judgments": "judgments", "triplet_choices": "judgments",
    "two_afc_scores": "two_afc", "score_table": "two_afc", "split_half_agreement": "two_afc",
    "calibrate_2afc": "two_afc_calibration", "compare_groups_2afc": "two_afc_calibration",
    "variant_strengths": "bradley_terry", "generation_strengths": "bradley_terry",
    "TwoAfcAnalysis": "two_afc_report", "run_2afc_analysis": "two_afc_report",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
