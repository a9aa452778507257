"""Part 4, end to end: ``cpdm pipeline run`` on a small study, run by a ``cpdm worker`` process.

The study: four anchors by four artists, one prompt each, a baseline
variant (``original``) on Stable Diffusion 2.1's architecture with random
weights (a local diffusers folder). ``cpdm pipeline run --method uce
--per-prompt 9`` queues the chain (unlearn → generate → score → unlearning
report) for the first artist; a ``cpdm worker --device cuda`` process,
started beforehand and waiting, runs it. The clock runs from the enqueue
command to the report's CSV on disk (target: under 5 minutes), and each
job's time in the queue and at work is read from the queue.

The worker scores with the default backbones (``ViT-L-14/openai`` and
``cpdm-inception``, the CPDM release's pair) as any worker would: it loads them from the usual caches, where
the part has written random weights of their full-size architectures (a
private cache for this run, see :func:`benchmarks.gpu.models.write_backbone_weights`).
The dry run queues the same chain with ``--offline-tiny`` and a CPU worker.
"""

from __future__ import annotations

import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

from benchmarks.bench_jobs import stop_process, worker_command, worker_environment
from benchmarks.gpu.harness import Budget, PartContext, timed
from benchmarks.gpu.models import architecture, saved_sd_folder, write_backbone_weights
from cpdm.backbones import DEFAULT_SEMANTIC, DEFAULT_STYLE
from cpdm.demo.painter import ARTISTS, SUBJECTS, render
from cpdm.diffusion.settings import BASELINE_VARIANT, TINY_BASE
from cpdm.jobs.chain import STEPS
from cpdm.jobs.queue import FINISHED_STATUSES, get_job
from cpdm.store.images import store_pil_image
from cpdm.store.rows import add_anchor, add_prompt, add_variant
from cpdm.store.time import parse_time
from cpdm.store.workspace import BASELINE_METHOD, init_workspace, open_workspace

PER_PROMPT = 9
TARGET_S = 5 * 60.0
METHOD = "uce"
POLL_S = 0.5
WORKER_STOP_WAIT_S = 5.0  # the study is over: the worker is not waited on for long
WORKER_READY_LINE = "waiting for jobs"
# The wait ends this long before the part's budget: stopping the worker and recording the jobs must fit in it.
STOP_MARGIN_S = 8.0


def run(ctx: PartContext) -> None:
    folder = ctx.settings.scratch / "end-to-end"
    folder.mkdir(parents=True, exist_ok=True)
    environment = worker_environment()
    if ctx.dry_run:
        base, chain_options = TINY_BASE, ["--offline-tiny", "--steps", "2"]
        environment["OMP_NUM_THREADS"] = "1"  # tiny models on shared CPUs: one thread (see the harness)
        ctx.recorder.note("dry run: the chain runs on the tiny random models (--offline-tiny), 2 steps, on the CPU")
    else:
        sd = architecture("sd2.1", dry_run=False)
        seconds, sd_folder = timed(ctx.device, saved_sd_folder, ctx.settings.scratch, sd, ctx.device)
        ctx.recorder.note(f"base model: {sd.name} with random weights in a local diffusers folder "
                          f"(ready in {seconds:.1f} s)")
        seconds, cache = timed(ctx.device, write_backbone_weights, folder / "weights", DEFAULT_SEMANTIC, DEFAULT_STYLE)
        environment.update(cache)
        ctx.recorder.note(f"scoring backbones {DEFAULT_SEMANTIC} + {DEFAULT_STYLE}: random weights written to the "
                          f"worker's own caches in {seconds:.1f} s")
        base, chain_options = str(sd_folder), []
    root = folder / "workspace"
    concept = build_study(root, base)
    with worker_process(ctx, root, environment, folder / "worker.log") as worker:
        enqueued = time.perf_counter()
        job_ids = enqueue_chain(root, concept, chain_options, environment)
        report, problem, failure = wait_for_job(ctx, root, job_ids[-1], worker, folder / "worker.log")
        seconds = time.perf_counter() - enqueued
    record_chain(ctx, root, job_ids, report, seconds, problem, failure)


def build_study(root: Path, base_model: str) -> str:
    """Four anchors by four artists with one prompt each, and the baseline variant; the artist to erase."""
    with init_workspace(root) as ws:
        for index, artist in enumerate(ARTISTS[:4]):
            image = store_pil_image(ws, render(index + 1, artist), f"{artist.name} anchor")
            anchor = add_anchor(ws, image.sha256, artist=artist.name, title=f"work {index + 1}", category="style")
            add_prompt(ws, anchor, f"a {SUBJECTS[index % len(SUBJECTS)]} by {artist.name}", origin="manual")
        add_variant(ws, BASELINE_VARIANT, base_model=base_model, method=BASELINE_METHOD)
    return ARTISTS[0].name


@contextmanager
def worker_process(ctx: PartContext, root: Path, environment: dict, log: Path):
    """A ``cpdm worker`` on the study's workspace, waiting for jobs before the block starts; stopped after it."""
    with open(log, "w") as sink:
        process = subprocess.Popen(worker_command(root, "--device", ctx.device, "--name", "gpu-suite"),
                                   env=environment, stdout=sink, stderr=subprocess.STDOUT)
    ctx.recorder.started_process(process.pid)
    try:
        started = time.perf_counter()
        wait_until_ready(ctx.budget, process, log)
        ctx.recorder.note(f"worker process ready in {time.perf_counter() - started:.1f} s")
        yield process
    finally:
        stop_process(process, WORKER_STOP_WAIT_S)  # SIGTERM gives a running job back; SIGKILL after the wait
        ctx.recorder.ended_process(process.pid)


def wait_until_ready(budget: Budget, process: subprocess.Popen, log: Path) -> None:
    """Wait until the worker says it waits for jobs; a clear error if it exits or the budget runs out first."""
    while WORKER_READY_LINE not in log.read_text(errors="replace"):
        if process.poll() is not None:
            raise RuntimeError(f"the worker exited ({process.returncode}) before it was ready: {last_line(log)}")
        if budget.left() <= 0:
            raise RuntimeError("the worker was not ready within the part's budget")
        time.sleep(POLL_S)


def enqueue_chain(root: Path, concept: str, options: list[str], environment: dict) -> list[int]:
    """``cpdm pipeline run`` as a user types it; the ids of the four jobs it queued."""
    command = [sys.executable, "-m", "cpdm", "pipeline", "run", "--workspace", str(root), "--concept", concept,
               "--method", METHOD, "--per-prompt", str(PER_PROMPT), *options]
    finished = subprocess.run(command, env=environment, capture_output=True, text=True)
    if finished.returncode != 0:
        raise RuntimeError(f"cpdm pipeline run exited {finished.returncode}: {finished.stderr.strip()[-500:]}")
    ids = [int(line.split("\t")[0]) for line in finished.stdout.splitlines() if "\t" in line]
    if len(ids) != len(STEPS):
        raise RuntimeError(f"cpdm pipeline run printed {len(ids)} job ids, not {len(STEPS)}: {finished.stdout!r}")
    return ids


def wait_for_job(ctx: PartContext, root: Path, job_id: int, worker: subprocess.Popen, log: Path):
    """(the job once finished, None, False) or (None, why not, whether that is a failure rather than the budget)."""
    with open_workspace(root) as ws:
        while True:
            job = get_job(ws, job_id)
            if job.status in FINISHED_STATUSES:
                return job, None, False
            if worker.poll() is not None:
                return None, f"the worker exited ({worker.returncode}) before job {job_id} finished: {last_line(log)}", True
            if ctx.budget.left() <= STOP_MARGIN_S:
                return None, (f"not finished within the part's budget of {ctx.budget.seconds:.0f} s: job {job_id} "
                              f"({job.kind}) was {job.status} ({job.message or 'no message'})"), False
            time.sleep(POLL_S)


def record_chain(ctx: PartContext, root: Path, job_ids: list[int], report, seconds: float,
                 problem: str | None, failure: bool) -> None:
    """Each job's time in the queue and at work, then the whole chain's time if its CSV is there."""
    with open_workspace(root) as ws:
        jobs = [get_job(ws, job_id) for job_id in job_ids]
    for job in jobs:
        waited = job_seconds(job.created_at, job.started_at)
        ctx.record(f"{job.kind} job", job_seconds(job.started_at, job.finished_at), "s",
                   detail=f"{job.status}; waited {waited or 0:.1f} s in the queue" + error_tail(job))
    name = "small study: enqueue to report CSV"
    target = f"< {TARGET_S:g} s"
    csv = Path(report.result["report_path"]) if report is not None and report.status == "done" else None
    if csv is None or not csv.is_file():
        failed = next((job for job in jobs if job.status == "failed"), None)
        reason = problem or (f"{failed.kind} job failed{error_tail(failed)}" if failed else "no report CSV written")
        ctx.record(name, None, detail=reason, target=target, met=False)
        if failed is not None or failure or problem is None:
            raise RuntimeError(f"the chain did not finish: {reason}")
        return
    ctx.record(name, seconds, "s",
               detail=f"4 anchors x 1 prompt x {PER_PROMPT} images, {METHOD}; cpdm pipeline run + one worker",
               target=target, met=seconds < TARGET_S)


def error_tail(job) -> str:
    """The last line of a job's error (its traceback ends with the message), for a figure's detail."""
    lines = (job.error or "").strip().splitlines()
    return f"; {lines[-1][:200]}" if lines else ""


def job_seconds(start: str | None, end: str | None) -> float | None:
    """Seconds between two stored time stamps (None if either is missing)."""
    if not start or not end:
        return None
    return (parse_time(end) - parse_time(start)).total_seconds()


def last_line(log: Path) -> str:
    lines = [line for line in log.read_text(errors="replace").splitlines() if line.strip()]
    return lines[-1][:300] if lines else "(its log is empty)"
