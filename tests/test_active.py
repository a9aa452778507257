"""The active 2AFC queue: flip points, the choice model, priorities, and the refresh of a campaign's queue."""

from __future__ import annotations

import math
import uuid
from datetime import datetime, timedelta, timezone

import numpy as np
import pytest

from cpdm.errors import CpdmError
from cpdm.rating import active
from cpdm.rating.active import (
    MIN_OPEN_TRIPLETS,
    MIN_PRIORITY,
    WARMUP_JUDGMENTS,
    ChoiceModel,
    active_priorities,
    campaign_candidates,
    fit_choice_model,
    flip_points,
    last_refresh,
    log_differences,
    refresh_due,
    refresh_priorities,
)
from cpdm.rating.assignment import claim_next
from cpdm.rating.auth import create_rater
from cpdm.rating.judgments import submit_judgment
from cpdm.rating.triplets import campaign_triplets, create_2afc_campaign
from tests.rating_fixtures import add_pairs
from tests.triplet_fixtures import TWO_AFC_TEXT

START = datetime(2026, 3, 1, 9, 0, tzinfo=timezone.utc)
PLANTED_W = 0.3


# --- Pure functions ------------------------------------------------------------------------------------------


def test_the_flip_point_equals_a_hand_computation():
    # First generation: M_sem 0.5, M_style 0.02; second: 0.8, 0.01.
    delta_sem, delta_style = log_differences(0.5, 0.02, 0.8, 0.01)
    assert delta_sem == pytest.approx(math.log(0.5 / 0.8))       # −0.4700
    assert delta_style == pytest.approx(math.log(2.0))            # 0.6931
    w_star = flip_points(delta_sem, delta_style)
    assert w_star == pytest.approx(0.693147 / (0.693147 + 0.470004), abs=1e-5)  # 0.5959
    # At w*, D_w of the two generations is equal: the order flips there.
    d_first = 0.5**w_star * 0.02 ** (1 - w_star)
    d_second = 0.8**w_star * 0.01 ** (1 - w_star)
    assert d_first == pytest.approx(d_second)
    below, above = w_star - 0.05, w_star + 0.05
    assert 0.5**below * 0.02 ** (1 - below) > 0.8**below * 0.01 ** (1 - below)   # style dominates: second closer
    assert 0.5**above * 0.02 ** (1 - above) < 0.8**above * 0.01 ** (1 - above)   # content dominates: first closer


def test_flip_points_outside_the_unit_interval_or_undefined():
    # Both distances smaller for the first: every w prefers it; w* lies outside [0, 1].
    same_sign = flip_points(*log_differences(0.4, 0.01, 0.8, 0.02))
    assert not 0 <= same_sign <= 1
    assert np.isnan(flip_points(0.3, 0.3))                        # Δs = Δt: no flip anywhere
    with pytest.raises(CpdmError, match="positive, known distances"):
        log_differences(0.0, 0.01, 0.8, 0.02)
    with pytest.raises(CpdmError, match="positive, known distances"):
        log_differences(np.nan, 0.01, 0.8, 0.02)


def simulated_choices(w, beta, n=400, per=3, seed=0):
    rng = np.random.default_rng(seed)
    delta_sem = rng.normal(0, 1, n)
    delta_style = rng.normal(0, 1.5, n)
    p = 1 / (1 + np.exp(beta * (w * delta_sem + (1 - w) * delta_style)))
    total = np.full(n, per, dtype=float)
    return delta_sem, delta_style, rng.binomial(per, p).astype(float), total


def test_the_choice_model_recovers_a_planted_w_inside_its_interval():
    delta_sem, delta_style, first, total = simulated_choices(PLANTED_W, 3.0)
    model = fit_choice_model(delta_sem, delta_style, first, total)
    assert model.low <= PLANTED_W <= model.high
    assert abs(model.w - PLANTED_W) < 0.05
    assert model.high - model.low < 0.15
    assert model.beta == pytest.approx(3.0, rel=0.25)
    assert model.judgments == total.sum()
    # Its prediction: σ(−β·x_w) by hand.
    x = model.w * 0.2 + (1 - model.w) * -0.1
    assert model.p_first(0.2, -0.1) == pytest.approx(1 / (1 + math.exp(model.beta * x)))


def test_a_warm_start_gives_the_same_fit():
    data = simulated_choices(0.6, 2.0, seed=3)
    cold = fit_choice_model(*data)
    warm = fit_choice_model(*data, previous=ChoiceModel(0.5, 1.7, 0.2, 0.8, 10))
    assert (warm.w, warm.low, warm.high) == (cold.w, cold.low, cold.high)
    assert warm.beta == pytest.approx(cold.beta, rel=1e-6)


def test_no_judgments_leave_every_w_possible_and_bad_input_is_refused():
    model = fit_choice_model([0.1], [0.2], [0.0], [0.0])
    assert (model.low, model.high, model.beta) == (0.0, 1.0, 0.0)
    assert model.p_first(1.0, -3.0) == 0.5
    with pytest.raises(CpdmError, match="confidence"):
        fit_choice_model([0.1], [0.2], [1.0], [1.0], confidence=1.5)
    with pytest.raises(CpdmError, match="grid step"):
        fit_choice_model([0.1], [0.2], [1.0], [1.0], step=0.5)
    with pytest.raises(CpdmError, match="at least one fitted choice model"):
        active_priorities([0.5], [0.1], [0.2], [], [True], [1.0])


def test_priorities_keep_only_flip_points_inside_the_interval_weighted_by_uncertainty():
    model = ChoiceModel(w=0.4, beta=2.0, low=0.3, high=0.5, judgments=100)
    delta_sem = np.array([-1.0, -1.0, -0.5, 1.0, 0.4] + [-1.0] * 10)
    delta_style = np.array([0.5, 0.6, 0.3, 1.0, -0.4] + [0.5] * 10)
    w_star = flip_points(delta_sem, delta_style)    # 1/3, 0.375, 0.375, none, 0.5, then 1/3 …
    open_ = np.ones(15, dtype=bool)
    open_[1] = False                                 # full: no room left
    priority = active_priorities(w_star, delta_sem, delta_style, [model], open_, np.ones(15))
    p = model.p_first(delta_sem, delta_style)
    expected = np.where(model.holds(w_star) & open_, p * (1 - p), 0.0)
    np.testing.assert_allclose(priority, expected)
    assert priority[0] > 0 and priority[1] == 0 and priority[3] == 0 and priority[4] > 0
    # The most uncertain is the one whose flip point sits nearest the fitted w.
    assert priority[2] == max(priority[:5])


def test_the_queue_falls_back_to_balanced_order_when_nothing_can_move_w():
    model = ChoiceModel(w=0.9, beta=2.0, low=0.85, high=0.95, judgments=100)
    n = MIN_OPEN_TRIPLETS + 5
    rng = np.random.default_rng(1)
    delta_sem, delta_style = rng.normal(0, 1, n), rng.normal(0, 1, n)
    w_star = np.full(n, 0.2)                         # no flip point inside [0.85, 0.95]
    fallback = np.linspace(1.0, 0.1, n)              # balanced order: the first ones first
    open_ = np.ones(n, dtype=bool)
    open_[0] = False
    priority = active_priorities(w_star, delta_sem, delta_style, [model], open_, fallback)
    offered = np.flatnonzero(priority > 0)
    assert list(offered) == list(range(1, MIN_OPEN_TRIPLETS + 1))   # the next open ones in balanced order
    assert np.all(np.diff(priority[offered]) < 0)                   # and in that order
    # A few informative triplets: they come first, topped up to MIN_OPEN_TRIPLETS with lower priorities.
    w_star[[5, 9]] = 0.9
    priority = active_priorities(w_star, delta_sem, delta_style, [model], open_, fallback)
    assert (priority > 0).sum() == MIN_OPEN_TRIPLETS
    assert priority[[5, 9]].min() > priority[np.setdiff1d(np.flatnonzero(priority > 0), [5, 9])].max()
    assert priority[[5, 9]].min() >= MIN_PRIORITY
    # Nothing open: nothing offered.
    assert not active_priorities(w_star, delta_sem, delta_style, [model], np.zeros(n, bool), fallback).any()


# --- A campaign's queue --------------------------------------------------------------------------------------


def scored_world(ws, n_anchors=6, gens=6, seed=0):
    """Anchors with ``gens`` scored generations each; an active 2afc campaign over them (checks included)."""
    anchors, pairs = add_pairs(ws, n_anchors, gens)
    rng = np.random.default_rng(seed)
    with ws.transaction() as conn:
        conn.executemany(
            "INSERT INTO scores (pair, semantic, style, m_sem, m_style) VALUES (?, 'clip', 'vgg', ?, ?)",
            [(pair, float(np.exp(rng.normal(np.log(0.5), 0.6))), float(np.exp(rng.normal(np.log(0.02), 0.9))))
             for pair in pairs])
    campaign = create_2afc_campaign(ws, "duel", pairs, design="active", per_anchor=3,
                                    overlap={"artist": 2, "lay": 2}, protocol_text=TWO_AFC_TEXT)
    return campaign, pairs


def distances(ws, pair):
    return ws.conn.execute("SELECT m_sem, m_style FROM scores WHERE pair = ?", (pair,)).fetchone()


def judge(ws, campaign, raters, count, w=PLANTED_W, seed=0):
    """``count`` copy judgments through claim_next and submit_judgment, choosing by a planted w (logistic)."""
    rng = np.random.default_rng(seed)
    now, done = START, 0
    while done < count:
        progressed = False
        for rater in raters:
            item = claim_next(ws, campaign, rater, now=now)
            if item is None:
                continue
            progressed = True
            now += timedelta(seconds=5)
            if item.kind == "check":
                side = "left" if ws.conn.execute("SELECT kind FROM pairs WHERE id = ?", (item.left_pair,)
                                                 ).fetchone()[0] == "check_identical" else "right"
            else:
                (sl, tl), (sr, tr) = distances(ws, item.left_pair), distances(ws, item.right_pair)
                x = w * math.log(sl / sr) + (1 - w) * math.log(tl / tr)
                side = "left" if rng.random() < 1 / (1 + math.exp(3 * x)) else "right"
                done += 1
            submit_judgment(ws, rater, campaign, item.triplet, {"copy": side, "content": side, "style": side},
                            nonce=uuid.uuid4().hex, now=now)
            if done >= count:
                break
        if not progressed:
            break
    return done


def raters_of(ws, n=6):
    return [create_rater(ws, f"rater {i}", "artist" if i % 2 else "lay")[0] for i in range(n)]


def test_the_warm_up_leaves_the_balanced_triplets_offered(ws):
    campaign, _ = scored_world(ws)
    before = campaign_triplets(ws, campaign)
    judge(ws, campaign, raters_of(ws), 10)
    result = refresh_priorities(ws, campaign)
    assert result.phase == "warm-up" and result.judgments == 10 and result.changed == 0
    assert campaign_triplets(ws, campaign)["priority"].tolist() == before["priority"].tolist()
    assert last_refresh(ws, campaign)["phase"] == "warm-up"


def test_after_a_refresh_only_triplets_whose_flip_point_lies_inside_the_interval_stay_offered(ws):
    campaign, _ = scored_world(ws, n_anchors=8, gens=7)
    raters = raters_of(ws, 8)
    assert judge(ws, campaign, raters, WARMUP_JUDGMENTS + 20) == WARMUP_JUDGMENTS + 20
    result = refresh_priorities(ws, campaign)
    assert result.phase == "active" and result.judgments == WARMUP_JUDGMENTS + 20
    candidates = campaign_candidates(ws, campaign)
    models = [ChoiceModel(**m) for m in result.models.values()]
    inside = np.zeros(len(candidates), dtype=bool)
    for model in models:
        inside |= model.holds(candidates["w_star"].to_numpy())
    informative = inside & candidates["open"].to_numpy()
    assert informative.sum() >= MIN_OPEN_TRIPLETS            # the case the rule is about: no top-up needed
    offered = candidates["priority"].to_numpy() > 0
    assert np.array_equal(offered, informative)
    assert result.offered == offered.sum() == result.informative
    # The planted w lies inside some group's interval; each offered priority is p(1 − p) under the fitted model.
    assert any(m.low <= PLANTED_W <= m.high for m in models)
    p = np.stack([m.p_first(candidates["delta_sem"], candidates["delta_style"]) * m.holds(candidates["w_star"])
                  for m in models])
    uncertainty = (p * (1 - p)).max(axis=0)
    np.testing.assert_allclose(candidates.loc[offered, "priority"], np.maximum(uncertainty[offered], MIN_PRIORITY))
    # Attention checks keep their priority.
    triplets = campaign_triplets(ws, campaign)
    assert (triplets.loc[triplets["kind"] == "check", "priority"] == 1.0).all()
    # Raters keep getting triplets, from the refreshed queue.
    item = claim_next(ws, campaign, raters[0], now=START + timedelta(hours=2))
    assert item is not None


def test_the_queue_is_never_empty_while_triplets_have_room(ws, monkeypatch):
    campaign, _ = scored_world(ws)
    judge(ws, campaign, raters_of(ws), WARMUP_JUDGMENTS)
    # An interval that no flip point falls in: the queue falls back to balanced order.
    monkeypatch.setattr(active, "group_models", lambda *_: {"all": ChoiceModel(0.5, 2.0, 2.0, 2.0, 40)})
    result = refresh_priorities(ws, campaign)
    candidates = campaign_candidates(ws, campaign)
    assert result.informative == 0
    assert result.offered == min(MIN_OPEN_TRIPLETS, int(candidates["open"].sum())) > 0
    assert (candidates.loc[candidates["priority"] > 0, "open"]).all()


def test_refresh_due_counts_judgments_since_the_last_refresh(ws):
    campaign, _ = scored_world(ws)
    raters = raters_of(ws)
    assert not refresh_due(ws, campaign, every=5)
    judge(ws, campaign, raters, 5)
    assert refresh_due(ws, campaign, every=5) and not refresh_due(ws, campaign, every=6)
    refresh_priorities(ws, campaign)
    assert not refresh_due(ws, campaign, every=1)
    assert last_refresh(ws, campaign)["seen"] == 5


def test_refresh_refuses_campaigns_without_a_queue(ws):
    _, pairs = scored_world(ws)
    balanced = create_2afc_campaign(ws, "plain", pairs, design="balanced", protocol_text=TWO_AFC_TEXT)
    with pytest.raises(CpdmError, match="has the balanced design; only active 2afc campaigns"):
        refresh_priorities(ws, balanced)
    with pytest.raises(CpdmError, match="no campaign with id 999"):
        refresh_priorities(ws, 999)
    assert not refresh_due(ws, balanced, every=1)


def test_an_unscored_campaign_cannot_be_refreshed(ws):
    _, pairs = add_pairs(ws, 3, 3)
    campaign = create_2afc_campaign(ws, "blind", pairs, design="active", protocol_text=TWO_AFC_TEXT)
    with pytest.raises(CpdmError, match="needs metric scores"):
        refresh_priorities(ws, campaign)
