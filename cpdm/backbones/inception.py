"""``cpdm-inception``: the style network of the CPDM authors' released metric, exactly.

The release computes style with the **pytorch-fid** package's ``InceptionV3``,
and so does this backbone (the package itself, not a re-implementation):

- Network: pytorch-fid's FID Inception (TensorFlow-ported weights
  ``pt_inception-2015-12-05-6726825d.pth``, Mixed_5b-5d, 6b-6e, 7b and 7c
  patched as in TensorFlow's FID graph), output blocks 0, 1, 2 and 3
  (64, 192, 768 and 2048 channels).
- Input: ``ToTensor()`` of the RGB image (values in [0, 1]) minus that
  tensor's mean (one scalar over all channels and pixels); then the
  package's defaults inside its forward: bilinear resize to 299×299 and
  ``2x − 1``. Images of any size are accepted.
- Distance: ``M_style = (1/4) Σ_l λ_l ‖G_l(a) − G_l(g)‖²_F`` with
  λ = (0.5, 0.1, 6e4, 40) and ``G = F Fᵀ / (C·H·W)``. The release averages
  the four weighted layer terms; this backbone does the same, as the sum
  with weights λ_l / 4 (:data:`INCEPTION_LAYER_WEIGHTS`), so its numbers are
  the release's. A sum would only scale every distance by 4: rankings,
  correlations and calibrated w are unchanged, and CM's reference scale
  absorbs the factor.

Weights are read from torch hub's ``checkpoints`` folder, where the package
itself would put them; nothing is downloaded. Tiny and random modes build the
same architecture through the package with seeded random weights (He-normal
convolutions, so activations neither vanish nor explode through the 40-odd
layers); they differ only in the stored key's prefix.
"""

from __future__ import annotations

from pathlib import Path
from unittest import mock

import torch
from torch import nn

from cpdm.backbones import BackboneError, backbone_key, check_mode, torch_hub_checkpoint_dir
from cpdm.compute_device import resolve_device
from cpdm.backbones.embedding import seeded
from cpdm.backbones.vision import StyleBackbone, finish, load_torch_checkpoint

FID_CHECKPOINT = "pt_inception-2015-12-05-6726825d.pth"
RELEASE_LAMBDAS = (0.5, 0.1, 6e4, 40.0)
# The release's mean over the four blocks, written as a weighted sum.
INCEPTION_LAYER_WEIGHTS = tuple(weight / len(RELEASE_LAMBDAS) for weight in RELEASE_LAMBDAS)
OUTPUT_BLOCKS = (0, 1, 2, 3)


def fid_inception(state_dict_for) -> nn.Module:
    """pytorch-fid's ``InceptionV3(output_blocks=[0, 1, 2, 3])`` with its default input handling.

    The package fetches its weights with ``load_state_dict_from_url``; that
    call is redirected to ``state_dict_for(network)``, which receives the
    freshly built, FID-patched torchvision network and returns the state
    dict to load into it (a local file's, or the network's own).
    """
    from pytorch_fid import inception as fid

    built = {}
    build_torchvision = fid._inception_v3

    def recording(*args, **kwargs):
        built["network"] = build_torchvision(*args, **kwargs)
        return built["network"]

    def local_state_dict(*args, **kwargs):
        return state_dict_for(built["network"])

    with mock.patch.object(fid, "_inception_v3", recording), mock.patch.object(
        fid, "load_state_dict_from_url", local_state_dict
    ):
        return fid.InceptionV3(output_blocks=list(OUTPUT_BLOCKS), resize_input=True, normalize_input=True)


def random_init(network: nn.Module) -> nn.Module:
    """He-normal convolutions, unit batch norms: random weights whose activations keep their scale."""
    for layer in network.modules():
        if isinstance(layer, (nn.Conv2d, nn.Linear)):
            nn.init.kaiming_normal_(layer.weight, nonlinearity="relu")
            if layer.bias is not None:
                nn.init.zeros_(layer.bias)
        elif isinstance(layer, nn.BatchNorm2d):
            nn.init.ones_(layer.weight)
            nn.init.zeros_(layer.bias)
    return network


def build_fid_inception(mode: str, seed: int) -> nn.Module:
    """The FID InceptionV3 with the weights of ``mode``."""
    if mode == "real":
        state = load_torch_checkpoint(
            torch_hub_checkpoint_dir() / FID_CHECKPOINT, "pytorch-fid InceptionV3 (FID)",
            "run: python -c \"from pytorch_fid.inception import InceptionV3; InceptionV3([0, 1, 2, 3])\"",
        )
        return fid_inception(lambda network: state)
    return seeded(seed, lambda: random_init(fid_inception(lambda network: network.state_dict())))


# --- the registry's interface (see cpdm.backbones) ---
PACKAGE = "pytorch-fid"
TINY = "the full FID InceptionV3 (the same architecture), seeded random weights"


def load(name: str, mode: str = "real", device="cpu", seed: int = 0, image_size: int | None = None) -> StyleBackbone:
    """The released metric's style network in eval mode on ``device``."""
    check_mode(mode)
    torch_device = resolve_device(device)
    if image_size is not None:
        raise BackboneError(f"{name} resizes every image to 299x299 as the release does; it takes no image_size")
    return finish(
        StyleBackbone(
            name=name,
            key=backbone_key(name, mode),
            layer_names=tuple(f"block{index}" for index in OUTPUT_BLOCKS),
            layer_weights=INCEPTION_LAYER_WEIGHTS,
            network=build_fid_inception(mode, seed),
            device=torch_device,
            image_size=None,  # the network resizes to 299x299 itself, after the mean is subtracted
            input_norm="subtract-mean",
        )
    )


def find_weights(name: str) -> Path | None:
    path = torch_hub_checkpoint_dir() / FID_CHECKPOINT
    return path if path.is_file() else None
