"""Calibration of w: recovers a known weight, grouped folds, out-of-fold figures, bad input."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from cpdm.analysis.calibration import (
    best_w,
    best_w_columns,
    calibrate,
    cm_from_distances,
    distance_grid,
    grouped_folds,
    reference_scales,
    spearman_rows,
    weight_grid,
)
from cpdm.analysis.data import human_scores
from cpdm import metric
from cpdm.errors import CpdmError
from cpdm.demo.simulate import synthetic_study


def study_pairs(w_true: float, seed: int = 0, **kwargs):
    pairs, ratings, reference = synthetic_study(w_true=w_true, seed=seed, **kwargs)
    scores = human_scores(ratings, "copy")
    return pairs.merge(scores, on="pair"), reference


@pytest.mark.parametrize("w_true", [0.2, 0.8])
def test_calibration_recovers_a_known_weight(w_true):
    pairs, reference = study_pairs(w_true, n_pairs=300, n_anchors=30, n_raters=10, ratings_per_pair=5)
    result = calibrate(pairs, reference, n_boot=200)
    assert abs(result.chosen_w - w_true) <= 0.1
    assert all(abs(w - w_true) <= 0.15 for w in result.fold_w)
    summary = result.summary.set_index("setting")
    # The calibrated weight beats the wrong end of the scale out of fold.
    wrong_end = "semantic only w=1" if w_true < 0.5 else "style only w=0"
    assert summary.loc["calibrated (out-of-fold)", "rho"] > summary.loc[wrong_end, "rho"] + 0.1
    for _, row in summary.iterrows():
        assert row["ci_low"] <= row["rho"] <= row["ci_high"]
    assert result.x_ref_source == "reference pairs"


def test_grid_is_fine_enough_and_contains_the_named_points():
    grid = weight_grid()
    assert len(grid) == 21 and grid[0] == 0.0 and grid[-1] == 1.0
    assert np.max(np.diff(grid)) <= 0.05 + 1e-12
    assert {0.0, 0.5, 1.0} <= set(grid.tolist())
    assert len(weight_grid(0.01)) == 101
    with pytest.raises(CpdmError, match="at most|must be in"):
        weight_grid(0.1)
    with pytest.raises(CpdmError, match="divide 1 evenly"):
        weight_grid(0.03)


def test_grouped_folds_never_split_an_anchor():
    rng = np.random.default_rng(0)
    anchors = rng.integers(0, 23, size=400)
    folds = grouped_folds(anchors, n_folds=5, seed=3)
    for anchor in np.unique(anchors):
        assert len(np.unique(folds[anchors == anchor])) == 1
    sizes = np.bincount(folds, minlength=5)
    assert (sizes > 0).all()
    assert sizes.max() - sizes.min() <= np.bincount(anchors).max()
    # Deterministic for a seed, different for another.
    np.testing.assert_array_equal(folds, grouped_folds(anchors, n_folds=5, seed=3))


def test_calibration_folds_keep_fit_and_test_anchors_apart(monkeypatch):
    """Spy on the fold loop: no test-fold anchor is ever among the fit pairs."""
    from cpdm.analysis import calibration

    pairs, reference = study_pairs(0.5, n_pairs=120, n_anchors=12, n_raters=6, ratings_per_pair=3)
    seen = []
    original = calibration.grouped_folds

    def spy(anchors, n_folds, seed):
        folds = original(anchors, n_folds, seed)
        for fold in range(n_folds):
            seen.append((set(anchors[folds == fold]), set(anchors[folds != fold])))
        return folds

    monkeypatch.setattr(calibration, "grouped_folds", spy)
    calibrate(pairs, reference, n_boot=20)
    assert len(seen) == 5
    for test_anchors, fit_anchors in seen:
        assert test_anchors and fit_anchors and not (test_anchors & fit_anchors)


def test_cm_grid_matches_the_metric_module():
    rng = np.random.default_rng(1)
    m_sem, m_style = rng.uniform(0.1, 1.5, 40), rng.uniform(0.001, 0.05, 40)
    ref_sem, ref_style = rng.uniform(0.5, 2, 60), rng.uniform(0.01, 0.1, 60)
    grid = weight_grid()
    scales = reference_scales(distance_grid(ref_sem, ref_style, grid))
    cm = cm_from_distances(distance_grid(m_sem, m_style, grid), scales)
    for row in (0, 4, 10, 20):
        w = grid[row]
        assert scales[row] == pytest.approx(metric.reference_scale(ref_sem, ref_style, w))
        np.testing.assert_allclose(cm[row], metric.cm_weighted(m_sem, m_style, w, scales[row]))


def test_clipped_pairs_tie_at_zero():
    cm = cm_from_distances(np.array([[0.0, 0.5, 1.0, 2.0, 4.0]]), np.array([1.0]))
    np.testing.assert_allclose(cm[0], [1.0, 0.75, 0.0, 0.0, 0.0])


def test_spearman_rows_match_scipy():
    from scipy import stats

    rng = np.random.default_rng(0)
    scores = rng.normal(size=(3, 30))
    scores[1, :10] = 0
    human = np.round(rng.normal(size=30))
    expected = [stats.spearmanr(row, human).statistic for row in scores]
    np.testing.assert_allclose(spearman_rows(scores, human), expected)


def test_ties_in_rho_go_to_the_paper_weight():
    grid = weight_grid()
    rho = np.zeros(21)
    rho[[4, 12]] = 0.9   # w = 0.2 and w = 0.6 tie
    assert best_w(grid, rho) == 0.6
    assert best_w(grid, np.full(21, np.nan)) == 0.5


def test_the_chosen_w_lies_between_grid_points_at_the_top_of_the_curve():
    grid = weight_grid()
    curves = np.stack([-(grid - 0.33) ** 2,                  # a parabola: its vertex exactly
                       -np.abs(grid - 0.62),                 # a peak: the fit's vertex, near the peak
                       -(grid - 0.02) ** 2,                  # near the end of the grid
                       -(grid + 0.3) ** 2,                   # falling from w = 0: it stays at the end
                       np.where(grid == 0.7, 1.0, 0.0),      # one grid point alone: the point itself
                       np.ones_like(grid)], axis=1)          # flat: the paper's w
    chosen = best_w_columns(grid, curves)
    assert chosen[0] == 0.33 and abs(chosen[1] - 0.62) < 0.02
    assert chosen[2] == 0.02 and chosen[3] == 0.0
    assert chosen[4] == 0.7 and chosen[5] == 0.5
    assert best_w(weight_grid(0.01), -(weight_grid(0.01) - 0.333) ** 2) == 0.333
    # The vertex stays within 0.1 of the grid's best w, whatever the fit says.
    skewed = np.where(grid <= 0.5, grid, 0.5 - 0.001 * (grid - 0.5))
    assert 0.5 <= best_w(grid, skewed) <= 0.6


def test_without_reference_distances_the_scale_comes_from_the_campaign():
    pairs, _ = study_pairs(0.8, n_pairs=150, n_anchors=15, n_raters=6, ratings_per_pair=3)
    result = calibrate(pairs, None, n_boot=20)
    assert result.x_ref_source == "campaign pairs"
    assert result.stats["x_ref_source"] == "campaign pairs"
    at_w = pairs["m_sem"] ** result.chosen_w * pairs["m_style"] ** (1 - result.chosen_w)
    assert result.x_ref == pytest.approx(np.median(at_w))


def test_too_few_anchors_for_the_folds():
    pairs, reference = study_pairs(0.5, n_pairs=40, n_anchors=3, n_raters=4, ratings_per_pair=2)
    with pytest.raises(CpdmError, match="at least 5 anchors.*got 3"):
        calibrate(pairs, reference, n_folds=5, n_boot=10)


def test_too_few_pairs():
    pairs, reference = study_pairs(0.5, n_pairs=8, n_anchors=8, n_raters=4, ratings_per_pair=2)
    with pytest.raises(CpdmError, match="at least 10 pairs.*got 8"):
        calibrate(pairs, reference, n_boot=10)


def test_constant_human_scores_are_refused():
    pairs, reference = study_pairs(0.5, n_pairs=40, n_anchors=10, n_raters=4, ratings_per_pair=2)
    with pytest.raises(CpdmError, match="same human score"):
        calibrate(pairs.assign(human=3.0), reference, n_boot=10)


def test_unscored_pairs_are_left_out():
    pairs, reference = study_pairs(0.5, n_pairs=100, n_anchors=10, n_raters=4, ratings_per_pair=2)
    pairs.loc[:19, "m_sem"] = np.nan
    result = calibrate(pairs, reference, n_boot=10)
    assert result.n_pairs == 80
    curve = result.curve
    assert list(curve.columns[:5]) == ["w", "rho_all", "rho_oof", "ci_low", "ci_high"]
    assert len(curve) == 21 and isinstance(curve, pd.DataFrame)


def test_w_std_is_w_on_the_reference_pairs_standardised_log_distances():
    pairs, reference = study_pairs(0.2, n_pairs=150, n_anchors=15, n_raters=6, ratings_per_pair=3)
    result = calibrate(pairs, reference, n_boot=50)
    s_sem = np.std(np.log(reference["m_sem"]), ddof=1)
    s_style = np.std(np.log(reference["m_style"]), ddof=1)

    def by_hand(w):
        return w * s_sem / (w * s_sem + (1 - w) * s_style)

    assert result.spreads_source == "reference pairs"
    assert (result.spreads.sem, result.spreads.style) == (pytest.approx(s_sem), pytest.approx(s_style))
    assert result.chosen_w_std == pytest.approx(by_hand(result.chosen_w))
    assert result.w_std_ci == (pytest.approx(by_hand(result.w_ci[0])), pytest.approx(by_hand(result.w_ci[1])))
    summary = result.summary.set_index("setting")
    # The paper's w = 0.5 in w_std terms is s_sem / (s_sem + s_style); the ends stay 0 and 1.
    assert summary.loc["paper w=0.5", "w_std"] == pytest.approx(s_sem / (s_sem + s_style))
    assert summary.loc["semantic only w=1", "w_std"] == 1.0 and summary.loc["style only w=0", "w_std"] == 0.0
    assert summary.loc["calibrated (out-of-fold)", "w_std_ci_low"] == pytest.approx(result.w_std_ci[0])
    assert result.curve["w_std"].to_numpy() == pytest.approx(by_hand(result.curve["w"].to_numpy()))
    stats = result.stats
    assert stats["w_std"] == pytest.approx(result.chosen_w_std)
    assert stats["log_sd"] == {"sem": pytest.approx(s_sem), "style": pytest.approx(s_style), "source": "reference pairs"}
    assert stats["equal_weight_w"] == pytest.approx(s_style / (s_sem + s_style))


def test_without_reference_distances_w_std_uses_the_campaign_pairs_spreads():
    pairs, _ = study_pairs(0.8, n_pairs=150, n_anchors=15, n_raters=6, ratings_per_pair=3)
    result = calibrate(pairs, None, n_boot=0)
    assert result.spreads_source == "campaign pairs"
    assert result.spreads.sem == pytest.approx(np.std(np.log(pairs["m_sem"]), ddof=1))
    assert np.isnan(result.w_std_ci[0])  # no resamples, no interval
