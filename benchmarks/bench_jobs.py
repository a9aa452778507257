"""The job queue: claim latency and throughput, the cost of running generation as a job, rating while a worker is busy.

Part 1, claims: 4 worker processes (each a :class:`cpdm.jobs.worker.Worker`,
as ``cpdm worker`` runs it) share one workspace holding 1,000 queued no-op
jobs and run them until the queue is empty. Each claim is timed (one
``BEGIN IMMEDIATE`` transaction that also settles dead workers' jobs and
checks dependencies); throughput counts jobs claimed, run and recorded per
second of wall time, which is the queue's own overhead since a no-op job
does nothing. Afterwards every job must be done, claimed exactly once.

Part 2, job overhead: the same tiny generation (1 prompt x N images, tiny
random models) made three ways, each in a fresh copy of one workspace so
each really generates: (a) ``run_generation`` called directly, (b) a
``generate`` job enqueued and run by ``Worker.run_once`` in this process
(claim, heartbeat, progress rows, log capture, result), (c) the same job
run by a ``cpdm worker --once`` process (adds interpreter start and
imports, reported apart). One untimed warm-up of (a) and (b) comes first;
the order of the sides alternates from repeat to repeat, so drift of a
shared machine counts against each side alike. Prints the medians and the
ratios to the direct call.

Part 3, rating while a worker is busy: ``bench_rating.py``'s paced phase
(raters who look at each pair 2 to 4 s) twice on copies of one workspace:
once alone, once while a ``cpdm worker`` process on the same workspace runs
a CPU-heavy tiny generation that stores images (and progress, heartbeats)
in the workspace database throughout the measurement. Prints next-pair and
submit p95 of both against the target (under 50 ms), how many images the
job stored meanwhile and the worker's CPU use; the worker is stopped
(SIGTERM: its job goes back to the queue) at the end.

    python benchmarks/bench_jobs.py            # 1,000 jobs; 5 repeats of 4 images; bench_rating's full load
    python benchmarks/bench_jobs.py --quick    # 200 jobs; 4 repeats of 2 images (1 with a process); quick load

The script is organised in parts (functions ``part_*`` returning their
figures); each prints its own lines and adds its headline figures to the
final RESULT line.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import multiprocessing
import os
import queue as queue_module
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.bench_rating import (  # noqa: E402
    FULL_LOAD, QUICK_LOAD, TARGET_P95_MS, Load, add_raters, build_workspace, meets_target, run_phase_on_copy,
)
from cpdm.demo import build as demo  # noqa: E402
from cpdm.diffusion.settings import TINY_BASE  # noqa: E402
from cpdm.jobs.queue import enqueue, get_job, list_jobs  # noqa: E402
from cpdm.jobs.worker import Worker  # noqa: E402
from cpdm.store.rows import add_prompt, add_variant  # noqa: E402
from cpdm.store.workspace import BASELINE_METHOD, init_workspace, open_workspace  # noqa: E402

# Seconds to wait for a worker process: to start and store its first image, and to stop after SIGTERM.
WORKER_START_TIMEOUT = 600.0
WORKER_STOP_TIMEOUT = 120.0
# The variant parts 2 and 3 generate with: the tiny random model, unchanged.
TINY_VARIANT = "tiny-original"


# --- part 1: claims ------------------------------------------------------------------------------------

def build_queue(root: Path, jobs: int) -> None:
    """A fresh workspace at ``root`` holding ``jobs`` queued no-op jobs."""
    with init_workspace(root) as ws:
        for _ in range(jobs):
            enqueue(ws, "noop", {"steps": 1})


def worker_loop(root: str, name: str, start, results) -> None:
    """One worker process: claim and run jobs until none is left; send back claim times and the wall span."""
    with Worker(root, name=name) as worker:
        start.wait()
        claims = []
        began = time.perf_counter()
        while True:
            clock = time.perf_counter()
            job = worker.claim_next()
            claims.append(time.perf_counter() - clock)
            if job is None:
                break
            worker.run(job)
        results.put((name, claims[:-1], began, time.perf_counter()))


def check_each_job_ran_once(root: Path, jobs: int) -> int:
    """How many jobs did not end done after exactly one claim (must be 0)."""
    with open_workspace(root) as ws:
        found = list_jobs(ws)
    return (jobs - len(found)) + sum(1 for job in found if job.status != "done" or job.attempts != 1)


def collect_reports(results, processes, timeout_s: float = 600.0) -> list:
    """One report per worker process; a clear error, not a hang, if a process dies before it reports."""
    reports, deadline = [], time.monotonic() + timeout_s
    while len(reports) < len(processes):
        try:
            reports.append(results.get(timeout=1.0))
        except queue_module.Empty:
            dead = [process for process in processes if process.exitcode not in (None, 0)]
            if dead:
                raise RuntimeError(f"a claim worker process exited with code {dead[0].exitcode} before reporting "
                                   "(its traceback is printed above)") from None
            if time.monotonic() > deadline:
                raise TimeoutError(f"claim workers reported {len(reports)} of {len(processes)} in {timeout_s:.0f} s")
    return reports


def part_claims(root: Path, jobs: int, workers: int) -> dict:
    """Claim latency (p50/p95) and throughput of ``workers`` processes emptying a queue of ``jobs`` no-op jobs."""
    build_queue(root, jobs)
    context = multiprocessing.get_context("spawn")  # no SQLite connection crosses a fork
    start, results = context.Event(), context.Queue()
    processes = [context.Process(target=worker_loop, args=(str(root), f"bench-{n}", start, results))
                 for n in range(workers)]
    for process in processes:
        process.start()
    time.sleep(1.0)  # let every process import cpdm and open the workspace before the clock starts
    start.set()
    reports = collect_reports(results, processes)
    for process in processes:
        process.join()
    claims_ms = np.array([seconds for _, claims, _, _ in reports for seconds in claims]) * 1000
    span = max(end for *_, end in reports) - min(began for _, _, began, _ in reports)
    figures = {
        "claim_p50_ms": float(np.percentile(claims_ms, 50)),
        "claim_p95_ms": float(np.percentile(claims_ms, 95)),
        "jobs_per_s": jobs / span,
        "bad_jobs": check_each_job_ran_once(root, jobs),
    }
    per_worker = ", ".join(f"{name} {len(claims)}" for name, claims, _, _ in sorted(reports))
    print(f"claims: {jobs} no-op jobs, {workers} worker processes, {span:.2f} s")
    print(f"  claim latency p50 {figures['claim_p50_ms']:.2f} ms, p95 {figures['claim_p95_ms']:.2f} ms")
    print(f"  throughput {figures['jobs_per_s']:.1f} jobs/s (claim + run + record); jobs per worker: {per_worker}")
    print(f"  jobs not done exactly once: {figures['bad_jobs']}")
    return figures


# --- shared by parts 2 and 3: tiny generation ----------------------------------------------------------

@dataclass(frozen=True)
class TinyImages:
    """A tiny-model generation: images per prompt, sampling steps and image side (pixels)."""

    per_prompt: int
    steps: int
    size: int

    def job_params(self, prompt_ids: list[int]) -> dict:
        """The ``generate`` job's parameters for these prompts."""
        return {"variant": TINY_VARIANT, "prompt_ids": list(prompt_ids), "per_prompt": self.per_prompt, "steps": self.steps,
                "height": self.size, "width": self.size, "offline_tiny": True}

    def describe(self, prompts: int) -> str:
        return (f"{prompts} prompt{'s' if prompts != 1 else ''} x {self.per_prompt} images, {self.steps} steps, "
                f"{self.size}x{self.size}, tiny random models")


def add_tiny_study(ws) -> list[int]:
    """The demo's anchors with one template prompt each, and the tiny baseline variant; the prompt ids."""
    prompt_ids = [add_prompt(ws, anchor.id, demo.prompt_text(anchor), origin="template")
                  for anchor in demo.add_anchors(ws, seed=0)]
    add_variant(ws, TINY_VARIANT, base_model=TINY_BASE, method=BASELINE_METHOD)
    return prompt_ids


def worker_command(root: Path, *options: str) -> list[str]:
    """``cpdm worker`` on a workspace, as a command line running this checkout's cpdm."""
    return [sys.executable, "-m", "cpdm", "worker", "--workspace", str(root), *options]


def worker_environment() -> dict:
    """This process's environment with this checkout first on the Python path."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return env


def images_made(job) -> int:
    """How many images a finished generate job made; an error if it did not finish."""
    if job.status != "done":
        raise RuntimeError(f"generate job {job.id} ended {job.status}: {job.error or job.message}")
    return job.result["generated"]


def count_generations(ws) -> int:
    return ws.conn.execute("SELECT COUNT(*) FROM generations").fetchone()[0]


# --- part 2: a generation job against the direct call ------------------------------------------------------

def generate_directly(root: Path, prompt_ids: list[int], images: TinyImages) -> tuple[float, int]:
    """(seconds, images) of ``run_generation`` called as ``cpdm generate`` calls it."""
    from cpdm.generation.batch import run_generation
    from cpdm.diffusion.settings import GenerationSettings
    from cpdm.rating.protocol import default_protocol_path, load_protocol_file

    with open_workspace(root) as ws:
        clock = time.perf_counter()
        settings = GenerationSettings(per_prompt=images.per_prompt, steps=images.steps,
                                      height=images.size, width=images.size)
        _, protocol = load_protocol_file(default_protocol_path())  # a job reads the default protocol too
        report = run_generation(ws, variant=TINY_VARIANT, prompt_ids=prompt_ids, settings=settings, offline_tiny=True,
                                check_rate=protocol.attention_checks.rate, progress=False)
        return time.perf_counter() - clock, len(report.generated)


def generate_as_job(root: Path, prompt_ids: list[int], images: TinyImages) -> tuple[float, int]:
    """(seconds, images) of enqueueing a generate job and running it with ``Worker.run_once`` in this process."""
    with Worker(root, name="bench-in-process") as worker:
        clock = time.perf_counter()
        enqueue(worker.queue_ws, "generate", images.job_params(prompt_ids), device="cpu")
        job = worker.run_once()
        seconds = time.perf_counter() - clock
    return seconds, images_made(job)


def generate_in_worker_process(root: Path, prompt_ids: list[int], images: TinyImages) -> tuple[float, int]:
    """(seconds, images) of enqueueing a generate job and running ``cpdm worker --once`` for it."""
    with open_workspace(root) as ws:
        clock = time.perf_counter()
        job_id = enqueue(ws, "generate", images.job_params(prompt_ids), device="cpu")
        finished = subprocess.run(worker_command(root, "--once", "--name", "bench-once"), cwd=ROOT,
                                  env=worker_environment(), capture_output=True, text=True)
        seconds = time.perf_counter() - clock
        if finished.returncode != 0:
            raise RuntimeError(f"cpdm worker --once exited {finished.returncode}: {finished.stderr[-2000:]}")
        return seconds, images_made(get_job(ws, job_id))


# Each side of part 2: its label and how it makes the images.
OVERHEAD_SIDES = {"direct": generate_directly, "job": generate_as_job, "process": generate_in_worker_process}


def part_overhead(scratch: Path, images: TinyImages, repeats: int, process_repeats: int) -> dict:
    """Seconds of the same tiny generation called directly, as an in-process job and in a worker process.

    The worker process side runs in the first ``process_repeats`` repeats
    only (none: not at all); it costs an interpreter start each time.
    """
    base = scratch / "overhead-base"
    with init_workspace(base) as ws:
        prompt_ids = add_tiny_study(ws)[:1]
    sides = [side for side in OVERHEAD_SIDES if process_repeats or side != "process"]
    for side in ("direct", "job"):  # untimed: imports, the first pipeline build, allocator
        OVERHEAD_SIDES[side](copy_of(base, scratch / f"warm-up-{side}"), prompt_ids, images)
    seconds: dict[str, list[float]] = {side: [] for side in sides}
    made: set[int] = set()
    print(f"job overhead: {images.describe(len(prompt_ids))}, {repeats} repeats "
          f"({min(process_repeats, repeats)} with a worker process), order alternating")
    print(f"  {'repeat':<8}{'order':<24}" + "".join(f"{side + ' s':>12}" for side in sides))
    for repeat in range(repeats):
        order = [side for side in sides if side != "process" or repeat < process_repeats]
        order = order if repeat % 2 == 0 else order[::-1]
        for side in order:
            elapsed, count = OVERHEAD_SIDES[side](copy_of(base, scratch / f"{side}-{repeat}"), prompt_ids, images)
            seconds[side].append(elapsed)
            made.add(count)
        print(f"  {repeat + 1:<8}{', '.join(order):<24}"
              + "".join(f"{seconds[side][-1]:12.3f}" if side in order else f"{'':12}" for side in sides))
    if made != {images.per_prompt}:
        raise RuntimeError(f"each side must make {images.per_prompt} images, made {sorted(made)}")
    return overhead_figures(seconds, images.per_prompt)


def overhead_figures(seconds: dict[str, list[float]], images: int) -> dict:
    """Medians of each side, their ratios to the direct call, and the job's extra time; printed too."""
    median = {side: float(np.median(values)) for side, values in seconds.items() if values}
    extra_ms = float(np.median(np.subtract(seconds["job"], seconds["direct"]))) * 1000
    figures = {"overhead_direct_s": median["direct"], "overhead_job_s": median["job"],
               "overhead_ratio": median["job"] / median["direct"], "overhead_extra_ms": extra_ms,
               "overhead_images": images}
    print(f"  median: direct {median['direct']:.3f} s, in-process job {median['job']:.3f} s; "
          f"job/direct {figures['overhead_ratio']:.3f} ({extra_ms:+.0f} ms a job, median of paired differences)")
    if "process" in median:
        figures["overhead_process_s"] = median["process"]
        figures["overhead_process_ratio"] = median["process"] / median["direct"]
        print(f"  cpdm worker --once process: {median['process']:.3f} s, process/direct "
              f"{figures['overhead_process_ratio']:.2f} (interpreter start and imports included)")
    return figures


def copy_of(base: Path, root: Path) -> Path:
    """A fresh copy of the workspace at ``base``."""
    shutil.copytree(base, root)
    return root


# --- part 3: rating while a worker is busy ---------------------------------------------------------------

BUSY_UNTIL_STOPPED = 100_000  # images per prompt of the busy job: far more than any phase lasts


class BusyWorker:
    """A ``cpdm worker`` process kept generating tiny images on a workspace for the span of a ``with`` block.

    :meth:`running` enqueues the job, starts the worker and waits until the
    job has stored its first image; at the end of the block it records how
    many images the job stored during the block, whether the job was still
    running and the worker's CPU use, then stops the worker.
    """

    def __init__(self, images: TinyImages, prompt_ids: list[int], log: Path):
        # Sized by time, not by count: the job asks for more images than any phase can make, so it runs
        # until the block ends and the worker is told to stop (a quiet machine must not finish it early).
        self.images = dataclasses.replace(images, per_prompt=BUSY_UNTIL_STOPPED)
        self.prompt_ids = prompt_ids
        self.log = log
        self.images_during = 0
        self.ran_throughout = False
        self.cpu_cores = float("nan")  # CPU seconds of the worker per second of the block

    @contextlib.contextmanager
    def running(self, root: Path):
        with open_workspace(root) as ws:
            job_id = enqueue(ws, "generate", self.images.job_params(self.prompt_ids), device="cpu",
                             title="benchmark: keep a worker busy")
            with open(self.log, "w") as sink:
                process = subprocess.Popen(worker_command(root, "--name", "bench-busy"), cwd=ROOT,
                                           env=worker_environment(), stdout=sink, stderr=subprocess.STDOUT)
            try:
                before = self._wait_for_first_image(ws, process)
                cpu_before, clock = cpu_seconds(process.pid), time.perf_counter()
                yield self
                self.cpu_cores = (cpu_seconds(process.pid) - cpu_before) / (time.perf_counter() - clock)
                self.images_during = count_generations(ws) - before
                self.ran_throughout = process.poll() is None and get_job(ws, job_id).status == "running"
            finally:
                stop_process(process)

    def _wait_for_first_image(self, ws, process: subprocess.Popen) -> int:
        """Wait until the job has stored an image (its model is loaded, it is in its loop); the count then."""
        start = count_generations(ws)
        deadline = time.monotonic() + WORKER_START_TIMEOUT
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"the busy worker exited ({process.returncode}): {self.log.read_text()[-2000:]}")
            now = count_generations(ws)
            if now > start:
                return now
            time.sleep(0.2)
        raise RuntimeError(f"the busy worker stored no image within {WORKER_START_TIMEOUT:.0f} s")


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds a process has used so far (Linux /proc; NaN elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime (fields 14, 15)


def stop_process(process: subprocess.Popen, timeout: float = WORKER_STOP_TIMEOUT) -> None:
    """SIGTERM (a worker finishes its step and puts its job back), then SIGKILL if it does not exit in time."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def part_rating_busy(scratch: Path, load: Load, think_s: float, busy: TinyImages) -> dict:
    """``bench_rating``'s paced next-pair and submit latency alone, then while a worker process generates."""
    base = scratch / "rating-base"
    campaign = build_workspace(base, load.pairs, load.ratings)
    raters = add_raters(base, load.raters)
    with open_workspace(base) as ws:
        prompt_ids = add_tiny_study(ws)
    worker = BusyWorker(busy, prompt_ids, scratch / "busy-worker.log")
    print(f"rating while a worker is busy: {load.pairs:,} pairs, {load.ratings:,} earlier ratings, "
          f"{load.raters} raters looking {think_s:g} to {2 * think_s:g} s at each pair, {load.seconds:g} s per phase")
    print(f"  busy worker: a cpdm worker process generating tiny {busy.size}x{busy.size} images "
          f"({busy.steps} steps) from {len(prompt_ids)} prompts until the phase ends")
    phases = {
        "idle": run_phase_on_copy(base, scratch / "idle", campaign, raters, load.seconds, think_s),
        "busy": run_phase_on_copy(base, scratch / "busy", campaign, raters, load.seconds, think_s,
                                  during=worker.running),
    }
    print(f"  {'':14}{'next-pair p95 ms':>18}{'submit p95 ms':>15}{'saved':>8}{'lost+dup+over':>15}")
    for name, phase in phases.items():
        print(f"  {'no worker' if name == 'idle' else 'worker busy':14}{phase['next'][1]:18.2f}"
              f"{phase['submit'][1]:15.2f}{phase['saved']:8d}{sum(phase['integrity']):15d}")
    print(f"  the job stored {worker.images_during} images during the busy phase, using "
          f"{worker.cpu_cores:.2f} CPU cores on {os.cpu_count()}; still running at its end: "
          f"{'yes' if worker.ran_throughout else 'NO'}")
    errors = phases["idle"]["errors"] + phases["busy"]["errors"]
    if errors:
        print(f"  rater errors ({len(errors)}): {errors[:3]}")
    met = meets_target(phases["busy"])
    print(f"  target p95 < {TARGET_P95_MS:.0f} ms for next-pair and submit while a worker is busy: "
          f"{'met' if met else 'NOT met'} (without a worker: {'met' if meets_target(phases['idle']) else 'NOT met'})")
    return {
        "idle_next_p95_ms": phases["idle"]["next"][1], "idle_submit_p95_ms": phases["idle"]["submit"][1],
        "busy_next_p95_ms": phases["busy"]["next"][1], "busy_submit_p95_ms": phases["busy"]["submit"][1],
        "busy_target_met": "yes" if met else "no",
        "busy_images": worker.images_during, "busy_worker_cores": worker.cpu_cores,
        "busy_throughout": "yes" if worker.ran_throughout else "no",
        "ratings_saved": phases["idle"]["saved"] + phases["busy"]["saved"],
        "ratings_bad": sum(sum(phase["integrity"]) for phase in phases.values()),
        "rater_errors": len(errors),
    }


# --- all parts -------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Sizes:
    """How big each part runs."""

    jobs: int = 1000  # part 1: no-op jobs
    workers: int = 4  # part 1: worker processes
    overhead: TinyImages = TinyImages(per_prompt=4, steps=5, size=64)  # part 2: the generation timed
    repeats: int = 5  # part 2
    process_repeats: int = 5  # part 2: repeats that also time a cpdm worker --once process
    load: Load = FULL_LOAD  # part 3: bench_rating's load
    think_s: float = 2.0  # part 3: least seconds a rater looks at a pair
    busy: TinyImages = TinyImages(per_prompt=1, steps=4, size=64)  # part 3: the busy worker's images (it runs until stopped)


FULL = Sizes()
QUICK = Sizes(jobs=200, overhead=TinyImages(per_prompt=2, steps=2, size=32), repeats=4, process_repeats=1,
              load=QUICK_LOAD)


def run_parts(scratch: Path, sizes: Sizes) -> dict:
    """Run the three parts in folders under ``scratch``; their figures, merged."""
    results: dict = {}
    results.update(part_claims(scratch / "claims", sizes.jobs, sizes.workers))
    print()
    results.update(part_overhead(scratch, sizes.overhead, sizes.repeats, sizes.process_repeats))
    print()
    results.update(part_rating_busy(scratch, sizes.load, sizes.think_s, sizes.busy))
    return results


def result_line(results: dict) -> str:
    """The final ``RESULT name=value ...`` line."""
    return "RESULT " + " ".join(
        f"{name}={value:.2f}" if isinstance(value, float) else f"{name}={value}" for name, value in results.items())


def whole_number(text: str, least: int = 1) -> int:
    """A whole number of at least ``least``, for argparse."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < least:
        raise argparse.ArgumentTypeError(f"must be at least {least}, got {value}")
    return value


def parse_sizes(argv=None) -> Sizes:
    """The sizes the command line asks for."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help="200 jobs; 4 repeats of a smaller generation, 1 with a worker process; "
                             "bench_rating's quick load")
    parser.add_argument("--jobs", type=whole_number, help="how many no-op jobs (default 1,000; 200 with --quick)")
    parser.add_argument("--workers", type=whole_number, default=4, help="worker processes (default 4)")
    parser.add_argument("--repeats", type=whole_number, help="repeats of part 2 (default 5; 4 with --quick)")
    parser.add_argument("--process-repeats", type=lambda text: whole_number(text, least=0),
                        help="repeats of part 2 that also time a cpdm worker --once process "
                             "(default: every one; 1 with --quick; 0: none)")
    args = parser.parse_args(argv)
    sizes = QUICK if args.quick else FULL
    repeats = args.repeats or sizes.repeats
    process_repeats = sizes.process_repeats if args.process_repeats is None else args.process_repeats
    return replace(sizes, jobs=args.jobs or sizes.jobs, workers=args.workers, repeats=repeats,
                   process_repeats=min(process_repeats, repeats))


def main(argv=None) -> None:
    sizes = parse_sizes(argv)
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="bench-jobs-") as scratch:
        results = run_parts(Path(scratch), sizes)
    load_after = os.getloadavg()[0]
    print(f"\nload average: {load_before:.1f} before, {load_after:.1f} after, on {os.cpu_count()} CPUs")
    results["load_avg"] = max(load_before, load_after)
    print(result_line(results))


if __name__ == "__main__":
    main()
