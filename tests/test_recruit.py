"""Recruitment links: admission after consent, quotas, closing, per-rater pairs, the end page, rate limits."""

from __future__ import annotations

from datetime import timedelta

import pytest

from cpdm.errors import CpdmError
from cpdm.rating import recruit
from cpdm.rating.auth import rater_for_token, revoke_rater
from cpdm.rating.campaigns import set_campaign_status
from cpdm.rating.submit import rater_overall_progress
from cpdm.store.time import utc_now
from tests.rating_fixtures import make_world
from tests.recruit_support import ID_PARAM, params, rate_all, recruiting_world


def raters_count(ws) -> int:
    return ws.conn.execute("SELECT COUNT(*) FROM raters").fetchone()[0]


def test_a_first_visit_creates_no_rater_until_consent_and_the_same_id_resumes_anywhere(ws):
    _, link, secret = recruiting_world(ws, quota=3, per_rater=4)
    first = recruit.visit(ws, params(secret, "5f3c0a"), "10.0.0.1")
    assert first.state == "may_join" and first.token is None and raters_count(ws) == 0

    admission = recruit.admit(ws, params(secret, "5f3c0a"), "10.0.0.1")
    assert admission.state == "admitted"
    assert admission.rater.role == "lay" and admission.rater.consented_at is not None
    assert "5f3c0a" not in admission.rater.name  # the platform id is never the rater's name
    assert rater_for_token(ws, admission.token) == admission.rater

    # Another device, another address: the same link and id sign the same rater in.
    again = recruit.visit(ws, params(secret, "5f3c0a"), "192.0.2.7")
    assert again.state == "admitted" and again.token == admission.token
    assert recruit.admit(ws, params(secret, "5f3c0a"), "192.0.2.7").rater == admission.rater
    assert raters_count(ws) == 1
    assert recruit.get_link(ws, link.id).admitted == 1


@pytest.mark.parametrize("platform_id, state", [(None, "missing_id"), ("", "missing_id"), ("  ", "missing_id"),
                                                 ("<script>", "bad_id"), ("a" * 65, "bad_id"), ("x y", "bad_id")])
def test_a_missing_or_malformed_platform_id_gets_a_clear_refusal_and_no_rater(ws, platform_id, state):
    _, _, secret = recruiting_world(ws)
    seen = recruit.visit(ws, params(secret, platform_id), "10.0.0.1")
    assert seen.state == state and seen.refusal[0].startswith("Your participant id")
    assert recruit.admit(ws, params(secret, platform_id), "10.0.0.1").state == state
    assert raters_count(ws) == 0


def test_without_the_links_secret_nobody_takes_over_an_id(ws):
    world, _, secret = recruiting_world(ws)
    owner = recruit.admit(ws, params(secret, "P-1"), "10.0.0.1")
    rate_all(ws, owner.rater)  # the id has ratings
    for query in ({ID_PARAM: "P-1"}, params("x" * 43, "P-1"), params(("B" if secret[0] != "B" else "C") + secret[1:], "P-1"),
                  params(secret + "x", "P-1")):
        assert recruit.visit(ws, query, "10.0.0.9").state == "invalid"
        assert recruit.admit(ws, query, "10.0.0.9").rater is None
    # A link of another campaign (another study) with the same id makes a separate rater, never this one.
    other = make_world(ws, 2, 1, overlap={"lay": 1}, name="other")
    _, other_secret = recruit.create_link(ws, other.campaign, "lay", id_param=ID_PARAM)
    elsewhere = recruit.admit(ws, params(other_secret, "P-1"), "10.0.0.9")
    assert elsewhere.state == "admitted" and elsewhere.rater != owner.rater
    assert elsewhere.token != owner.token


def test_a_second_link_of_the_same_campaign_does_not_resume_or_readmit_an_id(ws):
    world, first, secret = recruiting_world(ws)
    recruit.admit(ws, params(secret, "P-1"), "10.0.0.1")
    recruit.close_link(ws, first.id)
    _, second_secret = recruit.create_link(ws, world.campaign, "lay", id_param=ID_PARAM)
    assert recruit.visit(ws, params(second_secret, "P-1"), "10.0.0.1").state == "elsewhere"
    assert recruit.admit(ws, params(second_secret, "P-1"), "10.0.0.1").state == "elsewhere"
    assert raters_count(ws) == 1


def test_the_quota_admits_exactly_n_and_later_visitors_see_full_while_admitted_raters_finish(ws):
    _, link, secret = recruiting_world(ws, quota=2, per_rater=3)
    admitted = [recruit.admit(ws, params(secret, f"P{i}"), f"10.0.0.{i}") for i in range(2)]
    assert [a.state for a in admitted] == ["admitted", "admitted"]
    late = recruit.admit(ws, params(secret, "P9"), "10.0.0.9")
    assert late.state == "full" and late.rater is None
    assert recruit.visit(ws, params(secret, "P9"), "10.0.0.9").refusal[0] == "This study is full"
    assert recruit.visit(ws, params(secret, "P0"), "10.0.0.9").state == "admitted"
    assert len(rate_all(ws, admitted[0].rater)) == 3
    assert recruit.get_link(ws, link.id).state(utc_now()) == "full"


def test_closing_a_link_or_its_closing_time_stops_new_raters_at_once_but_not_admitted_ones(ws):
    _, link, secret = recruiting_world(ws, per_rater=2, closes_at=utc_now() + timedelta(hours=1))
    inside = recruit.admit(ws, params(secret, "early"), "10.0.0.1")
    later = utc_now() + timedelta(hours=2)
    assert recruit.visit(ws, params(secret, "late"), "10.0.0.2", now=later).state == "closed"
    assert recruit.admit(ws, params(secret, "late"), "10.0.0.2", now=later).state == "closed"
    assert recruit.visit(ws, params(secret, "early"), "10.0.0.1", now=later).state == "admitted"

    recruit.close_link(ws, link.id)
    refused = recruit.visit(ws, params(secret, "late"), "10.0.0.2")
    assert refused.state == "closed" and refused.refusal[0] == "This study is closed"
    assert len(rate_all(ws, inside.rater)) == 2  # admitted raters can still finish
    assert recruit.finished_recruitment(ws, inside.rater) is not None


def test_each_rater_gets_per_rater_pairs_then_the_end_page_with_the_completion_code(ws):
    _, _, secret = recruiting_world(ws, n_anchors=5, per_rater=4, completion_code="C0DE-1",
                                    completion_url="https://platform.example/complete?cc=C0DE-1",
                                    include_checks=True)
    rater = recruit.admit(ws, params(secret, "P1"), "10.0.0.1").rater
    assert rater_overall_progress(ws, rater).total == 4
    assert recruit.finished_recruitment(ws, rater) is None
    pairs = rate_all(ws, rater)
    assert len(pairs) == len(set(pairs)) == 4
    end = recruit.finished_recruitment(ws, rater)
    assert (end.completion_code, end.completion_url) == ("C0DE-1", "https://platform.example/complete?cc=C0DE-1")
    assert end.finished_at is not None
    assert rater_overall_progress(ws, rater).done == rater_overall_progress(ws, rater).total == 4
    assert recruit.next_item_for(ws, rater) is None  # later visits show the end page again


def test_a_rater_who_runs_out_of_pairs_still_reaches_the_end(ws):
    _, _, secret = recruiting_world(ws, n_anchors=2, gens_per_anchor=1, lay_overlap=1, per_rater=10)
    first = recruit.admit(ws, params(secret, "P1"), "10.0.0.1").rater
    assert len(rate_all(ws, first)) == 2  # the campaign needed only two lay ratings
    assert recruit.finished_recruitment(ws, first) is not None
    second = recruit.admit(ws, params(secret, "P2"), "10.0.0.2").rater
    assert recruit.next_item_for(ws, second) is None and recruit.finished_recruitment(ws, second) is not None


def test_a_rater_whose_campaign_is_closed_reaches_the_end(ws):
    world, _, secret = recruiting_world(ws, per_rater=5)
    rater = recruit.admit(ws, params(secret, "P1"), "10.0.0.1").rater
    item = recruit.next_item_for(ws, rater)
    set_campaign_status(ws, world.campaign, "closed")
    assert recruit.next_item_for(ws, rater) == item  # the pair on screen can still be answered
    rate_all(ws, rater)
    assert recruit.finished_recruitment(ws, rater) is not None


def test_a_recruited_rater_only_rates_their_links_campaign(ws):
    world, _, secret = recruiting_world(ws, per_rater=3)
    make_world(ws, 3, 2, overlap={"lay": 3}, name="older-or-newer")
    rater = recruit.admit(ws, params(secret, "P1"), "10.0.0.1").rater
    rate_all(ws, rater)
    campaigns = {row[0] for row in ws.conn.execute("SELECT campaign FROM assignments WHERE rater = ?", (rater.id,))}
    assert campaigns == {world.campaign}


def test_failing_attention_checks_flags_the_rater_who_still_reaches_the_end(ws):
    from tests.rating_fixtures import protocol_with

    _, _, secret = recruiting_world(ws, per_rater=10, include_checks=True, completion_code="DONE1",
                                    protocol_text=protocol_with(rate=0.5, max_failures=0))
    rater = recruit.admit(ws, params(secret, "careless"), "10.0.0.1").rater
    rate_all(ws, rater, answers={"content": 3, "style": 3, "copy": 3})  # 3 fails both kinds of check
    end = recruit.finished_recruitment(ws, rater)
    assert end is not None and end.completion_code == "DONE1"
    flagged = ws.conn.execute("SELECT flagged, flag_reason FROM raters WHERE id = ?", (rater.id,)).fetchone()
    assert flagged[0] == 1 and "attention checks" in flagged[1]


def test_new_raters_are_limited_per_client_address(ws):
    _, _, secret = recruiting_world(ws, signups_per_address=2)
    states = [recruit.admit(ws, params(secret, f"P{i}"), "203.0.113.5").state for i in range(3)]
    assert states == ["admitted", "admitted", "too_many"]
    assert recruit.admit(ws, params(secret, "P3"), "203.0.113.6").state == "admitted"  # another address
    later = utc_now() + recruit.SIGNUP_WINDOW + timedelta(seconds=1)
    assert recruit.admit(ws, params(secret, "P4"), "203.0.113.5", now=later).state == "admitted"


def test_visits_without_a_valid_link_or_id_are_limited_per_client_address_and_admitted_raters_still_get_in(ws):
    _, _, secret = recruiting_world(ws)
    member = recruit.admit(ws, params(secret, "member"), "198.51.100.1")
    for _ in range(recruit.BAD_VISITS_PER_WINDOW):
        assert recruit.visit(ws, params("y" * 43, "guess"), "198.51.100.1").state == "invalid"
    assert recruit.visit(ws, params(secret), "198.51.100.1").state == "too_many"
    assert recruit.visit(ws, params(secret, "newcomer"), "198.51.100.1").state == "too_many"
    assert recruit.admit(ws, params(secret, "newcomer"), "198.51.100.1").state == "too_many"
    assert recruit.visit(ws, params(secret, "member"), "198.51.100.1").token == member.token
    assert recruit.visit(ws, params(secret, "newcomer"), "198.51.100.2").state == "may_join"
    later = utc_now() + recruit.BAD_VISIT_WINDOW + timedelta(seconds=1)
    assert recruit.visit(ws, params(secret, "newcomer"), "198.51.100.1", now=later).state == "may_join"


def test_client_addresses_are_stored_only_as_keyed_hashes(ws):
    _, _, secret = recruiting_world(ws)
    recruit.admit(ws, params(secret, "P1"), "203.0.113.77")
    recruit.visit(ws, params(secret), "203.0.113.77")
    stored = " ".join(str(row) for row in ws.conn.execute("SELECT * FROM recruit_events"))
    assert stored and "203.0.113.77" not in stored


def test_a_revoked_recruited_rater_is_refused(ws):
    _, _, secret = recruiting_world(ws)
    admission = recruit.admit(ws, params(secret, "P1"), "10.0.0.1")
    revoke_rater(ws, admission.rater.id)
    assert recruit.visit(ws, params(secret, "P1"), "10.0.0.1").state == "revoked"
    assert rater_for_token(ws, admission.token) is None


def test_a_link_without_an_id_parameter_gives_each_visitor_an_id_and_a_token_of_their_own(ws):
    _, _, secret = recruiting_world(ws, id_param=None, quota=5)
    assert recruit.visit(ws, params(secret), "10.0.0.1").state == "may_join"
    first = recruit.admit(ws, params(secret), "10.0.0.1")
    second = recruit.admit(ws, params(secret), "10.0.0.2")
    assert first.state == second.state == "admitted" and first.rater != second.rater
    assert rater_for_token(ws, first.token) == first.rater


@pytest.mark.parametrize("settings, message", [
    ({"role": "artist"}, "asks no ratings from artist raters"),
    ({"id_param": "token"}, "--id-param"),
    ({"id_param": "join"}, "--id-param"),
    ({"id_param": "PID; DROP"}, "--id-param"),
    ({"completion_code": "has space"}, "--completion-code"),
    ({"completion_url": "javascript:alert(1)"}, "--completion-url"),
    ({"quota": 0}, "--quota"),
    ({"per_rater": -1}, "--per-rater"),
])
def test_link_settings_that_cannot_work_are_refused(ws, settings, message):
    world = make_world(ws, 2, 1, overlap={"artist": 0, "lay": 2})
    with pytest.raises(CpdmError, match=message):
        recruit.create_link(ws, world.campaign, **{"role": "lay", **settings})
    assert ws.conn.execute("SELECT COUNT(*) FROM recruit_links").fetchone()[0] == 0


def test_one_unclosed_link_per_campaign_and_role_and_no_closing_time_in_the_past(ws):
    world, link, _ = recruiting_world(ws)
    with pytest.raises(CpdmError, match="not closed"):
        recruit.create_link(ws, world.campaign, "lay")
    with pytest.raises(CpdmError, match="already past"):
        recruit.create_link(ws, world.campaign, "lay", closes_at=utc_now() - timedelta(minutes=1))
    recruit.close_link(ws, link.id)
    assert recruit.create_link(ws, world.campaign, "lay")[0].id != link.id


def test_closing_dates_read_as_the_end_of_the_day_in_utc():
    assert recruit.parse_closes("2026-12-31").isoformat() == "2026-12-31T23:59:59.999999+00:00"
    assert recruit.parse_closes("2026-12-31T18:00").isoformat() == "2026-12-31T18:00:00+00:00"
    assert recruit.parse_closes("2026-12-31T18:00+01:00").isoformat() == "2026-12-31T17:00:00+00:00"
    with pytest.raises(CpdmError, match="--closes"):
        recruit.parse_closes("next friday")


def test_only_the_secrets_hash_is_stored(ws):
    _, _, secret = recruiting_world(ws)
    recruit.admit(ws, params(secret, "P1"), "10.0.0.1")
    dump = "\n".join(ws.conn.iterdump())
    assert secret not in dump
    assert recruit.link_url(secret, "https://rate.example.org/") == f"https://rate.example.org/?join={secret}"


def test_client_address_prefers_the_proxys_forwarded_address_only_when_trusted():
    assert recruit.client_address(None) == "local"
    assert recruit.client_address("203.0.113.1", "1.1.1.1, 198.51.100.2") == "203.0.113.1"
    assert recruit.client_address("10.0.0.1", "1.1.1.1, 198.51.100.2", trust_forwarded=True) == "198.51.100.2"


def test_a_campaigns_progress_lists_only_its_own_recruited_raters(ws):
    from cpdm.rating.submit import campaign_status

    world, _, secret = recruiting_world(ws)
    other = make_world(ws, 2, 1, overlap={"lay": 1}, name="other")
    recruit.admit(ws, params(secret, "P1"), "10.0.0.1")
    names = {campaign: [row["name"] for row in campaign_status(ws, campaign)["per_rater"]]
             for campaign in (world.campaign, other.campaign)}
    assert names == {world.campaign: ["lay via link 1 #1"], other.campaign: []}
