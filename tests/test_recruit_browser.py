"""A crowd participant in headless chromium: recruitment link with a platform id → consent → questionnaire →
P pairs → completion code and redirect; the same id resumes on another device; no id, no entry."""

from __future__ import annotations

import http.server
import threading
from contextlib import contextmanager

import pytest

from cpdm.rating import recruit
from tests.background_support import every_type_protocol
from tests.browser_support import app_server, chromium_browser, shown_pair
from tests.rating_fixtures import ARTISTS
from tests.recruit_support import ID_PARAM, recruiting_world

pytestmark = [pytest.mark.browser, pytest.mark.slow]

PAIRS_EACH = 3
CODE = "C0DE-42"


@contextmanager
def platform_server():
    """A stand-in for the crowd platform's completion address: records the paths it is asked for."""
    visits: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (the standard library's name)
            visits.append(self.path)
            body = b"<html><body><h1>Submission complete</h1></body></html>"
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", visits
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def browser():
    with chromium_browser() as chromium:
        yield chromium


def new_page(browser):
    return browser.new_context(viewport={"width": 1366, "height": 900}).new_page()


def next_question(page, number: int) -> None:
    """Send this screen of the questionnaire and wait for question ``number``'s screen (0: the pairs)."""
    page.get_by_role("button", name="Next").click()
    if number:
        page.get_by_text(f"Question {number} of 5").wait_for(timeout=30_000)


def answer_pair(page, pair: int) -> None:
    """Answer the pair on screen with the keyboard, and wait until the panel no longer shows it."""
    for key in ("3", "4", "2", "Enter"):
        page.keyboard.press(key)
    page.wait_for_function(
        "pair => { const root = document.querySelector('[data-testid=stBidiComponentIsolated]')"
        "?.shadowRoot?.querySelector('.cpdm-panel'); return !root || root.dataset.pair !== String(pair); }",
        arg=pair, timeout=30_000)


def test_a_participant_follows_the_link_through_consent_questionnaire_pairs_and_completion(ws, browser):
    with platform_server() as (platform, visits):
        _, link, secret = recruiting_world(ws, n_anchors=3, gens_per_anchor=1, per_rater=PAIRS_EACH,
                                           protocol_text=every_type_protocol(), completion_code=CODE,
                                           completion_url=f"{platform}/complete?cc={CODE}")
        with app_server(ws.root) as app:
            study = f"{app.url}/?{recruit.JOIN_PARAM}={secret}"

            # Without the platform's id: a clear refusal, nobody admitted.
            refused = new_page(browser)
            refused.goto(study)
            refused.get_by_role("heading", name="Your participant id is missing").wait_for(timeout=30_000)
            assert ws.conn.execute("SELECT COUNT(*) FROM raters").fetchone()[0] == 0

            page = new_page(browser)
            page.goto(f"{study}&{ID_PARAM}=5f3c0a1b2c3d4e5f6a7b8c9d")
            page.get_by_role("heading", name="Welcome").wait_for(timeout=30_000)
            page.get_by_text("I have read the above and agree").click()
            page.get_by_role("button", name="Start").click()

            page.get_by_text("Question 1 of 5").wait_for(timeout=30_000)
            page.get_by_label("Years of art practice?").fill("7")
            page.keyboard.press("Tab")
            next_question(page, 2)
            page.get_by_role("radiogroup").get_by_text("no", exact=True).click()
            next_question(page, 3)
            for number in range(len(ARTISTS)):  # one question per artist of the campaign, on one screen
                page.get_by_role("radiogroup").nth(number).get_by_text("a little", exact=True).click()
            next_question(page, 4)
            page.get_by_text("photos", exact=True).click()
            next_question(page, 5)
            page.get_by_label("Anything else?").fill("I paint at weekends")
            page.keyboard.press("Tab")
            next_question(page, 0)

            first = shown_pair(page)
            answer_pair(page, first)
            second = shown_pair(page, not_pair=first)

            # Another device, later: the same id resumes at the pair left on screen.
            other = new_page(browser)
            other.goto(f"{study}&{ID_PARAM}=5f3c0a1b2c3d4e5f6a7b8c9d")
            assert shown_pair(other) == second
            page.context.close()
            pair = second
            for left in range(PAIRS_EACH - 2, -1, -1):
                answer_pair(other, pair)
                if left:
                    pair = shown_pair(other, not_pair=pair)

            other.get_by_role("heading", name="Thank you!").wait_for(timeout=30_000)
            other.get_by_text(CODE, exact=True).wait_for(timeout=10_000)  # the page draws the code after its title
            other.wait_for_url(f"{platform}/complete?cc={CODE}", timeout=30_000)  # the redirect, followed
            assert visits.count(f"/complete?cc={CODE}") == 1

            answers = dict(ws.conn.execute("SELECT question || subject, value FROM background_answers"))
            assert answers["years"] == "7" and answers["pro"] == '"no"' and answers["media"] == '["photos"]'
            assert answers["note"] == '"I paint at weekends"'
            assert recruit.get_link(ws, link.id).finished == 1
            rated = ws.conn.execute("SELECT COUNT(DISTINCT pair) FROM ratings").fetchone()[0]
            assert rated == PAIRS_EACH

            # Back through the link once more: the end page, nothing new to rate.
            again = new_page(browser)
            again.goto(f"{study}&{ID_PARAM}=5f3c0a1b2c3d4e5f6a7b8c9d")
            again.get_by_text(CODE, exact=True).wait_for(timeout=30_000)
