"""In headless chromium: what a visitor who is not signed in, or no longer is, can reach.

- A researcher's link revoked while the Jobs page is open stops working at
  the page's next refresh, and its Cancel button changes nothing. The page
  refreshes its list in a fragment every ``REFRESH_SECONDS``; such a rerun
  never passes through ``app.py``, so it must pass the auth gate on its own,
  and so must the Cancel button's callback.
- The study's images (and the researchers' plots) reach only the signed-in
  session: every image address the pages use, and every ``/media/…``
  address in them, gives no image to a request without that session.
"""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from urllib.parse import urlsplit

import pytest

from cpdm.demo.simulate import add_simulated_ratings
from cpdm.testing import create_synthetic_campaign
from cpdm.jobs import queue
from cpdm.rating.assignment import next_item
from cpdm.rating.auth import create_rater, rater_for_token, revoke_rater
from cpdm.rating.campaigns import set_campaign_status
from cpdm.store.workspace import init_workspace
from tests.browser_support import app_server, chromium_page, image_source_bytes, rater_world, shown_pair

pytestmark = [pytest.mark.browser, pytest.mark.slow]

REFRESH_SECONDS = 2  # pages/jobs.py
# A refresh's rerun and drawing, on a busy 2-core machine.
RERUN_MARGIN_S = 4.0
NOT_VALID = "This link is not valid"
# How every image format the workspace stores begins (PNG, JPEG, WebP's RIFF container).
IMAGE_SIGNATURES = (b"\x89PNG", b"\xff\xd8\xff", b"RIFF")
# Every src/href/srcset/poster attribute in the page, shadow roots (the rating panel's) included.
ADDRESSES_JS = """() => {
  const found = [];
  const visit = (root) => {
    for (const element of root.querySelectorAll('*')) {
      for (const name of ['src', 'href', 'srcset', 'poster']) {
        const value = element.getAttribute(name);
        if (value) found.push(new URL(value.split(' ')[0], document.baseURI).href);
      }
      if (element.shadowRoot) visit(element.shadowRoot);
    }
  };
  visit(document);
  return found;
}"""
# The shown images' sources: the rating panel's (in its shadow root), or st.image's plots.
PANEL_IMAGES_JS = """() => [...(document.querySelector('[data-testid=stBidiComponentIsolated]')
  ?.shadowRoot?.querySelectorAll('.images img') ?? [])].map((img) => ({src: img.src, shown: img.naturalWidth > 0}))"""
PLOT_IMAGES_JS = """() => [...document.querySelectorAll('[data-testid=stImage] img')]
  .map((img) => ({src: img.src, shown: img.naturalWidth > 0}))"""


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """A rater's campaign of PNG pairs and a rated synthetic campaign; the rater's and a researcher's tokens."""
    ws = init_workspace(tmp_path_factory.mktemp("access") / "ws")
    rater, rater_token = rater_world(ws, n_anchors=2)
    campaign = create_synthetic_campaign(ws, "synthetic", n_anchors=8, reference=True, seed=4)
    add_simulated_ratings(ws, campaign, seed=2)
    set_campaign_status(ws, campaign, "closed")  # its ratings are for the analysis pages; the rater rates the other
    _, researcher_token = create_rater(ws, "Reader", "researcher")
    yield ws, rater_token, researcher_token
    ws.close()


@pytest.fixture(scope="module")
def server(study):
    with app_server(study[0].root) as running:
        yield running


def open_jobs_page(page, url: str, job_id: int):
    """Open the Jobs page and wait until the job's Cancel button is there; return that button."""
    page.goto(url)
    cancel = page.locator(f".st-key-cancel_{job_id} button")
    cancel.wait_for(timeout=120_000)
    return cancel


def test_a_revoked_researcher_is_refused_within_one_refresh_and_cancel_changes_nothing(study, server):
    ws = study[0]
    job_id = queue.enqueue(ws, "noop", {}, title="waiting")  # no worker: it stays queued
    researcher, token = create_rater(ws, "Lead", "researcher")
    with chromium_page(1366, 900) as watching:
        url = f"{server.url}/jobs?token={token}"
        open_jobs_page(watching, url, job_id)
        clicking = watching.context.new_page()
        cancel = open_jobs_page(clicking, url, job_id)

        revoke_rater(ws, researcher.id)  # from another researcher's Raters page, say
        revoked_at = time.monotonic()
        try:
            cancel.click(timeout=1000)  # before this tab's next refresh, almost always
        except Exception:  # noqa: BLE001 - the refresh came first and took the button away: also a refusal
            pass
        # The tab nobody touches refuses at its next refresh.
        watching.get_by_role("heading", name=NOT_VALID).wait_for(timeout=(REFRESH_SECONDS + RERUN_MARGIN_S) * 1000)
        refused_after = time.monotonic() - revoked_at
        clicking.get_by_role("heading", name=NOT_VALID).wait_for(timeout=(REFRESH_SECONDS + RERUN_MARGIN_S) * 1000)
        for page in (watching, clicking):
            assert page.locator(".stButton button").count() == 0
            assert page.get_by_text("waiting").count() == 0  # no job shown any more
        time.sleep(REFRESH_SECONDS)  # a late rerun of the click would show here
    assert queue.get_job(ws, job_id).status == "queued"
    assert refused_after <= REFRESH_SECONDS + RERUN_MARGIN_S


def at_media(address: str) -> bool:
    """Whether ``address`` is at Streamlit's media endpoint (``/media/…``: st.image, st.audio, downloads)."""
    return urlsplit(address).path.startswith("/media/")


def image_sources(page, requested: list) -> set[str]:
    """Every image address the page requested, every ``/media/…`` address in it, and every image source it shows.

    ``data:`` sources are left out: their bytes are part of the page itself.
    """
    sources = {request.url for request in requested if request.resource_type == "image" or at_media(request.url)}
    sources |= {address for address in page.evaluate(ADDRESSES_JS) if at_media(address)}
    sources |= {image["src"] for image in page.evaluate(PANEL_IMAGES_JS) + page.evaluate(PLOT_IMAGES_JS)}
    return {source for source in sources if not source.startswith("data:")}


def fetched_without_session(outsider, source: str) -> bytes:
    """What someone without the session gets from ``source``: a plain request, or a page of another browser."""
    if source.startswith("http"):
        try:
            with urllib.request.urlopen(source, timeout=10) as response:  # no cookie, no token, no session
                return response.read()
        except urllib.error.HTTPError:
            return b""
    try:
        return image_source_bytes(outsider, source)[1]
    except Exception:  # noqa: BLE001 - the outsider's browser cannot read it at all
        return b""


def assert_no_image_without_session(outsider, sources: set[str], study_images: set[bytes]) -> None:
    """Fetched without the session, none of ``sources`` gives an image (one of the study's, or any other)."""
    for source in sorted(sources):
        body = fetched_without_session(outsider, source)
        assert body not in study_images and not body.startswith(IMAGE_SIGNATURES), f"{source} gave an image"


def shown_bytes(page, images: list[dict]) -> list[bytes]:
    """The bytes of each image on screen, read back inside the page, which holds them (no http address)."""
    assert images and all(image["shown"] for image in images), images
    assert not [image["src"] for image in images if image["src"].startswith("http")]
    return [image_source_bytes(page, image["src"])[1] for image in images]


def test_no_image_of_the_study_reaches_a_request_without_the_session(study, server):
    ws, rater_token, researcher_token = study
    with chromium_page(1366, 900) as page:
        # Someone else's browser, on the app without a link.
        outsider = page.context.browser.new_context().new_page()
        outsider.goto(server.url)
        outsider.get_by_role("heading", name=NOT_VALID).wait_for(timeout=60_000)
        requested = []
        page.on("request", lambda request: requested.append(request))

        page.goto(f"{server.url}/?token={rater_token}")
        shown_pair(page)
        item = next_item(ws, rater_for_token(ws, rater_token))
        stored = [ws.image_path(sha).read_bytes() for sha in (item.anchor_image, item.shown_image)]
        page.keyboard.press("o")  # the full-window view
        page.locator(".overlay:not([hidden]) img.overlay-image").wait_for()
        sources = image_sources(page, requested)
        assert_no_image_without_session(outsider, sources, set(stored))
        assert shown_bytes(page, page.evaluate(PANEL_IMAGES_JS)) == stored  # byte for byte as stored
        overlay = page.locator(".overlay:not([hidden]) img.overlay-image")
        assert overlay.get_attribute("src") == page.evaluate(PANEL_IMAGES_JS)[0]["src"]

        for path, last_heading in (("calibration", "Plan a study from this pilot"),
                                   ("analysis", "Benchmark by model variant")):
            requested.clear()
            page.goto(f"{server.url}/{path}?token={researcher_token}")
            page.get_by_role("heading", name=last_heading).wait_for(timeout=120_000)
            page.wait_for_load_state("networkidle")
            plots = shown_bytes(page, page.evaluate(PLOT_IMAGES_JS))
            assert_no_image_without_session(outsider, image_sources(page, requested), set(stored) | set(plots))
            if path == "calibration":
                # Made when pressed, for the signed-in researcher (a loaded CI machine may take a while).
                with page.expect_download(timeout=120_000) as download:
                    page.locator(".st-key-cal_png button").click()
                assert download.value.path().read_bytes() == plots[0]  # the plot on screen
