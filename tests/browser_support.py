"""Headless chromium for browser tests: Debian's /usr/bin/chromium driven by Playwright (never a download)."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run"]


@contextmanager
def chromium_page(width: int = 1366, height: int = 900):
    """A fresh browser page of the given viewport; skips the test when chromium is not installed."""
    if not CHROMIUM.exists():
        pytest.skip("chromium is not installed (run `make browser-deps`)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield browser.new_context(viewport={"width": width, "height": height}).new_page()
        finally:
            browser.close()
