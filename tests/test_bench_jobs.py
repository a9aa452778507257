"""benchmarks/bench_jobs.py at its smallest: each part runs for real and reports its figures; the counts add up."""

from __future__ import annotations

import pytest

from benchmarks import bench_jobs
from benchmarks.bench_rating import Load
from cpdm.jobs.queue import list_jobs
from cpdm.store.workspace import open_workspace

# The smallest run that still exercises every part: two claim workers, one process-timed repeat of one image,
# and a short rating phase beside a worker whose job outlasts it.
SMALLEST = bench_jobs.Sizes(
    jobs=12, workers=2,
    overhead=bench_jobs.TinyImages(per_prompt=1, steps=1, size=32), repeats=2, process_repeats=1,
    load=Load(pairs=60, ratings=60, raters=4, seconds=3.0), think_s=0.2,
    busy=bench_jobs.TinyImages(per_prompt=1, steps=1, size=32),  # per_prompt unused: it runs until stopped
)

FIELDS = {
    "claim_p50_ms", "claim_p95_ms", "jobs_per_s", "bad_jobs",
    "overhead_direct_s", "overhead_job_s", "overhead_ratio", "overhead_extra_ms", "overhead_images",
    "overhead_process_s", "overhead_process_ratio",
    "idle_next_p95_ms", "idle_submit_p95_ms", "busy_next_p95_ms", "busy_submit_p95_ms", "busy_target_met",
    "busy_images", "busy_worker_cores", "busy_throughout", "ratings_saved", "ratings_bad", "rater_errors",
}


def result_fields(line: str) -> dict[str, str]:
    assert line.startswith("RESULT ")
    return dict(field.split("=", 1) for field in line.removeprefix("RESULT ").split())


@pytest.mark.slow
def test_every_part_reports_its_figures_and_the_counts_add_up(tmp_path, capsys, plain_main):
    fields = result_fields(bench_jobs.result_line(bench_jobs.run_parts(tmp_path, SMALLEST)))
    printed = capsys.readouterr().out

    assert FIELDS <= set(fields)
    assert fields["bad_jobs"] == "0"  # all 12 no-op jobs done, each claimed once
    assert "jobs per worker: bench-0" in printed and "bench-1" in printed
    assert fields["overhead_images"] == "1"  # each side made its image (or the part raises)
    assert int(fields["ratings_saved"]) > 0
    assert (fields["ratings_bad"], fields["rater_errors"]) == ("0", "0")
    # The worker generated through the whole busy phase, storing images, and was stopped afterwards:
    # its job went back to the queue instead of running on.
    assert fields["busy_throughout"] == "yes"
    assert int(fields["busy_images"]) >= 1
    assert fields["busy_target_met"] in ("yes", "no")
    assert "target p95 < 50 ms for next-pair and submit while a worker is busy" in printed
    with open_workspace(tmp_path / "busy") as ws:
        [busy_job] = list_jobs(ws)
    assert busy_job.kind == "generate" and busy_job.status == "queued"
    assert busy_job.result is None


def test_the_command_line_sizes_each_part():
    quick = bench_jobs.parse_sizes(["--quick"])
    assert (quick.jobs, quick.workers, quick.process_repeats) == (200, 4, 1)
    full = bench_jobs.parse_sizes([])
    assert (full.jobs, full.workers, full.repeats, full.process_repeats) == (1000, 4, 5, 5)
    assert bench_jobs.parse_sizes(["--repeats", "2"]).process_repeats == 2  # never more than the repeats
    assert bench_jobs.parse_sizes(["--process-repeats", "0"]).process_repeats == 0


@pytest.mark.parametrize("argv", [["--jobs", "0"], ["--workers", "-1"], ["--repeats", "two"],
                                  ["--process-repeats", "-1"]])
def test_a_size_that_is_not_a_positive_count_is_refused(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        bench_jobs.parse_sizes(argv)
    assert exit_info.value.code == 2
    assert argv[0] in capsys.readouterr().err
