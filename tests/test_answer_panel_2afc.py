"""The rating panel's Python side for a 2AFC campaign: what it is given for a triplet, and how what it sends
becomes one judgment."""

from __future__ import annotations

import pytest

from cpdm.app.answer_panel import (
    CHOICES,
    PanelImage,
    handle_event,
    item_images,
    nonce_for,
    panel_data,
    panel_message,
    parse_event,
    read_panel_message,
)
from cpdm.app.answer_panel.model import ALREADY_JUDGED, Notice
from cpdm.errors import CpdmError
from cpdm.rating.assignment import next_item, protocol_for
from cpdm.rating.auth import create_rater
from cpdm.rating.submit import rater_overall_progress
from cpdm.rating.triplets import create_2afc_campaign
from tests.conftest import png_bytes
from tests.rating_fixtures import add_pairs

ANSWERS = {"copy": "left", "content": "cant_tell", "style": "right"}


@pytest.fixture
def rater(ws):
    _, pairs = add_pairs(ws, 2, 3)
    create_2afc_campaign(ws, "compare", pairs, per_anchor=3, overlap={"artist": 2, "lay": 1}, include_checks=False)
    return create_rater(ws, "ann", "artist")[0]


def event_for(item, rater, **payload) -> dict:
    return {"campaign": item.campaign, "triplet": item.triplet, "nonce": nonce_for(item, rater), **payload}


def saved(ws, rater) -> dict[int, dict]:
    """The rater's stored judgments, triplet by triplet: question -> (answer, chosen pair) or the skip reason."""
    by_triplet: dict[int, dict] = {}
    for triplet, question, answer, chosen, reason in ws.conn.execute(
        "SELECT triplet, question, answer, chosen_pair, skip_reason FROM judgments WHERE rater = ? ORDER BY id",
        (rater.id,),
    ):
        by_triplet.setdefault(triplet, {})[question] = (answer, chosen) if reason is None else reason
    return by_triplet


def test_an_event_saves_exactly_the_choices_it_carries_with_the_sides_shown(ws, rater):
    item = next_item(ws, rater)
    assert item.triplet is not None
    assert handle_event(ws, rater, event_for(item, rater, answers=ANSWERS)) is None
    assert saved(ws, rater) == {item.triplet: {"copy": ("left", item.left_pair), "content": ("cant_tell", None),
                                               "style": ("right", item.right_pair)}}
    assert next_item(ws, rater).triplet != item.triplet


def test_a_resent_or_late_event_changes_nothing(ws, rater):
    first = next_item(ws, rater)
    event = event_for(first, rater, answers=ANSWERS)
    handle_event(ws, rater, event)
    second = next_item(ws, rater)
    late = event_for(first, rater, answers={"copy": "right", "content": "right", "style": "right"})
    assert handle_event(ws, rater, event) == handle_event(ws, rater, late) == Notice("info", ALREADY_JUDGED)
    assert list(saved(ws, rater)) == [first.triplet]
    assert next_item(ws, rater) == second


def test_a_skip_is_saved_with_its_reason_and_no_answer(ws, rater):
    item = next_item(ws, rater)
    assert handle_event(ws, rater, event_for(item, rater, skip_reason="image 2 is blank")) is None
    assert saved(ws, rater) == {item.triplet: dict.fromkeys(ANSWERS, "image 2 is blank")}
    assert ws.conn.execute("SELECT DISTINCT answer, chosen_pair FROM judgments").fetchall() == [(None, None)]


@pytest.mark.parametrize("answers, message", [
    ({"copy": "left", "content": "left"}, "question 'style' has no answer"),
    ({**ANSWERS, "colour": "left"}, "unknown question(s) colour"),
])
def test_incomplete_answers_are_refused_with_nothing_saved(ws, rater, answers, message):
    item = next_item(ws, rater)
    notice = handle_event(ws, rater, event_for(item, rater, answers=answers))
    assert notice.kind == "error" and message in notice.text
    assert saved(ws, rater) == {} and next_item(ws, rater) == item


@pytest.mark.parametrize("value, message", [
    ({"campaign": 1, "nonce": "x" * 32, "answers": ANSWERS}, "either a pair or a triplet"),
    ({"campaign": 1, "pair": 1, "triplet": 1, "nonce": "x" * 32, "answers": ANSWERS}, "either a pair or a triplet"),
    ({"campaign": 1, "triplet": "1", "nonce": "x" * 32, "answers": ANSWERS}, "triplet '1'"),
    ({"campaign": 1, "triplet": 1, "nonce": "x" * 32, "answers": {**ANSWERS, "copy": 1}},
     "answer 'copy' = 1, not one of left, cant_tell, right"),
    ({"campaign": 1, "triplet": 1, "nonce": "x" * 32, "answers": {**ANSWERS, "style": "both"}},
     "answer 'style' = 'both'"),
    ({"campaign": 1, "triplet": 1, "nonce": "x" * 32, "answers": {**ANSWERS, "style": None}}, "answer 'style' = None"),
    ({"campaign": 1, "pair": 1, "nonce": "x" * 32, "answers": {"copy": "left"}}, "not a whole number"),
])
def test_malformed_events_are_refused_by_name(value, message):
    with pytest.raises(CpdmError, match=message.replace("(", r"\(")):
        parse_event(value)


def test_a_triplet_event_is_read_as_one():
    event = parse_event({"campaign": 3, "triplet": 9, "nonce": "n" * 32, "answers": ANSWERS})
    assert (event.kind, event.item, event.triplet, event.pair, event.answers) == ("triplet", 9, 9, None, ANSWERS)


def test_the_nonce_belongs_to_one_assignment_and_never_equals_a_pairs(ws, rater):
    other = create_rater(ws, "bob", "artist")[0]
    item = next_item(ws, rater)
    assert nonce_for(item, rater) == nonce_for(next_item(ws, rater), rater)
    assert nonce_for(item, rater) != nonce_for(item, other)
    handle_event(ws, rater, event_for(item, rater, answers=ANSWERS))
    assert nonce_for(next_item(ws, rater), rater) != nonce_for(item, rater)


def test_panel_data_for_a_triplet_shows_the_original_then_the_left_and_right_images(ws, rater):
    item = next_item(ws, rater)
    protocol = protocol_for(ws, item.campaign)
    assert item_images(item) == {"original": item.anchor_image, "left": item.left_image, "right": item.right_image}
    left_image = ws.conn.execute("SELECT image FROM pairs WHERE id = ?", (item.left_pair,)).fetchone()[0]
    assert item.left_image == left_image  # the image on the left is the left pair's generation
    images = {"original": PanelImage(b"\x89PNG original", "image/png"), "left": PanelImage(b"\xff\xd8", "image/jpeg"),
              "right": PanelImage(b"RIFFxxxxWEBP", "image/webp")}
    data = panel_data(item, protocol, rater_overall_progress(ws, rater), images, nonce_for(item, rater))
    assert data["mode"] == "2afc" and data["triplet"] == item.triplet and "pair" not in data
    assert [(i["key"], i["label"], i["shortcut"], i["mime"], i["length"]) for i in data["images"]] == [
        ("original", "Original", "o", "image/png", 13), ("left", "AI image 1", "l", "image/jpeg", 2),
        ("right", "AI image 2", "r", "image/webp", 12)]
    assert [q["id"] for q in data["questions"]] == ["copy", "content", "style"]
    assert data["questions"][0]["text"] == "Which AI image is more of a copy of the original?"
    assert [c["value"] for c in data["questions"][0]["choices"]] == ["left", "cant_tell", "right"] == [
        value for value, _ in CHOICES]


@pytest.mark.parametrize("missing", [None, "original", "left", "right"])
def test_the_panel_message_carries_each_of_the_three_images_bytes_exactly(ws, rater, missing):
    item = next_item(ws, rater)
    images = {"original": PanelImage(png_bytes(seed=1), "image/png"),
              "left": PanelImage(png_bytes(seed=2, fmt="JPEG"), "image/jpeg"),
              "right": PanelImage(png_bytes(seed=3), "image/png")}
    if missing:
        images[missing] = None
    data = panel_data(item, protocol_for(ws, item.campaign), rater_overall_progress(ws, rater), images,
                      nonce_for(item, rater))
    read = read_panel_message(panel_message(data, images))
    assert [slot.pop("bytes") for slot in read["images"]] == [
        None if images[key] is None else images[key].data for key in ("original", "left", "right")]
    assert read == data
