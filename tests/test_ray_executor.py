"""Generation and scoring through a local Ray instance: the same rows as in-process, retries, clear errors."""

from __future__ import annotations

import os
import shutil
import socket
import sys
from pathlib import Path

import pytest
import torch

from cpdm.curation.prompts import add_manual_prompt
from cpdm.errors import CpdmError
from cpdm.generation.batch import GenerationSettings, run_generation
from cpdm.jobs.ray_executor import RayExecutor
from cpdm.scoring.engine import score_pairs
from cpdm.store.workspace import init_workspace
from tests import ray_support
from tests.curation_support import add_anchors
from tests.needs import import_ray

REPO = Path(__file__).resolve().parents[1]
SMALL = GenerationSettings(per_prompt=3, steps=2, height=32, width=32)
TINY_SCORING = dict(semantic="ViT-L-14/openai", style="vgg19", offline_tiny=True, progress=False)


@pytest.fixture(scope="module")
def local_ray(tmp_path_factory):
    """A Ray instance on this machine (2 CPUs, no dashboard, listening on 127.0.0.1 only), its workers able
    to crash on request."""
    ray = import_ray()
    from ray._private import ray_constants

    crash_dir = tmp_path_factory.mktemp("ray-crash")
    with pytest.MonkeyPatch.context() as patch:
        # Ray's processes inherit this environment: its workers import cpdm and tests from this checkout.
        patch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
        patch.setenv(ray_support.CRASH_DIR_VARIABLE, str(crash_dir))
        # A single-machine Ray takes 127.0.0.1 as its address, and its servers then listen there only
        # (Ray reads the variable when imported, hence the constant too).
        patch.setenv("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
        patch.setattr(ray_constants, "ENABLE_RAY_CLUSTER", False)
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
                 runtime_env={"worker_process_setup_hook": "tests.ray_support.install_crash_switch"})
        try:
            yield crash_dir
        finally:
            ray.shutdown()


def prompted_workspace(root: Path):
    """A workspace with two anchors (the same images every time) and one prompt each."""
    ws = init_workspace(root / "ws")
    for anchor in add_anchors(ws, root / "anchors", count=2):
        add_manual_prompt(ws, anchor, f"a painting number {anchor}")
    return ws


def generation_rows(ws) -> list[tuple]:
    return ws.conn.execute(
        "SELECT id, prompt, variant, seed, steps, guidance, image, params FROM generations ORDER BY id").fetchall()


def pair_rows(ws) -> list[tuple]:
    return ws.conn.execute("SELECT id, anchor, generation, image, kind FROM pairs ORDER BY id").fetchall()


def score_rows(ws) -> dict:
    rows = ws.conn.execute("SELECT pair, semantic, style, m_sem, m_style FROM scores").fetchall()
    return {(pair, sem, style): (m_sem, m_style) for pair, sem, style, m_sem, m_style in rows}


def reference_rows(ws) -> dict:
    rows = ws.conn.execute("SELECT anchor, image, semantic, style, m_sem, m_style FROM reference_distances").fetchall()
    return {row[:4]: row[4:] for row in rows}


def assert_close(found: dict, expected: dict) -> None:
    assert found.keys() == expected.keys()
    for key, values in expected.items():
        assert found[key] == pytest.approx(values, rel=1e-6, abs=1e-6), key


@pytest.fixture
def pair_of_workspaces(tmp_path):
    """The same prompted workspace twice: one for the in-process run, one for the Ray run."""
    local, remote = prompted_workspace(tmp_path / "local"), prompted_workspace(tmp_path / "ray")
    yield local, remote
    local.close()
    remote.close()


@pytest.mark.slow
def test_generation_and_scoring_through_ray_give_the_same_rows_as_in_process(local_ray, pair_of_workspaces):
    local, remote = pair_of_workspaces
    executor = RayExecutor(num_gpus=0)

    made_here = run_generation(local, settings=SMALL, offline_tiny=True, progress=False, check_rate=0.2)
    made_there = run_generation(remote, settings=SMALL, offline_tiny=True, progress=False, check_rate=0.2,
                                executor=executor)
    assert len(made_there.generated) == len(made_here.generated) == 6
    assert (made_there.pairs, made_there.check_pairs) == (made_here.pairs, made_here.check_pairs)
    assert generation_rows(remote) == generation_rows(local)  # same seeds, settings and image sha256s
    assert pair_rows(remote) == pair_rows(local)
    for sha in {row[6] for row in generation_rows(remote)}:
        assert remote.image_path(sha).read_bytes() == local.image_path(sha).read_bytes()

    again = run_generation(remote, settings=SMALL, offline_tiny=True, progress=False, executor=executor)
    assert (len(again.generated), again.skipped) == (0, 6)

    scored_here = score_pairs(local, **TINY_SCORING)
    scored_there = score_pairs(remote, **TINY_SCORING, executor=executor)
    assert scored_there.pairs_scored == scored_here.pairs_scored == len(pair_rows(local))
    assert scored_there.images_computed == scored_here.images_computed  # anchors' bytes went to the workers too
    assert_close(score_rows(remote), score_rows(local))
    assert_close(reference_rows(remote), reference_rows(local))
    assert score_pairs(remote, **TINY_SCORING, executor=executor).pairs_scored == 0


@pytest.mark.slow
def test_an_unlearned_variant_generates_the_same_images_through_ray(local_ray, pair_of_workspaces):
    from cpdm.unlearning.runner import unlearn

    local, remote = pair_of_workspaces
    variant = unlearn(local, "uce", "uce-monet", base="unused", concepts=["claude monet"], offline_tiny=True,
                      progress=False)
    copy_variant(variant, local, remote)
    run_generation(local, variant="uce-monet", settings=SMALL, offline_tiny=True, progress=False)
    # The workers get the artifact's bytes, not its path in the workspace.
    run_generation(remote, variant="uce-monet", settings=SMALL, offline_tiny=True, progress=False,
                   executor=RayExecutor(num_gpus=0))
    assert generation_rows(remote) == generation_rows(local)
    baseline = tiny_sd_images(remote)
    assert not {row[6] for row in generation_rows(remote)} & baseline  # the artifact did change the images


def copy_variant(variant, source, target) -> None:
    """Register ``variant`` in ``target`` with a copy of its artifact files from ``source``."""
    from cpdm.store.rows import add_variant
    from cpdm.diffusion.artifacts import json_path_of

    for path in (Path(variant.artifact_path), json_path_of(variant.artifact_path)):
        (target.root / path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source.root / path, target.root / path)
    add_variant(target, variant.name, base_model=variant.base_model, method=variant.method,
                concepts=variant.concepts, params=variant.params, artifact_path=variant.artifact_path,
                artifact_sha256=variant.artifact_sha256)


def tiny_sd_images(ws) -> set[str]:
    """The sha256s the unedited tiny model makes for the workspace's prompts."""
    from cpdm.diffusion.pipeline import ImageRequest, encoded_images
    from cpdm.diffusion.tiny import tiny_sd_pipeline

    prompts = ws.conn.execute("SELECT text FROM prompts ORDER BY id").fetchall()
    request = ImageRequest(tuple(text for (text,) in prompts for _ in range(3)),
                           tuple(SMALL.seed + k for _ in prompts for k in range(3)),
                           SMALL.steps, SMALL.guidance, SMALL.height, SMALL.width)
    return {image.sha256 for image in encoded_images(tiny_sd_pipeline(), request)}


@pytest.mark.slow
def test_a_task_whose_worker_dies_is_run_again_and_stored_once(local_ray, tmp_path):
    crash_dir = local_ray
    ws = prompted_workspace(tmp_path)
    (crash_dir / ray_support.ARMED).touch()
    try:
        report = run_generation(ws, settings=SMALL, offline_tiny=True, progress=False, batch_size=3,
                                executor=RayExecutor(num_gpus=0, max_retries=2))
    finally:
        (crash_dir / ray_support.ARMED).unlink()
    assert (crash_dir / ray_support.CRASHED).exists()  # one worker did die mid-task
    rows = generation_rows(ws)
    assert len(report.generated) == len(rows) == 6
    assert len({(row[1], row[3]) for row in rows}) == 6  # each (prompt, seed) once
    assert len({row[6] for row in rows}) == 6
    normal = [row for row in pair_rows(ws) if row[4] == "normal"]
    assert sorted(row[2] for row in normal) == [row[0] for row in rows]
    ws.close()


@pytest.mark.slow
def test_a_task_that_keeps_dying_is_a_clear_error_and_keeps_what_was_stored(local_ray, tmp_path):
    crash_dir = local_ray
    (crash_dir / ray_support.CRASHED).unlink(missing_ok=True)
    ws = prompted_workspace(tmp_path)
    (crash_dir / ray_support.ARMED).touch()
    try:
        with pytest.raises(CpdmError, match=r"worker process died in each of its 1 attempt"):
            run_generation(ws, settings=SMALL, offline_tiny=True, progress=False, batch_size=3,
                           executor=RayExecutor(num_gpus=0, max_retries=0))
    finally:
        (crash_dir / ray_support.ARMED).unlink()
        (crash_dir / ray_support.CRASHED).unlink(missing_ok=True)
    rows = generation_rows(ws)
    assert len(rows) in (0, 3)  # the batch that came back whole, if the other one died
    ws.close()


@pytest.mark.slow
def test_a_worker_out_of_gpu_memory_is_a_clear_error_with_nothing_stored(local_ray, tmp_path):
    switch_dir = local_ray
    ws = prompted_workspace(tmp_path)
    (switch_dir / ray_support.OUT_OF_MEMORY).touch()
    try:
        with pytest.raises(CpdmError) as caught:
            run_generation(ws, settings=SMALL, offline_tiny=True, progress=False, batch_size=3,
                           executor=RayExecutor(num_gpus=0, max_retries=0))
    finally:
        (switch_dir / ray_support.OUT_OF_MEMORY).unlink()
    assert str(caught.value) == "a Ray worker ran out of GPU memory; pass a smaller --batch-size (or --height/--width)"
    assert generation_rows(ws) == []
    ws.close()


@pytest.mark.slow
def test_asking_for_gpus_on_a_cluster_without_any_is_a_clear_error(local_ray, tmp_path):
    ws = prompted_workspace(tmp_path)
    with pytest.raises(CpdmError, match="has no GPUs"):
        run_generation(ws, settings=SMALL, offline_tiny=True, progress=False, executor=RayExecutor(num_gpus=1))
    assert generation_rows(ws) == [] and ws.conn.execute("SELECT COUNT(*) FROM variants").fetchone()[0] == 0
    ws.close()


def test_without_ray_installed_the_executor_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now raises ImportError
    with pytest.raises(CpdmError, match=r"pip install 'cpdm\[ray\]'"):
        RayExecutor(address="ray://head:10001")


def _closed_port() -> int:
    """A port on 127.0.0.1 that nothing listens on."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.parametrize("form", ["ray://127.0.0.1:{port}", "127.0.0.1:{port}"])
def test_an_unreachable_address_is_a_clear_error_at_once(monkeypatch, form):
    import_ray()
    address = form.format(port=_closed_port())
    executor = RayExecutor(address=address)
    monkeypatch.setattr(executor._ray, "is_initialized", lambda: False)  # as in a fresh worker process
    with pytest.raises(CpdmError, match=f"cannot reach the Ray cluster at {address}"):
        executor.connect()


@pytest.mark.parametrize("options, message", [
    ({"num_gpus": -1}, "num_gpus must be ≥ 0"),
    ({"max_retries": -1}, "max_retries must be ≥ 0"),
    ({"max_in_flight": 0}, "max_in_flight must be at least 1"),
])
def test_bad_executor_options_are_refused(options, message):
    import_ray()
    with pytest.raises(CpdmError, match=message):
        RayExecutor(**options)


def test_a_pipeline_and_an_executor_together_are_refused_before_anything_is_written(tmp_path):
    import_ray()
    ws = prompted_workspace(tmp_path)
    with pytest.raises(CpdmError, match="a pipeline or an executor, not both"):
        run_generation(ws, settings=SMALL, offline_tiny=True, progress=False, pipeline=object(),
                       executor=RayExecutor(num_gpus=0))
    assert generation_rows(ws) == [] and ws.conn.execute("SELECT COUNT(*) FROM variants").fetchone()[0] == 0
    ws.close()


def test_a_variant_whose_artifact_file_is_gone_is_refused_before_anything_is_sent(tmp_path):
    import_ray()
    from cpdm.store.rows import add_variant

    ws = prompted_workspace(tmp_path)
    add_variant(ws, "esd-gone", base_model="offline-tiny", method="esd-x", concepts=["claude monet"],
                artifact_path="variants/esd-gone/unet.safetensors", artifact_sha256="0" * 64)
    with pytest.raises(CpdmError, match=r"unet.safetensors: the variant 'esd-gone''s artifact file is missing"):
        run_generation(ws, variant="esd-gone", settings=SMALL, offline_tiny=True, progress=False,
                       executor=RayExecutor(num_gpus=0))
    assert generation_rows(ws) == []
    ws.close()


@pytest.mark.slow
def test_a_worker_with_a_ray_executor_runs_generate_and_score_jobs_through_ray(local_ray, pair_of_workspaces):
    """``cpdm worker --executor ray``: the queued jobs' batches go to Ray, and the rows are the in-process ones."""
    from cpdm.progress import JobContext
    from cpdm.jobs.queue import enqueue, get_job
    from cpdm.jobs.registry import get_kind
    from cpdm.jobs.worker import Worker

    local, remote = pair_of_workspaces
    job_params = dict(per_prompt=SMALL.per_prompt, steps=SMALL.steps, height=SMALL.height, width=SMALL.width,
                      offline_tiny=True)
    score_params = {"semantic": "ViT-L-14/openai", "style": "vgg19", "offline_tiny": True}
    for kind, params in (("generate", job_params), ("score", score_params)):  # the same jobs, in process
        job_kind = get_kind(kind)
        job_kind.run(local, job_kind.check_params(params), JobContext())
    generate = enqueue(remote, "generate", job_params, device="cpu")
    score = enqueue(remote, "score", score_params, after=[generate], device="cpu")
    executor = RayExecutor(num_gpus=0)
    with Worker(remote.root, name="ray-driver", executor=executor) as driver:
        assert [driver.run_once().id, driver.run_once().id] == [generate, score]
    assert get_job(remote, generate).status == get_job(remote, score).status == "done"
    assert get_job(remote, generate).result["generated"] == 6
    assert executor.tasks_done > 0  # the batches went through Ray, not the worker's own process
    assert generation_rows(remote) == generation_rows(local)
    assert pair_rows(remote) == pair_rows(local)
    assert_close(score_rows(remote), score_rows(local))


# --- unlearning on the cluster ---------------------------------------------------------------------------

CONCEPT = "claude monet"
# ESD-x on the tiny pipeline, checkpoints after steps 2 and 4.
FAST_ESD = {"iterations": 6, "ddim_steps": 1, "lr": 1e-3}
UNLEARN = dict(base="unused", concepts=[CONCEPT], params=FAST_ESD, seed=7, offline_tiny=True, progress=False,
               checkpoint_every=2)


def assert_same_weights(ws, variant, other_ws, other) -> None:
    """Two variants' artifacts hold the same tensors, bit for bit, and their JSONs record the same hashes.

    The files' bytes may differ: safetensors writes its header's metadata in
    no fixed order, and the JSON records wall time and peak memory.
    """
    from safetensors.torch import load_file

    from cpdm.diffusion.artifacts import load_artifact

    ours, ours_meta = load_artifact(ws.root / variant.artifact_path, variant.artifact_sha256)
    theirs, theirs_meta = load_artifact(other_ws.root / other.artifact_path, other.artifact_sha256)
    assert sorted(ours) == sorted(theirs) and ours
    for name in ours:
        assert ours[name].dtype == theirs[name].dtype and torch.equal(ours[name], theirs[name]), name
    assert ours_meta["parameters"] == theirs_meta["parameters"]  # name, shape, dtype and sha256 of each
    assert load_file(str(ws.root / variant.artifact_path)).keys() == ours.keys()


@pytest.mark.slow
def test_an_unlearn_job_runs_on_the_cluster_and_the_driver_registers_the_same_weights(local_ray, pair_of_workspaces):
    """``cpdm worker --executor ray`` takes unlearn jobs: the run on a Ray worker, the variant in the workspace."""
    from cpdm.jobs.queue import enqueue, get_job, read_log
    from cpdm.jobs.worker import Worker
    from cpdm.store.rows import get_variant
    from cpdm.diffusion.artifacts import artifact_digest, load_artifact
    from cpdm.unlearning.runner import CHECKPOINT_NAME, unlearn, variant_dir

    local, remote = pair_of_workspaces
    here = unlearn(local, "esd-x", "esd-monet", **UNLEARN)
    job = enqueue(remote, "unlearn", {"method": "esd-x", "variant_name": "esd-monet", "concepts": [CONCEPT],
                                      "hyperparameters": FAST_ESD, "seed": 7, "checkpoint_every": 2,
                                      "offline_tiny": True}, device="cpu")
    executor = RayExecutor(num_gpus=0)
    with Worker(remote.root, name="ray-driver", executor=executor) as driver:
        assert driver.run_once().id == job
    done = get_job(remote, job)
    assert done.status == "done", done.error
    there = get_variant(remote, "esd-monet")
    assert there.status == "ready" and there.job == job and done.result["variant_id"] == there.id
    assert executor.tasks_done > 0  # the run's messages came from the cluster
    # The same weights as the local run, bit for bit, under the sha256 the driver registered.
    assert_same_weights(remote, there, local, here)
    assert there.artifact_sha256 == artifact_digest(remote.root / there.artifact_path)
    _, meta = load_artifact(remote.root / there.artifact_path, there.artifact_sha256)
    assert meta["base_model"] == "offline-tiny" and meta["device"] == "cpu" and meta["steps"] == 6
    # Progress and checkpoints came back while it ran; the finished run keeps no checkpoint.
    log = read_log(remote, job)
    assert "checkpoint after step 2 stored" in log and "checkpoint after step 4 stored" in log
    assert done.progress == 1.0
    assert not (variant_dir(remote.root, "esd-monet") / CHECKPOINT_NAME).exists()


@pytest.mark.slow
def test_a_killed_unlearning_task_resumes_from_the_drivers_last_checkpoint(local_ray, pair_of_workspaces):
    import json

    from cpdm.store.rows import get_variant
    from cpdm.jobs.ray_unlearn import unlearn_on_cluster
    from cpdm.unlearning.runner import CHECKPOINT_NAME, unlearn, variant_dir

    crash_dir = local_ray
    local, remote = pair_of_workspaces
    here = unlearn(local, "esd-x", "esd-monet", **UNLEARN)
    stored = variant_dir(remote.root, "esd-monet") / CHECKPOINT_NAME
    (crash_dir / ray_support.UNLEARN_ARMED).write_text(json.dumps({"wait_for": str(stored), "after_step": 2}))
    try:
        there = unlearn_on_cluster(remote, "esd-x", "esd-monet", **UNLEARN,
                                   executor=RayExecutor(num_gpus=0, max_retries=1))
    finally:
        (crash_dir / ray_support.UNLEARN_ARMED).unlink()
    assert (crash_dir / ray_support.UNLEARN_CRASHED).exists()  # the first task's worker did die
    saves = [line.split() for line in (crash_dir / ray_support.UNLEARN_SAVES).read_text().splitlines()]
    # The first worker saved step 2 and died before step 4; the second began at step 2 (it never saved it).
    assert [step for _, step in saves] == ["2", "4"] and saves[0][0] != saves[1][0]
    assert there.status == "ready" and get_variant(remote, "esd-monet").id == there.id
    assert_same_weights(remote, there, local, here)
    assert not stored.exists()


@pytest.mark.slow
def test_a_cancelled_unlearn_job_on_the_cluster_keeps_its_checkpoint_and_the_retried_job_resumes(
        local_ray, pair_of_workspaces):
    from cpdm.progress import JobCancelled, JobContext
    from cpdm.jobs.queue import enqueue
    from cpdm.jobs.registry import get_kind
    from cpdm.store.rows import get_variant
    from cpdm.unlearning.runner import CHECKPOINT_NAME, unlearn, variant_dir

    class CancelAtFirstCheckpoint(JobContext):
        """A job whose user cancels it once the driver has stored a checkpoint."""

        def log(self, line: str) -> None:
            super().log(line)
            if line.startswith("checkpoint after step"):
                self.cancel_requested = True

    local, remote = pair_of_workspaces
    here = unlearn(local, "esd-x", "esd-monet", **UNLEARN)
    kind = get_kind("unlearn")
    params = kind.check_params({"method": "esd-x", "variant_name": "esd-monet", "concepts": [CONCEPT],
                                "hyperparameters": FAST_ESD, "seed": 7, "checkpoint_every": 2, "offline_tiny": True})
    job = enqueue(remote, "unlearn", params, device="cpu")
    cancelled = CancelAtFirstCheckpoint(job_id=job, device="cpu")
    cancelled.executor = RayExecutor(num_gpus=0)
    with pytest.raises(JobCancelled):
        kind.run(remote, params, cancelled)
    variant = get_variant(remote, "esd-monet")
    assert variant.status == "failed" and variant.message == "cancelled (--resume continues from the last checkpoint)"
    checkpoint = variant_dir(remote.root, "esd-monet") / CHECKPOINT_NAME
    assert checkpoint.is_file() and "checkpoint after step 2 stored" in cancelled.lines[-1]

    retried = JobContext(job_id=job, device="cpu")
    retried.executor = RayExecutor(num_gpus=0)
    result = kind.run(remote, params, retried)
    assert result["resumed"] and result["status"] == "ready" and result["variant_id"] == variant.id
    assert any("resuming variant esd-monet" in line for line in retried.lines)
    assert_same_weights(remote, get_variant(remote, "esd-monet"), local, here)
    assert not checkpoint.exists()
