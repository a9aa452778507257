"""Judging triplets: the assignment rules of pairs (overlap per role, least-judged first, then priority, stale
reclaim, never twice), random recorded sides, "can't tell", the submit contract, attention checks, progress."""

from __future__ import annotations

import uuid
from collections import Counter
from datetime import timedelta

import pytest

from cpdm.errors import CpdmError
from cpdm.rating.assignment import Item, claim_next, held_item, next_item, protocol_for, rebuild_pair_load
from cpdm.rating.auth import create_rater, get_rater, revoke_rater
from cpdm.rating.campaigns import create_campaign, set_campaign_status
from cpdm.rating.judgments import TripletItem, judgment_answers_of, submit_judgment
from cpdm.rating.submit import (
    attention_check_failures, campaign_status, protocol_for_rater, rater_overall_progress, rater_progress,
    role_complete,
)
from cpdm.rating.triplets import campaign_triplets, set_priorities
from cpdm.store.time import utc_now
from tests.rating_fixtures import ANSWERS, add_pairs, default_protocol_text
from tests.triplet_fixtures import CHOICES, judge_all, make_triplet_world, two_afc_protocol_with


def nonce() -> str:
    return uuid.uuid4().hex


def loads(ws, campaign, role) -> dict[int, int]:
    return dict(ws.conn.execute("SELECT triplet, load FROM triplet_load WHERE campaign = ? AND role = ?",
                                (campaign, role)).fetchall())


def count(ws, table: str) -> int:
    return ws.conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]


def triplet_ids(ws, campaign, kind="normal") -> list[int]:
    frame = campaign_triplets(ws, campaign)
    return sorted(int(t) for t in frame[frame["kind"] == kind]["triplet"])


# --- Assignment -------------------------------------------------------------------------------------------------


def test_overlap_per_role_is_met_exactly_and_no_rater_gets_a_triplet_twice(ws):
    world = make_triplet_world(ws, 2, 4, overlap={"artist": 2, "lay": 1})
    artists = [create_rater(ws, f"artist{i}", "artist")[0] for i in range(3)]
    lays = [create_rater(ws, f"lay{i}", "lay")[0] for i in range(2)]
    now, seen = utc_now(), {}
    for rater in artists + lays:
        items, now = judge_all(ws, rater, now)
        seen[rater.name] = [item.triplet for item in items]
    for name, triplets in seen.items():
        assert len(triplets) == len(set(triplets)), f"{name} got a triplet twice"
    triplets = triplet_ids(ws, world.campaign)
    assert len(triplets) == 8
    assert Counter(t for r in artists for t in seen[r.name]) == {t: 2 for t in triplets}
    assert Counter(t for r in lays for t in seen[r.name]) == {t: 1 for t in triplets}
    assert seen["lay1"] == []  # the first lay rater took every triplet
    assert loads(ws, world.campaign, "artist") == {t: 2 for t in triplets}
    assert role_complete(ws, world.campaign, "artist") and role_complete(ws, world.campaign, "lay")
    # Each judgment is one row per question of the protocol.
    assert count(ws, "judgments") == 3 * (8 * 2 + 8)


def test_least_judged_first_then_highest_priority(ws):
    world = make_triplet_world(ws, 1, 4, overlap={"artist": 2})
    triplets = triplet_ids(ws, world.campaign)  # 4
    favourite = triplets[2]
    set_priorities(ws, world.campaign, {favourite: 5, triplets[3]: 3})
    a, b, c = (create_rater(ws, n, "artist")[0] for n in "abc")
    now = utc_now()
    # Every triplet has load 0: the highest priority comes first, then the next.
    assert next_item(ws, a, now=now).triplet == favourite
    assert next_item(ws, b, now=now).triplet == triplets[3]
    # favourite and triplets[3] now have load 1: an untouched triplet (priority 1) wins over them.
    assert next_item(ws, c, now=now).triplet in triplets[:2]


def test_among_equals_the_order_is_random_per_rater_and_reproducible(ws):
    make_triplet_world(ws, 3, 5, overlap={"artist": 1, "lay": 1})  # 15 triplets
    artist, _ = create_rater(ws, "artist", "artist")
    lay, _ = create_rater(ws, "lay", "lay")
    now = utc_now()
    order_artist = [i.triplet for i in judge_all(ws, artist, now)[0]]
    order_lay = [i.triplet for i in judge_all(ws, lay, now)[0]]
    assert sorted(order_artist) == sorted(order_lay) and len(order_artist) == 15
    assert order_artist != order_lay and order_artist != sorted(order_artist)


def test_priority_zero_is_never_offered_until_raised(ws):
    world = make_triplet_world(ws, 1, 4, overlap={"artist": 1})
    triplets = triplet_ids(ws, world.campaign)
    set_priorities(ws, world.campaign, {t: 0 for t in triplets[1:]})
    rater, _ = create_rater(ws, "ann", "artist")
    items, now = judge_all(ws, rater, utc_now())
    assert [i.triplet for i in items] == [triplets[0]]
    assert rater_progress(ws, rater, world.campaign).total == 1
    assert role_complete(ws, world.campaign, "artist")  # only offered triplets count
    set_priorities(ws, world.campaign, {triplets[3]: 0.5})
    assert not role_complete(ws, world.campaign, "artist")
    items, _ = judge_all(ws, rater, now)
    assert [i.triplet for i in items] == [triplets[3]]


def test_current_triplet_is_resumed_with_its_time_and_sides(ws):
    world = make_triplet_world(ws, 1, 3)
    rater, _ = create_rater(ws, "ann", "artist")
    now = utc_now()
    item = next_item(ws, rater, now=now)
    later = next_item(ws, rater, now=now + timedelta(minutes=20))
    assert later == item
    assert claim_next(ws, world.campaign, rater, now=now + timedelta(minutes=21)) == item
    assert held_item(ws, world.campaign, rater, now=now + timedelta(minutes=22)) == item
    assert count(ws, "triplet_assignments") == 1
    result = submit_judgment(ws, rater, world.campaign, item.triplet, CHOICES, nonce=nonce(),
                             now=now + timedelta(minutes=21))
    assert result.status == "saved" and result.seconds == pytest.approx(21 * 60)


def test_stale_assignment_returns_to_the_pool_and_a_late_answer_is_kept(ws):
    world = make_triplet_world(ws, 1, 2, overlap={"artist": 1},
                               protocol_text=two_afc_protocol_with(assignment_timeout_minutes=10))
    a, b = (create_rater(ws, n, "artist")[0] for n in "ab")
    now = utc_now()
    held = next_item(ws, a, now=now)
    assert next_item(ws, b, now=now + timedelta(minutes=9)) is None  # the only triplet is taken
    after = next_item(ws, b, now=now + timedelta(minutes=11))
    assert after is not None and after.triplet == held.triplet
    status = ws.conn.execute("SELECT status FROM triplet_assignments WHERE rater = ?", (a.id,)).fetchone()[0]
    assert status == "expired"
    late = submit_judgment(ws, a, world.campaign, held.triplet, CHOICES, nonce=nonce(),
                           now=now + timedelta(minutes=12))
    assert late.status == "saved"
    assert loads(ws, world.campaign, "artist") == {held.triplet: 2}
    rebuild_pair_load(ws, world.campaign, now=now + timedelta(minutes=12))  # the recount agrees
    assert loads(ws, world.campaign, "artist") == {held.triplet: 2}


def test_skip_frees_the_slot_and_is_stored_with_its_reason(ws):
    world = make_triplet_world(ws, 1, 2, overlap={"artist": 1})
    a, b = (create_rater(ws, n, "artist")[0] for n in "ab")
    now = utc_now()
    item = next_item(ws, a, now=now)
    with pytest.raises(CpdmError, match="a skipped triplet needs a reason"):
        submit_judgment(ws, a, world.campaign, item.triplet, None, nonce=nonce(), skip_reason="  ")
    submit_judgment(ws, a, world.campaign, item.triplet, None, skip_reason="image does not load", nonce=nonce(),
                    now=now)
    assert next_item(ws, a, now=now) is None  # never asked again
    assert next_item(ws, b, now=now).triplet == item.triplet
    rows = ws.conn.execute("SELECT answer, chosen_pair, skip_reason FROM judgments WHERE rater = ?",
                           (a.id,)).fetchall()
    assert rows == [(None, None, "image does not load")] * 3
    assert campaign_status(ws, world.campaign)["per_rater"][0]["skipped"] == 1


def test_sides_are_drawn_at_random_and_recorded_with_each_answer(ws):
    world = make_triplet_world(ws, 3, 5, overlap={"artist": 2})
    raters = [create_rater(ws, f"r{i}", "artist")[0] for i in range(2)]
    firsts = dict(ws.conn.execute("SELECT id, first_pair FROM triplets").fetchall())
    now, items = utc_now(), []
    for rater in raters:
        done, now = judge_all(ws, rater, now, answers={"copy": "right", "content": "left", "style": "cant_tell"})
        items += done
    on_left = Counter(item.left_pair == firsts[item.triplet] for item in items)
    assert on_left[True] >= 5 and on_left[False] >= 5  # 30 draws: both sides occur often
    images = dict(ws.conn.execute("SELECT id, image FROM pairs").fetchall())
    for item in items:
        assert (images[item.left_pair], images[item.right_pair]) == (item.left_image, item.right_image)
        rows = dict((q, (left, right, answer, chosen)) for q, left, right, answer, chosen in ws.conn.execute(
            "SELECT question, left_pair, right_pair, answer, chosen_pair FROM judgments WHERE triplet = ? "
            "AND rater = (SELECT rater FROM triplet_assignments WHERE triplet = ? AND left_pair = ? LIMIT 1)",
            (item.triplet, item.triplet, item.left_pair)))
        assert rows["copy"] == (item.left_pair, item.right_pair, "right", item.right_pair)
        assert rows["content"] == (item.left_pair, item.right_pair, "left", item.left_pair)
        # "can't tell" is its own answer, never a side.
        assert rows["style"] == (item.left_pair, item.right_pair, "cant_tell", None)
    recorded = ws.conn.execute(
        "SELECT COUNT(*) FROM judgments j JOIN triplet_assignments a ON a.campaign = j.campaign "
        "AND a.triplet = j.triplet AND a.rater = j.rater WHERE j.left_pair != a.left_pair").fetchone()[0]
    assert recorded == 0
    assert world.campaign == items[0].campaign


def test_cant_tell_is_stored_as_such(ws):
    world = make_triplet_world(ws, 1, 2)
    rater, _ = create_rater(ws, "ann", "artist")
    item = next_item(ws, rater)
    answers = {"copy": "cant_tell", "content": "cant_tell", "style": "left"}
    submit_judgment(ws, rater, world.campaign, item.triplet, answers, nonce=nonce())
    rows = ws.conn.execute("SELECT question, answer, chosen_pair FROM judgments ORDER BY question").fetchall()
    assert rows == [("content", "cant_tell", None), ("copy", "cant_tell", None), ("style", "left", item.left_pair)]
    assert judgment_answers_of(ws, rater, world.campaign, item.triplet) == answers


# --- The submit contract ----------------------------------------------------------------------------------------


def test_a_resent_nonce_or_second_submit_changes_nothing(ws):
    world = make_triplet_world(ws, 1, 3)
    rater, _ = create_rater(ws, "ann", "artist")
    item = next_item(ws, rater)
    once = nonce()
    assert submit_judgment(ws, rater, world.campaign, item.triplet, CHOICES, nonce=once).status == "saved"
    assert submit_judgment(ws, rater, world.campaign, item.triplet, CHOICES, nonce=once).status == "duplicate"
    other = {"copy": "right", "content": "right", "style": "right"}
    assert submit_judgment(ws, rater, world.campaign, item.triplet, other, nonce=nonce()).status == "duplicate"
    assert judgment_answers_of(ws, rater, world.campaign, item.triplet) == CHOICES
    assert count(ws, "judgments") == 3


def test_a_revoked_rater_and_a_foreign_triplet_are_refused(ws):
    world = make_triplet_world(ws, 1, 4)
    a, b = (create_rater(ws, n, "artist")[0] for n in "ab")
    item_a, item_b = next_item(ws, a), next_item(ws, b)
    with pytest.raises(CpdmError, match=f"triplet {item_a.triplet} is not assigned to this rater"):
        submit_judgment(ws, b, world.campaign, item_a.triplet, CHOICES, nonce=nonce())
    revoke_rater(ws, b.id)
    with pytest.raises(CpdmError, match="this rating link has been revoked; the answer was not saved"):
        submit_judgment(ws, b, world.campaign, item_b.triplet, CHOICES, nonce=nonce())
    assert count(ws, "judgments") == 0


@pytest.mark.parametrize("answers, message", [
    ({"copy": "up", "content": "left", "style": "left"}, "answer to 'copy' must be left, right or cant_tell, got 'up'"),
    ({"copy": 3, "content": "left", "style": "left"}, "answer to 'copy' must be left, right or cant_tell, got 3"),
    ({"copy": "left", "content": "left"}, "question 'style' has no answer"),
    ({"copy": "left", "content": "left", "style": "left", "colour": "left"}, "unknown question(s) colour"),
    ({"copy": "LEFT", "content": "left", "style": "left"}, "got 'LEFT'"),
    (["left", "left", "left"], "answers must map question ids"),
])
def test_bad_answers_are_refused_clearly_and_write_nothing(ws, answers, message):
    world = make_triplet_world(ws, 1, 3)
    rater, _ = create_rater(ws, "ann", "artist")
    item = next_item(ws, rater)
    with pytest.raises(CpdmError) as err:
        submit_judgment(ws, rater, world.campaign, item.triplet, answers, nonce=nonce())
    assert str(err.value) == message or message in str(err.value)
    assert count(ws, "judgments") == 0
    status = ws.conn.execute("SELECT status FROM triplet_assignments").fetchone()[0]
    assert status == "assigned"  # still the rater's, to answer properly


@pytest.mark.parametrize("bad_nonce", ["short", "x" * 129, None])
def test_a_submit_needs_a_proper_nonce(ws, bad_nonce):
    world = make_triplet_world(ws, 1, 2)
    rater, _ = create_rater(ws, "ann", "artist")
    item = next_item(ws, rater)
    with pytest.raises(CpdmError, match="a submit needs a nonce of 8 to 128 characters"):
        submit_judgment(ws, rater, world.campaign, item.triplet, CHOICES, nonce=bad_nonce)


def test_too_fast_judgments_are_flagged(ws):
    world = make_triplet_world(ws, 1, 2, protocol_text=two_afc_protocol_with(min_seconds=3.0))
    rater, _ = create_rater(ws, "ann", "artist")
    now = utc_now()
    item = next_item(ws, rater, now=now)
    result = submit_judgment(ws, rater, world.campaign, item.triplet, CHOICES, nonce=nonce(),
                             now=now + timedelta(seconds=1))
    assert result.too_fast and result.seconds == pytest.approx(1.0)
    assert campaign_status(ws, world.campaign)["per_rater"][0]["too_fast"] == 1


# --- Attention checks ---------------------------------------------------------------------------------------------


def test_checks_come_at_the_rate_and_a_rater_choosing_the_unrelated_side_is_flagged(ws):
    # 6 anchors × 4 pairs: 24 normal triplets and 6 checks (one per anchor); at 0.15 about 4 checks come.
    world = make_triplet_world(ws, 6, 4, overlap={"artist": 1}, include_checks=True,
                               protocol_text=two_afc_protocol_with(rate=0.15, max_failures=0))
    identical = dict(ws.conn.execute("SELECT id, first_pair FROM triplets WHERE kind = 'check'").fetchall())
    careful, _ = create_rater(ws, "careful", "artist")

    def honest(item):
        side = "left" if identical.get(item.triplet) == item.left_pair else "right"
        return {"copy": side if item.kind == "check" else "left", "content": "left", "style": "left"}

    items, now = judge_all(ws, careful, utc_now(), answers=honest)
    checks = [i for i in items if i.kind == "check"]
    assert abs(len(checks) - 0.15 * len(items)) <= 1 and len(checks) >= 3
    assert sorted(i.triplet for i in items if i.kind == "normal") == triplet_ids(ws, world.campaign)
    assert set(loads(ws, world.campaign, "artist")) == set(triplet_ids(ws, world.campaign))  # checks have no load
    protocol = protocol_for_rater(ws, careful)
    assert attention_check_failures(ws.conn, world.campaign, careful.id, protocol) == (0, len(checks))
    assert not get_rater(ws, careful.id).flagged

    # A second campaign for a careless rater, who always says "can't tell" or the unrelated side.
    from cpdm.rating.triplets import create_2afc_campaign

    set_campaign_status(ws, world.campaign, "closed")
    second = create_2afc_campaign(ws, "again", world.pairs, overlap={"artist": 1}, include_checks=True,
                                  protocol_text=two_afc_protocol_with(rate=0.15, max_failures=0))
    careless, _ = create_rater(ws, "careless", "artist")

    def wrong(item):
        side = "right" if identical.get(item.triplet) == item.left_pair else "left"
        return {"copy": side if item.kind == "check" else "left", "content": "left", "style": "left"}

    items, _ = judge_all(ws, careless, now, answers=wrong)
    failed = sum(i.kind == "check" for i in items)
    careless = get_rater(ws, careless.id)
    assert careless.flagged and failed >= 1
    reason = ws.conn.execute("SELECT flag_reason FROM raters WHERE id = ?", (careless.id,)).fetchone()[0]
    assert reason == "failed 1 of 1 attention checks"
    kept = ws.conn.execute("SELECT COUNT(*) FROM judgments WHERE rater = ?", (careless.id,)).fetchone()[0]
    assert kept == 3 * len(items)  # flagged, never deleted
    assert campaign_status(ws, second)["per_rater"][-1]["checks"] == f"0/{failed} passed"


def test_cant_tell_on_a_check_fails_it(ws):
    world = make_triplet_world(ws, 2, 2, overlap={"artist": 1}, include_checks=True,
                               protocol_text=two_afc_protocol_with(rate=0.5, max_failures=0))
    rater, _ = create_rater(ws, "ann", "artist")
    judge_all(ws, rater, utc_now(), answers={"copy": "cant_tell", "content": "left", "style": "left"})
    failed, answered = attention_check_failures(ws.conn, world.campaign, rater.id, protocol_for(ws, world.campaign))
    assert answered >= 1 and failed == answered
    assert get_rater(ws, rater.id).flagged


# --- One entry point, progress and status ---------------------------------------------------------------------------


def test_next_item_serves_pairs_and_triplets_oldest_campaign_first(ws):
    _anchors, pairs = add_pairs(ws, 1, 2)
    rating = create_campaign(ws, "likert", pairs, overlap={"artist": 1},
                             protocol_text=default_protocol_text(background=False))
    world = make_triplet_world(ws, 1, 3, overlap={"artist": 1})
    rater, _ = create_rater(ws, "ann", "artist")
    now, kinds = utc_now(), []
    from cpdm.rating.submit import submit

    while (item := next_item(ws, rater, now=now)) is not None:
        kinds.append(type(item).__name__)
        if isinstance(item, Item):
            submit(ws, rater, item.campaign, item.pair, ANSWERS, nonce=nonce(), now=now)
        else:
            assert isinstance(item, TripletItem) and item.campaign == world.campaign
            submit_judgment(ws, rater, item.campaign, item.triplet, CHOICES, nonce=nonce(), now=now)
    assert kinds == ["Item", "Item", "TripletItem", "TripletItem", "TripletItem"]
    assert rater_overall_progress(ws, rater).done == 5
    assert role_complete(ws, rating, "artist") and role_complete(ws, world.campaign, "artist")


def test_a_held_triplet_comes_first_and_sets_the_protocol(ws):
    world = make_triplet_world(ws, 1, 3, overlap={"artist": 1})
    rater, _ = create_rater(ws, "ann", "artist")
    now = utc_now()
    item = next_item(ws, rater, now=now)
    _anchors, pairs = add_pairs(ws, 1, 2)
    create_campaign(ws, "likert", pairs, protocol_text=default_protocol_text(background=False))
    assert next_item(ws, rater, now=now + timedelta(minutes=1)) == item
    assert protocol_for_rater(ws, rater).kind == "2afc"
    assert world.campaign == item.campaign


def test_a_recruited_raters_limit_counts_triplets(ws):
    world = make_triplet_world(ws, 2, 4, overlap={"lay": 2})
    rater, _ = create_rater(ws, "crowd", "lay")
    now, got = utc_now(), []
    while (item := claim_next(ws, world.campaign, rater, now=now, limit=3)) is not None:
        got.append(item.triplet)
        submit_judgment(ws, rater, world.campaign, item.triplet, CHOICES, nonce=nonce(), now=now)
    assert len(got) == 3 and len(set(got)) == 3


def test_progress_and_status_count_triplets(ws):
    world = make_triplet_world(ws, 2, 4, overlap={"artist": 2, "lay": 1})  # 8 triplets
    a, _ = create_rater(ws, "a", "artist")
    now = utc_now()
    assert rater_progress(ws, a, world.campaign).total == 8
    for _ in range(3):
        item = next_item(ws, a, now=now)
        submit_judgment(ws, a, world.campaign, item.triplet, CHOICES, nonce=nonce(), now=now + timedelta(seconds=4))
    next_item(ws, a, now=now)  # held, unanswered: still open to them
    progress = rater_progress(ws, a, world.campaign)
    assert (progress.done, progress.total) == (3, 8)
    status = campaign_status(ws, world.campaign)
    assert (status["kind"], status["triplets"], status["pairs"]) == ("2afc", 8, 8)
    artist = next(r for r in status["per_role"] if r["role"] == "artist")
    assert (artist["needed"], artist["done"], artist["percent"], artist["median_seconds"]) == (16, 3, 18.8, 4.0)
    assert status["per_rater"][0]["done"] == 3 and status["per_rater"][0]["checks"] == "0/0 passed"
    assert not role_complete(ws, world.campaign, "artist")


def test_a_recruitment_link_gives_each_rater_per_rater_triplets_then_the_end(ws):
    from cpdm.rating import recruit
    from tests.recruit_support import params

    world = make_triplet_world(ws, 3, 4, overlap={"artist": 1, "lay": 2}, include_checks=True)  # 12 triplets
    link, secret = recruit.create_link(ws, world.campaign, "lay", quota=2, per_rater=5, id_param="PROLIFIC_PID",
                                       completion_code="DUEL-1")
    # 2 raters × 5 triplets fit in the 12 × 2 lay judgments still needed: no capacity warning.
    assert recruit.capacity_note(ws, link) is None
    rater = recruit.admit(ws, params(secret, "P1"), "10.0.0.1").rater
    assert rater_overall_progress(ws, rater).total == 5
    got = []
    while (item := recruit.next_item_for(ws, rater)) is not None:
        assert isinstance(item, TripletItem)
        got.append(item.triplet)
        submit_judgment(ws, rater, item.campaign, item.triplet, CHOICES, nonce=nonce())
    assert len(got) == len(set(got)) == 5
    assert recruit.finished_recruitment(ws, rater).completion_code == "DUEL-1"
    assert rater_overall_progress(ws, rater).done == 5
    big, _ = recruit.create_link(ws, world.campaign, "artist", quota=3, per_rater=5)
    note = recruit.capacity_note(ws, big)
    assert note.startswith("3 raters × 5 triplets = 15 exceeds the 12 artist judgments the campaign still needs")


def test_raters_judging_at_once_keep_overlap_and_resent_submits_save_once(ws):
    import threading

    from cpdm.store.workspace import open_workspace

    world = make_triplet_world(ws, 4, 4, overlap={"artist": 2, "lay": 1})  # 16 triplets
    raters = [create_rater(ws, f"r{i}", "artist" if i % 2 else "lay")[0] for i in range(8)]
    barrier = threading.Barrier(len(raters))
    record, errors = [], []

    def work(rater):
        own = open_workspace(ws.root)
        try:
            barrier.wait()
            while (item := next_item(own, rater)) is not None:
                once = nonce()
                results = [submit_judgment(own, rater, item.campaign, item.triplet, CHOICES, nonce=once)
                           for _ in range(2)]  # the same request sent twice
                record.append((rater.role, item.triplet, sorted(r.status for r in results)))
        except Exception as exc:  # surfaced below
            errors.append(repr(exc))
        finally:
            own.close()

    threads = [threading.Thread(target=work, args=(r,)) for r in raters]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert errors == [] and all(not t.is_alive() for t in threads)
    assert all(statuses == ["duplicate", "saved"] for _, _, statuses in record)
    per_role = Counter((role, triplet) for role, triplet, _ in record)
    triplets = triplet_ids(ws, world.campaign)
    assert {t: per_role[("artist", t)] for t in triplets} == {t: 2 for t in triplets}
    assert {t: per_role[("lay", t)] for t in triplets} == {t: 1 for t in triplets}
    assert count(ws, "judgments") == 3 * len(record) == 3 * 16 * 3


def test_triplets_without_load_counters_are_counted_on_first_claim(ws):
    world = make_triplet_world(ws, 1, 3, overlap={"artist": 1})
    a, _ = create_rater(ws, "a", "artist")
    now = utc_now()
    first = next_item(ws, a, now=now)
    submit_judgment(ws, a, world.campaign, first.triplet, CHOICES, nonce=nonce(), now=now)
    with ws.transaction() as conn:
        conn.execute("DELETE FROM triplet_load")  # as if the triplets had been put in by hand
    b, _ = create_rater(ws, "b", "artist")
    taken = {first.triplet}
    while (item := next_item(ws, b, now=now)) is not None:
        assert item.triplet not in taken  # the recount saw a's judgment (overlap 1)
        taken.add(item.triplet)
        submit_judgment(ws, b, world.campaign, item.triplet, CHOICES, nonce=nonce(), now=now)
    assert taken == set(triplet_ids(ws, world.campaign))
