"""In headless chromium: a researcher queues a tiny generation on the Jobs page and watches a worker process
(``python -m cpdm worker`` on the same workspace) take it to 100 %. A screenshot goes to test-artifacts/."""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time

import pytest

from cpdm.jobs import queue
from cpdm.rating.auth import create_rater
from tests.browser_support import ROOT, app_server, chromium_page
from tests.jobs_support import worker_env
from tests.test_jobs_page import prompted

pytestmark = [pytest.mark.browser, pytest.mark.slow]

ARTIFACTS = ROOT / "test-artifacts"
# Loading torch and the tiny models in a fresh worker process takes a while on a busy 2-core machine.
JOB_TIMEOUT_S = 300.0


def start_worker(workspace, log) -> subprocess.Popen:
    """``python -m cpdm worker`` on the workspace, its output in ``log`` (a file: a full pipe would stall it)."""
    return subprocess.Popen([sys.executable, "-m", "cpdm", "worker", "--workspace", str(workspace), "--idle", "0.2"],
                            cwd=ROOT, env=worker_env("browser"), stdout=log, stderr=subprocess.STDOUT)


def stop_worker(worker: subprocess.Popen) -> None:
    """SIGTERM (the worker finishes its step and exits), SIGKILL if it lingers."""
    worker.terminate()
    try:
        worker.wait(timeout=30)
    except subprocess.TimeoutExpired:
        worker.kill()
        worker.wait()


def progress_of(page, job_id: int) -> int | None:
    """The percentage the job's card shows on its progress bar (None until the card is there)."""
    bar = page.locator(f".st-key-job_{job_id} [role='progressbar']")
    if not bar.count():
        return None
    value = bar.first.get_attribute("aria-valuenow")
    return None if value is None else int(float(value))


def fill(page, key: str, value: str) -> None:
    """Type into the widget with this key (labels repeat across the page's tabs; keys do not)."""
    box = page.locator(f".st-key-{key} input")
    box.fill(value)
    box.press("Tab")


def test_a_researcher_queues_a_generation_and_watches_it_reach_100_percent(ws, tmp_path):
    prompted(ws, tmp_path / "anchors")
    _, token = create_rater(ws, "Lead", "researcher")
    with tempfile.TemporaryFile() as log:
        worker = start_worker(ws.root, log)
        try:
            with app_server(ws.root) as server, chromium_page(1366, 900) as page:
                page.goto(f"{server.url}/jobs?token={token}")
                page.get_by_role("heading", name="Queue a job").wait_for(timeout=120_000)
                fill(page, "gen_per_prompt", "2")
                fill(page, "gen_steps", "3")
                page.get_by_text("More settings").click()
                fill(page, "gen_height", "32")
                fill(page, "gen_width", "32")
                page.locator(".st-key-gen_offline_tiny label").click()
                page.locator(".st-key-gen_score_after label").click()  # the generation alone
                page.locator(".st-key-gen_submit button").click()
                page.get_by_text("Queued job #1: it shows in the list below.").wait_for(timeout=60_000)
                assert queue.get_job(ws, 1).params["per_prompt"] == 2

                seen = []
                ARTIFACTS.mkdir(exist_ok=True)
                deadline = time.monotonic() + JOB_TIMEOUT_S
                while time.monotonic() < deadline and (not seen or seen[-1] != 100):
                    shown = progress_of(page, 1)
                    if shown is not None and (not seen or shown != seen[-1]):
                        seen.append(shown)
                        if 0 < shown < 100:  # how a running job looks
                            page.locator(".st-key-job_1").scroll_into_view_if_needed()
                            page.screenshot(path=str(ARTIFACTS / "jobs_page_running.png"))
                    time.sleep(0.2)
                job = queue.get_job(ws, 1)
                assert seen and seen[-1] == 100, (seen, job, log.seek(0) or log.read().decode()[-3000:])
                assert seen == sorted(seen)  # the bar only moves forward
                card = page.locator(".st-key-job_1")
                card.locator(".stMarkdownBadge", has_text="done").wait_for(timeout=30_000)
                assert job.status == "done" and job.result["generated"] == 4
                assert "worker" in card.inner_text() and "on cpu" in card.inner_text()
                print("progress seen:", seen)
                card.locator(".stMarkdownBadge").scroll_into_view_if_needed()
                page.screenshot(path=str(ARTIFACTS / "jobs_page.png"))
        finally:
            stop_worker(worker)
    assert worker.returncode == 0
