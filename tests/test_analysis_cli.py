"""cpdm analyze / calibrate / export / simulate-ratings, and the analysis of a workspace campaign."""

from __future__ import annotations

import csv
import json

import numpy as np
import pandas as pd
import pytest

from cpdm.analysis.campaign_report import AnalysisOptions, calibrate_campaign, run_analysis
from cpdm.cli import cli
from cpdm.demo.simulate import add_simulated_ratings
from cpdm.testing import create_synthetic_campaign
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
    assert "calibrated on artists: out-of-fold Spearman" in result.output
    assert "  w = " in result.output and "  w_std = " in result.output and "  conversion: w_std = " in result.output
    assert "artists vs lay on 'copy': artists w_std " in result.output
    for name in ("agreement", "correlations", "noise_ceiling", "pairs", "calibration_curve", "calibration_summary",
                 "variants"):
        assert (out / "tables" / f"{name}.csv").stat().st_size > 0
    for name in ("agreement", "scatter_CM", "scatter_CM_w", "scatter_neg_m_sem", "scatter_neg_m_style",
                 "calibration", "variants"):
        assert (out / "plots" / f"{name}.png").read_bytes().startswith(PNG_MAGIC)
    summary = (out / "summary.md").read_text()
    assert "# Analysis of campaign `study`" in summary and "Chosen w = **" in summary and "w_std = **" in summary
    groups = pd.read_csv(out / "tables" / "group_comparison.csv")
    assert {"w_std_artists", "w_std_lay", "w_std difference (artists - lay)", "w_artists"} <= set(groups.columns)
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
    # The release's own number beside CM, per pair and per variant, computed here from the stored distances.
    pairs = pd.read_csv(out / "tables" / "pairs.csv")
    np.testing.assert_allclose(pairs["release_score"], (pairs["m_sem"] * pairs["m_style"]) ** 2, rtol=1e-12)
    means = pairs.groupby("variant")["release_score"].mean()
    np.testing.assert_allclose(by_variant.loc[means.index, "mean_release_score"], means, rtol=1e-12)
    assert (by_variant["release_score_ci_low"] <= by_variant["mean_release_score"]).all()
    assert (by_variant["mean_release_score"] <= by_variant["release_score_ci_high"]).all()
    assert "release_score" in summary and "tiny:clip + tiny:vgg19 (not the paper's combination" in summary


def test_analyze_one_group_and_default_folder(study, runner):
    result = invoke(runner, study, "analyze", "--campaign", "study", "--group", "lay", "--n-boot", "20")
    assert result.exit_code == 0, result.output
    out = study.exports_dir / "report-study"
    agreement = pd.read_csv(out / "tables" / "agreement.csv")
    assert set(agreement["group"]) == {"lay"}
    assert "group `lay`" in (out / "summary.md").read_text()


def test_info_and_the_analysis_say_which_combination_a_campaign_uses_preferring_the_papers(study, runner):
    listed = invoke(runner, study, "info")
    assert listed.exit_code == 0, listed.output
    assert ("campaign     study: scores of tiny:clip + tiny:vgg19 (not the paper's combination, "
            "ViT-L-14/openai + cpdm-inception; tiny random-initialised models), 40 of 40 pairs") in listed.output
    paper = ("tiny:ViT-L-14/openai", "tiny:cpdm-inception")
    with study.transaction() as conn:  # the same pairs scored with the paper's backbones too
        conn.execute("INSERT INTO scores (pair, semantic, style, m_sem, m_style) "
                     "SELECT pair, ?, ?, m_sem, m_style FROM scores", paper)
    listed = invoke(runner, study, "info", "--format", "json")
    (campaign,) = json.loads(listed.output)["campaign_scores"]
    assert (campaign["semantic"], campaign["style"], campaign["paper"]) == (*paper, True)
    assert (campaign["pairs_scored"], campaign["pairs"], campaign["also"]) == (40, 40, ["tiny:clip + tiny:vgg19"])
    assert run_analysis(study, "study", AnalysisOptions(n_boot=0)).data.backbones == paper


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
    # The interval for w, beside the out-of-fold rho, in the file and in the output.
    assert stats["w_ci"][0] <= weights.w <= stats["w_ci"][1]
    assert stats["bootstrap"] == "95% expanded percentile bootstrap over anchors, 30 resamples"
    assert f"w = {weights.w:g} [{stats['w_ci'][0]:.3g}, {stats['w_ci'][1]:.3g}]" in result.output
    assert "intervals: 95% expanded percentile bootstrap over anchors, 30 resamples" in result.output
    # w_std beside w: converted with the log spreads of the reference pairs, which the file records.
    reference = pd.read_sql_query("SELECT m_sem, m_style FROM reference_distances", study.conn)
    s_sem, s_style = np.std(np.log(reference["m_sem"]), ddof=1), np.std(np.log(reference["m_style"]), ddof=1)
    assert (data["log_sd_sem"], data["log_sd_style"]) == (pytest.approx(s_sem), pytest.approx(s_style))
    assert data["w_std"] == pytest.approx(weights.w * s_sem / (weights.w * s_sem + (1 - weights.w) * s_style))
    low, high = (w * s_sem / (w * s_sem + (1 - w) * s_style) for w in stats["w_ci"])
    assert stats["w_std_ci"] == [pytest.approx(low), pytest.approx(high)]
    assert f"w_std = {data['w_std']:.3f} [{low:.3f}, {high:.3f}]" in result.output
    assert f"the paper's w = 0.5 is w_std = {s_sem / (s_sem + s_style):.3f}" in result.output
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


@pytest.mark.parametrize(("resample", "described"), [
    ([], "95% expanded percentile bootstrap over anchors, 40 resamples"),
    (["--resample", "pairs"], "95% percentile bootstrap over pairs, 40 resamples"),
])
def test_analyze_says_how_its_intervals_were_made(study, runner, tmp_path, resample, described):
    out = tmp_path / "report"
    result = invoke(runner, study, "analyze", "--campaign", "study", "--out", str(out), "--n-boot", "40", *resample)
    assert result.exit_code == 0, result.output
    assert f"intervals: {described}" in result.output
    assert f"Intervals: {described}" in (out / "summary.md").read_text()
    for table in ("agreement", "correlations", "noise_ceiling"):
        assert set(pd.read_csv(out / "tables" / f"{table}.csv")["interval"]) == {described}
    groups = pd.read_csv(out / "tables" / "group_comparison.csv")
    assert list(groups["question"]) == ["content", "style", "copy"]
    assert (out / "plots" / "groups_copy.png").read_bytes().startswith(PNG_MAGIC)


def test_unknown_resampling_unit(study, runner):
    result = invoke(runner, study, "analyze", "--campaign", "study", "--resample", "raters")
    assert result.exit_code == 2 and "Invalid value for '--resample'" in result.output
    with pytest.raises(Exception, match="unknown resampling unit 'raters'"):
        run_analysis(study, "study", AnalysisOptions(n_boot=10, resample="raters"))


def test_plan_prints_designs_and_recommendations(study, runner):
    result = invoke(runner, study, "plan", "--campaign", "study", "--replicates", "20")
    assert result.exit_code == 0, result.output
    assert "pilot 'study': 10 anchors; 20 simulated studies per design" in result.output
    header = next(line for line in result.output.splitlines() if "raters_per_pair" in line)
    assert header.split()[:4] == ["anchors", "raters_per_pair", "pairs", "ratings"]
    assert "power" in header
    assert "To pin w to ±0.1 (artists, lay):" in result.output
    assert "To detect an artist–lay difference of 0.2 with 80% power:" in result.output


def test_plan_refuses_a_pilot_it_cannot_use(ws, runner):
    campaign = create_synthetic_campaign(ws, "tiny", n_anchors=3)
    add_simulated_ratings(ws, campaign)
    result = invoke(runner, ws, "plan", "--campaign", "tiny", "--replicates", "20")
    assert result.exit_code == 1
    assert "error: planning needs a pilot with at least 5 rated anchors; got 3" in result.output
    result = invoke(runner, ws, "plan", "--campaign", "tiny", "--target", "beauty")
    assert result.exit_code == 1 and "no ratings for question 'beauty'" in result.output
    result = invoke(runner, ws, "plan", "--campaign", "nope")
    assert result.exit_code == 1 and "no campaign named 'nope'" in result.output
