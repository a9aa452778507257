"""Correlation between a metric and the human score, with bootstrap intervals.

Every statistic here is written for *weighted* data: a weight vector
``c`` (or a matrix of them, one row per bootstrap resample) gives how many
times each pair appears in the resample. A row of counts from a multinomial
draw is exactly a bootstrap resample of the pairs, and a row that gives every
pair of an anchor the anchor's multiplicity is a resample of anchors. So all
resamples are computed at once, with array operations and one matrix product
for Kendall's τ-b, and the statistic of one row equals what scipy returns on
the resampled data (the tests check this).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

from cpdm.errors import CpdmError

METHODS = ("spearman", "kendall", "pearson")
# Pairs per block when building Kendall's sign matrix (memory: n × block floats).
_KENDALL_BLOCK = 1024


def counts_from_indices(indices: np.ndarray, n: int) -> np.ndarray:
    """Resample counts (B × n) from resample index rows (B × k)."""
    indices = np.atleast_2d(indices)
    rows = np.repeat(np.arange(indices.shape[0]), indices.shape[1])
    counts = np.zeros((indices.shape[0], n), dtype=np.float64)
    np.add.at(counts, (rows, indices.ravel()), 1.0)
    return counts


def pair_bootstrap_counts(n: int, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """Counts for ``n_boot`` ordinary bootstrap resamples of n items."""
    return rng.multinomial(n, np.full(n, 1.0 / n), size=n_boot).astype(np.float64)


def cluster_bootstrap_counts(clusters: np.ndarray, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """Counts for resamples of whole clusters (e.g. anchors): every item gets its cluster's multiplicity."""
    _, cluster_index = np.unique(clusters, return_inverse=True)
    n_clusters = cluster_index.max() + 1
    cluster_counts = rng.multinomial(n_clusters, np.full(n_clusters, 1.0 / n_clusters), size=n_boot)
    return cluster_counts[:, cluster_index].astype(np.float64)


def _tie_groups(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sort order, start of each run of equal values in sorted order, and each item's run (in sorted order)."""
    order = np.argsort(x, kind="mergesort")
    sorted_x = x[order]
    new_run = np.concatenate([[True], sorted_x[1:] != sorted_x[:-1]])
    starts = np.flatnonzero(new_run)
    run_of_sorted = np.cumsum(new_run) - 1
    return order, starts, run_of_sorted


def weighted_midranks(x: np.ndarray, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mid-ranks of x within each weighted resample (B × n), and the per-run weight totals (B × runs).

    An item's rank is what scipy's ``rankdata(method="average")`` gives it in
    the resampled data (every copy of a tied value gets the same mid-rank).
    """
    order, starts, run_of_sorted = _tie_groups(x)
    weights = np.atleast_2d(weights)
    run_totals = np.add.reduceat(weights[:, order], starts, axis=1)
    below = np.cumsum(run_totals, axis=1) - run_totals
    run_ranks = below + (run_totals + 1) / 2
    ranks = np.empty_like(weights)
    ranks[:, order] = run_ranks[:, run_of_sorted]
    return ranks, run_totals


def weighted_pearson(x: np.ndarray, y: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Pearson r of each weighted resample; x and y may be (n,) or (B × n)."""
    weights = np.atleast_2d(weights)
    total = weights.sum(axis=1, keepdims=True)
    mean_x = (weights * x).sum(axis=1, keepdims=True) / total
    mean_y = (weights * y).sum(axis=1, keepdims=True) / total
    dx, dy = x - mean_x, y - mean_y
    cov = (weights * dx * dy).sum(axis=1)
    var = (weights * dx * dx).sum(axis=1) * (weights * dy * dy).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(var > 0, cov / np.sqrt(np.where(var > 0, var, 1.0)), np.nan)


def weighted_spearman(x: np.ndarray, y: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Spearman ρ of each weighted resample (Pearson r of the mid-ranks)."""
    rank_x, _ = weighted_midranks(np.asarray(x, dtype=np.float64), weights)
    rank_y, _ = weighted_midranks(np.asarray(y, dtype=np.float64), weights)
    return weighted_pearson(rank_x, rank_y, weights)


def _tied_pairs(run_totals: np.ndarray) -> np.ndarray:
    """Number of pairs tied on a variable, per resample, from its run totals."""
    return (run_totals * (run_totals - 1) / 2).sum(axis=1)


def weighted_kendall_tau_b(x: np.ndarray, y: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Kendall's τ-b of each weighted resample.

    The signed concordance S = Σ_{i<j} c_i c_j sign(x_i − x_j) sign(y_i − y_j)
    is a quadratic form in the counts c, computed for all resamples with one
    matrix product per block of items; copies of one item tie on both
    variables and add nothing to S. Tied pairs come from the run totals.
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    weights = np.atleast_2d(weights)
    n = len(x)
    concordance = np.zeros(weights.shape[0])
    for start in range(0, n, _KENDALL_BLOCK):
        block = slice(start, min(start + _KENDALL_BLOCK, n))
        signs = (np.sign(x[:, None] - x[None, block]) * np.sign(y[:, None] - y[None, block])).astype(np.float32)
        concordance += ((weights.astype(np.float32) @ signs) * weights[:, block]).sum(axis=1)
    concordance /= 2  # the quadratic form counts each unordered pair twice
    total = weights.sum(axis=1)
    all_pairs = total * (total - 1) / 2
    _, runs_x = weighted_midranks(x, weights)
    _, runs_y = weighted_midranks(y, weights)
    denominator = (all_pairs - _tied_pairs(runs_x)) * (all_pairs - _tied_pairs(runs_y))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denominator > 0, concordance / np.sqrt(np.where(denominator > 0, denominator, 1.0)), np.nan)


STATISTICS = {
    "spearman": weighted_spearman,
    "kendall": weighted_kendall_tau_b,
    "pearson": lambda x, y, w: weighted_pearson(np.asarray(x, float), np.asarray(y, float), w),
}


def point_correlations(x: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """Spearman, Kendall τ-b and Pearson from scipy (the reference the bootstrap is checked against)."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if len(x) < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return {method: float("nan") for method in METHODS}
    return {
        "spearman": float(stats.spearmanr(x, y).statistic),
        "kendall": float(stats.kendalltau(x, y, variant="b").statistic),
        "pearson": float(stats.pearsonr(x, y).statistic),
    }


def percentile_interval(values: np.ndarray, confidence: float = 0.95) -> tuple[float, float]:
    """The percentile bootstrap interval, ignoring undefined resamples."""
    finite = values[np.isfinite(values)]
    if len(finite) == 0:
        return float("nan"), float("nan")
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(finite, [tail, 100 - tail])
    return float(low), float(high)


def correlate(
    x,
    y,
    n_boot: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
    clusters=None,
    methods=METHODS,
) -> dict[str, dict[str, float]]:
    """Each correlation with its percentile bootstrap interval.

    Resamples pairs, or whole clusters when ``clusters`` (e.g. the anchor of
    each pair) is given. Returns ``{method: {"r", "ci_low", "ci_high", "n"}}``.
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if x.shape != y.shape:
        raise CpdmError("metric and human scores have different lengths")
    keep = np.isfinite(x) & np.isfinite(y)
    x, y = x[keep], y[keep]
    point = point_correlations(x, y)
    rng = np.random.default_rng(seed)
    if len(x) >= 3 and n_boot > 0:
        if clusters is None:
            weights = pair_bootstrap_counts(len(x), n_boot, rng)
        else:
            weights = cluster_bootstrap_counts(np.asarray(clusters)[keep], n_boot, rng)
    else:
        weights = None
    result = {}
    for method in methods:
        low = high = float("nan")
        if weights is not None and np.isfinite(point[method]):
            low, high = percentile_interval(STATISTICS[method](x, y, weights), confidence)
        result[method] = {"r": point[method], "ci_low": low, "ci_high": high, "n": int(len(x))}
    return result


def correlation_table(
    pairs: pd.DataFrame,
    metrics: list[str],
    human_columns: dict[str, str],
    n_boot: int = 1000,
    seed: int = 0,
    methods=METHODS,
) -> pd.DataFrame:
    """Correlations of each metric column with each human-score column.

    ``human_columns`` maps a group name to the column of ``pairs`` holding
    that group's score. One row per (group, metric, method).
    """
    rows = []
    for group, column in human_columns.items():
        for metric in metrics:
            sub = pairs[[metric, column]].dropna()
            result = correlate(sub[metric], sub[column], n_boot=n_boot, seed=seed, methods=methods)
            for method in methods:
                rows.append({"group": group, "metric": metric, "method": method, **result[method]})
    return pd.DataFrame(rows)


def spearman_brown(r: float | np.ndarray, factor: float = 2.0):
    """Reliability of a measure ``factor`` times as long: k·r / (1 + (k − 1)·r)."""
    return factor * r / (1 + (factor - 1) * r)


def split_half_ceiling(
    ratings: pd.DataFrame,
    n_splits: int = 100,
    seed: int = 0,
    confidence: float = 0.95,
) -> dict[str, float]:
    """Split-half noise ceiling of the per-pair mean rating.

    For each random split, every pair's ratings (columns ``pair``, ``value``)
    are divided at random into two halves; the Spearman correlation between
    the half means across pairs, corrected with Spearman–Brown (k = 2), is the
    reliability of the full mean. Pairs with fewer than two ratings take no
    part. Reports the mean over splits and the spread of the splits.
    """
    rated = ratings.dropna(subset=["value"])
    pair_codes, pair_index = np.unique(rated["pair"].to_numpy(), return_inverse=True)
    values = rated["value"].to_numpy(dtype=np.float64)
    per_pair = np.bincount(pair_index, minlength=len(pair_codes))
    usable = per_pair[pair_index] >= 2
    pair_index, values = pair_index[usable], values[usable]
    n_pairs = int((per_pair >= 2).sum())
    empty = {"split_half": float("nan"), "ceiling": float("nan"), "ci_low": float("nan"), "ci_high": float("nan"),
             "pairs": n_pairs, "splits": 0}
    if n_pairs < 3:
        return empty
    rng = np.random.default_rng(seed)
    sizes = np.bincount(pair_index, minlength=len(pair_codes))
    halves = []
    for _ in range(n_splits):
        # Position of each rating within its pair after a random shuffle.
        order = np.lexsort((rng.random(len(values)), pair_index))
        first_of_pair = np.concatenate([[0], np.cumsum(sizes)[:-1]])
        position = np.empty(len(values), dtype=np.int64)
        position[order] = np.arange(len(values)) - first_of_pair[pair_index[order]]
        in_first = position < sizes[pair_index] // 2
        half_a = np.bincount(pair_index[in_first], values[in_first], len(pair_codes))
        half_b = np.bincount(pair_index[~in_first], values[~in_first], len(pair_codes))
        count_a = np.bincount(pair_index[in_first], minlength=len(pair_codes))
        count_b = np.bincount(pair_index[~in_first], minlength=len(pair_codes))
        keep = (count_a > 0) & (count_b > 0)
        mean_a = half_a[keep] / count_a[keep]
        mean_b = half_b[keep] / count_b[keep]
        if np.ptp(mean_a) == 0 or np.ptp(mean_b) == 0:
            continue
        halves.append(stats.spearmanr(mean_a, mean_b).statistic)
    if not halves:
        return empty
    halves = np.asarray(halves)
    corrected = spearman_brown(halves)
    low, high = percentile_interval(corrected, confidence)
    return {
        "split_half": float(halves.mean()),
        "ceiling": float(corrected.mean()),
        "ci_low": low,
        "ci_high": high,
        "pairs": n_pairs,
        "splits": int(len(halves)),
    }
