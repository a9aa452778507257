"""A recruitment link in the app, through AppTest: consent, admission, pairs, the end page, refusals."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from cpdm.rating import recruit
from tests.panel_support import answers_event, panel, send_from_panel
from tests.rating_fixtures import ANSWERS
from tests.recruit_support import ID_PARAM, recruiting_world

APP = str(Path(__file__).resolve().parent.parent / "app.py")
COMPLETION_URL = "https://platform.example/submissions/complete?cc=C0DE-1"


@pytest.fixture
def study(ws, monkeypatch):
    monkeypatch.setenv("CPDM_WORKSPACE", str(ws.root))
    return recruiting_world(ws, quota=2, per_rater=3, completion_code="C0DE-1", completion_url=COMPLETION_URL)


def visit(secret: str, platform_id: str | None) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=30)
    at.query_params[recruit.JOIN_PARAM] = secret
    if platform_id is not None:
        at.query_params[ID_PARAM] = platform_id
    return at.run()


def titles(at) -> list[str]:
    return [title.value for title in at.title]


def join(at) -> AppTest:
    at.checkbox(key="join_agree").check().run()
    return at.button(key="join_start").click().run()


def component_data(at, key: str) -> dict | None:
    """The data the page gave the component with this key on the last run (None when it is not shown)."""
    found = [element for element in at.get("bidi_component") if element.key == key]
    return json.loads(found[0].proto.json) if found else None


def redirect_data(at) -> dict | None:
    return component_data(at, "cpdm_redirect")


def test_a_participant_consents_rates_their_pairs_and_gets_the_completion_code_and_redirect(ws, study):
    _, link, secret = study
    at = visit(secret, "5f3c0a1b2c")
    assert titles(at) == ["Welcome"]
    assert "original" in " ".join(m.value for m in at.markdown)  # the campaign protocol's instructions
    assert at.button(key="join_start").disabled
    assert ws.conn.execute("SELECT COUNT(*) FROM raters").fetchone()[0] == 0  # nobody until consent

    join(at)
    for done in range(3):
        data = panel(at)
        assert data["progress"] == {"done": done, "total": 3}
        send_from_panel(at, answers_event(data, ANSWERS))
        assert not at.exception
    assert titles(at) == ["Thank you!"]
    assert [code.value for code in at.code] == ["C0DE-1"]
    assert redirect_data(at) == {"url": COMPLETION_URL, "delay_ms": 5000}
    assert recruit.get_link(ws, link.id).finished == 1

    # Another device later: the same id shows the end page again; nothing more to rate.
    again = visit(secret, "5f3c0a1b2c")
    assert titles(again) == ["Thank you!"] and component_data(again, "cpdm_answer_panel") is None


def test_the_same_id_resumes_the_same_pair_in_a_new_session(ws, study):
    _, _, secret = study
    first = join(visit(secret, "P-resume"))
    shown = panel(first)
    resumed = visit(secret, "P-resume")
    assert titles(resumed) == []
    assert (panel(resumed)["pair"], panel(resumed)["nonce"]) == (shown["pair"], shown["nonce"])


@pytest.mark.parametrize("platform_id, title", [
    (None, "Your participant id is missing"),
    ("<b>", "Your participant id cannot be read"),
])
def test_a_visit_without_a_valid_id_is_refused_with_a_clear_page(ws, study, platform_id, title):
    _, _, secret = study
    at = visit(secret, platform_id)
    assert titles(at) == [title]
    assert not at.button and not at.checkbox and panel(at) is None


def test_after_the_quota_new_visitors_see_the_study_is_full_and_admitted_ones_go_on(ws, study):
    _, _, secret = study
    first = join(visit(secret, "P1"))
    join(visit(secret, "P2"))
    full = visit(secret, "P3")
    assert titles(full) == ["This study is full"] and not full.button
    assert panel(visit(secret, "P1"))["pair"] == panel(first)["pair"]


def test_an_unknown_link_is_not_valid(ws, study):
    at = visit("z" * 43, "P1")
    assert titles(at) == ["This link is not valid"]
