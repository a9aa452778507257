"""The app's own process never loads the model libraries: every page rendered, every Jobs form submitted.

Raters and researchers share one Streamlit process; torch and the diffusion
libraries belong in ``cpdm worker`` processes. Import checks cannot see what
a page loads when it runs, so this test runs a researcher's tour of the app
(:mod:`tests.app_tour`) in a fresh interpreter and reads its ``sys.modules``.
"""

from __future__ import annotations

import pytest

from cpdm.demo.build import build_demo
from cpdm.jobs import queue
from cpdm.store.workspace import open_workspace
from tests.app_tour import HEAVY, tour_in_fresh_process

FORMS = {"gen", "score", "unlearn", "chain"}


@pytest.mark.slow  # the demo build (with tiny-model scores) and the tour: about 30 s on 2 cores
def test_a_researchers_tour_loads_no_model_library(tmp_path):
    demo = build_demo(tmp_path / "demo")
    report = tour_in_fresh_process(demo.workspace, demo.researcher_link.token)

    assert report["exceptions"] == []
    assert [page.rsplit("/", 1)[1] for page in report["pages"]] == [
        "campaigns.py", "raters.py", "progress.py", "analysis.py", "calibration.py", "jobs.py"]
    for submission in report["submissions"]:
        answered = "success" if submission["success"] and not submission["error"] else "error"
        assert answered == submission["expect"], submission
    tried = {(s["form"], s["expect"]) for s in report["submissions"]}
    assert tried == {(form, expect) for form in FORMS for expect in ("success", "error")}
    ws = open_workspace(demo.workspace)
    try:
        queued = sum(s["success"][0].count("#") for s in report["submissions"] if s["expect"] == "success")
        assert len(queue.list_jobs(ws)) == queued
    finally:
        ws.close()

    assert report["heavy"] == [], f"the app process loaded {', '.join(report['heavy'])} (none of {HEAVY} may load)"
