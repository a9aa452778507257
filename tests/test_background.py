"""Who the raters are: the protocol's background questions, answered once per campaign, resumed, exported."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from cpdm.analysis.rater_export import rater_frame
from cpdm.errors import CpdmError
from cpdm.rating import recruit
from cpdm.rating.auth import create_rater, record_consent
from cpdm.rating.background import (
    background_due, next_step, questionnaire_steps, save_step, stored_answers,
)
from cpdm.rating.protocol import ProtocolError, default_protocol_path, parse_protocol
from cpdm.rating.questionnaire import check_answer
from tests.background_support import EVERY_TYPE, answer_questionnaire, every_type_protocol
from tests.panel_support import panel
from tests.rating_fixtures import ARTISTS, default_protocol_text, make_world
from tests.recruit_support import ID_PARAM, params, recruiting_world

APP = str(Path(__file__).resolve().parent.parent / "app.py")


def by_id(protocol_text: str) -> dict:
    return {question.id: question for question in parse_protocol(protocol_text).background}


def test_a_protocol_declares_a_question_of_each_type():
    questions = by_id(every_type_protocol())
    assert [q.type for q in questions.values()] == ["number", "single", "single", "multiple", "text"]
    assert questions["years"].levels == (2.0, 10.0) and questions["years"].integer
    assert questions["known"].per_artist and questions["known"].text_for("Ada") == "Do you know the work of Ada?"
    assert questions["note"].optional and questions["note"].max_length == 40


def test_the_shipped_default_protocol_asks_a_short_background():
    questions = by_id(default_protocol_path().read_text(encoding="utf-8"))
    assert {"art_years", "art_profession", "ai_tools", "familiarity"} <= set(questions)
    assert questions["familiarity"].per_artist
    assert {q.type for q in questions.values()} == {"number", "single", "multiple", "text"}


@pytest.mark.parametrize("change, field", [
    (('type = "multiple"', 'type = "checkbox"'), "background[3].type"),
    (('options = ["yes", "no"]', 'options = ["yes"]'), "background[1].options"),
    (('options = ["yes", "no"]', 'options = ["yes", "yes"]'), "background[1].options"),
    (('levels = [2, 10]', 'levels = [10, 2]'), "background[0].levels"),
    (('levels = [2, 10]', 'levels = [0, 2]'), "background[0].levels"),
    (('max = 60', 'max = -1'), "background[0]"),
    (('text = "Do you know the work of {artist}?"', 'text = "Do you know them?"'), "background[2].text"),
    (('id = "pro"', 'id = "years"'), "background[1].id"),
    (('id = "pro"', 'id = "Pro!"'), "background[1].id"),
    (('max_length = 40', 'max_length = 0'), "background[4].max_length"),
    (('optional = true', 'optional = "yes"'), "background[4].optional"),
])
def test_a_malformed_background_question_is_refused_naming_its_field(change, field):
    with pytest.raises(ProtocolError, match=re.escape(f"'{field}")):
        parse_protocol(every_type_protocol().replace(*change))


@pytest.mark.parametrize("question, value, stored", [
    ("years", 7, 7), ("years", 7.0, 7), ("pro", "no", "no"), ("media", ["photos", "paintings"], ["paintings", "photos"]),
    ("note", "  oils  ", "oils"), ("note", None, None),
])
def test_answers_are_checked_and_stored_as_given(question, value, stored):
    assert check_answer(by_id(every_type_protocol())[question], value) == stored


@pytest.mark.parametrize("question, value, message", [
    ("years", 61, "from 0 to 60"), ("years", 2.5, "whole number"), ("years", "7", "a number"),
    ("years", None, "please answer"), ("pro", "maybe", "choose one"), ("media", [], "at least one"),
    ("media", ["sculpture"], "at least one"), ("note", "x" * 41, "under 40"), ("note", "   ", "write an answer"),
])
def test_a_bad_answer_is_refused_with_a_plain_message(question, value, message):
    with pytest.raises(CpdmError, match=message):
        check_answer(by_id(every_type_protocol())[question], value)


def test_a_question_per_artist_is_one_step_over_the_campaigns_artists(ws):
    world = make_world(ws, 3, 1, protocol_text=every_type_protocol())
    steps = questionnaire_steps(ws.conn, world.campaign)
    assert [step.question.id for step in steps] == ["years", "pro", "known", "media", "note"]
    assert steps[2].subjects == tuple(sorted(ARTISTS)) and steps[0].subjects == ("",)


def test_a_rater_who_leaves_half_way_resumes_at_the_first_unanswered_question(ws):
    world = make_world(ws, 2, 1, overlap={"artist": 1, "lay": 1}, protocol_text=every_type_protocol())
    rater, _ = create_rater(ws, "Ada", "artist")
    record_consent(ws, rater.id)
    assert background_due(ws, rater) == world.campaign
    save_step(ws, rater.id, world.campaign, "years", {"": 12})
    save_step(ws, rater.id, world.campaign, "pro", {"": "yes"})
    with pytest.raises(CpdmError, match=f"{ARTISTS[1]}: please"):  # every artist needs an answer
        save_step(ws, rater.id, world.campaign, "known", {ARTISTS[0]: "well"})
    index, steps = next_step(ws.conn, rater.id, world.campaign)
    assert steps[index].question.id == "known"  # where they stopped, another day
    assert stored_answers(ws.conn, rater.id, world.campaign) == {("years", ""): 12, ("pro", ""): "yes"}
    answer_questionnaire(ws, rater.id, world.campaign)
    assert next_step(ws.conn, rater.id, world.campaign) is None and background_due(ws, rater) is None


def test_raters_of_a_campaign_without_a_questionnaire_or_role_are_not_asked(ws):
    make_world(ws, 2, 1, overlap={"artist": 1, "lay": 0}, protocol_text=every_type_protocol(), name="artists")
    make_world(ws, 2, 1, overlap={"artist": 1, "lay": 1}, name="plain")
    lay, _ = create_rater(ws, "Bo", "lay")
    researcher, _ = create_rater(ws, "Cy", "researcher")
    assert background_due(ws, lay) is None and background_due(ws, researcher) is None


def test_answers_reach_the_researcher_only_rater_export(ws):
    _, link, secret = recruiting_world(ws, n_anchors=2, gens_per_anchor=1, protocol_text=every_type_protocol())
    rater = recruit.admit(ws, params(secret, "PID-7"), "10.0.0.1").rater
    answer_questionnaire(ws, rater.id, link.campaign, {
        "years": {"": 12}, "media": {"": ["paintings", "photos"]}, "note": {"": None},
        "known": {ARTISTS[0]: "well", ARTISTS[1]: "no"}})
    identified = rater_frame(ws, link.campaign, identified=True).iloc[0]
    assert identified["platform_id"] == "PID-7" and identified["years"] == 12
    assert identified["media"] == "paintings; photos" and identified["note"] == "prefer not to answer"
    assert identified[f"known[{ARTISTS[0]}]"] == "well" and identified["pro"] == "yes"
    assert "years" not in rater_frame(ws, link.campaign).columns  # the pseudonymised export has none of it


# --- In the app ---------------------------------------------------------------------------------------------------


def open_link(secret: str, platform_id: str) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=30)
    at.query_params[recruit.JOIN_PARAM] = secret
    at.query_params[ID_PARAM] = platform_id
    return at.run()


def submit_step(at) -> AppTest:
    return next(button for button in at.button if button.label == "Next").click().run()


def test_the_app_asks_the_questionnaire_after_consent_one_question_a_screen_and_resumes_it(ws, monkeypatch):
    monkeypatch.setenv("CPDM_WORKSPACE", str(ws.root))
    _, link, secret = recruiting_world(ws, n_anchors=2, gens_per_anchor=1, protocol_text=every_type_protocol(),
                                       per_rater=2)
    at = open_link(secret, "PID-1")
    at.checkbox(key="join_agree").check().run()
    at.button(key="join_start").click().run()
    assert [t.value for t in at.title] == ["About you"] and "Question 1 of 5" in at.caption[0].value
    submit_step(at)  # nothing entered
    assert "please answer" in at.error[0].value
    at.number_input(key="background_years_0").set_value(3)
    submit_step(at)
    at.radio(key="background_pro_0").set_value("no")
    submit_step(at)
    assert "Question 3 of 5" in at.caption[0].value  # one question per artist, on one screen

    # The tab is closed here; another visit resumes at the third question with what was saved.
    again = open_link(secret, "PID-1")
    assert "Question 3 of 5" in again.caption[0].value
    rater_id = ws.conn.execute("SELECT rater FROM recruited_raters").fetchone()[0]
    assert stored_answers(ws.conn, rater_id, link.campaign) == {("years", ""): 3, ("pro", ""): "no"}
    for number, _artist in enumerate(ARTISTS[:2]):
        again.radio(key=f"background_known_{number}").set_value("a little")
    submit_step(again)
    again.checkbox(key="background_media_0_1").check()
    submit_step(again)
    again.checkbox(key="background_note_0_declined").check()
    submit_step(again)
    assert panel(again) is not None  # on to the pairs
    assert json.loads(ws.conn.execute("SELECT value FROM background_answers WHERE question = 'media'").fetchone()[0]) \
        == ["photos"]


def test_an_invited_artist_answers_the_default_questionnaire_after_consent(ws, monkeypatch):
    monkeypatch.setenv("CPDM_WORKSPACE", str(ws.root))
    world = make_world(ws, 2, 1, overlap={"artist": 1, "lay": 1}, protocol_text=default_protocol_text())
    rater, token = create_rater(ws, "Ada", "artist")
    at = AppTest.from_file(APP, default_timeout=30)
    at.query_params["token"] = token
    at.run()
    at.checkbox(key="consent_agree").check().run()
    next(b for b in at.button if b.label == "Start rating").click().run()
    assert [t.value for t in at.title] == ["About you"]
    answer_questionnaire(ws, rater.id, world.campaign)
    at.run()
    assert panel(at) is not None


def test_the_background_questions_stay_out_of_protocols_without_them():
    assert parse_protocol(default_protocol_text(background=False)).background == ()
    assert EVERY_TYPE.count("[[background]]") == 5
