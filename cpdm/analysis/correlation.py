"""Correlation between a metric and the human score, with bootstrap intervals.

Every statistic here is written for *weighted* data: a weight vector
``c`` (or a matrix of them, one row per bootstrap resample) gives how many
times each pair appears in the resample. A row of counts from a multinomial
draw is exactly a bootstrap resample of the pairs, and a row that gives every
pair of an anchor the anchor's multiplicity is a resample of anchors. So all
resamples are computed at once, with array operations and one matrix product
for Kendall's τ-b, and the statistic of one row equals what scipy returns on
the resampled data (the tests check this).

Why one file of this length: every statistic here is the same idea, a
weighted form computed for all resamples at once; they share the weighting
and the ranking helpers, and the tests hold each against scipy.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

from cpdm.analysis.resampling import (  # noqa: F401  (the resampling helpers are also reached from here)
    DEFAULT_RESAMPLE,
    Resamples,
    counts_from_indices,
    make_resamples,
    pair_bootstrap_counts,
    percentile_interval,
)
from cpdm.errors import CpdmError

METHODS = ("spearman", "kendall", "pearson")
# Items per chunk in Kendall's τ sweep (see _concordance). Small chunks keep the in-chunk products
# (16 × 16 × resamples) small enough that BLAS runs them on one thread: no thread wake-ups per chunk.
_KENDALL_CHUNK = 16


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
    """Pearson r of each weighted resample; x and y may be (n,) or (B × n).

    Computed from weighted sums (one pass each, no B × n temporaries), after
    centring x and y on their unweighted means so the sums stay small.
    """
    weights = np.atleast_2d(weights)
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    x = x - x.mean(axis=-1, keepdims=True)
    y = y - y.mean(axis=-1, keepdims=True)
    spec = "bi,bi->b" if x.ndim == 2 else "bi,i->b"
    total = weights.sum(axis=1)
    sum_x = np.einsum(spec, weights, x)
    sum_y = np.einsum(spec, weights, y)
    wx = weights * x
    sum_xx = np.einsum(spec, wx, x) if x.ndim == 2 else np.einsum("bi,i->b", wx, x)
    sum_xy = np.einsum("bi,bi->b", wx, np.broadcast_to(y, weights.shape))
    sum_yy = np.einsum("bi,bi->b", weights * y, np.broadcast_to(y, weights.shape))
    cov = sum_xy - sum_x * sum_y / total
    var = (sum_xx - sum_x**2 / total) * (sum_yy - sum_y**2 / total)
    with np.errstate(invalid="ignore", divide="ignore"):
        # A resample with (numerically) no spread has no correlation.
        defined = var > 1e-12 * (sum_xx * sum_yy + 1e-300)
        return np.where(defined, cov / np.sqrt(np.where(defined, var, 1.0)), np.nan)


def weighted_spearman(x: np.ndarray, y: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Spearman ρ of each weighted resample (Pearson r of the mid-ranks)."""
    rank_x, _ = weighted_midranks(np.asarray(x, dtype=np.float64), weights)
    rank_y, _ = weighted_midranks(np.asarray(y, dtype=np.float64), weights)
    return weighted_pearson(rank_x, rank_y, weights)


def weighted_spearman_rows(x_rows: np.ndarray, y: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Spearman ρ of each row of ``x_rows`` (G × n) with ``y`` in every weighted resample: G × B.

    The same numbers as :func:`weighted_spearman` row by row, with less work:
    y's ranks are taken once, and each x row's sums are formed in its sorted
    order from per-run totals (Σ c·rank and Σ c·rank² need only the runs),
    so one row costs two gathers of the weights instead of a rank matrix.
    """
    weights = np.atleast_2d(weights)
    rank_y, _ = weighted_midranks(np.asarray(y, dtype=np.float64), weights)
    weighted_rank_y = weights * rank_y
    total = weights.sum(axis=1)
    sum_y = weighted_rank_y.sum(axis=1)
    spread_y = np.einsum("bi,bi->b", weighted_rank_y, rank_y) - sum_y**2 / total
    # Items × resamples: gathering items in a row's sorted order then copies whole contiguous rows.
    items_weights = np.ascontiguousarray(weights.T)
    items_rank_y = np.ascontiguousarray(weighted_rank_y.T)
    out = np.empty((len(x_rows), weights.shape[0]))
    for row, x in enumerate(np.asarray(x_rows, dtype=np.float64)):
        order, starts, _ = _tie_groups(x)
        if len(starts) == len(x):      # no ties: every item is its own run
            run_totals, run_rank_y = items_weights[order], items_rank_y[order]
        else:
            run_totals = np.add.reduceat(items_weights[order], starts, axis=0)
            run_rank_y = np.add.reduceat(items_rank_y[order], starts, axis=0)
        run_ranks = np.cumsum(run_totals, axis=0) - (run_totals - 1) / 2
        weighted_ranks = run_totals * run_ranks
        sum_x = weighted_ranks.sum(axis=0)
        spread_x = np.einsum("ib,ib->b", weighted_ranks, run_ranks) - sum_x**2 / total
        cross = np.einsum("ib,ib->b", run_ranks, run_rank_y) - sum_x * sum_y / total
        with np.errstate(invalid="ignore", divide="ignore"):
            defined = (spread_x > 1e-9 * total**3) & (spread_y > 1e-9 * total**3)
            out[row] = np.where(defined, cross / np.sqrt(np.where(defined, spread_x * spread_y, 1.0)), np.nan)
    return out


def clustered_spearman_rows(x_rows: np.ndarray, y: np.ndarray, cluster_of: np.ndarray,
                            cluster_counts: np.ndarray) -> np.ndarray:
    """:func:`weighted_spearman_rows` when every resample repeats whole clusters (anchors): G × B.

    With c the clusters' multiplicities in a resample, an item's mid-rank is
    linear in c: for the item in tie run k, r = c·U_k + ½ with
    U_k = (items of each cluster in runs 1..k) − (items of each cluster in
    run k) / 2. So Σ c·r·s over items, for every resample at once, is one
    matrix product of the y side (counts × y ranks, B × n) with U (n ×
    clusters). The spread of mid-ranks has the closed form
    (T³ − T − Σ_runs (t³ − t)) / 12 (T: items in the resample, t: a run's
    total), and Σ r = T(T + 1)/2. Fast when there are far fewer clusters
    than items.
    """
    cluster_of = np.asarray(cluster_of)
    counts = np.asarray(cluster_counts, dtype=np.float64)
    n_clusters = counts.shape[1]
    weights = counts[:, cluster_of]
    total = weights.sum(axis=1)
    rank_y, runs_y = weighted_midranks(np.asarray(y, dtype=np.float64), weights)
    weighted_rank_y = weights * rank_y
    sum_y = weighted_rank_y.sum(axis=1)
    spread_y = (total**3 - total - (runs_y**3 - runs_y).sum(axis=1)) / 12
    sum_x = total * (total + 1) / 2
    one_hot = np.zeros((len(cluster_of), n_clusters))
    one_hot[np.arange(len(cluster_of)), cluster_of] = 1.0
    x_rows = np.asarray(x_rows, dtype=np.float64)
    # Every row's basis side by side (n × rows·clusters): one large matrix product serves all rows.
    bases = np.empty((len(cluster_of), len(x_rows), n_clusters))
    spreads_x = np.empty((len(x_rows), counts.shape[0]))
    for row, x in enumerate(x_rows):
        order, starts, run_of_sorted = _tie_groups(x)
        through_run = np.cumsum(one_hot[order], axis=0)[np.append(starts[1:], len(x)) - 1]   # runs × clusters
        in_run = np.diff(through_run, axis=0, prepend=0.0)
        bases[order, row] = (through_run - in_run / 2)[run_of_sorted]
        # A run of one item totals its cluster's multiplicity; only runs of several items need a product.
        sizes = in_run.sum(axis=1)
        shared = counts @ in_run[sizes > 1].T                                                # B × tied runs
        ties = (counts**3 - counts) @ in_run[sizes == 1].sum(axis=0) + (shared**3 - shared).sum(axis=1)
        spreads_x[row] = (total**3 - total - ties) / 12
    products = (weighted_rank_y @ bases.reshape(len(cluster_of), -1)).reshape(len(counts), len(x_rows), n_clusters)
    cross = np.einsum("bg,brg->rb", counts, products) + sum_y / 2
    with np.errstate(invalid="ignore", divide="ignore"):
        defined = (spreads_x > 1e-9 * total**3) & (spread_y > 1e-9 * total**3)
        rho = (cross - sum_x * sum_y / total) / np.sqrt(np.where(defined, spreads_x * spread_y, 1.0))
        return np.where(defined, rho, np.nan)


def resampled_spearman_rows(x_rows: np.ndarray, y: np.ndarray, resamples: Resamples) -> np.ndarray:
    """Spearman ρ of each row of ``x_rows`` with ``y`` on every resample (G × B), by the faster route available."""
    if resamples.cluster_counts is not None and 4 * resamples.cluster_counts.shape[1] <= len(y):
        return clustered_spearman_rows(x_rows, y, resamples.cluster_of, resamples.cluster_counts)
    return weighted_spearman_rows(x_rows, y, resamples.weights)


def _tied_pairs(run_totals: np.ndarray) -> np.ndarray:
    """Number of pairs tied on a variable, per resample, from its run totals."""
    return (run_totals * (run_totals - 1) / 2).sum(axis=1)


def _x_chunks(starts: np.ndarray, n: int, size: int) -> list[tuple[int, int, bool]]:
    """Split x-sorted positions into chunks of whole tie runs, about ``size`` long: (start, stop, one_run)."""
    bounds = np.append(starts, n)
    chunks, lo, runs = [], 0, 0
    for index in range(1, len(bounds)):
        runs += 1
        if bounds[index] - lo >= size or index == len(bounds) - 1:
            chunks.append((lo, int(bounds[index]), runs == 1))
            lo, runs = int(bounds[index]), 0
    return chunks


def _concordance(x: np.ndarray, y: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """S = Σ_{i<j} c_i c_j sign(x_i − x_j) sign(y_i − y_j) for every row of weights at once.

    Items are visited in x order, in chunks of whole tie runs. Against all
    earlier chunks (strictly smaller x) an item gains the weight of earlier
    items with smaller y and loses that of items with larger y; a running
    histogram of weight per distinct y value gives both by a cumulative sum.
    Pairs inside a chunk come from a small sign matrix (x ties give 0 there;
    a chunk that is one tie run has no pairs to count). Costs about
    B·n·(chunk + distinct y values · n / chunk) operations, with a Python loop
    over chunks only, never over resamples.
    """
    order, starts, _ = _tie_groups(x)
    xs, ys = x[order], y[order]
    # Items × resamples, so that a chunk of items is one contiguous block (BLAS is much faster on those).
    ordered = np.ascontiguousarray(weights.T[order])
    levels = np.unique(ys, return_inverse=True)[1]
    histogram = np.zeros((levels.max() + 1, weights.shape[0]))
    concordance = np.zeros(weights.shape[0])
    for lo, hi, one_run in _x_chunks(starts, len(x), _KENDALL_CHUNK):
        chunk, chunk_levels = ordered[lo:hi], levels[lo:hi]
        if lo > 0:
            at_or_below = np.cumsum(histogram, axis=0)
            below = at_or_below[chunk_levels] - histogram[chunk_levels]
            above = at_or_below[-1:] - at_or_below[chunk_levels]
            concordance += (chunk * (below - above)).sum(axis=0)
        if not one_run:
            signs = np.sign(xs[lo:hi, None] - xs[None, lo:hi]) * np.sign(ys[lo:hi, None] - ys[None, lo:hi])
            concordance += ((signs @ chunk) * chunk).sum(axis=0) / 2  # each unordered pair counted twice
        _add_to_histogram(histogram, chunk_levels, chunk)
    return concordance


def _add_to_histogram(histogram: np.ndarray, levels: np.ndarray, chunk: np.ndarray) -> None:
    """histogram[levels[i]] += chunk[i] for every item i of a chunk (levels may repeat)."""
    order = np.argsort(levels, kind="stable")
    sorted_levels = levels[order]
    starts = np.flatnonzero(np.concatenate([[True], sorted_levels[1:] != sorted_levels[:-1]]))
    histogram[sorted_levels[starts]] += np.add.reduceat(chunk[order], starts, axis=0)


def weighted_kendall_tau_b(x: np.ndarray, y: np.ndarray, weights: np.ndarray, runs=None) -> np.ndarray:
    """Kendall's τ-b of each weighted resample.

    The signed concordance S = Σ_{i<j} c_i c_j sign(x_i − x_j) sign(y_i − y_j)
    is computed for all resamples at once (see :func:`_concordance`); copies
    of one item tie on both variables and add nothing to S. Tied pairs come
    from the run totals (``runs``: those of x and y from
    :func:`weighted_midranks`, when already at hand).
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    weights = np.atleast_2d(weights)
    if runs is None:
        runs = (weighted_midranks(x, weights)[1], weighted_midranks(y, weights)[1])
    runs_x, runs_y = runs
    # The histogram runs over the variable with fewer distinct values (S is symmetric in x and y).
    concordance = _concordance(y, x, weights) if runs_x.shape[1] < runs_y.shape[1] else _concordance(x, y, weights)
    total = weights.sum(axis=1)
    all_pairs = total * (total - 1) / 2
    denominator = (all_pairs - _tied_pairs(runs_x)) * (all_pairs - _tied_pairs(runs_y))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denominator > 0, concordance / np.sqrt(np.where(denominator > 0, denominator, 1.0)), np.nan)


def bootstrap_statistics(x, y, weights: np.ndarray, methods=METHODS, ranked_y=None) -> dict[str, np.ndarray]:
    """Every requested statistic for every weighted resample, sharing the rank work between them.

    ``ranked_y`` is ``weighted_midranks(y, weights)`` when the caller already
    has it (one human score against several metrics).
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    out = {}
    if "spearman" in methods or "kendall" in methods:
        rank_x, runs_x = weighted_midranks(x, weights)
        rank_y, runs_y = ranked_y if ranked_y is not None else weighted_midranks(y, weights)
        if "spearman" in methods:
            out["spearman"] = weighted_pearson(rank_x, rank_y, weights)
        if "kendall" in methods:
            out["kendall"] = weighted_kendall_tau_b(x, y, weights, runs=(runs_x, runs_y))
    if "pearson" in methods:
        out["pearson"] = weighted_pearson(x, y, weights)
    return out


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


def correlate(
    x,
    y,
    n_boot: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
    clusters=None,
    methods=METHODS,
    resample: str = DEFAULT_RESAMPLE,
    _shared: dict | None = None,
) -> dict[str, dict[str, float]]:
    """Each correlation with its bootstrap interval.

    ``clusters`` (the anchor of each pair) lets the bootstrap resample whole
    anchors (``resample="anchors"``, the default; see
    :mod:`cpdm.analysis.resampling`); without it, or with
    ``resample="pairs"``, single pairs are resampled. Returns
    ``{method: {"r", "ci_low", "ci_high", "n", "interval"}}``, ``interval``
    saying how the interval was made. ``_shared`` lets
    :func:`correlation_table` reuse one set of resamples (and the human
    score's ranks) for every metric compared with the same score.
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if x.shape != y.shape:
        raise CpdmError("metric and human scores have different lengths")
    keep = np.isfinite(x) & np.isfinite(y)
    x, y = x[keep], y[keep]
    point = point_correlations(x, y)
    unit = resample if clusters is not None else "pairs"
    items = np.asarray(clusters)[keep] if clusters is not None else np.arange(len(x))
    boot: dict[str, np.ndarray] = {}
    resamples = None
    if len(x) >= 3 and n_boot > 0 and any(np.isfinite(point[m]) for m in methods):
        key = (keep.tobytes(), y.tobytes())
        if _shared is not None and key in _shared:
            resamples, ranked_y = _shared[key]
        else:
            resamples = make_resamples(items, n_boot, seed, unit)
            ranked_y = weighted_midranks(y, resamples.weights)
            if _shared is not None:
                _shared.clear()
                _shared[key] = (resamples, ranked_y)
        boot = bootstrap_statistics(x, y, resamples.weights, [m for m in methods if np.isfinite(point[m])], ranked_y)
    description = resamples.describe(confidence) if resamples is not None else "none"
    result = {}
    for method in methods:
        low, high = resamples.interval(boot[method], confidence) if method in boot else (float("nan"), float("nan"))
        result[method] = {"r": point[method], "ci_low": low, "ci_high": high, "n": int(len(x)),
                          "interval": description}
    return result


def correlation_table(
    pairs: pd.DataFrame,
    metrics: list[str],
    human_columns: dict[str, str],
    n_boot: int = 1000,
    seed: int = 0,
    methods=METHODS,
    resample: str = DEFAULT_RESAMPLE,
) -> pd.DataFrame:
    """Correlations of each metric column with each human-score column.

    ``human_columns`` maps a group name to the column of ``pairs`` holding
    that group's score; the ``anchor`` column (when present) is what the
    bootstrap resamples. One row per (group, metric, method). Metrics
    compared with one group's score over the same pairs share their resamples.
    """
    clusters = pairs["anchor"].to_numpy() if "anchor" in pairs else None
    rows = []
    for group, column in human_columns.items():
        shared: dict = {}
        for metric in metrics:
            result = correlate(pairs[metric], pairs[column], n_boot=n_boot, seed=seed, clusters=clusters,
                               methods=methods, resample=resample, _shared=shared)
            for method in methods:
                rows.append({"group": group, "metric": metric, "method": method, **result[method]})
    return pd.DataFrame(rows)


def spearman_brown(r: float | np.ndarray, factor: float = 2.0):
    """Reliability of a measure ``factor`` times as long: k·r / (1 + (k − 1)·r)."""
    return factor * r / (1 + (factor - 1) * r)


def _random_halves(pair_index: np.ndarray, sizes: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Whether each rating falls in the first half of its pair's ratings, after a random shuffle within pairs."""
    order = np.lexsort((rng.random(len(pair_index)), pair_index))
    first_of_pair = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    position = np.empty(len(pair_index), dtype=np.int64)
    position[order] = np.arange(len(pair_index)) - first_of_pair[pair_index[order]]
    return position < sizes[pair_index] // 2


def split_half_ceiling(
    ratings: pd.DataFrame,
    n_splits: int = 100,
    seed: int = 0,
    confidence: float = 0.95,
    n_boot: int = 1000,
    resample: str = DEFAULT_RESAMPLE,
) -> dict[str, float]:
    """Split-half noise ceiling of the per-pair mean rating, with a bootstrap interval.

    For each random split, every pair's ratings (columns ``pair``, ``value``)
    are divided at random into two halves; the Spearman correlation between
    the half means across pairs, corrected with Spearman–Brown (k = 2), is the
    reliability of the full mean. Pairs with fewer than two ratings take no
    part. ``ceiling`` is the mean over splits; ``split_low``/``split_high``
    the range of the central ``confidence`` share of the splits (how much the
    estimate depends on the split alone). ``ci_low``/``ci_high`` is the
    sampling interval: each bootstrap resample of anchors (the ``anchor``
    column; single pairs with ``resample="pairs"`` or without that column)
    is scored on one of the splits in turn, so it carries both sources of spread.
    """
    rated = ratings.dropna(subset=["value"])
    pair_codes, pair_index = np.unique(rated["pair"].to_numpy(), return_inverse=True)
    values = rated["value"].to_numpy(dtype=np.float64)
    per_pair = np.bincount(pair_index, minlength=len(pair_codes))
    usable = per_pair[pair_index] >= 2
    n_pairs = int((per_pair >= 2).sum())
    empty = {"split_half": float("nan"), "ceiling": float("nan"), "split_low": float("nan"),
             "split_high": float("nan"), "ci_low": float("nan"), "ci_high": float("nan"), "pairs": n_pairs,
             "splits": 0, "interval": "none"}
    if n_pairs < 3:
        return empty
    # Renumber the usable pairs 0..n_pairs-1; every one of them has ratings in both halves.
    pair_index = np.unique(pair_index[usable], return_inverse=True)[1]
    values = values[usable]
    sizes = np.bincount(pair_index)
    if "anchor" in rated and resample == "anchors":
        anchors = rated["anchor"].to_numpy()[usable][np.unique(pair_index, return_index=True)[1]]
        resamples = make_resamples(anchors, n_boot, seed + 1, "anchors")
    else:
        resamples = make_resamples(np.arange(n_pairs), n_boot, seed + 1, "pairs")
    rng = np.random.default_rng(seed)
    halves, boot = [], []
    rows_per_split = np.array_split(np.arange(n_boot), n_splits)
    for split in range(n_splits):
        in_first = _random_halves(pair_index, sizes, rng)
        mean_a, mean_b = (np.bincount(pair_index[half], values[half], n_pairs)
                          / np.bincount(pair_index[half], minlength=n_pairs) for half in (in_first, ~in_first))
        if np.ptp(mean_a) == 0 or np.ptp(mean_b) == 0:
            continue
        halves.append(stats.spearmanr(mean_a, mean_b).statistic)
        if len(rows_per_split[split]):
            boot.append(weighted_spearman(mean_a, mean_b, resamples.weights[rows_per_split[split]]))
    if not halves:
        return empty
    halves = np.asarray(halves)
    corrected = spearman_brown(halves)
    low, high = percentile_interval(corrected, confidence)
    ci_low, ci_high = resamples.interval(spearman_brown(np.concatenate(boot)), confidence) if boot else (
        float("nan"), float("nan"))
    return {
        "split_half": float(halves.mean()),
        "ceiling": float(corrected.mean()),
        "split_low": low,
        "split_high": high,
        "ci_low": ci_low,
        "ci_high": ci_high,
        "pairs": n_pairs,
        "splits": int(len(halves)),
        "interval": resamples.describe(confidence) if boot else "none",
    }
