"""Put a variant onto a base pipeline: an artifact's weights (strictly), or an inference-time method's guidance.

Generation calls :func:`apply_variant` through
:func:`cpdm.diffusion.pipeline.variant_pipeline`. This module sits below the
unlearning wing: it knows how a variant changes the model, never which
training made it.
"""

from __future__ import annotations

from pathlib import Path

from cpdm.diffusion.artifacts import apply_artifact
from cpdm.diffusion.sld import SLDPipeline, safety_concept, settings_from_params
from cpdm.errors import CpdmError
from cpdm.store.workspace import BASELINE_METHOD


def _sld_pipeline(pipe, variant):
    return SLDPipeline(pipe, safety_concept(variant.concepts), settings_from_params(variant.params["hyperparameters"]))


# Methods that change no weights, and how each wraps the base pipeline. The method table
# (cpdm.unlearning) marks the same methods ``inference_time``; a test keeps the two in step.
INFERENCE_TIME_PIPELINES = {"sld": _sld_pipeline}


def apply_variant(pipe, variant, root: Path | None = None, base_model: str | None = None):
    """The pipeline that generates as ``variant``: ``pipe`` with its artifact applied, or wrapped for SLD.

    ``pipe`` must be the variant's base model, freshly loaded (artifacts are
    applied in place); ``base_model`` is the id it was loaded as (default:
    the variant's), checked against the artifact's record with the
    fingerprint of ``pipe``'s UNet. A variant that is not ready is refused.
    """
    if variant.method == BASELINE_METHOD:
        return pipe
    if variant.status != "ready":
        raise CpdmError(f"variant {variant.name!r} is {variant.status}, not ready; it cannot generate")
    if variant.method in INFERENCE_TIME_PIPELINES:
        return INFERENCE_TIME_PIPELINES[variant.method](pipe, variant)
    if not variant.artifact_path:
        raise CpdmError(f"variant {variant.name!r} has no artifact")
    path = Path(variant.artifact_path)
    if not path.is_absolute() and root is not None:
        path = Path(root) / path
    apply_artifact(pipe.unet, path, variant.artifact_sha256, base_model=base_model or variant.base_model)
    return pipe
