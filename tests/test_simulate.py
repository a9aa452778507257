"""Simulated raters: deterministic, idempotent, driven by what is known about each pair."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from cpdm.errors import CpdmError
from cpdm.demo.variants import CONTENT_CHANGED, STYLE_ERASED, UNRELATED
from cpdm.demo.simulate import add_simulated_ratings, synthetic_study
from cpdm.testing import create_synthetic_campaign
from cpdm.store.workspace import init_workspace


def ratings_frame(ws, campaign_id):
    return pd.read_sql_query(
        "SELECT r.pair, p.kind, v.name AS variant, ra.name AS rater, ra.role, r.question, r.value, r.skip_reason, "
        "r.seconds, r.too_fast, r.nonce FROM ratings r JOIN pairs p ON p.id = r.pair JOIN raters ra ON ra.id = r.rater "
        "LEFT JOIN generations g ON g.id = p.generation LEFT JOIN variants v ON v.id = g.variant "
        "WHERE r.campaign = ? ORDER BY r.pair, ra.name, r.question",
        ws.conn, params=(campaign_id,),
    )


def test_simulated_raters_are_marked_and_named(ws):
    campaign = create_synthetic_campaign(ws, n_anchors=3, scored=False)
    summary = add_simulated_ratings(ws, campaign, n_artists=2, n_lay=3)
    rows = ws.conn.execute("SELECT name, role, simulated FROM raters ORDER BY id").fetchall()
    assert rows == [("simulated artist 1", "artist", 1), ("simulated artist 2", "artist", 1),
                    ("simulated lay rater 1", "lay", 1), ("simulated lay rater 2", "lay", 1),
                    ("simulated lay rater 3", "lay", 1)]
    assert summary["raters"] == 5 and summary["pairs"] == 12 and summary["checks"] == 6


def test_every_pair_gets_the_campaign_overlap_per_role(ws):
    campaign = create_synthetic_campaign(ws, n_anchors=4, scored=False)  # overlap: 3 artists, 3 lay
    add_simulated_ratings(ws, campaign, n_artists=5, n_lay=2)
    frame = ratings_frame(ws, campaign)
    answered = frame[(frame["question"] == "copy") & (frame["kind"] == "normal") & frame["value"].notna()]
    per_pair = answered.groupby(["pair", "role"])["rater"].nunique().unstack()
    assert len(per_pair) == 16  # every normal pair (a skipped one went to another rater)
    assert (per_pair["artist"] == 3).all()
    assert (per_pair["lay"] == 2).all()   # only two lay raters exist
    assert set(frame["question"]) == {"content", "style", "copy"}
    # All five artists take part (they take turns), none sees a pair twice.
    assert frame.loc[frame["role"] == "artist", "rater"].nunique() == 5
    assert not frame.duplicated(["pair", "rater", "question"]).any()
    assignments = ws.conn.execute("SELECT COUNT(*), COUNT(DISTINCT pair || '-' || rater) FROM assignments").fetchone()
    assert assignments[0] == assignments[1]


def test_same_seed_same_ratings_and_rerun_adds_nothing(tmp_path):
    values = []
    for name in ("a", "b"):
        ws = init_workspace(tmp_path / name)
        campaign = create_synthetic_campaign(ws, n_anchors=3, seed=1)
        add_simulated_ratings(ws, campaign, seed=4)
        values.append(ratings_frame(ws, campaign)[["rater", "question", "value", "seconds"]])
        again = add_simulated_ratings(ws, campaign, seed=4)
        assert again["ratings"] == 0
        assert ws.conn.execute("SELECT COUNT(*) FROM raters").fetchone()[0] == 8
        ws.close()
    pd.testing.assert_frame_equal(values[0], values[1])


def test_attention_checks_get_the_expected_answers(ws):
    campaign = create_synthetic_campaign(ws, n_anchors=3)
    add_simulated_ratings(ws, campaign)
    frame = ratings_frame(ws, campaign)
    assert (frame.loc[frame["kind"] == "check_identical", "value"] == 5).all()
    assert (frame.loc[frame["kind"] == "check_unrelated", "value"] == 1).all()


def test_answers_follow_the_variant_when_there_are_no_scores(ws):
    campaign = create_synthetic_campaign(ws, n_anchors=12, scored=False)
    add_simulated_ratings(ws, campaign, n_artists=4, n_lay=4)
    frame = ratings_frame(ws, campaign).dropna(subset=["value"])
    mean = frame.groupby(["variant", "question"])["value"].mean()
    assert mean["original", "copy"] > mean[STYLE_ERASED, "copy"] > mean[UNRELATED, "copy"]
    assert mean[STYLE_ERASED, "content"] > mean[STYLE_ERASED, "style"] + 1
    assert mean[CONTENT_CHANGED, "style"] > mean[CONTENT_CHANGED, "content"] + 1
    # Artists weight style more: they call "content changed" (style kept) more of a copy than lay raters
    # do, "style erased" less.
    copy = frame[frame["question"] == "copy"].groupby(["variant", "role"])["value"].mean()
    assert copy[CONTENT_CHANGED, "artist"] > copy[CONTENT_CHANGED, "lay"]
    assert copy[STYLE_ERASED, "artist"] < copy[STYLE_ERASED, "lay"]


def test_answers_follow_the_scores_when_present(ws):
    campaign = create_synthetic_campaign(ws, n_anchors=10, seed=3)
    add_simulated_ratings(ws, campaign)
    frame = ratings_frame(ws, campaign).dropna(subset=["value"])
    scores = pd.read_sql_query("SELECT pair, m_sem, m_style FROM scores", ws.conn)
    content = frame[frame["question"] == "content"].groupby("pair")["value"].mean().rename("content")
    merged = scores.merge(content, left_on="pair", right_index=True)
    assert stats.spearmanr(merged["m_sem"], merged["content"]).statistic < -0.6


def test_skips_and_timings_look_like_real_submissions(ws):
    campaign = create_synthetic_campaign(ws, n_anchors=20, scored=False)
    add_simulated_ratings(ws, campaign)
    frame = ratings_frame(ws, campaign)
    skipped = frame[frame["value"].isna()]
    assert len(skipped) > 0 and skipped["skip_reason"].notna().all()
    assert (frame["seconds"] > 0).all()
    assert ((frame["seconds"] < 2.0) == frame["too_fast"].astype(bool)).all()
    # One nonce per submitted pair, shared by its questions.
    assert frame.groupby("nonce")["question"].nunique().eq(3).all()


def test_bad_input(ws):
    with pytest.raises(CpdmError, match="no campaign with id 99"):
        add_simulated_ratings(ws, 99)
    campaign = create_synthetic_campaign(ws, n_anchors=2)
    with pytest.raises(CpdmError, match="at least one simulated rater"):
        add_simulated_ratings(ws, campaign, n_artists=0, n_lay=0)
    assert ws.conn.execute("SELECT COUNT(*) FROM ratings").fetchone()[0] == 0


def test_synthetic_study_shapes():
    pairs, ratings, reference = synthetic_study(n_pairs=100, n_anchors=10, n_raters=6, ratings_per_pair=3, seed=2)
    assert len(pairs) == 100 and pairs["anchor"].nunique() == 10
    assert len(ratings) == 100 * 3 * 3
    assert not ratings.duplicated(["pair", "rater", "question"]).any()
    assert set(ratings["role"]) == {"artist", "lay"}
    assert ratings["value"].between(1, 5).all()
    assert len(reference) == 500 and (reference > 0).all().all()
    copy = ratings[ratings["question"] == "copy"].groupby("pair")["value"].mean()
    assert stats.spearmanr(pairs.set_index("pair").loc[copy.index, "cm_true"], copy).statistic > 0.7


def test_simulated_ratings_keep_the_load_counters_a_later_rater_relies_on(ws):
    """They go through claim and submit: the counters match a recount, and a new rater gets only open pairs."""
    from cpdm.rating.assignment import claim_next, rebuild_pair_load
    from cpdm.rating.auth import create_rater

    campaign = create_synthetic_campaign(ws, n_anchors=3, scored=False)
    add_simulated_ratings(ws, campaign, n_artists=2, n_lay=4)  # overlap 3: artists leave every pair open
    query = "SELECT pair, role, load FROM pair_load WHERE campaign = ? ORDER BY pair, role"
    counters = ws.conn.execute(query, (campaign,)).fetchall()
    rebuild_pair_load(ws, campaign)
    assert ws.conn.execute(query, (campaign,)).fetchall() == counters
    artist, _ = create_rater(ws, "late artist", "artist")
    lay, _ = create_rater(ws, "late lay rater", "lay")
    assert claim_next(ws, campaign, lay) is None  # four simulated lay raters filled every pair
    item = claim_next(ws, campaign, artist)
    assert item is not None and dict(((p, r), n) for p, r, n in counters)[item.pair, "artist"] < 3


def test_copy_follows_the_standardised_log_distances_so_the_planted_weights_are_w_std():
    from cpdm.demo.simulate import copy_column, pair_closeness
    from cpdm.metric import LogSpreads

    # log M_sem, log M_style: A (0, 0), B (1, −1), C (−1, 1); spreads s_sem = 1, s_style = 2.
    pairs = pd.DataFrame({"pair": [1, 2, 3], "kind": "normal", "variant": "original",
                          "m_sem": np.exp([0.0, 1.0, -1.0]), "m_style": np.exp([0.0, -1.0, 1.0])})
    out = pair_closeness(pairs, LogSpreads(sem=1.0, style=2.0)).set_index("pair")
    # Artists (content 0.35): A 0, B 0.35·1 + 0.65·(−0.5) = 0.025, C −0.025: C closest, B farthest.
    # On the raw logs B would be closest (0.35 − 0.65 = −0.3), and so would a mix of the two ranks.
    assert out[copy_column("artist")].to_dict() == {1: 0.5, 2: 0.0, 3: 1.0}
    # Lay raters (content 0.65): B 0.65 − 0.35·0.5 = 0.475, C −0.475: C closest as well.
    assert out[copy_column("lay")].to_dict() == {1: 0.5, 2: 0.0, 3: 1.0}
    # With equal spreads the standardised and raw logs agree: artists now find B closest.
    equal = pair_closeness(pairs, LogSpreads(sem=1.0, style=1.0)).set_index("pair")
    assert equal[copy_column("artist")].to_dict() == {1: 0.5, 2: 1.0, 3: 0.0}
    assert equal[copy_column("lay")].to_dict() == {1: 0.5, 2: 0.0, 3: 1.0}
