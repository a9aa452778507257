"""The very first visitor after `cpdm serve` starts, on a deep link, goes through app.py's sign-in and routing.

Streamlit serves its automatic page list, running page files without the
app's sign-in, while its main script has a `pages/` folder beside it and no
one has opened `/` yet; each case here is the first visitor of a fresh server.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from cpdm.app import serve
from cpdm.testing import free_port
from cpdm.rating.auth import record_consent, rater_for_token
from cpdm.rating.background import background_due
from cpdm.demo.build import build_demo, demo_links
from cpdm.store.workspace import open_workspace
from tests.background_support import answer_questionnaire
from tests.browser_support import chromium_page

pytestmark = [pytest.mark.browser, pytest.mark.slow]

RESEARCHER_MENU = ["Campaigns", "Raters", "Progress", "Analysis", "Calibration", "Jobs"]


@pytest.fixture(scope="module")
def demo_ws(tmp_path_factory) -> Path:
    """A demo workspace whose first artist has consented and answered the questionnaire (so /rate is their page)
    and whose second has not consented."""
    path = tmp_path_factory.mktemp("first-visit") / "ws"
    build_demo(path, seed=0, analysis_data=False)
    with open_workspace(path) as ws:
        artist = rater_for_token(ws, _token("Demo artist 1"))
        record_consent(ws, artist.id)
        while (campaign := background_due(ws, artist)) is not None:
            answer_questionnaire(ws, artist.id, campaign)
    return path


def _token(name: str) -> str:
    return next(link.token for link in demo_links(0) if link.name == name)


@contextmanager
def cpdm_serve(workspace: Path, log: Path):
    """`cpdm serve` in a child process on a free port; yields the base URL once the app answers, stops it after."""
    port = free_port()
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env.pop("CPDM_WORKSPACE", None)
    command = [sys.executable, "-c", "from cpdm.cli import main; main()", "serve", "--port", str(port),
               "--workspace", str(workspace)]
    with open(log, "wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while "app running at" not in log.read_text() and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.25)
        assert serve.health(base) == "ok", log.read_text()
        yield base
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


@pytest.fixture
def browser_page():
    with chromium_page() as page:
        yield page


def _wait_for_idle_app(page) -> None:
    """Wait until the app's script run has finished (Streamlit's running indicator is gone)."""
    page.wait_for_selector("[data-testid='stApp']")
    page.wait_for_function(
        "() => !document.querySelector(\"[data-testid='stStatusWidget']\")"
        " && document.querySelector(\"[data-testid='stMain']\")?.innerText.trim().length > 0",
        timeout=30_000,
    )
    page.wait_for_timeout(500)


def _sidebar_links(page) -> list[str]:
    """The labels of the sidebar menu's links (the last line: the first may be an icon's name)."""
    return [text.strip().splitlines()[-1] for text in page.locator("[data-testid='stSidebarNav'] a").all_inner_texts()]


def _assert_shown_without_page_not_found(page, path: str) -> None:
    """The app is idle on ``path`` (the address bar names the page shown) and Streamlit's notice never came up."""
    _wait_for_idle_app(page)
    assert page.get_by_text("Page not found").count() == 0
    assert page.locator("[role='dialog']:visible").count() == 0  # no modal over the page
    assert urlsplit(page.url).path == path
    assert parse_qs(urlsplit(page.url).query)["token"]  # a refresh still signs in


@pytest.mark.parametrize("path, shown_at, menu_entry, heading", [
    ("/raters", "/raters", "Raters", "Invite a rater"),
    ("/campaigns", "/campaigns", "Campaigns", "Create a campaign"),  # the researchers' home page
    ("/", "/campaigns", "Campaigns", "Create a campaign"),
    ("/rate", "/campaigns", "Campaigns", "Create a campaign"),  # a rater's page: the researcher's home instead
])
def test_researcher_deep_link_as_first_visitor_gets_that_page(demo_ws, tmp_path, browser_page, path, shown_at,
                                                               menu_entry, heading):
    with cpdm_serve(demo_ws, tmp_path / "log") as base:
        browser_page.goto(f"{base}{path}?token={_token('Demo researcher')}")
        browser_page.get_by_role("heading", name=heading).wait_for(timeout=30_000)
        _assert_shown_without_page_not_found(browser_page, shown_at)
        assert browser_page.get_by_text("This page is for researchers").count() == 0
        assert _sidebar_links(browser_page) == RESEARCHER_MENU  # the app's menu, not a list of page files
        current = browser_page.locator("[data-testid='stSidebarNav'] a[aria-current='page']")
        assert current.inner_text().strip().splitlines()[-1] == menu_entry


def _pair_images(page):
    return page.locator("[data-testid='stMain'] img").nth(1)  # the pair's two images


def _welcome(name: str):
    return lambda page: page.get_by_role("heading", name=f"Welcome, {name}")


@pytest.mark.parametrize("name, path, shown_at, their_page", [
    ("Demo artist 1", "/rate", "/rate", _pair_images),
    ("Demo artist 1", "/", "/rate", _pair_images),
    ("Demo artist 1", "/welcome", "/rate", _pair_images),  # consented already: straight to rating
    ("Demo artist 2", "/rate", "/welcome", _welcome("Demo artist 2")),  # not consented yet
    ("Demo artist 2", "/welcome", "/welcome", _welcome("Demo artist 2")),
    ("Demo artist 2", "/campaigns", "/welcome", _welcome("Demo artist 2")),  # a researcher's page
])
def test_rater_deep_link_as_first_visitor_gets_their_page(demo_ws, tmp_path, browser_page, name, path, shown_at,
                                                         their_page):
    with cpdm_serve(demo_ws, tmp_path / "log") as base:
        browser_page.goto(f"{base}{path}?token={_token(name)}")
        their_page(browser_page).wait_for(timeout=30_000)
        _assert_shown_without_page_not_found(browser_page, shown_at)
        assert browser_page.get_by_text("This link is not valid").count() == 0
        assert browser_page.locator("[data-testid='stSidebarNav']").count() == 0
