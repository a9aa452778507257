"""The job queue under load: claim latency and throughput of several worker processes.

Claims: 4 worker processes (each a :class:`cpdm.jobs.worker.Worker`, as
``cpdm worker`` runs it) share one workspace holding 1,000 queued no-op
jobs and run them until the queue is empty. Each claim is timed (one
``BEGIN IMMEDIATE`` transaction that also settles dead workers' jobs and
checks dependencies); throughput counts jobs claimed, run and recorded per
second of wall time, which is the queue's own overhead since a no-op job
does nothing. Afterwards every job must be done, claimed exactly once.

    python benchmarks/bench_jobs.py            # 1,000 jobs, 4 workers
    python benchmarks/bench_jobs.py --quick    # 200 jobs, 4 workers

The script is organised in parts (functions ``part_*`` returning their
figures); each prints its own lines and adds its headline figures to the
final RESULT line.
"""

from __future__ import annotations

import argparse
import multiprocessing
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cpdm.jobs.queue import enqueue, list_jobs  # noqa: E402
from cpdm.jobs.worker import Worker  # noqa: E402
from cpdm.store.workspace import init_workspace, open_workspace  # noqa: E402


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
    reports = [results.get(timeout=600) for _ in processes]
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="200 jobs instead of 1,000")
    parser.add_argument("--jobs", type=int, help="how many no-op jobs (default 1,000; 200 with --quick)")
    parser.add_argument("--workers", type=int, default=4, help="worker processes (default 4)")
    args = parser.parse_args()
    jobs = args.jobs or (200 if args.quick else 1000)
    results: dict = {}
    with tempfile.TemporaryDirectory(prefix="bench-jobs-") as scratch:
        results.update(part_claims(Path(scratch) / "claims", jobs, args.workers))
    print("RESULT " + " ".join(
        f"{name}={value:.2f}" if isinstance(value, float) else f"{name}={value}" for name, value in results.items()))


if __name__ == "__main__":
    main()
