"""A 2afc campaign analysed end to end through the workspace: judgments made with the rating API, the report,
calibrated weights, both kinds side by side, the commands."""

from __future__ import annotations

import json
import uuid
from datetime import timedelta

import numpy as np
import pandas as pd
import pytest

from cpdm.analysis.campaign_report import AnalysisOptions, calibrate_campaign, calibration_choices, run_analysis
from cpdm.analysis.judgments import load_judgments, triplet_choices
from cpdm.analysis.report_files import write_report
from cpdm.analysis.two_afc_report import companion_campaign, strengths_for_variants
from cpdm.cli import cli
from cpdm.demo.simulate import add_simulated_ratings
from cpdm.demo.variants import ORIGINAL, UNRELATED
from cpdm.errors import CpdmError
from cpdm.metric import load_weights
from cpdm.rating.auth import create_rater
from cpdm.rating.campaigns import campaign_id_by_name
from cpdm.rating.judgments import claim_triplet, submit_judgment
from cpdm.rating.triplets import create_2afc_campaign
from cpdm.store.time import utc_now
from cpdm.store.workspace import init_workspace
from cpdm.testing import create_synthetic_campaign

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
PLANTED_W_STD = {"artist": 0.3, "lay": 0.7}


def judge(ws, campaign_id, rater, w_std, rng, spreads, distances, kinds, beta=3.0):
    """One rater judges every triplet offered: the side with the lower standardised weighted log distance is more
    of a copy, with a logistic choice; attention checks are answered by the identical side."""
    now = utc_now()
    while (item := claim_triplet(ws, campaign_id, rater, now=now)) is not None:
        now += timedelta(seconds=5)
        left, right = item.left_pair, item.right_pair
        if item.kind == "check":
            answer = "left" if kinds[left] == "check_identical" else "right"
        else:
            s_left, s_right = (w_std * np.log(distances[p][0]) / spreads[0]
                               + (1 - w_std) * np.log(distances[p][1]) / spreads[1] for p in (left, right))
            answer = "left" if rng.random() < 1 / (1 + np.exp(-beta * (s_right - s_left))) else "right"
            if rng.random() < 0.05:
                answer = "cant_tell"
        result = submit_judgment(ws, rater, campaign_id, item.triplet,
                                 {"copy": answer, "content": answer, "style": answer},
                                 nonce=uuid.uuid4().hex, now=now)
        assert result.status == "saved"


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A scored rating campaign 'study' (simulated ratings) and a 2afc campaign 'duel' over the same pairs,
    judged by 4 artists (w_std 0.3) and 4 lay raters (w_std 0.7)."""
    ws = init_workspace(tmp_path_factory.mktemp("two_afc") / "ws")
    study = create_synthetic_campaign(ws, "study", n_anchors=10, seeds_per_variant=2, reference=True, seed=2)
    add_simulated_ratings(ws, study, seed=1)
    pair_ids = [row[0] for row in ws.conn.execute(
        "SELECT cp.pair FROM campaign_pairs cp JOIN pairs p ON p.id = cp.pair AND p.kind = 'normal' "
        "WHERE cp.campaign = ?", (study,))]
    duel = create_2afc_campaign(ws, "duel", pair_ids, design="balanced", overlap={"artist": 3, "lay": 3},
                                per_anchor=10, seed=0)
    distances = {p: (s, t) for p, s, t in ws.conn.execute("SELECT pair, m_sem, m_style FROM scores")}
    kinds = dict(ws.conn.execute("SELECT id, kind FROM pairs"))
    reference = pd.read_sql_query("SELECT m_sem, m_style FROM reference_distances", ws.conn)
    spreads = (float(np.log(reference["m_sem"]).std(ddof=1)), float(np.log(reference["m_style"]).std(ddof=1)))
    rng = np.random.default_rng(5)
    for role in ("artist", "lay"):
        for number in range(4):
            rater, _ = create_rater(ws, f"{role}{number}", role, simulated=True)
            judge(ws, duel, rater, PLANTED_W_STD[role], rng, spreads, distances, kinds)
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
