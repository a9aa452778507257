"""Rater names show as typed, never as Markdown: no links, no bold, no Streamlit colour or icon syntax."""

from __future__ import annotations

import html
import re
from pathlib import Path

import pytest
from markdown_it import MarkdownIt
from streamlit.testing.v1 import AppTest

from cpdm.rating.auth import create_rater
from cpdm.app.ui import WORD_JOINER, plain
from tests.rating_fixtures import make_world

APP = str(Path(__file__).resolve().parent.parent / "app.py")
NAME = "[x](http://evil.example) **b** :red[r] :material/home: $x^2$ <b>hi</b> _u_ ~s~ www.evil.example me@evil.example"
# What Streamlit's frontend turns into links after parsing (from its Markdown renderer, in Python syntax).
STREAMLIT_AUTOLINKS = [re.compile(r"(https?://|www(?=\.))[-.\w]+", re.I | re.A), re.compile(r"[-.\w+]+@[-\w]+(\.[-\w]+)+", re.A)]


def shown(markdown: str) -> tuple[str, str]:
    """(HTML, visible text) of Markdown as a CommonMark renderer draws it."""
    rendered = MarkdownIt("commonmark").render(markdown)
    return rendered, html.unescape(re.sub(r"<[^>]+>", "", rendered)).strip().replace(WORD_JOINER, "")


def assert_plain(markdown: str, expected_text: str) -> None:
    rendered, text = shown(markdown)
    assert text == expected_text
    assert not re.search(r"<(a|strong|em|b|del|code)\b", rendered), rendered
    for pattern in STREAMLIT_AUTOLINKS:
        assert not pattern.search(html.unescape(rendered)), pattern


@pytest.mark.parametrize("name", [NAME, "Ada", "Ada\nLovelace", "C:\\art\\new", "x@y.co"])
def test_plain_text_renders_as_typed(name):
    assert_plain(plain(name), " ".join(name.split()))


def test_welcome_title_shows_the_name_as_plain_text(ws, monkeypatch):
    monkeypatch.setenv("CPDM_WORKSPACE", str(ws.root))
    make_world(ws, 2, 2)
    _, token = create_rater(ws, NAME, "artist")
    at = AppTest.from_file(APP, default_timeout=30)
    at.query_params["token"] = token
    at.run()
    assert not at.exception
    (title,) = at.title
    assert_plain(title.value, f"Welcome, {NAME}")


def test_invite_message_shows_the_name_as_plain_text(ws, monkeypatch):
    monkeypatch.setenv("CPDM_WORKSPACE", str(ws.root))
    _, token = create_rater(ws, "Res", "researcher")
    at = AppTest.from_file(APP, default_timeout=30)
    at.query_params["token"] = token
    at.run()
    at.switch_page(str(Path(APP).parent / "pages" / "raters.py")).run()
    at.text_input[0].input(NAME)
    next(b for b in at.button if b.label == "Create invite link").click().run()
    assert not at.exception
    (success,) = at.success
    assert_plain(success.value, f"Invite link for {NAME} (artist). Copy it now: it is shown only once.")
