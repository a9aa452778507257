"""Run an unlearning method on a base model and register the result as a variant; apply a variant.

:func:`unlearn` checks everything it can before it registers anything (the
method, the concepts, the images, the base model, the device), then
registers the variant as ``training``, runs the method, writes the artifact
and marks the variant ``ready``, or ``failed`` with the reason (a NaN or Inf
loss names its step). A run killed midway resumes from its last checkpoint
with ``resume=True``.

Generation applies a variant with :func:`cpdm.diffusion.variants.apply_variant`.
"""

from __future__ import annotations

import json
import resource
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from cpdm import __version__
from cpdm.compute_device import check_device
from cpdm.diffusion.artifacts import (
    ArtifactError,
    base_unet_record,
    check_variant_dir,
    claim_variant_dir,
    rerecord_artifact,
    save_artifact,
    variant_dir,
)
from cpdm.diffusion.pipeline import TINY_BASE, load_sd_pipeline
from cpdm.errors import CpdmError
from cpdm.hf_cache import hf_hub_cache
from cpdm.progress import JobCancelled
from cpdm.store.rows import add_variant, get_variant, set_variant_status
from cpdm.unlearning import (
    DEFAULT_CHECKPOINT_EVERY,
    DEFAULT_TRAINING_PRECISION,
    DEFAULT_SEED,
    get_method,
    image_files,
    read_preserve_file,
)
from cpdm.unlearning.base import (
    NonFiniteLoss,
    TrainingOptions,
    UnlearnRequest,
    check_concepts,
    truncated_texts,
    unique_texts,
)
from cpdm.unlearning.concepts import names_concept

CHECKPOINT_NAME = "checkpoint.pt"
CACHE_NAME = "cache"  # the workspace's folder of reusable data (a method's own under it: cache/ablation/...)
# Autocast dtype of each of TRAINING_PRECISIONS (None: plain float32).
PRECISIONS = {"float32": None, "bfloat16": torch.bfloat16, "float16": torch.float16}


def load_base(base: str, device: str, offline_tiny: bool):
    """The base pipeline in float32 (master weights; reduced precision is an autocast during training)."""
    return load_sd_pipeline(base, device=device, dtype=torch.float32, offline_tiny=offline_tiny)


def hub_revision(base: str) -> str | None:
    """The commit of a Hugging Face model in the local cache (refs/main), or None for folders and the tiny model."""
    if base == TINY_BASE or Path(base).expanduser().exists() or "/" not in base:
        return None
    ref = hf_hub_cache() / ("models--" + base.replace("/", "--")) / "refs" / "main"
    return ref.read_text().strip() if ref.is_file() else None


def _peak_memory(device: str) -> dict:
    """Peak memory of the run: CUDA's allocator peak on a GPU, the process's max RSS on a CPU."""
    if torch.device(device).type == "cuda":
        return {"peak_memory_bytes": int(torch.cuda.max_memory_allocated()), "peak_memory_kind": "cuda_allocated"}
    scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss: bytes on macOS, KiB on Linux
    return {"peak_memory_bytes": int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * scale,
            "peak_memory_kind": "process_max_rss"}


def _versions() -> dict:
    import diffusers

    return {"diffusers": diffusers.__version__, "torch": torch.__version__, "cpdm": __version__}


def study_artists(ws, concepts) -> tuple[str, ...]:
    """The artist names of the workspace's anchors, except those naming a concept to erase (sorted, no repeats).

    An artist names a concept by the exact rule the unlearning report uses to
    tell the concept's anchors from the retained ones
    (:func:`cpdm.unlearning.concepts.names_concept`): "Ma" does not leave
    "Manet" out.
    """
    rows = ws.conn.execute("SELECT DISTINCT TRIM(artist) FROM anchors WHERE TRIM(COALESCE(artist, '')) != '' "
                           "ORDER BY 1").fetchall()
    return unique_texts(artist for (artist,) in rows if not names_concept(artist, concepts))


def preserve_file_record(path, concepts: tuple[str, ...]) -> dict:
    """What a variant records of its preserve file: the absolute path, the bytes' sha256 and how many concepts."""
    import hashlib

    path = Path(path).expanduser().resolve()
    return {"path": str(path), "sha256": hashlib.sha256(path.read_bytes()).hexdigest(), "concepts": len(concepts)}


def _resumable(ws, name: str, method: str):
    """The registered variant a resumed run continues, or None when there is none yet."""
    try:
        variant = get_variant(ws, name)
    except CpdmError:
        return None
    if variant.method != method:
        raise CpdmError(f"variant {name!r} was made by {variant.method}, not {method}; nothing to resume")
    if variant.status == "ready":
        raise CpdmError(f"variant {name!r} is already ready; nothing to resume")
    return variant


def _shortened(text: str, width: int = 40) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def truncation_notes(truncated: list[dict]) -> list[str]:
    """One warning per text the text encoder cuts, worded as generation words it for prompts."""
    return [f"{entry['role']} {_shortened(entry['text'])!r} has {entry['tokens']} tokens; the text encoder reads the "
            f"first {entry['kept']}, the rest is cut (recorded with the variant)" for entry in truncated]


def truncated_concepts(tokenizer, spec: "RunSpec") -> list[dict]:
    """The concepts to erase and to preserve that the text encoder cuts (:func:`truncated_texts`)."""
    return (truncated_texts(tokenizer, spec.concepts, "concept")
            + truncated_texts(tokenizer, spec.preserve, "concept to preserve"))


def _stop_reason(exc: BaseException) -> str:
    """Why a run stopped, as the variant's status message says it."""
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted"
    if isinstance(exc, JobCancelled):
        return "cancelled"
    return f"{type(exc).__name__}: {exc}"


@dataclass(frozen=True)
class RunSpec:
    """One unlearning run as plain data: what the machine that computes it needs (this one, or a Ray node).

    ``base`` is loaded from that machine's own caches; ``images`` are files
    on it; ``params`` are the method's resolved hyperparameters.
    """

    method: str
    base: str
    offline_tiny: bool
    concepts: tuple[str, ...]
    preserve: tuple[str, ...]
    images: tuple[Path, ...]
    params: dict
    seed: int
    precision: str
    checkpoint_every: int
    device: str
    weights_name: str  # the artifact's file name: its variant's folder name + .safetensors

    @property
    def base_id(self) -> str:
        """The base model as the variant and its artifact record it."""
        return TINY_BASE if self.offline_tiny else self.base


@dataclass
class PreparedRun:
    """A checked run and what registering its variant takes (nothing is registered yet)."""

    spec: RunSpec
    variant_name: str
    record: dict  # the variant's params: preserve set, seed, hyperparameters, precision, preserve file
    existing: object  # the variant a resumed run continues, or None
    folder: Path
    resume: bool
    progress: bool
    job: int | None

    @property
    def method(self):
        return get_method(self.spec.method)

    @property
    def checkpoint_path(self) -> Path:
        return self.folder / CHECKPOINT_NAME


def prepare_run(ws, method_name: str, variant_name: str, *, base: str, concepts, preserve=(), preserve_file=None,
                images_dir=None, params: dict | None = None, seed: int = DEFAULT_SEED, device: str = "cpu",
                precision: str = DEFAULT_TRAINING_PRECISION, offline_tiny: bool = False, resume: bool = False,
                checkpoint_every: int = DEFAULT_CHECKPOINT_EVERY, progress: bool = True, job: int | None = None,
                check_here: bool = True) -> PreparedRun:
    """Check everything the workspace can tell about a run, and work out its preserve set.

    ``check_here=False`` leaves the device to the machine that runs it (a
    Ray node): this one may have no GPU.
    """
    method = get_method(method_name)
    concepts = tuple(str(c) for c in concepts)
    preserve = tuple(str(p) for p in preserve)
    if not variant_name or not variant_name.strip():
        raise CpdmError("give the new variant a name (--variant-name)")
    variant_name = variant_name.strip()  # as the variant is registered: its folder is named by this name
    if not concepts:
        raise CpdmError("name at least one concept to erase (--concept)")
    if precision not in PRECISIONS:
        raise CpdmError(f"unknown precision {precision!r} (one of {', '.join(PRECISIONS)})")
    resolved = method.resolve_params(params)
    listed = read_preserve_file(preserve_file) if preserve_file else ()
    given = preserve + tuple(text for text in listed if not names_concept(text, concepts))
    preserve = method.preserve_set(resolved, concepts, given, study_artists(ws, concepts))
    images = image_files(images_dir)
    if method.needs_images and not images:
        raise CpdmError(f"{method.name} needs images of the concept: pass --images DIR (a folder of image files)")
    if check_here:
        check_device(device)
    existing = _resumable(ws, variant_name, method.name) if resume else None
    if existing is None:
        try:
            get_variant(ws, variant_name)
        except CpdmError:
            pass
        else:
            raise CpdmError(f"a variant named {variant_name!r} already exists (use --resume to continue its run)")
    folder = variant_dir(ws.root, variant_name)
    if not method.inference_time:
        check_variant_dir(folder, existing.id if existing else None, variant_name)
    record = {"preserve": list(preserve), "seed": seed, "hyperparameters": resolved, "precision": precision}
    if preserve_file:
        record["preserve_file"] = preserve_file_record(preserve_file, listed)
    spec = RunSpec(method.name, base, offline_tiny, concepts, preserve, tuple(images), resolved, seed, precision,
                   checkpoint_every, device, f"{folder.name}.safetensors")
    return PreparedRun(spec, variant_name, record, existing, folder, resume, progress, job)


def register_run(ws, run: PreparedRun) -> int:
    """Register the run's variant as ``training`` (or mark a resumed one so), claim its folder; return its id."""
    spec = run.spec
    if run.existing is None:
        variant_id = add_variant(ws, run.variant_name, base_model=spec.base_id, method=spec.method,
                                 concepts=spec.concepts, params=run.record, status="training", job=run.job)
        run.existing = get_variant(ws, variant_id)  # a run taken up again from here on resumes this variant
    else:
        variant_id = run.existing.id
        set_variant_status(ws, variant_id, "training")
    if not run.method.inference_time:
        claim_variant_dir(run.folder, variant_id, run.variant_name)
    return variant_id


def record_failure(ws, variant_id: int, exc: BaseException) -> None:
    """Mark the variant ``failed`` with the reason its run stopped (a NaN loss names its step)."""
    if isinstance(exc, NonFiniteLoss):
        message = f"step {exc.step}: {exc}"
    elif isinstance(exc, ArtifactError):  # the weights are not float32 or not finite, or arrived damaged
        message = str(exc)
    else:
        message = f"{_stop_reason(exc)} (--resume continues from the last checkpoint)"
    set_variant_status(ws, variant_id, "failed", message=message)


@contextmanager
def failure_recorded(ws, variant_id: int):
    """Mark the variant ``failed`` when the block raises (:func:`record_failure`), then let the error go on."""
    try:
        yield
    except BaseException as exc:
        record_failure(ws, variant_id, exc)
        raise


def load_checked(spec: RunSpec):
    """The base pipeline, once the concepts to erase and to preserve are known to tokenise to something."""
    check_device(spec.device)
    pipe = load_base(spec.base, spec.device, spec.offline_tiny)
    check_concepts(pipe.tokenizer, spec.concepts)
    check_concepts(pipe.tokenizer, spec.preserve, label="concept to preserve")
    return pipe


def run_method(pipe, spec: RunSpec, options: TrainingOptions) -> tuple[dict, dict]:
    """Run the method on ``pipe``; return the replaced tensors and the artifact's JSON record (no file written)."""
    method = get_method(spec.method)
    revision = hub_revision(spec.base_id)
    request = UnlearnRequest(concepts=spec.concepts, preserve=spec.preserve, images=spec.images, params=spec.params,
                             seed=spec.seed, base_model=spec.base_id, base_revision=revision)
    started = time.perf_counter()
    if torch.device(spec.device).type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    tensors = method.run(pipe, request, spec.params, options)
    wall = time.perf_counter() - started
    meta = {
        "method": method.name, "base_model": spec.base_id, "base_revision": revision,
        "base_unet": base_unet_record(pipe.unet), "concepts": list(spec.concepts), "preserve": list(spec.preserve),
        "hyperparameters": spec.params, "seed": spec.seed, "steps": method.steps_of(spec.params),
        "wall_seconds": round(wall, 3), "device": spec.device, "precision": spec.precision,
        "images": [p.name for p in spec.images], **_peak_memory(spec.device), "versions": _versions(),
        "run": request.record,
    }
    truncated = truncated_concepts(pipe.tokenizer, spec)
    if truncated:
        meta["truncated"] = truncated
    return tensors, meta


def training_options(spec: RunSpec, checkpoint_path: Path, resume: bool, progress: bool,
                     on_checkpoint=None, cache_dir: Path | None = None) -> TrainingOptions:
    """How the method runs: checkpoints at ``checkpoint_path``, reduced precision as the spec asks, reusable
    data (Concept Ablation's anchor images) under ``cache_dir`` (None keeps none)."""
    return TrainingOptions(checkpoint_path=checkpoint_path, checkpoint_every=spec.checkpoint_every, resume=resume,
                           progress=progress, autocast_dtype=PRECISIONS[spec.precision], on_checkpoint=on_checkpoint,
                           cache_dir=cache_dir)


def mark_ready(ws, run: PreparedRun, variant_id: int, weights: Path | None, sha256: str | None):
    """The run is done: its checkpoint goes, the variant is ready (with its artifact, if it has one)."""
    if weights is None:
        set_variant_status(ws, variant_id, "ready")
    else:
        run.checkpoint_path.unlink(missing_ok=True)
        set_variant_status(ws, variant_id, "ready", artifact_path=str(weights.relative_to(ws.root)),
                           artifact_sha256=sha256)
    return get_variant(ws, variant_id)


def unlearn(
    ws,
    method_name: str,
    variant_name: str,
    *,
    base: str,
    concepts,
    preserve=(),
    preserve_file=None,
    images_dir=None,
    params: dict | None = None,
    seed: int = DEFAULT_SEED,
    device: str = "cpu",
    precision: str = DEFAULT_TRAINING_PRECISION,
    offline_tiny: bool = False,
    resume: bool = False,
    checkpoint_every: int = DEFAULT_CHECKPOINT_EVERY,
    progress: bool = True,
    job: int | None = None,
    warn: Callable[[str], None] | None = None,
):
    """Erase ``concepts`` from ``base`` with a method and register the variant; return it (status ready).

    The run preserves ``preserve``, then the concepts of ``preserve_file``
    (one a line) that name no concept to erase, then what the method adds
    (UCE: the study's other artists for a style); the variant records that
    set. ``job`` is the id of the queued job running it, recorded with the variant.
    ``warn`` receives a line for each concept (or concept to preserve) longer
    than the text encoder reads, before the run starts; what was cut is
    recorded in the variant's params and its artifact's JSON as ``truncated``.
    :func:`cpdm.jobs.ray_unlearn.unlearn_on_cluster` runs the same on a Ray cluster.
    """
    run = prepare_run(ws, method_name, variant_name, base=base, concepts=concepts, preserve=preserve,
                      preserve_file=preserve_file, images_dir=images_dir, params=params, seed=seed, device=device,
                      precision=precision, offline_tiny=offline_tiny, resume=resume,
                      checkpoint_every=checkpoint_every, progress=progress, job=job)
    pipe = load_checked(run.spec)
    truncated = truncated_concepts(pipe.tokenizer, run.spec)
    if truncated:
        run.record["truncated"] = truncated
        for note in truncation_notes(truncated) if warn is not None else ():
            warn(note)
    variant_id = register_run(ws, run)
    with failure_recorded(ws, variant_id):
        options = training_options(run.spec, run.checkpoint_path, run.resume, run.progress,
                                   cache_dir=ws.root / CACHE_NAME)
        tensors, meta = run_method(pipe, run.spec, options)
        if run.method.inference_time:
            return mark_ready(ws, run, variant_id, None, None)
        weights = run.folder / run.spec.weights_name
        sha256 = save_artifact(weights, tensors, meta)
    return mark_ready(ws, run, variant_id, weights, sha256)


def rerecord_variant(ws, name_or_id, *, offline_tiny: bool = False):
    """Re-record the artifact an older cpdm wrote for a variant, and register its new digest; return the variant.

    The older JSON listed parameter names only, and the variant's hash
    covered the weights file alone. The weights must still be the ones
    registered; they are checked (float32, finite, fitting the base model's
    UNet, which is loaded on the CPU) and the JSON is rewritten with every
    parameter's shape, dtype and sha256 and the base UNet's fingerprint.
    """
    variant = get_variant(ws, name_or_id)
    if not variant.artifact_path:
        raise CpdmError(f"variant {variant.name!r} has no artifact to re-record")
    path = Path(variant.artifact_path)
    path = path if path.is_absolute() else ws.root / path
    tiny = offline_tiny or variant.base_model == TINY_BASE
    unet = load_sd_pipeline(variant.base_model, device="cpu", dtype=torch.float32, offline_tiny=tiny).unet
    digest = rerecord_artifact(path, variant.artifact_sha256, unet, variant.base_model)
    set_variant_status(ws, variant.id, variant.status, artifact_sha256=digest, message=variant.message)
    return get_variant(ws, variant.id)


def describe(variant) -> dict:
    """A variant as plain data for ``cpdm variants show`` (JSON-ready)."""
    data = {key: getattr(variant, key, None) for key in (
        "id", "name", "base_model", "method", "concepts", "params", "parent", "status",
        "artifact_path", "artifact_sha256", "job", "created_at", "message")}
    data["concepts"] = list(data["concepts"] or ())
    return json.loads(json.dumps(data, default=str))
