"""Correlations and their bootstrap intervals against scipy; the split-half noise ceiling."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from cpdm.analysis.correlation import (
    correlate,
    correlation_table,
    counts_from_indices,
    spearman_brown,
    split_half_ceiling,
    weighted_kendall_tau_b,
    weighted_pearson,
    weighted_spearman,
)
from cpdm.analysis.resampling import make_resamples


def tied_data(n=60, seed=0):
    """A metric with ties (like CM clipped at 0) and a coarse human score (many ties)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    y = np.round(2 * x + rng.normal(size=n))
    x[: n // 6] = 0.0
    return x, y


def test_point_estimates_equal_scipy():
    x, y = tied_data()
    result = correlate(x, y, n_boot=0)
    assert result["spearman"]["r"] == pytest.approx(stats.spearmanr(x, y).statistic, abs=1e-12)
    assert result["kendall"]["r"] == pytest.approx(stats.kendalltau(x, y, variant="b").statistic, abs=1e-12)
    assert result["pearson"]["r"] == pytest.approx(stats.pearsonr(x, y).statistic, abs=1e-12)


def test_each_resample_equals_scipy_on_the_resampled_data():
    x, y = tied_data()
    rng = np.random.default_rng(5)
    indices = rng.integers(0, len(x), size=(12, len(x)))
    weights = counts_from_indices(indices, len(x))
    spearman = weighted_spearman(x, y, weights)
    kendall = weighted_kendall_tau_b(x, y, weights)
    pearson = weighted_pearson(x, y, weights)
    for row, index in enumerate(indices):
        assert spearman[row] == pytest.approx(stats.spearmanr(x[index], y[index]).statistic, abs=1e-10)
        assert kendall[row] == pytest.approx(stats.kendalltau(x[index], y[index], variant="b").statistic, abs=1e-6)
        assert pearson[row] == pytest.approx(stats.pearsonr(x[index], y[index]).statistic, abs=1e-10)


def test_kendall_concordance_equals_the_pairwise_definition():
    from cpdm.analysis.correlation import _concordance

    x, y = tied_data(n=120)
    weights = counts_from_indices(np.random.default_rng(1).integers(0, 120, size=(6, 120)), 120)
    pairwise = np.sign(x[:, None] - x[None, :]) * np.sign(y[:, None] - y[None, :])
    expected = np.einsum("bi,ij,bj->b", weights, pairwise, weights) / 2
    np.testing.assert_allclose(_concordance(x, y, weights), expected)
    np.testing.assert_allclose(_concordance(y, x, weights), expected)


@pytest.mark.parametrize("kind", ["few human levels", "few metric levels", "both continuous", "long tie run"])
def test_kendall_equals_scipy_whatever_the_ties(kind, monkeypatch):
    from cpdm.analysis import correlation

    rng = np.random.default_rng(4)
    x = rng.normal(size=90)
    y = x + rng.normal(size=90)
    if kind == "few human levels":
        y = np.round(y)
    elif kind == "few metric levels":
        x = np.round(x)
    elif kind == "long tie run":
        x[x < 0.3] = 0.0  # like CM clipped at 0: one run longer than a chunk
    monkeypatch.setattr(correlation, "_KENDALL_CHUNK", 7)  # many chunks, runs longer than a chunk
    indices = rng.integers(0, 90, size=(5, 90))
    tau = weighted_kendall_tau_b(x, y, counts_from_indices(indices, 90))
    for row, index in enumerate(indices):
        assert tau[row] == pytest.approx(stats.kendalltau(x[index], y[index]).statistic, abs=1e-6)


@pytest.mark.parametrize("method", ["spearman", "kendall", "pearson"])
def test_intervals_agree_with_scipy_bootstrap(method):
    x, y = tied_data(n=80, seed=2)
    ours = correlate(x, y, n_boot=3000, seed=0)[method]
    statistic = {
        "spearman": lambda a, b: stats.spearmanr(a, b).statistic,
        "kendall": lambda a, b: stats.kendalltau(a, b).statistic,
        "pearson": lambda a, b, axis=-1: stats.pearsonr(a, b, axis=axis).statistic,
    }[method]
    reference = stats.bootstrap((x, y), statistic, paired=True, vectorized=method == "pearson", n_resamples=3000,
                                method="percentile", random_state=np.random.default_rng(1)).confidence_interval
    # Different random draws: the two Monte Carlo intervals agree to within their noise.
    assert ours["ci_low"] == pytest.approx(reference.low, abs=0.03)
    assert ours["ci_high"] == pytest.approx(reference.high, abs=0.03)
    assert ours["ci_low"] < ours["r"] < ours["ci_high"]


def test_cluster_bootstrap_keeps_clusters_whole():
    clusters = np.array([3, 3, 8, 8, 8, 1])
    counts = make_resamples(clusters, 50, seed=0).weights
    assert counts.shape == (50, 6)
    # Every pair of one anchor appears equally often in a resample; totals are whole clusters.
    assert (counts[:, 0] == counts[:, 1]).all()
    assert (counts[:, 2] == counts[:, 3]).all() and (counts[:, 3] == counts[:, 4]).all()
    anchors_drawn = counts[:, 0] + counts[:, 2] + counts[:, 5]
    assert (anchors_drawn == 3).all()


def test_nan_rows_are_dropped_and_counted():
    x, y = tied_data()
    x = x.copy()
    x[:5] = np.nan
    result = correlate(x, y, n_boot=50)
    assert result["spearman"]["n"] == len(x) - 5
    assert result["spearman"]["r"] == pytest.approx(stats.spearmanr(x[5:], y[5:]).statistic)


def test_constant_input_gives_nan_not_an_error():
    result = correlate(np.ones(10), np.arange(10.0), n_boot=20)
    assert np.isnan(result["spearman"]["r"]) and np.isnan(result["spearman"]["ci_low"])


def test_correlation_table_rows():
    x, y = tied_data()
    frame = pd.DataFrame({"CM": x, "-m_sem": -x + 0.1, "human_artists": y, "human_lay": y[::-1]})
    table = correlation_table(frame, ["CM", "-m_sem"], {"artists": "human_artists", "lay": "human_lay"}, n_boot=20)
    assert len(table) == 2 * 2 * 3
    row = table[(table["group"] == "lay") & (table["metric"] == "CM") & (table["method"] == "spearman")].iloc[0]
    assert row["r"] == pytest.approx(stats.spearmanr(x, y[::-1]).statistic)


def test_spearman_brown():
    assert spearman_brown(0.5) == pytest.approx(2 / 3)
    assert spearman_brown(0.6, factor=3) == pytest.approx(1.8 / 2.2)


def test_split_half_ceiling_reflects_rating_noise():
    rng = np.random.default_rng(0)
    truth = rng.normal(size=150)

    def ratings(noise):
        rows = [(pair, rater, truth[pair] + rng.normal(0, noise)) for pair in range(150) for rater in range(6)]
        return pd.DataFrame(rows, columns=["pair", "rater", "value"])

    quiet = split_half_ceiling(ratings(0.3), n_splits=30)
    noisy = split_half_ceiling(ratings(2.0), n_splits=30)
    assert 0.9 < quiet["ceiling"] <= 1.0
    assert noisy["ceiling"] < quiet["ceiling"] - 0.1
    # Spearman–Brown raises the half-length reliability.
    assert noisy["ceiling"] > noisy["split_half"]
    assert noisy["split_low"] <= noisy["ceiling"] <= noisy["split_high"]
    assert quiet["pairs"] == 150 and quiet["splits"] == 30


def test_split_half_ignores_pairs_with_one_rating():
    frame = pd.DataFrame({"pair": [1, 1, 2, 2, 3, 3, 4, 5], "rater": [1, 2, 1, 2, 1, 2, 1, 1],
                          "value": [1.0, 2.0, 3.0, 3.0, 5.0, 4.0, 2.0, 1.0]})
    result = split_half_ceiling(frame, n_splits=5)
    assert result["pairs"] == 3
    # Two raters per pair: every split compares rater halves of the same three pairs.
    assert np.isfinite(result["ceiling"])


def test_pair_bootstrap_counts_are_resamples_of_every_size():
    from cpdm.analysis.correlation import pair_bootstrap_counts

    counts = pair_bootstrap_counts(50, 400, np.random.default_rng(0))
    assert counts.shape == (400, 50)
    assert (counts.sum(axis=1) == 50).all()
    # Each item's count is Binomial(50, 1/50): mean 1, variance 0.98.
    assert counts.mean() == pytest.approx(1.0, abs=0.02)
    assert counts.var() == pytest.approx(0.98, abs=0.08)


@pytest.mark.parametrize("unit", ["anchors", "pairs"])
def test_many_rows_at_once_equal_one_row_at_a_time(unit):
    """The fast routes for many metric rows give what weighted_spearman gives, ties and clipped blocks included."""
    from cpdm.analysis.correlation import resampled_spearman_rows, weighted_spearman

    rng = np.random.default_rng(3)
    x_rows = rng.normal(size=(4, 120))
    x_rows[1] = np.round(x_rows[1])            # many ties
    x_rows[2, :50] = 0.0                       # a clipped block, like CM_w beyond x_ref
    y = np.round(rng.normal(size=120) * 2) / 2
    resamples = make_resamples(rng.permutation(np.repeat(np.arange(12), 10)), 60, seed=1, unit=unit)
    expected = np.array([weighted_spearman(x, y, resamples.weights) for x in x_rows])
    np.testing.assert_allclose(resampled_spearman_rows(x_rows, y, resamples), expected, rtol=0, atol=1e-12)
