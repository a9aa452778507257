"""Submitting answers: idempotent, validated, timed; progress and campaign status."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest

from cpdm.rating.assignment import next_item
from cpdm.store.time import format_time, utc_now
from cpdm.rating.auth import create_rater
from cpdm.errors import CpdmError
from cpdm.rating.submit import answers_of, campaign_status, rater_overall_progress, rater_progress, submit
from tests.rating_fixtures import ANSWERS, make_world


def n_ratings(ws, rater=None):
    if rater is None:
        return ws.conn.execute("SELECT COUNT(*) FROM ratings").fetchone()[0]
    return ws.conn.execute("SELECT COUNT(*) FROM ratings WHERE rater = ?", (rater.id,)).fetchone()[0]


@pytest.fixture
def world(ws):
    return make_world(ws, 2, 2, overlap={"artist": 2, "lay": 1})


def test_submit_saves_all_questions_together_with_times(ws, world):
    rater, _ = create_rater(ws, "ann", "artist")
    now = utc_now()
    item = next_item(ws, rater, now=now)
    result = submit(ws, rater, item.campaign, item.pair, ANSWERS, nonce="abc123456789", now=now + timedelta(seconds=7.5))
    assert result.status == "saved" and result.seconds == pytest.approx(7.5) and not result.too_fast
    rows = ws.conn.execute(
        "SELECT question, value, shown_at, submitted_at, seconds, too_fast, nonce FROM ratings ORDER BY question"
    ).fetchall()
    assert [(q, v) for q, v, *_ in rows] == sorted(ANSWERS.items())
    for _, _, shown_at, submitted_at, seconds, too_fast, nonce in rows:
        assert shown_at == item.assigned_at == format_time(now)
        assert submitted_at == format_time(now + timedelta(seconds=7.5))
        assert seconds == pytest.approx(7.5) and too_fast == 0 and nonce == "abc123456789"
    assert ws.conn.execute("SELECT status FROM assignments").fetchone()[0] == "done"


def test_resent_or_double_submit_never_makes_a_second_rating(ws, world):
    rater, _ = create_rater(ws, "ann", "artist")
    item = next_item(ws, rater)
    first = submit(ws, rater, item.campaign, item.pair, ANSWERS, nonce="same-nonce-1")
    again = submit(ws, rater, item.campaign, item.pair, ANSWERS, nonce="same-nonce-1")
    other_nonce = submit(ws, rater, item.campaign, item.pair, {"content": 1, "style": 1, "copy": 1}, nonce="new-nonce-22")
    assert (first.status, again.status, other_nonce.status) == ("saved", "duplicate", "duplicate")
    assert n_ratings(ws) == 3
    assert answers_of(ws, rater, item.campaign, item.pair) == ANSWERS
    # The same nonce replayed against the next pair is also a no-op, not a rating.
    nxt = next_item(ws, rater)
    assert submit(ws, rater, nxt.campaign, nxt.pair, ANSWERS, nonce="same-nonce-1").status == "duplicate"
    assert n_ratings(ws) == 3


def test_too_fast_answers_are_flagged(ws, world):
    rater, _ = create_rater(ws, "ann", "artist")
    now = utc_now()
    item = next_item(ws, rater, now=now)
    result = submit(ws, rater, item.campaign, item.pair, ANSWERS, nonce=uuid.uuid4().hex, now=now + timedelta(seconds=1.2))
    assert result.too_fast
    assert ws.conn.execute("SELECT DISTINCT too_fast FROM ratings").fetchall() == [(1,)]


@pytest.mark.parametrize(
    "answers, message",
    [
        ({"content": 3, "style": 4}, "'copy' has no answer"),
        ({"content": 3, "style": 4, "copy": 6}, "from 1 to 5"),
        ({"content": 0, "style": 4, "copy": 2}, "from 1 to 5"),
        ({"content": "3", "style": 4, "copy": 2}, "from 1 to 5"),
        ({"content": True, "style": 4, "copy": 2}, "from 1 to 5"),
        ({"content": 3.0, "style": 4, "copy": 2}, "from 1 to 5"),
        ({"content": 3, "style": 4, "copy": 2, "mood": 1}, "unknown question"),
    ],
)
def test_bad_answers_are_refused_and_nothing_is_saved(ws, world, answers, message):
    rater, _ = create_rater(ws, "ann", "artist")
    item = next_item(ws, rater)
    with pytest.raises(CpdmError, match=message):
        submit(ws, rater, item.campaign, item.pair, answers, nonce=uuid.uuid4().hex)
    assert n_ratings(ws) == 0
    assert next_item(ws, rater) == item  # still the current item


def test_skip_needs_a_reason_and_nonce_must_be_sane(ws, world):
    rater, _ = create_rater(ws, "ann", "artist")
    item = next_item(ws, rater)
    with pytest.raises(CpdmError, match="needs a reason"):
        submit(ws, rater, item.campaign, item.pair, None, skip_reason="  ", nonce=uuid.uuid4().hex)
    with pytest.raises(CpdmError, match="nonce"):
        submit(ws, rater, item.campaign, item.pair, ANSWERS, nonce="short")
    assert n_ratings(ws) == 0


def test_rater_cannot_rate_or_read_another_raters_pair(ws, world):
    ann, _ = create_rater(ws, "ann", "artist")
    bob, _ = create_rater(ws, "bob", "artist")
    item = next_item(ws, ann)
    with pytest.raises(CpdmError, match="not assigned to this rater"):
        submit(ws, bob, item.campaign, item.pair, ANSWERS, nonce=uuid.uuid4().hex)
    unassigned = next(p for p in world.pairs if p != item.pair)
    with pytest.raises(CpdmError, match="not assigned"):
        submit(ws, ann, item.campaign, unassigned, ANSWERS, nonce=uuid.uuid4().hex)
    submit(ws, ann, item.campaign, item.pair, ANSWERS, nonce=uuid.uuid4().hex)
    assert answers_of(ws, bob, item.campaign, item.pair) == {}
    assert next_item(ws, bob).pair != item.pair  # bob's current item is his own, not ann's
    assert n_ratings(ws, bob) == 0


def test_progress_counts_done_of_what_is_open_to_the_rater(ws, world):
    ann, _ = create_rater(ws, "ann", "artist")
    lay, _ = create_rater(ws, "lee", "lay")
    assert rater_progress(ws, ann, world.campaign) == (p := rater_progress(ws, ann, world.campaign))
    assert (p.done, p.total) == (0, 4)
    for expected_done in (1, 2):
        item = next_item(ws, ann)
        submit(ws, ann, item.campaign, item.pair, ANSWERS, nonce=uuid.uuid4().hex)
        progress = rater_progress(ws, ann, world.campaign)
        assert (progress.done, progress.total) == (expected_done, 4)
    # Lay overlap is 1: a lay rater's share shrinks as no one else can help, and ends at 1.0.
    while (item := next_item(ws, lay)) is not None:
        submit(ws, lay, item.campaign, item.pair, ANSWERS, nonce=uuid.uuid4().hex)
    final = rater_overall_progress(ws, lay)
    assert (final.done, final.total, final.fraction) == (4, 4, 1.0)


def test_campaign_status_per_role_and_rater(ws, world):
    ann, _ = create_rater(ws, "ann", "artist")
    bob, _ = create_rater(ws, "bob", "artist")
    now = utc_now()
    for rater, seconds in ((ann, [4, 10, 6]), (bob, [3])):
        for s in seconds:
            item = next_item(ws, rater, now=now)
            submit(ws, rater, item.campaign, item.pair, ANSWERS, nonce=uuid.uuid4().hex, now=now + timedelta(seconds=s))
    item = next_item(ws, bob, now=now)
    submit(ws, bob, item.campaign, item.pair, None, skip_reason="blank image", nonce=uuid.uuid4().hex, now=now)
    status = campaign_status(ws, world.campaign)
    artist = next(r for r in status["per_role"] if r["role"] == "artist")
    assert status["pairs"] == 4
    assert (artist["needed"], artist["done"], artist["raters"], artist["median_seconds"]) == (8, 4, 2, 5.0)
    assert artist["percent"] == 50.0
    rows = {r["name"]: r for r in status["per_rater"]}
    assert (rows["ann"]["done"], rows["ann"]["median_seconds"], rows["ann"]["skipped"]) == (3, 6.0, 0)
    assert (rows["bob"]["done"], rows["bob"]["skipped"], rows["bob"]["median_seconds"]) == (1, 1, 3.0)


# --- the `cpdm campaign` commands -------------------------------------------------------------


def invoke(runner, ws, *args):
    from cpdm.cli import cli

    return runner.invoke(cli, [*args, "--workspace", str(ws.root)])


def test_cli_campaign_create_list_status(ws, runner):
    from tests.rating_fixtures import add_pairs

    add_pairs(ws, 3, 2)
    result = invoke(runner, ws, "campaign", "create", "chars", "--category", "character", "--overlap", "artist=2,lay=1")
    assert result.exit_code == 0, result.output
    assert "2 pairs, 2 attention checks, overlap artist=2,lay=1" in result.output
    result = invoke(runner, ws, "campaign", "create", "plain", "--variant", "esd", "--no-include-checks")
    assert "3 pairs, 0 attention checks, overlap artist=3,lay=3" in result.output
    listing = invoke(runner, ws, "campaign", "list").output.splitlines()
    assert listing[0].split() == ["id", "name", "status", "kind", "design", "pairs", "triplets", "overlap"]
    assert listing[1].split() == ["1", "chars", "open", "rating", "-", "4", "-", "artist=2,lay=1"]
    rater, _ = create_rater(ws, "ann", "artist")
    item = next_item(ws, rater)
    submit(ws, rater, item.campaign, item.pair, ANSWERS, nonce=uuid.uuid4().hex)
    status = invoke(runner, ws, "campaign", "status", "chars")
    assert status.exit_code == 0, status.output
    artist_line = next(line for line in status.output.splitlines() if line.startswith("artist"))
    normal = int(item.kind == "normal")  # an attention check does not count as done work
    assert artist_line.split()[:6] == ["artist", "2", "4", str(normal), "25.0" if normal else "0.0", "1"]


@pytest.mark.parametrize(
    "args, message",
    [
        (["campaign", "create", "x", "--overlap", "artist=three"], "overlap must look like artist=3,lay=3"),
        (["campaign", "create", "x", "--overlap", "admin=2"], "overlap role must be artist or lay"),
        (["campaign", "create", "x", "--overlap", "artist=0,lay=0"], "asks no role"),
        (["campaign", "create", "x", "--artist", "Nobody"], "no pairs match artist in ['Nobody']"),
        (["campaign", "create", "x", "--protocol", "missing.toml"], "cannot read protocol missing.toml"),
        (["campaign", "status", "nope"], "no campaign named 'nope' (known: first)"),
        (["campaign", "create", "first"], "a campaign named 'first' already exists"),
    ],
)
def test_cli_campaign_errors_are_one_line(ws, runner, args, message):
    from tests.rating_fixtures import add_pairs

    _, pairs = add_pairs(ws, 2, 1)
    from cpdm.rating.campaigns import create_campaign

    create_campaign(ws, "first", pairs)
    before = ws.conn.execute("SELECT COUNT(*) FROM campaigns").fetchone()[0]
    result = invoke(runner, ws, *args)
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == [f"error: {message}"] or message in result.output
    assert "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1
    assert ws.conn.execute("SELECT COUNT(*) FROM campaigns").fetchone()[0] == before


def test_cli_bad_protocol_file_names_file_and_field(ws, runner, tmp_path):
    from tests.rating_fixtures import add_pairs, protocol_with

    add_pairs(ws, 2, 1)
    bad = tmp_path / "strict.toml"
    bad.write_text(protocol_with(min_seconds='"soon"'), encoding="utf-8")
    result = invoke(runner, ws, "campaign", "create", "x", "--protocol", str(bad))
    assert result.exit_code == 1
    assert "strict.toml" in result.output and "'timing.min_seconds'" in result.output



def test_overlap_text_round_trips():
    from cpdm.rating.campaigns import format_overlap, parse_overlap

    assert format_overlap({"artist": 3, "lay": 0}) == "artist=3,lay=0"
    assert parse_overlap(format_overlap({"artist": 3, "lay": 2})) == {"artist": 3, "lay": 2}
