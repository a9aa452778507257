"""Driving the app in headless chromium: a Streamlit server on a free loopback port, and the browser.

Shared by the browser tests and ``benchmarks/bench_browser.py``. Chromium is
Debian's (/usr/bin/chromium); Playwright never downloads a browser.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run"]
STARTUP_TIMEOUT_S = 60.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Server:
    """A running app: its base URL and process (whose CPU time a benchmark reads)."""

    url: str
    process: subprocess.Popen


@contextmanager
def app_server(workspace_root: Path):
    """Serve ``app.py`` over the workspace on 127.0.0.1 (no file watcher); stop it when the block ends."""
    port = free_port()
    env = {**os.environ, "CPDM_WORKSPACE": str(workspace_root), "STREAMLIT_BROWSER_GATHER_USAGE_STATS": "false",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    log = tempfile.TemporaryFile()  # a file, not a pipe: an unread pipe that fills up would stall the server
    process = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", str(ROOT / "app.py"), "--server.port", str(port),
         "--server.address", "127.0.0.1", "--server.headless", "true", "--server.fileWatcherType", "none",
         "--client.toolbarMode", "viewer"],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while True:
            try:
                if urllib.request.urlopen(f"{url}/_stcore/health", timeout=1).status == 200:
                    break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    log.seek(0)
                    raise RuntimeError(f"streamlit did not start: {log.read().decode(errors='replace')[-2000:]}")
                time.sleep(0.3)
        yield Server(url, process)
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


def launch_chromium(playwright):
    """Headless Debian chromium through Playwright."""
    return playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)


# The rating panel on screen, once it is ready for answers (Playwright's CSS selectors pierce its shadow root).
PANEL_READY = '.cpdm-panel[data-state="answering"]'


def rater_world(ws, n_anchors: int, gens_per_anchor: int = 2, image_size: int = 256):
    """A demo-like workspace: PNG pairs in one open campaign and a consented artist; returns (rater, token)."""
    from cpdm.auth import create_rater, record_consent
    from tests.rating_fixtures import make_world

    make_world(ws, n_anchors, gens_per_anchor, overlap={"artist": 1, "lay": 1}, image_size=image_size)
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
