"""The refresh-triplets kind: recompute an active 2afc campaign's queue (:mod:`cpdm.rating.active`).

The claim path only reads ``campaign_triplets.priority``; this job writes it,
so a refresh never holds up a rater's next triplet. It is enqueued after
every ``REFRESH_EVERY`` judgments (:func:`enqueue_if_due`, which the rating
side calls after a judgment is saved) or by ``cpdm campaign refresh NAME``.
A refresh of a campaign that is already queued or running is not enqueued
twice.
"""

from __future__ import annotations

import json

from cpdm.jobs.parameters import Parameter
from cpdm.jobs.queue import enqueue
from cpdm.jobs.registry import parameterised_kind
from cpdm.rating.active import refresh_due, refresh_priorities
from cpdm.rating.campaigns import campaign_id_by_name

KIND_NAME = "refresh-triplets"


def _refresh_parameters() -> list[Parameter]:
    return [Parameter("campaign", "str", None, "name of an active 2afc campaign", required=True)]


def _run_refresh(ws, params: dict, context) -> dict:
    """Refresh the campaign's queue and log what it found."""
    result = refresh_priorities(ws, campaign_id_by_name(ws, params["campaign"]))
    context.log(result.describe())
    return {"judgments": result.judgments, "phase": result.phase, "offered": result.offered,
            "informative": result.informative, "changed": result.changed}


def pending_refresh(ws, campaign: str) -> int | None:
    """The id of a queued or running refresh of ``campaign``, or None."""
    for job_id, params in ws.conn.execute(
            "SELECT id, params FROM jobs WHERE kind = ? AND status IN ('queued', 'running') ORDER BY id",
            (KIND_NAME,)).fetchall():
        if json.loads(params).get("campaign") == campaign:
            return int(job_id)
    return None


def enqueue_refresh(ws, campaign: str) -> tuple[int, bool]:
    """(job id, whether it is new): a refresh of ``campaign``, unless one is already queued or running."""
    pending = pending_refresh(ws, campaign)
    if pending is not None:
        return pending, False
    return enqueue(ws, KIND_NAME, {"campaign": campaign}, title=f"refresh the triplet queue of {campaign}"), True


def enqueue_if_due(ws, campaign_id: int) -> int | None:
    """After a judgment: enqueue a refresh when the campaign is active and ``REFRESH_EVERY`` judgments came in
    since the last one (:func:`cpdm.rating.active.refresh_due`); returns the job id, or None."""
    if not refresh_due(ws, campaign_id):
        return None
    name = ws.conn.execute("SELECT name FROM campaigns WHERE id = ?", (campaign_id,)).fetchone()[0]
    return enqueue_refresh(ws, name)[0]


KIND = parameterised_kind(
    KIND_NAME, "recompute an active 2afc campaign's triplet queue",
    _refresh_parameters, _run_refresh,
)
