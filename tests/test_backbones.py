"""Backbones: tiny models build offline and deterministically; real ones never download."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from cpdm.backbones import BackboneError, backbone_key, load_semantic, load_style
from cpdm.compute_device import DeviceError, resolve_device
from cpdm.backbones.clip import find_cached_checkpoint
from cpdm.backbones.vision import VGG19_LAYOUT, VGG19_STYLE_LAYERS
from cpdm.errors import CpdmError, MissingWeightsError


def _image(seed: int, size=(80, 96)) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8))


def test_tiny_clip_is_deterministic_for_a_seed():
    images = [_image(0), _image(1)]
    first = load_semantic("ViT-L-14/openai", mode="tiny", seed=0).embed(images)
    again = load_semantic("ViT-L-14/openai", mode="tiny", seed=0).embed(images)
    other = load_semantic("ViT-L-14/openai", mode="tiny", seed=1).embed(images)
    assert torch.equal(first, again)
    assert not torch.allclose(first, other)
    assert torch.allclose(first.norm(dim=1), torch.ones(2))
    assert not torch.allclose(first[0], first[1])


def test_tiny_clip_key_is_prefixed():
    assert load_semantic("ViT-B-32/openai", mode="tiny").key == "tiny:ViT-B-32/openai"
    assert backbone_key("vgg19") == "vgg19"
    assert backbone_key("vgg19", "random", 128) == "random:vgg19@128"


def test_tiny_models_leave_the_global_rng_alone():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    load_style("vgg19", mode="tiny", seed=5)
    assert torch.equal(torch.rand(3), expected)


def test_tiny_vgg19_keeps_the_vgg19_layer_indices():
    from torchvision.models.vgg import make_layers

    tiny = load_style("vgg19", mode="tiny")
    full = make_layers(VGG19_LAYOUT)[: VGG19_STYLE_LAYERS["relu5_1"] + 1]
    tiny_layers = [layer for stage in tiny.network.stages for layer in stage]
    assert [type(layer) for layer in tiny_layers] == [type(layer) for layer in full]
    for name, index in VGG19_STYLE_LAYERS.items():
        assert isinstance(tiny_layers[index], nn.ReLU), name
    grams = tiny.grams([_image(0), _image(1)])
    assert [g.shape for g in grams] == [(2, 4, 4), (2, 8, 8), (2, 16, 16), (2, 32, 32), (2, 32, 32)]
    assert tiny.layer_names == ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1")


def test_tiny_vgg19_is_deterministic_for_a_seed():
    images = [_image(2), _image(3)]
    a = load_style("vgg19", mode="tiny", seed=0).grams(images)
    b = load_style("vgg19", mode="tiny", seed=0).grams(images)
    c = load_style("vgg19", mode="tiny", seed=1).grams(images)
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not all(torch.allclose(x, y) for x, y in zip(a, c))


@pytest.mark.slow
def test_tiny_inception_is_deterministic():
    first = load_style("cpdm-inception", mode="tiny", seed=0)
    second = load_style("cpdm-inception", mode="tiny", seed=0)
    for p, q in zip(first.network.parameters(), second.network.parameters()):
        assert torch.equal(p, q)


def test_cpdm_inception_input_is_to_tensor_minus_its_mean_at_any_size():
    backbone = load_style("cpdm-inception", mode="tiny")
    # The release's mean over the four blocks, as weights lambda / 4.
    assert backbone.layer_weights == (0.125, 0.025, 1.5e4, 10.0)
    prepared = backbone.prepare(_image(0, size=(60, 96)))
    assert prepared.shape == (3, 96, 60)  # the network resizes to 299x299 itself, after the mean is taken
    assert abs(float(prepared.mean())) < 1e-6
    grams = backbone.grams([_image(0, size=(60, 96))])
    assert [g.shape[-1] for g in grams] == [64, 192, 768, 2048]


def test_unknown_backbone_names():
    with pytest.raises(BackboneError, match="unknown style backbone 'vgg16'.*cpdm-inception"):
        load_style("vgg16", mode="tiny")
    with pytest.raises(BackboneError, match="no model 'ViT-Q-99'"):
        load_semantic("ViT-Q-99/openai", mode="tiny")
    with pytest.raises(BackboneError, match="no pretrained tag 'nonsense'"):
        load_semantic("ViT-B-32/nonsense", mode="tiny")
    with pytest.raises(BackboneError, match="MODEL/TAG"):
        load_semantic("ViT-B-32", mode="tiny")
    with pytest.raises(BackboneError, match="unknown backbone mode"):
        load_style("vgg19", mode="huge")


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_without_cuda_is_a_clear_error():
    with pytest.raises(DeviceError, match="CUDA is not available"):
        resolve_device("cuda")
    with pytest.raises(DeviceError, match="CUDA is not available"):
        load_style("vgg19", mode="tiny", device="cuda")
    with pytest.raises(DeviceError, match="unknown device"):
        resolve_device("tpu")


def test_missing_torchvision_weights_say_which_file(empty_caches):
    with pytest.raises(MissingWeightsError) as info:
        load_style("vgg19", mode="real")
    message = str(info.value)
    assert "vgg19-dcbb9e9d.pth" in message and str(empty_caches / "torch" / "hub" / "checkpoints") in message
    assert "IMAGENET1K_V1" in message
    with pytest.raises(MissingWeightsError, match="pt_inception-2015-12-05-6726825d.pth"):
        load_style("cpdm-inception", mode="real")
    assert not (empty_caches / "torch" / "hub" / "checkpoints").exists()  # nothing was downloaded


def test_missing_clip_weights_say_where_and_how(empty_caches):
    with pytest.raises(MissingWeightsError) as info:
        load_semantic("ViT-L-14/openai", mode="real")
    message = str(info.value)
    assert "ViT-L-14/openai" in message
    assert str(empty_caches / "hf" / "hub") in message
    assert "ViT-L-14.pt" in message
    assert "create_model_and_transforms('ViT-L-14', pretrained='openai')" in message
    assert not (empty_caches / "home" / ".cache" / "clip").exists()


def test_clip_checkpoints_are_found_in_the_caches(empty_caches):
    assert find_cached_checkpoint("ViT-B-32", "openai") is None
    # open_clip's URL cache.
    url_file = empty_caches / "home" / ".cache" / "clip" / "ViT-B-32.pt"
    url_file.parent.mkdir(parents=True)
    url_file.write_bytes(b"x")
    assert find_cached_checkpoint("ViT-B-32", "openai") == url_file
    # The Hugging Face cache wins when both hold the weights.
    repo = empty_caches / "hf" / "hub" / "models--timm--vit_base_patch32_clip_224.openai"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("abc123")
    snapshot = repo / "snapshots" / "abc123"
    snapshot.mkdir(parents=True)
    (snapshot / "open_clip_model.safetensors").write_bytes(b"x")
    assert find_cached_checkpoint("ViT-B-32", "openai") == snapshot / "open_clip_model.safetensors"
    # A file given as the tag is taken as is.
    local = empty_caches / "my.bin"
    local.write_bytes(b"x")
    assert find_cached_checkpoint("ViT-B-32", str(local)) == local
