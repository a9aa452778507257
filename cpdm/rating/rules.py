"""What rating pairs and judging triplets share: settings, timeouts, load, attention checks, the submit contract.

A rating campaign assigns pairs (``assignments``, counted in ``pair_load``);
a 2afc campaign assigns triplets (``triplet_assignments``, counted in
``triplet_load``). Both follow the same rules, written here once and
parameterised by :class:`WorkTables`:

- an assignment not submitted within the protocol's timeout expires and
  gives its slot back (:func:`expire_stale`);
- a skip frees the slot, a late answer to an expired assignment retakes one
  (:func:`update_load_after_submit`);
- attention checks are due at the protocol's rate (:func:`check_due`), and a
  rater failing more than ``max_failures`` is flagged (:func:`flag_if_failing`);
- every submit carries a nonce of 8 to 128 characters, and a skip a reason
  (:func:`checked_submit`); its outcome is a :class:`SubmitResult`.

:mod:`cpdm.rating.assignment` and :mod:`cpdm.rating.submit` (pairs) and
:mod:`cpdm.rating.judgments` (triplets) build on it.

It is the one writer of the four bookkeeping tables (each statement names
its table): a claim (:func:`record_pair_claim`, :func:`record_triplet_claim`:
an upsert of the assignment and, for a normal item, one UPDATE of its load,
in the caller's transaction), a submit's status (:func:`mark_answered`), a
new campaign's zero load rows (:func:`seed_load`) and the recounts
(:func:`recount_pair_load`, :func:`recount_triplet_load`). A rater failing
the checks is flagged through :func:`cpdm.rating.auth.flag_rater`.
"""

from __future__ import annotations

import functools
import json
import math
import random
import statistics
from dataclasses import dataclass

from cpdm.errors import CpdmError
from cpdm.rating.auth import flag_rater
from cpdm.rating.protocol import Protocol, parse_protocol
from cpdm.store.workspace import RATING_ROLES

MAX_SKIP_REASON = 500


@dataclass(frozen=True)
class WorkTables:
    """Where one kind of work item is assigned and counted: its assignment table, load table and item column."""

    assignments: str
    load: str
    item: str  # the column naming the item in both tables
    noun: str  # how messages name one item


PAIRS = WorkTables("assignments", "pair_load", "pair", "pair")
TRIPLETS = WorkTables("triplet_assignments", "triplet_load", "triplet", "triplet")


@dataclass(frozen=True)
class SubmitResult:
    """``saved`` for a new answer, ``duplicate`` when this submit (or this item) was already saved."""

    status: str
    seconds: float | None = None
    too_fast: bool = False


@dataclass(frozen=True)
class Progress:
    done: int  # items answered (rated, judged or skipped)
    total: int  # done + what is still open to this rater

    @property
    def fraction(self) -> float:
        return self.done / self.total if self.total else 1.0


@functools.lru_cache(maxsize=64)
def protocol_from_text(text: str) -> Protocol:
    """A campaign's frozen protocol, parsed once per text."""
    return parse_protocol(text, frozen=True)


def campaign_settings(conn, campaign_id: int) -> tuple[dict, Protocol]:
    """A campaign's overlap (judgments per item per role) and its frozen protocol, read inside a transaction."""
    row = conn.execute("SELECT overlap, protocol FROM campaigns WHERE id = ?", (campaign_id,)).fetchone()
    if row is None:
        raise CpdmError(f"no campaign with id {campaign_id}")
    return json.loads(row[0]), protocol_from_text(row[1])


def campaign_kind(conn, campaign_id: int) -> str:
    """``rating`` or ``2afc``: whether the campaign's raters rate pairs or judge triplets."""
    row = conn.execute("SELECT kind FROM campaigns WHERE id = ?", (campaign_id,)).fetchone()
    if row is None:
        raise CpdmError(f"no campaign with id {campaign_id}")
    return row[0]


def work_tables(conn, campaign_id: int) -> WorkTables:
    """The tables a campaign's work lives in: :data:`TRIPLETS` for a 2afc campaign, else :data:`PAIRS`."""
    return TRIPLETS if campaign_kind(conn, campaign_id) == "2afc" else PAIRS


# The bookkeeping statements of each kind, with their tables named (one set per kind, so each statement says
# which table it writes). These are the only writes to the four tables: every other module calls the
# functions below.
_STATEMENTS = {
    "assignments": {
        "expire": "UPDATE assignments SET status = 'expired' "
                  "WHERE campaign = ? AND status = 'assigned' AND expires_at <= ? RETURNING pair, rater",
        "release": "UPDATE pair_load SET load = load - 1 "
                   "WHERE campaign = ? AND pair = ? AND role = (SELECT role FROM raters WHERE id = ?) AND load > 0",
        "adjust": "UPDATE pair_load SET load = MAX(load + ?, 0) WHERE campaign = ? AND role = ? AND pair = ?",
        "hold": "UPDATE pair_load SET load = load + 1 WHERE campaign = ? AND role = ? AND pair = ?",
        "status": "UPDATE assignments SET status = ? WHERE campaign = ? AND pair = ? AND rater = ?",
        "seed": "INSERT INTO pair_load (campaign, role, pair, load) VALUES (?, ?, ?, 0) ON CONFLICT DO NOTHING",
        "clear": "DELETE FROM pair_load WHERE campaign = ?",
    },
    "triplet_assignments": {
        "expire": "UPDATE triplet_assignments SET status = 'expired' "
                  "WHERE campaign = ? AND status = 'assigned' AND expires_at <= ? RETURNING triplet, rater",
        "release": "UPDATE triplet_load SET load = load - 1 "
                   "WHERE campaign = ? AND triplet = ? AND role = (SELECT role FROM raters WHERE id = ?) AND load > 0",
        "adjust": "UPDATE triplet_load SET load = MAX(load + ?, 0) WHERE campaign = ? AND role = ? AND triplet = ?",
        "hold": "UPDATE triplet_load SET load = load + 1 WHERE campaign = ? AND role = ? AND triplet = ?",
        "status": "UPDATE triplet_assignments SET status = ? WHERE campaign = ? AND triplet = ? AND rater = ?",
        "seed": "INSERT INTO triplet_load (campaign, role, triplet, load) VALUES (?, ?, ?, 0) ON CONFLICT DO NOTHING",
        "clear": "DELETE FROM triplet_load WHERE campaign = ?",
    },
}


def _sql(tables: WorkTables, name: str) -> str:
    return _STATEMENTS[tables.assignments][name]


def expire_stale(conn, campaign_id: int, now_text: str, tables: WorkTables = PAIRS) -> int:
    """Expire assignments past their deadline and give their slots back; returns how many."""
    expired = conn.execute(_sql(tables, "expire"), (campaign_id, now_text)).fetchall()
    for item, rater in expired:
        conn.execute(_sql(tables, "release"), (campaign_id, item, rater))
    return len(expired)


def update_load_after_submit(conn, tables: WorkTables, campaign_id: int, item_id: int, role: str,
                             old_status: str, skipping: bool) -> None:
    """Keep the load right: a skip frees the slot; a late answer to an expired assignment retakes one."""
    if skipping and old_status == "assigned":
        delta = -1
    elif not skipping and old_status == "expired":
        delta = 1
    else:
        return
    conn.execute(_sql(tables, "adjust"), (delta, campaign_id, role, item_id))


def record_pair_claim(conn, campaign_id: int, pair_id: int, rater_id: int, role: str, now_text: str,
                      expires_text: str, counted: bool) -> None:
    """Assign a pair to a rater (again, if an earlier assignment expired) and, unless it is a check, hold its slot."""
    conn.execute(
        "INSERT INTO assignments (campaign, pair, rater, status, assigned_at, expires_at) "
        "VALUES (?, ?, ?, 'assigned', ?, ?) ON CONFLICT (campaign, pair, rater) DO UPDATE SET "
        "status = 'assigned', assigned_at = excluded.assigned_at, expires_at = excluded.expires_at",
        (campaign_id, pair_id, rater_id, now_text, expires_text),
    )
    if counted:
        conn.execute(_sql(PAIRS, "hold"), (campaign_id, role, pair_id))


def record_triplet_claim(conn, campaign_id: int, triplet_id: int, rater_id: int, role: str, left_pair: int,
                         now_text: str, expires_text: str, counted: bool) -> None:
    """Assign a triplet to a rater, with the pair shown on the left, and, unless it is a check, hold its slot."""
    conn.execute(
        "INSERT INTO triplet_assignments (campaign, triplet, rater, status, left_pair, assigned_at, expires_at) "
        "VALUES (?, ?, ?, 'assigned', ?, ?, ?) ON CONFLICT (campaign, triplet, rater) DO UPDATE SET "
        "status = 'assigned', left_pair = excluded.left_pair, assigned_at = excluded.assigned_at, "
        "expires_at = excluded.expires_at",
        (campaign_id, triplet_id, rater_id, left_pair, now_text, expires_text),
    )
    if counted:
        conn.execute(_sql(TRIPLETS, "hold"), (campaign_id, role, triplet_id))


def mark_answered(conn, tables: WorkTables, campaign_id: int, item_id: int, rater_id: int, skipping: bool) -> None:
    """Close a rater's assignment to an item: ``skipped`` or ``done``."""
    conn.execute(_sql(tables, "status"), ("skipped" if skipping else "done", campaign_id, item_id, rater_id))


def seed_load(conn, tables: WorkTables, campaign_id: int, item_ids) -> None:
    """Zero load rows, one per role, for a campaign's new normal items (rows already there are kept)."""
    conn.executemany(_sql(tables, "seed"),
                     [(campaign_id, role, item) for item in item_ids for role in RATING_ROLES])


def recount_pair_load(conn, campaign_id: int, now_text: str) -> None:
    """Rebuild a campaign's ``pair_load`` rows from its assignments and ratings, in the caller's transaction.

    A rater holds a pair who rated it, or holds an assignment to it that has
    not timed out at ``now_text``. Claims read these counters instead of
    counting assignments.
    """
    conn.execute(_sql(PAIRS, "clear"), (campaign_id,))
    roles = " UNION ALL ".join(f"SELECT '{role}' AS role" for role in RATING_ROLES)
    conn.execute(
        f"""
        WITH holders AS (
            SELECT pair, rater FROM assignments WHERE campaign = :campaign
              AND (status = 'done' OR (status = 'assigned' AND expires_at > :now))
            UNION
            SELECT pair, rater FROM ratings WHERE campaign = :campaign AND value IS NOT NULL
        ), counts AS (
            SELECT h.pair, r.role, COUNT(*) AS n FROM holders h JOIN raters r ON r.id = h.rater
            GROUP BY h.pair, r.role
        )
        INSERT INTO pair_load (campaign, role, pair, load)
        SELECT cp.campaign, roles.role, cp.pair, COALESCE(c.n, 0)
        FROM campaign_pairs cp JOIN pairs p ON p.id = cp.pair AND p.kind = 'normal'
        CROSS JOIN ({roles}) AS roles
        LEFT JOIN counts c ON c.pair = cp.pair AND c.role = roles.role
        WHERE cp.campaign = :campaign
        """,
        {"campaign": campaign_id, "now": now_text},
    )


def recount_triplet_load(conn, campaign_id: int, now_text: str) -> None:
    """Rebuild a 2afc campaign's ``triplet_load`` from its assignments and judgments (as :func:`recount_pair_load`)."""
    conn.execute(_sql(TRIPLETS, "clear"), (campaign_id,))
    conn.executemany(
        "INSERT INTO triplet_load (campaign, role, triplet, load) SELECT ct.campaign, ?, ct.triplet, ("
        " SELECT COUNT(*) FROM (SELECT a.rater FROM triplet_assignments a WHERE a.campaign = ct.campaign"
        "  AND a.triplet = ct.triplet AND (a.status = 'done' OR (a.status = 'assigned' AND a.expires_at > ?))"
        "  UNION SELECT j.rater FROM judgments j WHERE j.campaign = ct.campaign AND j.triplet = ct.triplet"
        "  AND j.answer IS NOT NULL) h JOIN raters x ON x.id = h.rater WHERE x.role = ?)"
        " FROM campaign_triplets ct JOIN triplets t ON t.id = ct.triplet AND t.kind = 'normal' WHERE ct.campaign = ?",
        [(role, now_text, role, campaign_id) for role in RATING_ROLES],
    )


def answered_count(conn, campaign_id: int, rater_id: int, tables: WorkTables = PAIRS) -> int:
    """Items the rater has answered (done or skipped) in the campaign."""
    return conn.execute(
        f"SELECT COUNT(*) FROM {tables.assignments} WHERE campaign = ? AND rater = ? AND status IN ('done', 'skipped')",
        (campaign_id, rater_id),
    ).fetchone()[0]


def median_seconds(values: list[float]) -> float | None:
    """The median of answer times, to a tenth of a second; None without any."""
    return round(statistics.median(values), 1) if values else None


def progress_tables(conn, campaign_id: int, tables: WorkTables, answered, n_items: int, overlap: dict,
                    check_failures) -> tuple[list[dict], list[dict]]:
    """A campaign's status for researchers: (per role, per rater), for pairs and triplets alike.

    ``answered`` holds one (rater, item kind, skipped, seconds, too fast)
    per item a rater answered; ``check_failures(rater_id)`` gives (failed,
    answered) attention checks. Listed raters are those who worked here and
    active raters who may: not those recruited through another campaign's link.
    """
    by_rater: dict[int, list] = {}
    for rater_id, kind, skipped, seconds, too_fast in answered:
        by_rater.setdefault(rater_id, []).append((kind, bool(skipped), seconds, bool(too_fast)))
    raters = conn.execute(
        "SELECT id, name, role, flagged, flag_reason, disabled, simulated FROM raters WHERE role != 'researcher' "
        f"AND (id IN (SELECT rater FROM {tables.assignments} WHERE campaign = ?) OR (disabled = 0 AND id NOT IN "
        "(SELECT rater FROM recruited_raters WHERE campaign != ?))) ORDER BY id",
        (campaign_id, campaign_id),
    ).fetchall()
    per_rater = []
    for rater_id, name, role, flagged, reason, disabled, simulated in raters:
        items = by_rater.get(rater_id, [])
        normal_done = [s for kind, skipped, s, _ in items if kind == "normal" and not skipped]
        failed, checked = check_failures(rater_id)
        per_rater.append({
            "rater": rater_id, "name": name, "role": role,
            "done": len(normal_done),
            "skipped": sum(1 for _, skipped, _, _ in items if skipped),
            "checks": f"{checked - failed}/{checked} passed",
            "too_fast": sum(1 for _, skipped, _, fast in items if fast and not skipped),
            "median_seconds": median_seconds([s for s in normal_done if s is not None]),
            "flagged": bool(flagged), "flag_reason": reason or "",
            "revoked": bool(disabled), "simulated": bool(simulated),
        })
    per_role = []
    for role in RATING_ROLES:
        rows = [r for r in per_rater if r["role"] == role]
        needed = n_items * int(overlap.get(role, 0))
        done = sum(r["done"] for r in rows)
        seconds = [s for rid in (r["rater"] for r in rows) for kind, skipped, s, _ in by_rater.get(rid, [])
                   if kind == "normal" and not skipped and s is not None]
        per_role.append({
            "role": role, "overlap": int(overlap.get(role, 0)), "needed": needed, "done": done,
            "percent": round(100 * min(done, needed) / needed, 1) if needed else 100.0,
            "raters": len(rows), "flagged": sum(r["flagged"] for r in rows),
            "median_seconds": median_seconds(seconds),
        })
    return per_role, per_rater


def check_due(campaign_id: int, rater_id: int, seen: int, checks_seen: int, rate: float) -> bool:
    """Whether the rater's next item should be an attention check.

    Checks are spread evenly at ``rate`` (one in ten for 0.1), with a
    per-rater offset so raters do not all meet their first check at the
    same position.
    """
    if rate <= 0:
        return False
    offset = random.Random(f"check-offset:{campaign_id}:{rater_id}").random()
    return checks_seen < math.floor(rate * (seen + 1) + offset)


def flag_if_failing(conn, rater_id: int, failed: int, answered: int, max_failures: int) -> None:
    """Flag the rater (once; the first reason stays) when they failed more than ``max_failures`` checks."""
    if failed > max_failures:
        flag_rater(conn, rater_id, f"failed {failed} of {answered} attention checks")


def validate_nonce(nonce: str) -> str:
    if not isinstance(nonce, str) or not 8 <= len(nonce) <= 128:
        raise CpdmError("a submit needs a nonce of 8 to 128 characters")
    return nonce


def checked_submit(nonce: str, answers: dict | None, skip_reason: str | None,
                   noun: str = "pair") -> tuple[str, str | None]:
    """The validated nonce and skip reason (None unless skipping), before any database work."""
    nonce = validate_nonce(nonce)
    if answers is None:
        skip_reason = (skip_reason or "").strip()
        if not skip_reason:
            raise CpdmError(f"a skipped {noun} needs a reason")
        return nonce, skip_reason[:MAX_SKIP_REASON]
    return nonce, None
