"""The backbone registry: every backbone by name, tiny mode end to end, several combinations in one pass."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cpdm import backbones as registry
from cpdm import executor as executor_module
from cpdm.backbones import BackboneError, load_semantic, load_style, lookup
from cpdm.cli import cli
from cpdm.errors import MissingWeightsError
from cpdm.scoring.engine import ScoringEngine, score_pairs
from cpdm.testing import Scorer
from cpdm.scoring.reader import available_backbones, load_scores
from cpdm.store.images import load_image
from tests.test_scoring import add_anchor

SEMANTIC = ["ViT-L-14/openai", "ViT-H-14/laion2b_s32b_b79k", "dinov2"]
STYLE = ["vgg19", "cpdm-inception", "csd"]


def test_every_registered_name_resolves_to_its_role():
    assert set(SEMANTIC + STYLE) == {entry.name for entry in registry.REGISTRY}
    for name in SEMANTIC:
        assert lookup(name).role == "semantic"
    for name in STYLE:
        assert lookup(name).role == "style"
    assert lookup("ViT-B-32/openai").module == "clip"  # any open_clip name
    assert lookup("csd/some/file.pth").module == "csd"
    assert lookup("dinov2/facebook/dinov2-large").module == "dinov2"
    with pytest.raises(BackboneError, match="dinov2 is a semantic backbone, not a style one"):
        load_style("dinov2", mode="tiny")
    with pytest.raises(BackboneError, match="csd is a style backbone, not a semantic one"):
        load_semantic("csd", mode="tiny")
    with pytest.raises(BackboneError, match="unknown backbone 'lpips'"):
        lookup("lpips")


def test_all_backbones_in_one_pass_decode_each_image_once_and_run_each_backbone_once(ws, monkeypatch):
    studies = [add_anchor(ws, 101, 2, size=(40, 36)), add_anchor(ws, 102, 2, size=(40, 36))]
    semantics = [load_semantic(name, mode="tiny") for name in SEMANTIC]
    styles = [load_style(name, mode="tiny") for name in STYLE]
    decoded, described = [], {}
    open_original = executor_module.open_stored_image
    monkeypatch.setattr(executor_module, "open_stored_image", lambda path, sha: decoded.append(sha) or open_original(path, sha))
    for backbone in semantics + styles:
        method = "embed_batch" if backbone.descriptor == "embedding" else "feature_maps"
        original = getattr(backbone, method)
        setattr(backbone, method, lambda batch, o=original, k=backbone.key: described.setdefault(k, []).append(len(batch)) or o(batch))
    engine = ScoringEngine(ws, semantics, styles, batch_size=8, precision="fp32")
    report = score_pairs(ws, engine=engine, progress=False)
    n_images = 6  # 2 anchors + 4 generations
    assert sorted(decoded) == sorted(set(decoded)) and len(decoded) == n_images
    assert {key: sum(counts) for key, counts in described.items()} == {b.key: n_images for b in semantics + styles}
    assert report.pairs_scored == 4 and report.scores_written == 4 * 9
    assert len(available_backbones(ws)) == 9
    again = score_pairs(ws, engine=engine, progress=False)
    assert (again.pairs_scored, again.images_computed, again.pairs_already_scored) == (0, 0, 4)
    for semantic in semantics:
        for style in styles:
            frame = load_scores(ws, semantic.key, style.key)
            assert len(frame) == 4 and (frame["m_sem"] > 0).all() and (frame["m_style"] > 0).all()
    csd = load_scores(ws, "tiny:dinov2", "tiny:csd")
    assert (csd["m_style"] <= 2.0).all()  # a cosine distance
    # Cached descriptors give what a direct scorer computes.
    scorer = Scorer(semantic="dinov2", style="csd", offline_tiny=True)
    for row in csd.itertuples():
        anchor = next(s["image"] for s in studies if s["anchor"] == row.anchor)
        direct = scorer(load_image(ws, anchor), load_image(ws, row.image))
        assert row.m_sem == pytest.approx(direct.m_sem, abs=1e-6)
        assert row.m_style == pytest.approx(direct.m_style, abs=1e-6)
    image = load_image(ws, studies[0]["image"])
    assert (scorer(image, image).m_sem, scorer(image, image).m_style) == (0.0, 0.0)


def test_csd_reads_the_authors_checkpoint_layout(tmp_path):
    from cpdm.backbones.csd import load_csd_weights

    source = load_style("csd", mode="tiny", seed=3).model
    # The authors' file: DataParallel prefixes, the tower without its projection, the two heads.
    state = {f"module.backbone.{k}": v for k, v in source.state_dict().items() if k != "proj"}
    state["module.last_layer_style"] = source.proj.detach().clone()
    state["module.last_layer_content"] = torch.zeros_like(source.proj)
    path = tmp_path / "checkpoint.pth"
    torch.save({"model_state_dict": state, "epoch": 1}, path)
    target = load_style("csd", mode="tiny", seed=4)
    load_csd_weights(target.model, path)
    batch = torch.rand(2, 3, 32, 32)
    assert torch.equal(target.embed_batch(batch), load_style("csd", mode="tiny", seed=3).embed_batch(batch))
    del state["module.last_layer_style"]
    torch.save({"model_state_dict": state}, path)
    with pytest.raises(MissingWeightsError, match="no last_layer_style"):
        load_csd_weights(target.model, path)


def test_missing_real_weights_name_the_file_and_how_to_get_it(empty_caches):
    with pytest.raises(MissingWeightsError, match="csd_checkpoint.pth.*learn2phoenix/CSD"):
        load_style("csd", mode="real")
    with pytest.raises(MissingWeightsError, match="facebook/dinov2-base.*Dinov2Model.from_pretrained"):
        load_semantic("dinov2", mode="real")
    with pytest.raises(MissingWeightsError, match="ViT-H-14/laion2b_s32b_b79k"):
        load_semantic("ViT-H-14/laion2b_s32b_b79k", mode="real")
    assert not (empty_caches / "hf" / "hub" / "models--facebook--dinov2-base").exists()


def test_cli_backbones_list_shows_what_is_here(empty_caches, runner):
    result = runner.invoke(cli, ["backbones", "list"])
    assert result.exit_code == 0, result.output
    for name in SEMANTIC + STYLE:
        assert f"{name}  [" in result.output
    assert "pytorch-fid (installed)" in result.output
    assert result.output.count("real weights: missing") == 6
    checkpoint = empty_caches / "torch" / "hub" / "checkpoints" / "csd_checkpoint.pth"
    checkpoint.parent.mkdir(parents=True)
    checkpoint.write_bytes(b"x")
    result = runner.invoke(cli, ["backbones", "list"])
    assert f"real weights: {checkpoint}" in result.output
    assert result.output.count("real weights: missing") == 5


def test_cli_scores_several_combinations_in_one_pass(ws, runner, tmp_path):
    add_anchor(ws, 111, 2)
    add_anchor(ws, 112, 2)
    args = ["score", "--all", "--offline-tiny", "-q", "--workspace", str(ws.root)]
    result = runner.invoke(cli, [*args, "--backbones", "ViT-L-14/openai,dinov2,vgg19,csd"])
    assert result.exit_code == 0, result.output
    assert "4 combinations" in result.output
    assert sorted(available_backbones(ws)) == sorted(
        (f"tiny:{s}", f"tiny:{t}") for s in ("ViT-L-14/openai", "dinov2") for t in ("vgg19", "csd")
    )
    before = ws.conn.execute("SELECT COUNT(*), TOTAL(m_style) FROM scores").fetchone()
    for extra, message, code in [
        (["--backbones", "dinov2,ViT-L-14/openai"], "at least one semantic and one style", 2),
        (["--backbones", "dinov2,vgg19", "--style", "csd"], "not both", 2),
        (["--backbones", "dinov2,,vgg19"], "empty name", 2),
        (["--backbones", "dinov2,lpips"], "unknown backbone 'lpips'", 2),
    ]:
        result = runner.invoke(cli, [*args, *extra])
        assert result.exit_code == code and message in result.output, (extra, result.output)
    weights = tmp_path / "w.json"
    weights.write_text('{"format": "cpdm-weights/1", "w": 0.5, "x_ref": 1.0, "semantic": "tiny:dinov2", "style": "tiny:cpdm-inception"}')
    result = runner.invoke(cli, [*args, "--backbones", "dinov2,vgg19,csd", "--weights", str(weights)])
    assert result.exit_code == 1 and "calibrated for semantic=tiny:dinov2 style=tiny:cpdm-inception" in result.output
    assert ws.conn.execute("SELECT COUNT(*), TOTAL(m_style) FROM scores").fetchone() == before
    weights.write_text(weights.read_text().replace("cpdm-inception", "csd"))
    result = runner.invoke(cli, [*args, "--backbones", "dinov2,vgg19,csd", "--weights", str(weights)])
    assert result.exit_code == 0, result.output
    assert result.output.count("CM_w with w=0.5") == 1  # only the combination the weights were calibrated for


def test_tiny_backbones_are_deterministic_per_seed():
    batch = torch.rand(2, 3, 32, 32)
    for name in ("dinov2", "csd", "ViT-H-14/laion2b_s32b_b79k"):
        loader = load_style if lookup(name).role == "style" else load_semantic
        first, again, other = (loader(name, mode="tiny", seed=s).embed_batch(batch) for s in (0, 0, 1))
        assert torch.equal(first, again) and not torch.allclose(first, other), name
        assert np.allclose(first.norm(dim=1).numpy(), 1.0)
