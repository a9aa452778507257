"""End to end in headless chromium: what a rater types is what is stored, the page fits, images are the stored bytes.

The app runs as a real Streamlit server on a free loopback port over a
temporary workspace (see ``tests/browser_support.py``). Screenshots of the
rating page are saved under test-artifacts/.
"""

from __future__ import annotations

import hashlib
import random
import re
import subprocess
import time
from contextlib import contextmanager

import pytest

from cpdm.rating.auth import create_rater
from tests.browser_support import (
    PANEL_READY, ROOT, STARTUP_TIMEOUT_S, app_server, image_source_bytes, launch_chromium, rater_world, require_chromium,
    shown_pair,
)
from tests.rating_fixtures import make_world

pytestmark = [pytest.mark.browser, pytest.mark.slow]

ARTIFACTS = ROOT / "test-artifacts"
QUESTIONS = ("content", "style", "copy")
# How long the panel waits for the server to confirm a send (RESEND_AFTER_MS in panel.js).
RESEND_AFTER_MS = int(re.search(r"RESEND_AFTER_MS = (\d+)",
                                (ROOT / "cpdm" / "app" / "answer_panel" / "panel.js").read_text(encoding="utf-8")).group(1))
# Streamlit shows its connection status while the page has no connection to the server.
STREAMLIT_CONNECTION_STATUS = '[data-testid="stStatusWidget"]'


@pytest.fixture
def server(ws):
    with app_server(ws.root) as running:
        yield running.url


class RestartableApp:
    """The app on a port of its own, which it can be stopped and started on again (a server restart)."""

    def __init__(self, workspace_root):
        from cpdm.testing import free_port

        self.root, self.port = workspace_root, free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = None

    def start(self) -> None:
        from cpdm.app.serve import start_app, wait_until_ready

        self.server = start_app(self.root, host="127.0.0.1", port=self.port, stdout=subprocess.DEVNULL)
        wait_until_ready(self.server, timeout=STARTUP_TIMEOUT_S)

    def stop(self) -> None:
        from cpdm.app.serve import stop_app

        if self.server is not None:
            stop_app(self.server)
            self.server = None

    def restart(self, page) -> None:
        """Stop the server, start it again, and wait until ``page`` has reconnected to it."""
        status = page.locator(STREAMLIT_CONNECTION_STATUS)
        self.stop()
        status.wait_for(state="visible")  # the page noticed
        self.start()
        status.wait_for(state="detached", timeout=STARTUP_TIMEOUT_S * 1000)  # connected again


@contextmanager
def restartable_app(workspace_root):
    app = RestartableApp(workspace_root)
    app.start()
    try:
        yield app
    finally:
        app.stop()


@pytest.fixture
def browser():
    require_chromium()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = launch_chromium(p)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser):
    return browser.new_context(viewport={"width": 1366, "height": 900}).new_page()


def stored(ws, rater) -> dict[int, dict]:
    """The rater's stored values, pair by pair, in the order they were saved."""
    by_pair: dict[int, dict] = {}
    for pair, question, value in ws.conn.execute(
        "SELECT pair, question, value FROM ratings WHERE rater = ? ORDER BY id", (rater.id,)
    ):
        by_pair.setdefault(pair, {})[question] = value
    return by_pair


def held_pair(ws, rater):
    row = ws.conn.execute("SELECT pair FROM assignments WHERE rater = ? AND status = 'assigned'", (rater.id,)).fetchone()
    return None if row is None else row[0]


def type_keys(page, keys: list[str], gap_s: float) -> None:
    """Press each key in turn with ``gap_s`` seconds between presses."""
    for index, key in enumerate(keys):
        if index:
            time.sleep(gap_s)
        page.keyboard.press(key)


def highlighted(page) -> str | None:
    """The id of the question the panel highlights (None when none is)."""
    row = page.locator(".cpdm-panel .question.current")
    return row.get_attribute("data-question") if row.count() else None


def chosen(page) -> dict[str, int]:
    """The answers the panel shows as chosen."""
    answers = {}
    for question in QUESTIONS:
        selected = page.locator(f'.cpdm-panel .question[data-question="{question}"] button.selected')
        if selected.count():
            answers[question] = int(selected.get_attribute("data-value"))
    return answers


def status(page) -> str:
    return page.locator(".cpdm-panel .status").inner_text()


def test_typed_answers_are_stored_exactly_at_any_typing_speed(ws, server, page):
    rater, token = rater_world(ws, n_anchors=21)  # 42 pairs
    page.goto(f"{server}/?token={token}")
    pair = shown_pair(page)
    rng = random.Random(7)
    typed: dict[int, dict] = {}
    for gap_ms in (30, 80, 250, 1000):  # 10 pairs each, keys and Enter at that gap
        for _ in range(10):
            digits = [str(rng.randint(1, 5)) for _ in QUESTIONS]
            type_keys(page, digits + ["Enter"], gap_ms / 1000)
            typed[pair] = {q: int(d) for q, d in zip(QUESTIONS, digits)}
            pair = shown_pair(page, not_pair=pair)
    assert stored(ws, rater) == typed  # every pair, every value, in the order typed


def test_keys_apply_only_to_the_highlighted_question_and_refusals_are_visible(ws, server, page):
    rater, token = rater_world(ws, n_anchors=2)
    page.goto(f"{server}/?token={token}")
    pair = shown_pair(page)
    assert highlighted(page) == "content"
    # The highlighted row shows each digit of its scale once, on its buttons.
    scale = page.locator('.cpdm-panel .question.current .scale').inner_text()
    assert re.findall(r"\d", scale) == ["1", "2", "3", "4", "5"]

    page.keyboard.press("9")  # not on the 1-5 scale
    assert "9 is not on this scale (1 to 5)" in status(page)
    assert chosen(page) == {} and highlighted(page) == "content"

    page.keyboard.down("3")
    page.keyboard.down("3")  # held down: the browser repeats the key, the rater chose once
    page.keyboard.up("3")
    assert chosen(page) == {"content": 3} and highlighted(page) == "style"  # moved before the next key
    page.keyboard.press("Enter")  # two questions unanswered
    assert "Answer question 2 first" in status(page) and highlighted(page) == "style"

    # Clicking a question makes it the highlighted one, so an answer can be changed.
    page.locator('.cpdm-panel .question[data-question="content"] .text').click()
    assert highlighted(page) == "content"
    page.keyboard.press("5")
    assert chosen(page) == {"content": 5} and highlighted(page) == "style"
    page.locator('.cpdm-panel .question[data-question="copy"] button[data-value="2"]').click()
    assert chosen(page) == {"content": 5, "copy": 2} and highlighted(page) == "style"
    page.keyboard.press("1")
    assert chosen(page) == {"content": 5, "style": 1, "copy": 2} and highlighted(page) is None

    page.keyboard.press("4")  # nothing highlighted: refused, nothing changes
    assert "Every question is answered" in status(page)
    assert chosen(page) == {"content": 5, "style": 1, "copy": 2}
    page.keyboard.press("ArrowUp")  # the keyboard picks a question too: from none, up is the last
    assert highlighted(page) == "copy"
    page.keyboard.press("4")
    assert chosen(page) == {"content": 5, "style": 1, "copy": 4} and highlighted(page) is None
    assert stored(ws, rater) == {}

    page.keyboard.press("Enter")  # at once after the last answer
    shown_pair(page, not_pair=pair)
    assert stored(ws, rater) == {pair: {"content": 5, "style": 1, "copy": 4}}


def test_enter_right_after_the_last_digit_submits(ws, server, page):
    rater, token = rater_world(ws, n_anchors=2)
    page.goto(f"{server}/?token={token}")
    pair = shown_pair(page)
    page.evaluate("""() => {  // four keys in one task: no time at all between the last digit and Enter
      for (const key of ["2", "4", "1", "Enter"]) document.dispatchEvent(new KeyboardEvent("keydown", {key, bubbles: true}));
    }""")
    shown_pair(page, not_pair=pair)
    assert stored(ws, rater) == {pair: {"content": 2, "style": 4, "copy": 1}}


def test_a_rater_slower_than_the_resend_timer_sends_only_the_pair_shown(ws, server, page):
    rater, token = rater_world(ws, n_anchors=3)
    page.goto(f"{server}/?token={token}")
    first = shown_pair(page)
    page.keyboard.type("421")
    page.keyboard.press("Enter")
    second = shown_pair(page, not_pair=first)
    page.wait_for_timeout(RESEND_AFTER_MS + 1000)  # longer on the second pair than a send waits for its answer
    assert page.locator(PANEL_READY).get_attribute("data-pair") == str(second)
    page.keyboard.type("355")
    page.keyboard.press("Enter")
    shown_pair(page, not_pair=second)
    assert stored(ws, rater) == {first: dict(zip(QUESTIONS, (4, 2, 1))), second: dict(zip(QUESTIONS, (3, 5, 5)))}
    assert "Already saved" not in status(page)  # the first pair's panel did not send its answers again
    assert ws.conn.execute("SELECT COUNT(*) FROM ratings").fetchone()[0] == 6


def test_after_a_reconnect_to_a_restarted_server_the_first_enter_submits(ws, browser):
    rater, token = rater_world(ws, n_anchors=3)
    with restartable_app(ws.root) as app:
        page = browser.new_context(viewport={"width": 1366, "height": 900}).new_page()
        page.goto(f"{app.url}/?token={token}")
        pair = shown_pair(page)
        page.keyboard.type("421")
        app.restart(page)  # the browser keeps the page, and its answers, and joins a new session
        page.keyboard.press("Enter")
        shown_pair(page, not_pair=pair, timeout_ms=10_000)  # at once, not after the panel gives up waiting
        assert stored(ws, rater) == {pair: dict(zip(QUESTIONS, (4, 2, 1)))}


def test_the_images_shown_are_the_stored_files_byte_for_byte(ws, server, page):
    rater, token = rater_world(ws, n_anchors=2, image_size=320)
    page.goto(f"{server}/?token={token}")
    pair = shown_pair(page)
    anchor_sha, shown_sha = ws.conn.execute(
        "SELECT an.image, p.image FROM pairs p JOIN anchors an ON an.id = p.anchor WHERE p.id = ?", (pair,)
    ).fetchone()
    for key, sha in (("original", anchor_sha), ("generated", shown_sha)):
        # The bytes travel inside the page, a blob: URL there (tests/test_access_browser.py: no address serves them).
        source = page.locator(f'.cpdm-panel img[data-image="{key}"]').get_attribute("src")
        assert source.startswith("blob:")
        mime, body = image_source_bytes(page, source)
        assert mime == "image/png"
        assert hashlib.sha256(body).hexdigest() == sha
        assert body == ws.image_path(sha).read_bytes()


@pytest.mark.parametrize("width, height", [(1280, 720), (1366, 768)])
def test_both_images_all_questions_and_submit_fit_the_screen(ws, server, browser, width, height):
    # A portrait anchor beside a wide generation: the shapes that make a layout overflow one way or the other.
    rater, token = rater_world(ws, n_anchors=2, image_size=(700, 1400), generation_size=(1536, 768))
    page = browser.new_context(viewport={"width": width, "height": height}).new_page()
    page.goto(f"{server}/?token={token}")
    shown_pair(page)
    page.wait_for_function("""() => {
      const root = document.querySelector('[data-testid=stBidiComponentIsolated]').shadowRoot;
      return [...root.querySelectorAll('.images img')].every(img => img.complete && img.naturalWidth > 0);
    }""")
    page.wait_for_timeout(300)  # let the panel settle its image size after the last layout change
    boxes = {"original": page.locator('.cpdm-panel img[data-image="original"]').bounding_box(),
             "generated": page.locator('.cpdm-panel img[data-image="generated"]').bounding_box(),
             "submit": page.locator(".cpdm-panel button.submit").bounding_box()}
    for question in QUESTIONS:
        boxes[question] = page.locator(f'.cpdm-panel .question[data-question="{question}"]').bounding_box()
    for name, box in boxes.items():
        assert box["x"] >= 0 and box["y"] >= 0, name
        assert box["x"] + box["width"] <= width and box["y"] + box["height"] <= height, (name, box)
    # The images take what the rest leaves: the panel ends near the bottom of the window.
    assert boxes["submit"]["y"] + boxes["submit"]["height"] > height - 40
    frames = page.locator(".cpdm-panel .image .frame")
    assert min(frames.nth(i).bounding_box()["height"] for i in range(2)) > 0.4 * height
    for key in ("original", "generated"):  # each image fills its frame's height or its width
        frame = page.locator(f'.cpdm-panel .frame:has(img[data-image="{key}"])').bounding_box()
        assert (boxes[key]["height"] >= frame["height"] - 2 or boxes[key]["width"] >= frame["width"] - 2), key
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"rating_page_{width}x{height}.png"))

    # A larger view of either image is one click or one key away; Escape closes it.
    overlay = page.locator(".cpdm-panel .overlay")
    page.locator('.cpdm-panel img[data-image="original"]').click()
    assert overlay.is_visible() and overlay.get_attribute("data-image") == "original"
    big = page.locator(".cpdm-panel .overlay-image").bounding_box()
    assert big["height"] > boxes["original"]["height"]
    page.keyboard.press("Escape")
    assert not overlay.is_visible()
    page.keyboard.press("g")
    assert overlay.is_visible() and overlay.get_attribute("data-image") == "generated"
    page.keyboard.press("3")  # no answer while the large view hides the questions
    assert chosen(page) == {}
    page.keyboard.press("Escape")
    assert not overlay.is_visible()


def test_a_too_long_skip_reason_is_kept_and_refused_until_shortened(ws, server, page):
    rater, token = rater_world(ws, n_anchors=2)
    page.goto(f"{server}/?token={token}")
    pair = shown_pair(page)
    page.get_by_role("button", name="Skip: cannot judge").click()
    reason = "The generated image did not load for me. " * 15  # 615 characters, as if pasted
    box = page.get_by_role("textbox", name="Why can you not judge this pair?")
    box.fill(reason)
    assert "615 / 500 characters: 115 too many" in page.locator(".cpdm-panel .skip-counter").inner_text()
    page.get_by_role("button", name="Skip this pair").click()
    assert "shorten it to 500" in status(page)
    assert box.input_value() == reason and stored(ws, rater) == {}
    box.fill(reason[:500])
    page.get_by_role("button", name="Skip this pair").click()
    shown_pair(page, not_pair=pair)
    assert ws.conn.execute("SELECT DISTINCT skip_reason FROM ratings WHERE rater = ?", (rater.id,)).fetchall() == [
        (reason[:500],)]


def test_rater_link_consent_rating_reload_and_continue(ws, server, page):
    make_world(ws, 3, 2, overlap={"artist": 2, "lay": 2}, image_size=384)
    rater, token = create_rater(ws, "Ada", "artist")

    page.goto(f"{server}/?token=not-a-valid-token-at-all")
    page.get_by_text("This link is not valid").wait_for()

    page.goto(f"{server}/?token={token}")
    page.get_by_text("I have read the above and agree").click()
    page.get_by_role("button", name="Start rating").click()
    pair = shown_pair(page)
    typed = {}
    for digits in ("421", "355", "114"):
        page.keyboard.type(digits)
        page.keyboard.press("Enter")
        typed[pair] = dict(zip(QUESTIONS, map(int, digits)))
        pair = shown_pair(page, not_pair=pair)
    page.get_by_text("3 of 6 pairs done").wait_for()

    page.reload()
    assert shown_pair(page) == pair == held_pair(ws, rater)  # the reload resumed the same pair
    page.get_by_text("3 of 6 pairs done").wait_for()
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "rating_page.png"))

    page.keyboard.type("532")
    page.keyboard.press("Enter")
    typed[pair] = {"content": 5, "style": 3, "copy": 2}
    shown_pair(page, not_pair=pair)
    assert stored(ws, rater) == typed
    seconds = [s for (s,) in ws.conn.execute("SELECT seconds FROM ratings WHERE rater = ?", (rater.id,))]
    assert all(s is not None and s > 0 for s in seconds)
