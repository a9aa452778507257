"""The rating page of a 2AFC campaign through AppTest (no browser): the panel it is given, and a submit saved."""

from __future__ import annotations

import json

import pytest
from streamlit.testing.v1 import AppTest

from cpdm.rating.auth import create_rater
from cpdm.rating.triplets import create_2afc_campaign
from tests.panel_support import panel, send_from_panel, send_with_first_run
from tests.rating_fixtures import add_pairs
from tests.test_app import APP, all_text, consent, open_app

ANSWERS = {"copy": "right", "content": "cant_tell", "style": "left"}


@pytest.fixture
def world(ws, monkeypatch):
    monkeypatch.setenv("CPDM_WORKSPACE", str(ws.root))
    _, pairs = add_pairs(ws, 2, 3)
    return create_2afc_campaign(ws, "compare", pairs, per_anchor=3, overlap={"artist": 1, "lay": 1},
                                include_checks=False)


def held(ws, rater) -> tuple[int, int, int]:
    """(triplet, left pair, right pair) the rater holds."""
    triplet, left, first, second = ws.conn.execute(
        "SELECT ta.triplet, ta.left_pair, t.first_pair, t.second_pair FROM triplet_assignments ta "
        "JOIN triplets t ON t.id = ta.triplet WHERE ta.rater = ? AND ta.status = 'assigned'", (rater.id,)
    ).fetchone()
    return triplet, left, second if left == first else first


def judgments(ws, rater) -> list[tuple]:
    return ws.conn.execute("SELECT triplet, question, answer, chosen_pair FROM judgments WHERE rater = ? ORDER BY id",
                           (rater.id,)).fetchall()


def event(data: dict, answers: dict) -> dict:
    return {"campaign": data["campaign"], "triplet": data["triplet"], "nonce": data["nonce"], "answers": answers}


def test_the_consent_page_names_the_2afc_keys(ws, world):
    _, token = create_rater(ws, "ann", "artist")
    text = all_text(open_app(token))
    assert "**1** or **←** for AI image 1" in text and "**0** if you can't tell" in text


def test_the_page_gives_the_panel_a_triplet_and_nothing_that_tells_the_sides_apart(ws, world):
    rater, token = create_rater(ws, "ann", "artist")
    at = consent(open_app(token))
    shown = panel(at)
    triplet, left, right = held(ws, rater)
    assert (shown["mode"], shown["campaign"], shown["triplet"]) == ("2afc", world, triplet)
    left_image, right_image = (ws.conn.execute("SELECT image FROM pairs WHERE id = ?", (p,)).fetchone()[0]
                               for p in (left, right))
    assert [image["key"] for image in shown["images"]] == ["original", "left", "right"]
    stored = {row[0]: row[1] for row in ws.conn.execute("SELECT sha256, path FROM images")}
    assert shown["images"][1]["bytes"] == (ws.root / stored[left_image]).read_bytes()
    assert shown["images"][2]["bytes"] == (ws.root / stored[right_image]).read_bytes()
    images = [{name: value for name, value in image.items() if name != "bytes"} for image in shown["images"]]
    text = (all_text(at) + json.dumps({**shown, "images": images})).lower()
    for secret in ("esd", "original, esd", "tiny-sd", "a painting", '"pair"', "left_pair"):
        assert secret not in text  # neither the method nor which pair is on which side


def test_a_submit_is_saved_with_the_sides_shown_and_the_next_set_drawn(ws, world):
    rater, token = create_rater(ws, "ann", "artist")
    at = consent(open_app(token))
    shown = panel(at)
    triplet, left, right = held(ws, rater)
    send_from_panel(at, event(shown, ANSWERS))
    assert not at.exception, at.exception
    assert judgments(ws, rater) == [(triplet, "copy", "right", right), (triplet, "content", "cant_tell", None),
                                    (triplet, "style", "left", left)]
    assert panel(at)["triplet"] != triplet and "Already saved" not in all_text(at)


def test_a_submit_that_reaches_a_new_session_first_is_saved(ws, world, monkeypatch):
    from cpdm.app.serve import APP_ENV, entry_script

    rater, token = create_rater(ws, "ann", "artist")
    shown_at = consent(open_app(token))
    shown = panel(shown_at)
    # The server restarted: the browser joins a session that drew nothing, run as `cpdm serve` runs it.
    monkeypatch.setenv(APP_ENV, APP)
    served = AppTest.from_file(str(entry_script()), default_timeout=30)
    served.query_params["token"] = token
    fresh = send_with_first_run(served, shown_at, event(shown, ANSWERS))
    assert not fresh.exception, fresh.exception
    assert [row[2] for row in judgments(ws, rater)] == ["right", "cant_tell", "left"]
    assert panel(fresh)["triplet"] != shown["triplet"] and panel(fresh)["notice"] is None


def test_the_progress_page_counts_a_2afc_campaigns_judgments(ws, world):
    _, boss = create_rater(ws, "boss", "researcher")
    at = open_app(boss)
    at.switch_page("pages/progress.py").run()
    assert not at.exception
    per_role = at.dataframe[0].value.set_index("role")
    assert per_role.loc["artist", "needed"] == 6  # 2 anchors x 3 triplets x overlap 1
    assert [bar.text for bar in at.get("progress")] == ["artist: 0 of 6 judgments", "lay: 0 of 6 judgments"]
