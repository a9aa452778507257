"""Unlearning on a Ray cluster: the run on a GPU node, the variant on the driver.

A worker started with ``cpdm worker --executor ray`` sends an unlearn job's
run to the cluster as one Ray task (:func:`unlearn_task`),
so a study of many concepts × methods is bound by the cluster's GPUs, not
the driver's. The task takes the run as plain data
(:class:`~cpdm.unlearning.runner.RunSpec`: method, base model id,
concepts, preserve set, hyperparameters, seed), the bytes of the
concept's images, and the checkpoint to resume from, if any. The node
loads the base model from its own caches, runs the method in a scratch
folder, and streams messages back as they happen (:func:`stream_run`):

* ``("started", None)``: the base model is loaded and the concepts checked.
  The driver registers the variant (status ``training``) and claims its
  folder: only the driver writes to the workspace.
* ``("progress", (fraction, message))``: the method's progress bar (at most
  every :data:`PROGRESS_EVERY_SECONDS`); it becomes the job's progress.
* ``("checkpoint", (step, bytes))``: each checkpoint the method writes. The
  driver stores it where a local run keeps its own (the variant's
  ``checkpoint.pt``), so ``--resume`` and a retried job continue from it.
* ``("done", artifact)``: the artifact's two files as bytes with the sha256
  the variant registers (None for an inference-time method such as SLD).
  The driver writes them into the variant's folder, checks the sha256, and
  marks the variant ready.

If the task's worker process or its node dies, the driver submits the run
again with the last checkpoint it stored, up to the executor's
``max_retries`` times; Ray places it on any node with a free GPU (another
one when the first is gone), and the run resumes to exactly the weights an
uninterrupted run reaches (each step draws its noise from (seed, step)). A
cancelled job cancels the task; the stored checkpoint stays.
"""

from __future__ import annotations

import os
import queue
import tempfile
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Callable, Iterable, Iterator

from cpdm.errors import CpdmError
from cpdm.progress import JobContext, current_job, running
from cpdm.unlearning import get_method
from cpdm.diffusion.artifacts import ArtifactError, artifact_digest, json_path_of, save_artifact
from cpdm.unlearning.runner import (
    CACHE_NAME,
    CHECKPOINT_NAME,
    PreparedRun,
    RunSpec,
    load_checked,
    mark_ready,
    prepare_run,
    record_failure,
    register_run,
    run_method,
    training_options,
)

# The node reports the method's progress at most this often (a bar may move thousands of times a second).
PROGRESS_EVERY_SECONDS = 0.5


# --------------------------------------------------------------------------
# The node's side: the Ray task's body
# --------------------------------------------------------------------------


class StreamedJob(JobContext):
    """The job as a run on a Ray node sees it: progress goes into the stream; the driver may ask it to stop."""

    def __init__(self, emit: Callable[[tuple], None], stop: threading.Event):
        super().__init__()
        self._emit = emit
        self._stop = stop
        self._last_sent = float("-inf")

    def _publish(self) -> None:
        now = time.monotonic()
        if now - self._last_sent >= PROGRESS_EVERY_SECONDS or self.fraction >= 1.0:
            self._last_sent = now
            self._emit(("progress", (self.fraction, self.message)))

    def cancelled(self) -> bool:
        return self._stop.is_set()


def _write_images(folder: Path, images: Iterable[tuple[str, bytes]]) -> tuple[Path, ...]:
    """The concept's images written under their own names; their paths, in the order given."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, data in images:
        path = folder / Path(name).name
        path.write_bytes(data)
        paths.append(path)
    return tuple(paths)


def compute_run(spec: RunSpec, images, checkpoint: bytes | None, emit: Callable[[tuple], None],
                stop: threading.Event) -> dict | None:
    """Run the method where this process is, in a scratch folder; return the artifact as bytes (None for SLD).

    ``images`` are the concept's (name, bytes); ``checkpoint`` the bytes of
    the checkpoint to resume from. ``emit`` sends "started", "progress" and
    "checkpoint" messages; ``stop`` set stops the method at its next step.
    """
    with tempfile.TemporaryDirectory(prefix="cpdm-unlearn-") as scratch:
        scratch = Path(scratch)
        spec = replace(spec, images=_write_images(scratch / "images", images))
        checkpoint_path = scratch / CHECKPOINT_NAME
        if checkpoint is not None:
            checkpoint_path.write_bytes(checkpoint)

        def send_checkpoint(path: Path, step: int) -> None:
            emit(("checkpoint", (step, path.read_bytes())))

        with running(StreamedJob(emit, stop)):
            pipe = load_checked(spec)
            emit(("started", None))
            options = training_options(spec, checkpoint_path, resume=checkpoint is not None, progress=False,
                                       on_checkpoint=send_checkpoint, cache_dir=scratch / CACHE_NAME)
            tensors, meta = run_method(pipe, spec, options)
        if get_method(spec.method).inference_time:
            return None
        weights = scratch / spec.weights_name
        sha256 = save_artifact(weights, tensors, meta)
        return {"sha256": sha256, "files": {path.name: path.read_bytes() for path in (weights, json_path_of(weights))}}


def stream_run(spec: RunSpec, images, checkpoint: bytes | None) -> Iterator[tuple[str, object]]:
    """The run's messages as they happen, ending with ``("done", artifact)``; an error of the run is raised.

    The method calls back from inside its loop (progress, checkpoints), and
    a generator cannot yield from a callback: the method runs in a thread
    of its own and this generator yields what it sends. When the driver
    stops listening (a cancelled task), the method stops at its next step.
    """
    messages: queue.Queue = queue.Queue()
    stop = threading.Event()

    def work() -> None:
        try:
            messages.put(("done", compute_run(spec, images, checkpoint, messages.put, stop)))
        except BaseException as exc:  # handed to the generator, which raises it for the driver
            messages.put(("error", exc))

    thread = threading.Thread(target=work, name="cpdm-unlearn", daemon=True)
    thread.start()
    try:
        while True:
            kind, payload = messages.get()
            if kind == "error":
                raise payload
            yield kind, payload
            if kind == "done":
                return
    finally:
        stop.set()
        thread.join()  # the GPU is free again only once the method has stopped


def unlearn_task(spec: RunSpec, images, checkpoint: bytes | None) -> Iterator[tuple[str, object]]:
    """The Ray task's body: :func:`stream_run` on a Ray worker.

    The run needs the GPU to itself: the models this worker keeps between
    generation and scoring tasks are let go first.
    """
    from cpdm.jobs.ray_executor import release_kept_models

    release_kept_models()
    yield from stream_run(spec, images, checkpoint)


# --------------------------------------------------------------------------
# The driver's side
# --------------------------------------------------------------------------


def _write_file(path: Path, data: bytes) -> None:
    """Write ``data`` under a temporary name beside ``path``, then rename it (never half a file at ``path``)."""
    partial = path.with_name(path.name + ".partial")
    partial.write_bytes(data)
    os.replace(partial, path)


class ClusterRun:
    """The driver's side of one run on the cluster: it registers the variant and stores what comes back."""

    def __init__(self, ws, run: PreparedRun):
        self.ws = ws
        self.run = run
        self.variant_id: int | None = None  # once registered by this call
        self.checkpoint_step: int | None = None  # the step of the last checkpoint stored by this call

    def checkpoint_to_send(self, attempt: int) -> bytes | None:
        """The stored checkpoint's bytes when this attempt continues a run (``resume``, or a retry)."""
        path = self.run.checkpoint_path
        if (self.run.resume or attempt > 1) and path.is_file():
            return path.read_bytes()
        return None

    def follow(self, messages: Iterable[tuple[str, object]]):
        """Act on the task's messages in order; return the ready variant."""
        for kind, payload in messages:
            if kind == "started":
                self.variant_id = register_run(self.ws, self.run)
            elif kind == "progress":
                job = current_job()
                if job is not None:
                    job.progress(*payload)
            elif kind == "checkpoint":
                self.store_checkpoint(*payload)
            elif kind == "done":
                return self.finish(payload)
            job = current_job()
            if job is not None:
                job.check_cancelled()  # a cancelled job cancels the task (the stream's end)
        raise CpdmError("the unlearning task ended without sending its result")

    def store_checkpoint(self, step: int, data: bytes) -> None:
        """Keep the checkpoint as the variant's own (where a local run keeps it)."""
        self.run.folder.mkdir(parents=True, exist_ok=True)
        _write_file(self.run.checkpoint_path, data)
        self.checkpoint_step = step
        log(f"checkpoint after step {step} stored ({len(data) / 1e6:.1f} MB)")

    def finish(self, artifact: dict | None):
        """Write the artifact into the variant's folder, check its sha256, and mark the variant ready."""
        if artifact is None:
            return mark_ready(self.ws, self.run, self.variant_id, None, None)
        weights = self.run.folder / self.run.spec.weights_name
        expected = {weights.name, json_path_of(weights).name}
        if set(artifact["files"]) != expected:
            raise ArtifactError(f"{weights}: the Ray worker sent the files {sorted(artifact['files'])}, "
                                f"not {sorted(expected)}")
        for name, data in artifact["files"].items():
            _write_file(self.run.folder / name, data)
        if artifact_digest(weights) != artifact["sha256"]:
            for name in expected:
                (self.run.folder / name).unlink(missing_ok=True)
            raise ArtifactError(f"{weights}: the artifact's bytes differ from the sha256 the Ray worker computed; "
                                "they were not kept")
        return mark_ready(self.ws, self.run, self.variant_id, weights, artifact["sha256"])

    def record_failure(self, exc: BaseException) -> None:
        """Mark the variant failed, if this call registered it."""
        if self.variant_id is not None:
            record_failure(self.ws, self.variant_id, exc)


def log(line: str) -> None:
    """A line in the current job's log (runs outside a job have none)."""
    job = current_job()
    if job is not None:
        job.log(line)


def unlearn_on_cluster(ws, method_name: str, variant_name: str, *, executor, **options):
    """:func:`cpdm.unlearning.runner.unlearn` with the run on a node of ``executor``'s Ray cluster.

    ``options`` are ``unlearn``'s, less ``device``: the run computes on the
    executor's device (``cuda`` when its tasks ask for GPUs). Returns the
    ready variant.
    """
    run = prepare_run(ws, method_name, variant_name, device=executor.device, check_here=False, **options)
    return run_on_cluster(ws, run, executor)


def run_on_cluster(ws, run: PreparedRun, executor):
    """Run a prepared run as a Ray task of ``executor``, resuming a killed task from its last checkpoint.

    Returns the ready variant. A task whose worker or node died is submitted
    again, at most ``executor.max_retries`` times, with the checkpoint the
    driver stored last.
    """
    from cpdm.jobs.ray_executor import TaskDied

    images = tuple((path.name, path.read_bytes()) for path in run.spec.images)
    cluster_run = ClusterRun(ws, run)
    attempts = executor.max_retries + 1
    attempt = 1
    while True:
        checkpoint = cluster_run.checkpoint_to_send(attempt)
        try:
            return cluster_run.follow(executor.stream(unlearn_task, run.spec, images, checkpoint))
        except TaskDied as exc:
            if attempt == attempts:
                failure = CpdmError(f"the unlearning task's worker died in each of its {attempts} attempt(s) "
                                    f"({exc.error_name}; see the Ray workers' logs)")
                cluster_run.record_failure(failure)
                raise failure from None
            attempt += 1
            resumed = "its last stored checkpoint" if run.checkpoint_path.is_file() else "the start"
            log(f"the unlearning task's worker died ({exc.error_name}); attempt {attempt} of {attempts} runs it "
                f"again from {resumed}")
        except BaseException as exc:
            cluster_run.record_failure(exc)
            raise
