"""Saving a rater's answers, resuming, and progress.

A submit saves every question's answer for one pair in one transaction,
together with the time from when the pair was first shown (the assignment
time, so a refresh does not reset it). Each submit carries a nonce made when
the page was drawn: a double click or a resent request with the same nonce,
or a second submit for a pair already answered, changes nothing.

Judgments of triplets (2afc campaigns) are saved by
:func:`cpdm.rating.judgments.submit_judgment` under the same rules; the
progress and status functions here count triplets for those campaigns.
"""

from __future__ import annotations

from datetime import datetime

from cpdm.errors import CpdmError
from cpdm.rating.judgments import (
    triplet_campaign_status, triplet_check_failures, triplet_progress, triplet_role_complete,
)
from cpdm.rating.rules import (  # noqa: F401  (SubmitResult and MAX_SKIP_REASON: also known from here)
    MAX_SKIP_REASON, PAIRS, Progress, SubmitResult, campaign_kind, campaign_settings, checked_submit,
    flag_if_failing, mark_answered, progress_tables, update_load_after_submit,
)
from cpdm.store.time import format_time, parse_time, utc_now
from cpdm.store.writer import write_transaction


def validate_answers(protocol, answers: dict) -> dict[str, int]:
    """Check one value per protocol question, each on its scale; return them as ints."""
    if not isinstance(answers, dict):
        raise CpdmError("answers must map question ids to values")
    unknown = sorted(set(answers) - set(protocol.question_ids))
    if unknown:
        raise CpdmError(f"unknown question(s) {', '.join(map(str, unknown))}")
    checked: dict[str, int] = {}
    for question in protocol.questions:
        value = answers.get(question.id)
        if value is None:
            raise CpdmError(f"question {question.id!r} has no answer")
        if isinstance(value, bool) or not isinstance(value, int) or value not in question.values:
            low, high = question.scale
            raise CpdmError(f"answer to {question.id!r} must be a whole number from {low} to {high}, got {value!r}")
        checked[question.id] = value
    return checked


def submit(
    ws,
    rater,
    campaign_id: int,
    pair_id: int,
    answers: dict | None,
    *,
    nonce: str,
    skip_reason: str | None = None,
    now: datetime | None = None,
) -> SubmitResult:
    """Save the rater's answers to one pair (or a skip with its reason).

    ``answers=None`` with a ``skip_reason`` records "skip: cannot judge": one
    row per question with a NULL value. The pair must be assigned to this
    rater; a submit for anyone else's pair is refused, and so is one from a
    rater whose link was revoked (checked in the saving transaction, so a page
    drawn before the revocation cannot save).
    """
    nonce, skip_reason = checked_submit(nonce, answers, skip_reason)
    now = now or utc_now()
    with write_transaction(ws) as conn:
        return save_in(conn, rater, campaign_id, pair_id, answers, nonce, skip_reason, now)


def save_in(conn, rater, campaign_id, pair_id, answers, nonce, skip_reason, now) -> SubmitResult:
    """The body of :func:`submit`, inside the caller's write transaction (nonce and skip reason already checked)."""
    skipping = answers is None
    # The assignment, the pair's kind, whether this nonce was saved before and whether the
    # rater is revoked now (the caller's rater object may predate a revocation): one round trip.
    row = conn.execute(
        "SELECT a.status, a.assigned_at, p.kind, EXISTS (SELECT 1 FROM ratings WHERE nonce = ?), x.disabled "
        "FROM assignments a JOIN pairs p ON p.id = a.pair JOIN raters x ON x.id = a.rater "
        "WHERE a.campaign = ? AND a.pair = ? AND a.rater = ?",
        (nonce, campaign_id, pair_id, rater.id),
    ).fetchone()
    if row is None:
        raise CpdmError(f"pair {pair_id} is not assigned to this rater")
    status, assigned_at, kind, nonce_saved, disabled = row
    if disabled:
        raise CpdmError("this rating link has been revoked; the answer was not saved")
    if status in ("done", "skipped") or nonce_saved:
        return SubmitResult("duplicate")
    _overlap, protocol = campaign_settings(conn, campaign_id)
    values = {q: None for q in protocol.question_ids} if skipping else validate_answers(protocol, answers)
    seconds = max(0.0, (now - parse_time(assigned_at)).total_seconds())
    too_fast = (not skipping) and seconds < protocol.timing.min_seconds
    now_text = format_time(now)
    conn.executemany(
        "INSERT INTO ratings (campaign, pair, rater, question, value, skip_reason, shown_at, submitted_at, "
        "seconds, too_fast, nonce) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
        [
            (campaign_id, pair_id, rater.id, question, value, skip_reason,
             assigned_at, now_text, seconds, int(too_fast), nonce)
            for question, value in values.items()
        ],
    )
    mark_answered(conn, PAIRS, campaign_id, pair_id, rater.id, skipping)
    update_load_after_submit(conn, PAIRS, campaign_id, pair_id, rater.role, status, skipping)
    if kind != "normal" and not skipping:
        _judge_attention_checks(conn, campaign_id, rater.id, protocol)
    return SubmitResult("saved", seconds, too_fast)


def attention_check_failures(conn, campaign_id: int, rater_id: int, protocol) -> tuple[int, int]:
    """(failed, answered) attention checks of a rater in a campaign, judged by the protocol's rule.

    In a 2afc campaign the checks are triplets (:func:`cpdm.rating.judgments.triplet_check_failures`).
    """
    if protocol.comparative:
        return triplet_check_failures(conn, campaign_id, rater_id, protocol)
    rule = protocol.attention_checks
    rows = conn.execute(
        "SELECT p.kind, r.value FROM ratings r JOIN pairs p ON p.id = r.pair "
        "WHERE r.campaign = ? AND r.rater = ? AND r.question = ? AND p.kind != 'normal' AND r.value IS NOT NULL",
        (campaign_id, rater_id, rule.question),
    ).fetchall()
    failed = sum(
        1 for kind, value in rows
        if (kind == "check_identical" and value < rule.identical_min)
        or (kind == "check_unrelated" and value > rule.unrelated_max)
    )
    return failed, len(rows)


def _judge_attention_checks(conn, campaign_id: int, rater_id: int, protocol) -> None:
    failed, answered = attention_check_failures(conn, campaign_id, rater_id, protocol)
    flag_if_failing(conn, rater_id, failed, answered, protocol.attention_checks.max_failures)


def rater_progress(ws, rater, campaign_id: int) -> Progress:
    """Pairs the rater answered in the campaign, of those answered plus those still open to them.

    "Still open" counts the normal pairs their role still needs that they
    have not answered, capped by what they could do, plus the checks due.
    In a 2afc campaign it counts triplets (:func:`cpdm.rating.judgments.triplet_progress`).
    """
    conn = ws.conn
    if campaign_kind(conn, campaign_id) == "2afc":
        return triplet_progress(ws, rater, campaign_id)
    done = conn.execute(
        "SELECT COUNT(*) FROM assignments WHERE campaign = ? AND rater = ? AND status IN ('done', 'skipped')",
        (campaign_id, rater.id),
    ).fetchone()[0]
    overlap, protocol = campaign_settings(conn, campaign_id)
    needed = int(overlap.get(rater.role, 0))
    open_normal = conn.execute(
        "SELECT COUNT(*) FROM pair_load pl WHERE pl.campaign = ? AND pl.role = ? AND "
        "(pl.load < ? OR EXISTS (SELECT 1 FROM assignments a WHERE a.campaign = pl.campaign AND a.pair = pl.pair "
        " AND a.rater = ? AND a.status = 'assigned')) "
        "AND NOT EXISTS (SELECT 1 FROM assignments a WHERE a.campaign = pl.campaign AND a.pair = pl.pair "
        " AND a.rater = ? AND a.status IN ('done', 'skipped'))",
        (campaign_id, rater.role, needed, rater.id, rater.id),
    ).fetchone()[0] if needed > 0 else 0
    rate = protocol.attention_checks.rate
    checks_ahead = round(open_normal * rate / (1 - rate)) if open_normal else 0
    return Progress(done, done + open_normal + checks_ahead)


def rater_overall_progress(ws, rater) -> Progress:
    """Progress summed over every campaign the rater has worked in or can work in.

    A rater recruited through a link works in its campaign only, on at most
    the link's pairs per rater (see :func:`recruited_progress`).
    """
    from cpdm.rating.campaigns import open_campaign_ids
    from cpdm.rating.recruit import recruitment_of

    recruitment = recruitment_of(ws.conn, rater.id)
    if recruitment is not None:
        return recruited_progress(ws, rater, recruitment)
    campaigns = set(open_campaign_ids(ws)) | {
        row[0] for row in ws.conn.execute(
            "SELECT campaign FROM assignments WHERE rater = :r UNION SELECT campaign FROM triplet_assignments "
            "WHERE rater = :r", {"r": rater.id})
    }
    parts = [rater_progress(ws, rater, c) for c in sorted(campaigns)]
    return Progress(sum(p.done for p in parts), sum(p.total for p in parts))


def recruited_progress(ws, rater, recruitment) -> Progress:
    """A recruited rater's progress: pairs answered of their pairs per rater (or of what the campaign has for them).

    ``recruitment`` is the rater's :class:`cpdm.rating.recruit.Recruitment`;
    once they have finished, what they did is the whole.
    """
    progress = rater_progress(ws, rater, recruitment.campaign)
    if recruitment.finished_at is not None:
        return Progress(progress.done, progress.done)
    total = progress.total if recruitment.per_rater is None else min(progress.total, recruitment.per_rater)
    return Progress(progress.done, max(total, progress.done))


def campaign_status(ws, campaign_id: int) -> dict:
    """Progress of a campaign for researchers.

    Returns ``{"kind": "rating", "per_role": [...], "per_rater": [...], "pairs": N}``. Per role:
    ratings needed, done, percent complete, raters, flagged raters, median
    seconds per pair. Per rater: name, role, pairs done, skipped, checks
    failed, flagged, too-fast answers, median seconds per pair. A 2afc
    campaign's status counts triplets instead, with ``"kind": "2afc"`` and
    ``"triplets": N`` (:func:`cpdm.rating.judgments.triplet_campaign_status`).
    """
    conn = ws.conn
    if campaign_kind(conn, campaign_id) == "2afc":
        return triplet_campaign_status(ws, campaign_id)
    overlap, protocol = campaign_settings(conn, campaign_id)
    n_pairs = conn.execute(
        "SELECT COUNT(*) FROM campaign_pairs cp JOIN pairs p ON p.id = cp.pair WHERE cp.campaign = ? AND p.kind = 'normal'",
        (campaign_id,),
    ).fetchone()[0]
    answered = conn.execute(
        "SELECT r.rater, p.kind, MAX(r.value IS NULL), MAX(r.seconds), MAX(r.too_fast) "
        "FROM ratings r JOIN pairs p ON p.id = r.pair WHERE r.campaign = ? GROUP BY r.rater, r.pair",
        (campaign_id,),
    ).fetchall()
    per_role, per_rater = progress_tables(
        conn, campaign_id, PAIRS, answered, n_pairs, overlap,
        lambda rater_id: attention_check_failures(conn, campaign_id, rater_id, protocol))
    return {"kind": "rating", "pairs": n_pairs, "per_role": per_role, "per_rater": per_rater}


def role_complete(ws, campaign_id: int, role: str) -> bool:
    """Whether every normal pair (2afc: offered triplet) has all the answers the role's overlap asks for."""
    if campaign_kind(ws.conn, campaign_id) == "2afc":
        return triplet_role_complete(ws, campaign_id, role)
    overlap, _ = campaign_settings(ws.conn, campaign_id)
    needed = int(overlap.get(role, 0))
    if needed == 0:
        return True
    row = ws.conn.execute(
        "SELECT COUNT(*) FROM campaign_pairs cp JOIN pairs p ON p.id = cp.pair AND p.kind = 'normal' "
        "WHERE cp.campaign = ? AND (SELECT COUNT(DISTINCT r.rater) FROM ratings r JOIN raters x ON x.id = r.rater "
        " WHERE r.campaign = cp.campaign AND r.pair = cp.pair AND x.role = ? AND r.value IS NOT NULL) < ?",
        (campaign_id, role, needed),
    ).fetchone()
    return row[0] == 0


def answers_of(ws, rater, campaign_id: int, pair_id: int) -> dict[str, int | None]:
    """The rater's own saved answers to one pair (empty when none); never another rater's."""
    rows = ws.conn.execute(
        "SELECT question, value FROM ratings WHERE campaign = ? AND pair = ? AND rater = ?",
        (campaign_id, pair_id, rater.id),
    ).fetchall()
    return dict(rows)


def protocol_for_rater(ws, rater):
    """The protocol a rater works under: their current campaign's, else the first open one's, else the default."""
    from cpdm.rating.campaigns import open_campaign_ids
    from cpdm.rating.protocol import default_protocol_path, parse_protocol

    row = ws.conn.execute(
        "SELECT campaign FROM (SELECT a.campaign, a.assigned_at FROM assignments a WHERE a.rater = :r "
        "AND a.status = 'assigned' UNION ALL SELECT t.campaign, t.assigned_at FROM triplet_assignments t "
        "WHERE t.rater = :r AND t.status = 'assigned') h JOIN campaigns c ON c.id = h.campaign "
        "WHERE c.status = 'open' ORDER BY h.assigned_at LIMIT 1",
        {"r": rater.id},
    ).fetchone()
    campaigns = [row[0]] if row else open_campaign_ids(ws)
    if campaigns:
        return campaign_settings(ws.conn, campaigns[0])[1]
    return parse_protocol(default_protocol_path().read_text(encoding="utf-8"))


__all__ = [
    "protocol_for_rater",
    "Progress", "SubmitResult", "answers_of", "attention_check_failures", "campaign_status",
    "rater_overall_progress", "rater_progress", "recruited_progress", "role_complete", "submit",
    "validate_answers",
]
