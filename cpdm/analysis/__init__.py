"""Analysis of ratings: agreement, metric–human correlation, calibration of w, per-variant benchmark.

Pure functions on DataFrames live in the submodules; :mod:`cpdm.analysis.campaign_report`
ties them to a workspace. The names most callers need are re-exported here.
"""

from cpdm.analysis.agreement import AlphaResult, agreement_table, krippendorff_alpha
from cpdm.analysis.calibration import CalibrationResult, calibrate, grouped_folds, weight_grid
from cpdm.analysis.correlation import correlate, correlation_table, split_half_ceiling
from cpdm.analysis.data import GROUPS, export_frame, human_scores, load_ratings, write_table
from cpdm.analysis.campaign_report import (
    Analysis,
    AnalysisOptions,
    calibrate_campaign,
    campaign_fingerprint,
    record_calibration,
    run_analysis,
    save_weights,
    write_report,
)
from cpdm.analysis.variants import variant_benchmark

__all__ = [
    "AlphaResult", "Analysis", "AnalysisOptions", "CalibrationResult", "GROUPS", "agreement_table",
    "calibrate", "calibrate_campaign", "campaign_fingerprint", "record_calibration", "correlate", "correlation_table", "export_frame", "grouped_folds",
    "human_scores", "krippendorff_alpha", "load_ratings", "run_analysis", "save_weights", "split_half_ceiling",
    "variant_benchmark", "weight_grid", "write_report", "write_table",
]
