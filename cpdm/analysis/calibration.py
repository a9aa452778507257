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
   informs its scale). On the fit folds choose w: the w on the grid with
   the highest Spearman ρ against the human score (ties: the w closest to
   the paper's 0.5), refined to the vertex of a parabola fitted to ρ(w)
   around it (see :func:`refine_w_columns`). Score the test fold's pairs
   with that w.
3. The out-of-fold ρ is the Spearman correlation of the pooled out-of-fold
   CM values with the human score; its 95% interval is a bootstrap over
   anchors (pairs of one anchor are resampled together, since they share the
   anchor image; see :mod:`cpdm.analysis.resampling` for the interval).
4. The same pooled out-of-fold ρ is reported for every fixed w on the grid
   (the calibration curve) and in particular for w = 0.5, 1 and 0.
5. The exported w is chosen the same way on all pairs; the spread of the
   per-fold choices is reported alongside.
6. The interval for w bootstraps the whole choice: on every resample of
   anchors, ρ(w) on all pairs is recomputed for every w on the grid
   (x_ref too, when it comes from the campaign's own pairs) and w chosen
   as above; the interval is made from those choices. The same resamples give
   the band of the ρ(w) curve on all pairs.
7. Beside w, ``w_std``: the same weighting read on the log distances
   standardised by their spread over the reference pairs (the set behind
   x_ref; the campaign's own pairs when there is none), see
   :class:`cpdm.metric.LogSpreads`. The conversion is increasing, so the
   interval of w_std is the interval of w converted end by end.

Why one file of this length: it is the one procedure above, from the folds
to the bootstrap of w; its steps share the per-w arrays and the choice of w,
and read best in the order they run.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from cpdm.analysis.correlation import resampled_spearman_rows, weighted_midranks, weighted_pearson
from cpdm.analysis.resampling import DEFAULT_RESAMPLE, Resamples, make_resamples
from cpdm.errors import CpdmError
from cpdm.metric import LogSpreads, MetricError

MIN_PAIRS = 10
PAPER_W = 0.5
MAX_STEP = 0.05
# The chosen w is refined from the grid by a parabola over this window on either side (see refine_w_columns).
REFINE_HALF_WIDTH = 0.1
W_DECIMALS = 3


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
    """The chosen w for one ρ(w) curve on the grid: see :func:`best_w_columns`."""
    return float(best_w_columns(grid, np.asarray(rho, dtype=np.float64)[:, None])[0])


def best_w_columns(grid: np.ndarray, rho: np.ndarray) -> np.ndarray:
    """The chosen w for every column of ``rho`` (G × B) at once: the grid's best w, refined between grid points.

    First the grid w with the highest ρ (among equals, to 1e-12, the one
    closest to the paper's 0.5; a column with no finite ρ gives 0.5), then
    the vertex of the parabola fitted to ρ within ``REFINE_HALF_WIDTH`` of it
    (see :func:`refine_w_columns`), rounded to ``W_DECIMALS``.
    """
    return np.round(refine_w_columns(grid, rho, grid_best_w_columns(grid, rho)), W_DECIMALS)


def grid_best_w_columns(grid: np.ndarray, rho: np.ndarray) -> np.ndarray:
    """The grid w with the highest ρ in each column of ``rho`` (G × B); ties go to the w closest to 0.5."""
    rho = np.where(np.isfinite(rho), rho, -np.inf)
    top = rho.max(axis=0)
    near = rho >= top - 1e-12
    # Among the best, the smallest distance to the paper's w wins (argmin finds the first, lowest w on a tie).
    distance = np.where(near, np.abs(grid - PAPER_W)[:, None], np.inf)
    chosen = np.asarray(grid)[np.argmin(distance, axis=0)]
    return np.where(np.isfinite(top), chosen, PAPER_W)


def refine_w_columns(grid: np.ndarray, rho: np.ndarray, grid_w: np.ndarray) -> np.ndarray:
    """The vertex of the least-squares parabola through ρ(w) at the grid points within ``REFINE_HALF_WIDTH``.

    The window is centred on each column's ``grid_w``. A w that only takes
    grid values makes its bootstrap distribution lumpy: two groups with equal
    weights then mostly choose the same grid point, and the interval of their
    difference ends on 0 far more often than its nominal level says. The
    vertex moves continuously with the data, and a fit over a window of fixed
    width (not just the neighbours) smooths the small steps that ranks make in
    ρ(w), so the bootstrap's spread matches the estimate's. The vertex stays
    inside the window; where the fit is not concave (a flat curve, a maximum
    at an end of the grid) the grid w stays.
    """
    grid = np.asarray(grid, dtype=np.float64)
    rho = np.asarray(rho, dtype=np.float64)
    grid_w = np.asarray(grid_w, dtype=np.float64)
    # Offsets from each column's grid w, scaled to [-1, 1] inside the window (well-conditioned normal equations).
    offset = (grid[:, None] - grid_w[None, :]) / REFINE_HALF_WIDTH
    inside = (np.abs(offset) <= 1 + 1e-9) & np.isfinite(rho)
    mask = inside.astype(np.float64)
    values = np.where(inside, rho, 0.0)
    power_sums = [(mask * offset**k).sum(axis=0) for k in range(5)]
    moments = np.stack([(values * offset**k).sum(axis=0) for k in range(3)], axis=-1)       # B × 3
    normal = np.stack([np.stack(power_sums[row : row + 3], axis=-1) for row in range(3)], axis=-2)  # B × 3 × 3
    fitted = inside.sum(axis=0) >= 3
    coefficients = np.zeros_like(moments)
    if fitted.any():
        coefficients[fitted] = np.linalg.solve(normal[fitted], moments[fitted][..., None])[..., 0]
    slope, curvature = coefficients[:, 1], coefficients[:, 2]
    concave = fitted & (curvature < 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        vertex = np.where(concave, -slope / (2 * np.where(concave, curvature, -1.0)), 0.0)
    low = np.where(inside, offset, np.inf).min(axis=0)
    high = np.where(inside, offset, -np.inf).max(axis=0)
    vertex = np.clip(vertex, np.where(concave, low, 0.0), np.where(concave, high, 0.0))
    return grid_w + vertex * REFINE_HALF_WIDTH


def weighted_median(values: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """The median of ``values`` in each weighted resample (B × n counts), as np.median of the resampled data."""
    order = np.argsort(values, kind="mergesort")
    sorted_values = values[order]
    cumulative = np.cumsum(weights[:, order], axis=1)
    total = cumulative[:, -1]
    low = ((cumulative <= np.floor((total - 1) / 2)[:, None]).sum(axis=1))
    high = ((cumulative <= np.floor(total / 2)[:, None]).sum(axis=1))
    last = len(values) - 1
    return (sorted_values[np.minimum(low, last)] + sorted_values[np.minimum(high, last)]) / 2


def clipped_cm_ranks(distances: np.ndarray, x_ref: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Mid-ranks of CM_w in each resample when x_ref differs between resamples (one D_w row, B scales).

    CM_w falls as D_w grows and is 0 (tied, lowest) from D_w ≥ x_ref on; so an
    unclipped pair's rank is its rank by descending distance, and every
    clipped pair shares the mid-rank of the clipped block.
    """
    rank_descending, _ = weighted_midranks(-distances, weights)
    clipped = distances[None, :] >= x_ref[:, None]
    clipped_total = (weights * clipped).sum(axis=1)
    return np.where(clipped, ((clipped_total + 1) / 2)[:, None], rank_descending)


@dataclass
class ChoiceBootstrap:
    """ρ(w) on all pairs and the choice of w, on the data and on every resample of anchors."""

    rho: np.ndarray          # G
    scales: np.ndarray       # x_ref(w), G
    chosen_w: float
    rho_boot: np.ndarray     # G × B
    w_boot: np.ndarray       # B


def choice_bootstrap(grid, distances, human, reference_grid, resamples: Resamples | None) -> ChoiceBootstrap:
    """The choice of w on all pairs, repeated on every resample (see step 6 of the module docstring).

    ``reference_grid`` is x_ref(w) from reference pairs, or None to take it
    from the pairs themselves (then it is recomputed in each resample).
    """
    scales = reference_grid if reference_grid is not None else np.median(distances, axis=1)
    rho = spearman_rows(cm_from_distances(distances, scales), human)
    chosen = best_w(grid, rho)
    if resamples is None or resamples.n_boot == 0:
        return ChoiceBootstrap(rho, scales, chosen, np.empty((len(grid), 0)), np.empty(0))
    weights = resamples.weights
    if reference_grid is not None:
        rho_boot = resampled_spearman_rows(cm_from_distances(distances, scales), human, resamples)
    else:
        rank_human = weighted_midranks(human, weights)[0]
        rho_boot = np.empty((len(grid), len(weights)))
        for row in range(len(grid)):
            rank_cm = clipped_cm_ranks(distances[row], weighted_median(distances[row], weights), weights)
            rho_boot[row] = weighted_pearson(rank_cm, rank_human, weights)
    return ChoiceBootstrap(rho, scales, chosen, rho_boot, best_w_columns(grid, rho_boot))


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
    curve: pd.DataFrame              # w, rho_all, rho_oof, ci_low, ci_high, x_ref, all_ci_low, all_ci_high, w_std
    summary: pd.DataFrame            # setting, w, w_std, w_ci_low, w_ci_high, w_std_ci_low, w_std_ci_high, rho, …
    fold_w: list[float]
    fold_rho: list[float]
    n_pairs: int
    n_anchors: int
    n_folds: int
    n_boot: int
    w_ci: tuple[float, float] = (float("nan"), float("nan"))
    interval: str = "none"           # how every interval was made
    stats: dict = field(default_factory=dict)
    out_of_fold: pd.Series | None = None  # calibrated CM_w per pair, each from the fold that did not fit it
    spreads: LogSpreads | None = None  # the log distances' spreads behind w_std (None: undefined, see stats)
    spreads_source: str = "none"       # "reference pairs" or "campaign pairs", as x_ref_source
    # What w maximises: "spearman" (ratings: the curve's rho_* and the summary's rho columns) or "2afc"
    # (comparative judgments: score_* and score columns; see cpdm.analysis.two_afc_calibration).
    statistic: str = "spearman"

    @property
    def value_column(self) -> str:
        """The summary's column holding the statistic: rho, or score for 2AFC."""
        return "score" if self.statistic == "2afc" else "rho"

    @property
    def statistic_label(self) -> str:
        """The statistic in words, for reports."""
        return "2AFC score" if self.statistic == "2afc" else "Spearman ρ"

    @property
    def chosen_w_std(self) -> float:
        """The chosen w as a weight on standardised log distances (NaN without spreads)."""
        return float(self.spreads.w_std(self.chosen_w)) if self.spreads else float("nan")

    @property
    def w_std_ci(self) -> tuple[float, float]:
        """The interval of w converted end by end (the conversion is increasing)."""
        return w_std_interval(self.spreads, self.w_ci)

    def weight_lines(self) -> list[str]:
        """w and w_std with their intervals, and the conversion between them, in plain lines."""
        lines = [f"w = {self.chosen_w:g} [{self.w_ci[0]:.3g}, {self.w_ci[1]:.3g}] (x_ref = {self.x_ref:.4g}, "
                 f"from {self.x_ref_source})"]
        if self.spreads is None:
            reason = self.stats.get("w_std_undefined") or "no spreads of the log distances"
            return lines + [f"w_std undefined: {reason}"]
        low, high = self.w_std_ci
        lines.append(f"w_std = {self.chosen_w_std:.3f} [{low:.3f}, {high:.3f}]: the weight on the log distances "
                     f"standardised over the {self.spreads_source} (0.5 = content and style count equally)")
        lines.append(f"conversion: {self.spreads.describe()}")
        return lines


def w_std_interval(spreads: LogSpreads | None, w_interval: tuple[float, float]) -> tuple[float, float]:
    """An interval of w as an interval of w_std; NaN ends without spreads."""
    if spreads is None:
        return (float("nan"), float("nan"))
    return tuple(float(spreads.w_std(end)) if np.isfinite(end) else float("nan") for end in w_interval)


def log_spreads_of(reference: pd.DataFrame | None, pairs: pd.DataFrame) -> tuple[LogSpreads | None, str, str | None]:
    """(spreads, where from, why undefined): over the reference pairs, else over the campaign's own pairs.

    The same fallback as x_ref's, so w_std and CM_w's scale rest on one set.
    """
    source_frame, source = (reference, "reference pairs") if reference is not None and len(reference) else \
        (pairs, "campaign pairs")
    try:
        return LogSpreads.of(source_frame["m_sem"].to_numpy(), source_frame["m_style"].to_numpy()), source, None
    except MetricError as exc:
        return None, source, str(exc)


def _fold_scales(distances, folds, fold, reference_scale_grid):
    """x_ref(w) for one fold: from reference pairs when known, else the fit folds' own pairs."""
    if reference_scale_grid is not None:
        return reference_scale_grid
    return np.median(distances[:, folds != fold], axis=1)


def reference_grid_of(reference: pd.DataFrame | None, grid: np.ndarray) -> np.ndarray | None:
    """x_ref(w) from reference (mismatched) pairs, or None when there are none."""
    if reference is None or len(reference) == 0:
        return None
    return reference_scales(distance_grid(reference["m_sem"].to_numpy(), reference["m_style"].to_numpy(), grid))


def check_calibration_pairs(data: pd.DataFrame) -> None:
    """Refuse data calibration cannot use: too few pairs, or one human score for all."""
    if len(data) < MIN_PAIRS:
        raise CpdmError(f"calibration needs at least {MIN_PAIRS} pairs that are both scored and rated; got {len(data)}")
    if np.ptp(data["human"].to_numpy()) == 0:
        raise CpdmError("every pair has the same human score; there is nothing to calibrate against")


def cm_at_w(w: float, m_sem, m_style, scale_m_sem, scale_m_style) -> tuple[np.ndarray, float]:
    """CM_w of pairs at one w (between grid points too), and x_ref(w): the median of D_w over the scale's pairs."""
    x_ref = float(reference_scales(distance_grid(scale_m_sem, scale_m_style, [w]))[0])
    return cm_from_distances(distance_grid(m_sem, m_style, [w]), [x_ref])[0], x_ref


def _cross_validate(grid, distances, human, folds, n_folds, reference_grid, m_sem, m_style, reference):
    """Out-of-fold CM for every w (G × n), the calibrated out-of-fold CM (n), and each fold's w and ρ.

    ``m_sem``/``m_style`` are the pairs' distances and ``reference`` the
    reference pairs' (None when x_ref comes from the fit folds): the
    calibrated CM is scored at each fold's chosen w, which lies between grid points.
    """
    cm_oof = np.empty_like(distances)
    calibrated = np.empty(distances.shape[1])
    fold_w, fold_rho = [], []
    for fold in range(n_folds):
        test = folds == fold
        fit = ~test
        scales = _fold_scales(distances, folds, fold, reference_grid)
        chosen = best_w(grid, spearman_rows(cm_from_distances(distances[:, fit], scales), human[fit]))
        cm_oof[:, test] = cm_from_distances(distances[:, test], scales)
        scale_pairs = reference if reference is not None else (m_sem[fit], m_style[fit])
        calibrated[test] = cm_at_w(chosen, m_sem[test], m_style[test], *scale_pairs)[0]
        fold_w.append(chosen)
        fold_rho.append(float(spearman_rows(calibrated[None, test], human[test])[0]) if test.sum() >= 3
                        else float("nan"))
    return cm_oof, calibrated, fold_w, fold_rho


def calibrate(
    pairs: pd.DataFrame,
    reference: pd.DataFrame | None = None,
    step: float = MAX_STEP,
    n_folds: int = 5,
    n_boot: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
    resample: str = DEFAULT_RESAMPLE,
) -> CalibrationResult:
    """Choose w for CM_w from ``pairs`` (columns anchor, m_sem, m_style, human).

    ``reference`` holds m_sem, m_style of mismatched pairs for x_ref(w); when
    it is None or empty, x_ref falls back to the median over the campaign's
    own pairs (fit folds only inside cross-validation), and the result says so.
    ``resample`` is what the intervals resample: anchors (the default) or
    single pairs (for comparison; too narrow).
    """
    data = pairs.dropna(subset=["m_sem", "m_style", "human"])
    check_calibration_pairs(data)
    grid = weight_grid(step)
    anchors = data["anchor"].to_numpy()
    folds = grouped_folds(anchors, n_folds, seed)
    human = data["human"].to_numpy(dtype=np.float64)
    distances = distance_grid(data["m_sem"].to_numpy(), data["m_style"].to_numpy(), grid)
    reference_grid = reference_grid_of(reference, grid)
    source = "reference pairs" if reference_grid is not None else "campaign pairs"
    spreads, spreads_source, no_spreads = log_spreads_of(reference, data)

    m_sem, m_style = data["m_sem"].to_numpy(dtype=np.float64), data["m_style"].to_numpy(dtype=np.float64)
    reference_pairs = ((reference["m_sem"].to_numpy(dtype=np.float64), reference["m_style"].to_numpy(dtype=np.float64))
                       if reference_grid is not None else None)
    cm_oof, calibrated, fold_w, fold_rho = _cross_validate(grid, distances, human, folds, n_folds, reference_grid,
                                                           m_sem, m_style, reference_pairs)

    # Every interval shares one set of resamples of anchors.
    resamples = make_resamples(anchors, n_boot, seed + 1, resample) if n_boot > 0 else None
    choice = choice_bootstrap(grid, distances, human, reference_grid, resamples)
    chosen_w = choice.chosen_w
    cm_chosen, x_ref = cm_at_w(chosen_w, m_sem, m_style, *(reference_pairs or (m_sem, m_style)))
    interval = resamples.describe(confidence) if resamples is not None else "none"

    def spread(values) -> tuple[float, float]:
        return resamples.interval(values, confidence) if resamples is not None else (float("nan"), float("nan"))

    # The out-of-fold curve's rows and the calibrated predictions, on the same resamples.
    oof_boot = (resampled_spearman_rows(np.vstack([cm_oof, calibrated[None, :]]), human, resamples)
                if resamples is not None else np.full((len(grid) + 1, 0), np.nan))
    rho_oof = spearman_rows(cm_oof, human)
    curve_rows = []
    for row, w in enumerate(grid):
        low, high = spread(oof_boot[row])
        all_low, all_high = spread(choice.rho_boot[row])
        curve_rows.append(
            {"w": float(w), "rho_all": float(choice.rho[row]), "rho_oof": float(rho_oof[row]), "ci_low": low,
             "ci_high": high, "x_ref": float(choice.scales[row]), "all_ci_low": all_low, "all_ci_high": all_high}
        )
    curve = pd.DataFrame(curve_rows)
    curve["w_std"] = spreads.w_std(grid) if spreads else np.nan

    w_ci = spread(choice.w_boot)
    rho_calibrated = float(spearman_rows(calibrated[None, :], human)[0])
    low, high = spread(oof_boot[-1])
    nan = float("nan")
    summary_rows = [
        {"setting": "calibrated (out-of-fold)", "w": chosen_w, "w_ci_low": w_ci[0], "w_ci_high": w_ci[1],
         "rho": rho_calibrated, "ci_low": low, "ci_high": high}
    ]
    for label, w in (("paper w=0.5", 0.5), ("semantic only w=1", 1.0), ("style only w=0", 0.0)):
        point = curve.iloc[int(np.argmin(np.abs(grid - w)))]
        summary_rows.append({"setting": label, "w": w, "w_ci_low": nan, "w_ci_high": nan, "rho": point["rho_oof"],
                             "ci_low": point["ci_low"], "ci_high": point["ci_high"]})
    summary = pd.DataFrame(summary_rows)
    summary.insert(2, "w_std", spreads.w_std(summary["w"].to_numpy()) if spreads else np.nan)
    w_std_ci = w_std_interval(spreads, w_ci)
    summary.insert(5, "w_std_ci_low", [w_std_ci[0]] + [nan] * (len(summary) - 1))
    summary.insert(6, "w_std_ci_high", [w_std_ci[1]] + [nan] * (len(summary) - 1))

    stats = {
        "w_ci": list(w_ci),
        "spearman_oof": rho_calibrated,
        "spearman_oof_ci": [low, high],
        "spearman_all_at_w": float(spearman_rows(cm_chosen[None, :], human)[0]),
        "spearman_fold_mean": float(np.nanmean(fold_rho)),
        "fold_w": fold_w,
        "baselines": {
            row["setting"]: {"w": row["w"], "spearman_oof": row["rho"], "ci": [row["ci_low"], row["ci_high"]]}
            for row in summary_rows[1:]
        },
        "folds": n_folds,
        "grid_step": step,
        "bootstrap": interval,
        "w_interval": "the whole choice of w (best ρ on all pairs) repeated on every resample; " + interval,
        "x_ref_source": source,
        "selection": "w maximising Spearman on all pairs; out-of-fold figures from grouped-by-anchor CV",
        **w_std_stats(spreads, spreads_source, no_spreads, chosen_w, w_ci),
    }
    return CalibrationResult(
        grid=grid,
        chosen_w=chosen_w,
        x_ref=x_ref,
        x_ref_source=source,
        curve=curve,
        summary=summary,
        fold_w=fold_w,
        fold_rho=fold_rho,
        n_pairs=int(len(data)),
        n_anchors=int(len(np.unique(anchors))),
        n_folds=n_folds,
        n_boot=n_boot,
        w_ci=w_ci,
        interval=interval,
        stats=stats,
        out_of_fold=pd.Series(calibrated, index=data.index),
        spreads=spreads,
        spreads_source=spreads_source,
    )


def w_std_stats(spreads: LogSpreads | None, source: str, no_spreads: str | None, chosen_w: float,
                w_ci: tuple[float, float]) -> dict:
    """The stats entries of w_std: its value and interval, the spreads it was converted with, the paper's w in it."""
    if spreads is None:
        return {"w_std": None, "w_std_undefined": no_spreads}
    return {
        "w_std": float(spreads.w_std(chosen_w)),
        "w_std_ci": list(w_std_interval(spreads, w_ci)),
        "log_sd": {"sem": spreads.sem, "style": spreads.style, "source": source},
        "paper_w_std": float(spreads.w_std(PAPER_W)),
        "equal_weight_w": spreads.equal_weight_w,
        "w_std_conversion": "w_std = w·s_sem / (w·s_sem + (1−w)·s_style), s: the sd of log M_sem, log M_style over "
                            f"the {source}",
    }
