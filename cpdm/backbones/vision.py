"""Gram-matrix style backbones: the shared :class:`StyleBackbone`, and VGG19 (Gatys et al.).

``vgg19``
    torchvision's VGG19 convolutional stack; Gram matrices at relu1_1,
    relu2_1, relu3_1, relu4_1 and relu5_1 (``features`` indices 1, 6, 11, 20,
    29), equal layer weights 0.2 (Gatys et al.'s w_l = 1/5). Input: resized
    (shorter side) and centre-cropped to 512×512, ImageNet-normalised.

Tiny mode keeps VGG19's layout with few channels (4-32) on 32×32 inputs,
random-initialised with a fixed seed. The released metric's InceptionV3 is
``cpdm.backbones.inception``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import torch
from PIL import Image
from torch import nn
from torchvision import transforms

from cpdm.backbones import BackboneError, backbone_key, check_mode, torch_hub_checkpoint_dir
from cpdm.compute_device import resolve_device
from cpdm.backbones.embedding import seeded
from cpdm.errors import MissingWeightsError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# VGG19 ("E" in torchvision): numbers are conv output channels, "M" a max-pool.
VGG19_LAYOUT = [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512, "M"]
TINY_VGG19_CHANNELS = {64: 4, 128: 8, 256: 16, 512: 32}
VGG19_STYLE_LAYERS = {"relu1_1": 1, "relu2_1": 6, "relu3_1": 11, "relu4_1": 20, "relu5_1": 29}
VGG19_LAYER_WEIGHTS = (0.2, 0.2, 0.2, 0.2, 0.2)
VGG19_IMAGE_SIZE = 512
TINY_VGG19_IMAGE_SIZE = 32
VGG19_CHECKPOINT = "vgg19-dcbb9e9d.pth"


class StagedLayers(nn.Module):
    """Consecutive stages; the output of each is one style layer's feature maps."""

    def __init__(self, stages: Sequence[nn.Module]):
        super().__init__()
        self.stages = nn.ModuleList(stages)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        outputs = []
        for stage in self.stages:
            x = stage(x)
            outputs.append(x)
        return outputs


@dataclass
class StyleBackbone:
    """A network whose forward returns the style layers' feature maps, with its input preparation.

    ``image_size`` is the square input side the image is resized and cropped
    to here, or None when the network takes each image at its native size
    (then batches hold images of one size only). ``input_norm`` is
    ``imagenet`` or ``subtract-mean`` (ToTensor minus its scalar mean).
    """

    name: str
    key: str
    layer_names: tuple[str, ...]
    layer_weights: tuple[float, ...]
    network: nn.Module
    device: torch.device
    image_size: int | None
    input_norm: str
    role = "style"
    descriptor = "gram"
    _to_tensor: transforms.Compose = field(init=False, repr=False)

    def __post_init__(self) -> None:
        steps = []
        if self.image_size is not None:
            steps += [
                transforms.Resize(self.image_size, interpolation=transforms.InterpolationMode.BILINEAR, antialias=True),
                transforms.CenterCrop(self.image_size),
            ]
        steps.append(transforms.ToTensor())
        if self.input_norm == "imagenet":
            steps.append(transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD))
        self._to_tensor = transforms.Compose(steps)

    @property
    def model(self) -> nn.Module:
        """The module holding the weights (the same name as embedding backbones use)."""
        return self.network

    def prepare(self, image: Image.Image) -> torch.Tensor:
        """One PIL image as the (3, H, W) input tensor."""
        tensor = self._to_tensor(image.convert("RGB"))
        if self.input_norm == "subtract-mean":
            tensor = tensor - tensor.mean()
        return tensor

    @torch.inference_mode()
    def feature_maps(self, batch: torch.Tensor) -> list[torch.Tensor]:
        """Each style layer's feature maps (N, C, H, W) as float32, on the backbone's device."""
        # channels_last lets oneDNN (CPU) and cuDNN (GPU) pick their faster convolution kernels.
        x = batch.to(self.device).contiguous(memory_format=torch.channels_last)
        return [maps.float() for maps in self.network(x)]  # fp16 under autocast

    def grams(self, images: Sequence[Image.Image]) -> list[torch.Tensor]:
        """Gram matrices per layer, each (N, C, C) float32 on the CPU, of same-size PIL images."""
        from cpdm.metric import gram_matrix

        batch = torch.stack([self.prepare(image) for image in images])
        return [gram_matrix(maps).cpu() for maps in self.feature_maps(batch)]


def finish(backbone: StyleBackbone) -> StyleBackbone:
    """Move the network to its device in channels-last layout, in eval mode."""
    backbone.network.to(backbone.device, memory_format=torch.channels_last).eval()
    return backbone


def load_torch_checkpoint(path: Path, model: str, how: str) -> dict:
    """A state dict from a local file, or a MissingWeightsError saying which file and how to get it."""
    if not path.is_file():
        raise MissingWeightsError(
            f"{model} weights are not on this machine: expected {path}. On a machine with network {how} "
            f"and copy {path.name} into {path.parent} (or set TORCH_HOME); --offline-tiny uses a tiny random model instead"
        )
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a truncated download, a wrong file
        raise MissingWeightsError(f"{path}: cannot load {model} weights ({exc}); delete it and fetch it again") from exc


def _vgg_init(module: nn.Module) -> nn.Module:
    """torchvision's VGG initialisation for conv layers."""
    for layer in module.modules():
        if isinstance(layer, nn.Conv2d):
            nn.init.kaiming_normal_(layer.weight, mode="fan_out", nonlinearity="relu")
            nn.init.constant_(layer.bias, 0)
    return module


def build_vgg19_features(mode: str, seed: int) -> nn.Sequential:
    """VGG19's ``features`` up to relu5_1 (indices 0-29), with the weights of ``mode``."""
    from torchvision.models import vgg
    from torchvision.models.vgg import make_layers

    last = VGG19_STYLE_LAYERS["relu5_1"]
    if mode == "tiny":
        layout = [TINY_VGG19_CHANNELS[v] if v != "M" else v for v in VGG19_LAYOUT]
        features = seeded(seed, lambda: _vgg_init(make_layers(layout, batch_norm=False)))
    elif mode == "random":
        features = seeded(seed, lambda: _vgg_init(make_layers(VGG19_LAYOUT, batch_norm=False)))
    else:
        state = load_torch_checkpoint(
            torch_hub_checkpoint_dir() / VGG19_CHECKPOINT, "VGG19 ImageNet",
            "run: python -c \"import torchvision; torchvision.models.vgg19(weights='IMAGENET1K_V1')\"",
        )
        model = vgg.vgg19(weights=None, init_weights=False)
        model.load_state_dict(state)
        features = model.features
    return features[: last + 1]


def vgg19_stages(features: nn.Sequential) -> StagedLayers:
    """Split VGG19's features so stage i ends at the i-th style layer (relu1_1 … relu5_1)."""
    stages, start = [], 0
    for index in VGG19_STYLE_LAYERS.values():
        stages.append(features[start : index + 1])
        start = index + 1
    return StagedLayers(stages)


# --- the registry's interface (see cpdm.backbones) ---
PACKAGE = "torchvision"
TINY = "VGG19's layout with 4-32 channels on 32x32 inputs, seeded random weights"


def load(name: str, mode: str = "real", device="cpu", seed: int = 0, image_size: int | None = None) -> StyleBackbone:
    """VGG19 style layers in eval mode on ``device``; ``image_size`` overrides the input side (part of the key)."""
    check_mode(mode)
    torch_device = resolve_device(device)
    if image_size is not None and (not isinstance(image_size, int) or image_size < 16):
        raise BackboneError(f"image_size must be an integer of at least 16 pixels, got {image_size!r}")
    default_size = TINY_VGG19_IMAGE_SIZE if mode == "tiny" else VGG19_IMAGE_SIZE
    return finish(
        StyleBackbone(
            name=name,
            key=backbone_key(name, mode, image_size if image_size and image_size != default_size else None),
            layer_names=tuple(VGG19_STYLE_LAYERS),
            layer_weights=VGG19_LAYER_WEIGHTS,
            network=vgg19_stages(build_vgg19_features(mode, seed)),
            device=torch_device,
            image_size=image_size or default_size,
            input_norm="imagenet",
        )
    )


def find_weights(name: str) -> Path | None:
    path = torch_hub_checkpoint_dir() / VGG19_CHECKPOINT
    return path if path.is_file() else None
