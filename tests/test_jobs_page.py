"""The Jobs page through Streamlit's AppTest (no browser): it queues jobs that a worker runs, cancels and retries
them, refuses bad input without queueing anything, and is for researchers only."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from cpdm.backbones import PAPER_COMBINATION
from cpdm.curation.prompts import add_manual_prompt
from cpdm.demo import build as demo
from cpdm.jobs import queue
from cpdm.jobs.worker import Worker
from cpdm.rating.auth import create_rater, revoke_rater
from cpdm.store.rows import add_prompt, add_variant
from cpdm.store.time import format_time, utc_now
from tests.curation_support import add_anchors

ROOT = Path(__file__).resolve().parent.parent
PAGE = ROOT / "pages" / "jobs.py"


def open_page(ws, role: str = "researcher") -> AppTest:
    """The page for a new rater of ``role``, signed in as ``app.py`` leaves a session (workspace, rater, token)."""
    rater, token = create_rater(ws, f"{role} of jobs", role)
    at = AppTest.from_file(str(PAGE), default_timeout=120)
    at.session_state["cpdm_ws"] = ws
    at.session_state["cpdm_rater"] = rater
    at.session_state["cpdm_token"] = token
    return at.run()


def text(at) -> str:
    """What the page shows, with Markdown's escapes taken out."""
    parts = [e.value for kind in ("title", "markdown", "caption", "header", "info", "error", "warning", "success")
             for e in getattr(at, kind)]
    return "\n".join(str(p) for p in parts).replace("\\", "")


def errors(at) -> list[str]:
    return [str(e.value).replace("\\", "") for e in at.error]


def prompted(ws, folder: Path) -> list[int]:
    """Two anchors with one manual prompt each; returns the prompt ids."""
    return [add_manual_prompt(ws, anchor, f"a painting number {anchor}") for anchor in add_anchors(ws, folder, 2)]


def job_count(ws) -> int:
    return len(queue.list_jobs(ws))


@pytest.mark.slow  # the tiny Stable Diffusion, CLIP and VGG load and run one after another: ~45 s on 2 shared cores
def test_a_generation_queued_on_the_page_is_run_by_a_worker_and_its_pairs_scored(ws, tmp_path):
    prompt_ids = prompted(ws, tmp_path / "anchors")
    at = open_page(ws)
    assert not at.exception, at.exception
    at.radio(key="gen_prompts").set_value("chosen")
    at.multiselect(key="gen_chosen").set_value(prompt_ids)
    for key, value in (("gen_per_prompt", 1), ("gen_steps", 2), ("gen_height", 32), ("gen_width", 32)):
        at.number_input(key=key).set_value(value)
    at.checkbox(key="gen_offline_tiny").check()
    assert at.checkbox(key="gen_score_after").value  # scoring after is the default
    at.button(key="gen_submit").click().run()
    assert not at.exception, at.exception
    assert not errors(at)
    score_job, generate_job = queue.list_jobs(ws)
    assert [e.value for e in at.success] == [f"Queued jobs #{generate_job.id}, #{score_job.id}: they show in the list below."]
    assert generate_job.kind == "generate" and generate_job.params["prompt_ids"] == prompt_ids
    assert generate_job.params["per_prompt"] == 1 and generate_job.params["offline_tiny"]
    assert generate_job.device == "cpu"  # auto with the offline tiny models: any CPU worker
    assert score_job.kind == "score" and score_job.parents == [generate_job.id]
    assert score_job.params["variant"] == "original"
    # Scored with the paper's metric unless told otherwise, here and in the page's Score form.
    assert (score_job.params["semantic"], score_job.params["style"]) == PAPER_COMBINATION
    assert (at.text_input(key="score_semantic").value, at.text_input(key="score_style").value) == PAPER_COMBINATION
    assert f"#{generate_job.id} generate with original: 2 prompts x 1" in text(at)

    with Worker(ws.root, name="page-test-worker", device="cpu") as worker:
        assert worker.run_once().status == "done"
        assert worker.run_once().status == "done"
    generations = [row[0] for row in ws.conn.execute("SELECT id FROM generations ORDER BY id")]
    assert len(generations) == 2
    pairs = [row[0] for row in ws.conn.execute(
        f"SELECT id FROM pairs WHERE generation IN ({', '.join('?' * len(generations))})", generations)]
    assert len(pairs) == 2
    scored = {row[0] for row in ws.conn.execute("SELECT DISTINCT pair FROM scores")}
    assert set(pairs) <= scored

    at.run()
    assert not at.exception, at.exception
    assert [p.proto.value for p in at.get("progress")] == [100, 100]
    assert text(at).count("done]") == 2  # both badges
    assert "worker page-test-worker on cpu" in text(at)
    assert not [b for b in at.button if b.key and b.key.startswith(("cancel_", "retry_"))]


def test_cancel_and_retry_buttons_change_the_jobs_status(ws):
    waiting = queue.enqueue(ws, "noop", {"steps": 3}, title="waiting")
    at = open_page(ws)
    at.button(key=f"cancel_{waiting}").click().run()
    assert not at.exception, at.exception
    assert queue.get_job(ws, waiting).status == "cancelled"
    assert "cancelled]" in text(at)
    at.button(key=f"retry_{waiting}").click().run()
    assert queue.get_job(ws, waiting).status == "queued"

    running = queue.claim(ws, "somewhere", device="cpu")
    assert running.id == waiting
    at.run()
    at.button(key=f"cancel_{running.id}").click().run()
    job = queue.get_job(ws, running.id)
    assert job.status == "running" and job.cancel_requested  # the worker stops it at its next step
    assert "cancelling]" in text(at)
    assert f"cancel_{running.id}" not in [b.key for b in at.button]  # already being cancelled


@pytest.mark.parametrize("button", ["cancel", "retry"])
def test_a_revoked_researchers_click_changes_nothing_and_the_page_refuses(ws, button):
    job_id = queue.enqueue(ws, "noop", {}, title="waiting")
    if button == "retry":
        queue.cancel(ws, job_id)
    at = open_page(ws)
    status = queue.get_job(ws, job_id).status
    revoke_rater(ws, at.session_state["cpdm_rater"].id)  # from another tab, while this page is open
    at.button(key=f"{button}_{job_id}").click().run()
    assert not at.exception, at.exception
    assert queue.get_job(ws, job_id).status == status
    assert errors(at) == ["This page is for researchers."] and not at.button


def test_a_retry_the_queue_refuses_is_shown_and_changes_nothing(ws):
    parent = queue.enqueue(ws, "noop", {}, title="parent")
    child = queue.enqueue(ws, "noop", {}, title="child", after=[parent])
    queue.cancel(ws, parent)  # the child fails: its parent was cancelled
    at = open_page(ws)
    at.button(key=f"retry_{child}").click().run()
    assert not at.exception, at.exception
    assert any(f"waits for job {parent}, which is cancelled; retry job {parent} first" in e for e in errors(at))
    assert queue.get_job(ws, child).status == "failed"
    assert f"parent job {parent} was cancelled" in text(at)


def test_a_job_with_no_attempts_left_has_no_retry_button(ws):
    job_id = queue.enqueue(ws, "noop", {}, max_attempts=1)
    claimed = queue.claim(ws, "w", device="cpu")
    queue.fail(ws, claimed.id, "w", "Traceback (most recent call last):\nRuntimeError: out of memory")
    at = open_page(ws)
    keys = [b.key for b in at.button]
    assert f"retry_{job_id}" not in keys and f"cancel_{job_id}" not in keys
    assert "RuntimeError: out of memory" in errors(at)


@pytest.mark.parametrize("form, fill, message", [
    ("gen", lambda at: at.radio(key="gen_prompts").set_value("chosen"), "choose at least one prompt"),
    ("gen", lambda at: at.number_input(key="gen_height").set_value(30), "height"),
    ("unlearn", lambda at: None, "choose at least one concept to erase"),
    ("chain", lambda at: None, "name the concept to erase"),
])
def test_bad_input_shows_an_error_and_queues_nothing(ws, tmp_path, form, fill, message):
    prompted(ws, tmp_path / "anchors")
    at = open_page(ws)
    fill(at)
    at.button(key=f"{form}_submit").click().run()
    assert not at.exception, at.exception
    assert any(message in error for error in errors(at)), errors(at)
    assert job_count(ws) == 0
    assert not at.success


def test_an_unlearning_run_takes_the_changed_hyperparameters_and_names_its_variant(ws):
    anchors = demo.add_anchors(ws, seed=0)
    at = open_page(ws)
    at.selectbox(key="unlearn_method").set_value("esd-x").run()
    concept = anchors[0].artist.name
    at.multiselect(key="unlearn_concepts").set_value([concept])
    at.number_input(key="unlearn_hp_esd-x_iterations").set_value(4)
    at.checkbox(key="unlearn_offline_tiny").check()
    at.button(key="unlearn_submit").click().run()
    assert not at.exception, at.exception
    assert not errors(at)
    (job,) = queue.list_jobs(ws)
    assert job.kind == "unlearn" and job.params["concepts"] == [concept]
    assert job.params["hyperparameters"]["iterations"] == 4
    assert job.params["hyperparameters"]["lr"] == 1e-5  # the method's default
    assert job.params["variant_name"] == "esd-x-" + concept.lower().replace(" ", "-")
    assert job.device == "cpu"


def test_the_chain_queues_four_jobs_each_after_the_one_before(ws):
    anchors = demo.add_anchors(ws, seed=0)
    for anchor in anchors:
        add_prompt(ws, anchor.id, demo.prompt_text(anchor), origin="template")
    add_variant(ws, "original", base_model="offline-tiny", method="original")
    at = open_page(ws)
    at.selectbox(key="chain_method").set_value("uce").run()
    at.selectbox(key="chain_concept").set_value(anchors[0].artist.name)
    at.checkbox(key="chain_offline_tiny").check()
    at.button(key="chain_submit").click().run()
    assert not at.exception, at.exception
    assert not errors(at)
    jobs = sorted(queue.list_jobs(ws), key=lambda job: job.id)
    assert [job.kind for job in jobs] == ["unlearn", "generate", "score", "report"]
    assert [job.parents for job in jobs] == [[], [jobs[0].id], [jobs[1].id], [jobs[2].id]]


def test_jobs_waiting_without_a_worker_bring_the_command_to_start_one(ws):
    job_id = queue.enqueue(ws, "generate", {"offline_tiny": True})  # asks for a CUDA worker
    at = open_page(ws)
    assert not at.warning  # just queued: a worker would take it within a second
    long_ago = format_time(utc_now() - timedelta(minutes=2))
    with ws.transaction() as conn:
        conn.execute("UPDATE jobs SET created_at = ? WHERE id = ?", (long_ago, job_id))
    at.run()
    assert "no worker has been seen in the last minute" in at.warning[0].value
    assert f"cpdm worker --workspace {ws.root} --device cuda:0" in at.code[0].value


@pytest.mark.parametrize("role", ["artist", "lay"])
def test_the_page_is_for_researchers_only(ws, role):
    queue.enqueue(ws, "noop", {})
    at = open_page(ws, role=role)
    assert "This page is for researchers." in errors(at)
    assert not at.button and not at.get("progress")


def test_the_page_opened_without_signing_in_is_refused():
    at = AppTest.from_file(str(PAGE), default_timeout=60).run()
    assert "This page is for researchers." in errors(at)


def test_the_page_is_in_the_researcher_menu(ws, monkeypatch):
    monkeypatch.setenv("CPDM_WORKSPACE", str(ws.root))
    _, token = create_rater(ws, "lead", "researcher")
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120)
    at.query_params["token"] = token
    at.run()
    at.switch_page("pages/jobs.py").run()
    assert not at.exception, at.exception
    assert [t.value for t in at.title] == ["Jobs"]


def test_two_variants_whose_names_sanitise_alike_queued_on_the_page_keep_their_own_artifacts(ws):
    from cpdm.diffusion.pipeline import variant_pipeline
    from cpdm.store.rows import get_variant

    anchors = demo.add_anchors(ws, seed=0)
    names = ("莫奈", "梵高")  # both reduce to nothing in [A-Za-z0-9._-]
    at = open_page(ws)
    at.selectbox(key="unlearn_method").set_value("uce").run()
    for name, anchor in zip(names, anchors):
        at.multiselect(key="unlearn_concepts").set_value([anchor.artist.name])
        at.text_input(key="unlearn_variant_name").input(name)
        at.checkbox(key="unlearn_offline_tiny").check()
        at.button(key="unlearn_submit").click().run()
        assert not at.exception, at.exception
        assert not errors(at)
    with Worker(ws.root, name="page-test-worker", device="cpu") as worker:
        assert [worker.run_once().status for _ in names] == ["done", "done"]
    first, second = (get_variant(ws, name) for name in names)
    assert first.artifact_path != second.artifact_path
    for variant in (first, second):  # each registered sha256 still matches its file
        variant_pipeline(variant, root=ws.root)
