"""Calibration of w from 2AFC judgments: a planted w is recovered, artists vs lay, bad input."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from cpdm.analysis.two_afc import with_pair_values
from cpdm.analysis.two_afc_calibration import calibrate_2afc, compare_groups_2afc
from cpdm.errors import CpdmError


def planted_pairs(n_anchors=30, per_anchor=6, seed=0):
    """Pairs with independent log-normal distances (so w is identifiable), and reference distances."""
    rng = np.random.default_rng(seed)
    n = n_anchors * per_anchor
    pairs = pd.DataFrame({"pair": np.arange(1, n + 1), "anchor": np.repeat(np.arange(n_anchors), per_anchor),
                          "m_sem": np.exp(rng.normal(np.log(0.5), 0.6, n)),
                          "m_style": np.exp(rng.normal(np.log(0.02), 0.9, n))})
    reference = pd.DataFrame({"m_sem": np.exp(rng.normal(np.log(0.9), 0.4, 400)),
                              "m_style": np.exp(rng.normal(np.log(0.05), 0.6, 400))})
    return pairs, reference


def simulate_choices(pairs, w_true, raters=5, beta=4.0, seed=1, sd_sem=0.6, sd_style=0.9):
    """Every two pairs of an anchor as a triplet; each rater picks the first with a logistic choice model.

    P(first judged more of a copy) = σ(β · (s(second) − s(first))), s = w·z_sem + (1 − w)·z_style, the log
    distances standardised (so w is what the raters weigh, the planted w_std); lower s = closer = more of a copy.
    """
    rng = np.random.default_rng(seed)
    s = (w_true * np.log(pairs["m_sem"]) / sd_sem + (1 - w_true) * np.log(pairs["m_style"]) / sd_style).to_numpy()
    index = {pair: i for i, pair in enumerate(pairs["pair"])}
    rows, triplet = [], 0
    for anchor, sub in pairs.groupby("anchor"):
        ids = sub["pair"].tolist()
        for i in range(len(ids)):
            for j in range(i + 1, len(ids)):
                first, second = ids[i], ids[j]
                prob = 1 / (1 + np.exp(-beta * (s[index[second]] - s[index[first]])))
                n_first = int(rng.binomial(raters, prob))
                triplet += 1
                rows.append({"triplet": triplet, "anchor": anchor, "first_pair": first, "second_pair": second,
                             "n_first": n_first, "n_second": raters - n_first, "n_cant_tell": 0, "n": raters,
                             "p": n_first / raters})
    return with_pair_values(pd.DataFrame(rows), pairs, ["m_sem", "m_style"])


@pytest.mark.parametrize("w_true", [0.25, 0.75])
def test_a_planted_w_is_recovered_from_simulated_2afc_judgments(w_true):
    pairs, reference = planted_pairs()
    triplets = simulate_choices(pairs, w_true)
    result = calibrate_2afc(triplets, reference, n_boot=200)
    # The choice model weighs standardised log distances: the planted weight is w_std.
    assert result.spreads is not None
    w_std = result.chosen_w_std
    assert abs(w_std - w_true) <= 0.1, (w_std, result.chosen_w)
    low, high = result.w_std_ci
    assert low - 0.02 <= w_true <= high + 0.02
    assert result.w_ci[0] <= result.chosen_w <= result.w_ci[1]
    summary = result.summary.set_index("setting")
    wrong_end = "semantic only w=1" if w_true < 0.5 else "style only w=0"
    assert summary.loc["calibrated (out-of-fold)", "score"] > summary.loc[wrong_end, "score"] + 0.03
    assert result.statistic == "2afc" and result.value_column == "score"
    assert result.stats["judgment_kind"] == "2afc"
    assert set(result.curve.columns) >= {"w", "score_all", "score_oof", "ci_low", "ci_high", "w_std"}
    assert result.n_pairs == len(triplets) and result.n_anchors == 30


def test_the_out_of_fold_score_is_the_mean_of_the_per_triplet_scores():
    pairs, reference = planted_pairs(n_anchors=12)
    triplets = simulate_choices(pairs, 0.5)
    result = calibrate_2afc(triplets, reference, n_boot=0)
    assert result.summary.iloc[0]["score"] == pytest.approx(result.out_of_fold.mean())
    assert np.isnan(result.w_ci[0])


def test_calibration_without_reference_pairs_uses_the_campaign_pairs():
    pairs, _ = planted_pairs(n_anchors=12)
    result = calibrate_2afc(simulate_choices(pairs, 0.5), None, n_boot=50)
    assert result.x_ref_source == "campaign pairs"
    assert np.isfinite(result.chosen_w)


def test_bad_input_is_refused():
    pairs, reference = planted_pairs(n_anchors=12)
    triplets = simulate_choices(pairs, 0.5)
    with pytest.raises(CpdmError, match="at least 10 triplets"):
        calibrate_2afc(triplets.head(5), reference)
    with pytest.raises(CpdmError, match="split evenly"):
        calibrate_2afc(triplets.assign(p=0.5), reference)
    with pytest.raises(CpdmError, match="at least 5 anchors"):
        calibrate_2afc(triplets[triplets["anchor"] < 3], reference)


def test_artists_and_lay_raters_w_differ_as_planted():
    pairs, reference = planted_pairs(n_anchors=30)
    by_group = {"artists": simulate_choices(pairs, 0.25, seed=2), "lay": simulate_choices(pairs, 0.75, seed=3)}
    comparison = compare_groups_2afc(by_group, reference, n_boot=200)
    assert comparison.statistic == "2afc"
    assert comparison.difference_std == pytest.approx(-0.5, abs=0.15)
    assert comparison.difference_std_ci[1] < 0
    row = comparison.row()
    assert row["triplets_artists"] == len(by_group["artists"])
    assert "score" in comparison.curves["lay"]
    with pytest.raises(CpdmError, match="exactly two"):
        compare_groups_2afc({"artists": by_group["artists"]}, reference)


def test_a_planted_raw_w_is_recovered_when_raters_weigh_raw_log_distances():
    pairs, reference = planted_pairs()
    triplets = simulate_choices(pairs, 0.6, sd_sem=1.0, sd_style=1.0, beta=2.0)
    result = calibrate_2afc(triplets, reference, n_boot=100)
    assert abs(result.chosen_w - 0.6) <= 0.1
    assert result.w_ci[0] - 0.02 <= 0.6 <= result.w_ci[1] + 0.02
