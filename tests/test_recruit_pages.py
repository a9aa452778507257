"""Recruitment links on the researchers' Campaigns page (AppTest)."""

from __future__ import annotations

import re

from cpdm.rating import recruit
from tests.rating_fixtures import make_world
from tests.recruit_support import params
from tests.test_analysis_pages import open_page


def test_the_campaigns_page_creates_shows_and_closes_a_recruitment_link(ws):
    make_world(ws, 3, 2, overlap={"artist": 1, "lay": 2}, name="pilot")
    at = open_page(ws, "campaigns.py")
    assert "Recruitment links" in [header.value for header in at.header]
    at.number_input(key="recruit_quota").set_value(20)
    at.number_input(key="recruit_per_rater").set_value(4)
    at.text_input(key="recruit_code").input("C0DE-9")
    at.text_input(key="recruit_base_url").input("https://rate.example.org")
    next(button for button in at.button if button.label == "Create recruitment link").click().run()
    assert not at.exception, at.exception
    assert "shown only once" in at.success[0].value
    url = at.code[0].value
    secret = re.fullmatch(r"https://rate\.example\.org/\?join=(\S+)", url).group(1)
    assert recruit.visit(ws, params(secret, "P1"), "10.0.0.1").state == "may_join"
    assert any("exceeds" in warning.value for warning in at.warning)  # 20 x 4 > the 12 lay ratings needed

    at.run()
    table = at.dataframe[-1].value
    assert table[["state", "admitted", "pairs_each", "completion"]].values.tolist() == [["open", "0/20", 4, "code C0DE-9"]]
    labels = [element.proto.label for element in at.get("download_button")]
    assert labels == ["Raters (CSV, pseudonymised)", "Raters with platform ids (CSV)", "Approvals (CSV)"]
    at.button(key="recruit_close_1").click().run()
    assert recruit.visit(ws, params(secret, "P1"), "10.0.0.1").state == "closed"
    assert not [button for button in at.button if button.key == "recruit_close_1"]


def test_the_campaigns_page_says_why_a_link_cannot_be_made(ws):
    make_world(ws, 2, 1, overlap={"artist": 1, "lay": 0}, name="artists only")
    at = open_page(ws, "campaigns.py")
    next(button for button in at.button if button.label == "Create recruitment link").click().run()
    assert "asks no ratings from lay raters" in at.error[0].value
