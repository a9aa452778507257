"""Unlearning: erase a concept from a Stable Diffusion model, one method per module, one interface.

:data:`METHODS` maps each method's command-line name to its implementation
(a :class:`~cpdm.unlearning.base.Method`). :mod:`cpdm.unlearning.runner`
runs a method and registers the variant; :func:`cpdm.unlearning.apply.apply_variant`
puts a variant onto a base pipeline for generation; :mod:`cpdm.unlearning.report`
tells whether it worked.

The methods (and torch) load on first use of :data:`METHODS`, so that the
command line and the app can read the run defaults below without torch.
"""

from __future__ import annotations

import functools

from cpdm.errors import CpdmError

# What `cpdm unlearn` and an unlearn job use unless told otherwise.
DEFAULT_SEED = 0
PRECISION_NAMES = ("float32", "bfloat16", "float16")  # compute precision of training passes
DEFAULT_PRECISION = "float32"
DEFAULT_CHECKPOINT_EVERY = 100


@functools.cache
def _methods() -> dict:
    from cpdm.unlearning.ablation import ConceptAblation
    from cpdm.unlearning.esd import ESDU, ESDX
    from cpdm.unlearning.gradient_ascent import GradientAscent
    from cpdm.unlearning.pruning import Pruning
    from cpdm.unlearning.sld import SLD
    from cpdm.unlearning.uce import UCE

    methods = (ESDX(), ESDU(), UCE(), ConceptAblation(), GradientAscent(), Pruning(), SLD())
    return {method.name: method for method in methods}


def __getattr__(name: str):
    if name == "METHODS":
        return _methods()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def get_method(name: str):
    """The method called ``name``; an unknown name is refused with the list of known ones."""
    methods = _methods()
    method = methods.get(str(name).lower())
    if method is None:
        raise CpdmError(f"unknown unlearning method {name!r} (known: {', '.join(methods)})")
    return method
