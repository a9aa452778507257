"""Assignment: overlap per role, least-rated first, per-rater order, timeouts, attention checks."""

from __future__ import annotations

import uuid
from collections import Counter
from datetime import timedelta

import pytest

from cpdm.rating.assignment import claim_next, next_item, rebuild_pair_load
from cpdm.store.time import format_time, utc_now
from cpdm.rating.auth import create_rater, get_rater
from cpdm.rating.campaigns import set_campaign_status, set_overlap
from cpdm.rating.submit import role_complete, submit
from tests.rating_fixtures import ANSWERS, make_world, protocol_with


def rate_all(ws, rater, start, answers=ANSWERS, step=timedelta(seconds=5)):
    """Let a rater answer everything offered; return the pairs in order and the end time."""
    seen, now = [], start
    while (item := next_item(ws, rater, now=now)) is not None:
        seen.append(item.pair)
        now += step
        answer = answers(item) if callable(answers) else answers
        assert submit(ws, rater, item.campaign, item.pair, answer, nonce=uuid.uuid4().hex, now=now).status == "saved"
    return seen, now


def loads(ws, campaign, role):
    return dict(ws.conn.execute(
        "SELECT pair, load FROM pair_load WHERE campaign = ? AND role = ?", (campaign, role)
    ).fetchall())


def test_overlap_per_role_is_met_exactly_and_never_exceeded(ws):
    world = make_world(ws, 3, 2, overlap={"artist": 2, "lay": 1})
    artists = [create_rater(ws, f"artist{i}", "artist")[0] for i in range(3)]
    lays = [create_rater(ws, f"lay{i}", "lay")[0] for i in range(2)]
    now = utc_now()
    per_rater = {}
    for rater in artists + lays:
        per_rater[rater.name], now = rate_all(ws, rater, now)
    for name, pairs in per_rater.items():
        assert len(pairs) == len(set(pairs)), f"{name} got a pair twice"
    artist_counts = Counter(p for r in artists for p in per_rater[r.name])
    lay_counts = Counter(p for r in lays for p in per_rater[r.name])
    assert artist_counts == {p: 2 for p in world.pairs}
    assert lay_counts == {p: 1 for p in world.pairs}
    # The first lay rater takes every pair; the second finds the role complete.
    assert per_rater["lay1"] == []
    assert role_complete(ws, world.campaign, "artist") and role_complete(ws, world.campaign, "lay")
    assert loads(ws, world.campaign, "artist") == {p: 2 for p in world.pairs}


def test_least_rated_pairs_come_first(ws):
    world = make_world(ws, 2, 2, overlap={"artist": 2})
    a, b = (create_rater(ws, n, "artist")[0] for n in "ab")
    now = utc_now()
    first_a = next_item(ws, a, now=now).pair
    first_b = next_item(ws, b, now=now).pair
    assert first_a != first_b  # b gets an untouched pair, not a's (load 1)
    # a finishes its first pair: three pairs with load 0 and one with load 1 remain for b's next picks.
    submit(ws, a, world.campaign, first_a, ANSWERS, nonce=uuid.uuid4().hex, now=now + timedelta(seconds=3))
    submit(ws, b, world.campaign, first_b, ANSWERS, nonce=uuid.uuid4().hex, now=now + timedelta(seconds=3))
    nxt = next_item(ws, b, now=now).pair
    assert nxt not in (first_a, first_b)


def test_current_item_is_resumed_with_its_first_shown_time(ws):
    world = make_world(ws, 2, 2)
    rater, _ = create_rater(ws, "ann", "artist")
    now = utc_now()
    item = next_item(ws, rater, now=now)
    later = next_item(ws, rater, now=now + timedelta(minutes=20))
    assert later == item and later.assigned_at == item.assigned_at
    assert ws.conn.execute("SELECT COUNT(*) FROM assignments WHERE status = 'assigned'").fetchone()[0] == 1
    # Seconds are measured from the first showing, not from the refresh.
    result = submit(ws, rater, world.campaign, item.pair, ANSWERS, nonce="n" * 16, now=now + timedelta(minutes=21))
    assert result.seconds == pytest.approx(21 * 60)


def test_order_is_random_per_rater_and_reproducible(ws):
    make_world(ws, 4, 3, overlap={"artist": 1, "lay": 1})
    artist, _ = create_rater(ws, "artist", "artist")
    lay, _ = create_rater(ws, "lay", "lay")
    now = utc_now()
    order_artist, _ = rate_all(ws, artist, now)
    order_lay, _ = rate_all(ws, lay, now)
    assert sorted(order_artist) == sorted(order_lay) and len(order_artist) == 12
    assert order_artist != order_lay
    assert order_artist != sorted(order_artist)


def test_stale_assignment_returns_to_the_pool(ws):
    world = make_world(ws, 1, 1, overlap={"artist": 1}, protocol_text=protocol_with(assignment_timeout_minutes=10))
    a, b = (create_rater(ws, n, "artist")[0] for n in "ab")
    now = utc_now()
    held = next_item(ws, a, now=now)
    assert next_item(ws, b, now=now + timedelta(minutes=9)) is None  # the only slot is taken
    after = next_item(ws, b, now=now + timedelta(minutes=11))
    assert after is not None and after.pair == held.pair
    status = ws.conn.execute("SELECT status FROM assignments WHERE rater = ?", (a.id,)).fetchone()[0]
    assert status == "expired"
    # a comes back late and still answers: nothing submitted is lost.
    late = submit(ws, a, world.campaign, held.pair, ANSWERS, nonce=uuid.uuid4().hex, now=now + timedelta(minutes=12))
    assert late.status == "saved"
    assert loads(ws, world.campaign, "artist") == {held.pair: 2}


def test_skip_frees_the_slot_for_another_rater(ws):
    world = make_world(ws, 1, 1, overlap={"artist": 1})
    a, b = (create_rater(ws, n, "artist")[0] for n in "ab")
    now = utc_now()
    item = next_item(ws, a, now=now)
    assert next_item(ws, b, now=now) is None
    submit(ws, a, world.campaign, item.pair, None, skip_reason="image does not load", nonce="skip-nonce-1", now=now)
    assert next_item(ws, a, now=now) is None  # never asked again
    assert next_item(ws, b, now=now).pair == item.pair
    rows = ws.conn.execute("SELECT value, skip_reason FROM ratings WHERE rater = ?", (a.id,)).fetchall()
    assert rows == [(None, "image does not load")] * 3


def test_attention_checks_are_mixed_in_at_the_rate_and_do_not_count_as_overlap(ws):
    world = make_world(ws, 4, 5, overlap={"artist": 1}, include_checks=True,
                       protocol_text=protocol_with(rate=0.2))
    rater, _ = create_rater(ws, "ann", "artist")
    kinds = dict(ws.conn.execute("SELECT id, kind FROM pairs").fetchall())
    seen, _ = rate_all(ws, rater, utc_now())
    normal = [p for p in seen if kinds[p] == "normal"]
    checks = [p for p in seen if kinds[p] != "normal"]
    assert sorted(normal) == sorted(world.pairs)
    # 20 normal pairs at rate 0.2: checks are a fifth of what the rater saw (one more or less).
    assert abs(len(checks) - 0.2 * len(seen)) <= 1 and len(checks) >= 4
    assert {kinds[p] for p in checks} == {"check_identical", "check_unrelated"}
    assert set(loads(ws, world.campaign, "artist")) == set(world.pairs)  # checks have no load
    assert role_complete(ws, world.campaign, "artist")


def test_rater_failing_checks_is_flagged_and_keeps_ratings(ws):
    make_world(ws, 4, 5, overlap={"artist": 1}, include_checks=True,
               protocol_text=protocol_with(rate=0.3, max_failures=1))
    careless, _ = create_rater(ws, "careless", "artist")
    careful, _ = create_rater(ws, "careful", "artist")
    kinds = dict(ws.conn.execute("SELECT id, kind FROM pairs").fetchall())

    def honest(item):
        copy = {"check_identical": 5, "check_unrelated": 1}.get(kinds[item.pair], 3)
        return {"content": copy, "style": copy, "copy": copy}

    rate_all(ws, careful, utc_now(), answers=honest)
    # The careful rater took every normal pair (overlap 1): give the careless one its own campaign.
    from cpdm.rating.campaigns import create_campaign

    pairs = [p for p, k in kinds.items() if k == "normal"]
    set_campaign_status(ws, 1, "closed")
    create_campaign(ws, "second", pairs, include_checks=True, overlap={"artist": 1},
                    protocol_text=protocol_with(rate=0.3, max_failures=1))
    seen, _ = rate_all(ws, careless, utc_now(), answers={"content": 3, "style": 3, "copy": 3})
    assert sum(kinds[p] != "normal" for p in seen) >= 2
    careless, careful = get_rater(ws, careless.id), get_rater(ws, careful.id)
    assert careless.flagged and not careful.flagged
    reason = ws.conn.execute("SELECT flag_reason FROM raters WHERE id = ?", (careless.id,)).fetchone()[0]
    assert reason.startswith("failed ") and "attention checks" in reason
    kept = ws.conn.execute("SELECT COUNT(*) FROM ratings WHERE rater = ?", (careless.id,)).fetchone()[0]
    assert kept == 3 * len(seen)


def test_role_without_overlap_researchers_and_closed_campaigns_get_nothing(ws):
    world = make_world(ws, 1, 2, overlap={"artist": 2, "lay": 0})
    lay, _ = create_rater(ws, "lay", "lay")
    boss, _ = create_rater(ws, "boss", "researcher")
    artist, _ = create_rater(ws, "art", "artist")
    assert next_item(ws, lay) is None and next_item(ws, boss) is None
    set_campaign_status(ws, world.campaign, "closed")
    assert next_item(ws, artist) is None
    set_campaign_status(ws, world.campaign, "open")
    set_overlap(ws, world.campaign, {"artist": 2, "lay": 1})
    assert next_item(ws, lay) is not None


def test_rebuild_pair_load_matches_incremental_counts(ws):
    world = make_world(ws, 3, 2, overlap={"artist": 2, "lay": 2})
    now = utc_now()
    for i, role in enumerate(["artist", "artist", "lay"]):
        rater, _ = create_rater(ws, f"r{i}", role)
        for _ in range(3):
            item = claim_next(ws, world.campaign, rater, now=now)
            submit(ws, rater, world.campaign, item.pair, ANSWERS, nonce=uuid.uuid4().hex, now=now)
        claim_next(ws, world.campaign, rater, now=now)  # one held, unanswered
    before = {role: loads(ws, world.campaign, role) for role in ("artist", "lay")}
    rebuild_pair_load(ws, world.campaign, now=now)
    assert {role: loads(ws, world.campaign, role) for role in ("artist", "lay")} == before
    assert sum(before["artist"].values()) == 8 and sum(before["lay"].values()) == 4


def test_campaign_without_load_rows_is_counted_on_first_use(ws):
    world = make_world(ws, 2, 2, overlap={"artist": 1})
    a, _ = create_rater(ws, "a", "artist")
    now = utc_now()
    item = next_item(ws, a, now=now)
    submit(ws, a, world.campaign, item.pair, ANSWERS, nonce=uuid.uuid4().hex, now=now)
    ws.conn.execute("DELETE FROM pair_load")
    b, _ = create_rater(ws, "b", "artist")
    seen, _ = rate_all(ws, b, now)
    assert item.pair not in seen and len(seen) == 3


def test_ratings_written_by_hand_count_once_the_loads_are_rebuilt(ws):
    """An import that inserts ratings directly then rebuilds the counters: overlap holds."""
    world = make_world(ws, 3, 2, overlap={"artist": 1})
    outsider, _ = create_rater(ws, "imported", "artist")
    now = utc_now()
    stamp = format_time(now)
    for pair in world.pairs[:4]:
        for question, value in ANSWERS.items():
            ws.conn.execute(
                "INSERT INTO ratings (campaign, pair, rater, question, value, shown_at, submitted_at, nonce) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (world.campaign, pair, outsider.id, question, value, stamp, stamp, f"import-{pair}"),
            )
    assert set(loads(ws, world.campaign, "artist").values()) == {0}  # counters do not know yet
    rebuild_pair_load(ws, world.campaign, now=now)
    assert loads(ws, world.campaign, "artist") == {p: int(p in world.pairs[:4]) for p in world.pairs}
    rater, _ = create_rater(ws, "ann", "artist")
    seen, _ = rate_all(ws, rater, now)
    assert sorted(seen) == sorted(world.pairs[4:])
    assert loads(ws, world.campaign, "artist") == {p: 1 for p in world.pairs}


def test_cpdm_campaign_recount_rebuilds_the_loads_of_ratings_written_by_hand(ws):
    from click.testing import CliRunner

    from cpdm.cli import cli

    world = make_world(ws, 2, 1, overlap={"artist": 1})
    outsider, _ = create_rater(ws, "imported", "artist")
    stamp = format_time(utc_now())
    with ws.transaction() as conn:
        conn.execute(
            "INSERT INTO ratings (campaign, pair, rater, question, value, shown_at, submitted_at, nonce) "
            "VALUES (?, ?, ?, 'copy', 3, ?, ?, 'import-1')",
            (world.campaign, world.pairs[0], outsider.id, stamp, stamp),
        )
    result = CliRunner().invoke(cli, ["campaign", "recount", "study", "--workspace", str(ws.root)])
    assert result.exit_code == 0, result.output
    assert "recounted" in result.output
    assert loads(ws, world.campaign, "artist") == {p: int(p == world.pairs[0]) for p in world.pairs}
