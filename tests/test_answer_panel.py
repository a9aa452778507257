"""The rating panel's Python side: what it is given, and how what it sends becomes one submit."""

from __future__ import annotations

import hashlib

import pytest

from cpdm.app.answer_panel import (
    PanelImage,
    handle_event,
    nonce_for,
    panel_data,
    panel_message,
    parse_event,
    read_panel_message,
)
from cpdm.app.answer_panel.model import ALREADY_SAVED, Notice, stored_image
from cpdm.rating.assignment import next_item, protocol_for
from cpdm.rating.auth import create_rater
from cpdm.errors import CpdmError
from cpdm.store.images import store_image_bytes
from cpdm.rating.submit import MAX_SKIP_REASON, rater_overall_progress
from tests.conftest import png_bytes
from tests.rating_fixtures import make_world

ANSWERS = {"content": 4, "style": 2, "copy": 5}


@pytest.fixture
def rater(ws):
    make_world(ws, 2, 2, overlap={"artist": 2, "lay": 1})
    return create_rater(ws, "ann", "artist")[0]


def event_for(item, rater, **payload) -> dict:
    return {"campaign": item.campaign, "pair": item.pair, "nonce": nonce_for(item, rater), **payload}


def saved(ws, rater) -> dict[int, dict]:
    """The rater's stored values, pair by pair."""
    by_pair: dict[int, dict] = {}
    for pair, question, value, reason in ws.conn.execute(
        "SELECT pair, question, value, skip_reason FROM ratings WHERE rater = ? ORDER BY id", (rater.id,)
    ):
        by_pair.setdefault(pair, {})[question] = value if reason is None else reason
    return by_pair


def test_an_event_saves_exactly_the_answers_it_carries(ws, rater):
    item = next_item(ws, rater)
    assert handle_event(ws, rater, event_for(item, rater, answers=ANSWERS)) is None
    assert saved(ws, rater) == {item.pair: ANSWERS}
    assert next_item(ws, rater).pair != item.pair


def test_a_resent_or_stale_event_changes_nothing(ws, rater):
    first = next_item(ws, rater)
    event = event_for(first, rater, answers=ANSWERS)
    handle_event(ws, rater, event)
    second = next_item(ws, rater)
    # The same event again (a retry), and a late one for the first pair with other values, while the
    # second pair is on screen: both are recognised as already saved, and the second pair gets nothing.
    assert handle_event(ws, rater, event) == handle_event(
        ws, rater, event_for(first, rater, answers={"content": 1, "style": 1, "copy": 1})
    ) == Notice("info", ALREADY_SAVED)
    assert saved(ws, rater) == {first.pair: ANSWERS}
    assert next_item(ws, rater) == second


def test_an_event_for_a_pair_not_assigned_to_the_rater_is_refused(ws, rater):
    item = next_item(ws, rater)
    other_pair = next(p for (p,) in ws.conn.execute("SELECT id FROM pairs") if p != item.pair)
    notice = handle_event(ws, rater, {**event_for(item, rater, answers=ANSWERS), "pair": other_pair})
    assert notice.kind == "error" and "not assigned" in notice.text
    assert saved(ws, rater) == {}


@pytest.mark.parametrize("answers, message", [
    ({"content": 4, "style": 2}, "question 'copy' has no answer"),
    ({"content": 4, "style": 2, "copy": 6}, "must be a whole number from 1 to 5"),
    ({"content": 4, "style": 2, "copy": 5, "colour": 3}, "unknown question(s) colour"),
    ({"content": 4, "style": 2, "copy": "5"}, "not a whole number"),
    ({"content": 4, "style": 2, "copy": True}, "not a whole number"),
])
def test_incomplete_or_off_scale_answers_are_refused_with_nothing_saved(ws, rater, answers, message):
    item = next_item(ws, rater)
    notice = handle_event(ws, rater, event_for(item, rater, answers=answers))
    assert notice.kind == "error" and message in notice.text
    assert saved(ws, rater) == {}
    assert next_item(ws, rater) == item


@pytest.mark.parametrize("value, message", [
    (None, "no answers"),
    ("4,2,5", "no answers"),
    ({"pair": 1, "nonce": "x" * 32, "answers": ANSWERS}, "campaign None"),
    ({"campaign": 1, "pair": "1", "nonce": "x" * 32, "answers": ANSWERS}, "pair '1'"),
    ({"campaign": 1, "pair": 1, "answers": ANSWERS}, "no nonce"),
    ({"campaign": 1, "pair": 1, "nonce": "x" * 32}, "either answers or a skip reason"),
    ({"campaign": 1, "pair": 1, "nonce": "x" * 32, "answers": ANSWERS, "skip_reason": "blank"},
     "either answers or a skip reason"),
    ({"campaign": 1, "pair": 1, "nonce": "x" * 32, "answers": [4, 2, 5]}, "one value per question"),
])
def test_malformed_events_are_refused_by_name(value, message):
    with pytest.raises(CpdmError, match=message.replace("(", r"\(")):
        parse_event(value)


def test_a_skip_reason_of_the_full_length_is_kept_whole(ws, rater):
    item = next_item(ws, rater)
    reason = "r" * MAX_SKIP_REASON
    assert handle_event(ws, rater, event_for(item, rater, skip_reason=reason)) is None
    assert set(saved(ws, rater)[item.pair].values()) == {reason}


def test_a_too_long_skip_reason_is_refused_with_its_length_and_nothing_is_lost(ws, rater):
    item = next_item(ws, rater)
    reason = "the image is blank. " * 30  # 600 characters
    notice = handle_event(ws, rater, event_for(item, rater, skip_reason=reason))
    assert notice.kind == "error"
    assert f"The reason is {len(reason)} characters; the limit is {MAX_SKIP_REASON}" in notice.text
    assert saved(ws, rater) == {} and next_item(ws, rater) == item  # not skipped, not cut short


def test_the_nonce_belongs_to_one_assignment(ws, rater):
    other = create_rater(ws, "bob", "artist")[0]
    item = next_item(ws, rater)
    assert nonce_for(item, rater) == nonce_for(next_item(ws, rater), rater)  # same pair shown again
    assert nonce_for(item, rater) != nonce_for(item, other)
    handle_event(ws, rater, event_for(item, rater, answers=ANSWERS))
    assert nonce_for(next_item(ws, rater), rater) != nonce_for(item, rater)


def test_panel_data_lists_each_question_with_each_value_once(ws, rater):
    item = next_item(ws, rater)
    protocol = protocol_for(ws, item.campaign)
    images = {"original": PanelImage(b"\x89PNG original", "image/png"), "generated": PanelImage(b"\xff\xd8", "image/jpeg")}
    data = panel_data(item, protocol, rater_overall_progress(ws, rater), images, nonce_for(item, rater))
    assert [(q["id"], q["values"]) for q in data["questions"]] == [(q.id, [1, 2, 3, 4, 5]) for q in protocol.questions]
    assert [(i["key"], i["shortcut"], i["mime"], i["length"]) for i in data["images"]] == [
        ("original", "o", "image/png", 13), ("generated", "g", "image/jpeg", 2)]
    assert data["progress"] == {"done": 0, "total": 4} and data["notice"] is None
    assert data["max_skip_reason"] == MAX_SKIP_REASON


@pytest.mark.parametrize("missing", [None, "original", "generated"])
def test_the_panel_message_carries_the_data_and_each_images_bytes_exactly(ws, rater, missing):
    item = next_item(ws, rater)
    images = {"original": PanelImage(png_bytes(seed=1), "image/png"),
              "generated": PanelImage(png_bytes(seed=2, fmt="JPEG"), "image/jpeg")}
    if missing:
        images[missing] = None
    data = panel_data(item, protocol_for(ws, item.campaign), rater_overall_progress(ws, rater), images,
                      nonce_for(item, rater), notice=Notice("error", "ünïcode ✓"))
    message = panel_message(data, images)
    read = read_panel_message(message)
    assert [slot.pop("bytes") for slot in read["images"]] == [
        None if images[key] is None else images[key].data for key in ("original", "generated")]
    assert read == data
    with pytest.raises(CpdmError, match="past its images"):
        read_panel_message(message + b"x")


@pytest.mark.parametrize("fmt, mime", [("PNG", "image/png"), ("JPEG", "image/jpeg"), ("WEBP", "image/webp")])
def test_stored_images_are_served_byte_for_byte_in_their_own_format(ws, fmt, mime):
    data = png_bytes(seed=3, size=(40, 30), fmt=fmt)
    info = store_image_bytes(ws, data)
    served, served_mime = stored_image(ws, info.sha256)
    assert hashlib.sha256(served).hexdigest() == info.sha256 and served == data
    assert served_mime == mime


def test_an_unknown_image_is_a_clear_error(ws):
    with pytest.raises(CpdmError, match="not in the workspace"):
        stored_image(ws, "0" * 64)


def test_an_image_file_gone_from_disk_is_a_clear_error(ws):
    info = store_image_bytes(ws, png_bytes(seed=4))
    ws.image_path(info.sha256).unlink()
    with pytest.raises(CpdmError, match=f"image {info.sha256[:12]} cannot be read"):
        stored_image(ws, info.sha256)
