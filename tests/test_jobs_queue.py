"""The job queue: enqueue checks, atomic claims under a lease, dependencies, cancel, retry, the attempts cap, logs,
and the `cpdm jobs` commands."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time

import pytest

import tests.jobs_support  # noqa: F401  (registers the test kinds)
from cpdm.cli import cli
from cpdm.errors import CpdmError
from cpdm.jobs import queue
from cpdm.jobs.queue import cancel, claim, enqueue, fail, finish, get_job, heartbeat, list_jobs, retry
from tests.jobs_support import ROOT, worker_env

# Short enough that a test waits little for a lease to lapse.
SHORT_LEASE = 0.05

def table_counts(ws) -> tuple[int, int]:
    return (ws.conn.execute("SELECT COUNT(*) FROM jobs").fetchone()[0],
            ws.conn.execute("SELECT COUNT(*) FROM job_dependencies").fetchone()[0])


def lapse(seconds: float = SHORT_LEASE) -> None:
    """Wait until a lease of ``seconds`` has expired."""
    time.sleep(seconds * 3)


# --- enqueue ---------------------------------------------------------------------------------------------------


def test_enqueue_stores_checked_params_title_and_default_device(ws):
    job_id = enqueue(ws, "steps", {"steps": 4}, title="four steps")
    job = get_job(ws, job_id)
    assert (job.kind, job.status, job.title, job.device) == ("steps", "queued", "four steps", None)
    assert job.params == {"steps": 4, "seconds": 0.0}  # completed by the kind's check_params
    assert (job.attempts, job.max_attempts, job.progress, job.parents) == (0, 3, 0.0, [])
    assert get_job(ws, enqueue(ws, "gpu_noop")).device == "cuda"
    assert get_job(ws, enqueue(ws, "gpu_noop", device="cuda:1")).device == "cuda:1"
    assert get_job(ws, enqueue(ws, "noop", device="cpu")).device == "cpu"


@pytest.mark.parametrize("call,message", [
    (lambda ws: enqueue(ws, "no-such-kind"), "unknown job kind 'no-such-kind'"),
    (lambda ws: enqueue(ws, "steps", {"steps": 0}), "steps must be a whole number"),
    (lambda ws: enqueue(ws, "steps", ["steps", 3]), "must be a mapping"),
    (lambda ws: enqueue(ws, "noop", {"when": object()}), "must be JSON values"),
    (lambda ws: enqueue(ws, "noop", after=[999]), "no job 999"),
    (lambda ws: enqueue(ws, "noop", device="the big gpu"), "not a device name"),
    (lambda ws: enqueue(ws, "noop", max_attempts=0), "max_attempts must be a whole number of at least 1"),
])
def test_a_refused_job_is_a_clear_error_and_writes_nothing(ws, call, message):
    parent = enqueue(ws, "noop")
    before = table_counts(ws)
    with pytest.raises(CpdmError, match=message):
        call(ws)
    assert table_counts(ws) == before
    assert [job.id for job in list_jobs(ws)] == [parent]


def test_a_job_cannot_wait_for_a_failed_parent(ws):
    parent = enqueue(ws, "noop")
    fail(ws, parent, claim(ws, "w").worker, "broken")
    with pytest.raises(CpdmError, match=f"job {parent} is failed; retry it"):
        enqueue(ws, "noop", after=[parent])
    assert table_counts(ws) == (1, 0)


def test_extra_kinds_module_that_cannot_be_imported_is_a_clear_error(ws, monkeypatch):
    monkeypatch.setenv("CPDM_EXTRA_KINDS", "tests.jobs_support, no_such_module_of_kinds")
    with pytest.raises(CpdmError, match="CPDM_EXTRA_KINDS names 'no_such_module_of_kinds', which cannot be imported"):
        enqueue(ws, "noop")
    assert table_counts(ws) == (0, 0)


def test_list_jobs_newest_first_by_status_and_limit(ws):
    ids = [enqueue(ws, "noop") for _ in range(4)]
    claim(ws, "w")
    assert [job.id for job in list_jobs(ws)] == ids[::-1]
    assert [job.id for job in list_jobs(ws, status="running")] == [ids[0]]
    assert [job.id for job in list_jobs(ws, status=["queued"], limit=2)] == [ids[3], ids[2]]
    with pytest.raises(CpdmError, match="unknown job status 'lost'"):
        list_jobs(ws, status="lost")


def test_get_job_of_an_unknown_id_is_a_clear_error(ws):
    with pytest.raises(CpdmError, match="no job 42"):
        get_job(ws, 42)


# --- claims and leases -----------------------------------------------------------------------------------------


def test_claim_takes_the_oldest_job_once_and_counts_the_attempt(ws):
    first, second = enqueue(ws, "noop"), enqueue(ws, "noop")
    job = claim(ws, "w1", device="cpu")
    assert (job.id, job.status, job.worker, job.ran_on, job.attempts) == (first, "running", "w1", "cpu", 1)
    assert job.started_at and job.lease_expires_at > job.started_at
    assert claim(ws, "w2").id == second
    assert claim(ws, "w3") is None


def test_claim_honours_kinds_and_devices(ws):
    gpu = enqueue(ws, "gpu_noop")
    steps = enqueue(ws, "steps")
    cuda1 = enqueue(ws, "noop", device="cuda:1")
    assert claim(ws, "cpu-worker", kinds=["gpu_noop", "noop"], device="cpu") is None
    assert claim(ws, "nothing", kinds=[]) is None
    assert claim(ws, "cuda0", kinds=["steps"], device="cuda:0").id == steps  # a job asking no device runs anywhere
    taken = claim(ws, "cuda0", device="cuda:0")
    assert (taken.id, taken.ran_on, taken.device) == (gpu, "cuda:0", "cuda")
    assert claim(ws, "cuda0", device="cuda:0") is None  # cuda:1 is another GPU
    assert claim(ws, "cuda1", device="cuda:1").id == cuda1


def test_concurrent_claims_never_take_a_job_twice(tmp_path):
    from cpdm.store.workspace import init_workspace, open_workspace

    init_workspace(tmp_path / "ws").close()
    with open_workspace(tmp_path / "ws") as ws:
        ids = [enqueue(ws, "noop") for _ in range(60)]
    taken: dict[str, list[int]] = {}
    errors: list[BaseException] = []

    def take(name: str) -> None:
        with open_workspace(tmp_path / "ws") as own:
            taken[name] = []
            try:
                while (job := claim(own, name)) is not None:
                    taken[name].append(job.id)
            except BaseException as exc:  # a claim that errors under contention fails the test
                errors.append(exc)

    threads = [threading.Thread(target=take, args=(f"w{n}",)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    claimed = [job_id for jobs in taken.values() for job_id in jobs]
    assert sorted(claimed) == ids


def test_an_expired_lease_is_taken_over_and_the_old_worker_loses_the_job(ws):
    job_id = enqueue(ws, "noop")
    claim(ws, "dead", lease_seconds=SHORT_LEASE)
    assert claim(ws, "other") is None  # the lease still holds
    lapse()
    job = claim(ws, "other")
    assert (job.id, job.worker, job.attempts) == (job_id, "other", 2)
    assert heartbeat(ws, job_id, "dead") is False
    assert heartbeat(ws, job_id, "other") is True
    assert finish(ws, job_id, "dead", {"from": "dead"}) is False
    assert fail(ws, job_id, "dead", "too late") is False
    assert finish(ws, job_id, "other", {"from": "other"}) is True
    done = get_job(ws, job_id)
    assert (done.status, done.result, done.progress, done.error) == ("done", {"from": "other"}, 1.0, None)


def test_heartbeat_keeps_a_lease_alive(ws):
    job_id = enqueue(ws, "noop")
    claim(ws, "alive", lease_seconds=0.3)
    for _ in range(4):
        time.sleep(0.1)
        assert heartbeat(ws, job_id, "alive", lease_seconds=0.3)
    assert claim(ws, "other") is None


def test_a_job_whose_workers_keep_dying_fails_once_its_attempts_are_used(ws):
    job_id = enqueue(ws, "noop", max_attempts=2)
    child = enqueue(ws, "noop", after=[job_id])
    claim(ws, "first", lease_seconds=SHORT_LEASE)
    lapse()
    assert claim(ws, "second", lease_seconds=SHORT_LEASE).attempts == 2
    lapse()
    assert claim(ws, "third") is None
    job = get_job(ws, job_id)
    assert job.status == "failed" and "worker lost 2 times" in job.error
    assert get_job(ws, child).error == f"parent job {job_id} failed"
    with pytest.raises(CpdmError, match="already used all its 2 attempts"):
        retry(ws, job_id)


def test_requeue_gives_the_job_back_without_counting_the_attempt(ws):
    job_id = enqueue(ws, "noop")
    claim(ws, "stopping")
    assert queue.requeue(ws, job_id, "stopping", "worker stopping stopped; queued again")
    job = get_job(ws, job_id)
    assert (job.status, job.worker, job.attempts, job.message) == (
        "queued", None, 0, "worker stopping stopped; queued again")
    assert claim(ws, "next").id == job_id


def test_requeue_of_a_job_someone_cancelled_cancels_it(ws):
    job_id = enqueue(ws, "noop")
    claim(ws, "stopping")
    cancel(ws, job_id)
    assert queue.requeue(ws, job_id, "stopping", "queued again")
    assert get_job(ws, job_id).status == "cancelled"
    assert queue.requeue(ws, job_id, "stopping", "queued again") is False


# --- dependencies ----------------------------------------------------------------------------------------------


def test_a_job_waits_until_every_parent_is_done(ws):
    unlearn = enqueue(ws, "noop", title="unlearn")
    generate = enqueue(ws, "noop", title="generate", after=[unlearn])
    other = enqueue(ws, "noop", title="other")
    score = enqueue(ws, "noop", title="score", after=[generate, other])
    assert get_job(ws, score).parents == [generate, other]
    assert claim(ws, "a").id == unlearn
    assert claim(ws, "b").id == other  # generate is older but waits for unlearn
    assert claim(ws, "c") is None
    finish(ws, other, "b", {})
    assert claim(ws, "c") is None  # score still waits for generate
    finish(ws, unlearn, "a", {})
    assert claim(ws, "c").id == generate
    assert claim(ws, "d") is None
    finish(ws, generate, "c", {})
    assert claim(ws, "d").id == score


def test_a_failed_parent_fails_its_waiting_children_naming_it(ws):
    root = enqueue(ws, "noop")
    child = enqueue(ws, "noop", after=[root])
    grandchild = enqueue(ws, "noop", after=[child])
    bystander = enqueue(ws, "noop")
    fail(ws, root, claim(ws, "w").worker, "Traceback ...\nRuntimeError: out of memory")
    assert get_job(ws, root).error.endswith("RuntimeError: out of memory")
    assert (get_job(ws, child).status, get_job(ws, child).error) == ("failed", f"parent job {root} failed")
    assert get_job(ws, grandchild).error == f"parent job {child} failed"
    assert get_job(ws, bystander).status == "queued"
    assert claim(ws, "w").id == bystander


# --- cancel and retry ------------------------------------------------------------------------------------------


def test_cancel_a_queued_job_at_once_and_fail_its_children(ws):
    job_id = enqueue(ws, "noop")
    child = enqueue(ws, "noop", after=[job_id])
    job = cancel(ws, job_id)
    assert (job.status, job.message) == ("cancelled", "cancelled before it ran") and job.finished_at
    assert get_job(ws, child).error == f"parent job {job_id} was cancelled"
    assert claim(ws, "w") is None


def test_cancel_a_running_job_asks_its_worker(ws):
    job_id = enqueue(ws, "noop")
    claim(ws, "w")
    job = cancel(ws, job_id)
    assert (job.status, job.cancel_requested) == ("running", True)
    assert queue.stop_reason(ws, job_id, "w") == queue.STOP_CANCEL
    assert queue.report_progress(ws, job_id, "w", 0.5, "half", 3.0) == queue.STOP_CANCEL
    assert queue.record_cancelled(ws, job_id, "w")
    assert get_job(ws, job_id).status == "cancelled"


def test_cancel_a_running_job_whose_worker_is_gone_ends_it_at_once(ws):
    job_id = enqueue(ws, "noop")
    claim(ws, "dead", lease_seconds=SHORT_LEASE)
    lapse()
    assert cancel(ws, job_id).status == "cancelled"


def test_a_cancel_request_outlives_a_dead_worker(ws):
    job_id = enqueue(ws, "noop")
    claim(ws, "dead", lease_seconds=0.3)
    cancel(ws, job_id)
    lapse(0.3)
    assert claim(ws, "other") is None  # not taken over: it was to stop anyway
    assert get_job(ws, job_id).status == "cancelled"


@pytest.mark.parametrize("finished_as", ["done", "cancelled"])
def test_a_finished_job_cannot_be_cancelled(ws, finished_as):
    job_id = enqueue(ws, "noop")
    if finished_as == "done":
        finish(ws, job_id, claim(ws, "w").worker, {})
    else:
        cancel(ws, job_id)
    with pytest.raises(CpdmError, match=f"job {job_id} is already {finished_as}"):
        cancel(ws, job_id)
    with pytest.raises(CpdmError, match="no job 77"):
        cancel(ws, 77)


def test_retry_queues_a_failed_job_and_the_children_it_failed(ws):
    job_id = enqueue(ws, "noop")
    child = enqueue(ws, "noop", after=[job_id])
    grandchild = enqueue(ws, "noop", after=[child])
    fail(ws, job_id, claim(ws, "w").worker, "boom")
    job = retry(ws, job_id)
    assert (job.status, job.error, job.worker, job.attempts, job.progress) == ("queued", None, None, 1, 0.0)
    assert [get_job(ws, j).status for j in (child, grandchild)] == ["queued", "queued"]
    assert claim(ws, "w").attempts == 2


def test_retry_a_cancelled_job(ws):
    job_id = enqueue(ws, "noop")
    cancel(ws, job_id)
    assert retry(ws, job_id).status == "queued"


def test_retry_refuses_unfinished_done_and_orphaned_jobs(ws):
    parent = enqueue(ws, "noop")
    child = enqueue(ws, "noop", after=[parent])
    with pytest.raises(CpdmError, match=f"job {parent} is queued; only failed or cancelled"):
        retry(ws, parent)
    claim(ws, "w")
    with pytest.raises(CpdmError, match="is running"):
        retry(ws, parent)
    fail(ws, parent, "w", "boom")
    with pytest.raises(CpdmError, match=f"waits for job {parent}, which is failed; retry job {parent} first"):
        retry(ws, child)
    retry(ws, parent)
    finish(ws, parent, claim(ws, "w").worker, {})
    with pytest.raises(CpdmError, match="is done"):
        retry(ws, parent)
    with pytest.raises(CpdmError, match="no job 99"):
        retry(ws, 99)


# --- logs ------------------------------------------------------------------------------------------------------


def test_a_job_log_is_a_file_in_the_workspace(ws):
    job_id = enqueue(ws, "noop")
    assert queue.read_log(ws, job_id) == ""
    queue.append_log(ws, job_id, "one")
    queue.append_log(ws, job_id, "two\nthree\n")
    assert queue.log_path(ws, job_id) == ws.root / "jobs" / f"{job_id}.log"
    assert queue.read_log(ws, job_id) == "one\ntwo\nthree\n"
    assert queue.read_log(ws, job_id, tail_lines=2) == "two\nthree\n"
    assert queue.read_log(ws, job_id, tail_lines=0) == ""
    with pytest.raises(CpdmError, match="no job 5"):
        queue.read_log(ws, 5)


def test_follow_log_streams_until_the_job_ends(ws):
    job_id = enqueue(ws, "noop")
    claim(ws, "w")
    queue.append_log(ws, job_id, "old line")
    queue.append_log(ws, job_id, "last old line")

    def work() -> None:
        time.sleep(0.1)
        queue.append_log(ws, job_id, "new line é")
        time.sleep(0.1)
        finish(ws, job_id, "w", {})

    thread = threading.Thread(target=work)
    thread.start()
    text = "".join(queue.follow_log(ws, job_id, poll_seconds=0.02, tail_lines=1))
    thread.join()
    assert text == "last old line\nnew line é\n"


# --- the `cpdm jobs` commands ----------------------------------------------------------------------------------


def invoke(runner, ws, *args):
    return runner.invoke(cli, [*args, "--workspace", str(ws.root)])


def test_cli_add_parses_params_and_dependencies(runner, ws):
    parent = enqueue(ws, "noop")
    result = invoke(runner, ws, "jobs", "add", "steps", "-p", "steps=2", "--param", "seconds=0.5",
                    "--after", str(parent), "--title", "two steps", "--device", "cpu", "--max-attempts", "5")
    assert result.exit_code == 0, result.output
    job = list_jobs(ws)[0]
    assert result.output.strip() == f"job {job.id} queued (steps on cpu, after job {parent})"
    assert (job.params, job.parents, job.title, job.device, job.max_attempts) == (
        {"steps": 2, "seconds": 0.5}, [parent], "two steps", "cpu", 5)
    invoke(runner, ws, "jobs", "add", "noop", "-p", "label=plain text", "-p", "tags=[1, 2]")
    assert list_jobs(ws)[0].params == {"label": "plain text", "tags": [1, 2]}


@pytest.mark.parametrize("value, ids", [("1", [1]), ("1,2", [1, 2]), ("[3]", [3])])
def test_cli_add_takes_one_id_as_a_list_of_one(runner, ws, value, ids):
    result = invoke(runner, ws, "jobs", "add", "generate", "-p", f"prompt_ids={value}")
    assert result.exit_code == 0, result.output
    assert list_jobs(ws)[0].params["prompt_ids"] == ids


@pytest.mark.parametrize("args,message", [
    (["jobs", "add", "generate", "-p", "prompt_ids=true"], "error: generate job: prompt_ids must be a list of"),
    (["jobs", "add", "steps", "-p", "steps=-1"], "error: steps must be a whole number"),
    (["jobs", "add", "nonsense"], "error: unknown job kind 'nonsense'"),
    (["jobs", "add", "noop", "--after", "12"], "error: job to wait for does not exist: no job 12"),
    (["jobs", "add", "noop", "-p", "novalue"], "'novalue' is not key=value"),
])
def test_cli_add_refuses_bad_input_and_queues_nothing(runner, ws, args, message):
    result = invoke(runner, ws, *args)
    assert result.exit_code in (1, 2)
    assert message in result.output
    assert table_counts(ws) == (0, 0)


def test_cli_list_shows_the_table_and_filters(runner, ws):
    assert invoke(runner, ws, "jobs", "list").output.strip() == "no jobs"
    done = enqueue(ws, "noop", title="first")
    queued = enqueue(ws, "gpu_noop")
    finish(ws, done, claim(ws, "gpu-box:7", device="cpu").worker, {})
    lines = invoke(runner, ws, "jobs", "list").output.splitlines()
    assert lines[0].split() == ["id", "kind", "title", "status", "progress", "worker", "device", "attempts", "age"]
    assert lines[1].split()[:4] == [str(queued), "gpu_noop", "queued", "0%"]
    assert lines[1].split()[4:6] == ["cuda", "0/3"]
    assert lines[2].split()[:8] == [str(done), "noop", "first", "done", "100%", "gpu-box:7", "cpu", "1/3"]
    filtered = invoke(runner, ws, "jobs", "list", "--status", "queued").output.splitlines()
    assert len(filtered) == 2 and filtered[1].split()[0] == str(queued)
    assert invoke(runner, ws, "jobs", "list", "--status", "failed").output.strip() == "no jobs with status failed"


def test_cli_show_prints_every_field_parents_result_and_error(runner, ws):
    parent = enqueue(ws, "noop")
    child = enqueue(ws, "steps", {"steps": 2}, after=[parent], title="child")
    finish(ws, parent, claim(ws, "w").worker, {"images": 9})
    fail(ws, child, claim(ws, "w").worker, "Traceback (most recent call last):\nValueError: bad seed")
    parent_text = invoke(runner, ws, "jobs", "show", str(parent)).output
    assert f"job {parent}" in parent_text and "status" in parent_text and '{"images": 9}' in parent_text
    text = invoke(runner, ws, "jobs", "show", str(child)).output
    for expected in ("title", "child", "failed", f"parents           {parent}", "attempts          1 of 3",
                     '"steps": 2', "error:", "    ValueError: bad seed"):
        assert expected in text, expected
    as_json = json.loads(invoke(runner, ws, "jobs", "show", str(child), "--format", "json").output)
    assert as_json["parents"] == [parent] and as_json["status"] == "failed"
    missing = invoke(runner, ws, "jobs", "show", "40")
    assert missing.exit_code == 1 and "error: no job 40" in missing.output


def test_cli_cancel_and_retry(runner, ws):
    claimed = enqueue(ws, "noop")
    waiting = enqueue(ws, "noop")
    assert claim(ws, "w").id == claimed
    result = invoke(runner, ws, "jobs", "cancel", str(claimed))
    assert result.output.strip() == f"job {claimed}: cancel requested; worker w stops it at its next step"
    assert invoke(runner, ws, "jobs", "cancel", str(waiting)).output.strip() == f"job {waiting} cancelled"
    again = invoke(runner, ws, "jobs", "cancel", str(waiting))
    assert again.exit_code == 1 and f"error: job {waiting} is already cancelled" in again.output
    retried = invoke(runner, ws, "jobs", "retry", str(waiting))
    assert retried.output.strip() == f"job {waiting} queued again (attempts so far: 0 of 3)"
    refused = invoke(runner, ws, "jobs", "retry", str(claimed))
    assert refused.exit_code == 1 and "only failed or cancelled jobs can be retried" in refused.output


def test_cli_log_tail_and_follow(runner, ws):
    job_id = enqueue(ws, "noop")
    for number in range(5):
        queue.append_log(ws, job_id, f"line {number}")
    assert invoke(runner, ws, "jobs", "log", str(job_id)).output == "".join(f"line {n}\n" for n in range(5))
    assert invoke(runner, ws, "jobs", "log", str(job_id), "--tail", "2").output == "line 3\nline 4\n"
    cancel(ws, job_id)
    assert invoke(runner, ws, "jobs", "log", str(job_id), "--follow", "--tail", "1").output == "line 4\n"
    assert invoke(runner, ws, "jobs", "log", "31").exit_code == 1


def test_cli_kinds_lists_the_registered_kinds(runner, ws):
    lines = invoke(runner, ws, "jobs", "kinds").output.splitlines()
    assert any(line.split()[0] == "noop" for line in lines)
    assert any(line.split()[:2] == ["gpu_noop", "gpu"] for line in lines)


@pytest.mark.parametrize("args", [["jobs", "list"], ["jobs", "add", "noop"], ["jobs", "show", "1"],
                                  ["jobs", "cancel", "1"], ["jobs", "log", "1"]])
def test_job_commands_do_not_import_torch(ws, args):
    enqueue(ws, "noop")
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "cpdm", *args, "--workspace", str(ws.root)],
        capture_output=True, text=True, cwd=ROOT, env=worker_env(),
    )
    assert result.returncode == 0, result.stderr[-2000:]
    loaded = {line.rsplit("|", 1)[1].strip() for line in result.stderr.splitlines()
              if line.startswith("import time:") and "|" in line}
    assert "cpdm.jobs.queue" in loaded
    assert not [name for name in loaded if name.split(".")[0] in ("torch", "torchvision", "diffusers", "open_clip")]
