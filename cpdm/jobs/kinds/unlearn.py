"""The unlearn kind: ``cpdm unlearn`` as a job (erase concepts, register the variant; a retry resumes)."""

from __future__ import annotations

from cpdm.diffusion.settings import DEFAULT_SD_MODEL
from cpdm.errors import CpdmError
from cpdm.jobs.kinds import log_notes
from cpdm.jobs.parameters import HYPERPARAMETERS, OFFLINE_TINY, Parameter
from cpdm.jobs.registry import parameterised_kind
from cpdm.store.rows import get_variant
from cpdm.unlearning import (
    DEFAULT_CHECKPOINT_EVERY,
    DEFAULT_SEED,
    DEFAULT_TRAINING_PRECISION,
    TRAINING_PRECISIONS,
    image_files,
    lookup,
    names,
    read_preserve_file,
)


def _unlearn_parameters() -> list[Parameter]:
    return [
        Parameter("method", "str", None, "unlearning method", choices=names(), required=True),
        Parameter("variant_name", "str", None, "name of the new variant", required=True),
        Parameter("base", "str", DEFAULT_SD_MODEL, "base model: a local diffusers folder or a cached Hugging Face id"),
        Parameter("concepts", "strings", None, "concepts to erase", required=True),
        Parameter("preserve", "strings", [], "concepts to keep as they are"),
        Parameter("preserve_file", "path", None, "a file of concepts to keep, one a line (a long list such as the "
                  "1,733 artists UCE's 2023 release preserves)"),
        Parameter("images_dir", "path", None, "folder of images of the concept (methods that train on images)"),
        Parameter(HYPERPARAMETERS, "mapping", {}, "the method's hyperparameters (the method's defaults for the rest)"),
        Parameter("seed", "int", DEFAULT_SEED, "seed of the run"),
        Parameter("precision", "str", DEFAULT_TRAINING_PRECISION,
                  "compute precision of training passes (weights stay float32)",
                  choices=TRAINING_PRECISIONS),
        Parameter("checkpoint_every", "int", DEFAULT_CHECKPOINT_EVERY, "save a resumable checkpoint every N steps",
                  minimum=1),
        OFFLINE_TINY,
    ]


def _check_unlearn(params: dict) -> None:
    """Resolve the method's hyperparameters now (defaults filled in, bad values refused) and check its inputs.

    Only the methods' table is read: queueing a job loads no method's code (nor torch).
    """
    method = lookup(params["method"])
    if not params["variant_name"].strip():
        raise CpdmError("unlearn job: variant_name is required (name of the new variant)")
    params[HYPERPARAMETERS] = method.resolve_params(params[HYPERPARAMETERS])
    if params["preserve_file"]:
        read_preserve_file(params["preserve_file"])  # refused now rather than on the worker
    if method.needs_images and not image_files(params["images_dir"]):
        raise CpdmError(f"unlearn job: {method.name} needs images of the concept: set images_dir to a folder of images")


def _earlier_attempt(ws, variant_name: str, job_id: int | None):
    """The variant an earlier attempt of this job registered, or None."""
    if job_id is None:
        return None
    try:
        variant = get_variant(ws, variant_name)
    except CpdmError:
        return None
    return variant if variant.job == job_id else None


def _unlearn_result(variant, resumed: bool) -> dict:
    return {"variant": variant.name, "variant_id": variant.id, "method": variant.method, "status": variant.status,
            "artifact_path": variant.artifact_path, "resumed": resumed}


def _run_unlearn(ws, params: dict, context) -> dict:
    """``cpdm unlearn``: erase the concepts and register the variant.

    A job run again after an attempt that stopped (killed, cancelled,
    failed) resumes the variant from its last checkpoint; after an attempt
    that made the variant but could not record it, it returns that variant.
    Under a Ray executor the run goes to a node of the cluster
    (:mod:`cpdm.jobs.ray_unlearn`); the variant is registered here.
    """
    earlier = _earlier_attempt(ws, params["variant_name"], context.job_id)
    if earlier is not None and earlier.status == "ready":
        context.log(f"variant {earlier.name} was made by an earlier attempt of this job")
        return _unlearn_result(earlier, resumed=False)
    resume = earlier is not None and earlier.status in ("training", "failed")
    if resume:
        context.log(f"resuming variant {params['variant_name']} from its last checkpoint")
    options = dict(
        base=params["base"], concepts=params["concepts"], preserve=params["preserve"],
        preserve_file=params["preserve_file"], images_dir=params["images_dir"], params=params[HYPERPARAMETERS],
        seed=params["seed"], precision=params["precision"], offline_tiny=params["offline_tiny"], resume=resume,
        checkpoint_every=params["checkpoint_every"], job=context.job_id,
    )
    if context.executor is None:
        from cpdm.unlearning.runner import unlearn

        variant = unlearn(ws, params["method"], params["variant_name"], device=context.device,
                          warn=lambda note: log_notes(context, [note]), **options)
    else:
        from cpdm.jobs.ray_unlearn import unlearn_on_cluster

        variant = unlearn_on_cluster(ws, params["method"], params["variant_name"], executor=context.executor,
                                     **options)
    context.log(f"variant {variant.name} ({variant.method}) {variant.status}")
    return _unlearn_result(variant, resume)


KIND = parameterised_kind(
    "unlearn", "erase concepts from a model and register the variant",
    _unlearn_parameters, _run_unlearn, wants_gpu=True, extra_check=_check_unlearn,
)
