"""The refresh-triplets job kind and `cpdm campaign refresh`: the active queue is written off the claim path."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from cpdm.cli import cli
from cpdm.errors import CpdmError
from cpdm.jobs import queue
from cpdm.jobs.kinds.refresh_triplets import KIND_NAME, enqueue_if_due, enqueue_refresh, pending_refresh
from cpdm.jobs.registry import get_kind
from cpdm.progress import JobContext
from cpdm.rating.active import REFRESH_EVERY, WARMUP_JUDGMENTS, last_refresh
from tests.test_active import judge, raters_of, scored_world


def run_kind(ws, params):
    kind = get_kind(KIND_NAME)
    result = kind.run(ws, kind.check_params(params), JobContext(device="cpu"))
    json.dumps(result)
    return result


def test_the_job_refreshes_the_queue_and_reports_what_it_found(ws):
    campaign, _ = scored_world(ws, n_anchors=8, gens=7)
    judge(ws, campaign, raters_of(ws, 8), WARMUP_JUDGMENTS + 10)
    result = run_kind(ws, {"campaign": "duel"})
    assert result["phase"] == "active" and result["judgments"] == WARMUP_JUDGMENTS + 10
    assert result["offered"] >= result["informative"] > 0
    assert last_refresh(ws, campaign)["judgments"] == WARMUP_JUDGMENTS + 10


def test_a_refresh_is_enqueued_once_per_campaign_and_when_due(ws):
    campaign, _ = scored_world(ws)
    assert enqueue_if_due(ws, campaign) is None                  # nothing judged yet
    judge(ws, campaign, raters_of(ws), REFRESH_EVERY)
    job = enqueue_if_due(ws, campaign)
    assert job is not None and queue.get_job(ws, job).kind == KIND_NAME
    assert enqueue_if_due(ws, campaign) == job                   # already queued: not twice
    assert enqueue_refresh(ws, "duel") == (job, False)
    assert pending_refresh(ws, "other") is None


def test_bad_parameters_are_refused_when_queued(ws):
    for params in ({}, {"campaign": "  "}):
        with pytest.raises(CpdmError, match="refresh-triplets job: campaign is required"):
            queue.enqueue(ws, KIND_NAME, params)
    assert queue.list_jobs(ws) == []


def test_the_command_enqueues_or_refreshes_now(ws):
    scored_world(ws)
    runner = CliRunner()
    first = runner.invoke(cli, ["campaign", "refresh", "duel", "--workspace", str(ws.root)])
    assert first.exit_code == 0, first.output
    assert "enqueued job" in first.output
    again = runner.invoke(cli, ["campaign", "refresh", "duel", "--workspace", str(ws.root)])
    assert "already queued" in again.output
    now = runner.invoke(cli, ["campaign", "refresh", "duel", "--now", "--workspace", str(ws.root)])
    assert now.exit_code == 0, now.output
    assert "warm-up: 0 of" in now.output


def test_the_command_refuses_a_campaign_without_a_queue(ws):
    from cpdm.rating.triplets import create_2afc_campaign
    from tests.triplet_fixtures import TWO_AFC_TEXT

    _, pairs = scored_world(ws)
    create_2afc_campaign(ws, "plain", pairs, design="balanced", protocol_text=TWO_AFC_TEXT)
    result = CliRunner().invoke(cli, ["campaign", "refresh", "plain", "--workspace", str(ws.root)])
    assert result.exit_code == 1
    assert "only active 2afc campaigns have a queue to refresh" in result.output
    assert queue.list_jobs(ws) == []


def test_a_judgment_saved_from_the_rating_page_queues_the_refresh_when_due(ws):
    """The page's submit path enqueues the refresh (a worker runs it); the rater's request never refreshes."""
    from cpdm.app.answer_panel.model import handle_event
    from cpdm.rating.assignment import claim_next
    from tests.test_answer_panel_2afc import event_for

    campaign, _ = scored_world(ws)
    raters = raters_of(ws)
    judge(ws, campaign, raters, REFRESH_EVERY - 1)
    assert pending_refresh(ws, "duel") is None
    item = next(item for item in (claim_next(ws, campaign, rater) for rater in raters) if item is not None)
    rater = next(r for r in raters if ws.conn.execute(
        "SELECT 1 FROM triplet_assignments WHERE triplet = ? AND rater = ? AND status = 'assigned'",
        (item.triplet, r.id)).fetchone())
    assert handle_event(ws, rater, event_for(item, rater, answers={"copy": "left", "content": "left",
                                                                    "style": "right"})) is None
    job = pending_refresh(ws, "duel")
    assert job is not None and queue.get_job(ws, job).status == "queued"
    assert last_refresh(ws, campaign) is None or last_refresh(ws, campaign)["judgments"] < REFRESH_EVERY
