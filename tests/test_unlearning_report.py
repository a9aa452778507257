"""The unlearning report: CM on the target concept's prompts and on the retain set, against the original."""

from __future__ import annotations

import json

import numpy as np
import pytest

from cpdm.analysis.resampling import mean_interval
from cpdm.cli import cli
from cpdm.demo import build as demo
from cpdm.errors import CpdmError
from cpdm.backbones import DEFAULT_SEMANTIC, DEFAULT_STYLE
from cpdm.generation.batch import generation_params
from cpdm.scoring.reader import backbone_keys
from cpdm.scoring.reference import REFERENCE_SAMPLE, store_reference_set
from cpdm.store.images import store_pil_image
from cpdm.store.rows import GenerationRow, add_anchor, add_generations, add_prompt, add_variant, make_pairs
from cpdm.analysis.unlearning import (
    ReportSettings,
    TargetRule,
    format_report,
    seed_runs,
    split_prompts,
    unlearning_report,
)
from cpdm.unlearning.concepts import anchor_names_concept, names_concept
from tests.rating_fixtures import tiny_image


def _small_study(ws):
    """The demo's anchors (drawn works of four artists), one template prompt each, and the original model."""
    anchors = demo.add_anchors(ws, seed=0)
    for anchor in anchors:
        add_prompt(ws, anchor.id, demo.prompt_text(anchor), origin="template")
    add_variant(ws, "original", base_model="offline-tiny", method="original")
    return anchors


def test_a_concept_is_named_by_the_same_words_in_any_case_never_by_a_part():
    assert names_concept("Mira Dotwell", ["mira dotwell"])
    assert names_concept("  Mira   DOTWELL ", ["Mira Dotwell"])
    assert not names_concept("Manet", ["Ma"]) and not names_concept("Ma", ["Manet"])
    assert not names_concept("Claude Monet", ["Monet"])
    assert not names_concept("Mira Dotwell", ["a painting by Mira Dotwell"])
    assert not names_concept("", [""]) and not names_concept(None, ["   "])
    assert anchor_names_concept("Vincent van Gogh", "The Starry Night", ["the starry night"])
    assert not anchor_names_concept("Hal Crossley", "Boats no. 1", ["Mira Dotwell"])


def _named_anchors(ws, named) -> dict[str, int]:
    """An anchor with one prompt for each (artist, title); their ids by title."""
    ids = {}
    for number, (artist, title) in enumerate(named, start=1):
        anchor = add_anchor(ws, store_pil_image(ws, tiny_image(100 + number)).sha256, artist=artist, title=title,
                            category="style")
        add_prompt(ws, anchor, f"{title} by {artist}", origin="manual")
        ids[title] = anchor
    return ids


def _anchors_of(split) -> dict[str, set[int]]:
    return {name: {anchor for _, anchor, _ in prompts} for name, prompts in split.items()}


def test_split_prompts_separates_the_concept_from_the_retain_set(ws):
    anchors = _small_study(ws)
    artist = anchors[0].artist.name
    split = split_prompts(ws, TargetRule(concepts=(artist,)))
    target_anchors = {a.id for a in anchors if a.artist.name == artist}
    assert {anchor for _, anchor, _ in split["target"]} == target_anchors
    assert not {anchor for _, anchor, _ in split["retain"]} & target_anchors
    assert len(split["target"]) + len(split["retain"]) == len(anchors)
    assert len(split_prompts(ws, TargetRule(concepts=(artist,)), max_prompts=2)["retain"]) == 2
    with pytest.raises(CpdmError, match="no prompts of anchors by Nobody .*artists here: .*--target-artist"):
        split_prompts(ws, TargetRule(concepts=("Nobody",)))


def test_the_target_is_the_anchors_that_name_the_concept_exactly_ma_is_not_manet(ws):
    ids = _named_anchors(ws, [("Ma", "Dawn"), ("Manet", "Olympia"), ("Edouard Manet", "Le Déjeuner"),
                              ("MA ", "Dusk"), ("Hal Crossley", "Ma")])
    split = _anchors_of(split_prompts(ws, TargetRule(concepts=("ma",))))
    # Artist "Ma" in any case, and the work titled "Ma"; never "Manet" or "Edouard Manet".
    assert split == {"target": {ids["Dawn"], ids["Dusk"], ids["Ma"]},
                     "retain": {ids["Olympia"], ids["Le Déjeuner"]}}
    assert _anchors_of(split_prompts(ws, TargetRule(concepts=("Manet",))))["target"] == {ids["Olympia"]}


def test_the_target_anchors_can_be_chosen_by_artist_or_id(ws):
    ids = _named_anchors(ws, [("Ma", "Dawn"), ("Manet", "Olympia"), ("Edouard Manet", "Le Déjeuner"),
                              ("Hal Crossley", "Boats")])
    by_artist = TargetRule(concepts=("Manet",), artists=("Manet", "edouard manet"))
    assert _anchors_of(split_prompts(ws, by_artist))["target"] == {ids["Olympia"], ids["Le Déjeuner"]}
    assert by_artist.describe() == "chosen by artist 'Manet' or 'edouard manet'"
    by_id = TargetRule(concepts=("Manet",), anchor_ids=(ids["Boats"],))
    assert _anchors_of(split_prompts(ws, by_id)) == {"target": {ids["Boats"]},
                                                     "retain": {ids["Dawn"], ids["Olympia"], ids["Le Déjeuner"]}}
    both = TargetRule(artists=("Ma",), anchor_ids=(ids["Boats"],))
    assert _anchors_of(split_prompts(ws, both))["target"] == {ids["Dawn"], ids["Boats"]}
    assert both.describe() == f"chosen by artist 'Ma' and anchor #{ids['Boats']}"
    assert TargetRule(concepts=("Manet",)).describe() == "artist or title equal to the concept 'Manet' (any case)"
    with pytest.raises(CpdmError, match="no anchor with id 999 "):
        split_prompts(ws, TargetRule(anchor_ids=(999,)))
    with pytest.raises(CpdmError, match="no anchor's artist is 'Mane' "):
        split_prompts(ws, TargetRule(artists=("Mane",)))


SEEDS = (1, 2, 3)
# Semantic distance of every generation of an anchor, per variant (style distance 1, x_ref 1: CM = 1 − d²).
# All generations of one anchor are alike, so the anchor, not the generation, is the unit that varies.
DISTANCES = {
    ("Ada Target", "original"): (0.0, 0.0, 0.5),     # CM 1, 1, 0.75
    ("Ada Target", "erased"): (1.0, 0.5, 1.0),       # CM 0, 0.75, 0
    ("Ben Retain", "original"): (0.5, 0.0, 0.5),     # CM 0.75, 1, 0.75
    ("Ben Retain", "erased"): (0.5, 0.5, 0.5),       # CM 0.75, 0.75, 0.75
}


def _report_params(seed: int) -> dict:
    """The params ``cpdm generate`` records for the images the report below asks for (tiny models, 1 step)."""
    return generation_params(ReportSettings(steps=1, guidance=9.0).generation(seed, 1), "float32", tiny=True)


def _scored_study(ws, distances: dict = DISTANCES) -> dict:
    """Three anchors of a target artist and three of another, generations of two variants with known scores.

    Every generation of the report's settings is already there (as ``cpdm
    generate`` would have made it) and scored, and
    each anchor has its full sample of reference distances (all 1 × 1, so
    x_ref = 1): the report generates and scores nothing, and its figures
    follow from DISTANCES by hand. Returns the normal pair of each
    (artist, variant, anchor number, seed).
    """
    semantic, style = backbone_keys(DEFAULT_SEMANTIC, DEFAULT_STYLE, offline_tiny=True)  # what the report scores with
    variants = {"original": add_variant(ws, "original", base_model="offline-tiny", method="original"),
                "erased": add_variant(ws, "erased", base_model="offline-tiny", method="uce", concepts=["Ada Target"])}
    image_seed, pair_of, anchors = 0, {}, []
    for (artist, variant), of_anchors in distances.items():
        for number, distance in enumerate(of_anchors):
            if variant == "original":
                image_seed += 1
                sha = store_pil_image(ws, tiny_image(image_seed)).sha256
                anchor = add_anchor(ws, sha, artist=artist, title=f"Work {number}", category="style")
                anchors.append(anchor)
                add_prompt(ws, anchor, f"a work by {artist}, no. {number}", origin="manual")
            prompt, anchor = ws.conn.execute(
                "SELECT p.id, a.id FROM prompts p JOIN anchors a ON a.id = p.anchor WHERE a.artist = ? AND a.title = ?",
                (artist, f"Work {number}")).fetchone()
            for seed in SEEDS:
                image_seed += 1
                sha = store_pil_image(ws, tiny_image(image_seed)).sha256
                row = GenerationRow(prompt, variants[variant], seed, 1, 9.0, sha, _report_params(seed))
                generation = add_generations(ws, [row])[0]
                pair = make_pairs(ws, [generation])[0]
                pair_of[(artist, variant, number, seed)] = pair
                with ws.transaction() as conn:
                    conn.execute("INSERT INTO scores (pair, semantic, style, m_sem, m_style) VALUES (?, ?, ?, ?, 1.0)",
                                 (pair, semantic, style, distance))
    images = [row[0] for row in ws.conn.execute("SELECT image FROM generations ORDER BY id")]
    store_reference_set(ws, semantic, style, [(anchor, image, 1.0, 1.0) for anchor in anchors
                                              for image in images[:REFERENCE_SAMPLE]],
                        baseline=None, definition="by hand: every pair 1 x 1")
    return pair_of


def _rate(ws, ratings: list[tuple[int, str, int]]) -> None:
    """Store "copy" ratings (pair, rater name, value); rater "flagged" is flagged by the attention checks."""
    with ws.transaction() as conn:
        campaign = conn.execute("INSERT INTO campaigns (name, protocol) VALUES ('pilot', '')").lastrowid
        raters = {name: conn.execute("INSERT INTO raters (name, role, token_hash, flagged) VALUES (?, 'artist', ?, ?)",
                                     (name, f"hash-{name}", int(name == "flagged"))).lastrowid
                  for name in sorted({name for _, name, _ in ratings})}
        for index, (pair, name, value) in enumerate(ratings):
            conn.execute("INSERT INTO ratings (campaign, pair, rater, question, value, shown_at, submitted_at, nonce) "
                         "VALUES (?, ?, ?, 'copy', ?, '2026-12-01T10:00:00Z', '2026-12-01T10:00:09Z', ?)",
                         (campaign, pair, raters[name], value, f"nonce-{index}"))


def _report(ws, **settings) -> dict:
    table = unlearning_report(ws, "erased", "original", ReportSettings(
        seeds=SEEDS, steps=1, guidance=9.0, offline_tiny=True, progress=False, n_boot=400, **settings))
    return {row["set"]: row for row in table.to_dict("records")}


def test_the_report_gives_the_hand_computed_means_changes_and_copy_ratings(ws):
    pairs = _scored_study(ws)
    _rate(ws, [
        (pairs[("Ada Target", "original", 0, 1)], "alice", 5),
        (pairs[("Ada Target", "original", 0, 1)], "flagged", 1),   # excluded: a flagged rater
        (pairs[("Ada Target", "original", 0, 2)], "alice", 4),
        (pairs[("Ada Target", "original", 0, 2)], "bob", 3),
        (pairs[("Ada Target", "erased", 0, 1)], "bob", 2),
    ])
    generations = ws.conn.execute("SELECT COUNT(*) FROM generations").fetchone()[0]
    rows = _report(ws)
    target, retain = rows["target"], rows["retain"]
    assert target["cm"] == pytest.approx((0 + 0.75 + 0) / 3)
    assert target["cm_baseline"] == pytest.approx((1 + 1 + 0.75) / 3)
    assert target["change"] == pytest.approx(0.25 - 2.75 / 3)
    assert retain["cm"] == pytest.approx(0.75)
    assert retain["cm_baseline"] == pytest.approx(2.5 / 3)
    assert retain["change"] == pytest.approx(0.75 - 2.5 / 3)
    # The release's own number, (M_sem · M_style)² with M_style = 1: the distance squared, no x_ref.
    assert target["release_score"] == pytest.approx((1 + 0.25 + 1) / 3)
    assert target["release_score_baseline"] == pytest.approx((0 + 0 + 0.25) / 3)
    assert retain["release_score"] == pytest.approx(0.25)
    assert retain["release_score_baseline"] == pytest.approx((0.25 + 0 + 0.25) / 3)
    assert target["release_score_low"] <= target["release_score"] <= target["release_score_high"]
    # Copy means: per pair over raters not flagged, then over the rated pairs of the set.
    assert target["copy_baseline"] == pytest.approx((5 + 3.5) / 2)
    assert target["copy"] == pytest.approx(2.0) and target["rated"] == 1
    assert np.isnan(retain["copy"]) and retain["rated"] == 0
    assert target["generations"] == retain["generations"] == 9 and target["anchors"] == 3
    # Nothing was generated: the report used the generations and scores already stored.
    assert ws.conn.execute("SELECT COUNT(*) FROM generations").fetchone()[0] == generations


def _anchor_values(values) -> tuple[np.ndarray, np.ndarray]:
    """One value per anchor, given for each of its SEEDS generations; the anchors' labels beside them."""
    return np.repeat(np.asarray(values, dtype=float), len(SEEDS)), np.repeat(np.arange(len(values)), len(SEEDS))


# A strong erasure: every target generation of the erased variant lies beyond x_ref = 1, some far beyond.
STRONG = {**DISTANCES, ("Ada Target", "erased"): (2.0, 1.5, 3.0)}


def test_beside_cm_the_report_gives_the_uncapped_ratio_and_the_release_score_by_hand(ws):
    """x = M_sem · M_style = d (M_style = 1), x_ref = 1: CM = 1 − min(d, 1)², ratio = d, release score = d²."""
    _scored_study(ws, STRONG)
    rows = _report(ws)
    target, retain = rows["target"], rows["retain"]
    assert target["x_ref"] == retain["x_ref"] == 1.0
    # CM clips the strong erasure at 0: it reads as any erasure that just reaches x_ref.
    assert target["cm"] == 0.0 and target["cm_low"] == target["cm_high"] == 0.0
    assert target["change"] == pytest.approx(-2.75 / 3)
    # The ratio keeps how far beyond x_ref the generations went.
    assert target["ratio"] == pytest.approx((2 + 1.5 + 3) / 3)
    assert target["ratio_baseline"] == pytest.approx((0 + 0 + 0.5) / 3)
    assert target["ratio_change"] == pytest.approx((2 + 1.5 + 2.5) / 3)
    assert target["release_score"] == pytest.approx((4 + 2.25 + 9) / 3)
    assert target["release_score_baseline"] == pytest.approx((0 + 0 + 0.25) / 3)
    assert target["release_score_change"] == pytest.approx((4 + 2.25 + 8.75) / 3)
    assert retain["ratio"] == pytest.approx(0.5) and retain["ratio_baseline"] == pytest.approx(1 / 3)
    assert retain["ratio_change"] == pytest.approx(0.5 - 1 / 3)
    assert retain["release_score"] == pytest.approx(0.25) and retain["release_score_baseline"] == pytest.approx(0.5 / 3)
    assert retain["release_score_change"] == pytest.approx(0.25 - 0.5 / 3)
    # Every interval is the anchor bootstrap of the per-generation values the report's means come from.
    per_anchor = {
        "ratio": (2, 1.5, 3), "ratio_baseline": (0, 0, 0.5), "ratio_change": (2, 1.5, 2.5),
        "release_score": (4, 2.25, 9), "release_score_baseline": (0, 0, 0.25),
        "release_score_change": (4, 2.25, 8.75),
    }
    for column, values in per_anchor.items():
        expected = mean_interval(*_anchor_values(values), 400, seed=0)
        assert (target[f"{column}_low"], target[f"{column}_high"]) == pytest.approx(expected), column
        assert target[f"{column}_low"] < target[column] < target[f"{column}_high"], column


def test_the_report_lists_the_anchors_of_each_set_and_how_the_target_was_chosen(ws):
    _scored_study(ws)
    ids = {artist: " ".join(str(row[0]) for row in ws.conn.execute(
        "SELECT id FROM anchors WHERE artist = ? ORDER BY id", (artist,))) for artist in ("Ada Target", "Ben Retain")}
    table = unlearning_report(ws, "erased", "original", ReportSettings(
        seeds=SEEDS, steps=1, guidance=9.0, offline_tiny=True, progress=False, n_boot=50))
    rows = {row["set"]: row for row in table.to_dict("records")}
    assert rows["target"]["anchor_ids"] == ids["Ada Target"] and rows["target"]["anchor_artists"] == "Ada Target (3)"
    assert rows["retain"]["anchor_ids"] == ids["Ben Retain"] and rows["retain"]["anchor_artists"] == "Ben Retain (3)"
    assert {row["target_rule"] for row in rows.values()} == {
        "artist or title equal to the concept 'Ada Target' (any case)"}
    text = format_report(table)
    first = ids["Ada Target"].split()[0]
    assert f"target (artist or title equal to the concept 'Ada Target' (any case)): 3 anchors #{first} " in text
    assert "by artist: Ada Target (3)" in text and "retain (every other anchor): 3 anchors #" in text
    assert "x / x_ref, x = M_sem·M_style, x_ref = 1, uncapped" in text and "release score (M_sem·M_style)²" in text


def test_a_baseline_of_another_base_model_is_refused_naming_both(ws):
    _scored_study(ws)
    add_variant(ws, "sd15-original", base_model="runwayml/stable-diffusion-v1-5", method="original")
    generations = ws.conn.execute("SELECT COUNT(*) FROM generations").fetchone()[0]
    with pytest.raises(CpdmError, match=r"^variant 'erased' is of base model 'offline-tiny', its baseline "
                                        r"'sd15-original' of 'runwayml/stable-diffusion-v1-5': compare"):
        unlearning_report(ws, "erased", "sd15-original", ReportSettings(offline_tiny=True, progress=False))
    assert ws.conn.execute("SELECT COUNT(*) FROM generations").fetchone()[0] == generations


def test_the_copy_score_follows_the_analysis_rules(ws):
    """Per pair, the mean of the answered ratings of raters not flagged, from any campaign (as cpdm analyze has it)."""
    from cpdm.analysis import data as data_module
    from cpdm.analysis.unlearning import copy_means

    pairs = _scored_study(ws)
    rated = [pairs[("Ada Target", "original", 0, seed)] for seed in SEEDS]
    _rate(ws, [(rated[0], "alice", 5), (rated[0], "flagged", 1), (rated[1], "bob", 2), (rated[1], "alice", 3)])
    ratings = data_module.analysis_ratings(data_module.load_pair_ratings(ws, rated))
    expected = data_module.human_scores(ratings, "copy").set_index("pair")["human"].to_dict()
    assert copy_means(ws, rated) == expected == {rated[0]: 5.0, rated[1]: 2.5}
    assert copy_means(ws, []) == {}


def test_seeds_are_generated_in_runs_of_consecutive_seeds():
    assert seed_runs((23,)) == [(23, 1)]
    assert seed_runs((3, 1, 2, 7, 7)) == [(1, 3), (7, 1)]


def test_report_intervals_resample_anchors_and_say_so(ws):
    _scored_study(ws)
    by_anchor, by_pair = _report(ws), _report(ws, resample="pairs")
    assert by_anchor["target"]["interval"] == "95% expanded percentile bootstrap over anchors, 400 resamples"
    assert by_pair["target"]["interval"] == "95% percentile bootstrap over pairs, 400 resamples"
    for name in ("target", "retain"):
        for column in ("cm", "cm_baseline", "change"):
            anchors, pairs = by_anchor[name], by_pair[name]
            assert anchors[column] == pairs[column]
            if anchors[f"{column}_high"] > anchors[f"{column}_low"]:
                # Generations of one anchor are alike: resampling them as if independent understates the spread.
                assert anchors[f"{column}_high"] - anchors[f"{column}_low"] > \
                    pairs[f"{column}_high"] - pairs[f"{column}_low"], (name, column)
    # A mean over anchors never leaves the range of the anchors' own means (target, erased: 0, 0.75, 0).
    assert 0 <= by_anchor["target"]["cm_low"] < by_anchor["target"]["cm"] < by_anchor["target"]["cm_high"] <= 0.75
    # The retain set's variant scores 0.75 everywhere: no spread, whatever is resampled.
    assert by_anchor["retain"]["cm_low"] == by_anchor["retain"]["cm_high"] == pytest.approx(0.75)


def test_the_report_command_takes_the_resampling_unit(ws, runner):
    _scored_study(ws)
    arguments = ["unlearning", "report", "--variant", "erased", "--offline-tiny", "--steps", "1", "--seed", "1",
                 "--seed", "2", "--seed", "3", "--n-boot", "200", "--quiet", "-w", str(ws.root)]
    table = runner.invoke(cli, arguments)
    assert table.exit_code == 0, table.output
    assert "intervals: 95% expanded percentile bootstrap over anchors, 200 resamples" in table.output
    pairs = runner.invoke(cli, [*arguments, "--resample", "pairs", "--format", "json"])
    assert pairs.exit_code == 0, pairs.output
    intervals = {row["interval"] for row in json.loads(pairs.output)}
    assert intervals == {"95% percentile bootstrap over pairs, 200 resamples"}
    wrong = runner.invoke(cli, [*arguments, "--resample", "prompts"])
    assert wrong.exit_code == 2 and "prompts" in wrong.output


def test_the_report_command_and_job_take_the_target_anchors(ws, runner):
    from cpdm.jobs.registry import get_kind

    _scored_study(ws)
    ben = [row[0] for row in ws.conn.execute("SELECT id FROM anchors WHERE artist = 'Ben Retain' ORDER BY id")]
    arguments = ["unlearning", "report", "--variant", "erased", "--offline-tiny", "--steps", "1", "--seed", "1",
                 "--n-boot", "50", "--quiet", "--format", "json", "-w", str(ws.root)]
    by_artist = runner.invoke(cli, [*arguments, "--target-artist", "ben retain"])
    assert by_artist.exit_code == 0, by_artist.output
    target = {row["set"]: row for row in json.loads(by_artist.output)}["target"]
    assert target["anchor_ids"] == " ".join(map(str, ben)) and target["target_rule"] == "chosen by artist 'ben retain'"
    by_id = runner.invoke(cli, [*arguments, "--target-anchor", str(ben[0])])
    assert by_id.exit_code == 0, by_id.output
    rows = {row["set"]: row for row in json.loads(by_id.output)}
    assert rows["target"]["anchor_ids"] == str(ben[0]) and rows["retain"]["anchors"] == 5
    unknown = runner.invoke(cli, [*arguments, "--target-anchor", "999"])
    assert unknown.exit_code == 1 and "no anchor with id 999" in unknown.output
    checked = get_kind("report").check_params({"variant": "erased", "target_artists": "Ben Retain, Ada Target",
                                               "target_anchors": [ben[0]]})
    assert checked["target_artists"] == ["Ben Retain", "Ada Target"] and checked["target_anchors"] == [ben[0]]


def test_an_unknown_resampling_unit_is_refused_before_any_work(ws):
    _scored_study(ws)
    with pytest.raises(CpdmError, match="unknown resampling unit 'prompts'"):
        _report(ws, resample="prompts")


def test_mean_interval_over_anchors_is_wider_than_over_pairs_when_anchors_differ():
    anchors = np.repeat(np.arange(20), 9)
    values = np.repeat(np.random.default_rng(0).normal(0.5, 0.2, 20), 9)   # alike within an anchor
    by_anchor = mean_interval(values, anchors, 1000, seed=1)
    by_pair = mean_interval(values, anchors, 1000, seed=1, unit="pairs")
    assert by_anchor[0] < values.mean() < by_anchor[1]
    assert by_anchor[1] - by_anchor[0] > 2 * (by_pair[1] - by_pair[0])
    # NaNs are dropped; one anchor alone gives no interval over anchors.
    with_nan = mean_interval(np.append(values, np.nan), np.append(anchors, 99), 1000, seed=1)
    assert with_nan == pytest.approx(by_anchor)
    assert all(np.isnan(mean_interval(values[:9], anchors[:9], 100)))


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


def _judge(ws, choices: list[tuple[int, int, str, str]]) -> None:
    """Store 2AFC "copy" judgments (pair a, pair b, rater name, chosen: "a" or "b") in a 2afc campaign 'duel';
    rater "flagged" is flagged by the attention checks."""
    with ws.transaction() as conn:
        campaign = conn.execute("INSERT INTO campaigns (name, protocol, kind, design) VALUES ('duel', '', '2afc', "
                                "'balanced')").lastrowid
        raters = {name: conn.execute("INSERT INTO raters (name, role, token_hash, flagged) VALUES (?, 'artist', ?, ?)",
                                     (name, f"hash-2afc-{name}", int(name == "flagged"))).lastrowid
                  for name in sorted({name for _, _, name, _ in choices})}
        for index, (a, b, name, chosen) in enumerate(choices):
            first, second = sorted((a, b))
            anchor = conn.execute("SELECT anchor FROM pairs WHERE id = ?", (first,)).fetchone()[0]
            conn.execute("INSERT INTO triplets (anchor, first_pair, second_pair) VALUES (?, ?, ?) "
                         "ON CONFLICT DO NOTHING", (anchor, first, second))
            triplet = conn.execute("SELECT id FROM triplets WHERE first_pair = ? AND second_pair = ?",
                                   (first, second)).fetchone()[0]
            picked = a if chosen == "a" else b
            conn.execute("INSERT INTO judgments (campaign, triplet, rater, question, left_pair, right_pair, answer, "
                         "chosen_pair, shown_at, submitted_at, nonce) VALUES (?, ?, ?, 'copy', ?, ?, ?, ?, "
                         "'2026-12-01T10:00:00Z', '2026-12-01T10:00:09Z', ?)",
                         (campaign, triplet, raters[name], a, b, "left" if chosen == "a" else "right", picked,
                          f"nonce-2afc-{index}"))


def test_the_report_gives_the_human_bradley_terry_comparison_from_a_2afc_campaign(ws):
    pairs = _scored_study(ws)
    choices = []
    for number in range(3):
        for seed in SEEDS:
            erased, original = (pairs[("Ada Target", variant, number, seed)] for variant in ("erased", "original"))
            # Four raters in five judge the original's generation more of a copy; a flagged one always the erased.
            choices += [(erased, original, f"r{k}", "b" if k < 4 else "a") for k in range(5)]
            choices.append((erased, original, "flagged", "a"))
    _judge(ws, choices)
    rows = _report(ws)
    target, retain = rows["target"], rows["retain"]
    # Two items: θ(erased) − θ(original) is the log of their win ratio, 9 × 1 against 9 × 4 (flagged rater out).
    assert target["human_bt_campaign"] == "duel"
    assert target["human_bt"] == pytest.approx(np.log(1 / 4), abs=0.01)
    assert target["human_bt_judgments"] == 45
    assert target["human_bt_low"] <= target["human_bt"] <= target["human_bt_high"]
    assert retain["human_bt_campaign"] == "" and np.isnan(retain["human_bt"])
    table = unlearning_report(ws, "erased", "original", ReportSettings(
        seeds=SEEDS, steps=1, guidance=9.0, offline_tiny=True, progress=False, n_boot=50))
    text = format_report(table)
    assert "human Bradley–Terry (2AFC campaign 'duel')" in text
    assert "  retain  not judged" in text


def test_without_a_2afc_campaign_the_report_has_no_human_bradley_terry(ws):
    _scored_study(ws)
    rows = _report(ws)
    assert rows["target"]["human_bt_campaign"] == "" and np.isnan(rows["target"]["human_bt"])
