"""Driving the app in headless chromium: a Streamlit server on a free loopback port, and the browser.

Shared by the browser tests and ``benchmarks/bench_browser.py``. Chromium is
Debian's (/usr/bin/chromium); Playwright never downloads a browser.
"""

from __future__ import annotations

import base64
import subprocess
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.needs import unavailable

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run"]
STARTUP_TIMEOUT_S = 60.0


@dataclass
class Server:
    """A running app: its base URL and process (whose CPU time a benchmark reads)."""

    url: str
    process: subprocess.Popen


@contextmanager
def app_server(workspace_root: Path):
    """Serve the app over the workspace on a free loopback port, as ``cpdm serve`` does; stop it when the block ends."""
    from cpdm.app.serve import start_app, stop_app, wait_until_ready
    from cpdm.testing import free_port

    log = tempfile.TemporaryFile()  # a file, not a pipe: an unread pipe that fills up would stall the server
    server = start_app(workspace_root, host="127.0.0.1", port=free_port(), stdout=log)
    try:
        try:
            wait_until_ready(server, timeout=STARTUP_TIMEOUT_S)
        except Exception as exc:
            log.seek(0)
            raise RuntimeError(f"the app did not start: {exc}\n{log.read().decode(errors='replace')[-2000:]}") from exc
        yield Server(server.url.rstrip("/"), server.process)
    finally:
        stop_app(server)
        log.close()


def launch_chromium(playwright):
    """Headless Debian chromium through Playwright."""
    return playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)


def require_chromium() -> None:
    """Skip the calling test when chromium is not installed (fail it in CI, see ``tests/needs.py``)."""
    if not CHROMIUM.exists():
        unavailable("chromium", "run `make browser-deps`")


@contextmanager
def chromium_browser():
    """Headless chromium for several pages or contexts; skips the test when chromium is not installed."""
    if not CHROMIUM.exists():
        pytest.skip("chromium is not installed (run `make browser-deps`)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = launch_chromium(p)
        try:
            yield browser
        finally:
            browser.close()


@contextmanager
def chromium_page(width: int = 1366, height: int = 900):
    """A fresh browser page of the given viewport; skips the test when chromium is not installed (fails in CI)."""
    require_chromium()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = launch_chromium(p)
        try:
            yield browser.new_context(viewport={"width": width, "height": height}).new_page()
        finally:
            browser.close()


# The rating panel on screen, once it is ready for answers (Playwright's CSS selectors pierce its shadow root).
PANEL_READY = '.cpdm-panel[data-state="answering"]'


# An image's source read back inside the page (a blob: or data: URL exists only there), as a data: URL.
IMAGE_SOURCE_JS = """async (source) => {
  const blob = await (await fetch(source)).blob();
  return await new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(reader.result);
    reader.onerror = () => reject(reader.error);
    reader.readAsDataURL(blob);
  });
}"""


def image_source_bytes(page, source: str) -> tuple[str, bytes]:
    """The MIME type and bytes an image source (``blob:``, ``data:`` or http) gives inside ``page``."""
    header, _, payload = page.evaluate(IMAGE_SOURCE_JS, source).partition(",")
    return header.removeprefix("data:").removesuffix(";base64"), base64.b64decode(payload)


def rater_world(ws, n_anchors: int, gens_per_anchor: int = 2, image_size: int | tuple[int, int] = 256,
                generation_size: int | tuple[int, int] | None = None, protocol_text: str | None = None):
    """A demo-like workspace: PNG pairs in one open campaign and a consented artist; returns (rater, token)."""
    from cpdm.rating.auth import create_rater, record_consent
    from tests.rating_fixtures import make_world

    make_world(ws, n_anchors, gens_per_anchor, overlap={"artist": 1, "lay": 1}, image_size=image_size,
               generation_size=generation_size, protocol_text=protocol_text)
    ws.set_meta("demo", "1")  # the banner takes room above the panel, as in the demo
    rater, token = create_rater(ws, "Ada", "artist")
    record_consent(ws, rater.id)
    return rater, token


def shown_pair(page, not_pair: int | None = None, timeout_ms: float = 30_000) -> int:
    """The pair the panel shows once it is ready for answers (a pair other than ``not_pair``)."""
    selector = PANEL_READY + (f':not([data-pair="{not_pair}"])' if not_pair is not None else "")
    panel = page.locator(selector)
    panel.wait_for(timeout=timeout_ms)
    return int(panel.get_attribute("data-pair"))


def triplet_world(ws, n_anchors: int, gens_per_anchor: int = 3, image_size: int | tuple[int, int] = 256,
                  generation_size: int | tuple[int, int] | None = None, protocol_text: str | None = None,
                  include_checks: bool = False, per_anchor: int | None = None):
    """A 2AFC campaign over PNG pairs (every pair of one anchor's generations, unless ``per_anchor`` says how many
    triplets each anchor gets) and a consented artist; returns (rater, token, campaign id).

    ``protocol_text`` defaults to the shipped 2afc protocol (its questions: copy, content, style).
    """
    from cpdm.rating.auth import create_rater, record_consent
    from cpdm.rating.triplets import create_2afc_campaign
    from tests.rating_fixtures import add_pairs

    _, pairs = add_pairs(ws, n_anchors, gens_per_anchor, image_size=image_size, generation_size=generation_size)
    if per_anchor is None:
        per_anchor = gens_per_anchor * (gens_per_anchor - 1) // 2
    campaign = create_2afc_campaign(ws, "compare", pairs, design="balanced", per_anchor=per_anchor,
                                    protocol_text=protocol_text, overlap={"artist": 1, "lay": 1},
                                    include_checks=include_checks)
    ws.set_meta("demo", "1")  # the banner takes room above the panel, as in the demo
    rater, token = create_rater(ws, "Ada", "artist")
    record_consent(ws, rater.id)
    return rater, token, campaign


def shown_triplet(page, not_triplet: int | None = None, timeout_ms: float = 30_000) -> int:
    """The triplet the panel shows once it is ready for answers (a triplet other than ``not_triplet``)."""
    selector = PANEL_READY + "[data-triplet]" + (
        f':not([data-triplet="{not_triplet}"])' if not_triplet is not None else "")
    panel = page.locator(selector)
    panel.wait_for(timeout=timeout_ms)
    return int(panel.get_attribute("data-triplet"))


# The sha256 of each image the panel shows, by slot, computed inside the page from the blob: URLs' bytes.
SHOWN_IMAGE_HASHES_JS = """async () => {
  const root = document.querySelector('[data-testid=stBidiComponentIsolated]').shadowRoot;
  const hashes = {};
  for (const img of root.querySelectorAll('.images img')) {
    const bytes = await (await fetch(img.src)).arrayBuffer();
    const digest = new Uint8Array(await crypto.subtle.digest('SHA-256', bytes));
    hashes[img.dataset.image] = [...digest].map((b) => b.toString(16).padStart(2, '0')).join('');
  }
  return hashes;
}"""


def shown_image_hashes(page) -> dict[str, str]:
    """The sha256 of the bytes of each image the panel shows ("original", "generated" / "left", "right")."""
    return page.evaluate(SHOWN_IMAGE_HASHES_JS)
