"""Style feature extractors for M_style: VGG19 (Gatys et al.) and InceptionV3 (the CPDM authors' code).

``vgg19``
    torchvision's VGG19 convolutional stack; Gram matrices at relu1_1,
    relu2_1, relu3_1, relu4_1 and relu5_1 (``features`` indices 1, 6, 11, 20,
    29), equal layer weights 0.2 (Gatys et al.'s w_l = 1/5). Input: resized
    (shorter side) and centre-cropped to 512×512, ImageNet-normalised.

``cpdm-inception``
    torchvision's InceptionV3 split into the four blocks the authors' released
    code uses (the pytorch-fid split): block 0 = Conv2d_1a..2b + max-pool,
    block 1 = Conv2d_3b, 4a + max-pool, block 2 = Mixed_5b..6e, block 3 =
    Mixed_7a..7c + global average pool; λ = (0.5, 0.1, 6e4, 40). Input: the
    image at its native resolution, ``ToTensor()`` (values in [0, 1]) minus
    that tensor's mean (one scalar over all channels and pixels). Images must be
    at least 75 pixels a side (block 3 needs it).

Tiny mode keeps each layout with few channels (VGG19: 4-32 channels, 32×32
input) or, for InceptionV3, the full architecture (it is fast at small native
inputs), random-initialised with a fixed seed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import torch
from PIL import Image
from torch import nn
from torchvision import transforms

from cpdm.backbones import (
    BackboneError,
    backbone_key,
    check_mode,
    check_style_name,
    resolve_device,
    torch_hub_checkpoint_dir,
)
from cpdm.errors import CpdmError, MissingWeightsError

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

INCEPTION_BLOCKS = {
    "block0": ("Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3", "maxpool1"),
    "block1": ("Conv2d_3b_1x1", "Conv2d_4a_3x3", "maxpool2"),
    "block2": ("Mixed_5b", "Mixed_5c", "Mixed_5d", "Mixed_6a", "Mixed_6b", "Mixed_6c", "Mixed_6d", "Mixed_6e"),
    "block3": ("Mixed_7a", "Mixed_7b", "Mixed_7c", "avgpool"),
}
INCEPTION_LAYER_WEIGHTS = (0.5, 0.1, 6e4, 40.0)
INCEPTION_MIN_SIDE = 75
INCEPTION_CHECKPOINT = "inception_v3_google-0cc3c7bd.pth"


@dataclass
class StyleBackbone:
    """A stack of stages whose outputs are the style layers, with its input preparation.

    ``stages[i]`` maps the output of stage i-1 (or the image) to layer i's
    feature maps. ``image_size`` is the square input side, or None for the
    native resolution (then batches hold images of one size only).
    """

    name: str
    key: str
    layer_names: tuple[str, ...]
    layer_weights: tuple[float, ...]
    stages: nn.ModuleList
    device: torch.device
    image_size: int | None
    input_norm: str  # "imagenet" or "subtract-mean"
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

    def prepare(self, image: Image.Image) -> torch.Tensor:
        """One PIL image as the (3, H, W) input tensor."""
        image = image.convert("RGB")
        if self.image_size is None and min(image.size) < INCEPTION_MIN_SIDE:
            raise CpdmError(
                f"{self.name} needs images at least {INCEPTION_MIN_SIDE} pixels a side, got {image.size[0]}x{image.size[1]}"
            )
        tensor = self._to_tensor(image)
        if self.input_norm == "subtract-mean":
            tensor = tensor - tensor.mean()
        return tensor

    @torch.inference_mode()
    def feature_maps(self, batch: torch.Tensor) -> list[torch.Tensor]:
        """Each style layer's feature maps (N, C, H, W) as float32, on the backbone's device."""
        # channels_last lets oneDNN (CPU) and cuDNN (GPU) pick their faster convolution kernels.
        x = batch.to(self.device).contiguous(memory_format=torch.channels_last)
        outputs = []
        for stage in self.stages:
            x = stage(x)
            outputs.append(x.float())  # fp16 under autocast
        return outputs

    def grams(self, images: Sequence[Image.Image]) -> list[torch.Tensor]:
        """Gram matrices per layer, each (N, C, C) float32 on the CPU, of same-size PIL images."""
        from cpdm.metric import gram_matrix

        batch = torch.stack([self.prepare(image) for image in images])
        return [gram_matrix(maps).cpu() for maps in self.feature_maps(batch)]


def _seeded(seed: int, build):
    """Run ``build()`` under a fixed torch seed without disturbing the caller's RNG."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build()


def _checkpoint_or_raise(filename: str, model: str, builder: str) -> dict:
    """Load a torchvision checkpoint from torch hub's folder, or say how to get it."""
    path = torch_hub_checkpoint_dir() / filename
    if not path.is_file():
        raise MissingWeightsError(
            f"{model} ImageNet weights are not on this machine: expected {path}. "
            f"On a machine with network run: python -c \"import torchvision; torchvision.models.{builder}\" "
            f"and copy {filename} into {path.parent} (or set TORCH_HOME); --offline-tiny uses a tiny random model instead"
        )
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a truncated download, a wrong file
        raise MissingWeightsError(f"{path}: cannot load {model} weights ({exc}); delete it and fetch it again") from exc


def _vgg_init(module: nn.Module) -> None:
    """torchvision's VGG initialisation for conv layers."""
    for layer in module.modules():
        if isinstance(layer, nn.Conv2d):
            nn.init.kaiming_normal_(layer.weight, mode="fan_out", nonlinearity="relu")
            nn.init.constant_(layer.bias, 0)


def build_vgg19_features(mode: str, seed: int) -> nn.Sequential:
    """VGG19's ``features`` up to relu5_1 (indices 0-29), with the weights of ``mode``."""
    from torchvision.models import vgg
    from torchvision.models.vgg import make_layers

    last = VGG19_STYLE_LAYERS["relu5_1"]
    if mode == "tiny":
        layout = [TINY_VGG19_CHANNELS[v] if v != "M" else v for v in VGG19_LAYOUT]
        features = _seeded(seed, lambda: _init_and_return(make_layers(layout, batch_norm=False)))
    elif mode == "random":
        features = _seeded(seed, lambda: _init_and_return(make_layers(VGG19_LAYOUT, batch_norm=False)))
    else:
        state = _checkpoint_or_raise(VGG19_CHECKPOINT, "VGG19", "vgg19(weights='IMAGENET1K_V1')")
        model = vgg.vgg19(weights=None, init_weights=False)
        model.load_state_dict(state)
        features = model.features
    return features[: last + 1]


def _init_and_return(module: nn.Module) -> nn.Module:
    _vgg_init(module)
    return module


def build_inception(mode: str, seed: int) -> nn.Module:
    """torchvision's InceptionV3 with the weights of ``mode`` (tiny and random: full size, random)."""
    from torchvision.models import inception_v3

    if mode in ("tiny", "random"):
        return _seeded(seed, lambda: inception_v3(weights=None, aux_logits=False, init_weights=True))
    state = _checkpoint_or_raise(INCEPTION_CHECKPOINT, "InceptionV3", "inception_v3(weights='IMAGENET1K_V1')")
    model = inception_v3(weights=None, aux_logits=True, init_weights=False)
    model.load_state_dict(state)
    return model


def vgg19_stages(features: nn.Sequential) -> nn.ModuleList:
    """Split VGG19's features so stage i ends at the i-th style layer (relu1_1 … relu5_1)."""
    stages, start = [], 0
    for index in VGG19_STYLE_LAYERS.values():
        stages.append(features[start : index + 1])
        start = index + 1
    return nn.ModuleList(stages)


def inception_stages(model: nn.Module) -> nn.ModuleList:
    """InceptionV3 split into blocks 0-3 (see the module docstring)."""
    return nn.ModuleList(
        nn.Sequential(*(getattr(model, name) for name in names)) for names in INCEPTION_BLOCKS.values()
    )


def load_style_backbone(
    name: str, mode: str = "real", device="cpu", seed: int = 0, image_size: int | None = None
) -> StyleBackbone:
    """Build the style backbone ``name`` (``vgg19`` or ``cpdm-inception``) in eval mode on ``device``.

    ``image_size`` overrides VGG19's input side (benchmarks); the override is
    part of the stored key. ``cpdm-inception`` always works at native resolution.
    """
    check_style_name(name)
    check_mode(mode)
    torch_device = resolve_device(device)
    if image_size is not None and (not isinstance(image_size, int) or image_size < 16):
        raise BackboneError(f"image_size must be an integer of at least 16 pixels, got {image_size!r}")
    if name == "vgg19":
        stages = vgg19_stages(build_vgg19_features(mode, seed))
        default_size = TINY_VGG19_IMAGE_SIZE if mode == "tiny" else VGG19_IMAGE_SIZE
        size = image_size or default_size
        backbone = StyleBackbone(
            name=name,
            key=backbone_key(name, mode, image_size if image_size and image_size != default_size else None),
            layer_names=tuple(VGG19_STYLE_LAYERS),
            layer_weights=VGG19_LAYER_WEIGHTS,
            stages=stages,
            device=torch_device,
            image_size=size,
            input_norm="imagenet",
        )
    else:
        if image_size is not None:
            raise BackboneError("cpdm-inception works at each image's native resolution; it takes no image_size")
        backbone = StyleBackbone(
            name=name,
            key=backbone_key(name, mode),
            layer_names=tuple(INCEPTION_BLOCKS),
            layer_weights=INCEPTION_LAYER_WEIGHTS,
            stages=inception_stages(build_inception(mode, seed)),
            device=torch_device,
            image_size=None,
            input_norm="subtract-mean",
        )
    backbone.stages.to(torch_device, memory_format=torch.channels_last).eval()
    return backbone
