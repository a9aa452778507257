"""Calibrating the semantic/style weight w of CM_w against human judgement.

``D_w = m_sem^w · m_style^(1−w)`` and ``CM_w = 1 − min(D_w / x_ref(w), 1)²``,
with ``x_ref(w)`` the median of D_w over reference (mismatched) pairs. The
clip at 1 makes every pair beyond the reference scale tie at CM = 0, so the
ranking of CM_w is not the ranking of D_w; calibration therefore scores CM_w
itself, with x_ref, rather than ranking raw distances.

Procedure (grouped K-fold cross-validation, no anchor in both fit and test):

1. Split anchors into K folds, balancing the number of pairs per fold.
2. For each fold: x_ref(w) comes from the reference distances, or, when
   there are none, from the fit folds' own pairs (so the test fold never
   informs its scale). On the fit folds pick the w on the grid with the
   highest Spearman ρ against the human score (ties: the w closest to the
   paper's 0.5). Score the test fold's pairs with that w.
3. The out-of-fold ρ is the Spearman correlation of the pooled out-of-fold
   CM values with the human score; its 95% interval is a percentile
   bootstrap over anchors (pairs of one anchor are resampled together,
   since they share the anchor image).
4. The same pooled out-of-fold ρ is reported for every fixed w on the grid
   (the calibration curve) and in particular for w = 0.5, 1 and 0.
5. The exported w is the one with the highest ρ on all pairs (same tie
   rule); the spread of the per-fold choices is reported alongside.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from cpdm.analysis.correlation import (
    cluster_bootstrap_counts,
    percentile_interval,
    weighted_midranks,
    weighted_pearson,
)
from cpdm.errors import CpdmError

MIN_PAIRS = 10
PAPER_W = 0.5
MAX_STEP = 0.05


def weight_grid(step: float = MAX_STEP) -> np.ndarray:
    """w from 0 to 1 inclusive in steps of ``step`` (at most 0.05)."""
    if not 0 < step <= MAX_STEP:
        raise CpdmError(f"the w grid step must be in (0, {MAX_STEP}], got {step}")
    count = int(round(1 / step))
    grid = np.linspace(0.0, 1.0, count + 1)
    if not np.isclose(grid[1] - grid[0], step):
        raise CpdmError(f"the w grid step must divide 1 evenly (0.05, 0.025, 0.01, …), got {step}")
    # The named comparison points must lie on the grid.
    return np.round(grid, 10)


def distance_grid(m_sem: np.ndarray, m_style: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """D_w for every w in the grid (G × n): m_sem^w · m_style^(1−w)."""
    m_sem = np.asarray(m_sem, dtype=np.float64)
    m_style = np.asarray(m_style, dtype=np.float64)
    w = np.asarray(grid, dtype=np.float64)[:, None]
    return m_sem[None, :] ** w * m_style[None, :] ** (1 - w)


def reference_scales(reference_distances: np.ndarray) -> np.ndarray:
    """x_ref(w) per grid row: the median of D_w over reference pairs (G × n_ref → G)."""
    return np.median(reference_distances, axis=1)


def cm_from_distances(distances: np.ndarray, x_ref: np.ndarray) -> np.ndarray:
    """CM_w = 1 − min(D_w / x_ref(w), 1)² row by row (x_ref has one entry per row)."""
    x_ref = np.asarray(x_ref, dtype=np.float64).reshape(-1, 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        normalised = np.where(x_ref > 0, np.minimum(distances / np.where(x_ref > 0, x_ref, 1.0), 1.0), 1.0)
    return 1.0 - normalised**2


def spearman_rows(scores: np.ndarray, human: np.ndarray) -> np.ndarray:
    """Spearman ρ of each row of ``scores`` (G × n) with ``human`` (n)."""
    ones = np.ones((1, scores.shape[1]))
    rank_human, _ = weighted_midranks(np.asarray(human, dtype=np.float64), ones)
    result = np.empty(scores.shape[0])
    for row in range(scores.shape[0]):
        rank_row, _ = weighted_midranks(scores[row], ones)
        result[row] = weighted_pearson(rank_row, rank_human, ones)[0]
    return result


def best_w(grid: np.ndarray, rho: np.ndarray) -> float:
    """The grid w with the highest ρ; among equals (to 1e-12) the one closest to the paper's 0.5."""
    rho = np.where(np.isfinite(rho), rho, -np.inf)
    if not np.isfinite(rho).any():
        return PAPER_W
    best = np.flatnonzero(rho >= rho.max() - 1e-12)
    return float(grid[best[np.argmin(np.abs(grid[best] - PAPER_W))]])


def grouped_folds(anchors: np.ndarray, n_folds: int = 5, seed: int = 0) -> np.ndarray:
    """A fold number per pair such that all pairs of one anchor share a fold.

    Anchors are shuffled (seeded), then placed largest first into the fold
    with the fewest pairs so far, which keeps folds of similar size.
    """
    anchors = np.asarray(anchors)
    unique, index, sizes = np.unique(anchors, return_inverse=True, return_counts=True)
    if len(unique) < n_folds:
        raise CpdmError(
            f"cross-validation by anchor needs at least {n_folds} anchors with scored, rated pairs; got {len(unique)}"
        )
    rng = np.random.default_rng(seed)
    shuffled = rng.permutation(len(unique))
    by_size = shuffled[np.argsort(-sizes[shuffled], kind="stable")]
    fold_of_anchor = np.empty(len(unique), dtype=np.int64)
    fold_sizes = np.zeros(n_folds, dtype=np.int64)
    for anchor in by_size:
        fold = int(np.argmin(fold_sizes))
        fold_of_anchor[anchor] = fold
        fold_sizes[fold] += sizes[anchor]
    return fold_of_anchor[index]


@dataclass
class CalibrationResult:
    """What calibration found; ``summary`` and ``curve`` are the tables reports show."""

    grid: np.ndarray
    chosen_w: float
    x_ref: float                     # x_ref at chosen_w
    x_ref_source: str                # "reference pairs" or "campaign pairs"
    curve: pd.DataFrame              # w, rho_all, rho_oof, ci_low, ci_high, x_ref
    summary: pd.DataFrame            # setting, w, rho, ci_low, ci_high
    fold_w: list[float]
    fold_rho: list[float]
    n_pairs: int
    n_anchors: int
    n_folds: int
    n_boot: int
    stats: dict = field(default_factory=dict)
    out_of_fold: pd.Series | None = None  # calibrated CM_w per pair, each from the fold that did not fit it


def _fold_scales(distances, folds, fold, reference_scale_grid):
    """x_ref(w) for one fold: from reference pairs when known, else the fit folds' own pairs."""
    if reference_scale_grid is not None:
        return reference_scale_grid
    return np.median(distances[:, folds != fold], axis=1)


def calibrate(
    pairs: pd.DataFrame,
    reference: pd.DataFrame | None = None,
    step: float = MAX_STEP,
    n_folds: int = 5,
    n_boot: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
) -> CalibrationResult:
    """Choose w for CM_w from ``pairs`` (columns anchor, m_sem, m_style, human).

    ``reference`` holds m_sem, m_style of mismatched pairs for x_ref(w); when
    it is None or empty, x_ref falls back to the median over the campaign's
    own pairs (fit folds only inside cross-validation), and the result says so.
    """
    data = pairs.dropna(subset=["m_sem", "m_style", "human"])
    if len(data) < MIN_PAIRS:
        raise CpdmError(f"calibration needs at least {MIN_PAIRS} pairs that are both scored and rated; got {len(data)}")
    if np.ptp(data["human"].to_numpy()) == 0:
        raise CpdmError("every pair has the same human score; there is nothing to calibrate against")
    grid = weight_grid(step)
    anchors = data["anchor"].to_numpy()
    folds = grouped_folds(anchors, n_folds, seed)
    human = data["human"].to_numpy(dtype=np.float64)
    distances = distance_grid(data["m_sem"].to_numpy(), data["m_style"].to_numpy(), grid)

    if reference is not None and len(reference) > 0:
        reference_grid = reference_scales(distance_grid(reference["m_sem"].to_numpy(), reference["m_style"].to_numpy(), grid))
        source = "reference pairs"
    else:
        reference_grid = None
        source = "campaign pairs"

    # Out-of-fold CM for every w, and the per-fold choice of w.
    cm_oof = np.empty_like(distances)
    calibrated = np.empty(len(data))
    fold_w, fold_rho = [], []
    for fold in range(n_folds):
        test = folds == fold
        fit = ~test
        scales = _fold_scales(distances, folds, fold, reference_grid)
        cm_fit = cm_from_distances(distances[:, fit], scales)
        chosen = best_w(grid, spearman_rows(cm_fit, human[fit]))
        cm_test = cm_from_distances(distances[:, test], scales)
        cm_oof[:, test] = cm_test
        row = int(np.argmin(np.abs(grid - chosen)))
        calibrated[test] = cm_test[row]
        fold_w.append(chosen)
        fold_rho.append(float(spearman_rows(cm_test[row : row + 1], human[test])[0]) if test.sum() >= 3 else float("nan"))

    # Choice on all pairs (what is exported).
    scales_all = reference_grid if reference_grid is not None else np.median(distances, axis=1)
    rho_all = spearman_rows(cm_from_distances(distances, scales_all), human)
    chosen_w = best_w(grid, rho_all)
    chosen_row = int(np.argmin(np.abs(grid - chosen_w)))

    # Bootstrap over anchors: every curve point and the calibrated predictions share the resamples.
    rng = np.random.default_rng(seed + 1)
    weights = cluster_bootstrap_counts(anchors, n_boot, rng) if n_boot > 0 else None
    curve_rows, boot = [], {}
    rank_human = weighted_midranks(human, weights)[0] if weights is not None else None
    rho_oof = spearman_rows(cm_oof, human)
    for row, w in enumerate(grid):
        low = high = float("nan")
        if weights is not None:
            rank_cm = weighted_midranks(cm_oof[row], weights)[0]
            boot[row] = weighted_pearson(rank_cm, rank_human, weights)
            low, high = percentile_interval(boot[row], confidence)
        curve_rows.append(
            {"w": float(w), "rho_all": float(rho_all[row]), "rho_oof": float(rho_oof[row]), "ci_low": low,
             "ci_high": high, "x_ref": float(scales_all[row])}
        )
    curve = pd.DataFrame(curve_rows)

    rho_calibrated = float(spearman_rows(calibrated[None, :], human)[0])
    low = high = float("nan")
    if weights is not None:
        low, high = percentile_interval(
            weighted_pearson(weighted_midranks(calibrated, weights)[0], rank_human, weights), confidence
        )
    summary_rows = [
        {"setting": "calibrated (out-of-fold)", "w": chosen_w, "rho": rho_calibrated, "ci_low": low, "ci_high": high}
    ]
    for label, w in (("paper w=0.5", 0.5), ("semantic only w=1", 1.0), ("style only w=0", 0.0)):
        row = int(np.argmin(np.abs(grid - w)))
        point = curve.iloc[row]
        summary_rows.append(
            {"setting": label, "w": w, "rho": point["rho_oof"], "ci_low": point["ci_low"], "ci_high": point["ci_high"]}
        )
    summary = pd.DataFrame(summary_rows)

    stats = {
        "spearman_oof": rho_calibrated,
        "spearman_oof_ci": [low, high],
        "spearman_all_at_w": float(rho_all[chosen_row]),
        "spearman_fold_mean": float(np.nanmean(fold_rho)),
        "fold_w": fold_w,
        "baselines": {
            row["setting"]: {"w": row["w"], "spearman_oof": row["rho"], "ci": [row["ci_low"], row["ci_high"]]}
            for row in summary_rows[1:]
        },
        "folds": n_folds,
        "grid_step": step,
        "bootstrap": f"{n_boot} resamples of anchors, percentile {int(confidence * 100)}% interval",
        "x_ref_source": source,
        "selection": "w maximising Spearman on all pairs; out-of-fold figures from grouped-by-anchor CV",
    }
    return CalibrationResult(
        grid=grid,
        chosen_w=chosen_w,
        x_ref=float(scales_all[chosen_row]),
        x_ref_source=source,
        curve=curve,
        summary=summary,
        fold_w=fold_w,
        fold_rho=fold_rho,
        n_pairs=int(len(data)),
        n_anchors=int(len(np.unique(anchors))),
        n_folds=n_folds,
        n_boot=n_boot,
        stats=stats,
        out_of_fold=pd.Series(calibrated, index=data.index),
    )
