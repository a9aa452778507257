"""The Campaigns page (AppTest): create from an uploaded protocol, refuse bad uploads, change overlap, close."""

from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from cpdm.rating.auth import create_rater
from cpdm.rating.campaigns import get_campaign, list_campaigns
from tests.rating_fixtures import make_world

APP = str(Path(__file__).resolve().parent.parent / "app.py")

UPLOADED = """
name = "three-point"
instructions = "Look at both images."
consent = "I agree."
[[questions]]
id = "copy"
text = "A copy?"
scale = [1, 3]
low = "no"
high = "yes"
"""


@pytest.fixture
def page(ws, monkeypatch) -> AppTest:
    """The Campaigns page as a researcher sees it, over a workspace with pairs and one campaign ('study')."""
    monkeypatch.setenv("CPDM_WORKSPACE", str(ws.root))
    make_world(ws, 2, 2)
    _, token = create_rater(ws, "boss", "researcher")
    at = AppTest.from_file(APP, default_timeout=30)
    at.query_params["token"] = token
    at.run()
    assert [t.value for t in at.title] == ["Campaigns"] and not at.exception
    return at


def create(at: AppTest, name: str, upload: bytes | None = None) -> AppTest:
    at.text_input[0].input(name)
    if upload is not None:
        at.get("file_uploader")[0].upload("protocol.toml", upload, "application/toml")
    next(b for b in at.button if b.label == "Create campaign").click().run()
    assert not at.exception, at.exception
    return at


def campaign_named(ws, name: str) -> dict | None:
    return {c["name"]: c for c in list_campaigns(ws)}.get(name)


def errors(at: AppTest) -> list[str]:
    return [e.value for e in at.error]


def test_a_campaign_is_created_with_the_uploaded_protocol_frozen_in_it(ws, page):
    create(page, "three points", UPLOADED.encode("utf-8"))
    assert errors(page) == []
    created = campaign_named(ws, "three points")
    campaign = get_campaign(ws, created["id"])
    assert campaign.protocol_text == UPLOADED and campaign.protocol.question_ids == ["copy"]
    assert campaign.protocol.question("copy").scale == (1, 3)
    assert "three points" in set(page.dataframe[0].value["name"])  # the table lists it on the page drawn next


@pytest.mark.parametrize("upload, message", [
    ("name = ".encode("utf-8"), "protocol is not valid TOML"),
    (UPLOADED.replace("[[questions]]", "timimg = 3\n[[questions]]").encode("utf-8"),
     "protocol field 'timimg' is unknown"),
    ("name = 'Dürer'".encode("latin-1"), "The uploaded protocol is not UTF-8 text."),
], ids=["not TOML", "unknown field", "not UTF-8"])
def test_a_bad_uploaded_protocol_is_shown_as_an_error_and_nothing_is_created(ws, page, upload, message):
    create(page, "refused", upload)
    assert len(errors(page)) == 1 and message in errors(page)[0]
    assert campaign_named(ws, "refused") is None and len(list_campaigns(ws)) == 1


def test_the_overlap_of_a_campaign_is_changed_and_it_is_closed_and_opened_again(ws, page):
    study = campaign_named(ws, "study")
    next(s for s in page.selectbox if s.label == "Campaign").select("study").run()
    page.number_input(key=f"ov_artist_{study['id']}").set_value(4)
    page.number_input(key=f"ov_lay_{study['id']}").set_value(0)
    next(b for b in page.button if b.label == "Set overlap").click().run()
    assert not page.exception and errors(page) == []
    assert campaign_named(ws, "study")["overlap"] == {"artist": 4, "lay": 0}

    next(b for b in page.button if b.label == "Mark 'study' closed").click().run()
    assert campaign_named(ws, "study")["status"] == "closed"
    next(b for b in page.button if b.label == "Mark 'study' open").click().run()
    assert campaign_named(ws, "study")["status"] == "open"


def test_an_overlap_the_campaign_cannot_have_is_shown_as_an_error(ws, page):
    study = campaign_named(ws, "study")
    before = study["overlap"]
    page.number_input(key=f"ov_artist_{study['id']}").set_value(0)
    page.number_input(key=f"ov_lay_{study['id']}").set_value(0)
    next(b for b in page.button if b.label == "Set overlap").click().run()
    assert len(errors(page)) == 1 and "overlap asks no role for any rating" in errors(page)[0]
    assert campaign_named(ws, "study")["overlap"] == before


def test_a_2afc_protocol_makes_a_2afc_campaign_with_the_chosen_design(ws, page):
    page.text_input[0].input("duel")
    protocol = next(box for box in page.selectbox if box.label == "Protocol")
    protocol.select(next(option for option in protocol.options if option.endswith("2afc.toml")))
    next(box for box in page.selectbox if box.label.startswith("Triplets")).select("active")
    next(b for b in page.button if b.label == "Create campaign").click().run()
    assert not page.exception and errors(page) == []
    created = campaign_named(ws, "duel")
    assert (created["kind"], created["design"]) == ("2afc", "active") and created["triplets"] > 0
    assert get_campaign(ws, created["id"]).protocol.kind == "2afc"


def test_a_rating_protocol_ignores_the_triplet_design(ws, page):
    create(page, "plain")
    assert (campaign_named(ws, "plain")["kind"], campaign_named(ws, "plain")["design"]) == ("rating", "")
