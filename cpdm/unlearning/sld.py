r"""SLD: Safe Latent Diffusion (Schramowski et al., CVPR 2023), applied at inference.

Which parameters change: none. A variant made by SLD stores its settings
(the preset's values and the concept); generation wraps the base pipeline in
:class:`cpdm.diffusion.sld.SLDPipeline`, whose module states the guidance.

Defaults: the paper's presets as diffusers ships them (``SafetyConfig``):
WEAK, MEDIUM (the default), STRONG and MAX.

Departures: none in the guidance; :mod:`cpdm.diffusion.sld` says why its
pipeline loop is cpdm's own.
"""

from __future__ import annotations

import torch

from cpdm.diffusion.sld import SLDSettings
from cpdm.unlearning import SLD_PRESETS
from cpdm.unlearning.base import Method, TrainingOptions, UnlearnRequest

# The paper's presets (values in cpdm.unlearning's table, where the hyperparameters' defaults come from).
PRESETS = {name: SLDSettings(**values) for name, values in SLD_PRESETS.items()}


class SLD(Method):
    """SLD: safety guidance away from the erased concept at inference; no weights change."""

    name = "sld"

    def run(self, pipe, request: UnlearnRequest, params: dict, options: TrainingOptions) -> dict[str, torch.Tensor]:
        return {}
