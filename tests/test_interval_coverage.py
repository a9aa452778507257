"""Intervals keep their promise: coverage of the default intervals, checked by seeded simulation.

The studies come from tests/clustered_study.py: 20–40 anchors × 9 pairs,
3 raters per pair and group, anchor effects in the metric and in the
humans. The truth is what an infinitely large study of the same design
would give, approximated by one very large simulated study.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import pytest
from scipy import stats

from cpdm.analysis.calibration import (
    best_w,
    calibrate,
    choice_bootstrap,
    cm_from_distances,
    distance_grid,
    reference_grid_of,
    spearman_rows,
    weight_grid,
)
from cpdm.analysis.correlation import correlate
from cpdm.analysis.groups import compare_groups
from cpdm.analysis.resampling import make_resamples
from tests.clustered_study import clustered_study, reference_frame, with_human

REPLICATES = 200
ANCHOR_COUNTS = (20, 30, 40)
N_BOOT = 400


def metric(pairs):
    """The paper's ranking: closer (smaller product of distances) is higher."""
    return -(pairs["m_sem"] * pairs["m_style"]).to_numpy()


@lru_cache(maxsize=1)
def population() -> tuple[float, float]:
    """(true Spearman ρ of the metric with the artists' mean rating, true best w on the grid)."""
    pairs = with_human(*clustered_study(20_000, seed=999))
    human = pairs["human"].to_numpy()
    rho = stats.spearmanr(metric(pairs), human).statistic
    grid = weight_grid()
    curve = spearman_rows(cm_from_distances(distance_grid(pairs["m_sem"], pairs["m_style"], grid),
                                            reference_grid_of(reference_frame(), grid)), human)
    return float(rho), best_w(grid, curve)


def replicate(index: int, **kwargs):
    """The index-th simulated study (anchor counts cycle through ANCHOR_COUNTS)."""
    return clustered_study(ANCHOR_COUNTS[index % len(ANCHOR_COUNTS)], seed=10_000 + index, **kwargs)


@pytest.mark.slow
def test_default_correlation_intervals_hold_nominal_coverage_and_pair_intervals_do_not():
    truth, _ = population()
    covered = {"anchors": 0, "pairs": 0}
    for index in range(REPLICATES):
        pairs = with_human(*replicate(index))
        for unit in covered:
            result = correlate(metric(pairs), pairs["human"], n_boot=1000, seed=index, clusters=pairs["anchor"],
                               methods=("spearman",), resample=unit)["spearman"]
            covered[unit] += result["ci_low"] <= truth <= result["ci_high"]
    assert 0.92 <= covered["anchors"] / REPLICATES <= 0.98, covered
    # Resampling single pairs ignores that pairs of one anchor move together: far too narrow.
    assert covered["pairs"] / REPLICATES < 0.9, covered


@pytest.mark.slow
def test_the_interval_for_w_holds_nominal_coverage():
    _, true_w = population()
    grid = weight_grid()
    reference_grid = reference_grid_of(reference_frame(), grid)
    covered = 0
    for index in range(REPLICATES):
        pairs = with_human(*replicate(index))
        resamples = make_resamples(pairs["anchor"].to_numpy(), N_BOOT, seed=index)
        choice = choice_bootstrap(grid, distance_grid(pairs["m_sem"], pairs["m_style"], grid),
                                  pairs["human"].to_numpy(), reference_grid, resamples)
        low, high = resamples.interval(choice.w_boot)
        covered += low <= true_w <= high
    assert 0.92 <= covered / REPLICATES <= 0.98, covered


def test_calibration_reports_the_interval_of_its_whole_choice_of_w():
    pairs = with_human(*clustered_study(25, seed=5))
    result = calibrate(pairs, reference_frame(), n_boot=300, seed=3)
    grid = weight_grid()
    resamples = make_resamples(pairs["anchor"].to_numpy(), 300, seed=4)   # calibrate resamples with seed + 1
    choice = choice_bootstrap(grid, distance_grid(pairs["m_sem"], pairs["m_style"], grid), pairs["human"].to_numpy(),
                              reference_grid_of(reference_frame(), grid), resamples)
    assert result.w_ci == resamples.interval(choice.w_boot)
    assert result.w_ci[0] <= result.chosen_w <= result.w_ci[1]
    assert result.stats["w_ci"] == list(result.w_ci)
    assert "expanded percentile bootstrap over anchors" in result.interval


def group_pairs(pairs, ratings):
    """Pairs with both groups' mean ratings."""
    artists = with_human(pairs, ratings, "artists").rename(columns={"human": "human_artists"})
    lay = with_human(pairs, ratings, "lay")[["pair", "human"]].rename(columns={"human": "human_lay"})
    return artists.merge(lay, on="pair")


HUMAN_COLUMNS = {"artists": "human_artists", "lay": "human_lay"}


@pytest.mark.parametrize("seed", [1, 2])
def test_planted_group_weights_are_told_apart(seed):
    pairs = group_pairs(*clustered_study(30, weights={"artists": 0.2, "lay": 0.8}, seed=seed))
    comparison = compare_groups(pairs, HUMAN_COLUMNS, reference_frame(), n_boot=500, seed=seed)
    assert comparison.difference < 0
    assert comparison.difference_ci[1] < 0, comparison.row()
    # In w_std, over the same resamples: the same order, each w converted with the reference pairs' log spreads.
    reference = reference_frame()
    s_sem, s_style = (np.std(np.log(reference[column]), ddof=1) for column in ("m_sem", "m_style"))
    for group, w in comparison.chosen_w.items():
        assert comparison.w_std[group] == pytest.approx(w * s_sem / (w * s_sem + (1 - w) * s_style))
    assert comparison.difference_std < 0 and comparison.difference_std_ci[1] < 0, comparison.row()
    assert comparison.difference_std_ci[0] <= comparison.difference_std


def test_the_group_comparison_counts_only_anchors_both_groups_rated():
    pairs = group_pairs(*clustered_study(24, seed=4))
    pairs.loc[pairs["anchor"] < 4, "human_lay"] = np.nan          # lay raters never saw four anchors
    comparison = compare_groups(pairs, HUMAN_COLUMNS, reference_frame(), n_boot=50)
    assert comparison.n_anchors == 20
    assert comparison.n_pairs == {"artists": 180, "lay": 180}


@pytest.mark.slow
def test_equal_group_weights_give_an_interval_that_includes_zero_at_the_nominal_rate():
    includes_zero = 0
    for index in range(REPLICATES):
        pairs = group_pairs(*replicate(index))
        comparison = compare_groups(pairs, HUMAN_COLUMNS, reference_frame(), n_boot=N_BOOT, seed=index)
        includes_zero += comparison.difference_ci[0] <= 0 <= comparison.difference_ci[1]
    # Neither a difference claimed too often (under 92%) nor an interval too wide to find one (over 98%).
    assert 0.92 <= includes_zero / REPLICATES <= 0.98, includes_zero
