"""The scoring engine: feature cache, reference distances, errors that keep scores intact, the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from cpdm import metric
from cpdm.backbones import load_semantic, load_style
from cpdm.rating.campaigns import create_campaign
from cpdm.cli import cli
from cpdm.errors import CpdmError
from cpdm.store.images import load_image, store_image_bytes
from cpdm.scoring.engine import ScoringEngine, score_pairs
from cpdm.testing import Scorer
from cpdm.scoring.reference import REFERENCE_SAMPLE
from cpdm.scoring.features import LayerGram, decode_style, describe_layer, encode_style, layer_distance
from cpdm.scoring.reader import (
    SCORE_COLUMNS,
    available_backbones,
    load_reference_distances,
    load_scores,
    reference_scale_for,
)
from cpdm.store.rows import GenerationRow, add_prompt, make_check_pairs, make_pairs
from cpdm.store.rows import add_anchor as add_anchor_row
from cpdm.store.rows import add_generations as add_generation_rows
from tests.conftest import png_bytes
from tests.rating_fixtures import variant_id

SEM, STYLE = "tiny:ViT-L-14/openai", "tiny:vgg19"


def add_anchor(ws, seed: int, n_generations: int, variant: str = "original", size=(32, 32), artist=None) -> dict:
    """An anchor with one prompt and ``n_generations`` generated images, each with a normal pair."""
    anchor_image = store_image_bytes(ws, png_bytes(seed, size)).sha256
    anchor = add_anchor_row(ws, anchor_image, artist=artist or f"artist {seed}", title=f"work {seed}")
    prompt = add_prompt(ws, anchor, "a painting", origin="manual")
    pairs = add_generations(ws, anchor, prompt, seed, n_generations, variant, size)
    return {"anchor": anchor, "image": anchor_image, "prompt": prompt, "pairs": pairs}


def add_generations(ws, anchor: int, prompt: int, seed: int, count: int, variant: str, size=(32, 32)) -> list[int]:
    """``count`` generations of the prompt by ``variant``, each with a normal pair; returns the pairs."""
    variant = variant_id(ws, variant, base_model="sd-tiny")
    rows = [
        GenerationRow(prompt, variant, index, None, None,
                      store_image_bytes(ws, png_bytes(seed * 1000 + index + 1 + 100 * variant, size)).sha256)
        for index in range(count)
    ]
    return make_pairs(ws, add_generation_rows(ws, rows))


def add_check(ws, anchor: dict) -> int:
    """The anchor's attention checks (identical, and unrelated when there is another anchor); returns the identical one."""
    return make_check_pairs(ws, [anchor["anchor"]])[0]


@pytest.fixture(scope="module")
def tiny_backbones():
    """The tiny backbones, built once for the module (they are read-only)."""
    return load_semantic("ViT-L-14/openai", mode="tiny"), load_style("vgg19", mode="tiny")


def engine_for(ws, tiny_backbones, batch_size=16) -> ScoringEngine:
    """An fp32 engine: the exact invariants below hold in fp32 (reduced precision: see test_precision)."""
    return ScoringEngine(ws, *tiny_backbones, batch_size=batch_size, precision="fp32")


def scores_by_pair(ws) -> dict[int, tuple[float, float]]:
    frame = load_scores(ws, SEM, STYLE)
    return {int(row.pair): (row.m_sem, row.m_style) for row in frame.itertuples()}


def test_scores_every_pair_and_embeds_each_image_once(ws, tiny_backbones):
    anchors = [add_anchor(ws, seed, 9) for seed in (1, 2)]
    check = add_check(ws, anchors[0])
    report = score_pairs(ws, engine=engine_for(ws, tiny_backbones), progress=False)
    assert report.pairs_scored == 20  # 18 normal pairs and two checks
    assert report.images_computed == 20  # 2 anchors + 18 generations: the anchor once, not 9 times
    assert (report.semantic, report.style) == (SEM, STYLE)
    features = ws.conn.execute("SELECT backbone, COUNT(*) FROM features GROUP BY backbone ORDER BY backbone").fetchall()
    assert features == [(SEM, 20), (STYLE, 20)]
    scores = scores_by_pair(ws)
    assert scores[check] == (0.0, 0.0)  # identical images: M_sem = M_style = 0
    assert all(sem > 0 and style > 0 for pair, (sem, style) in scores.items() if pair != check)
    assert all(0 <= sem <= 4 for sem, _ in scores.values())


def test_rescoring_touches_only_new_images(ws, tiny_backbones):
    study = add_anchor(ws, 1, 9)
    score_pairs(ws, engine=engine_for(ws, tiny_backbones), progress=False)
    before = scores_by_pair(ws)
    again = score_pairs(ws, engine=engine_for(ws, tiny_backbones), progress=False)
    assert (again.pairs_scored, again.images_computed, again.pairs_already_scored) == (0, 0, 9)
    # A new unlearning run: 9 new generations for the same anchor.
    new_pairs = add_generations(ws, study["anchor"], study["prompt"], 1, 9, "esd")
    report = score_pairs(ws, engine=engine_for(ws, tiny_backbones), progress=False)
    assert report.pairs_scored == 9
    assert report.images_computed == 9  # only the new generations; the anchor came from the cache
    after = scores_by_pair(ws)
    assert {pair: after[pair] for pair in before} == before
    assert set(after) == set(before) | set(new_pairs)


def test_cached_and_uncached_paths_give_the_same_numbers(ws, tiny_backbones, tmp_path):
    study = add_anchor(ws, 3, 4)
    score_pairs(ws, engine=engine_for(ws, tiny_backbones), progress=False)
    first = scores_by_pair(ws)
    # Scores again from cached features only.
    with ws.transaction() as conn:
        conn.execute("DELETE FROM scores")
    report = score_pairs(ws, engine=engine_for(ws, tiny_backbones), progress=False)
    assert report.images_computed == 0 and report.images_cached == 5
    assert scores_by_pair(ws) == first
    # And without any workspace, through the direct API.
    scorer = Scorer(style="vgg19", offline_tiny=True)
    anchor = load_image(ws, study["image"])
    generations = [load_image(ws, sha) for (sha,) in ws.conn.execute("SELECT image FROM pairs ORDER BY id")]
    direct = scorer.score_batch([anchor] * len(generations), generations)
    for pair, score in zip(sorted(first), direct):
        assert score.m_sem == pytest.approx(first[pair][0], abs=1e-7)
        assert score.m_style == pytest.approx(first[pair][1], rel=1e-6)


def test_engine_agrees_with_the_metric_computed_directly(ws, tiny_backbones):
    study = add_anchor(ws, 4, 3)
    score_pairs(ws, engine=engine_for(ws, tiny_backbones), progress=False)
    clip, vgg = tiny_backbones
    anchor = load_image(ws, study["image"])
    for pair, (sem, style) in scores_by_pair(ws).items():
        (sha,) = ws.conn.execute("SELECT image FROM pairs WHERE id = ?", (pair,)).fetchone()
        generated = load_image(ws, sha)
        embeddings = clip.embed([anchor, generated])
        grams_a = vgg.grams([anchor])
        grams_g = vgg.grams([generated])
        assert sem == pytest.approx(metric.m_sem(embeddings[0], embeddings[1]), abs=1e-6)
        assert style == pytest.approx(metric.m_style(grams_a, grams_g, vgg.layer_weights), rel=1e-5)


def test_batch_size_changes_results_by_less_than_1e_5(tmp_path, tiny_backbones):
    from cpdm.store.workspace import init_workspace

    results = []
    for batch_size in (1, 7):
        with init_workspace(tmp_path / f"ws{batch_size}") as ws:
            for seed in (5, 6):
                add_anchor(ws, seed, 5)
            score_pairs(ws, engine=engine_for(ws, tiny_backbones, batch_size), progress=False)
            results.append(load_scores(ws, SEM, STYLE)[["m_sem", "m_style"]].to_numpy())
    one, seven = results
    assert np.all(np.abs(one[:, 0] - seven[:, 0]) < 1e-5)
    assert np.all(np.abs(one[:, 1] - seven[:, 1]) <= 1e-5 * np.abs(one[:, 1]))


def test_reference_distances_pair_anchors_with_other_anchors_generations(ws, tiny_backbones):
    studies = [add_anchor(ws, seed, 6) for seed in (7, 8, 9)]
    report = score_pairs(ws, engine=engine_for(ws, tiny_backbones), progress=False)
    assert report.reference_distances_added == 3 * REFERENCE_SAMPLE
    rows = ws.conn.execute("SELECT anchor, image, semantic, style FROM reference_distances").fetchall()
    owner = {sha: anchor for anchor, sha in ws.conn.execute("SELECT anchor, image FROM pairs")}
    for anchor, image, semantic, style in rows:
        assert owner[image] != anchor  # always another anchor's generation
        assert (semantic, style) == (SEM, STYLE)
    reference = load_reference_distances(ws, SEM, STYLE)
    assert list(reference.columns) == ["anchor", "image", "m_sem", "m_style"]
    assert len(reference) == 3 * REFERENCE_SAMPLE
    x_ref = reference_scale_for(ws, SEM, STYLE)
    assert x_ref == pytest.approx(float(np.median(reference.m_sem * reference.m_style)))
    # Deterministic and bounded: a re-run adds none.
    assert score_pairs(ws, engine=engine_for(ws, tiny_backbones), progress=False).reference_distances_added == 0
    # The stored value is the distance between the two images' features.
    anchor, image = rows[0][0], rows[0][1]
    anchor_image = next(s["image"] for s in studies if s["anchor"] == anchor)
    scorer = Scorer(style="vgg19", offline_tiny=True)
    direct = scorer(load_image(ws, anchor_image), load_image(ws, image))
    stored = ws.conn.execute(
        "SELECT m_sem, m_style FROM reference_distances WHERE anchor = ? AND image = ?", (anchor, image)
    ).fetchone()
    assert stored == pytest.approx((direct.m_sem, direct.m_style), rel=1e-6)


def test_no_reference_scale_with_a_single_anchor(ws, tiny_backbones):
    add_anchor(ws, 10, 3)
    report = score_pairs(ws, engine=engine_for(ws, tiny_backbones), progress=False)
    assert report.reference_distances_added == 0
    with pytest.raises(CpdmError, match="generations .* of at least 2 anchors, and the baseline has generations of 1"):
        reference_scale_for(ws, SEM, STYLE)


def test_a_run_skips_pairs_another_run_scored_meanwhile_and_claims_none_of_its_work(ws, tiny_backbones):
    """The other run scores everything just before this run's first chunk: this run computes and claims nothing."""
    from cpdm.store.workspace import open_workspace

    for seed in (81, 82, 83):
        add_anchor(ws, seed, 3)
    other = open_workspace(ws.root)
    engine = engine_for(ws, tiny_backbones, batch_size=3)  # one anchor per chunk
    score_chunk, others = engine.score_chunk, []

    def other_run_first(pairs, report):
        if not others:
            others.append(score_pairs(other, engine=engine_for(other, tiny_backbones), progress=False))
        return score_chunk(pairs, report)

    engine.score_chunk = other_run_first
    report = score_pairs(ws, engine=engine, progress=False)
    other.close()
    (first,) = others
    assert (first.pairs_scored, first.scores_written, first.reference_distances_added) == (9, 9, 3 * 6)
    assert (report.pairs_scored, report.scores_written, report.images_computed) == (0, 0, 0)
    assert (report.pairs_already_scored, report.reference_distances_added) == (9, 0)


def test_two_runs_at_once_claim_exactly_the_rows_in_the_workspace(tmp_path, tiny_backbones):
    import threading

    from cpdm.store.workspace import init_workspace, open_workspace

    with init_workspace(tmp_path / "ws") as ws:
        for seed in range(91, 95):
            add_anchor(ws, seed, 3)
    reports, errors = [], []

    def run():
        try:
            with open_workspace(tmp_path / "ws") as own:
                reports.append(score_pairs(own, engine=engine_for(own, tiny_backbones, batch_size=3), progress=False))
        except Exception as exc:  # surfaced below
            errors.append(repr(exc))

    threads = [threading.Thread(target=run) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert errors == [] and len(reports) == 2
    with open_workspace(tmp_path / "ws") as ws:
        scores, references = (ws.conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]
                              for table in ("scores", "reference_distances"))
    assert scores == 12 and references == 4 * REFERENCE_SAMPLE
    assert sum(r.pairs_scored for r in reports) == sum(r.scores_written for r in reports) == scores
    assert sum(r.reference_distances_added for r in reports) == references
    assert all(r.pairs_scored + r.pairs_already_scored == 12 for r in reports)


def test_load_scores_columns_campaign_filter_and_backbones(ws, tiny_backbones):
    first = add_anchor(ws, 11, 2, artist="Ada")
    second = add_anchor(ws, 12, 2)
    check = add_check(ws, first)
    campaign = create_campaign(ws, "pilot", first["pairs"] + [check])
    report = score_pairs(ws, campaign_id=campaign, engine=engine_for(ws, tiny_backbones), progress=False)
    assert report.pairs_scored == 3
    frame = load_scores(ws)
    assert list(frame.columns) == SCORE_COLUMNS
    assert set(frame.pair) == set(first["pairs"]) | {check}
    checks = frame[frame.kind == "check_identical"]
    assert checks.variant.tolist() == [None] and checks.generation.tolist() == [None]
    assert set(frame[frame.kind == "normal"].variant) == {"original"}
    assert set(frame.artist) == {"Ada"}
    score_pairs(ws, engine=engine_for(ws, tiny_backbones), progress=False)
    assert len(load_scores(ws, SEM, STYLE)) == 6  # the campaign's 3, the other anchor's 2, the unrelated check
    assert len(load_scores(ws, campaign_id=campaign)) == 3
    assert load_scores(ws, semantic="ViT-L-14/openai").empty  # real and tiny never mix
    assert available_backbones(ws) == [(SEM, STYLE)]
    assert set(second["pairs"]) <= set(load_scores(ws).pair)


def test_missing_image_file_names_the_file_and_keeps_earlier_scores(ws, tiny_backbones):
    add_anchor(ws, 13, 3)
    score_pairs(ws, engine=engine_for(ws, tiny_backbones), progress=False)
    before = scores_by_pair(ws)
    features_before = ws.conn.execute("SELECT COUNT(*) FROM features").fetchone()[0]
    second = add_anchor(ws, 14, 3)
    third = add_anchor(ws, 15, 3)
    (broken,) = ws.conn.execute("SELECT image FROM pairs WHERE id = ?", (third["pairs"][1],)).fetchone()
    path = ws.image_path(broken)
    path.unlink()
    with pytest.raises(CpdmError) as info:
        score_pairs(ws, engine=engine_for(ws, tiny_backbones, batch_size=2), progress=False)
    assert str(path) in str(info.value) and "missing" in str(info.value)
    after = scores_by_pair(ws)
    assert {pair: after[pair] for pair in before} == before
    # Work done before the error is kept (the second anchor came first) ...
    assert set(second["pairs"]) <= set(after)
    assert not set(third["pairs"]) & set(after)
    assert ws.conn.execute("SELECT COUNT(*) FROM features").fetchone()[0] > features_before
    # ... and nothing points at the broken image.
    assert ws.conn.execute("SELECT COUNT(*) FROM features WHERE image = ?", (broken,)).fetchone()[0] == 0


def test_unreadable_image_is_a_clear_error(ws, tiny_backbones):
    study = add_anchor(ws, 16, 2)
    path = ws.image_path(study["image"])
    path.write_bytes(b"this is not a png")
    with pytest.raises(CpdmError, match="unreadable image") as info:
        score_pairs(ws, engine=engine_for(ws, tiny_backbones), progress=False)
    assert str(path) in str(info.value)
    assert ws.conn.execute("SELECT COUNT(*) FROM scores").fetchone()[0] == 0


def test_bad_arguments_are_refused_before_any_work(ws):
    add_anchor(ws, 17, 1)
    with pytest.raises(CpdmError, match="unknown style backbone 'vgg16'"):
        score_pairs(ws, style="vgg16", offline_tiny=True, progress=False)
    with pytest.raises(CpdmError, match="no model 'nope'"):
        score_pairs(ws, semantic="nope/openai", offline_tiny=True, progress=False)
    with pytest.raises(CpdmError, match="pairs not in the workspace: \\[999\\]"):
        score_pairs(ws, pair_ids=[999], offline_tiny=True, progress=False)
    with pytest.raises(CpdmError, match="batch size"):
        score_pairs(ws, batch_size=0, offline_tiny=True, progress=False)
    if not torch.cuda.is_available():
        with pytest.raises(CpdmError, match="CUDA is not available"):
            score_pairs(ws, device="cuda", offline_tiny=True, progress=False)
    assert ws.conn.execute("SELECT COUNT(*) FROM scores").fetchone()[0] == 0


def test_layer_gram_factor_form_matches_the_dense_form():
    torch.manual_seed(0)
    few_positions = torch.randn(2, 6, 1, 2)  # H·W = 2 < C = 6: stored as a factor
    many_positions = torch.randn(2, 3, 4, 4)  # stored as a Gram matrix
    factor_a, factor_g = describe_layer(few_positions)
    assert factor_a.factor is not None and factor_a.gram is None
    dense_a, dense_g = (LayerGram(gram=layer.dense().astype(np.float32)) for layer in (factor_a, factor_g))
    expected = float(((metric.gram_matrix(few_positions)[0] - metric.gram_matrix(few_positions)[1]) ** 2).sum())
    assert layer_distance(factor_a, factor_g) == pytest.approx(expected, rel=1e-5)
    assert layer_distance(dense_a, dense_g) == pytest.approx(expected, rel=1e-5)
    assert layer_distance(factor_a, dense_g) == pytest.approx(expected, rel=1e-5)
    assert layer_distance(factor_a, factor_a) == 0.0
    gram_layers = describe_layer(many_positions)
    descriptor = [factor_a, gram_layers[0]]
    restored = decode_style(encode_style(descriptor), "test")
    assert np.array_equal(restored[0].factor, factor_a.factor) and restored[0].norm == factor_a.norm
    assert np.array_equal(restored[1].gram, gram_layers[0].gram)
    with pytest.raises(CpdmError, match="unreadable"):
        decode_style(b"garbage", "image abc")


def test_scorer_on_paths_and_identical_images(tmp_path):
    from PIL import Image

    from tests.conftest import write_png

    a = write_png(tmp_path / "a.png", seed=1, size=(40, 40))
    b = write_png(tmp_path / "b.png", seed=2, size=(40, 40))
    scorer = Scorer(style="vgg19", offline_tiny=True, x_ref=1e-3)
    same = scorer(a, a)
    assert (same.m_sem, same.m_style, same.cm) == (0.0, 0.0, 1.0)
    # Identical inputs in a batch, as paths or PIL objects, wherever they fall in it.
    pil_a = Image.open(a).convert("RGB")
    for pair in scorer.score_batch([a, b, pil_a, b], [b, a, pil_a, str(b)])[2:]:
        assert (pair.m_sem, pair.m_style, pair.cm) == (0.0, 0.0, 1.0)
    different = scorer(a, b)
    assert different.m_sem > 0 and different.m_style > 0 and 0.0 <= different.cm < 1.0
    assert Scorer(style="vgg19", offline_tiny=True)(a, b).cm is None
    with pytest.raises(CpdmError, match="no such image file"):
        scorer(a, tmp_path / "missing.png")
    with pytest.raises(CpdmError, match="2 anchors but 1 generations"):
        scorer.score_batch([a, b], [a])
    with pytest.raises(CpdmError, match="x_ref"):
        Scorer(style="vgg19", offline_tiny=True, x_ref=0.0)
    weights = metric.Weights(w=0.5, x_ref=1.0, semantic="ViT-L-14/openai", style="vgg19")
    with pytest.raises(CpdmError, match="calibrated for"):
        Scorer(style="vgg19", offline_tiny=True, weights=weights)


@pytest.mark.slow
def test_engine_with_cpdm_inception_caches_native_size_features(ws):
    # Anchors and generations of different native sizes go through the cache and back.
    studies = [add_anchor(ws, 41, 2, size=(96, 80)), add_anchor(ws, 42, 2, size=(80, 100))]
    scorer = Scorer(style="cpdm-inception", offline_tiny=True)
    engine = ScoringEngine(ws, scorer.semantic_backbone, scorer.style_backbone, batch_size=3, precision="fp32")
    report = score_pairs(ws, engine=engine, progress=False)
    assert report.pairs_scored == 4 and report.style == "tiny:cpdm-inception"
    (blob,) = ws.conn.execute(
        "SELECT blob FROM features WHERE backbone = 'tiny:cpdm-inception' AND image = ?", (studies[0]["image"],)
    ).fetchone()
    layers = decode_style(blob, "test")
    # Resized to 299x299: blocks 2 (17x17 positions, 768 channels) and 3 (pooled) are stored as factors.
    assert [layer.factor is not None for layer in layers] == [False, False, True, True]
    frame = load_scores(ws, "tiny:ViT-L-14/openai", "tiny:cpdm-inception")
    for row in frame.itertuples():
        anchor_sha = next(s["image"] for s in studies if s["anchor"] == row.anchor)
        direct = scorer(load_image(ws, anchor_sha), load_image(ws, row.image))
        # The engine and the scorer split their batches between CPU threads differently.
        assert row.m_sem == pytest.approx(direct.m_sem, abs=1e-7)
        assert row.m_style == pytest.approx(direct.m_style, rel=1e-5)


def _write_weights(path, **changes):
    data = {"format": "cpdm-weights/1", "w": 0.5, "x_ref": 1e-4, "semantic": SEM, "style": STYLE}
    data.update(changes)
    path.write_text(json.dumps(data))
    return path


def test_cli_score_and_list(ws, runner, tmp_path):
    for seed in (31, 32):
        add_anchor(ws, seed, 2)
    args = ["--workspace", str(ws.root)]
    result = runner.invoke(cli, ["score", "--all", "--offline-tiny", "--style", "vgg19", "-q", *args])
    assert result.exit_code == 0, result.output
    assert "scored 4 pairs" in result.output and "features computed for 6 images" in result.output
    assert "x_ref=" in result.output and "original" in result.output
    again = runner.invoke(cli, ["score", "--all", "--offline-tiny", "--style", "vgg19", "-q", *args])
    assert "scored 0 pairs (4 already scored)" in again.output

    listed = runner.invoke(cli, ["scores", "list", *args, "--csv", str(tmp_path / "s.csv")])
    assert listed.exit_code == 0, listed.output
    x_ref = reference_scale_for(ws, SEM, STYLE)
    assert f"x_ref={x_ref:.6g}" in listed.output
    assert "semantic=tiny:ViT-L-14/openai style=tiny:vgg19: 4 scored pairs" in listed.output
    import pandas as pd

    table = pd.read_csv(tmp_path / "s.csv")
    expected = metric.cm_paper(table.m_sem.to_numpy(), table.m_style.to_numpy(), x_ref)
    assert np.allclose(table.cm, expected)
    # The release's own number beside CM: (M_sem · M_style)² per pair, and its mean over the variant's pairs.
    release = [(sem * style) ** 2 for sem, style in zip(table.m_sem, table.m_style)]
    assert np.allclose(table.release_score, release, rtol=1e-12)
    summary = next(line for line in listed.output.splitlines() if line.startswith("original "))
    assert summary.split()[1] == "4" and summary.split()[5] == f"{sum(release) / 4:.4g}"
    assert "[" in summary  # two anchors: an interval over anchors
    assert "release_score = (M_sem*M_style)^2" in listed.output

    weights = _write_weights(tmp_path / "w.json")
    weighted = runner.invoke(cli, ["scores", "list", *args, "--weights", str(weights)])
    assert weighted.exit_code == 0 and "CM_w with w=0.5, x_ref=0.0001" in weighted.output
    assert "w fitted to ratings" in weighted.output  # a file without judgment_kind reads as ratings
    # Weights calibrated on comparative (2AFC) judgments read the same way, and say so.
    two_afc = _write_weights(tmp_path / "w2afc.json", w=0.3, judgment_kind="2afc")
    from_2afc = runner.invoke(cli, ["scores", "list", *args, "--weights", str(two_afc)])
    assert from_2afc.exit_code == 0, from_2afc.output
    assert "CM_w with w=0.3" in from_2afc.output and "w fitted to comparative (2AFC) judgments" in from_2afc.output
    bad_kind = _write_weights(tmp_path / "wbad.json", judgment_kind="likert")
    refused_kind = runner.invoke(cli, ["scores", "list", *args, "--weights", str(bad_kind)])
    assert refused_kind.exit_code == 1 and "'judgment_kind' must be one of rating, 2afc" in refused_kind.output
    scored = runner.invoke(cli, ["score", "--all", "--offline-tiny", "--style", "vgg19", "-q", "--weights", str(weights),
                                 *args])
    assert scored.exit_code == 0 and "CM_w with w=0.5" in scored.output
    other = _write_weights(tmp_path / "other.json", style="tiny:cpdm-inception")
    refused = runner.invoke(cli, ["scores", "list", *args, "--weights", str(other)])
    assert refused.exit_code == 1
    assert "calibrated for semantic=tiny:ViT-L-14/openai style=tiny:cpdm-inception" in refused.output


@pytest.mark.parametrize(
    "extra, message, code",
    [
        (["--weights", "{bad}"], "not valid JSON", 1),
        (["--weights", "{other}"], "calibrated for semantic=tiny:ViT-L-14/openai style=tiny:cpdm-inception", 1),
        (["--semantic", "ViT-Q-9/openai"], "no model 'ViT-Q-9'", 1),
        (["--style", "vgg16"], "unknown style backbone 'vgg16'", 2),
        (["--campaign", "nope"], "no campaign named 'nope'", 1),
    ],
)
def test_cli_bad_input_keeps_scores(ws, runner, tmp_path, extra, message, code):
    add_anchor(ws, 33, 2)
    args = ["--workspace", str(ws.root)]
    assert runner.invoke(cli, ["score", "--all", "--offline-tiny", "--style", "vgg19", "-q", *args]).exit_code == 0
    before = scores_by_pair(ws)
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    other = _write_weights(tmp_path / "other.json", style="tiny:cpdm-inception")
    extra = [str(bad) if x == "{bad}" else str(other) if x == "{other}" else x for x in extra]
    scope = [] if "--campaign" in extra else ["--all"]
    style = [] if "--style" in extra else ["--style", "vgg19"]
    result = runner.invoke(cli, ["score", *scope, "--offline-tiny", "-q", *style, *extra, *args])
    assert result.exit_code == code
    assert message in result.output
    assert "Traceback" not in result.output
    assert scores_by_pair(ws) == before


def test_cli_needs_a_scope_and_cuda(ws, runner):
    args = ["--workspace", str(ws.root)]
    result = runner.invoke(cli, ["score", "--offline-tiny", *args])
    assert result.exit_code == 2 and "--campaign NAME or --all" in result.output
    if not torch.cuda.is_available():
        result = runner.invoke(cli, ["score", "--all", "--offline-tiny", "--device", "cuda", *args])
        assert result.exit_code == 1 and "CUDA is not available" in result.output
    result = runner.invoke(cli, ["scores", "list", *args])
    assert result.exit_code == 1 and "no scores yet" in result.output
    result = runner.invoke(cli, ["scores", "list", "--semantic", "ViT-L-14/openai", "--style", "vgg16", *args])
    assert result.exit_code == 1 and "no scores for --semantic ViT-L-14/openai --style vgg16" in result.output


def test_threaded_image_preparation_gives_the_same_scores(tmp_path, tiny_backbones):
    """The CUDA path decodes and prepares images in threads; forced on here, it must change nothing."""
    from concurrent.futures import ThreadPoolExecutor

    from cpdm.store.workspace import init_workspace

    results = []
    for threaded in (False, True):
        with init_workspace(tmp_path / f"ws{int(threaded)}") as ws:
            for seed in (51, 52):
                add_anchor(ws, seed, 4)
            engine = engine_for(ws, tiny_backbones, batch_size=5)
            if threaded:
                engine.extractor._pool = ThreadPoolExecutor(max_workers=3)
            score_pairs(ws, engine=engine, progress=False)
            results.append(scores_by_pair(ws))
            if threaded:
                study = add_anchor(ws, 53, 3)
                (sha,) = ws.conn.execute("SELECT image FROM pairs WHERE id = ?", (study["pairs"][2],)).fetchone()
                path = ws.image_path(sha)
                path.unlink()
                with pytest.raises(CpdmError, match="missing") as info:
                    score_pairs(ws, engine=engine, progress=False)
                assert str(path) in str(info.value)
    assert results[0] == results[1]


def test_a_new_style_backbone_reuses_cached_embeddings(ws, tiny_backbones):
    add_anchor(ws, 61, 3)
    clip, vgg = tiny_backbones
    score_pairs(ws, engine=engine_for(ws, tiny_backbones), progress=False)
    other_style = load_style("vgg19", mode="tiny", image_size=48)
    assert other_style.key == "tiny:vgg19@48"
    engine = ScoringEngine(ws, clip, other_style)
    embedded = []
    original = clip.embed_batch
    clip.embed_batch = lambda batch: embedded.append(len(batch)) or original(batch)
    report = score_pairs(ws, engine=engine, progress=False)
    assert report.pairs_scored == 3 and report.images_computed == 4
    assert embedded == []  # CLIP never ran: its embeddings came from the cache
    assert available_backbones(ws) == [(SEM, "tiny:vgg19"), (SEM, "tiny:vgg19@48")]
    first = load_scores(ws, SEM, "tiny:vgg19").set_index("pair")
    second = load_scores(ws, SEM, "tiny:vgg19@48").set_index("pair")
    assert np.array_equal(first.m_sem, second.m_sem)
    assert not np.allclose(first.m_style, second.m_style)


def test_cpu_passes_are_split_by_pixels_without_changing_results(tmp_path, tiny_backbones, monkeypatch):
    """On the CPU each forward pass sees at most CPU_PIXELS_PER_PASS input pixels."""
    from cpdm.scoring import features as scoring
    from cpdm.store.workspace import init_workspace

    _, vgg = tiny_backbones
    passes = []
    original = vgg.feature_maps
    monkeypatch.setattr(vgg, "feature_maps", lambda batch: passes.append(len(batch)) or original(batch))
    results = []
    monkeypatch.setattr(scoring, "CPU_WORKERS", 1)  # one share: the passes below are the whole batch's
    for pixels in (10**9, 2 * 32 * 32):
        monkeypatch.setattr(scoring, "CPU_PIXELS_PER_PASS", pixels)
        passes.clear()
        with init_workspace(tmp_path / f"ws{pixels}") as ws:
            add_anchor(ws, 95, 4)
            score_pairs(ws, engine=engine_for(ws, tiny_backbones), progress=False)
            results.append(load_scores(ws, SEM, STYLE)[["m_sem", "m_style"]].to_numpy())
        assert passes == ([5] if pixels > 10**6 else [2, 2, 1])
    assert np.all(np.abs(results[0][:, 0] - results[1][:, 0]) < 1e-5)
    assert np.all(np.abs(results[0][:, 1] - results[1][:, 1]) <= 1e-5 * np.abs(results[0][:, 1]))


def test_cpu_workers_share_the_cores_without_changing_results(tmp_path, tiny_backbones, monkeypatch):
    """Two workers, each on its share of the cores, give the scores of one; torch's thread count is restored."""
    from cpdm.scoring import features as scoring
    from cpdm.store.workspace import init_workspace

    threads_before = torch.get_num_threads()
    results = []
    for workers in (1, 2):
        monkeypatch.setattr(scoring, "CPU_WORKERS", workers)
        with init_workspace(tmp_path / f"ws{workers}") as ws:
            for seed in (96, 97):
                add_anchor(ws, seed, 5)
            engine = engine_for(ws, tiny_backbones, batch_size=7)
            assert engine.extractor.cpu_workers == min(workers, threads_before)
            score_pairs(ws, engine=engine, progress=False)
            results.append(load_scores(ws, SEM, STYLE)[["m_sem", "m_style"]].to_numpy())
        assert torch.get_num_threads() == threads_before
    one, two = results
    assert np.all(np.abs(one[:, 0] - two[:, 0]) < 1e-5)
    assert np.all(np.abs(one[:, 1] - two[:, 1]) <= 1e-5 * np.abs(one[:, 1]))


def test_a_sideways_stored_photo_is_scored_upright(ws, tiny_backbones):
    """A generation stored sideways with an EXIF orientation tag is scored as viewers show it: like its upright twin."""
    import io

    from PIL import Image

    study = add_anchor(ws, 6, 1, size=(40, 24))
    upright = load_image(ws, study["image"])
    buffer = io.BytesIO()
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to view"
    upright.transpose(Image.Transpose.ROTATE_90).save(buffer, format="PNG", exif=exif)
    sideways = store_image_bytes(ws, buffer.getvalue(), "phone.png").sha256
    generation = ws.conn.execute("SELECT id, prompt, variant FROM generations ORDER BY id").fetchone()
    twin = add_generation_rows(ws, [GenerationRow(generation[1], generation[2], 99, None, None, sideways)])
    (pair,) = make_pairs(ws, twin)
    score_pairs(ws, engine=engine_for(ws, tiny_backbones), progress=False)
    scores = scores_by_pair(ws)
    other = scores[study["pairs"][0]]  # the anchor against a different image: what "not the same" looks like
    assert other[0] > 1e-4 and other[1] > 0
    assert scores[pair][0] <= 1e-6 * other[0] and scores[pair][1] <= 1e-6 * other[1]
