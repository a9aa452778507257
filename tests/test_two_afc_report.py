"""A 2afc campaign analysed end to end through the workspace: judgments made with the rating API, the report,
calibrated weights, both kinds side by side, the commands."""

from __future__ import annotations

import json

import numpy as np
import pytest

from cpdm.analysis.campaign_report import AnalysisOptions, calibrate_campaign, calibration_choices, run_analysis
from cpdm.analysis.judgments import load_judgments, triplet_choices
from cpdm.analysis.report_files import write_report
from cpdm.analysis.campaign_report import companion_campaign
from cpdm.analysis.two_afc_report import strengths_for_variants
from cpdm.cli import cli
from cpdm.demo.simulate import add_simulated_ratings
from cpdm.demo.variants import ORIGINAL, UNRELATED
from cpdm.errors import CpdmError
from cpdm.metric import load_weights
from cpdm.rating.campaigns import campaign_id_by_name
from cpdm.store.workspace import init_workspace
from cpdm.testing import create_synthetic_campaign
from tests.two_afc_support import PLANTED_W_STD, build_two_afc_study

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """The study of :func:`tests.two_afc_support.build_two_afc_study`: 'study' (ratings) and 'duel' (2AFC)."""
    ws = init_workspace(tmp_path_factory.mktemp("two_afc") / "ws")
    build_two_afc_study(ws)
    yield ws
    ws.close()


def test_judgments_load_one_row_per_answer_in_stored_order(world):
    duel = campaign_id_by_name(world, "duel")
    judgments = load_judgments(world, duel)
    assert set(judgments["question"]) == {"copy", "content", "style"}
    normal = judgments[(judgments["kind"] == "normal") & (judgments["question"] == "copy")]
    # The chosen pair is on the chosen side, whichever side the first pair was shown on.
    decided = normal[normal["chosen"] != "cant_tell"]
    expected = np.where(decided["chosen"] == "first", decided["first_pair"], decided["second_pair"])
    np.testing.assert_array_equal(decided["chosen_pair"].to_numpy(), expected)
    assert (normal.loc[normal["chosen"] == "cant_tell", "chosen_pair"].isna()).all()
    assert {"first_variant", "second_variant", "role", "rater", "anchor"} <= set(judgments.columns)
    triplets = triplet_choices(normal)
    assert (triplets["n"] == 6).all()  # 3 artists and 3 lay raters per triplet


def test_the_2afc_analysis_of_a_campaign(world):
    analysis = run_analysis(world, "duel", AnalysisOptions(n_boot=100))
    assert analysis.kind == "2afc"
    assert set(analysis.agreement["question"]) == {"copy", "content", "style"}
    assert set(analysis.groups) == {"artists", "lay", "all"}
    scores = analysis.scores.set_index(["group", "metric"])
    for (_, _), row in scores.iterrows():
        assert row["ci_low"] <= row["score"] <= row["ci_high"]
    # Raters follow the distances, so the metric sides with them far more often than a coin.
    assert scores.loc[("all", "CM (paper w=0.5)"), "score"] > 0.6
    ceiling = analysis.ceiling.set_index("group")
    assert 0.5 < ceiling.loc["all", "agreement"] <= 1
    # Bradley–Terry: the original is judged far more of a copy than the unrelated stand-in.
    strengths = analysis.strengths[analysis.strengths["group"] == "all"].set_index("variant")
    assert strengths.loc[ORIGINAL, "strength"] > strengths.loc[UNRELATED, "strength"] + 1
    assert strengths.loc[ORIGINAL, "ci_low"] > strengths.loc[UNRELATED, "ci_high"]
    assert len(analysis.generation_strengths) > 0
    cal = analysis.calibration
    assert cal is not None and cal.statistic == "2afc" and cal.stats["rater_group"] == "artists"
    # Artists weigh content less than lay raters, as planted.
    comparison = next(c for c in analysis.group_comparisons if c.question == "copy")
    assert comparison.difference_std < 0
    # The rating campaign over the same pairs is laid beside.
    side = analysis.side_by_side.set_index("judgment_kind")
    assert side.loc["rating", "campaign"] == "study" and side.loc["2afc", "campaign"] == "duel"
    assert set(analysis.figure_names()) >= {"scores", "calibration", "strengths", "groups_copy"}


def test_the_2afc_report_folder(world, tmp_path):
    analysis = run_analysis(world, "duel", AnalysisOptions(n_boot=50))
    written = write_report(analysis, tmp_path / "report")
    names = {path.name for path in written}
    assert {"two_afc_scores.csv", "human_ceiling.csv", "bradley_terry_variants.csv", "calibration_curve.csv",
            "w_by_judgment_kind.csv", "summary.md", "scores.png", "strengths.png"} <= names
    for path in written:
        if path.suffix == ".png":
            assert path.read_bytes().startswith(PNG_MAGIC)
    summary = (tmp_path / "report" / "summary.md").read_text()
    assert "# Analysis of 2AFC campaign `duel`" in summary and "## Bradley–Terry strengths by variant" in summary
    assert "highest 2AFC score on all triplets" in summary


def test_calibrated_weights_from_judgments(world, tmp_path):
    result, weights = calibrate_campaign(world, "duel", group="lay", options=AnalysisOptions(n_boot=100),
                                         record=False)
    assert weights.judgment_kind == "2afc" and weights.rater_group == "lay"
    # Three lay raters per triplet: the first three took every one, the fourth found none left.
    assert weights.n_ratings == 300 and weights.n_raters == 3
    assert abs(weights.w_std - PLANTED_W_STD["lay"]) <= 0.2
    assert weights.stats["judgment_kind"] == "2afc"
    path = tmp_path / "w.json"
    weights.save(path)
    assert load_weights(path).judgment_kind == "2afc"
    # A rating campaign's weights say so too.
    _, rating_weights = calibrate_campaign(world, "study", options=AnalysisOptions(n_boot=0), record=False)
    assert rating_weights.judgment_kind == "rating"


def test_companions_and_choices(world):
    duel, study = campaign_id_by_name(world, "duel"), campaign_id_by_name(world, "study")
    assert companion_campaign(world, duel) == (study, "study")
    assert companion_campaign(world, study) == (duel, "duel")
    questions, groups = calibration_choices(world, duel)
    assert questions == ["copy", "content", "style"] and groups == ["artists", "lay", "all"]
    found = strengths_for_variants(world, [ORIGINAL, UNRELATED])
    assert found is not None and found[0] == "duel"
    assert list(found[1]["variant"]) == [ORIGINAL, UNRELATED]
    assert strengths_for_variants(world, ["no-such-variant"]) is None


def test_refusals(world):
    with pytest.raises(CpdmError, match="no judgments for question 'beauty'"):
        run_analysis(world, "duel", AnalysisOptions(n_boot=0, target="beauty"))
    from cpdm.analysis.campaign_report import plan_campaign

    with pytest.raises(CpdmError, match="cpdm plan --kind 2afc"):
        plan_campaign(world, "duel")


def test_analyze_and_calibrate_commands(world, tmp_path):
    from click.testing import CliRunner

    runner = CliRunner()
    out = tmp_path / "report"
    result = runner.invoke(cli, ["analyze", "--campaign", "duel", "--n-boot", "30", "--out", str(out),
                                 "--workspace", str(world.root)])
    assert result.exit_code == 0, result.output
    assert "out-of-fold 2AFC score" in result.output
    assert "2afc campaign 'duel'" in result.output and "rating campaign 'study'" in result.output
    weights_path = tmp_path / "weights.json"
    result = runner.invoke(cli, ["calibrate", "--campaign", "duel", "--group", "lay", "--n-boot", "30", "--out",
                                 str(weights_path), "--workspace", str(world.root)])
    assert result.exit_code == 0, result.output
    assert "out-of-fold 2AFC score" in result.output and "2AFC judgments" in result.output
    assert json.loads(weights_path.read_text())["judgment_kind"] == "2afc"


def test_backbone_combinations_side_by_side_on_judgments(tmp_path):
    from cpdm.analysis.campaign_report import compare_campaign_combinations

    ws = init_workspace(tmp_path / "ws")
    build_two_afc_study(ws, n_anchors=6, per_anchor=6, raters_per_role=3)
    # A second style backbone for every scored pair: the style distance squared (another spread, same order).
    with ws.transaction() as conn:
        conn.execute("INSERT INTO scores (pair, semantic, style, m_sem, m_style) "
                     "SELECT pair, semantic, 'tiny:zz-style', m_sem, m_style * m_style FROM scores")
    comparison = compare_campaign_combinations(ws, "duel", options=AnalysisOptions(n_boot=50, groups=("all",),
                                                                                  calibration_group="all"))
    table = comparison.table
    assert list(table["style"]) == ["tiny:vgg19", "tiny:zz-style"]
    for row in table.itertuples():
        assert row.ci_low <= row.score_oof <= row.ci_high
        assert row.paper_w_ci_low <= row.score_paper_w <= row.paper_w_ci_high
        assert row.triplets == table["triplets"].iloc[0]
    # Squaring the style distance halves the weight w needs on it for the same ranking: w_std stays close.
    assert table["w_std"].iloc[0] == pytest.approx(table["w_std"].iloc[1], abs=0.15)
    assert comparison.figure() is not None
    ws.close()


def test_flagged_raters_are_left_out_unless_asked_and_an_unjudged_campaign_is_refused(tmp_path):
    from click.testing import CliRunner

    from cpdm.analysis.two_afc_report import load_2afc_campaign
    from cpdm.rating.triplets import create_2afc_campaign

    ws = init_workspace(tmp_path / "ws")
    duel = build_two_afc_study(ws, n_anchors=6, per_anchor=6, raters_per_role=3)
    flagged = ws.conn.execute("SELECT MIN(rater) FROM judgments WHERE campaign = ?", (duel,)).fetchone()[0]
    with ws.transaction() as conn:
        conn.execute("UPDATE raters SET flagged = 1 WHERE id = ?", (flagged,))
    kept = load_2afc_campaign(ws, "duel", AnalysisOptions())
    assert flagged not in set(kept.judgments["rater"]) and kept.counts["flagged_raters"] == 1
    assert kept.counts["excluded_flagged"] == int(((kept.all_judgments["rater"] == flagged)
                                                   & (kept.all_judgments["kind"] == "normal")).sum())
    assert flagged in set(load_2afc_campaign(ws, "duel", AnalysisOptions(include_flagged=True)).judgments["rater"])

    pairs = [row[0] for row in ws.conn.execute("SELECT id FROM pairs WHERE kind = 'normal'")]
    create_2afc_campaign(ws, "unjudged", pairs, include_checks=False)
    with pytest.raises(CpdmError, match="campaign 'unjudged' has no judgments yet"):
        run_analysis(ws, "unjudged", AnalysisOptions(n_boot=0))
    with pytest.raises(CpdmError, match="campaign 'study' rates pairs"):
        load_2afc_campaign(ws, "study", AnalysisOptions())
    result = CliRunner().invoke(cli, ["calibrate", "--campaign", "duel", "--by", "art_years",
                                      "--workspace", str(ws.root)])
    assert result.exit_code == 1 and "--by splits rating campaigns" in result.output
    ws.close()


def test_a_companion_needs_answers(tmp_path):
    from cpdm.rating.triplets import create_2afc_campaign

    ws = init_workspace(tmp_path / "ws")
    study = create_synthetic_campaign(ws, "study", n_anchors=4, reference=True, seed=1)
    pairs = [row[0] for row in ws.conn.execute("SELECT id FROM pairs WHERE kind = 'normal'")]
    duel = create_2afc_campaign(ws, "duel", pairs, include_checks=False)
    assert companion_campaign(ws, study) is None and companion_campaign(ws, duel) is None
    add_simulated_ratings(ws, study, seed=1)
    assert companion_campaign(ws, duel) == (study, "study")
    assert companion_campaign(ws, study) is None  # the 2afc campaign has no judgments yet
    ws.close()
