"""An unlearning run as a Ray task streams it: the node's messages and the driver's handling, without Ray.

A stand-in for the Ray executor runs the task's generator in this process
and can make its worker "die" after a checkpoint; tests/test_ray_executor.py
runs the same through a local Ray instance (slow).
"""

from __future__ import annotations

import contextlib
import pickle
import shutil

import pytest
import torch

from cpdm.errors import CpdmError
from cpdm.progress import JobContext, running
from cpdm.jobs.ray_executor import TaskDied
from cpdm.store.rows import get_variant
from cpdm.diffusion.artifacts import ArtifactError, artifact_digest, load_artifact
from cpdm.unlearning.base import NonFiniteLoss, UnlearnRequest, run_fingerprint
from cpdm.jobs.ray_unlearn import stream_run, unlearn_on_cluster, unlearn_task
from cpdm.unlearning.runner import CHECKPOINT_NAME, prepare_run, unlearn, variant_dir
from tests.conftest import write_png

CONCEPT = "claude monet"
FAST_ESD = {"iterations": 6, "ddim_steps": 1, "lr": 1e-3}
UNLEARN = dict(base="unused", concepts=[CONCEPT], params=FAST_ESD, seed=7, offline_tiny=True, progress=False,
               checkpoint_every=2)


class InProcessCluster:
    """Stands in for a RayExecutor: runs a task's generator here; its worker can die after given checkpoints.

    ``deaths``: the checkpoint steps after which an attempt dies, one per
    attempt that dies. ``sent`` records the checkpoint each attempt was given.
    """

    device = "cpu"

    def __init__(self, max_retries: int = 3, deaths=(), damage_artifact: bool = False):
        self.max_retries = max_retries
        self.deaths = list(deaths)
        self.damage_artifact = damage_artifact
        self.sent: list[bytes | None] = []

    def stream(self, function, spec, images, checkpoint):
        self.sent.append(checkpoint)
        dies_after = self.deaths.pop(0) if self.deaths else None
        with contextlib.closing(function(spec, images, checkpoint)) as messages:
            for kind, payload in messages:
                if kind == "done" and self.damage_artifact:
                    payload["files"] = {name: data + b" " for name, data in payload["files"].items()}
                yield kind, payload
                if kind == "checkpoint" and payload[0] == dies_after:
                    raise TaskDied("the worker process died (simulated)", "WorkerCrashedError")


def _same_tensors(ws, variant, other_ws, other) -> None:
    ours, _ = load_artifact(ws.root / variant.artifact_path, variant.artifact_sha256)
    theirs, _ = load_artifact(other_ws.root / other.artifact_path, other.artifact_sha256)
    assert sorted(ours) == sorted(theirs)
    for name in ours:
        assert torch.equal(ours[name], theirs[name]), name


@pytest.fixture(scope="module")
def local_run(tmp_path_factory):
    """The uninterrupted local run every cluster run must match, in a workspace of its own."""
    from cpdm.store.workspace import init_workspace

    other = init_workspace(tmp_path_factory.mktemp("local") / "ws")
    variant = unlearn(other, "esd-x", "esd-monet", **UNLEARN)
    yield other, variant
    other.close()


def test_the_node_streams_start_progress_checkpoints_and_the_artifact_with_its_sha256(ws):
    spec = prepare_run(ws, "esd-x", "esd-monet", **UNLEARN).spec
    messages = list(stream_run(spec, (), None))
    kinds = [kind for kind, _ in messages]
    assert kinds[0] == "started" and kinds[-1] == "done" and "progress" in kinds
    assert [payload[0] for kind, payload in messages if kind == "checkpoint"] == [2, 4]
    artifact = messages[-1][1]
    assert set(artifact["files"]) == {spec.weights_name, spec.weights_name.replace(".safetensors", ".json")}
    folder = ws.root / "received"
    folder.mkdir()
    for name, data in artifact["files"].items():
        (folder / name).write_bytes(data)
    assert artifact_digest(folder / spec.weights_name) == artifact["sha256"]


def test_a_driver_registers_the_variant_and_stores_the_nodes_artifact(ws, local_run):
    cluster = InProcessCluster()
    variant = unlearn_on_cluster(ws, "esd-x", "esd-monet", **UNLEARN, executor=cluster)
    assert variant.status == "ready" and cluster.sent == [None]
    _same_tensors(ws, variant, *local_run)
    assert not (variant_dir(ws.root, "esd-monet") / CHECKPOINT_NAME).exists()


def test_a_dead_worker_is_replaced_and_the_run_resumes_from_the_drivers_checkpoint(ws, local_run):
    cluster = InProcessCluster(deaths=[2, 4])  # the first attempt dies after step 2, the second after step 4
    with running(JobContext()) as job:
        variant = unlearn_on_cluster(ws, "esd-x", "esd-monet", **UNLEARN, executor=cluster)
    assert variant.status == "ready"
    assert [line for line in job.lines if "died" in line] == [
        "the unlearning task's worker died (WorkerCrashedError); attempt 2 of 4 runs it again from its last "
        "stored checkpoint",
        "the unlearning task's worker died (WorkerCrashedError); attempt 3 of 4 runs it again from its last "
        "stored checkpoint"]
    assert job.fraction == 1.0
    first, second, third = cluster.sent
    assert first is None
    assert torch.load(_as_file(ws, second), weights_only=True)["step"] == 2
    assert torch.load(_as_file(ws, third), weights_only=True)["step"] == 4
    _same_tensors(ws, variant, *local_run)


def _as_file(ws, data: bytes):
    path = ws.root / "sent-checkpoint.pt"
    path.write_bytes(data)
    return path


def test_a_worker_that_dies_at_every_attempt_fails_the_variant_and_keeps_the_checkpoint(ws):
    cluster = InProcessCluster(max_retries=1, deaths=[2, 4])  # the second attempt resumes at step 2
    with pytest.raises(CpdmError, match=r"died in each of its 2 attempt\(s\)"):
        unlearn_on_cluster(ws, "esd-x", "esd-monet", **UNLEARN, executor=cluster)
    variant = get_variant(ws, "esd-monet")
    assert variant.status == "failed" and variant.message == (
        "CpdmError: the unlearning task's worker died in each of its 2 attempt(s) (WorkerCrashedError; see the "
        "Ray workers' logs) (--resume continues from the last checkpoint)")
    checkpoint = variant_dir(ws.root, "esd-monet") / CHECKPOINT_NAME
    assert torch.load(checkpoint, weights_only=True)["step"] == 4


def test_an_artifact_damaged_on_the_way_is_refused_and_not_kept(ws):
    with pytest.raises(ArtifactError, match="differ from the sha256 the Ray worker computed"):
        unlearn_on_cluster(ws, "esd-x", "esd-monet", **UNLEARN, executor=InProcessCluster(damage_artifact=True))
    variant = get_variant(ws, "esd-monet")
    assert variant.status == "failed" and variant.artifact_path is None
    assert "differ from the sha256" in variant.message
    # Neither file is kept; the last checkpoint is, for a resumed run.
    assert sorted(path.name for path in variant_dir(ws.root, "esd-monet").iterdir()) == [CHECKPOINT_NAME, "owner.json"]


def test_a_concept_that_tokenises_to_nothing_is_refused_on_the_node_before_anything_is_registered(ws):
    with pytest.raises(CpdmError, match="tokenises to nothing"):
        unlearn_on_cluster(ws, "esd-x", "esd-blank", **{**UNLEARN, "concepts": ["   "]},
                           executor=InProcessCluster())
    with pytest.raises(CpdmError, match="unknown variant"):
        get_variant(ws, "esd-blank")


def test_unlearn_task_is_the_nodes_stream(ws):
    """The Ray task body is stream_run behind a release of the models a worker keeps."""
    spec = prepare_run(ws, "sld", "sld-monet", base="unused", concepts=[CONCEPT], offline_tiny=True).spec
    assert list(unlearn_task(spec, (), None)) == [("started", None), ("done", None)]


def test_a_checkpoint_resumes_wherever_the_images_lie_and_a_nan_loss_keeps_its_step_across_processes(tmp_path):
    here, there = tmp_path / "here", tmp_path / "there"
    image = write_png(here / "a.png", seed=1)
    shutil.copytree(here, there)
    fingerprints = {run_fingerprint("ablation", UnlearnRequest(("c",), images=(folder / "a.png",)), {})
                    for folder in (here, there)}
    assert len(fingerprints) == 1  # by name and content, not by path
    image.write_bytes(image.read_bytes() + b"\0")
    assert run_fingerprint("ablation", UnlearnRequest(("c",), images=(image,)), {}) not in fingerprints
    error = pickle.loads(pickle.dumps(NonFiniteLoss(3, float("nan"))))
    assert isinstance(error, NonFiniteLoss) and error.step == 3 and "at step 3" in str(error)
