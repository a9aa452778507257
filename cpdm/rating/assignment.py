"""Which pair a rater sees next.

Rules (see the campaign's protocol and overlap):

- A rater's *current item* is their one assignment with status ``assigned``;
  asking again (a refresh, a new browser session days later) returns it
  unchanged, with its original ``assigned_at`` (the time it was first shown).
- Otherwise the next normal pair is one that still needs ratings from the
  rater's role (its load is below the role's overlap), that this rater has
  not rated or been assigned, least-loaded first; among equally loaded pairs
  the choice is random, seeded by campaign, rater and how many pairs the
  rater has seen, so every rater walks the pool in their own order.
- A pair's load for a role (table ``pair_load``) counts the raters of that
  role who rated it or hold an unexpired assignment for it. Assignments not
  submitted within the protocol's timeout expire and return to the pool.
- Attention-check pairs are mixed in at the protocol's rate and never count
  toward normal pairs' overlap. When a rater's role has no normal pairs left
  for them, they get nothing (the app shows a thank-you page).

A 2afc campaign assigns triplets by the same rules
(:mod:`cpdm.rating.judgments`); :func:`next_item`, :func:`claim_next` and
:func:`held_item` return a :class:`~cpdm.rating.judgments.TripletItem` for
one, so the rating page asks these functions whatever the campaign's kind.

Every claim runs inside one write transaction (BEGIN IMMEDIATE, see
:func:`write_transaction`), so two raters never take the last open slot of a pair
at the same time. Showing the item a rater already holds is a plain read.

Speed: one claim or submit is a few dozen index lookups; with many raters
the time goes to queueing for SQLite's single writer, so each transaction
runs a fixed, small number of statements (no count over a whole campaign),
and all of a process's rating writes share one connection and a fair lock
(see ``benchmarks/bench_rating.py``).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime, timedelta

from cpdm.rating.campaigns import RATING_ROLES, get_campaign
from cpdm.rating.judgments import (
    TripletItem, claim_triplet, claim_triplet_in, held_triplet, oldest_held_triplet, recount_triplet_load,
)
from cpdm.rating.protocol import Protocol
# Shared with triplets (cpdm.rating.judgments); imported here too for the callers that know them from here.
from cpdm.rating.rules import (  # noqa: F401
    answered_count, campaign_kind, campaign_settings, check_due, expire_stale, record_pair_claim, recount_pair_load,
)
from cpdm.store.time import format_time, utc_now
from cpdm.store.writer import write_transaction

@dataclass(frozen=True)
class Item:
    """A pair assigned to a rater: what the rating page shows.

    ``kind`` is kept for the server's bookkeeping; the page never shows it.
    """

    campaign: int
    pair: int
    anchor_image: str  # sha256 of the "original"
    shown_image: str  # sha256 of the image judged against it
    assigned_at: str
    expires_at: str
    kind: str


def _item_for(conn, campaign_id: int, pair_id: int, rater_id: int) -> Item:
    row = conn.execute(
        "SELECT an.image, p.image, p.kind, a.assigned_at, a.expires_at FROM assignments a "
        "JOIN pairs p ON p.id = a.pair JOIN anchors an ON an.id = p.anchor "
        "WHERE a.campaign = ? AND a.pair = ? AND a.rater = ?",
        (campaign_id, pair_id, rater_id),
    ).fetchone()
    return Item(campaign_id, pair_id, row[0], row[1], row[3], row[4], row[2])


def current_pair(conn, campaign_id: int, rater_id: int) -> int | None:
    """The pair the rater holds (assigned, not yet submitted), if any."""
    row = conn.execute(
        "SELECT pair FROM assignments WHERE campaign = ? AND rater = ? AND status = 'assigned' "
        "ORDER BY assigned_at LIMIT 1",
        (campaign_id, rater_id),
    ).fetchone()
    return None if row is None else row[0]


_LOAD_BOUNDS = (
    "(SELECT MIN(load) FROM pair_load WHERE campaign = :campaign AND role = :role), "
    "(SELECT MAX(pair) FROM pair_load WHERE campaign = :campaign AND role = :role)"
)


@dataclass(frozen=True)
class _ClaimFacts:
    seen: int  # pairs the rater was given in the campaign, expired assignments left out
    checks_seen: int  # of which attention checks
    lowest_load: int | None  # lowest load among the role's counters (None: the campaign has none)
    top_load_pair: int | None  # highest pair id among the role's counters
    top_pair: int  # highest pair id of the workspace


def _claim_facts(conn, campaign_id: int, role: str, rater_id: int) -> _ClaimFacts:
    """Everything a claim counts, in one round trip; each part is an index lookup or range.

    Pairs seen are counted in the assignments_by_rater index alone; checks
    seen by probing the rater's assignment of each check pair (there are few;
    CROSS JOIN keeps them the outer loop), so neither reads a row per pair
    the rater has seen.
    """
    row = conn.execute(
        "SELECT (SELECT COUNT(*) FROM assignments WHERE campaign = :campaign AND rater = :rater"
        "  AND status IN ('assigned', 'done', 'skipped')), "
        "(SELECT COUNT(*) FROM pairs p INDEXED BY pairs_by_kind CROSS JOIN assignments a"
        "  ON a.campaign = :campaign AND a.pair = p.id AND a.rater = :rater"
        "  WHERE p.kind IN ('check_identical', 'check_unrelated') AND a.status IN ('assigned', 'done', 'skipped')), "
        f"{_LOAD_BOUNDS}, (SELECT MAX(id) FROM pairs)",
        {"campaign": campaign_id, "rater": rater_id, "role": role},
    ).fetchone()
    return _ClaimFacts(row[0], row[1], row[2], row[3], row[4] or 0)


_UNSEEN_BY_RATER = (
    "NOT EXISTS (SELECT 1 FROM assignments a WHERE a.campaign = pl.campaign AND a.pair = pl.pair "
    "AND a.rater = :rater AND a.status != 'expired') "
    "AND NOT EXISTS (SELECT 1 FROM ratings r WHERE r.campaign = pl.campaign AND r.pair = pl.pair "
    "AND r.rater = :rater)"
)


def _pick_normal(
    conn, campaign_id: int, role: str, rater_id: int, needed: int, rng: random.Random,
    bounds: tuple[int | None, int | None] | None = None,
) -> int | None:
    """The next normal pair for the rater: lowest load first, random among equals.

    ``bounds`` is (lowest load, highest pair id) of the role's counters, as
    :func:`_claim_facts` found them; without it they are looked up.
    """
    params = {"campaign": campaign_id, "role": role, "rater": rater_id}
    lowest, top = bounds if bounds is not None else conn.execute(f"SELECT {_LOAD_BOUNDS}", params).fetchone()
    if top is None:
        return None
    params["start"] = rng.randint(0, top)
    for load in range(lowest, needed):  # levels below the lowest present are empty
        params["load"] = load
        # Walk the level from a random pair id, wrapping around once.
        for condition in ("pl.pair >= :start", "pl.pair < :start"):
            row = conn.execute(
                "SELECT pl.pair FROM pair_load pl WHERE pl.campaign = :campaign AND pl.role = :role "
                f"AND pl.load = :load AND {condition} AND {_UNSEEN_BY_RATER} ORDER BY pl.pair LIMIT 1",
                params,
            ).fetchone()
            if row is not None:
                return row[0]
    return None


def _pick_check(conn, campaign_id: int, rater_id: int, rng: random.Random, top_pair: int) -> int | None:
    """A random attention-check pair of the campaign that the rater has not seen yet.

    Takes the first such pair from a random pair id on, wrapping around to
    the lowest; it walks only the check pairs (pairs_by_kind index), so the
    cost does not grow with the campaign's size.
    """
    row = conn.execute(
        "SELECT p.id FROM pairs p INDEXED BY pairs_by_kind WHERE p.kind IN ('check_identical', 'check_unrelated') "
        "AND EXISTS (SELECT 1 FROM campaign_pairs cp WHERE cp.campaign = :campaign AND cp.pair = p.id) "
        "AND NOT EXISTS (SELECT 1 FROM assignments a WHERE a.campaign = :campaign "
        "AND a.pair = p.id AND a.rater = :rater AND a.status != 'expired') ORDER BY p.id < :start, p.id LIMIT 1",
        {"campaign": campaign_id, "rater": rater_id, "start": rng.randint(0, top_pair)},
    ).fetchone()
    return None if row is None else row[0]


def ensure_pair_load(conn, campaign_id: int, now_text: str) -> bool:
    """Build the campaign's load counters if it has none (a campaign made outside create_campaign).

    Returns whether it built them. Run it after :func:`expire_stale`: the
    count leaves timed-out assignments out, which expiring them again would
    subtract a second time.
    """
    if conn.execute("SELECT 1 FROM pair_load WHERE campaign = ? LIMIT 1", (campaign_id,)).fetchone() is None:
        recount_pair_load(conn, campaign_id, now_text)
        return True
    return False


def rebuild_pair_load(ws, campaign_id: int, now: datetime | None = None) -> None:
    """Recount every pair's load from assignments and ratings.

    Claims trust the counters, which claims and :func:`cpdm.rating.submit.submit`
    keep right (simulated raters go through them too). Ratings or
    assignments written by hand (SQL, an import from elsewhere) leave the
    counters behind: run this afterwards, or overlap is not kept.
    """
    with ws.transaction() as conn:
        if campaign_kind(conn, campaign_id) == "2afc":  # a 2afc campaign counts its triplets
            recount_triplet_load(conn, campaign_id, format_time(now or utc_now()))
        else:
            recount_pair_load(conn, campaign_id, format_time(now or utc_now()))


_HELD_ITEM = (
    "SELECT a.campaign, a.pair, an.image, p.image, p.kind, a.assigned_at, a.expires_at FROM assignments a "
    "JOIN pairs p ON p.id = a.pair JOIN anchors an ON an.id = p.anchor "
)


def _held_item(conn, campaign_id: int, rater_id: int, now_text: str) -> Item | None:
    """The rater's unexpired current item in the campaign, read without taking the write lock."""
    row = conn.execute(
        _HELD_ITEM + "WHERE a.campaign = ? AND a.rater = ? AND a.status = 'assigned' ORDER BY a.assigned_at LIMIT 1",
        (campaign_id, rater_id),
    ).fetchone()
    if row is None or row[6] <= now_text:
        return None  # nothing held, or it timed out: only a write transaction may expire it
    return _row_item(row)


def held_item(ws, campaign_id: int, rater, now: datetime | None = None) -> Item | TripletItem | None:
    """The rater's current item in the campaign while it has not timed out, by a read (no claim).

    A pair in a rating campaign, a triplet in a 2afc one.
    """
    if campaign_kind(ws.conn, campaign_id) == "2afc":
        return held_triplet(ws, campaign_id, rater, now)
    return _held_item(ws.conn, campaign_id, rater.id, format_time(now or utc_now()))


def claim_in(conn, campaign_id: int, rater, now: datetime, *, holds_nothing: bool = False,
             kind: str | None = None) -> Item | TripletItem | None:
    """:func:`claim_next` inside the caller's write transaction (see :func:`write_transaction`).

    ``holds_nothing`` says the caller saw, in this transaction, that the
    rater holds no current item in any open campaign. ``kind``: the
    campaign's kind when the caller knows it (else it is looked up); a 2afc
    campaign's claim is :func:`cpdm.rating.judgments.claim_triplet_in`.
    """
    if rater.role not in RATING_ROLES:
        return None
    if (kind or campaign_kind(conn, campaign_id)) == "2afc":
        return claim_triplet_in(conn, campaign_id, rater, now, holds_nothing=holds_nothing)
    now_text = format_time(now)
    expire_stale(conn, campaign_id, now_text)
    if not holds_nothing:
        held = current_pair(conn, campaign_id, rater.id)
        if held is not None:
            return _item_for(conn, campaign_id, held, rater.id)
    overlap, protocol = campaign_settings(conn, campaign_id)
    needed = int(overlap.get(rater.role, 0))
    if needed <= 0:
        return None
    facts = _claim_facts(conn, campaign_id, rater.role, rater.id)
    if facts.top_load_pair is None and ensure_pair_load(conn, campaign_id, now_text):
        facts = _claim_facts(conn, campaign_id, rater.role, rater.id)
    rng = random.Random(f"order:{campaign_id}:{rater.id}:{facts.seen}")
    pair = _pick_normal(conn, campaign_id, rater.role, rater.id, needed, rng, (facts.lowest_load, facts.top_load_pair))
    if pair is None:
        return None  # the role's work, as far as this rater can help, is complete
    is_check = False
    if check_due(campaign_id, rater.id, facts.seen, facts.checks_seen, protocol.attention_checks.rate):
        check = _pick_check(conn, campaign_id, rater.id, rng, facts.top_pair)
        if check is not None:
            pair, is_check = check, True
    expires = now + timedelta(minutes=protocol.timing.assignment_timeout_minutes)
    record_pair_claim(conn, campaign_id, pair, rater.id, rater.role, now_text, format_time(expires), not is_check)
    return _item_for(conn, campaign_id, pair, rater.id)


def claim_next(ws, campaign_id: int, rater, now: datetime | None = None,
               limit: int | None = None) -> Item | TripletItem | None:
    """The rater's current item in this campaign, or a newly assigned one, or None when done.

    A current item that has not timed out is returned by a plain read: page
    reruns (every click on an answer) then never queue for the write lock.
    With ``limit``, no new pair is assigned once the rater has answered that
    many here, counted inside the claim's transaction (another tab of the same
    rater may answer the last one between a check outside it and the claim).
    In a 2afc campaign the items are triplets (:func:`cpdm.rating.judgments.claim_triplet`).
    """
    if rater.role not in RATING_ROLES:
        return None
    if campaign_kind(ws.conn, campaign_id) == "2afc":
        return claim_triplet(ws, campaign_id, rater, now, limit)
    now = now or utc_now()
    held = _held_item(ws.conn, campaign_id, rater.id, format_time(now))
    if held is not None:
        return held
    with write_transaction(ws) as conn:
        if limit is not None and answered_count(conn, campaign_id, rater.id) >= limit:
            return None
        return claim_in(conn, campaign_id, rater, now)


def oldest_held(conn, rater_id: int) -> tuple | None:
    """The rater's oldest current assignment in an open campaign, as an item row (see :func:`_row_item`)."""
    return conn.execute(
        _HELD_ITEM + "JOIN campaigns c ON c.id = a.campaign AND c.status = 'open' "
        "WHERE a.rater = ? AND a.status = 'assigned' ORDER BY a.assigned_at LIMIT 1",
        (rater_id,),
    ).fetchone()


def _row_item(row) -> Item:
    """An Item from a row of ``_HELD_ITEM``."""
    return Item(row[0], row[1], row[2], row[3], row[5], row[6], row[4])


def oldest_held_item(conn, rater_id: int) -> Item | TripletItem | None:
    """The rater's oldest current item in an open campaign, pair or triplet (timed out or not)."""
    pair_row = oldest_held(conn, rater_id)
    pair = None if pair_row is None else _row_item(pair_row)
    triplet = oldest_held_triplet(conn, rater_id)
    if pair is None or triplet is None:
        return pair or triplet
    return triplet if triplet.assigned_at < pair.assigned_at else pair


def campaign_allows_device(conn, campaign_id: int, device: str | None) -> bool:
    """Whether the campaign's protocol may be rated on ``device`` (None: the device is not known, not checked)."""
    return device is None or device in campaign_settings(conn, campaign_id)[1].devices


def next_item_in(conn, rater, now: datetime, device: str | None = None) -> Item | TripletItem | None:
    """:func:`next_item` inside the caller's write transaction (see :func:`write_transaction`)."""
    if rater.role not in RATING_ROLES:
        return None
    held = oldest_held_item(conn, rater.id)
    if held is not None and not campaign_allows_device(conn, held.campaign, device):
        return None  # kept for a device it may be rated on; a rater holds one item at a time, so none other
    kinds = dict(conn.execute("SELECT id, kind FROM campaigns WHERE status = 'open' ORDER BY id").fetchall())
    campaigns = [c for c in kinds if campaign_allows_device(conn, c, device)]
    # An item the rater already holds comes first, whichever campaign it is in.
    for campaign_id in ([held.campaign] if held else []) + campaigns:
        item = claim_in(conn, campaign_id, rater, now, holds_nothing=held is None, kind=kinds.get(campaign_id))
        if item is not None:
            return item
    return None


def next_item(ws, rater, now: datetime | None = None, device: str | None = None) -> Item | TripletItem | None:
    """The rater's item across open campaigns (oldest first), or None when nothing is left for them.

    An :class:`Item` (a pair) from a rating campaign, a
    :class:`~cpdm.rating.judgments.TripletItem` from a 2afc one: the rating
    page asks this one function. The rater's current item, while it has not
    timed out, is found by a read; claiming a new one takes one write
    transaction for all campaigns. ``device`` (cpdm.rating.devices.device_of):
    only campaigns whose protocol may be rated on it are considered.
    """
    if rater.role not in RATING_ROLES:
        return None
    now = now or utc_now()
    held = oldest_held_item(ws.conn, rater.id)
    if held is not None and held.expires_at > format_time(now) and campaign_allows_device(ws.conn, held.campaign,
                                                                                           device):
        return held
    with write_transaction(ws) as conn:
        return next_item_in(conn, rater, now, device)


def protocol_for(ws, campaign_id: int) -> Protocol:
    """The campaign's (frozen) protocol."""
    return get_campaign(ws, campaign_id).protocol
