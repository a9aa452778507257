"""Unlearning: erase a concept from a Stable Diffusion model, one method per module, one interface.

:data:`METHODS` maps each method's command-line name to its implementation
(a :class:`~cpdm.unlearning.base.Method`). :mod:`cpdm.unlearning.runner`
runs a method and registers the variant; :func:`cpdm.unlearning.apply.apply_variant`
puts a variant onto a base pipeline for generation; :mod:`cpdm.unlearning.report`
tells whether it worked.
"""

from __future__ import annotations

from cpdm.errors import CpdmError


def _methods() -> dict:
    from cpdm.unlearning.ablation import ConceptAblation
    from cpdm.unlearning.esd import ESDU, ESDX
    from cpdm.unlearning.gradient_ascent import GradientAscent
    from cpdm.unlearning.pruning import Pruning
    from cpdm.unlearning.sld import SLD
    from cpdm.unlearning.uce import UCE

    methods = (ESDX(), ESDU(), UCE(), ConceptAblation(), GradientAscent(), Pruning(), SLD())
    return {method.name: method for method in methods}


METHODS = _methods()


def get_method(name: str):
    """The method called ``name``; an unknown name is refused with the list of known ones."""
    method = METHODS.get(str(name).lower())
    if method is None:
        raise CpdmError(f"unknown unlearning method {name!r} (known: {', '.join(METHODS)})")
    return method
