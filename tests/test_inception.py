"""``cpdm-inception`` is the CPDM release's style term: pytorch-fid's InceptionV3, its input and its formula."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from cpdm.backbones import load_style
from cpdm.errors import MissingWeightsError
from cpdm.scoring.engine import ScoringEngine, score_pairs
from cpdm.testing import Scorer
from cpdm.scoring.reader import load_scores
from cpdm.store.images import load_image
from tests.test_scoring import add_anchor


def _image(seed: int, size: tuple[int, int]) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8))


def _release_style_distance(blocks, image_a: Image.Image, image_g: Image.Image) -> float:
    """The issue's formula, written out here: mean over blocks 0-3 of λ_l ‖G_l(a) − G_l(g)‖²_F.

    Input: ToTensor() of the RGB image minus its scalar mean, then bilinear
    resize to 299×299 and 2x − 1; G = F Fᵀ / (C·H·W); λ = (0.5, 0.1, 6e4, 40).
    """
    lambdas = (0.5, 0.1, 6e4, 40.0)

    def grams(image):
        pixels = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0  # ToTensor's scaling, HWC
        x = torch.from_numpy(pixels).permute(2, 0, 1).unsqueeze(0)
        x = x - x.mean()
        x = F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False)
        x = 2 * x - 1
        result = []
        with torch.no_grad():
            for block in blocks:
                x = block(x)
                _, c, h, w = x.shape
                features = x.reshape(c, h * w).double()
                result.append(features @ features.T / (c * h * w))
        return result

    terms = [lam * float(((ga - gg) ** 2).sum()) for lam, ga, gg in zip(lambdas, grams(image_a), grams(image_g))]
    return sum(terms) / len(terms)


def test_style_distance_is_the_release_formula_through_engine_and_cache(ws):
    # Anchors and generations of different native sizes, scored through the engine and its feature cache.
    studies = [add_anchor(ws, 41, 2, size=(96, 80)), add_anchor(ws, 42, 1, size=(300, 260))]
    scorer = Scorer(style="cpdm-inception", offline_tiny=True, precision="fp32")
    engine = ScoringEngine(ws, scorer.semantic_backbone, scorer.style_backbone, batch_size=2, precision="fp32")
    score_pairs(ws, engine=engine, progress=False)
    frame = load_scores(ws, "tiny:ViT-L-14/openai", "tiny:cpdm-inception")
    assert len(frame) == 3
    blocks = scorer.style_backbone.network.blocks  # the shared random weights
    for row in frame.itertuples():
        anchor_sha = next(s["image"] for s in studies if s["anchor"] == row.anchor)
        anchor, generated = load_image(ws, anchor_sha), load_image(ws, row.image)
        expected = _release_style_distance(blocks, anchor, generated)
        assert expected > 0
        assert row.m_style == pytest.approx(expected, rel=1e-5)
        assert scorer(anchor, generated).m_style == pytest.approx(expected, rel=1e-5)
    same = load_image(ws, studies[0]["image"])
    assert scorer(same, same).m_style == 0.0


def _fid_reference(monkeypatch):
    """pytorch-fid's own InceptionV3([0, 1, 2, 3]), built here with its weight loading switched off."""
    import torchvision
    from pytorch_fid import inception as fid

    monkeypatch.setattr(fid, "load_state_dict_from_url", lambda *args, **kwargs: {})
    monkeypatch.setattr(torchvision.models.Inception3, "load_state_dict", lambda self, *args, **kwargs: None)
    return fid.InceptionV3([0, 1, 2, 3])


def test_module_structure_equals_pytorch_fid(monkeypatch):
    ours = load_style("cpdm-inception", mode="tiny").network
    reference = _fid_reference(monkeypatch)
    assert [(name, type(module)) for name, module in ours.named_modules()] == [
        (name, type(module)) for name, module in reference.named_modules()
    ]
    assert [(name, tuple(t.shape)) for name, t in ours.state_dict().items()] == [
        (name, tuple(t.shape)) for name, t in reference.state_dict().items()
    ]
    assert (ours.output_blocks, ours.resize_input, ours.normalize_input) == ([0, 1, 2, 3], True, True)
    # The FID-patched blocks, not torchvision's.
    patched = {name: type(module).__name__ for name, module in ours.blocks[2].named_children()}
    assert patched["0"] == "FIDInceptionA" and patched["4"] == "FIDInceptionC"
    assert [type(m).__name__ for m in ours.blocks[3]][1:3] == ["FIDInceptionE_1", "FIDInceptionE_2"]


def test_real_weights_come_from_the_fid_file_in_torch_hub(tmp_path, monkeypatch):
    from cpdm.backbones.inception import FID_CHECKPOINT, fid_inception

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    with pytest.raises(MissingWeightsError, match=FID_CHECKPOINT) as info:
        load_style("cpdm-inception", mode="real")
    assert "pytorch_fid" in str(info.value)
    assert not (tmp_path / "torch" / "hub" / "checkpoints").exists()  # nothing was downloaded
    # A weights file with known values, in the torch hub checkpoints folder where pytorch-fid keeps it.
    saved = {}

    def random_state(network):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(7)
            saved.update({k: torch.randn_like(v) if v.is_floating_point() else v for k, v in network.state_dict().items()})
        return saved

    fid_inception(random_state)
    path = tmp_path / "torch" / "hub" / "checkpoints" / FID_CHECKPOINT
    path.parent.mkdir(parents=True)
    torch.save(saved, path)
    network = load_style("cpdm-inception", mode="real").network
    assert torch.equal(network.blocks[0][0].conv.weight, saved["Conv2d_1a_3x3.conv.weight"])
    assert torch.equal(network.blocks[3][2].branch_pool.conv.weight, saved["Mixed_7c.branch_pool.conv.weight"])
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(MissingWeightsError, match="cannot load"):
        load_style("cpdm-inception", mode="real")
