"""The whole path without Python, on tiny models: anchors -> prompts -> images -> scores -> ratings -> weights."""

from __future__ import annotations

import json

import pytest

from cpdm.cli import cli
from tests.curation_support import write_banks
from tests.conftest import write_png


def _run(runner, *args):
    result = runner.invoke(cli, list(args), catch_exceptions=False)
    assert result.exit_code == 0, f"cpdm {' '.join(args)} failed:\n{result.output}"
    return result.output


@pytest.mark.slow  # the tiny CLIP, Stable Diffusion and VGG load and run one after another: ~45 s on 2 shared cores
def test_import_interrogate_refine_generate_score_campaign_rate_calibrate(tmp_path, runner):
    folder = tmp_path / "artworks"
    meta = ["file,artist,title"]
    for i in range(4):
        write_png(folder / f"work{i}.png", seed=200 + i, size=(48, 40))
        meta.append(f"work{i}.png,Artist {i % 2},Work {i}")
    (folder / "anchors.csv").write_text("\n".join(meta) + "\n")
    banks = write_banks(tmp_path / "banks")
    ws = ["--workspace", str(tmp_path / "ws")]

    _run(runner, "init", *ws)
    assert "imported 4" in _run(runner, "anchors", "import", str(folder), "--meta", str(folder / "anchors.csv"), *ws)
    assert "interrogated 4 anchors" in _run(runner, "prompts", "interrogate", "--offline-tiny", "--banks", str(banks),
                                            "--model", "ViT-B-32/openai", "-q", *ws)
    assert "refined 4 prompts" in _run(runner, "prompts", "refine", "-q", *ws)
    listed = json.loads(_run(runner, "prompts", "list", "--origin", "template", "--format", "json", *ws))
    assert len(listed) == 4 and all(p["parent"] and p["author"] == "template" for p in listed)
    generated = _run(runner, "generate", "--offline-tiny", "--per-prompt", "3", "--steps", "2", "--height", "32",
                     "--width", "32", "-q", *ws)
    assert "generated 12 images" in generated
    assert "generated 0 images, skipped 12" in _run(runner, "generate", "--offline-tiny", "--per-prompt", "3",
                                                    "--steps", "2", "--height", "32", "--width", "32", "-q", *ws)
    _run(runner, "score", "--all", "--offline-tiny", "--semantic", "ViT-B-32/openai", "-q", *ws)
    _run(runner, "campaign", "create", "study", "--overlap", "artist=3,lay=3", *ws)
    _run(runner, "simulate-ratings", "--campaign", "study", "--artists", "4", "--lay", "4", *ws)
    weights_path = tmp_path / "weights.json"
    calibrated = _run(runner, "calibrate", "--campaign", "study", "--group", "artists", "--n-boot", "50",
                      "--folds", "2", "--out", str(weights_path), *ws)
    assert "written to" in calibrated
    weights = json.loads(weights_path.read_text())
    assert 0.0 <= weights["w"] <= 1.0 and weights["n_pairs"] >= 12
    scored = _run(runner, "scores", "list", "--weights", str(weights_path), "--limit", "0", *ws)
    assert "original" in scored
