"""Generation, scoring and unlearning on a Ray cluster; only this process (the driver) writes to the workspace.

A worker started with ``cpdm worker --executor ray --address ADDR`` claims
jobs as usual and hands a :class:`RayExecutor` to them. ``run_generation``
and ``score_pairs`` then send each batch to the cluster as a Ray task with
``num_gpus`` GPUs and ``max_retries`` retries, and ``unlearn`` sends its
whole run as one task:

* a generation task gets an :class:`~cpdm.diffusion.pipeline.ImageRequest`
  (prompts, seeds, settings) and returns each image's PNG bytes with their
  sha256;
* a scoring task gets the bytes of the images whose features are missing
  (anchors' included) and returns the feature blobs, in the serialised form
  the ``features`` table stores;
* an unlearning task gets the run (method, base model id, concepts,
  hyperparameters), the concept's images and the checkpoint to resume from,
  and streams back progress, each checkpoint and, at the end, the
  artifact's bytes with their sha256 (:func:`cpdm.jobs.ray_unlearn.unlearn_task`,
  through :meth:`RayExecutor.stream`). Ray does not retry it; the driver
  submits it again with its last checkpoint.

Images, and an unlearned variant's artifact, travel as bytes: Ray workers
need the cpdm package and the model weights, but neither the workspace nor a
shared filesystem. Each Ray worker process builds a pipeline or backbones
once and keeps them for the next task with the same settings.

The driver stores what comes back with the same calls, in the same order, as
without an executor; those writes are idempotent (generations are unique on
their key, features on (image, backbone)), so a task that Ray retries after
its worker died, or a job that is run again, adds nothing twice. The
SQLite database is never opened on another machine.

Why one file of this length: it is both sides of one executor. The task
bodies that run on Ray workers and the driver that submits them must agree
on what travels (specs, bytes, feature rows), so they live together.
"""

from __future__ import annotations

import hashlib
import os
import socket
import tempfile
from collections import deque
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Iterable, Iterator, Sequence

from cpdm.errors import CpdmError

RAY_MISSING = "Ray is not installed; install it with: pip install 'cpdm[ray]'"
DEFAULT_MAX_RETRIES = 3  # a task whose worker process dies is run again up to this many times
CONNECT_TIMEOUT = 5.0  # seconds to wait for the cluster's port before calling it unreachable
CLIENT_PORT = 10001  # Ray client (ray://HOST) default port
GCS_PORT = 6379  # the head node's default port (HOST alone)


class TaskDied(CpdmError):
    """A Ray task's worker process, or its node, died before the task ended; ``error_name`` says which Ray saw."""

    def __init__(self, message: str, error_name: str = ""):
        super().__init__(message)
        self.error_name = error_name


def import_ray():
    """The ``ray`` module, or a clear error saying how to install it."""
    try:
        import ray
    except ImportError:
        raise CpdmError(RAY_MISSING) from None
    return ray


def check_reachable(address: str | None, timeout: float = CONNECT_TIMEOUT) -> None:
    """Refuse an address whose port does not answer (``ray.init`` would wait for minutes before failing)."""
    if address in (None, "", "auto", "local"):
        return
    host_port = address.removeprefix("ray://")
    default_port = CLIENT_PORT if address.startswith("ray://") else GCS_PORT
    host, _, port = host_port.rpartition(":") if ":" in host_port else (host_port, "", str(default_port))
    try:
        with socket.create_connection((host, int(port)), timeout=timeout):
            return
    except (OSError, ValueError) as exc:
        raise CpdmError(
            f"cannot reach the Ray cluster at {address} ({exc}); start it with `ray start --head` on the head node "
            "and check the address (ray://HEAD:10001 for a Ray client, HEAD:6379 on a cluster node)"
        ) from None


# --------------------------------------------------------------------------
# What travels to a Ray worker, and what the worker keeps between tasks
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class Artifact:
    """An unlearned variant's artifact, put into Ray's object store once: its files' bytes by name."""

    digest: str  # sha256 of its files' bytes together: names the copy on each node
    weights_name: str
    files: dict  # file name -> ObjectRef of its bytes


@dataclass(frozen=True)
class PipelineSpec:
    """What a Ray worker needs to build a variant's pipeline."""

    variant: object  # a cpdm.store.rows.Variant (or generation's not-yet-recorded baseline)
    device: str
    dtype: str | None
    offline_tiny: bool
    scheduler: str
    artifact: Artifact | None = None

    def cache_key(self) -> tuple:
        variant = self.variant
        return (variant.name, variant.base_model, variant.method, self.artifact and self.artifact.digest,
                self.device, self.dtype, self.offline_tiny, self.scheduler)


@dataclass(frozen=True)
class BackboneSpec:
    """What a Ray worker needs to load one backbone (``cpdm.backbones.load_backbone``'s arguments)."""

    role: str
    name: str
    image_size: int | None
    mode: str
    device: str


@dataclass
class RemoteBackbone:
    """The driver's stand-in for a backbone loaded on the cluster: its stored key and how it compares descriptors."""

    spec: BackboneSpec
    name: str
    key: str
    role: str
    descriptor: str
    comparison: str | None
    layer_weights: tuple | None

    @property
    def device(self):
        import torch

        return torch.device("cpu")  # the driver only reads cached descriptors and compares them


_worker_models: dict[str, tuple] = {}  # per Ray worker process: kind -> (cache key, model); one of each kind


def _kept(kind: str, key, build):
    """The model of this kind built for ``key``, built on first use; a new key replaces the old model."""
    held = _worker_models.get(kind)
    if held is None or held[0] != key:
        _worker_models.pop(kind, None)  # free the old one first (GPU memory)
        held = (key, build())
        _worker_models[kind] = held
    return held[1]


def _local_artifact_path(artifact: Artifact) -> Path:
    """The artifact's files written once into this machine's temporary folder; the weights file's path."""
    ray = import_ray()
    folder = Path(tempfile.gettempdir()) / "cpdm-artifacts" / artifact.digest
    folder.mkdir(parents=True, exist_ok=True)
    for name, ref in artifact.files.items():
        target = folder / name
        if not target.exists():  # written under a unique name, then renamed: workers of a node may race
            handle, partial = tempfile.mkstemp(dir=folder, prefix=".incoming-")
            with os.fdopen(handle, "wb") as file:
                file.write(ray.get(ref))
            os.replace(partial, target)
    return folder / artifact.weights_name


def _worker_pipeline(spec: PipelineSpec):
    """The variant's pipeline in this Ray worker, built once per spec."""
    from cpdm.diffusion.pipeline import variant_pipeline

    def build():
        variant = spec.variant
        if spec.artifact is not None:  # the artifact's copy on this machine (it was checked against its sha256)
            variant = replace(variant, artifact_path=str(_local_artifact_path(spec.artifact)))
        return variant_pipeline(variant, root=None, device=spec.device, dtype=spec.dtype,
                                offline_tiny=spec.offline_tiny, scheduler=spec.scheduler)

    return _kept("pipeline", spec.cache_key(), build)


def _worker_backbones(specs: tuple[BackboneSpec, ...]) -> list:
    """These backbones in this Ray worker, loaded once."""
    from cpdm.backbones import load_backbone

    return _kept("backbones", specs, lambda: [
        load_backbone(s.name, mode=s.mode, device=s.device, image_size=s.image_size, role=s.role) for s in specs])


def _worker_extractor(specs: tuple[BackboneSpec, ...], precision: str):
    """A feature extractor over these backbones in this Ray worker, kept with the precision it chose."""
    from cpdm.scoring.features import FeatureExtractor

    return _kept("extractor", (specs, precision), lambda: FeatureExtractor(_worker_backbones(specs), precision))


# The task bodies: they run in Ray worker processes.


def tokenizer_task(spec: PipelineSpec):
    """The pipeline's tokenizer (the driver counts prompt tokens with it to warn about truncation)."""
    return _worker_pipeline(spec).tokenizer


def generation_task(spec: PipelineSpec, request):
    """One batch of images as PNG bytes with their sha256 (``EncodedImage``)."""
    from cpdm.diffusion.pipeline import encoded_images

    return encoded_images(_worker_pipeline(spec), request)


def release_kept_models() -> None:
    """Drop the pipeline and backbones this Ray worker keeps between tasks, and free their GPU memory."""
    _worker_models.clear()
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def backbone_task(specs: tuple[BackboneSpec, ...]) -> list[dict]:
    """What the driver needs of each backbone: its key and how its descriptors compare."""
    return [{"name": b.name, "key": b.key, "role": b.role, "descriptor": b.descriptor,
             "comparison": getattr(b, "comparison", None), "layer_weights": getattr(b, "layer_weights", None)}
            for b in _worker_backbones(specs)]


def feature_task(specs: tuple[BackboneSpec, ...], precision: str, shas: list[str], images: list[bytes],
                 needs: dict[str, list[int]]):
    """Feature cache rows ``(sha, backbone key, blob)`` of these images, and each backbone's precision."""
    from cpdm.scoring.features import feature_rows
    from cpdm.store.images import open_image_bytes

    extractor = _worker_extractor(specs, precision)
    decoded = [open_image_bytes(data, f"image {sha[:12]}") for sha, data in zip(shas, images)]
    return feature_rows(extractor, shas, decoded, needs), dict(extractor.precision)


# --------------------------------------------------------------------------
# The driver's side
# --------------------------------------------------------------------------


class RayExecutor:
    """Runs generation and scoring batches as Ray tasks; the caller stores the results.

    One of the two :class:`cpdm.executor.Executor` implementations.

    ``address``: ``ray://HEAD:10001`` (a Ray client), ``HEAD:6379`` (on a
    cluster node), ``auto``, or None (an already initialised Ray, else a new
    local one). The connection is made on first use. ``num_gpus`` per task
    (0 on CPU-only machines; then tasks compute on the CPU); ``max_retries``
    reruns a task whose worker process died. ``max_in_flight`` caps the
    tasks submitted at once (default: twice the tasks the cluster can run
    together), so results do not pile up in the object store.
    """

    remote = True  # images and artifacts travel to the workers as bytes

    def __init__(self, address: str | None = None, num_gpus: float = 1, max_retries: int = DEFAULT_MAX_RETRIES,
                 max_in_flight: int | None = None, runtime_env: dict | None = None):
        if num_gpus < 0:
            raise CpdmError(f"num_gpus must be ≥ 0, got {num_gpus}")
        if max_retries < 0:
            raise CpdmError(f"max_retries must be ≥ 0, got {max_retries}")
        if max_in_flight is not None and max_in_flight < 1:
            raise CpdmError(f"max_in_flight must be at least 1, got {max_in_flight}")
        self._ray = import_ray()  # refuse at once, before a worker claims a job, if Ray is missing
        self.address = address
        self.num_gpus = num_gpus
        self.max_retries = max_retries
        self.runtime_env = runtime_env
        self._max_in_flight = max_in_flight
        self._remote: dict = {}
        self.tasks_done = 0  # results received from the cluster (for progress and tests)

    @property
    def device(self) -> str:
        """Where the tasks compute: ``cuda`` (the GPU Ray gave the task) or, without GPUs, ``cpu``."""
        return "cuda" if self.num_gpus > 0 else "cpu"

    def connect(self) -> None:
        """Join the cluster unless Ray is already initialised in this process."""
        ray = self._ray
        if ray.is_initialized():
            return
        check_reachable(self.address)
        try:
            ray.init(address=self.address, runtime_env=self.runtime_env, log_to_driver=False)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise CpdmError(f"cannot connect to the Ray cluster at {self.address or 'a new local instance'}: {exc}") \
                from None

    @property
    def batches_in_flight(self) -> int:
        """How many tasks are submitted at once."""
        if self._max_in_flight is None:
            self.connect()
            resources = self._ray.cluster_resources()
            if self.num_gpus > 0:
                slots = resources.get("GPU", 0) / self.num_gpus
            else:
                slots = resources.get("CPU", 1)
            self._max_in_flight = max(1, 2 * int(slots))
        return self._max_in_flight

    def _check_gpus(self) -> None:
        """Refuse tasks that ask for GPUs on a cluster that has none (Ray would keep them waiting forever)."""
        if self.num_gpus > 0 and self._ray.cluster_resources().get("GPU", 0) < self.num_gpus:
            raise CpdmError(f"the Ray cluster at {self.address or 'this machine'} has no GPUs (see `ray status`); "
                            "start GPU nodes, or ask for num_gpus=0 to compute on CPUs")

    def _task(self, function, retried: bool = True):
        """``function`` as a Ray remote function with this executor's resources (made once).

        ``retried``: Ray runs it again up to ``max_retries`` times when its
        worker dies; otherwise never (the caller decides).
        """
        key = (function, retried)
        if key not in self._remote:
            self.connect()
            self._check_gpus()
            self._remote[key] = self._ray.remote(function).options(
                num_gpus=self.num_gpus, max_retries=self.max_retries if retried else 0, retry_exceptions=False)
        return self._remote[key]

    def _get(self, ref, attempts: int | None = None, keep_cpdm_errors: bool = False):
        """A task's result; a cpdm error raised on a worker keeps its message, a dead worker says so.

        ``attempts``: how many times Ray ran the task (default: ``max_retries``
        + 1). ``keep_cpdm_errors``: a cpdm error is raised as itself (its
        type and fields), not as a message "on a Ray worker".
        """
        ray = self._ray
        try:
            result = ray.get(ref)
            self.tasks_done += 1
            return result
        except ray.exceptions.RayTaskError as exc:
            cause = getattr(exc, "cause", None)
            if isinstance(cause, CpdmError):
                if keep_cpdm_errors:
                    raise cause from None
                raise CpdmError(f"on a Ray worker: {cause}") from None
            if _is_out_of_memory(cause):
                raise CpdmError("a Ray worker ran out of GPU memory; pass a smaller --batch-size "
                                "(or --height/--width)") from None
            raise
        except (ray.exceptions.WorkerCrashedError, ray.exceptions.NodeDiedError) as exc:
            attempts = self.max_retries + 1 if attempts is None else attempts
            raise TaskDied(f"a Ray task's worker process died in each of its {attempts} attempt(s); check the "
                           f"Ray workers' logs ({type(exc).__name__}); what was stored before stays",
                           type(exc).__name__) from None

    def stream(self, function, *args) -> Iterator:
        """What the generator ``function(*args)`` yields, run as one Ray task, as it comes.

        Ray does not retry the task: a dead worker or node raises
        :class:`TaskDied` and the caller decides what to run again. An error
        the task raised is raised here; a cpdm error as itself (its type and
        fields, a NaN loss's step), other errors as :meth:`_get` has them.
        Leaving the loop early (an error, a cancelled job) cancels the task.
        """
        generator = self._task(function, retried=False).remote(*args)
        try:
            for ref in generator:
                yield self._get(ref, attempts=1, keep_cpdm_errors=True)
        finally:
            self._ray.cancel(generator)  # nothing happens to a task that has ended

    def run_in_order(self, function, argument_lists: Iterable[tuple]) -> Iterator:
        """``function(*arguments)`` on the cluster for each argument tuple; results in order, a window in flight."""
        task = self._task(function)
        pending: deque = deque()
        arguments = iter(argument_lists)
        window = self.batches_in_flight
        for args in arguments:
            pending.append(task.remote(*args))
            if len(pending) >= window:
                break
        try:
            while pending:
                ref = pending.popleft()
                following = next(arguments, None)
                if following is not None:
                    pending.append(task.remote(*following))
                yield self._get(ref)
        finally:  # the caller stopped early (an error, a cancelled job): free the cluster of what it will not read
            for ref in pending:
                self._ray.cancel(ref)

    # Generation ----------------------------------------------------------

    def pipeline(self, variant, *, root=None, dtype: str | None = None, offline_tiny: bool = False,
                 scheduler: str = "ddim") -> RemotePipeline:
        """A handle on ``variant``'s pipeline as the workers build it (``root``: where its artifact path starts)."""
        spec = PipelineSpec(variant, self.device, dtype, offline_tiny, scheduler, self._artifact(variant, root))
        return RemotePipeline(self, spec, self._get(self._task(tokenizer_task).remote(spec)))

    def _artifact(self, variant, root) -> Artifact | None:
        """The variant's artifact files in the object store, or None when it has none (baseline, SLD)."""
        path_text = getattr(variant, "artifact_path", None)
        if not path_text:
            return None
        from cpdm.diffusion.artifacts import json_path_of

        path = Path(path_text)
        if not path.is_absolute() and root is not None:
            path = Path(root) / path
        files, digest = {}, hashlib.sha256()
        for file in (path, json_path_of(path)):
            if not file.is_file():
                raise CpdmError(f"{file}: the variant {variant.name!r}'s artifact file is missing")
            data = file.read_bytes()
            digest.update(data)
            files[file.name] = self._ray.put(data)
        return Artifact(digest.hexdigest(), path.name, files)

    # Scoring -------------------------------------------------------------

    def backbones(self, wanted: Sequence[tuple[str, str, int | None]], mode: str) -> list[RemoteBackbone]:
        """Stand-ins for the backbones ``(role, name, image_size)``, loaded once on a worker to learn their keys."""
        specs = tuple(BackboneSpec(role, name, size, mode, self.device) for role, name, size in wanted)
        described = self._get(self._task(backbone_task).remote(specs))
        return [RemoteBackbone(spec, **fields) for spec, fields in zip(specs, described)]

    def feature_rows(self, extractor, batches: list[list[str]], needs: list[dict],
                     image_path) -> Iterator[tuple[list, dict]]:
        """For each batch of image shas, in order: its feature cache rows, computed on the cluster, and the
        precision each backbone chose there (``needs``: per batch, indices per backbone; ``image_path``: where
        this machine keeps an image, whose bytes travel)."""
        from cpdm.store.images import read_stored_image

        specs = tuple(backbone.spec for backbone in extractor.backbones)

        def arguments():
            for batch, need in zip(batches, needs):
                images = [read_stored_image(image_path(sha), sha) for sha in batch]
                yield specs, extractor.choice, batch, images, need

        yield from self.run_in_order(feature_task, arguments())


class RemotePipeline:
    """The driver's handle on a pipeline that Ray workers build: its tokenizer, and images made remotely in order."""

    def __init__(self, executor: RayExecutor, spec: PipelineSpec, tokenizer):
        self.executor = executor
        self.spec = spec
        self.tokenizer = tokenizer
        self._planned: deque = deque()
        self._results: Iterator | None = None

    def submit(self, requests: list) -> None:
        """The batches the caller will ask for, in order: the cluster starts on them now."""
        self._planned = deque(requests)
        self._results = self.executor.run_in_order(generation_task, ((self.spec, request) for request in requests))

    def encoded_images(self, request) -> list:
        """The request's images (PNG bytes and sha256): the next submitted batch, or made now if not submitted."""
        if self._planned and self._planned[0] == request:
            self._planned.popleft()
            return next(self._results)
        return self.executor._get(self.executor._task(generation_task).remote(self.spec, request))


def _is_out_of_memory(error) -> bool:
    try:
        import torch
    except ImportError:
        return False
    return isinstance(error, torch.cuda.OutOfMemoryError)
