"""Comparative (2AFC) judgments: which triplet a rater sees next, saving their choice, progress.

The rules are those of pairs (:mod:`cpdm.rating.assignment`,
:mod:`cpdm.rating.submit`), shared through :mod:`cpdm.rating.rules`:

- A rater holds at most one item; asking again returns it unchanged, with its
  first-shown time and the same sides.
- The next normal triplet is one that still needs judgments from the rater's
  role (its load below the role's overlap), that this rater was never given
  (expired assignments aside) nor judged: least-judged first, then highest
  priority (``campaign_triplets.priority``; 0 is never offered), random
  among equals, seeded by campaign, rater and how many triplets the rater
  has seen.
- Which pair goes on the left is drawn at random per assignment and stored
  (``triplet_assignments.left_pair``); the judgment records both sides again.
- Attention-check triplets (the anchor itself against an unrelated image)
  come at the protocol's rate and never count toward overlap; choosing
  anything but the anchor's side on the check question fails it, and raters
  failing more than ``max_failures`` are flagged.
- Assignments not submitted within the protocol's timeout expire and return
  to the pool; a late answer is still saved.

A submit saves one row per question in ``judgments``: ``answer`` is
``left``, ``right`` or ``cant_tell`` (never turned into a side), and
``chosen_pair`` the pair on the chosen side (NULL for can't tell and for
skips, whose answer is NULL with a reason). The nonce, duplicate and
revocation rules are those of :func:`cpdm.rating.submit.submit`.

Why one file of this length: it is one job, a rater's way through a 2afc
campaign, mirroring what assignment.py and submit.py do for pairs. The claim
(held triplet, claim facts, the least-judged walk, checks), the submit, the
check failures it flags on, and the progress and status all read the same
triplet_assignments and judgments rows (the item row through one private
helper); the bookkeeping writes already live in rules.py.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime, timedelta

from cpdm.errors import CpdmError
from cpdm.rating.rules import (
    TRIPLETS, Progress, SubmitResult, answered_count, campaign_settings, check_due, checked_submit, expire_stale,
    flag_if_failing, mark_answered, progress_tables, record_triplet_claim, recount_triplet_load,
    update_load_after_submit,
)
from cpdm.store.time import format_time, parse_time, utc_now
from cpdm.store.workspace import JUDGMENT_ANSWERS, RATING_ROLES
from cpdm.store.writer import write_transaction


@dataclass(frozen=True)
class TripletItem:
    """A triplet assigned to a rater: the original and two AI images, as the page shows them.

    ``left_pair`` / ``right_pair`` are the pairs whose images are on each
    side; ``kind`` (normal or check) is for the server's bookkeeping only.
    """

    campaign: int
    triplet: int
    anchor_image: str  # sha256 of the "original"
    left_image: str
    right_image: str
    left_pair: int
    right_pair: int
    assigned_at: str
    expires_at: str
    kind: str


_TRIPLET_COLUMNS = (
    "SELECT ta.campaign, ta.triplet, an.image, pl.image, pr.image, ta.left_pair, pr.id, ta.assigned_at, "
    "ta.expires_at, t.kind "
)
_TRIPLET_JOINS = (
    "JOIN triplets t ON t.id = ta.triplet "
    "JOIN anchors an ON an.id = t.anchor JOIN pairs pl ON pl.id = ta.left_pair "
    "JOIN pairs pr ON pr.id = CASE WHEN ta.left_pair = t.first_pair THEN t.second_pair ELSE t.first_pair END "
)
_HELD_TRIPLET = _TRIPLET_COLUMNS + "FROM triplet_assignments ta " + _TRIPLET_JOINS


def _row_item(row) -> TripletItem:
    """A TripletItem from a row of ``_HELD_TRIPLET``."""
    return TripletItem(*row)


def _item_for(conn, campaign_id: int, triplet_id: int, rater_id: int) -> TripletItem:
    return _row_item(conn.execute(
        _HELD_TRIPLET + "WHERE ta.campaign = ? AND ta.triplet = ? AND ta.rater = ?",
        (campaign_id, triplet_id, rater_id),
    ).fetchone())


def current_triplet(conn, campaign_id: int, rater_id: int) -> int | None:
    """The triplet the rater holds (assigned, not yet submitted) in the campaign, if any."""
    row = conn.execute(
        "SELECT triplet FROM triplet_assignments WHERE campaign = ? AND rater = ? AND status = 'assigned' "
        "ORDER BY assigned_at LIMIT 1",
        (campaign_id, rater_id),
    ).fetchone()
    return None if row is None else row[0]


def _held_triplet(conn, campaign_id: int, rater_id: int, now_text: str) -> TripletItem | None:
    """The rater's unexpired current triplet in the campaign, read without taking the write lock."""
    row = conn.execute(
        _HELD_TRIPLET + "WHERE ta.campaign = ? AND ta.rater = ? AND ta.status = 'assigned' "
        "ORDER BY ta.assigned_at LIMIT 1",
        (campaign_id, rater_id),
    ).fetchone()
    if row is None or row[8] <= now_text:
        return None  # nothing held, or it timed out: only a write transaction may expire it
    return _row_item(row)


def held_triplet(ws, campaign_id: int, rater, now: datetime | None = None) -> TripletItem | None:
    """The rater's current triplet in the campaign while it has not timed out, by a read (no claim)."""
    return _held_triplet(ws.conn, campaign_id, rater.id, format_time(now or utc_now()))


def oldest_held_triplet(conn, rater_id: int) -> TripletItem | None:
    """The rater's oldest current triplet in an open campaign (timed out or not)."""
    # Open campaigns first (few), then the rater's assignments in each by index.
    row = conn.execute(
        _TRIPLET_COLUMNS + "FROM campaigns c CROSS JOIN triplet_assignments ta ON ta.campaign = c.id "
        "AND ta.rater = ? AND ta.status = 'assigned' " + _TRIPLET_JOINS
        + "WHERE c.status = 'open' ORDER BY ta.assigned_at LIMIT 1",
        (rater_id,),
    ).fetchone()
    return None if row is None else _row_item(row)


@dataclass(frozen=True)
class _ClaimFacts:
    seen: int  # triplets the rater was given in the campaign, expired assignments left out
    checks_seen: int  # of which attention checks
    lowest_load: int | None  # lowest load among the role's counters (None: the campaign has none)
    top_load_triplet: int | None  # highest triplet id among the role's counters
    top_triplet: int  # highest triplet id of the workspace
    top_priority: float | None  # the campaign's highest priority above 0 (None: nothing is offered)


def _claim_facts(conn, campaign_id: int, role: str, rater_id: int) -> _ClaimFacts:
    """Everything a claim counts, in one round trip."""
    row = conn.execute(
        "SELECT (SELECT COUNT(*) FROM triplet_assignments WHERE campaign = :campaign AND rater = :rater"
        "  AND status IN ('assigned', 'done', 'skipped')), "
        "(SELECT COUNT(*) FROM triplets t INDEXED BY triplets_by_kind CROSS JOIN triplet_assignments a"
        "  ON a.campaign = :campaign AND a.triplet = t.id AND a.rater = :rater"
        "  WHERE t.kind = 'check' AND a.status IN ('assigned', 'done', 'skipped')), "
        "(SELECT MIN(load) FROM triplet_load WHERE campaign = :campaign AND role = :role), "
        "(SELECT MAX(triplet) FROM triplet_load WHERE campaign = :campaign AND role = :role), "
        "(SELECT MAX(id) FROM triplets), "
        "(SELECT MAX(priority) FROM campaign_triplets WHERE campaign = :campaign AND priority > 0)",
        {"campaign": campaign_id, "rater": rater_id, "role": role},
    ).fetchone()
    return _ClaimFacts(row[0], row[1], row[2], row[3], row[4] or 0, row[5])


# Conditions on ct (not tl), so SQLite checks them after the priority: cheap when most triplets are held back.
_UNSEEN_BY_RATER = (
    "NOT EXISTS (SELECT 1 FROM triplet_assignments a WHERE a.campaign = ct.campaign AND a.triplet = ct.triplet "
    "AND a.rater = :rater AND a.status != 'expired') "
    "AND NOT EXISTS (SELECT 1 FROM judgments j WHERE j.campaign = ct.campaign AND j.triplet = ct.triplet "
    "AND j.rater = :rater)"
)
_OFFERED = (
    "FROM triplet_load tl JOIN campaign_triplets ct ON ct.campaign = tl.campaign AND ct.triplet = tl.triplet "
    "WHERE tl.campaign = :campaign AND tl.role = :role AND tl.load = :load AND ct.priority > 0 "
    f"AND {_UNSEEN_BY_RATER}"
)


def _walk_level(conn, params: dict) -> int | None:
    """A triplet of the level's load and priority the rater may take: the first from a random id, wrapping once."""
    for condition in ("tl.triplet >= :start", "tl.triplet < :start"):
        row = conn.execute(
            f"SELECT tl.triplet {_OFFERED} AND ct.priority = :priority AND {condition} ORDER BY tl.triplet LIMIT 1",
            params,
        ).fetchone()
        if row is not None:
            return row[0]
    return None


def _pick_normal(conn, campaign_id: int, role: str, rater_id: int, needed: int, rng: random.Random,
                 facts: _ClaimFacts) -> int | None:
    """The next normal triplet for the rater: lowest load first, then highest priority, random among equals.

    Each level first tries the campaign's top priority (every triplet's, in
    a campaign whose priorities are all equal), found without a count; only
    when none of those is open at the level is its highest open priority
    looked up.
    """
    if facts.top_load_triplet is None or facts.top_priority is None:
        return None
    params = {"campaign": campaign_id, "role": role, "rater": rater_id,
              "start": rng.randint(0, facts.top_load_triplet)}
    for load in range(facts.lowest_load, needed):  # levels below the lowest present are empty
        params["load"] = load
        params["priority"] = facts.top_priority
        found = _walk_level(conn, params)
        if found is not None:
            return found
        best = conn.execute(f"SELECT MAX(ct.priority) {_OFFERED}", params).fetchone()[0]
        if best is not None:
            params["priority"] = best
            return _walk_level(conn, params)
    return None


def _pick_check(conn, campaign_id: int, rater_id: int, rng: random.Random, top_triplet: int) -> int | None:
    """A random attention-check triplet of the campaign that the rater has not been given yet."""
    row = conn.execute(
        "SELECT t.id FROM triplets t INDEXED BY triplets_by_kind WHERE t.kind = 'check' "
        "AND EXISTS (SELECT 1 FROM campaign_triplets ct WHERE ct.campaign = :campaign AND ct.triplet = t.id "
        "AND ct.priority > 0) "
        "AND NOT EXISTS (SELECT 1 FROM triplet_assignments a WHERE a.campaign = :campaign "
        "AND a.triplet = t.id AND a.rater = :rater AND a.status != 'expired') ORDER BY t.id < :start, t.id LIMIT 1",
        {"campaign": campaign_id, "rater": rater_id, "start": rng.randint(0, top_triplet)},
    ).fetchone()
    return None if row is None else row[0]


def claim_triplet_in(conn, campaign_id: int, rater, now: datetime, *,
                     holds_nothing: bool = False) -> TripletItem | None:
    """:func:`claim_triplet` inside the caller's write transaction (see :func:`write_transaction`).

    ``holds_nothing`` says the caller saw, in this transaction, that the
    rater holds no current item in any open campaign.
    """
    if rater.role not in RATING_ROLES:
        return None
    now_text = format_time(now)
    expire_stale(conn, campaign_id, now_text, TRIPLETS)
    if not holds_nothing:
        held = current_triplet(conn, campaign_id, rater.id)
        if held is not None:
            return _item_for(conn, campaign_id, held, rater.id)
    overlap, protocol = campaign_settings(conn, campaign_id)
    needed = int(overlap.get(rater.role, 0))
    if needed <= 0:
        return None
    facts = _claim_facts(conn, campaign_id, rater.role, rater.id)
    if facts.top_load_triplet is None and conn.execute(
            "SELECT 1 FROM campaign_triplets WHERE campaign = ? LIMIT 1", (campaign_id,)).fetchone():
        # Triplets put in by hand, without their counters: count them once (after expiring, as for pairs).
        recount_triplet_load(conn, campaign_id, now_text)
        facts = _claim_facts(conn, campaign_id, rater.role, rater.id)
    rng = random.Random(f"order:{campaign_id}:{rater.id}:{facts.seen}")
    triplet = _pick_normal(conn, campaign_id, rater.role, rater.id, needed, rng, facts)
    if triplet is None:
        return None  # the role's work, as far as this rater can help, is complete
    is_check = False
    if check_due(campaign_id, rater.id, facts.seen, facts.checks_seen, protocol.attention_checks.rate):
        check = _pick_check(conn, campaign_id, rater.id, rng, facts.top_triplet)
        if check is not None:
            triplet, is_check = check, True
    first, second = conn.execute("SELECT first_pair, second_pair FROM triplets WHERE id = ?", (triplet,)).fetchone()
    left = first if rng.random() < 0.5 else second
    expires = now + timedelta(minutes=protocol.timing.assignment_timeout_minutes)
    record_triplet_claim(conn, campaign_id, triplet, rater.id, rater.role, left, now_text, format_time(expires),
                         not is_check)
    return _item_for(conn, campaign_id, triplet, rater.id)


def claim_triplet(ws, campaign_id: int, rater, now: datetime | None = None,
                  limit: int | None = None) -> TripletItem | None:
    """The rater's current triplet in this 2afc campaign, or a newly assigned one, or None when done.

    A current triplet that has not timed out is returned by a plain read.
    With ``limit``, no new triplet is assigned once the rater has answered
    that many here, counted inside the claim's transaction.
    """
    if rater.role not in RATING_ROLES:
        return None
    now = now or utc_now()
    held = _held_triplet(ws.conn, campaign_id, rater.id, format_time(now))
    if held is not None:
        return held
    with write_transaction(ws) as conn:
        if limit is not None and answered_count(conn, campaign_id, rater.id, TRIPLETS) >= limit:
            return None
        return claim_triplet_in(conn, campaign_id, rater, now)


# --- Saving a judgment ------------------------------------------------------------------------------------------


def validate_judgment_answers(protocol, answers: dict) -> dict[str, str]:
    """Check one answer per protocol question, each ``left``, ``right`` or ``cant_tell``; return them."""
    if not isinstance(answers, dict):
        raise CpdmError("answers must map question ids to left, right or cant_tell")
    unknown = sorted(map(str, set(answers) - set(protocol.question_ids)))
    if unknown:
        raise CpdmError(f"unknown question(s) {', '.join(unknown)}")
    checked: dict[str, str] = {}
    for question in protocol.questions:
        value = answers.get(question.id)
        if value is None:
            raise CpdmError(f"question {question.id!r} has no answer")
        if not isinstance(value, str) or value not in JUDGMENT_ANSWERS:
            raise CpdmError(f"answer to {question.id!r} must be {', '.join(JUDGMENT_ANSWERS[:-1])} or "
                            f"{JUDGMENT_ANSWERS[-1]}, got {value!r}")
        checked[question.id] = value
    return checked


def submit_judgment(
    ws,
    rater,
    campaign_id: int,
    triplet_id: int,
    answers: dict[str, str] | None,
    *,
    nonce: str,
    skip_reason: str | None = None,
    now: datetime | None = None,
) -> SubmitResult:
    """Save the rater's judgment of one triplet: ``{"copy": "left"|"right"|"cant_tell", ...}``, or a skip.

    ``answers=None`` with a ``skip_reason`` records "skip: cannot judge": one
    row per question with a NULL answer. The triplet must be assigned to this
    rater; a submit for anyone else's triplet is refused, and so is one from a
    rater whose link was revoked (checked in the saving transaction). A
    resent nonce, or a second submit for a triplet already answered, is a
    ``duplicate`` and changes nothing; a bad answer is a CpdmError and
    writes nothing.
    """
    nonce, skip_reason = checked_submit(nonce, answers, skip_reason, "triplet")
    now = now or utc_now()
    with write_transaction(ws) as conn:
        return save_judgment_in(conn, rater, campaign_id, triplet_id, answers, nonce, skip_reason, now)


def save_judgment_in(conn, rater, campaign_id, triplet_id, answers, nonce, skip_reason, now) -> SubmitResult:
    """The body of :func:`submit_judgment`, inside the caller's write transaction (nonce and skip checked)."""
    skipping = answers is None
    row = conn.execute(
        "SELECT a.status, a.assigned_at, a.left_pair, t.first_pair, t.second_pair, t.kind, "
        "EXISTS (SELECT 1 FROM judgments WHERE nonce = ?), x.disabled "
        "FROM triplet_assignments a JOIN triplets t ON t.id = a.triplet JOIN raters x ON x.id = a.rater "
        "WHERE a.campaign = ? AND a.triplet = ? AND a.rater = ?",
        (nonce, campaign_id, triplet_id, rater.id),
    ).fetchone()
    if row is None:
        raise CpdmError(f"triplet {triplet_id} is not assigned to this rater")
    status, assigned_at, left, first, second, kind, nonce_saved, disabled = row
    if disabled:
        raise CpdmError("this rating link has been revoked; the answer was not saved")
    if status in ("done", "skipped") or nonce_saved:
        return SubmitResult("duplicate")
    _overlap, protocol = campaign_settings(conn, campaign_id)
    values = ({q: None for q in protocol.question_ids} if skipping
              else validate_judgment_answers(protocol, answers))
    right = second if left == first else first
    seconds = max(0.0, (now - parse_time(assigned_at)).total_seconds())
    too_fast = (not skipping) and seconds < protocol.timing.min_seconds
    now_text = format_time(now)
    chosen = {"left": left, "right": right}
    conn.executemany(
        "INSERT INTO judgments (campaign, triplet, rater, question, left_pair, right_pair, answer, chosen_pair, "
        "skip_reason, shown_at, submitted_at, seconds, too_fast, nonce) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
        [
            (campaign_id, triplet_id, rater.id, question, left, right, answer, chosen.get(answer), skip_reason,
             assigned_at, now_text, seconds, int(too_fast), nonce)
            for question, answer in values.items()
        ],
    )
    mark_answered(conn, TRIPLETS, campaign_id, triplet_id, rater.id, skipping)
    update_load_after_submit(conn, TRIPLETS, campaign_id, triplet_id, rater.role, status, skipping)
    if kind != "normal" and not skipping:
        failed, answered = triplet_check_failures(conn, campaign_id, rater.id, protocol)
        flag_if_failing(conn, rater.id, failed, answered, protocol.attention_checks.max_failures)
    return SubmitResult("saved", seconds, too_fast)


def triplet_check_failures(conn, campaign_id: int, rater_id: int, protocol) -> tuple[int, int]:
    """(failed, answered) attention-check triplets of a rater: passing is choosing the anchor's own side."""
    rows = conn.execute(
        "SELECT j.chosen_pair, t.first_pair FROM judgments j JOIN triplets t ON t.id = j.triplet "
        "WHERE j.campaign = ? AND j.rater = ? AND j.question = ? AND t.kind = 'check' AND j.answer IS NOT NULL",
        (campaign_id, rater_id, protocol.attention_checks.question),
    ).fetchall()
    failed = sum(1 for chosen, identical in rows if chosen != identical)
    return failed, len(rows)


def judgment_answers_of(ws, rater, campaign_id: int, triplet_id: int) -> dict[str, str | None]:
    """The rater's own saved answers to one triplet (empty when none); never another rater's."""
    return dict(ws.conn.execute(
        "SELECT question, answer FROM judgments WHERE campaign = ? AND triplet = ? AND rater = ?",
        (campaign_id, triplet_id, rater.id),
    ).fetchall())


# --- Progress ---------------------------------------------------------------------------------------------------


def triplet_progress(ws, rater, campaign_id: int) -> Progress:
    """Triplets the rater answered in the 2afc campaign, of those answered plus those still open to them.

    "Still open" counts the offered normal triplets (priority above 0) their
    role still needs that they have not answered, plus the checks due (at
    most the campaign's checks they have not been given).
    """
    conn = ws.conn
    done = answered_count(conn, campaign_id, rater.id, TRIPLETS)
    overlap, protocol = campaign_settings(conn, campaign_id)
    needed = int(overlap.get(rater.role, 0))
    open_normal = conn.execute(
        "SELECT COUNT(*) FROM triplet_load tl JOIN campaign_triplets ct ON ct.campaign = tl.campaign "
        "AND ct.triplet = tl.triplet WHERE tl.campaign = ? AND tl.role = ? AND ct.priority > 0 AND "
        "(tl.load < ? OR EXISTS (SELECT 1 FROM triplet_assignments a WHERE a.campaign = tl.campaign "
        " AND a.triplet = tl.triplet AND a.rater = ? AND a.status = 'assigned')) "
        "AND NOT EXISTS (SELECT 1 FROM triplet_assignments a WHERE a.campaign = tl.campaign "
        " AND a.triplet = tl.triplet AND a.rater = ? AND a.status IN ('done', 'skipped'))",
        (campaign_id, rater.role, needed, rater.id, rater.id),
    ).fetchone()[0] if needed > 0 else 0
    rate = protocol.attention_checks.rate
    checks_ahead = round(open_normal * rate / (1 - rate)) if open_normal else 0
    if checks_ahead:  # no more than the campaign's checks the rater has not been given
        checks_ahead = min(checks_ahead, conn.execute(
            "SELECT COUNT(*) FROM campaign_triplets ct JOIN triplets t ON t.id = ct.triplet AND t.kind = 'check' "
            "WHERE ct.campaign = ? AND ct.priority > 0 AND NOT EXISTS (SELECT 1 FROM triplet_assignments a "
            "WHERE a.campaign = ct.campaign AND a.triplet = ct.triplet AND a.rater = ? AND a.status != 'expired')",
            (campaign_id, rater.id),
        ).fetchone()[0])
    return Progress(done, done + open_normal + checks_ahead)


def triplet_role_complete(ws, campaign_id: int, role: str) -> bool:
    """Whether every offered normal triplet has all the judgments the role's overlap asks for."""
    overlap, _ = campaign_settings(ws.conn, campaign_id)
    needed = int(overlap.get(role, 0))
    if needed == 0:
        return True
    row = ws.conn.execute(
        "SELECT COUNT(*) FROM campaign_triplets ct JOIN triplets t ON t.id = ct.triplet AND t.kind = 'normal' "
        "WHERE ct.campaign = ? AND ct.priority > 0 AND (SELECT COUNT(DISTINCT j.rater) FROM judgments j "
        " JOIN raters x ON x.id = j.rater WHERE j.campaign = ct.campaign AND j.triplet = ct.triplet "
        " AND x.role = ? AND j.answer IS NOT NULL) < ?",
        (campaign_id, role, needed),
    ).fetchone()
    return row[0] == 0


def triplet_campaign_status(ws, campaign_id: int) -> dict:
    """Progress of a 2afc campaign for researchers, in the shape of :func:`cpdm.rating.submit.campaign_status`.

    ``triplets`` counts the offered normal triplets (priority above 0),
    ``pairs`` the normal pairs they compare; per role, judgments needed
    (triplets × overlap) and done; per rater, triplets judged ("done", a
    can't tell included) and skipped, checks, too-fast judgments, median
    seconds per triplet, flags.
    """
    conn = ws.conn
    overlap, protocol = campaign_settings(conn, campaign_id)
    n_triplets, n_pairs = conn.execute(
        "SELECT COUNT(*), (SELECT COUNT(*) FROM campaign_pairs cp JOIN pairs p ON p.id = cp.pair "
        " AND p.kind = 'normal' WHERE cp.campaign = :c) FROM campaign_triplets ct "
        "JOIN triplets t ON t.id = ct.triplet AND t.kind = 'normal' WHERE ct.campaign = :c AND ct.priority > 0",
        {"c": campaign_id},
    ).fetchone()
    answered = conn.execute(
        "SELECT j.rater, t.kind, MAX(j.answer IS NULL), MAX(j.seconds), MAX(j.too_fast) "
        "FROM judgments j JOIN triplets t ON t.id = j.triplet WHERE j.campaign = ? GROUP BY j.rater, j.triplet",
        (campaign_id,),
    ).fetchall()
    per_role, per_rater = progress_tables(
        conn, campaign_id, TRIPLETS, answered, n_triplets, overlap,
        lambda rater_id: triplet_check_failures(conn, campaign_id, rater_id, protocol))
    return {"kind": "2afc", "triplets": n_triplets, "pairs": n_pairs, "per_role": per_role, "per_rater": per_rater}


__all__ = [
    "TripletItem", "claim_triplet", "claim_triplet_in", "current_triplet", "held_triplet", "judgment_answers_of",
    "oldest_held_triplet", "recount_triplet_load", "save_judgment_in", "submit_judgment", "triplet_campaign_status",
    "triplet_check_failures", "triplet_progress", "triplet_role_complete", "validate_judgment_answers",
]
