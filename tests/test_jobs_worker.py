"""The worker: runs jobs with progress, a log and a heartbeat; several workers never run a job twice; a killed
worker's job finishes elsewhere; cancel, lease loss and SIGTERM stop a job at its next step."""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from pathlib import Path

import pytest

import tests.jobs_support  # noqa: F401  (registers the test kinds)
from cpdm.cli import cli
from cpdm.errors import CpdmError
from cpdm.jobs import queue
from cpdm.jobs.queue import cancel, enqueue, get_job, list_jobs
from cpdm.jobs.worker import Worker
from cpdm.store.workspace import open_workspace
from tests.jobs_support import start_worker, step_rows, wait_for


@pytest.fixture
def worker(ws):
    """An in-process worker on the test workspace, with a short lease and quick heartbeats."""
    with Worker(ws.root, name="test-worker", lease_seconds=2.0, heartbeat_seconds=0.1) as running_worker:
        yield running_worker


def run_in_thread(worker: Worker) -> tuple[threading.Thread, dict]:
    """Run one job on a thread (as a worker process's main thread would); the ended job lands in the dict."""
    ended: dict = {}
    thread = threading.Thread(target=lambda: ended.update(job=worker.run_once()))
    thread.start()
    return thread, ended


def log_text(workspace_root: Path, job_id: int) -> str:
    with open_workspace(workspace_root) as ws:
        return queue.read_log(ws, job_id)


# --- one worker, in this process -------------------------------------------------------------------------------


def test_run_once_runs_a_job_and_records_its_result(ws, worker):
    job_id = enqueue(ws, "steps", {"steps": 3})
    job = worker.run_once()
    assert (job.id, job.status, job.progress, job.worker, job.ran_on, job.attempts) == (
        job_id, "done", 1.0, "test-worker", "cpu", 1)
    assert job.result == {"steps": 3, "resumed_from": 0}
    assert job.message == "steps: 3/3" and job.eta_seconds == 0
    assert step_rows(ws, job_id) == [0, 1, 2]
    assert worker.run_once() is None


def test_a_failing_job_records_its_traceback_prints_and_log_records(ws, worker):
    job_id = enqueue(ws, "explode", {"why": "the seed file is missing"})
    child = enqueue(ws, "noop", after=[job_id])
    job = worker.run_once()
    assert job.status == "failed"
    assert job.error.startswith("Traceback (most recent call last):")
    assert job.error.rstrip().endswith("RuntimeError: the seed file is missing")
    log = queue.read_log(ws, job_id)
    assert "about to explode\n" in log
    assert "WARNING tests.explode: the fuse is lit" in log
    assert "RuntimeError: the seed file is missing" in log
    assert get_job(ws, child).error == f"parent job {job_id} failed"
    assert worker.run_once() is None  # the child is not run


def test_prints_logging_and_context_lines_reach_the_log(ws, worker, capsys):
    job_id = enqueue(ws, "chatty")
    job = worker.run_once()
    assert (job.status, job.result) == ("done", {"said": 3})
    lines = queue.read_log(ws, job_id).splitlines()
    assert lines[0].startswith("[worker] ") and "attempt 1 of 3 on test-worker (cpu)" in lines[0]
    assert "hello from the job" in lines
    assert any(line.endswith("INFO tests.chatty: an info record") for line in lines)
    assert "a line through the context" in lines
    assert "no newline at the end" in lines
    assert lines[-1].endswith(" done")
    assert "hello from the job" in capsys.readouterr().out  # the terminal still sees it


def test_progress_is_written_at_most_once_a_second_and_at_the_end(ws, worker):
    job_id = enqueue(ws, "steps", {"steps": 400})
    writes = []
    with worker.queue_ws.transaction() as conn:  # the process's one write connection of the file: trace it
        conn.set_trace_callback(lambda sql: writes.append(sql) if sql.startswith("UPDATE jobs SET progress") else None)
    started = time.monotonic()
    job = worker.run_once()
    elapsed = time.monotonic() - started
    assert job.status == "done" and len(step_rows(ws, job_id)) == 400
    assert 2 <= len(writes) <= elapsed / 1.0 + 2  # the first update, one a second, and the last
    with worker.queue_ws.transaction() as conn:
        conn.set_trace_callback(None)


def test_a_job_result_that_is_not_json_fails_the_job(ws, worker):
    job_id = enqueue(ws, "returns_a_set")
    job = worker.run_once()
    assert job.status == "failed" and "not JSON" in job.error
    assert get_job(ws, job_id).result is None


def test_worker_refuses_unknown_kinds_and_bad_leases(ws):
    with pytest.raises(CpdmError, match="unknown job kind 'generat'"):
        Worker(ws.root, kinds=["generat"])
    with pytest.raises(CpdmError, match="lease must last some time"):
        Worker(ws.root, lease_seconds=0)


def test_worker_claims_only_its_kinds(ws):
    steps = enqueue(ws, "steps", {"steps": 1})
    noop = enqueue(ws, "noop")
    with Worker(ws.root, kinds=["noop"]) as only_noop:
        assert only_noop.run_once().id == noop
        assert only_noop.run_once() is None
    assert get_job(ws, steps).status == "queued"


def test_cancel_stops_a_running_job_at_its_next_step_and_keeps_what_it_stored(ws, worker):
    job_id = enqueue(ws, "steps", {"steps": 60, "seconds": 0.05})
    child = enqueue(ws, "noop", after=[job_id])
    thread, ended = run_in_thread(worker)
    wait_for(lambda: len(step_rows(ws, job_id)) >= 2, what="two steps")
    assert cancel(ws, job_id).status == "running"
    thread.join(timeout=30)
    assert ended["job"].status == "cancelled"
    stored = step_rows(ws, job_id)
    assert 2 <= len(stored) < 60 and stored == sorted(set(stored))
    assert "cancelled; what it stored stays" in queue.read_log(ws, job_id)
    assert get_job(ws, child).error == f"parent job {job_id} was cancelled"
    # Retried, it resumes where it stopped and runs no step twice.
    queue.retry(ws, job_id)
    job = worker.run_once()
    assert job.status == "done" and job.result["resumed_from"] == len(stored)
    assert step_rows(ws, job_id) == list(range(60))


def test_heartbeats_keep_a_job_longer_than_its_lease_with_its_worker(ws):
    # The job lasts three leases; the lease is generous against the heartbeat's period so that a loaded
    # machine delaying the heartbeat thread does not lose it.
    job_id = enqueue(ws, "steps", {"steps": 15, "seconds": 0.4})
    with Worker(ws.root, name="steady", lease_seconds=2.0, heartbeat_seconds=0.1) as steady:
        thread, ended = run_in_thread(steady)
        wait_for(lambda: get_job(ws, job_id).worker == "steady", what="the steady worker's claim")
        rival_claims = []
        while thread.is_alive():
            rival_claims.append(queue.claim(ws, "rival"))
            time.sleep(0.05)
        thread.join()
    assert rival_claims and all(claimed is None for claimed in rival_claims)
    assert (ended["job"].status, ended["job"].attempts) == ("done", 1)
    assert step_rows(ws, job_id) == list(range(15))


def test_a_worker_that_loses_its_lease_stops_and_writes_nothing_more(ws, worker):
    job_id = enqueue(ws, "steps", {"steps": 80, "seconds": 0.05})
    thread, ended = run_in_thread(worker)
    wait_for(lambda: len(step_rows(ws, job_id)) >= 1, what="a first step")
    with ws.transaction() as conn:  # as if the lease had lapsed and another worker had claimed the job
        conn.execute("UPDATE jobs SET worker = 'thief', attempts = attempts + 1 WHERE id = ?", (job_id,))
    thread.join(timeout=30)
    job = get_job(ws, job_id)
    assert (job.status, job.worker, job.attempts) == ("running", "thief", 2)
    assert len(step_rows(ws, job_id)) < 80
    assert "lease lost: another worker took job" in queue.read_log(ws, job_id)


def test_run_forever_stops_when_idle_or_asked(ws, worker):
    for _ in range(3):
        enqueue(ws, "noop")
    assert worker.run_forever(idle_seconds=0.01, stop_when_idle=True) == 3
    worker.request_stop()
    assert worker.run_forever(idle_seconds=0.01) == 0
    assert worker.claim_next() is None


def test_stop_request_puts_the_running_job_back_in_the_queue(ws, worker):
    job_id = enqueue(ws, "steps", {"steps": 60, "seconds": 0.05})
    thread, ended = run_in_thread(worker)
    wait_for(lambda: len(step_rows(ws, job_id)) >= 1, what="a first step")
    worker.request_stop()
    thread.join(timeout=30)
    job = get_job(ws, job_id)
    assert (job.status, job.worker, job.attempts) == ("queued", None, 0)
    assert job.message == "worker test-worker stopped; queued again"


# --- the `cpdm worker` command ---------------------------------------------------------------------------------


def test_cli_worker_once_runs_one_job(runner, ws):
    first, second = enqueue(ws, "noop"), enqueue(ws, "noop")
    result = runner.invoke(cli, ["worker", "--once", "--name", "cli-worker", "--workspace", str(ws.root)])
    assert result.exit_code == 0, result.output
    assert f"job {first} (noop): done" in result.output
    assert (get_job(ws, first).worker, get_job(ws, second).status) == ("cli-worker", "queued")
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL  # handlers restored


def test_cli_worker_until_idle_and_bad_options(runner, ws):
    for _ in range(2):
        enqueue(ws, "noop")
    result = runner.invoke(cli, ["worker", "--until-idle", "--workspace", str(ws.root)])
    assert result.exit_code == 0 and "ran 2 jobs" in result.output
    bad_kind = runner.invoke(cli, ["worker", "--kinds", "noop,bogus", "--workspace", str(ws.root)])
    assert bad_kind.exit_code == 1 and "error: unknown job kind 'bogus'" in bad_kind.output
    address_alone = runner.invoke(cli, ["worker", "--address", "ray://head:10001", "--workspace", str(ws.root)])
    assert address_alone.exit_code == 2 and "--address and --ray-gpus are for --executor ray" in address_alone.output


def test_cli_worker_with_ray_missing_says_how_to_install_it(runner, ws, monkeypatch):
    monkeypatch.setitem(sys.modules, "cpdm.jobs.ray_executor", None)  # as if the module or Ray were missing
    enqueue(ws, "noop")
    result = runner.invoke(cli, ["worker", "--once", "--executor", "ray", "--workspace", str(ws.root)])
    assert result.exit_code == 1
    assert "install cpdm[ray]" in result.output
    assert list_jobs(ws)[0].status == "queued"


# --- worker processes ------------------------------------------------------------------------------------------


def started(process_log: Path) -> bool:
    return process_log.exists() and "waiting for jobs" in process_log.read_text()


def spawn(tmp_path: Path, ws, name: str, *args: str):
    """Start a worker process; its stdout and stderr go to a file, returned with the process."""
    output = tmp_path / f"{name}.out"
    process = start_worker(ws.root, "--name", name, "--idle", "0.05", *args, label=name, output=output)
    return process, output


def stop(process, timeout: float = 30) -> int:
    """SIGTERM a worker process that still runs; its exit status."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    try:
        return process.wait(timeout=timeout)
    except BaseException:
        process.kill()
        raise


def test_two_workers_run_twenty_jobs_each_exactly_once(tmp_path, ws):
    workers = [spawn(tmp_path, ws, name) for name in ("left", "right")]
    try:
        for _, output in workers:
            wait_for(lambda: started(output), what="a worker to start")
        ids = [enqueue(ws, "steps", {"steps": 1, "seconds": 0.1}) for _ in range(20)]
        wait_for(lambda: all(job.status == "done" for job in list_jobs(ws)), what="all jobs done")
    finally:
        codes = [stop(process) for process, _ in workers]
    assert codes == [0, 0]
    assert all(step_rows(ws, job_id) == [0] for job_id in ids)
    jobs = list_jobs(ws)
    assert all(job.attempts == 1 for job in jobs)
    ran_by = {row[0] for row in ws.conn.execute("SELECT worker FROM job_steps")}
    assert ran_by == {"left", "right"}  # both took part
    assert {job.worker for job in jobs} == {"left", "right"}


def test_a_killed_workers_job_finishes_on_the_other_worker_without_duplicates(tmp_path, ws):
    workers = {name: spawn(tmp_path, ws, name, "--lease", "3")[0] for name in ("one", "two")}
    try:
        for name in workers:
            wait_for(lambda: started(tmp_path / f"{name}.out"), what="a worker to start")
        job_id = enqueue(ws, "steps", {"steps": 12, "seconds": 0.25})
        wait_for(lambda: len(step_rows(ws, job_id)) >= 2, what="two steps on the first worker")
        doomed = get_job(ws, job_id).worker
        survivor = next(name for name in workers if name != doomed)
        os.kill(workers[doomed].pid, signal.SIGKILL)
        workers[doomed].wait(timeout=30)
        wait_for(lambda: get_job(ws, job_id).status == "done", what="the job to finish on the other worker")
    finally:
        codes = {name: stop(process) for name, process in workers.items()}
    assert codes[doomed] == -signal.SIGKILL and codes[survivor] == 0
    job = get_job(ws, job_id)
    assert (job.worker, job.attempts) == (survivor, 2)
    assert step_rows(ws, job_id) == list(range(12))  # every step once: none lost, none run twice
    assert job.result["resumed_from"] >= 2
    by_worker = dict(ws.conn.execute("SELECT worker, COUNT(*) FROM job_steps GROUP BY worker").fetchall())
    assert by_worker[doomed] >= 2 and by_worker[survivor] >= 1
    assert f"attempt 2 of 3 on {survivor}" in queue.read_log(ws, job_id)


def test_sigterm_finishes_the_step_and_requeues_the_job(tmp_path, ws):
    job_id = enqueue(ws, "steps", {"steps": 40, "seconds": 0.1})
    process, output = spawn(tmp_path, ws, "terminated")
    try:
        wait_for(lambda: len(step_rows(ws, job_id)) >= 2, what="two steps")
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
    finally:
        if process.poll() is None:
            process.kill()
    assert "stopping after the current step" in output.read_text()
    job = get_job(ws, job_id)
    assert (job.status, job.worker, job.attempts) == ("queued", None, 0)
    assert "terminated stopped; queued again" in job.message
    stored = step_rows(ws, job_id)
    assert stored == sorted(set(stored)) and len(stored) < 40
    with Worker(ws.root, name="next") as follower:
        assert follower.run_once().status == "done"
    assert step_rows(ws, job_id) == list(range(40))
