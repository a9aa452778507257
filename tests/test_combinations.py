"""Backbone combinations side by side: calibrated w, out-of-fold ρ, paired differences against the paper's choice."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from cpdm.analysis.combinations import paper_combination, plain_name
from cpdm.analysis.campaign_report import AnalysisOptions, compare_campaign_combinations, run_analysis
from cpdm.cli import cli
from cpdm.demo.simulate import add_simulated_ratings
from cpdm.testing import create_synthetic_campaign
from cpdm.scoring.reader import load_reference_distances
from cpdm.scoring.reference import store_reference_set

PAPER = ("tiny:ViT-L-14/openai", "tiny:cpdm-inception")
NOISE = ("tiny:dinov2", "tiny:csd")
BASE = ("tiny:clip", "tiny:vgg19")  # what the synthetic campaign is scored with


def _copy_scores(ws, target: tuple[str, str], transform) -> None:
    """Store scores and a recorded reference set for another combination, derived from the base combination's."""
    rng = np.random.default_rng(len(target[0]))
    with ws.transaction() as conn:
        rows = conn.execute("SELECT pair, m_sem, m_style FROM scores WHERE semantic = ? AND style = ?", BASE).fetchall()
        conn.executemany("INSERT INTO scores (pair, semantic, style, m_sem, m_style) VALUES (?, ?, ?, ?, ?)",
                         [(pair, *target, *transform(sem, style, rng)) for pair, sem, style in rows])
    reference = load_reference_distances(ws, *BASE)
    rows = [(anchor, image, *transform(sem, style, rng)) for anchor, image, sem, style in reference.itertuples(False)]
    store_reference_set(ws, *target, rows, baseline=None, definition="the base combination's reference pairs, transformed")


@pytest.fixture
def study(ws):
    """A rated campaign scored with three combinations: the base, the paper's (base plus a little noise), and noise."""
    campaign = create_synthetic_campaign(ws, "study", n_anchors=10, reference=True, seed=2)
    add_simulated_ratings(ws, campaign, seed=1)
    _copy_scores(ws, PAPER, lambda sem, style, rng: (sem * rng.uniform(0.9, 1.1), style * rng.uniform(0.9, 1.1)))
    _copy_scores(ws, NOISE, lambda sem, style, rng: (rng.uniform(0.1, 2.0), rng.uniform(0.01, 1.0)))
    return ws


def test_paper_combination_is_found_in_any_mode():
    assert paper_combination([BASE, PAPER]) == PAPER
    assert paper_combination([("ViT-L-14/openai", "cpdm-inception")]) == ("ViT-L-14/openai", "cpdm-inception")
    assert paper_combination([BASE]) is None
    assert plain_name("random:vgg19@128") == "vgg19@128" and plain_name("ViT-L-14/openai") == "ViT-L-14/openai"


def test_combination_table_ranks_descriptors_against_the_paper(study):
    options = AnalysisOptions(n_boot=200, groups=("artists", "lay"))
    comparison = compare_campaign_combinations(study, "study", options=options)
    table = comparison.table
    assert comparison.paper == PAPER
    assert len(table) == 6 and set(table["group"]) == {"artists", "lay"}
    assert table["pairs"].nunique() == 1  # every row compares the same pairs
    for group, rows in table.groupby("group"):
        rows = rows.set_index(["semantic", "style"])
        paper = rows.loc[PAPER]
        assert bool(paper["paper"]) and paper["diff_vs_paper"] == 0.0
        np.testing.assert_allclose(rows["diff_vs_paper"], rows["rho_oof"] - paper["rho_oof"])
        assert (rows["ci_low"] <= rows["rho_oof"]).all() and (rows["rho_oof"] <= rows["ci_high"]).all()
        assert ((0 <= rows["w"]) & (rows["w"] <= 1)).all()
        # Random distances track nobody: far below the paper's, with a paired interval that excludes 0.
        noise = rows.loc[NOISE]
        assert noise["rho_oof"] < paper["rho_oof"] - 0.3
        assert noise["diff_high"] < 0
        # The base carries the paper's signal: resampled in pairs, their difference is surer than either ρ.
        base = rows.loc[BASE]
        assert base["diff_low"] <= base["diff_vs_paper"] <= base["diff_high"]
        assert base["diff_high"] - base["diff_low"] < base["ci_high"] - base["ci_low"]
    # The same options give the same table (seeded resampling).
    again = compare_campaign_combinations(study, "study", options=options).table
    pd.testing.assert_frame_equal(table, again)


def test_a_campaign_with_one_combination_has_no_comparison(ws):
    campaign = create_synthetic_campaign(ws, "single", n_anchors=6, reference=True, seed=3)
    add_simulated_ratings(ws, campaign, seed=1)
    assert compare_campaign_combinations(ws, "single", options=AnalysisOptions(n_boot=20)) is None
    assert run_analysis(ws, "single", AnalysisOptions(n_boot=20)).combinations is None


def test_analyze_report_has_the_combination_table_and_plot(study, runner, tmp_path):
    out = tmp_path / "report"
    result = runner.invoke(cli, ["analyze", "--campaign", "study", "--out", str(out), "--n-boot", "50",
                                 "--workspace", str(study.root)])
    assert result.exit_code == 0, result.output
    table = pd.read_csv(out / "tables" / "combinations.csv")
    assert len(table) == 9 and set(table["group"]) == {"artists", "lay", "all"}
    assert (out / "plots" / "combinations.png").read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    assert "## Backbone combinations" in (out / "summary.md").read_text()


def test_calibrate_picks_one_combination_and_score_refuses_others(study, runner, tmp_path):
    written = {}
    for semantic, style in (PAPER, NOISE):
        out = tmp_path / f"{plain_name(style)}.json"
        result = runner.invoke(cli, ["calibrate", "--campaign", "study", "--semantic", semantic, "--style", style,
                                     "--n-boot", "20", "--out", str(out), "--workspace", str(study.root)])
        assert result.exit_code == 0, result.output
        written[style] = json.loads(out.read_text())
        assert (written[style]["semantic"], written[style]["style"]) == (semantic, style)
    assert written[PAPER[1]]["stats"]["spearman_oof"] != written[NOISE[1]]["stats"]["spearman_oof"]
    result = runner.invoke(cli, ["calibrate", "--campaign", "study", "--semantic", "tiny:dinov2", "--style",
                                 "tiny:vgg19", "--out", str(tmp_path / "x.json"), "--workspace", str(study.root)])
    assert result.exit_code == 1 and "no scores with semantic=tiny:dinov2 style=tiny:vgg19" in result.output
    assert not (tmp_path / "x.json").exists()
    before = study.conn.execute("SELECT COUNT(*), TOTAL(m_sem) FROM scores").fetchone()
    result = runner.invoke(cli, ["scores", "list", "--semantic", "tiny:ViT-L-14/openai", "--style", "tiny:vgg19",
                                 "--weights", str(tmp_path / "cpdm-inception.json"), "--workspace", str(study.root)])
    assert result.exit_code == 1
    assert "calibrated for semantic=tiny:ViT-L-14/openai style=tiny:cpdm-inception" in result.output
    assert study.conn.execute("SELECT COUNT(*), TOTAL(m_sem) FROM scores").fetchone() == before


def test_calibration_page_shows_the_combination_table(study):
    from tests.test_analysis_pages import open_page, text

    at = open_page(study, "calibration.py", cal_boot=20)
    assert not at.exception, at.exception
    assert "Backbone combinations" in text(at)
    tables = [frame.value for frame in at.dataframe]
    combos = next(t for t in tables if "diff_vs_paper" in t.columns)
    assert len(combos) == 9 and set(combos["group"]) == {"artists", "lay", "all"}


def test_combination_intervals_follow_the_analysis_resampling(study):
    """Like every interval of the report: over anchors by default, over single pairs on request."""

    def table(resample):
        options = AnalysisOptions(n_boot=200, groups=("artists",), resample=resample)
        return compare_campaign_combinations(study, "study", options=options).table.set_index("style")

    anchors, pairs = table("anchors"), table("pairs")
    assert (anchors["rho_oof"] == pairs["rho_oof"]).all()  # the estimates do not depend on the resampling
    for frame in (anchors, pairs):
        assert (frame["ci_low"] <= frame["rho_oof"]).all() and (frame["rho_oof"] <= frame["ci_high"]).all()
    assert not np.allclose(anchors[["ci_low", "ci_high"]].to_numpy(), pairs[["ci_low", "ci_high"]].to_numpy())


def test_combinations_compare_w_std_which_a_rescaled_backbone_leaves_alone(ws):
    """Cubing M_sem triples its log spread: w moves to say the same thing, w_std stays."""
    cubed = ("tiny:dinov2", "tiny:vgg19")
    campaign = create_synthetic_campaign(ws, "study", n_anchors=10, reference=True, seed=2)
    add_simulated_ratings(ws, campaign, seed=1)
    _copy_scores(ws, PAPER, lambda sem, style, rng: (sem, style))
    _copy_scores(ws, cubed, lambda sem, style, rng: (sem**3, style))
    # A fine grid: the two combinations' grid points fall at different w_std, and ρ(w) is flat near its top.
    options = AnalysisOptions(n_boot=0, groups=("artists",), step=0.01)
    table = compare_campaign_combinations(ws, "study", options=options).table.set_index(["semantic", "style"])
    paper, rescaled = table.loc[PAPER], table.loc[cubed]
    assert rescaled["log_sd_sem"] == pytest.approx(3 * paper["log_sd_sem"])
    assert rescaled["log_sd_style"] == pytest.approx(paper["log_sd_style"])
    # CM_w ranks pairs alike at w and at w' = w / (3 − 2w) (the same standardised weights): only w's scale moved.
    assert rescaled["w"] < paper["w"] - 0.1
    assert rescaled["w_std"] == pytest.approx(paper["w_std"], abs=0.02)
    assert rescaled["paper_w_std"] > paper["paper_w_std"]  # the paper's w = 0.5 leans further to content there
