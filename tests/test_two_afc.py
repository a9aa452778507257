"""2AFC analysis on frames: p per triplet, the BAPPS score by hand, alpha on choices, the split-half ceiling,
Bradley–Terry strengths of planted variants."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from cpdm.analysis.bradley_terry import fit_strengths, generation_strengths, variant_strengths
from cpdm.analysis.judgments import analysis_judgments, chosen_side, triplet_choices
from cpdm.analysis.two_afc import (
    choice_alpha,
    score_metric,
    score_table,
    split_half_agreement,
    two_afc_scores,
)
from cpdm.errors import CpdmError


def judgment_rows(rows):
    """Judgments frame from (triplet, anchor, first_pair, second_pair, rater, chosen) tuples."""
    frame = pd.DataFrame(rows, columns=["triplet", "anchor", "first_pair", "second_pair", "rater", "chosen"])
    frame["question"] = "copy"
    frame["kind"] = "normal"
    frame["flagged"] = False
    frame["simulated"] = False
    frame["first_generation"] = frame["first_pair"] * 10
    frame["second_generation"] = frame["second_pair"] * 10
    frame["first_variant"] = "original"
    frame["second_variant"] = "esd"
    return frame


def test_chosen_side_reads_sides_back_into_the_stored_order():
    assert chosen_side("left", 5, 3, 3) == "second"
    assert chosen_side("right", 5, 3, 3) == "first"
    assert chosen_side("left", 3, 5, 3) == "first"
    assert chosen_side("cant_tell", 3, 5, 3) == "cant_tell"
    assert chosen_side(None, 3, 5, 3) is None


def test_p_counts_cant_tell_half_to_each_side_and_skips_nowhere():
    frame = judgment_rows([
        (1, 1, 10, 11, 1, "first"), (1, 1, 10, 11, 2, "first"), (1, 1, 10, 11, 3, "cant_tell"),
        (1, 1, 10, 11, 4, "second"), (1, 1, 10, 11, 5, None),
        (2, 2, 20, 21, 1, "second"),
    ])
    triplets = triplet_choices(frame).set_index("triplet")
    assert triplets.loc[1, "n"] == 4
    assert triplets.loc[1, "p"] == pytest.approx((2 + 0.5) / 4)
    assert triplets.loc[2, "p"] == 0.0
    assert (triplets.loc[1, ["n_first", "n_second", "n_cant_tell"]].tolist()) == [2, 1, 1]


def test_flagged_raters_and_check_triplets_are_left_out_by_default():
    frame = judgment_rows([(1, 1, 10, 11, 1, "first"), (1, 1, 10, 11, 2, "second"), (2, 1, 12, 13, 1, "first"),
                           (1, 1, 10, 11, 3, None)])
    frame.loc[1, "flagged"] = True
    frame.loc[2, "kind"] = "check"
    kept = analysis_judgments(frame)
    assert kept["rater"].tolist() == [1] and kept["triplet"].tolist() == [1]
    assert len(analysis_judgments(frame, include_flagged=True)) == 2


def test_the_2afc_score_equals_a_hand_computation():
    # Four triplets; p = share choosing the first pair.
    p = np.array([0.8, 0.25, 0.6, 1.0])
    first = np.array([0.9, 0.9, 0.5, 0.2])
    second = np.array([0.1, 0.3, 0.5, 0.7])
    # prefers first: 0.8; prefers first: 0.25; tie: 0.5; prefers second: 1 - 1.0 = 0.
    np.testing.assert_allclose(two_afc_scores(p, first, second), [0.8, 0.25, 0.5, 0.0])
    triplets = pd.DataFrame({"p": p, "a": first, "b": second, "anchor": [1, 1, 2, 3]})
    result = score_metric(triplets, "a", "b", n_boot=0)
    assert result.score == pytest.approx((0.8 + 0.25 + 0.5 + 0.0) / 4)
    assert result.ties == 1 and result.triplets == 4 and result.anchors == 3
    assert np.isnan(result.ci_low)
    with pytest.raises(CpdmError, match=r"\[0, 1\]"):
        two_afc_scores([1.5], [0.0], [1.0])
    with pytest.raises(CpdmError, match="one entry per triplet"):
        two_afc_scores([0.5, 0.5], [0.0], [1.0])
    # An unscored pair makes its triplet's score unknown, and it is left out of the mean.
    assert np.isnan(two_afc_scores([0.5], [np.nan], [1.0])[0])


def test_score_table_from_judgments_and_pair_values():
    frame = judgment_rows([
        (1, 1, 10, 11, 1, "first"), (1, 1, 10, 11, 2, "first"), (1, 1, 10, 11, 3, "second"),
        (2, 2, 20, 21, 1, "second"), (2, 2, 20, 21, 2, "cant_tell"),
        (3, 3, 30, 31, 1, "first"),
    ])
    triplets = triplet_choices(frame)
    pairs = pd.DataFrame({"pair": [10, 11, 20, 21, 30, 31], "CM": [0.9, 0.2, 0.4, 0.6, 0.3, 0.3]})
    table = score_table(triplets, pairs, {"CM": "CM"}, n_boot=200)
    row = table.iloc[0]
    # Triplet 1: p = 2/3, CM prefers first; triplet 2: p = 0.25, prefers second -> 0.75; triplet 3: a tie -> 0.5.
    assert row["score"] == pytest.approx((2 / 3 + 0.75 + 0.5) / 3)
    assert row["ci_low"] <= row["score"] <= row["ci_high"]
    assert row["ties"] == 1 and row["triplets"] == 3


def test_alpha_on_choices_is_one_when_raters_agree_and_low_when_they_do_not():
    rng = np.random.default_rng(0)
    agree, random = [], []
    for triplet in range(40):
        side = "first" if triplet % 2 else "second"
        for rater in range(4):
            agree.append((triplet, triplet // 4, 1, 2, rater, side))
            random.append((triplet, triplet // 4, 1, 2, rater, ["first", "second"][rng.integers(2)]))
    assert choice_alpha(judgment_rows(agree), "copy", n_boot=50).alpha == pytest.approx(1.0)
    assert abs(choice_alpha(judgment_rows(random), "copy", n_boot=50).alpha) < 0.2


def test_split_half_agreement_by_hand():
    # Two raters per triplet: each half is one rater. Agreeing raters score 1, disagreeing ones 0.
    rows = [(0, 0, 1, 2, 1, "first"), (0, 0, 1, 2, 2, "first"), (1, 1, 3, 4, 1, "first"), (1, 1, 3, 4, 2, "second"),
            (2, 2, 5, 6, 1, "second"), (2, 2, 5, 6, 2, "second"), (3, 3, 7, 8, 1, "cant_tell"),
            (3, 3, 7, 8, 2, "first"), (4, 4, 9, 10, 1, "first")]
    result = split_half_agreement(judgment_rows(rows), "copy", n_splits=10, n_boot=100)
    # Triplet 3: the can't-tell half ties (0.5); the other half prefers first, scored on p = 0.5 -> 0.5.
    assert result["agreement"] == pytest.approx((1 + 0 + 1 + 0.5) / 4)
    assert result["triplets"] == 4


def simulated_variant_triplets(strengths: dict[str, float], n_anchors=20, raters=5, seed=0) -> pd.DataFrame:
    """Triplets between generations of the variants, choices drawn from the Bradley–Terry model."""
    rng = np.random.default_rng(seed)
    names = list(strengths)
    rows, triplet, pair = [], 0, 0
    for anchor in range(n_anchors):
        generation_of = {}
        for name in names:
            for _ in range(2):
                pair += 1
                generation_of[pair] = name
        pair_ids = list(generation_of)
        for i in range(len(pair_ids)):
            for j in range(i + 1, len(pair_ids)):
                first, second = pair_ids[i], pair_ids[j]
                diff = strengths[generation_of[first]] - strengths[generation_of[second]]
                prob = 1 / (1 + np.exp(-diff))
                n_first = int(rng.binomial(raters, prob))
                triplet += 1
                rows.append({"triplet": triplet, "anchor": anchor, "first_pair": first, "second_pair": second,
                             "first_generation": first, "second_generation": second,
                             "first_variant": generation_of[first], "second_variant": generation_of[second],
                             "n_first": n_first, "n_second": raters - n_first, "n_cant_tell": 0, "n": raters,
                             "p": n_first / raters})
    return pd.DataFrame(rows)


def test_bradley_terry_orders_planted_variants():
    planted = {"original": 1.5, "sld": 0.5, "uce": -0.3, "esd": -1.5}
    triplets = simulated_variant_triplets(planted)
    table = variant_strengths(triplets, n_boot=100)
    assert table["variant"].tolist() == ["original", "sld", "uce", "esd"]
    strengths = table.set_index("variant")["strength"]
    assert strengths.sum() == pytest.approx(0.0, abs=1e-9)
    # Differences come back close to the planted ones.
    assert strengths["original"] - strengths["esd"] == pytest.approx(3.0, abs=0.5)
    for _, row in table.iterrows():
        assert row["ci_low"] <= row["strength"] <= row["ci_high"]
        assert row["anchors"] == 20
    # The original's interval lies clear of the ESD's.
    assert table.iloc[0]["ci_low"] > table.iloc[-1]["ci_high"]


def test_generation_strengths_within_each_anchor():
    triplets = simulated_variant_triplets({"original": 2.0, "esd": -2.0}, n_anchors=3, raters=20)
    table = generation_strengths(triplets, n_boot=50)
    assert set(table["anchor"]) == {0, 1, 2}
    for _, sub in table.groupby("anchor"):
        assert sub["strength"].sum() == pytest.approx(0.0, abs=1e-9)
        assert sub.loc[sub["variant"] == "original", "strength"].min() > sub.loc[sub["variant"] == "esd",
                                                                                 "strength"].max()


def test_bradley_terry_refuses_triplets_without_two_variants():
    triplets = simulated_variant_triplets({"original": 0.0}, n_anchors=2)
    with pytest.raises(CpdmError, match="two different variants"):
        variant_strengths(triplets)


def test_fit_strengths_matches_the_two_item_closed_form():
    # Two items, 30 wins against 10: θ1 − θ2 = log 3 (the regularisation moves it a hair).
    theta = fit_strengths(np.array([[0.0, 30.0], [10.0, 0.0]]), alpha=1e-6)
    assert theta[0] - theta[1] == pytest.approx(np.log(3), abs=1e-3)
