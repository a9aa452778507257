"""A 2AFC campaign end to end in headless chromium: the original and AI images 1 and 2, keys or taps, one judgment.

What a rater presses is what is stored, at any speed; the sides are drawn per
assignment and the stored sides are the ones shown; "can't tell" is stored as
``cant_tell`` with no chosen pair; the page fits a laptop screen and a phone.
Screenshots go to test-artifacts/.
"""

from __future__ import annotations

import random
import time

import pytest

from tests.browser_support import (
    ROOT, app_server, launch_chromium, require_chromium, shown_image_hashes, shown_triplet, triplet_world,
)
from tests.test_browser import RESEND_AFTER_MS, restartable_app

pytestmark = [pytest.mark.browser, pytest.mark.slow]

ARTIFACTS = ROOT / "test-artifacts"
QUESTIONS = ("copy", "content", "style")  # the shipped 2afc protocol's, in order
# Each key the panel takes, and the answer it stands for.
KEY_ANSWERS = {"1": "left", "ArrowLeft": "left", "2": "right", "ArrowRight": "right", "0": "cant_tell"}
MIN_TAP_PX = 44
# A portrait anchor beside wide generations: the two shapes that crowd a screen most.
PORTRAIT, WIDE = (700, 1400), (1536, 768)


@pytest.fixture
def browser():
    require_chromium()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = launch_chromium(p)
        yield chromium
        chromium.close()


@pytest.fixture
def server(ws):
    with app_server(ws.root) as running:
        yield running.url


@pytest.fixture
def page(browser):
    return browser.new_context(viewport={"width": 1366, "height": 900}).new_page()


def judgments(ws, rater) -> dict[int, dict]:
    """The rater's stored judgments, triplet by triplet: question -> (answer, chosen pair, left pair, right pair)."""
    by_triplet: dict[int, dict] = {}
    for triplet, question, answer, chosen, left, right in ws.conn.execute(
        "SELECT triplet, question, answer, chosen_pair, left_pair, right_pair FROM judgments WHERE rater = ? "
        "ORDER BY id", (rater.id,)
    ):
        by_triplet.setdefault(triplet, {})[question] = (answer, chosen, left, right)
    return by_triplet


def sides_shown(ws, rater, triplet: int) -> tuple[int, int]:
    """(left pair, right pair) of the rater's assignment of ``triplet``, as drawn when it was assigned."""
    left, first, second = ws.conn.execute(
        "SELECT ta.left_pair, t.first_pair, t.second_pair FROM triplet_assignments ta "
        "JOIN triplets t ON t.id = ta.triplet WHERE ta.triplet = ? AND ta.rater = ?", (triplet, rater.id)
    ).fetchone()
    return left, second if left == first else first


def pair_image(ws, pair: int) -> str:
    return ws.conn.execute("SELECT image FROM pairs WHERE id = ?", (pair,)).fetchone()[0]


def anchor_image(ws, triplet: int) -> str:
    return ws.conn.execute("SELECT an.image FROM triplets t JOIN anchors an ON an.id = t.anchor WHERE t.id = ?",
                           (triplet,)).fetchone()[0]


def type_keys(page, keys: list[str], gap_s: float) -> None:
    for index, key in enumerate(keys):
        if index:
            time.sleep(gap_s)
        page.keyboard.press(key)


def highlighted(page) -> str | None:
    row = page.locator(".cpdm-panel .question.current")
    return row.get_attribute("data-question") if row.count() else None


def chosen(page) -> dict[str, str]:
    answers = {}
    for question in QUESTIONS:
        selected = page.locator(f'.cpdm-panel .question[data-question="{question}"] button.selected')
        if selected.count():
            answers[question] = selected.get_attribute("data-value")
    return answers


def status(page) -> str:
    return page.locator(".cpdm-panel .status").inner_text()


def expected(ws, rater, triplet: int, answers: dict[str, str]) -> dict[str, tuple]:
    """What the judgments table must hold for ``answers`` to ``triplet``: the chosen side's pair (None: can't tell)."""
    left, right = sides_shown(ws, rater, triplet)
    chosen_pair = {"left": left, "right": right, "cant_tell": None}
    return {q: (a, chosen_pair[a], left, right) for q, a in answers.items()}


def test_keys_at_30_ms_are_recorded_exactly_with_the_sides_shown(ws, server, page):
    rater, token, _ = triplet_world(ws, n_anchors=4, image_size=160)  # 12 triplets
    page.goto(f"{server}/?token={token}")
    triplet = shown_triplet(page)
    rng = random.Random(24)
    typed, lefts_first = {}, set()
    for number in range(12):
        # The first set is "can't tell" throughout; the rest are random keys, arrows and digits alike.
        keys = ["0"] * 3 if number == 0 else [rng.choice(list(KEY_ANSWERS)) for _ in QUESTIONS]
        shown = shown_image_hashes(page)
        left, right = sides_shown(ws, rater, triplet)
        # The images shown are the stored ones, on the sides the assignment recorded.
        assert shown == {"original": anchor_image(ws, triplet), "left": pair_image(ws, left),
                         "right": pair_image(ws, right)}
        first = ws.conn.execute("SELECT first_pair FROM triplets WHERE id = ?", (triplet,)).fetchone()[0]
        lefts_first.add(left == first)
        type_keys(page, keys + ["Enter"], 0.03)
        typed[triplet] = expected(ws, rater, triplet, {q: KEY_ANSWERS[k] for q, k in zip(QUESTIONS, keys)})
        if number < 11:
            triplet = shown_triplet(page, not_triplet=triplet)
    page.get_by_text("Thank you!").wait_for(timeout=30_000)
    assert judgments(ws, rater) == typed  # every triplet, every answer, with the sides shown
    assert lefts_first == {True, False}  # sides are drawn per assignment: both orders were shown and recorded
    cant_tell = ws.conn.execute("SELECT answer, chosen_pair FROM judgments WHERE rater = ? AND triplet = ?",
                                (rater.id, next(iter(typed)))).fetchall()
    assert cant_tell == [("cant_tell", None)] * 3  # its own answer, never a side


def test_keys_and_clicks_answer_the_highlighted_question_and_refusals_are_visible(ws, server, page):
    rater, token, _ = triplet_world(ws, n_anchors=2)
    page.goto(f"{server}/?token={token}")
    triplet = shown_triplet(page)
    assert highlighted(page) == "copy"
    assert "0 can't tell" in status(page)  # the keys are named on the page
    buttons = page.locator('.cpdm-panel .question[data-question="copy"] button.value')
    assert [buttons.nth(i).get_attribute("data-value") for i in range(3)] == ["left", "cant_tell", "right"]

    page.keyboard.press("5")  # not an answer here
    assert "Press 1 or ← for AI image 1" in status(page)
    assert chosen(page) == {} and highlighted(page) == "copy"
    page.keyboard.down("ArrowRight")
    page.keyboard.down("ArrowRight")  # held down: the browser repeats the key, the rater chose once
    page.keyboard.up("ArrowRight")
    assert chosen(page) == {"copy": "right"} and highlighted(page) == "content"
    page.keyboard.press("Enter")  # two questions unanswered
    assert "Answer question 2 first" in status(page)

    page.locator('.cpdm-panel .question[data-question="copy"] .text').click()  # change an answer
    assert highlighted(page) == "copy"
    page.keyboard.press("1")
    assert chosen(page) == {"copy": "left"} and highlighted(page) == "content"
    page.locator('.cpdm-panel .question[data-question="style"] button[data-value="cant_tell"]').click()
    page.keyboard.press("2")
    assert chosen(page) == {"copy": "left", "content": "right", "style": "cant_tell"} and highlighted(page) is None
    page.keyboard.press("0")  # nothing highlighted: refused, nothing changes
    assert "Every question is answered" in status(page)
    page.keyboard.press("ArrowUp")  # from none, up picks the last question
    assert highlighted(page) == "style"
    page.keyboard.press("ArrowLeft")
    answers = {"copy": "left", "content": "right", "style": "left"}
    assert chosen(page) == answers and judgments(ws, rater) == {}

    page.keyboard.press("Enter")
    shown_triplet(page, not_triplet=triplet)
    assert judgments(ws, rater) == {triplet: expected(ws, rater, triplet, answers)}


def test_enter_right_after_the_last_key_submits(ws, server, page):
    rater, token, _ = triplet_world(ws, n_anchors=2)
    page.goto(f"{server}/?token={token}")
    triplet = shown_triplet(page)
    page.evaluate("""() => {  // four keys in one task: no time at all between the last answer and Enter
      for (const key of ["ArrowLeft", "0", "2", "Enter"]) {
        document.dispatchEvent(new KeyboardEvent("keydown", {key, bubbles: true}));
      }
    }""")
    shown_triplet(page, not_triplet=triplet)
    assert judgments(ws, rater) == {
        triplet: expected(ws, rater, triplet, {"copy": "left", "content": "cant_tell", "style": "right"})}


def test_after_a_reconnect_to_a_restarted_server_the_first_enter_submits(ws, browser):
    rater, token, _ = triplet_world(ws, n_anchors=2)
    with restartable_app(ws.root) as app:
        page = browser.new_context(viewport={"width": 1366, "height": 900}).new_page()
        page.goto(f"{app.url}/?token={token}")
        triplet = shown_triplet(page)
        page.keyboard.type("201")
        app.restart(page)  # the browser keeps the page, and its answers, and joins a new session
        page.keyboard.press("Enter")
        # At once, not after the panel gives up waiting for the server.
        shown_triplet(page, not_triplet=triplet, timeout_ms=RESEND_AFTER_MS)
        assert judgments(ws, rater) == {
            triplet: expected(ws, rater, triplet, {"copy": "right", "content": "cant_tell", "style": "left"})}


def wait_for_images(page, count: int = 3) -> None:
    page.wait_for_function("""(count) => {
      const host = document.querySelector('[data-testid=stBidiComponentIsolated]');
      const imgs = host ? [...host.shadowRoot.querySelectorAll('.images img')] : [];
      return imgs.length === count && imgs.every(img => img.complete && img.naturalWidth > 0);
    }""", arg=count)
    page.wait_for_timeout(300)  # let the panel settle its image size after the last layout change


def inside(box, width, height) -> bool:
    return box["x"] >= 0 and box["y"] >= 0 and box["x"] + box["width"] <= width and box["y"] + box["height"] <= height


@pytest.mark.parametrize("width, height", [(1280, 720), (1366, 768)])
def test_the_original_both_ai_images_the_questions_and_submit_fit_a_laptop_screen(ws, server, browser, width, height):
    rater, token, _ = triplet_world(ws, n_anchors=2, image_size=PORTRAIT, generation_size=WIDE)
    page = browser.new_context(viewport={"width": width, "height": height}).new_page()
    page.goto(f"{server}/?token={token}")
    shown_triplet(page)
    wait_for_images(page)
    boxes = {key: page.locator(f'.cpdm-panel img[data-image="{key}"]').bounding_box()
             for key in ("original", "left", "right")}
    boxes["submit"] = page.locator(".cpdm-panel button.submit").bounding_box()
    for question in QUESTIONS:
        boxes[question] = page.locator(f'.cpdm-panel .question[data-question="{question}"]').bounding_box()
    for name, box in boxes.items():
        assert inside(box, width, height), (name, box)
    # The original, then AI image 1 (left), then AI image 2 (right), in one row.
    assert boxes["original"]["x"] < boxes["left"]["x"] < boxes["right"]["x"]
    labels = page.locator(".cpdm-panel .image figcaption .label").all_inner_texts()
    assert labels == ["Original", "AI image 1", "AI image 2"]
    # The images take what the rest leaves: the panel ends near the bottom of the window.
    assert boxes["submit"]["y"] + boxes["submit"]["height"] > height - 40
    frames = page.locator(".cpdm-panel .image .frame")
    assert min(frames.nth(i).bounding_box()["height"] for i in range(3)) > 0.4 * height
    assert page.evaluate("document.scrollingElement.scrollWidth <= window.innerWidth")
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"2afc_page_{width}x{height}.png"))
    page.keyboard.press("1")
    page.keyboard.press("0")
    page.screenshot(path=str(ARTIFACTS / f"2afc_page_{width}x{height}_answering.png"))

    # A larger view of each image is one click or one key away; Escape closes it, and no key answers meanwhile.
    overlay = page.locator(".cpdm-panel .overlay")
    page.keyboard.press("r")
    assert overlay.is_visible() and overlay.get_attribute("data-image") == "right"
    assert page.locator(".cpdm-panel .overlay-image").bounding_box()["width"] > boxes["right"]["width"]
    page.keyboard.press("2")
    assert chosen(page) == {"copy": "left", "content": "cant_tell"}
    page.keyboard.press("Escape")
    page.locator('.cpdm-panel img[data-image="left"]').click()
    assert overlay.is_visible() and overlay.get_attribute("data-image") == "left"
    page.keyboard.press("Escape")
    assert not overlay.is_visible()


def touch_page(browser, width, height):
    context = browser.new_context(viewport={"width": width, "height": height}, has_touch=True, is_mobile=True,
                                  device_scale_factor=2)
    return context.new_page()


@pytest.mark.parametrize("width, height", [(390, 844), (360, 780), (768, 1024)])
def test_the_2afc_page_fits_a_touch_screen_and_taps_are_stored_exactly(ws, browser, width, height):
    rater, token, _ = triplet_world(ws, n_anchors=2, image_size=PORTRAIT, generation_size=WIDE)
    with app_server(ws.root) as server:
        page = touch_page(browser, width, height)
        page.goto(f"{server.url}/?token={token}")
        triplet = shown_triplet(page)
        wait_for_images(page)
        assert page.evaluate("document.scrollingElement.scrollWidth <= window.innerWidth")
        assert page.evaluate("window.innerWidth") == width
        boxes = {key: page.locator(f'.cpdm-panel img[data-image="{key}"]').bounding_box()
                 for key in ("original", "left", "right")}
        for key, box in boxes.items():
            assert box["height"] > 80 and inside(box, width, height), (key, box)
        if width < 700:  # a phone: the original on top, AI images 1 and 2 side by side under it
            assert boxes["original"]["y"] + boxes["original"]["height"] <= boxes["left"]["y"]
            assert abs(boxes["left"]["y"] - boxes["right"]["y"]) < 2 and boxes["left"]["x"] < boxes["right"]["x"]
        for question in QUESTIONS:
            buttons = page.locator(f'.cpdm-panel .question[data-question="{question}"] button.value')
            assert buttons.count() == 3
            for index in range(3):
                box = buttons.nth(index).bounding_box()
                assert box["x"] >= 0 and box["x"] + box["width"] <= width, (question, index, box)
                assert box["width"] >= MIN_TAP_PX and box["height"] >= MIN_TAP_PX, (question, index, box)
        assert not page.locator('.cpdm-panel .status[data-kind="hint"]').is_visible()  # no keyboard, no key hints
        assert not page.locator(".cpdm-panel .choices kbd").first.is_visible()
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / f"2afc_page_{width}x{height}.png"))

        answers = {"copy": "right", "content": "cant_tell", "style": "left"}
        for question, value in answers.items():
            page.locator(f'.cpdm-panel .question[data-question="{question}"] button[data-value="{value}"]').tap()
        submit = page.locator(".cpdm-panel button.submit")
        box = submit.bounding_box()
        assert inside(box, width, height) and box["height"] >= MIN_TAP_PX, box  # reachable without scrolling
        assert "ready" in submit.get_attribute("class")
        page.screenshot(path=str(ARTIFACTS / f"2afc_page_{width}x{height}_answered.png"))
        x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
        page.touchscreen.tap(x, y)
        page.touchscreen.tap(x, y)  # a double tap lands while the first is being saved: one judgment
        shown_triplet(page, not_triplet=triplet)
        page.wait_for_timeout(500)
        assert judgments(ws, rater) == {triplet: expected(ws, rater, triplet, answers)}


def test_a_set_that_cannot_be_judged_is_skipped_with_its_reason_and_no_answer(ws, server, page):
    rater, token, _ = triplet_world(ws, n_anchors=2)
    page.goto(f"{server}/?token={token}")
    triplet = shown_triplet(page)
    page.keyboard.press("1")  # an answer begun, then the rater finds they cannot judge the set
    page.get_by_role("button", name="Skip: cannot judge").click()
    page.get_by_role("textbox", name="Why can you not judge this set?").fill("AI image 2 is blank")
    page.get_by_role("button", name="Skip this set").click()
    shown_triplet(page, not_triplet=triplet)
    left, right = sides_shown(ws, rater, triplet)
    assert ws.conn.execute(
        "SELECT question, answer, chosen_pair, left_pair, right_pair, skip_reason FROM judgments WHERE rater = ? "
        "ORDER BY id", (rater.id,)).fetchall() == [(q, None, None, left, right, "AI image 2 is blank") for q in QUESTIONS]
