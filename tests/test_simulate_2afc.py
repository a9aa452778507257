"""Simulated raters in comparative (2AFC) campaigns: the claim and submit path, the planted weights, the queue."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from cpdm.demo.simulate import add_simulated_judgments, add_simulated_ratings
from cpdm.demo.variants import ORIGINAL, UNRELATED
from cpdm.errors import CpdmError
from cpdm.rating.active import WARMUP_JUDGMENTS, fit_choice_model, last_refresh
from cpdm.rating.triplets import create_2afc_campaign
from cpdm.store.workspace import init_workspace
from cpdm.testing import create_synthetic_campaign
from tests.triplet_fixtures import TWO_AFC_TEXT


def normal_pairs(ws, campaign):
    return [r[0] for r in ws.conn.execute(
        "SELECT cp.pair FROM campaign_pairs cp JOIN pairs p ON p.id = cp.pair AND p.kind = 'normal' "
        "WHERE cp.campaign = ? ORDER BY cp.pair", (campaign,))]


def duel(ws, design="balanced", scored=True, n_anchors=8, overlap=None, name="duel"):
    ratings = create_synthetic_campaign(ws, name=f"{name}-pairs", n_anchors=n_anchors, seeds_per_variant=2,
                                        scored=scored)
    return create_2afc_campaign(ws, name, normal_pairs(ws, ratings), design=design, protocol_text=TWO_AFC_TEXT,
                                overlap=overlap or {"artist": 2, "lay": 2})


def judgments_frame(ws, campaign):
    return pd.read_sql_query(
        "SELECT j.triplet, t.kind, t.first_pair, t.second_pair, j.question, j.answer, j.chosen_pair, j.left_pair, "
        "j.right_pair, j.nonce, j.seconds, ra.role, ra.simulated, ra.name AS rater "
        "FROM judgments j JOIN triplets t ON t.id = j.triplet JOIN raters ra ON ra.id = j.rater "
        "WHERE j.campaign = ? ORDER BY j.triplet, ra.name, j.question", ws.conn, params=(campaign,))


def test_simulated_raters_fill_a_2afc_campaign_through_the_claim_path(ws):
    campaign = duel(ws)
    summary = add_simulated_ratings(ws, campaign, n_artists=3, n_lay=3)   # the command's entry point dispatches
    frame = judgments_frame(ws, campaign)
    assert summary["judgments"] == frame.groupby(["triplet", "rater"]).ngroups > 0
    assert frame["simulated"].all() and set(frame["question"]) == {"copy", "content", "style"}
    # Overlap per role (skips aside), never a triplet twice for one rater, sides as recorded with the assignment.
    normal = frame[(frame["kind"] == "normal") & (frame["question"] == "copy")]
    answered = normal.dropna(subset=["answer"]).groupby(["triplet", "role"]).size()
    assert answered.max() == 2 and (answered == 2).mean() > 0.9
    assert not frame.duplicated(["triplet", "rater", "question"]).any()
    assigned = pd.read_sql_query("SELECT triplet, rater, left_pair FROM triplet_assignments WHERE campaign = ?",
                                 ws.conn, params=(campaign,))
    assert len(assigned) == frame.groupby(["triplet", "rater"]).ngroups
    # Both sides chosen, "can't tell" kept as its own answer, a chosen pair only for a side.
    copy = frame[frame["question"] == "copy"]
    assert {"left", "right"} <= set(copy["answer"].dropna())
    assert copy.loc[copy["answer"] == "cant_tell", "chosen_pair"].isna().all()
    sides = copy[copy["answer"].isin(["left", "right"])]
    expected = np.where(sides["answer"] == "left", sides["left_pair"], sides["right_pair"])
    assert (sides["chosen_pair"].to_numpy() == expected).all()
    # One nonce per judgment, shared by its questions; every check answered with the anchor's side.
    assert frame.groupby("nonce")["question"].nunique().eq(3).all()
    checks = frame[(frame["kind"] == "check") & frame["answer"].notna()]
    assert len(checks) > 0 and (checks["chosen_pair"] == checks["first_pair"]).all()


def test_same_seed_same_judgments_and_a_rerun_adds_nothing(tmp_path):
    frames = []
    for run in range(2):
        ws = init_workspace(tmp_path / f"ws{run}")
        campaign = duel(ws)
        add_simulated_judgments(ws, campaign, seed=5)
        frames.append(judgments_frame(ws, campaign)[["triplet", "rater", "question", "answer", "seconds"]])
        assert add_simulated_judgments(ws, campaign, seed=5)["judgments"] == 0
        ws.close()
    pd.testing.assert_frame_equal(frames[0], frames[1])


def test_choices_follow_the_variants_when_nothing_is_scored(ws):
    campaign = duel(ws, scored=False, n_anchors=10)
    add_simulated_judgments(ws, campaign)
    frame = judgments_frame(ws, campaign)
    variant = dict(ws.conn.execute("SELECT p.id, v.name FROM pairs p JOIN generations g ON g.id = p.generation "
                                   "JOIN variants v ON v.id = g.variant").fetchall())
    copy = frame[(frame["question"] == "copy") & frame["answer"].isin(["left", "right"])]
    duels = copy[copy["first_pair"].map(variant).isin([ORIGINAL, UNRELATED])
                 & copy["second_pair"].map(variant).isin([ORIGINAL, UNRELATED])
                 & (copy["first_pair"].map(variant) != copy["second_pair"].map(variant))]
    assert len(duels) >= 10
    assert (duels["chosen_pair"].map(variant) == ORIGINAL).mean() > 0.8   # the near-copy is "more of a copy"


def test_choices_follow_the_planted_weights_of_each_role(ws):
    """Artists weigh content less than lay raters: the choice model fitted to each role's judgments says so."""
    campaign = duel(ws, n_anchors=16, overlap={"artist": 3, "lay": 3})
    add_simulated_judgments(ws, campaign, n_artists=3, n_lay=3)
    frame = judgments_frame(ws, campaign)
    scores = dict(ws.conn.execute("SELECT pair, m_sem || ',' || m_style FROM scores").fetchall())
    copy = frame[(frame["question"] == "copy") & (frame["kind"] == "normal") & frame["answer"].notna()]
    fitted = {}
    for role, sub in copy.groupby("role"):
        one = np.array([list(map(float, scores[p].split(","))) for p in sub["first_pair"]])
        two = np.array([list(map(float, scores[p].split(","))) for p in sub["second_pair"]])
        first = np.where(sub["answer"] == "cant_tell", 0.5, (sub["chosen_pair"] == sub["first_pair"]).astype(float))
        fitted[role] = fit_choice_model(np.log(one[:, 0] / two[:, 0]), np.log(one[:, 1] / two[:, 1]), first,
                                        np.ones(len(sub)))
    assert fitted["artist"].w < fitted["lay"].w
    assert fitted["artist"].beta > 0 and fitted["lay"].beta > 0


def test_an_active_campaign_is_refreshed_as_the_judgments_come_in(ws):
    campaign = duel(ws, design="active", n_anchors=6)
    summary = add_simulated_judgments(ws, campaign, n_artists=3, n_lay=3)
    assert summary["judgments"] > WARMUP_JUDGMENTS
    record = last_refresh(ws, campaign)
    assert record is not None and record["phase"] == "active" and record["judgments"] > WARMUP_JUDGMENTS


def test_bad_input(ws):
    ratings = create_synthetic_campaign(ws, n_anchors=3)
    with pytest.raises(CpdmError, match="rates pairs; simulated judgments fill 2afc campaigns"):
        add_simulated_judgments(ws, ratings)
    with pytest.raises(CpdmError, match="no campaign with id 99"):
        add_simulated_judgments(ws, 99)
    campaign = duel(ws, name="d2")
    with pytest.raises(CpdmError, match="at least one simulated rater"):
        add_simulated_judgments(ws, campaign, n_artists=0, n_lay=0)


def test_the_command_fills_a_2afc_campaign(ws):
    from click.testing import CliRunner

    from cpdm.cli import cli

    duel(ws)
    result = CliRunner().invoke(cli, ["simulate-ratings", "--campaign", "duel", "--artists", "2", "--lay", "2",
                                      "--workspace", str(ws.root)])
    assert result.exit_code == 0, result.output
    assert "simulated judgments added from 4 raters on" in result.output
