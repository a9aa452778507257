"""cpdm analyze / calibrate / export / simulate-ratings, and the analysis of a workspace campaign."""

from __future__ import annotations

import csv
import json

import numpy as np
import pandas as pd
import pytest

from cpdm.analysis.report import AnalysisOptions, calibrate_campaign, run_analysis
from cpdm.cli import cli
from cpdm.demo.simulate import add_simulated_ratings, create_synthetic_campaign
from cpdm.demo.variants import UNRELATED

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def study(ws):
    """A scored campaign 'study' (10 anchors × 4 variants, reference distances) with simulated ratings."""
    campaign = create_synthetic_campaign(ws, "study", n_anchors=10, reference=True, seed=2)
    add_simulated_ratings(ws, campaign, seed=1)
    return ws


def invoke(runner, ws, *args):
    return runner.invoke(cli, [*args, "--workspace", str(ws.root)])


def test_analyze_writes_tables_plots_and_summary(study, runner, tmp_path):
    out = tmp_path / "report"
    result = invoke(runner, study, "analyze", "--campaign", "study", "--out", str(out), "--n-boot", "50")
    assert result.exit_code == 0, result.output
    assert "calibrated w =" in result.output
    for name in ("agreement", "correlations", "noise_ceiling", "pairs", "calibration_curve", "calibration_summary",
                 "variants"):
        assert (out / "tables" / f"{name}.csv").stat().st_size > 0
    for name in ("agreement", "scatter_CM", "scatter_CM_w", "scatter_neg_m_sem", "scatter_neg_m_style",
                 "calibration", "variants"):
        assert (out / "plots" / f"{name}.png").read_bytes().startswith(PNG_MAGIC)
    summary = (out / "summary.md").read_text()
    assert "# Analysis of campaign `study`" in summary and "Chosen w = **" in summary
    agreement = pd.read_csv(out / "tables" / "agreement.csv")
    assert set(agreement["group"]) == {"artists", "lay", "all"}
    assert set(agreement["question"]) == {"content", "style", "copy"}
    correlations = pd.read_csv(out / "tables" / "correlations.csv")
    assert set(correlations["metric"]) == {"CM", "CM_w", "-m_sem", "-m_style"}
    assert set(correlations["method"]) == {"spearman", "kendall", "pearson"}
    variants = pd.read_csv(out / "tables" / "variants.csv")
    assert variants["variant"].iloc[0] == "original"
    # The simulated judgements follow the distances: the unrelated stand-in is judged far less of a copy
    # than the original.
    by_variant = variants.set_index("variant")
    assert by_variant.loc[UNRELATED, "mean_copy_artists"] < by_variant.loc["original", "mean_copy_artists"] - 1
    assert bool(by_variant.loc[UNRELATED, "reduced_by_CM"]) and bool(by_variant.loc[UNRELATED, "reduced_by_artists"])


def test_analyze_one_group_and_default_folder(study, runner):
    result = invoke(runner, study, "analyze", "--campaign", "study", "--group", "lay", "--n-boot", "20")
    assert result.exit_code == 0, result.output
    out = study.exports_dir / "report-study"
    agreement = pd.read_csv(out / "tables" / "agreement.csv")
    assert set(agreement["group"]) == {"lay"}
    assert "group `lay`" in (out / "summary.md").read_text()


def test_analysis_numbers_match_direct_computation(study):
    from scipy import stats

    analysis = run_analysis(study, "study", AnalysisOptions(n_boot=30, groups=("artists",)))
    ratings = pd.read_sql_query(
        "SELECT r.pair, r.value FROM ratings r JOIN raters ra ON ra.id = r.rater JOIN pairs p ON p.id = r.pair "
        "WHERE ra.role = 'artist' AND r.question = 'copy' AND p.kind = 'normal' AND r.value IS NOT NULL", study.conn)
    human = ratings.groupby("pair")["value"].mean()
    pairs = analysis.pairs.set_index("pair")
    np.testing.assert_allclose(pairs.loc[human.index, "human_artists"], human)
    row = analysis.correlations.query("metric == 'CM' and method == 'spearman'").iloc[0]
    assert row["r"] == pytest.approx(stats.spearmanr(pairs.loc[human.index, "CM"], human).statistic)


def test_flagged_raters_are_excluded_by_default_and_included_on_request(study):
    rater = study.conn.execute("SELECT id FROM raters WHERE role = 'artist' ORDER BY id LIMIT 1").fetchone()[0]
    with study.transaction() as conn:
        conn.execute("UPDATE raters SET flagged = 1, flag_reason = 'failed checks' WHERE id = ?", (rater,))
    options = dict(n_boot=10, groups=("artists",))
    excluded = run_analysis(study, "study", AnalysisOptions(**options))
    included = run_analysis(study, "study", AnalysisOptions(include_flagged=True, **options))
    assert rater not in set(excluded.data.ratings["rater"])
    assert rater in set(included.data.ratings["rater"])
    assert excluded.data.counts["excluded_flagged"] > 0
    assert excluded.agreement["ratings"].sum() < included.agreement["ratings"].sum()


def test_zscore_removes_rater_leniency(study):
    analysis = run_analysis(study, "study", AnalysisOptions(n_boot=10, groups=("all",), zscore=True))
    human = analysis.pairs["human_all"].dropna()
    assert abs(human.mean()) < 0.3 and human.min() < 0 < human.max()


def test_simulated_raters_can_be_left_out(study, runner):
    result = invoke(runner, study, "analyze", "--campaign", "study", "--exclude-simulated")
    assert result.exit_code == 1
    assert "error: campaign 'study' has no usable ratings" in result.output
    assert "Traceback" not in result.output


def test_calibrate_writes_weights_that_score_reads_back(study, runner, tmp_path):
    from cpdm.metric import load_weights

    path = tmp_path / "out" / "weights.json"
    result = invoke(runner, study, "calibrate", "--campaign", "study", "--out", str(path), "--n-boot", "30")
    assert result.exit_code == 0, result.output
    weights = load_weights(path)
    data = json.loads(path.read_text())
    assert data["format"] == "cpdm-weights/1"
    assert 0 <= weights.w <= 1 and weights.x_ref > 0
    assert (weights.semantic, weights.style) == ("tiny:clip", "tiny:vgg19")
    assert weights.target == "copy" and weights.rater_group == "artists"
    assert weights.n_pairs == 40 and weights.n_raters == 4
    answered = study.conn.execute(
        "SELECT COUNT(*) FROM ratings r JOIN raters ra ON ra.id = r.rater JOIN pairs p ON p.id = r.pair "
        "WHERE ra.role = 'artist' AND r.question = 'copy' AND p.kind = 'normal' AND r.value IS NOT NULL").fetchone()[0]
    assert weights.n_ratings == answered
    assert len(weights.ratings_sha256) == 64
    stats = weights.stats
    assert stats["x_ref_source"] == "reference pairs"
    assert stats["spearman_oof_ci"][0] <= stats["spearman_oof"] <= stats["spearman_oof_ci"][1]
    assert set(stats["baselines"]) == {"paper w=0.5", "semantic only w=1", "style only w=0"}
    assert len(stats["fold_w"]) == 5
    row = study.conn.execute("SELECT target, rater_group, w FROM calibrations").fetchone()
    assert row == ("copy", "artists", weights.w)
    listed = invoke(runner, study, "scores", "list", "--weights", str(path), "--limit", "3")
    assert listed.exit_code == 0, listed.output
    assert f"w={weights.w:g}" in listed.output


def test_ratings_hash_changes_when_a_rating_changes(study):
    _, before = calibrate_campaign(study, "study", options=AnalysisOptions(n_boot=0), record=False)
    _, same = calibrate_campaign(study, "study", options=AnalysisOptions(n_boot=0), record=False)
    assert before.ratings_sha256 == same.ratings_sha256
    with study.transaction() as conn:
        conn.execute(
            "UPDATE ratings SET value = 6 - value WHERE id = (SELECT r.id FROM ratings r JOIN raters ra ON ra.id = "
            "r.rater JOIN pairs p ON p.id = r.pair WHERE ra.role = 'artist' AND r.question = 'copy' AND "
            "p.kind = 'normal' AND r.value IS NOT NULL AND r.value != 3 LIMIT 1)")
    _, after = calibrate_campaign(study, "study", options=AnalysisOptions(n_boot=0), record=False)
    assert after.ratings_sha256 != before.ratings_sha256


@pytest.mark.parametrize("fmt", ["csv", "parquet", "jsonl"])
def test_export_long_form_with_pseudonymous_raters(study, runner, tmp_path, fmt):
    path = tmp_path / f"ratings.{fmt}"
    result = invoke(runner, study, "export", "--campaign", "study", "--format", fmt, "--out", str(path))
    assert result.exit_code == 0, result.output
    if fmt == "csv":
        frame = pd.read_csv(path)
    elif fmt == "parquet":
        frame = pd.read_parquet(path)
    else:
        frame = pd.read_json(path, lines=True)
    total = study.conn.execute("SELECT COUNT(*) FROM ratings").fetchone()[0]
    assert len(frame) == total
    assert list(frame.columns) == ["pair", "anchor", "kind", "variant", "rater", "role", "question", "value",
                                   "skip_reason", "shown_at", "submitted_at", "seconds", "too_fast", "flagged",
                                   "simulated"]
    assert frame["rater"].str.match(r"^R[0-9a-f]{10}$").all()
    assert frame["rater"].nunique() == 8
    names = {r[0] for r in study.conn.execute("SELECT name FROM raters")}
    assert not names & set(frame["rater"])
    assert frame["value"].isna().sum() == study.conn.execute(
        "SELECT COUNT(*) FROM ratings WHERE value IS NULL").fetchone()[0]
    # Answers come back as the whole points the raters chose, as written in the database.
    exported = sorted(frame.dropna(subset=["value"])["value"].astype(int).tolist())
    stored = sorted(v for (v,) in study.conn.execute("SELECT value FROM ratings WHERE value IS NOT NULL"))
    assert exported == stored
    if fmt == "csv":  # written as 4, not 4.0
        values = [row["value"] for row in csv.DictReader(path.open()) if row["value"]]
        assert values and all(value.isdigit() for value in values)


def test_export_pseudonyms_are_stable(study, runner, tmp_path):
    for name in ("a.csv", "b.csv"):
        assert invoke(runner, study, "export", "--campaign", "study", "--out", str(tmp_path / name)).exit_code == 0
    assert pd.read_csv(tmp_path / "a.csv")["rater"].equals(pd.read_csv(tmp_path / "b.csv")["rater"])


def test_simulate_ratings_command(ws, runner):
    create_synthetic_campaign(ws, "pilot", n_anchors=2)
    result = invoke(runner, ws, "simulate-ratings", "--campaign", "pilot", "--artists", "2", "--lay", "1")
    assert result.exit_code == 0, result.output
    assert "simulated ratings added from 3 raters" in result.output


# --- bad input: one clear line, exit 1, nothing written ----------------------------------------------------


@pytest.mark.parametrize("command", [
    ["analyze", "--campaign", "nope"],
    ["calibrate", "--campaign", "nope", "--out", "w.json"],
    ["export", "--campaign", "nope", "--out", "r.csv"],
])
def test_unknown_campaign(study, runner, command):
    result = invoke(runner, study, *command)
    assert result.exit_code == 1
    assert "error: no campaign named 'nope' (known: study)" in result.output
    assert "Traceback" not in result.output


def test_campaign_without_ratings(ws, runner, tmp_path):
    create_synthetic_campaign(ws, "empty", n_anchors=2)
    for command in (["analyze", "--campaign", "empty"], ["calibrate", "--campaign", "empty", "--out", "w.json"]):
        result = invoke(runner, ws, *command)
        assert result.exit_code == 1
        assert "error: campaign 'empty' has no ratings yet" in result.output
    result = invoke(runner, ws, "export", "--campaign", "empty", "--out", str(tmp_path / "r.csv"))
    assert result.exit_code == 1 and "has no ratings to export" in result.output
    assert not (tmp_path / "r.csv").exists()


def test_too_few_anchors_for_cross_validation(ws, runner, tmp_path):
    campaign = create_synthetic_campaign(ws, "small", n_anchors=3, seeds_per_variant=1)
    add_simulated_ratings(ws, campaign)
    path = tmp_path / "w.json"
    result = invoke(runner, ws, "calibrate", "--campaign", "small", "--out", str(path))
    assert result.exit_code == 1
    assert "error: calibration needs at least 10 pairs" in result.output or "at least 5 anchors" in result.output
    assert not path.exists()
    campaign = create_synthetic_campaign(ws, "few-anchors", n_anchors=4, seeds_per_variant=3)
    add_simulated_ratings(ws, campaign)
    result = invoke(runner, ws, "calibrate", "--campaign", "few-anchors", "--out", str(path))
    assert result.exit_code == 1
    assert "error: cross-validation by anchor needs at least 5 anchors with scored, rated pairs; got 4" in result.output
    # analyze still reports, and says why calibration is missing.
    result = invoke(runner, ws, "analyze", "--campaign", "few-anchors", "--n-boot", "10", "--out", str(tmp_path / "r"))
    assert result.exit_code == 0, result.output
    assert "note: calibration left out: cross-validation by anchor needs at least 5 anchors" in result.output


def test_group_without_raters(ws, runner, tmp_path):
    campaign = create_synthetic_campaign(ws, "lay-only", n_anchors=6)
    add_simulated_ratings(ws, campaign, n_artists=0, n_lay=3)
    result = invoke(runner, ws, "calibrate", "--campaign", "lay-only", "--out", str(tmp_path / "w.json"))
    assert result.exit_code == 1
    assert "error: no usable ratings from the artists group in campaign 'lay-only'" in result.output
    result = invoke(runner, ws, "analyze", "--campaign", "lay-only", "--group", "artists")
    assert result.exit_code == 1 and "no usable ratings from the artists group" in result.output
    # Without --group the missing group is left out with a note, and w is fitted to the lay raters.
    result = invoke(runner, ws, "analyze", "--campaign", "lay-only", "--n-boot", "10", "--out", str(tmp_path / "r"))
    assert result.exit_code == 0, result.output
    assert "note: no usable ratings from the artists group" in result.output
    assert "calibrated on the lay group" in result.output


def test_unwritable_outputs(study, runner, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    result = invoke(runner, study, "calibrate", "--campaign", "study", "--out", str(blocker / "w.json"), "--n-boot", "5")
    assert result.exit_code == 1 and f"error: cannot write {blocker / 'w.json'}" in result.output
    result = invoke(runner, study, "export", "--campaign", "study", "--out", str(blocker / "r.csv"))
    assert result.exit_code == 1 and f"error: cannot write {blocker / 'r.csv'}" in result.output
    result = invoke(runner, study, "analyze", "--campaign", "study", "--out", str(blocker), "--n-boot", "5")
    assert result.exit_code == 1 and f"error: cannot write the report to {blocker}: it is a file" in result.output
    assert "Traceback" not in result.output
    assert blocker.read_text() == "x"


def test_unknown_target_question(study, runner, tmp_path):
    result = invoke(runner, study, "calibrate", "--campaign", "study", "--target", "beauty",
                    "--out", str(tmp_path / "w.json"))
    assert result.exit_code == 1
    assert "error: no ratings for question 'beauty' in campaign 'study' (questions: content, style, copy)" in result.output


def test_unscored_campaign(ws, runner, tmp_path):
    campaign = create_synthetic_campaign(ws, "unscored", n_anchors=6, scored=False)
    add_simulated_ratings(ws, campaign)
    result = invoke(runner, ws, "calibrate", "--campaign", "unscored", "--out", str(tmp_path / "w.json"))
    assert result.exit_code == 1 and "has no metric scores; run `cpdm score` first" in result.output
    result = invoke(runner, ws, "analyze", "--campaign", "unscored", "--n-boot", "10", "--out", str(tmp_path / "r"))
    assert result.exit_code == 0, result.output
    assert "no metric scores" in result.output
    assert (tmp_path / "r" / "plots" / "agreement.png").exists()


def test_agreement_counts_pairs_nobody_rated_twice(study):
    """Pairs with fewer than two answers (skips included) are excluded from alpha and counted."""
    pair = study.conn.execute("SELECT id FROM pairs WHERE kind = 'normal' ORDER BY id LIMIT 1").fetchone()[0]
    with study.transaction() as conn:
        conn.execute("UPDATE ratings SET value = NULL, skip_reason = 'cannot judge' WHERE pair = ?", (pair,))
    analysis = run_analysis(study, "study", AnalysisOptions(n_boot=5, groups=("all",)))
    row = analysis.agreement.query("question == 'copy'").iloc[0]
    answers = analysis.data.ratings.query("question == 'copy'").groupby("pair").size()
    assert pair not in answers.index
    assert row["pairs"] == int((answers >= 2).sum())
    assert row["pairs"] + row["pairs_excluded"] == 40


def test_calibrate_to_an_unwritable_path_records_no_calibration(study, runner, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    out = blocker / "w.json"
    result = invoke(runner, study, "calibrate", "--campaign", "study", "--out", str(out), "--n-boot", "5")
    assert result.exit_code == 1 and f"error: cannot write {out}" in result.output
    assert study.conn.execute("SELECT COUNT(*) FROM calibrations").fetchone()[0] == 0
    assert blocker.read_text() == "x" and sorted(p.name for p in tmp_path.iterdir()) == ["file", "ws"]
