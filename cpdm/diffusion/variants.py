"""Put a variant onto a base pipeline: an artifact's weights (strictly), or SLD's guidance.

Generation calls :func:`apply_variant`; this module imports nothing of the
generation wing, so generation can depend on unlearning and not the reverse.
"""

from __future__ import annotations

from pathlib import Path

from cpdm.errors import CpdmError
from cpdm.store.workspace import BASELINE_METHOD
from cpdm.unlearning import lookup
from cpdm.diffusion.artifacts import apply_artifact


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
    if lookup(variant.method).inference_time:
        from cpdm.unlearning.sld import SLDPipeline, safety_concept, settings_from_params

        return SLDPipeline(pipe, safety_concept(variant.concepts), settings_from_params(variant.params["hyperparameters"]))
    if not variant.artifact_path:
        raise CpdmError(f"variant {variant.name!r} has no artifact")
    path = Path(variant.artifact_path)
    if not path.is_absolute() and root is not None:
        path = Path(root) / path
    apply_artifact(pipe.unet, path, variant.artifact_sha256, base_model=base_model or variant.base_model)
    return pipe
