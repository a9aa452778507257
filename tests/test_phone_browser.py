"""The rating page on a phone and a tablet: touch emulation in headless chromium.

Nothing is wider than the screen, every scale button is inside it and big
enough to tap, Submit is on screen once the questions are answered, what is
tapped is what is stored, and a double tap on Submit records one rating.
Screenshots go to test-artifacts/ (the ones in docs/ come from here).
"""

from __future__ import annotations

import pytest

from cpdm.rating import recruit
from tests.browser_support import ROOT, app_server, launch_chromium, rater_world, require_chromium, shown_pair
from tests.rating_fixtures import default_protocol_text
from tests.recruit_support import ID_PARAM, recruiting_world
from tests.test_devices import IPHONE

pytestmark = [pytest.mark.browser, pytest.mark.slow]

ARTIFACTS = ROOT / "test-artifacts"
QUESTIONS = ("content", "style", "copy")
MIN_TAP_PX = 44
# A portrait anchor beside a wide generation: the two shapes that crowd a narrow screen most.
PORTRAIT, WIDE = (700, 1400), (1536, 768)
# 360 px: the narrowest phones in common use; 844x390: a phone on its side.
TOUCH_SCREENS = [(390, 844), (768, 1024), (360, 780), (844, 390)]


@pytest.fixture
def browser():
    require_chromium()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = launch_chromium(p)
        yield chromium
        chromium.close()


def touch_page(browser, width, height):
    context = browser.new_context(viewport={"width": width, "height": height}, has_touch=True, is_mobile=True,
                                  device_scale_factor=2)
    return context.new_page()


def wait_for_images(page) -> None:
    page.wait_for_function("""() => {
      const host = document.querySelector('[data-testid=stBidiComponentIsolated]');
      const imgs = host ? [...host.shadowRoot.querySelectorAll('.images img')] : [];
      return imgs.length === 2 && imgs.every(img => img.complete && img.naturalWidth > 0);
    }""")
    page.wait_for_timeout(300)  # let the panel settle its image size after the last layout change


def inside(box, width, height) -> bool:
    return box["x"] >= 0 and box["y"] >= 0 and box["x"] + box["width"] <= width and box["y"] + box["height"] <= height


def stored(ws, rater) -> dict[int, dict]:
    by_pair: dict[int, dict] = {}
    for pair, question, value in ws.conn.execute(
        "SELECT pair, question, value FROM ratings WHERE rater = ? ORDER BY id", (rater.id,)
    ):
        by_pair.setdefault(pair, {})[question] = value
    return by_pair


@pytest.mark.parametrize("width, height", TOUCH_SCREENS)
def test_the_rating_page_fits_a_touch_screen_and_taps_are_stored_exactly(ws, browser, width, height):
    rater, token = rater_world(ws, n_anchors=2, image_size=PORTRAIT, generation_size=WIDE)
    with app_server(ws.root) as server:
        page = touch_page(browser, width, height)
        page.goto(f"{server.url}/?token={token}")
        pair = shown_pair(page)
        wait_for_images(page)

        # No horizontal scrolling: the page is no wider than the screen.
        assert page.evaluate("document.scrollingElement.scrollWidth <= window.innerWidth")
        assert page.evaluate("window.innerWidth") == width
        for key in ("original", "generated"):
            box = page.locator(f'.cpdm-panel img[data-image="{key}"]').bounding_box()
            assert box["height"] > 80 and inside(box, width, height), (key, box)
        # Every button of every scale is inside the screen and large enough to tap.
        for question in QUESTIONS:
            buttons = page.locator(f'.cpdm-panel .question[data-question="{question}"] button.value')
            assert buttons.count() == 5
            for index in range(buttons.count()):
                box = buttons.nth(index).bounding_box()
                assert box["x"] >= 0 and box["x"] + box["width"] <= width, (question, index, box)
                assert box["width"] >= MIN_TAP_PX and box["height"] >= MIN_TAP_PX, (question, index, box)
        # No keyboard here: the key hints are not shown.
        assert not page.locator('.cpdm-panel .status[data-kind="hint"]').is_visible()
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / f"rating_page_{width}x{height}.png"))

        answers = {"content": 4, "style": 1, "copy": 5}
        for question, value in answers.items():
            page.locator(f'.cpdm-panel .question[data-question="{question}"] button[data-value="{value}"]').tap()
        submit = page.locator(".cpdm-panel button.submit")
        box = submit.bounding_box()
        assert inside(box, width, height) and box["height"] >= MIN_TAP_PX, box  # reachable without scrolling
        assert "ready" in submit.get_attribute("class")
        submit.tap()
        shown_pair(page, not_pair=pair)
        assert stored(ws, rater) == {pair: answers}


def test_a_double_tap_on_submit_records_one_rating(ws, browser):
    rater, token = rater_world(ws, n_anchors=2, image_size=PORTRAIT, generation_size=WIDE)
    with app_server(ws.root) as server:
        page = touch_page(browser, 390, 844)
        page.goto(f"{server.url}/?token={token}")
        pair = shown_pair(page)
        for question, value in zip(QUESTIONS, (2, 3, 4)):
            page.locator(f'.cpdm-panel .question[data-question="{question}"] button[data-value="{value}"]').tap()
        box = page.locator(".cpdm-panel button.submit").bounding_box()
        x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
        # Two taps on the spot, as a finger does (a locator's tap would wait for the "Saving…" button to enable).
        page.touchscreen.tap(x, y)
        page.touchscreen.tap(x, y)  # lands while the first is being saved
        next_pair = shown_pair(page, not_pair=pair)
        page.wait_for_timeout(1000)  # room for a second send, were there one
        assert stored(ws, rater) == {pair: dict(zip(QUESTIONS, (2, 3, 4)))}
        assert ws.conn.execute("SELECT COUNT(*) FROM ratings WHERE rater = ?", (rater.id,)).fetchone()[0] == 3
        assert int(page.locator(".cpdm-panel").get_attribute("data-pair")) == next_pair


def test_a_tapped_image_opens_large_and_a_tap_closes_it(ws, browser):
    rater, token = rater_world(ws, n_anchors=2, image_size=PORTRAIT, generation_size=WIDE)
    with app_server(ws.root) as server:
        page = touch_page(browser, 390, 844)
        page.goto(f"{server.url}/?token={token}")
        shown_pair(page)
        wait_for_images(page)
        small = page.locator('.cpdm-panel img[data-image="original"]').bounding_box()
        page.locator('.cpdm-panel img[data-image="original"]').tap()
        overlay = page.locator(".cpdm-panel .overlay")
        assert overlay.is_visible() and overlay.get_attribute("data-image") == "original"
        assert page.locator(".cpdm-panel .overlay-image").bounding_box()["height"] > small["height"]
        # The large view leaves pinch-zoom to the browser.
        assert page.locator(".cpdm-panel .overlay-image").evaluate("e => getComputedStyle(e).touchAction") in (
            "pinch-zoom", "auto", "manipulation")
        assert "pinch to zoom" in page.locator(".cpdm-panel .overlay-caption").inner_text()
        overlay.tap()
        assert not overlay.is_visible()


def test_a_desktop_only_study_tells_a_phone_visitor_and_assigns_nothing(ws, browser):
    rater, token = rater_world(ws, n_anchors=2,
                               protocol_text='devices = ["desktop"]\n' + default_protocol_text(background=False))
    with app_server(ws.root) as server:
        context = browser.new_context(viewport={"width": 390, "height": 844}, has_touch=True, is_mobile=True,
                                      user_agent=IPHONE)
        page = context.new_page()
        page.goto(f"{server.url}/?token={token}")
        page.get_by_text("Please rate on a computer").wait_for()
        assert f"?token={token}" in page.locator("code").inner_text()  # the link to open later
        assert page.evaluate("document.scrollingElement.scrollWidth <= window.innerWidth")
        assert page.locator(".cpdm-panel").count() == 0
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "desktop_only_on_a_phone.png"))
        assert ws.conn.execute("SELECT COUNT(*) FROM assignments").fetchone()[0] == 0


def test_a_desktop_only_recruitment_link_turns_a_phone_away_before_admission(ws, browser):
    _, _, secret = recruiting_world(ws, n_anchors=2,
                                    protocol_text='devices = ["desktop"]\n' + default_protocol_text(background=False))
    with app_server(ws.root) as server:
        page = browser.new_context(viewport={"width": 390, "height": 844}, has_touch=True, is_mobile=True,
                                   user_agent=IPHONE).new_page()
        page.goto(f"{server.url}/?{recruit.JOIN_PARAM}={secret}&{ID_PARAM}=5f3c0a1b2c3d4e5f6a7b8c9d")
        page.get_by_text("Please take part on a computer").wait_for(timeout=30_000)
        assert secret in page.locator("code").inner_text()  # the link to open later
        assert ws.conn.execute("SELECT COUNT(*) FROM raters").fetchone()[0] == 0  # nobody admitted
