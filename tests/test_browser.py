"""End to end in headless chromium: open a rater link, rate with the keyboard, reload, continue.

The app runs as a real Streamlit server on a free loopback port over a
temporary workspace. A screenshot of the rating page is saved to
test-artifacts/rating_page.png.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from cpdm.rating.auth import create_rater
from tests.rating_fixtures import make_world

pytestmark = [pytest.mark.browser, pytest.mark.slow]

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def server(ws):
    """A Streamlit server for the app on the test workspace; yields its base URL."""
    port = free_port()
    env = {**os.environ, "CPDM_WORKSPACE": str(ws.root), "STREAMLIT_BROWSER_GATHER_USAGE_STATS": "false"}
    process = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", str(ROOT / "app.py"), "--server.port", str(port),
         "--server.address", "127.0.0.1", "--server.headless", "true", "--server.fileWatcherType", "none",
         "--client.toolbarMode", "viewer"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if urllib.request.urlopen(f"{base}/_stcore/health", timeout=1).status == 200:
                    break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"streamlit did not start: {process.stdout.read().decode()[-2000:]}")
                time.sleep(0.3)
        yield base
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()


@pytest.fixture
def page():
    if not CHROMIUM.exists():
        pytest.skip("chromium is not installed (run `make browser-deps`)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        context = browser.new_context(viewport={"width": 1366, "height": 900})
        yield context.new_page()
        browser.close()


def rating_rows(ws, rater) -> list[tuple]:
    return ws.conn.execute(
        "SELECT pair, question, value FROM ratings WHERE rater = ? ORDER BY id", (rater.id,)
    ).fetchall()


def held_pair(ws, rater):
    row = ws.conn.execute("SELECT pair FROM assignments WHERE rater = ? AND status = 'assigned'", (rater.id,)).fetchone()
    return None if row is None else row[0]


def wait_for(condition, timeout=20.0, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def rate_with_keyboard(page, ws, rater, digits: str) -> int:
    """Answer the pair on screen by pressing one digit per question, then Enter; return the pair."""
    pair = held_pair(ws, rater)
    count = len(rating_rows(ws, rater))
    page.get_by_role("button", name="Submit (answer 3 more)").wait_for()
    for done, digit in enumerate(digits, start=1):
        page.keyboard.press(digit)
        # The accessible name also holds the shortcut hint ("Enter"), so match the label's start.
        label = r"^Submit(?! \()" if done == len(digits) else rf"^Submit \(answer {len(digits) - done} more\)"
        page.get_by_role("button", name=re.compile(label)).wait_for()
    page.keyboard.press("Enter")
    wait_for(lambda: len(rating_rows(ws, rater)) == count + 3, what="the ratings to be saved")
    wait_for(lambda: held_pair(ws, rater) not in (None, pair), what="the next pair")
    return pair


def test_rater_link_keyboard_rating_reload_and_continue(ws, server, page):
    make_world(ws, 3, 2, overlap={"artist": 2, "lay": 2}, image_size=384)
    rater, token = create_rater(ws, "Ada", "artist")

    page.goto(f"{server}/?token=not-a-valid-token-at-all")
    page.get_by_text("This link is not valid").wait_for()

    page.goto(f"{server}/?token={token}")
    page.get_by_text("I have read the above and agree").click()
    page.get_by_role("button", name="Start rating").click()
    page.get_by_role("heading", name="AI image").wait_for()

    answers = ["421", "355", "114"]
    rated = [rate_with_keyboard(page, ws, rater, digits) for digits in answers]
    page.get_by_text("3 of 6 pairs done").wait_for()

    page.reload()
    page.get_by_text("3 of 6 pairs done").wait_for()
    shown_before_reload = held_pair(ws, rater)
    page.wait_for_timeout(500)
    assert held_pair(ws, rater) == shown_before_reload  # the reload resumed the same pair
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "rating_page.png"), full_page=True)

    rated.append(rate_with_keyboard(page, ws, rater, "532"))
    answers.append("532")

    rows = rating_rows(ws, rater)
    by_pair: dict[int, dict] = {}
    for pair, question, value in rows:
        by_pair.setdefault(pair, {})[question] = value
    assert list(by_pair) == rated and len(rows) == 12
    for pair, digits in zip(rated, answers):
        assert by_pair[pair] == {"content": int(digits[0]), "style": int(digits[1]), "copy": int(digits[2])}
    seconds = [s for (s,) in ws.conn.execute("SELECT seconds FROM ratings WHERE rater = ?", (rater.id,))]
    assert all(s is not None and s > 0 for s in seconds)
