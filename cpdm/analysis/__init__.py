"""Analysis of ratings: agreement, metric–human correlation, calibration of w, per-variant benchmark.

Pure functions on DataFrames live in the submodules; :mod:`cpdm.analysis.campaign_report`
ties them to a workspace. The names most callers need are re-exported here,
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
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
