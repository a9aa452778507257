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
"""

from __future__ import annotations

import functools
import json
import math
import random
from dataclasses import dataclass

from cpdm.errors import CpdmError
from cpdm.rating.protocol import Protocol, parse_protocol

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


def expire_stale(conn, campaign_id: int, now_text: str, tables: WorkTables = PAIRS) -> int:
    """Expire assignments past their deadline and give their slots back; returns how many."""
    t = tables
    expired = conn.execute(
        f"UPDATE {t.assignments} SET status = 'expired' "
        f"WHERE campaign = ? AND status = 'assigned' AND expires_at <= ? RETURNING {t.item}, rater",
        (campaign_id, now_text),
    ).fetchall()
    for item, rater in expired:
        conn.execute(
            f"UPDATE {t.load} SET load = load - 1 "
            f"WHERE campaign = ? AND {t.item} = ? AND role = (SELECT role FROM raters WHERE id = ?) AND load > 0",
            (campaign_id, item, rater),
        )
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
    conn.execute(
        f"UPDATE {tables.load} SET load = MAX(load + ?, 0) WHERE campaign = ? AND role = ? AND {tables.item} = ?",
        (delta, campaign_id, role, item_id),
    )


def answered_count(conn, campaign_id: int, rater_id: int, tables: WorkTables = PAIRS) -> int:
    """Items the rater has answered (done or skipped) in the campaign."""
    return conn.execute(
        f"SELECT COUNT(*) FROM {tables.assignments} WHERE campaign = ? AND rater = ? AND status IN ('done', 'skipped')",
        (campaign_id, rater_id),
    ).fetchone()[0]


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
        conn.execute(
            "UPDATE raters SET flagged = 1, flag_reason = ? WHERE id = ? AND flagged = 0",
            (f"failed {failed} of {answered} attention checks", rater_id),
        )


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
