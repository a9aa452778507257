"""Job kinds for the queue and worker tests, and helpers to run workers in other processes.

Importing this module registers the kinds; a worker process learns them
through ``CPDM_EXTRA_KINDS=tests.jobs_support`` (see :func:`worker_env`).

* ``steps``: records one row per step in a scratch table ``job_steps``
  (job, step, worker) and skips steps already recorded, as generation skips
  images already stored: a job taken over after its worker died resumes, and
  a step run twice shows as a duplicate row.
* ``explode``: raises after logging and printing a little.
* ``chatty``: prints, logs and reports progress, then returns a result.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from pathlib import Path

from cpdm.errors import CpdmError
from cpdm.jobs.registry import JobKind, register_kind
from cpdm.progress import progress_bar

ROOT = Path(__file__).resolve().parent.parent


def _ensure_steps_table(ws) -> None:
    ws.conn.execute("CREATE TABLE IF NOT EXISTS job_steps (job INTEGER NOT NULL, step INTEGER NOT NULL, worker TEXT)")


def _check_steps_params(params: dict) -> dict:
    steps = params.get("steps", 3)
    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1:
        raise CpdmError(f"steps must be a whole number of at least 1, not {steps!r}")
    return {"steps": steps, "seconds": float(params.get("seconds", 0.0))}


def _run_steps(ws, params: dict, context) -> dict:
    """Each step: wait, then record the step (one row), unless a previous attempt recorded it already."""
    _ensure_steps_table(ws)
    done = {row[0] for row in ws.conn.execute("SELECT step FROM job_steps WHERE job = ?", (context.job_id,))}
    worker = os.environ.get("CPDM_TEST_WORKER_LABEL", "")
    with progress_bar(params["steps"], "steps", initial=len(done)) as bar:
        for step in range(params["steps"]):
            if step in done:
                continue
            time.sleep(params["seconds"])
            with ws.transaction() as conn:
                conn.execute("INSERT INTO job_steps (job, step, worker) VALUES (?, ?, ?)",
                             (context.job_id, step, worker))
            bar.update(1)
    return {"steps": params["steps"], "resumed_from": len(done)}


def _run_explode(ws, params: dict, context) -> dict:
    print("about to explode")
    logging.getLogger("tests.explode").warning("the fuse is lit")
    raise RuntimeError(params.get("why", "boom"))


def _run_chatty(ws, params: dict, context) -> dict:
    print("hello from the job")
    print("no newline at the end", end="")
    logging.getLogger("tests.chatty").info("an info record")
    context.progress(0.5, "half way")
    context.log("a line through the context")
    return {"said": 3}


register_kind(JobKind("steps", "record one row per step (resumable)", _run_steps, _check_steps_params))
register_kind(JobKind("explode", "raise an error", _run_explode))
register_kind(JobKind("chatty", "print, log and report progress", _run_chatty))


def step_rows(ws, job_id: int) -> list[int]:
    """The steps a job recorded, with repeats, in order."""
    _ensure_steps_table(ws)
    return [row[0] for row in ws.conn.execute("SELECT step FROM job_steps WHERE job = ? ORDER BY step", (job_id,))]


def worker_env(label: str = "") -> dict:
    """The environment of a worker process that knows the test kinds and runs this checkout's cpdm."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env["CPDM_EXTRA_KINDS"] = "tests.jobs_support"
    env["CPDM_TEST_WORKER_LABEL"] = label
    return env


def start_worker(workspace: Path, *args: str, label: str = "") -> subprocess.Popen:
    """Start ``python -m cpdm worker`` on a workspace in another process."""
    return subprocess.Popen(
        [sys.executable, "-m", "cpdm", "worker", "--workspace", str(workspace), *args],
        cwd=ROOT, env=worker_env(label), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def wait_for(condition, timeout: float = 30.0, every: float = 0.05, what: str = "condition"):
    """Poll ``condition()`` until it returns something true; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")
