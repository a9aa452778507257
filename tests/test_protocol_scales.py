"""The analysis follows the campaign's protocol: its questions, its rater groups and its scale."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from cpdm.analysis.data import human_scores, load_ratings
from cpdm.analysis.campaign_report import AnalysisOptions, calibration_choices, run_analysis, summary_markdown
from cpdm.analysis.variants import copy_threshold
from cpdm.demo.simulate import add_simulated_ratings
from cpdm.testing import create_synthetic_campaign
from cpdm.rating.auth import create_rater
from cpdm.rating.campaigns import create_campaign, select_pairs
from cpdm.rating.protocol import default_protocol_path

ROOT = Path(__file__).resolve().parent.parent


def protocol_with(points: int) -> str:
    """The default protocol with every question on a 1..points scale and its questions renamed."""
    text = default_protocol_path().read_text(encoding="utf-8")
    text = text.replace("scale = [1, 5]", f"scale = [1, {points}]")
    for old, new in (('id = "content"', 'id = "subject"'), ('id = "style"', 'id = "manner"')):
        text = text.replace(old, new)
    return text


def campaign_on_scale(ws, points: int, overlap=None, n_lay: int = 4) -> str:
    """A scored campaign whose protocol uses a 1..points scale, filled with simulated ratings; returns its name."""
    create_synthetic_campaign(ws, "pool", n_anchors=6, reference=True, seed=4)
    name = f"scale-{points}"
    campaign = create_campaign(ws, name, select_pairs(ws), protocol_text=protocol_with(points), overlap=overlap,
                               include_checks=True)
    add_simulated_ratings(ws, campaign, seed=points, n_lay=n_lay)
    return name


@pytest.mark.parametrize(("scale", "threshold"), [((1, 5), 4), ((1, 7), 5), ((1, 9), 6), ((0, 4), 3), ((1, 4), 3)])
def test_the_copy_threshold_is_the_first_point_above_the_middle_of_the_scale(scale, threshold):
    assert copy_threshold(scale) == threshold


@pytest.mark.parametrize(("points", "threshold"), [(5, 4), (7, 5), (9, 6)])
def test_the_share_judged_a_copy_uses_the_protocols_scale(ws, points, threshold):
    name = campaign_on_scale(ws, points)
    analysis = run_analysis(ws, name, AnalysisOptions(n_boot=20, groups=("artists",)))
    ratings = load_ratings(ws, analysis.data.campaign_id)
    assert ratings["value"].max() > 5 if points > 5 else ratings["value"].max() <= 5
    artists = ratings[(ratings["role"] == "artist") & (ratings["kind"] == "normal") & ~ratings["flagged"]]
    scores = human_scores(artists.dropna(subset=["value"]), "copy").merge(
        analysis.pairs[["pair", "variant"]], on="pair")
    expected = scores.groupby("variant")["human"].apply(lambda h: float((h >= threshold).mean()))
    table = analysis.variants.set_index("variant")["share_copy_artists"]
    pd.testing.assert_series_equal(table.sort_index(), expected.sort_index(), check_names=False)
    assert f"rating is ≥ {threshold} (the first point above the middle of its 1–{points} scale)" in \
        summary_markdown(analysis)


def test_the_campaign_offers_its_protocols_questions_and_its_groups(ws):
    name = campaign_on_scale(ws, 7, overlap={"artist": 2}, n_lay=0)
    campaign_id = ws.conn.execute("SELECT id FROM campaigns WHERE name = ?", (name,)).fetchone()[0]
    assert calibration_choices(ws, campaign_id) == (["subject", "manner", "copy"], ["artists", "all"])


def test_the_calibration_page_offers_the_campaigns_questions_and_groups(ws):
    name = campaign_on_scale(ws, 9, overlap={"artist": 2}, n_lay=0)
    rater, _ = create_rater(ws, "researcher", "researcher")
    at = AppTest.from_file(str(ROOT / "pages" / "calibration.py"), default_timeout=120)
    at.session_state["cpdm_ws"] = ws
    at.session_state["cpdm_rater"] = rater
    at.session_state["cal_boot"] = 20
    at.run()
    assert not at.exception, at.exception
    assert at.selectbox(key="cal_campaign").value == name      # the campaign with ratings
    assert at.selectbox(key="cal_target").options == ["subject", "manner", "copy"]
    assert at.selectbox(key="cal_group").options == ["artists", "all"]
    at.selectbox(key="cal_target").set_value("manner").run()
    assert not at.exception, at.exception
    assert at.metric[0].label == "Chosen w"
