"""The unlearning report: CM on the target concept's prompts and on the retain set, against the original."""

from __future__ import annotations

import json

import numpy as np
import pytest

from cpdm.cli import cli
from cpdm.demo import build as demo
from cpdm.errors import CpdmError
from cpdm.store.rows import add_prompt, add_variant
from cpdm.unlearning.report import bootstrap_mean, concept_matches, split_prompts


def _small_study(ws):
    """The demo's anchors (drawn works of four artists), one template prompt each, and the original model."""
    anchors = demo.add_anchors(ws, seed=0)
    for anchor in anchors:
        add_prompt(ws, anchor.id, demo.prompt_text(anchor), origin="template")
    add_variant(ws, "original", base_model="offline-tiny", method="original")
    return anchors


def test_concepts_pick_the_target_anchors_by_artist():
    assert concept_matches("Mira Dotwell", None, ["mira dotwell"])
    assert concept_matches("Mira Dotwell", None, ["a painting by Mira Dotwell"])
    assert not concept_matches("Hal Crossley", "Boats no. 1", ["Mira Dotwell"])
    assert not concept_matches("Hal Crossley", None, ["   "])


def test_split_prompts_separates_the_concept_from_the_retain_set(ws):
    anchors = _small_study(ws)
    artist = anchors[0].artist.name
    split = split_prompts(ws, [artist])
    target_anchors = {a.id for a in anchors if a.artist.name == artist}
    assert {anchor for _, anchor, _ in split["target"]} == target_anchors
    assert not {anchor for _, anchor, _ in split["retain"]} & target_anchors
    assert len(split["target"]) + len(split["retain"]) == len(anchors)
    assert len(split_prompts(ws, [artist], max_prompts=2)["retain"]) == 2
    with pytest.raises(CpdmError, match="no prompts of anchors by Nobody"):
        split_prompts(ws, ["Nobody"])


def test_bootstrap_mean_brackets_the_mean():
    values = np.random.default_rng(0).normal(0.3, 0.1, 200)
    mean, low, high = bootstrap_mean(values, 500)
    assert low < mean < high and mean == pytest.approx(values.mean())
    assert np.isnan(bootstrap_mean(np.array([np.nan]), 500)[0])


@pytest.mark.slow
def test_report_on_the_demo_artists_with_tiny_models(ws, runner):
    anchors = _small_study(ws)
    artist = anchors[0].artist.name
    made = runner.invoke(cli, ["unlearn", "uce", "--variant-name", "uce-artist", "--offline-tiny", "--concept", artist,
                               "--quiet", "-w", str(ws.root)])
    assert made.exit_code == 0, made.output
    arguments = ["unlearning", "report", "--variant", "uce-artist", "--offline-tiny", "--steps", "1", "--size", "16",
                 "--max-prompts", "2", "--quiet", "--format", "json", "-w", str(ws.root)]
    result = runner.invoke(cli, arguments)
    assert result.exit_code == 0, result.output
    rows = {row["set"]: row for row in json.loads(result.output)}
    assert set(rows) == {"target", "retain"}
    for row in rows.values():
        assert row["generations"] == 2 and row["baseline"] == "original"
        assert 0 <= row["cm"] <= 1 and 0 <= row["cm_baseline"] <= 1
        assert row["change"] == pytest.approx(row["cm"] - row["cm_baseline"], abs=1e-9)
    generations = ws.conn.execute("SELECT COUNT(*) FROM generations").fetchone()[0]
    assert generations == 8  # 2 sets x 2 prompts x 2 variants, one seed
    again = runner.invoke(cli, arguments)  # a rerun generates nothing new
    assert again.exit_code == 0 and json.loads(again.output) == json.loads(result.output)
    assert ws.conn.execute("SELECT COUNT(*) FROM generations").fetchone()[0] == generations
