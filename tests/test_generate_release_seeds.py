"""Release seed mode: a prompt's images drawn as the CPDM release drew them, from one generator per prompt."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from cpdm.curation.prompts import add_manual_prompt
from cpdm.errors import CpdmError
from cpdm.generation.batch import GenerationSettings, run_generation
from cpdm.diffusion.tiny import tiny_sd_pipeline
from cpdm.store.images import load_image
from tests.curation_support import add_anchors

RELEASE = GenerationSettings(per_prompt=3, steps=2, height=32, width=32, seed_mode="release")
PER_IMAGE = GenerationSettings(per_prompt=3, steps=2, height=32, width=32)


@pytest.fixture(scope="module")
def pipeline():
    return tiny_sd_pipeline()


@pytest.fixture
def prompted(ws, tmp_path):
    anchors = add_anchors(ws, tmp_path / "anchors", count=1)
    return ws, add_manual_prompt(ws, anchors[0], "a painting number 1")


def _rows(ws, generation_ids):
    marks = ",".join("?" * len(generation_ids))
    return ws.conn.execute(f"SELECT id, seed, image, params FROM generations WHERE id IN ({marks}) ORDER BY id",
                           generation_ids).fetchall()


def _pixels(image) -> np.ndarray:
    return np.asarray(image.convert("RGB"))


def test_release_images_are_a_direct_diffusers_batch_from_one_generator(prompted, pipeline):
    ws, prompt = prompted
    report = run_generation(ws, settings=RELEASE, offline_tiny=True, progress=False, pipeline=pipeline)
    rows = _rows(ws, report.generated)
    assert [seed for _, seed, _, _ in rows] == [23, 23, 23]
    params = [json.loads(p) for *_, p in rows]
    assert [(p["seed_mode"], p["index"]) for p in params] == [("release", k) for k in range(3)]
    assert sorted(report.ids) == [(prompt, 23, k) for k in range(3)]

    with torch.inference_mode():
        direct = pipeline(["a painting number 1"] * 3, height=32, width=32, num_inference_steps=2, guidance_scale=9.0,
                          generator=torch.Generator().manual_seed(23), output_type="pil").images
    for (_, _, image, _), expected in zip(rows, direct):
        assert np.array_equal(_pixels(load_image(ws, image)), _pixels(expected))  # bit for bit


def test_release_and_per_image_seeds_give_different_images_and_records(prompted, pipeline):
    ws, _ = prompted
    release = _rows(ws, run_generation(ws, settings=RELEASE, offline_tiny=True, progress=False,
                                       pipeline=pipeline).generated)
    per_image = _rows(ws, run_generation(ws, settings=PER_IMAGE, offline_tiny=True, progress=False,
                                         pipeline=pipeline).generated)
    assert len(per_image) == 3  # a different mode is a different image, never taken for a release one
    assert [seed for _, seed, _, _ in per_image] == [23, 24, 25]
    assert all("seed_mode" not in json.loads(p) for *_, p in per_image)
    # Images 1 and 2 come from other noise (image 0 may share its first draw from seed 23).
    assert release[1][2] != per_image[1][2] and release[2][2] != per_image[2][2]


def test_resuming_a_partly_made_prompt_draws_it_whole_and_stores_only_the_missing_image(prompted, pipeline):
    ws, _ = prompted
    first = _rows(ws, run_generation(ws, settings=RELEASE, offline_tiny=True, progress=False,
                                     pipeline=pipeline).generated)
    lost_id, _, lost_image, _ = first[1]
    with ws.transaction() as conn:
        conn.execute("DELETE FROM pairs WHERE generation = ?", (lost_id,))
        conn.execute("DELETE FROM generations WHERE id = ?", (lost_id,))
    resumed = run_generation(ws, settings=RELEASE, offline_tiny=True, progress=False, pipeline=pipeline)
    assert resumed.skipped == 2 and len(resumed.generated) == 1
    [(_, _, image, params)] = _rows(ws, resumed.generated)
    assert image == lost_image and json.loads(params)["index"] == 1
    assert run_generation(ws, settings=RELEASE, offline_tiny=True, progress=False, pipeline=pipeline).generated == []


def test_an_unknown_seed_mode_is_refused_and_the_command_records_release_mode(prompted, runner):
    from cpdm.cli import cli

    ws, _ = prompted
    with pytest.raises(CpdmError, match="--seed-mode must be one of per-image, release"):
        GenerationSettings(seed_mode="global").check()
    result = runner.invoke(cli, ["generate", "--workspace", str(ws.root), "--offline-tiny", "--per-prompt", "2",
                                 "--steps", "1", "--height", "32", "--width", "32", "--seed-mode", "release", "-q"])
    assert result.exit_code == 0, result.output
    params = [json.loads(p) for (p,) in ws.conn.execute("SELECT params FROM generations ORDER BY id")]
    assert [(p["seed_mode"], p["index"]) for p in params] == [("release", 0), ("release", 1)]
