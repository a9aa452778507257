"""The researcher analysis and calibration pages, through Streamlit's AppTest (no browser)."""

from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from cpdm.analysis.campaign_report import RELEASE_SCORE_NOTE
from cpdm.rating.auth import create_rater
from cpdm.demo.simulate import add_simulated_ratings
from cpdm.testing import create_synthetic_campaign

ROOT = Path(__file__).resolve().parent.parent


def open_page(ws, page: str, role: str = "researcher", **state) -> AppTest:
    rater, _ = create_rater(ws, f"{role} {page}", role)
    at = AppTest.from_file(str(ROOT / "pages" / page), default_timeout=60)
    at.session_state["cpdm_ws"] = ws
    at.session_state["cpdm_rater"] = rater
    for key, value in state.items():  # widget values before the first run (few resamples keep tests fast)
        at.session_state[key] = value
    return at.run()


def text(at) -> str:
    parts = [e.value for kind in ("title", "markdown", "caption", "header", "subheader", "info", "error", "warning",
                                  "success") for e in getattr(at, kind)]
    return "\n".join(str(p) for p in parts)


@pytest.fixture
def study(ws):
    campaign = create_synthetic_campaign(ws, "study", n_anchors=8, reference=True, seed=4)
    add_simulated_ratings(ws, campaign, seed=2)
    return ws


def test_analysis_page_shows_tables_plots_and_downloads(study):
    at = open_page(study, "analysis.py", analysis_boot=20)
    assert not at.exception, at.exception
    assert [h.value for h in at.header] == ["Agreement", "Metric vs human judgement", "Artists vs lay raters",
                                            "Benchmark by model variant"]
    assert "Intervals: 95% expanded percentile bootstrap over anchors, 20 resamples" in text(at)
    frames = [df.value for df in at.dataframe]
    groups = next(frame for frame in frames if "difference (artists - lay)" in frame.columns)
    assert list(groups["question"]) == ["content", "style", "copy"]
    assert (groups["difference_ci_low"] <= groups["difference (artists - lay)"]).all()
    agreement = frames[0]
    assert set(agreement["group"]) == {"artists", "lay", "all"}
    assert set(agreement["question"]) == {"content", "style", "copy"}
    assert any("variant" in frame.columns and "original" in set(frame["variant"]) for frame in frames)
    # Which backbones the numbers come from, and the release's own score beside CM in the benchmark.
    assert "Metric scores: tiny:clip + tiny:vgg19 (not the paper's combination, ViT-L-14/openai + cpdm-inception" \
        in text(at)
    assert RELEASE_SCORE_NOTE in text(at)
    benchmark = next(frame for frame in frames if "mean_release_score" in frame.columns)
    assert {"release_score_ci_low", "release_score_ci_high", "mean_CM"} <= set(benchmark.columns)
    assert at.radio(key="analysis_metric").options == ["CM", "CM_w", "-m_sem", "-m_style"]
    # Every plot and table has its download.
    labels = [element.proto.label for element in at.get("download_button")]
    assert labels.count("Plot (PNG)") == 6 and labels.count("Table (CSV)") == 5
    assert_nothing_at_media(at)


def shown_image_urls(at) -> list[str]:
    """The address of every image the page shows."""
    return [image.url for element in at.get("image") for image in element.proto.imgs]


def assert_nothing_at_media(at) -> None:
    """Plots travel inside the page and downloads are made on demand: nothing waits at a /media/… address."""
    urls = shown_image_urls(at)
    assert urls and all(url.startswith("data:image/png;base64,") for url in urls)
    buttons = [element.proto for element in at.get("download_button")]
    assert buttons and all(not button.url and button.deferred_file_id for button in buttons)


def test_analysis_page_switches_metric_and_method(study):
    at = open_page(study, "analysis.py", analysis_boot=10)
    at.radio(key="analysis_metric").set_value("-m_style").run()
    at.radio(key="analysis_method").set_value("kendall").run()
    assert not at.exception, at.exception
    correlations = next(df.value for df in at.dataframe if "method" in df.value.columns)
    assert set(correlations["method"]) == {"kendall"}


def test_analysis_page_reports_a_campaign_without_ratings(ws):
    create_synthetic_campaign(ws, "empty", n_anchors=2)
    at = open_page(ws, "analysis.py")
    assert not at.exception, at.exception
    assert "campaign 'empty' has no ratings yet" in text(at)


def test_analysis_page_is_for_researchers_only(study):
    at = open_page(study, "analysis.py", role="artist")
    assert "This page is for researchers." in text(at)
    assert not at.dataframe


def test_calibration_page_shows_curve_and_exports_weights(study):
    at = open_page(study, "calibration.py", cal_boot=20)
    assert not at.exception, at.exception
    assert at.metric[0].label == "Chosen w"
    # w_std beside w, in the summary too, with the conversion and the paper's w = 0.5 on its scale.
    assert at.metric[1].label == "w_std (scale-free)" and at.metric[1].delta.startswith("95% [")
    assert float(at.metric[1].value) == pytest.approx(at.dataframe[0].value.iloc[0]["w_std"], abs=5e-4)
    assert "Conversion: w_std = w·s_sem / (w·s_sem + (1−w)·s_style)" in text(at)
    assert "the paper's w = 0.5 is w_std = " in text(at)
    summary = at.dataframe[0].value
    assert list(summary["setting"]) == ["calibrated (out-of-fold)", "paper w=0.5", "semantic only w=1",
                                        "style only w=0"]
    assert {"w", "w_std", "w_std_ci_low", "w_std_ci_high"} <= set(summary.columns)
    groups = next(frame.value for frame in at.dataframe if "w_std artists (w)" in frame.value.columns)
    assert "artists − lay, w_std" in groups.columns
    labels = [element.proto.label for element in at.get("download_button")]
    assert sorted(labels) == ["Curve (CSV)", "Plot (PNG)", "Summary (CSV)", "Weights (JSON)"]
    assert_nothing_at_media(at)
    at.button(key="cal_record").click().run()
    assert "recorded" in text(at)
    assert study.conn.execute("SELECT COUNT(*) FROM calibrations").fetchone()[0] == 1


def test_calibration_page_explains_a_group_without_raters(ws):
    campaign = create_synthetic_campaign(ws, "lay-only", n_anchors=6)
    add_simulated_ratings(ws, campaign, n_artists=0, n_lay=2)
    at = open_page(ws, "calibration.py", cal_boot=10)
    assert not at.exception, at.exception
    assert "no usable ratings from the artists group" in text(at)
    at.selectbox(key="cal_group").set_value("lay").run()
    assert not at.exception, at.exception
    assert at.metric[0].label == "Chosen w"


@pytest.fixture(scope="module")
def duel_study(tmp_path_factory):
    """A rating campaign 'study' and a 2afc campaign 'duel' over the same pairs, both judged."""
    from cpdm.store.workspace import init_workspace
    from tests.two_afc_support import build_two_afc_study

    workspace = init_workspace(tmp_path_factory.mktemp("duel") / "ws")
    build_two_afc_study(workspace, n_anchors=8, per_anchor=8)
    yield workspace
    workspace.close()


def test_analysis_page_shows_a_2afc_campaign(duel_study):
    at = open_page(duel_study, "analysis.py", analysis_boot=20, analysis_campaign="duel")
    assert not at.exception, at.exception
    assert [h.value for h in at.header] == ["Agreement on choices", "2AFC score of the metric", "Artists vs lay raters",
                                            "Bradley–Terry strengths by variant",
                                            "w from ratings and from 2AFC judgments"]
    frames = [df.value for df in at.dataframe]
    scores = next(frame for frame in frames if "score" in frame.columns and "metric" in frame.columns)
    assert "CM (paper w=0.5)" in set(scores["metric"])
    assert (scores["ci_low"] <= scores["score"]).all() and (scores["score"] <= scores["ci_high"]).all()
    strengths = next(frame for frame in frames if "strength" in frame.columns and "variant" in frame.columns)
    assert {"ci_low", "ci_high"} <= set(strengths.columns)
    side = next(frame for frame in frames if "judgment_kind" in frame.columns)
    assert set(side["judgment_kind"]) == {"rating", "2afc"}
    assert "judgments used" in text(at)
    assert_nothing_at_media(at)


def test_calibration_page_calibrates_a_2afc_campaign_beside_the_rating_one(duel_study):
    at = open_page(duel_study, "calibration.py", cal_boot=20, cal_campaign="duel")
    assert not at.exception, at.exception
    assert at.metric[0].label == "Chosen w" and at.metric[2].label == "Out-of-fold 2AFC score"
    summary = at.dataframe[0].value
    assert "score" in summary.columns and "rho" not in summary.columns
    side = next(frame.value for frame in at.dataframe if "judgment_kind" in frame.value.columns)
    assert list(side["campaign"]) == ["duel", "study"]
    assert "cpdm plan --kind 2afc" in text(at)
    assert "Ratings and 2AFC judgments of the same pairs" in [h.value for h in at.header]


def test_pages_are_in_the_researcher_menu(study, monkeypatch):
    monkeypatch.setenv("CPDM_WORKSPACE", str(study.root))
    _, token = create_rater(study, "lead", "researcher")
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60)
    at.query_params["token"] = token
    at.session_state["cal_boot"] = 10
    at.run()
    at.switch_page("pages/calibration.py").run()
    assert not at.exception, at.exception
    assert [t.value for t in at.title] == ["Calibration"]
    assert at.metric[0].label == "Chosen w"


@pytest.mark.parametrize("page", ["analysis.py", "calibration.py"])
def test_page_opened_without_signing_in_is_refused(page):
    at = AppTest.from_file(str(ROOT / "pages" / page), default_timeout=60).run()
    assert not at.exception, at.exception
    assert "This page is for researchers." in text(at)


@pytest.mark.parametrize("page", ["analysis.py", "calibration.py", "progress.py"])
def test_campaign_pages_without_campaigns_say_so(ws, page):
    at = open_page(ws, page)
    assert not at.exception, at.exception
    assert "No campaigns yet." in text(at)
    assert not at.dataframe


@pytest.mark.parametrize("page", ["analysis.py", "calibration.py", "progress.py"])
def test_campaign_pages_preselect_the_newest_campaign(ws, page):
    create_synthetic_campaign(ws, "older", n_anchors=2)
    create_synthetic_campaign(ws, "newer", n_anchors=2, seed=1)
    at = open_page(ws, page)
    assert not at.exception, at.exception
    picker = next(box for box in at.selectbox if box.label == "Campaign")
    assert picker.options == ["older", "newer"] and picker.value == "newer"


def _campaigns_with_ratings_and_without(ws) -> None:
    """Two open campaigns with ratings (few, many), a newer closed one with the most, and a newest unrated one."""
    from cpdm.rating.campaigns import set_campaign_status

    quiet = create_synthetic_campaign(ws, "open-quiet", n_anchors=2)
    add_simulated_ratings(ws, quiet, n_artists=1, n_lay=0, seed=1)
    busy = create_synthetic_campaign(ws, "open-busy", n_anchors=2, seed=1)
    add_simulated_ratings(ws, busy, seed=2)
    closed = create_synthetic_campaign(ws, "closed-busiest", n_anchors=3, seed=2)
    add_simulated_ratings(ws, closed, n_artists=6, n_lay=6, seed=3)
    set_campaign_status(ws, closed, "closed")
    create_synthetic_campaign(ws, "open-newest-empty", n_anchors=2, seed=3)


def _skip_one_pair(ws, campaign_id: int) -> None:
    """An artist claims a pair of the campaign and skips it: ratings rows, but no answers."""
    from cpdm.rating.assignment import claim_next
    from cpdm.rating.submit import submit

    artist, _ = create_rater(ws, "skipper", "artist")
    item = claim_next(ws, campaign_id, artist)
    submit(ws, artist, campaign_id, item.pair, None, nonce="skip-nonce-0001", skip_reason="cannot see it")


def test_progress_page_preselects_the_open_campaign_with_the_most_ratings(ws):
    _campaigns_with_ratings_and_without(ws)
    at = open_page(ws, "progress.py")
    picker = next(box for box in at.selectbox if box.label == "Campaign")
    assert picker.value == "open-busy"


@pytest.mark.parametrize("page", ["analysis.py", "calibration.py"])
def test_analysis_pages_preselect_the_newest_campaign_with_ratings_and_offer_all(ws, page):
    _campaigns_with_ratings_and_without(ws)
    at = open_page(ws, page, analysis_boot=0, cal_boot=0)
    picker = next(box for box in at.selectbox if box.label == "Campaign")
    assert picker.value == "closed-busiest"
    assert picker.options == ["open-quiet", "open-busy", "closed-busiest", "open-newest-empty"]
    picker.set_value("open-busy").run()
    assert not at.exception, at.exception
    assert next(box for box in at.selectbox if box.label == "Campaign").value == "open-busy"


@pytest.mark.parametrize("page", ["analysis.py", "calibration.py"])
def test_analysis_pages_pass_over_a_newer_campaign_with_only_skips(ws, page):
    rated = create_synthetic_campaign(ws, "rated", n_anchors=3)
    add_simulated_ratings(ws, rated, seed=1)
    skipped = create_synthetic_campaign(ws, "only-skips", n_anchors=2, seed=1)
    _skip_one_pair(ws, skipped)
    assert ws.conn.execute("SELECT COUNT(*) FROM ratings WHERE campaign = ?", (skipped,)).fetchone()[0] > 0
    at = open_page(ws, page, analysis_boot=0, cal_boot=0)
    assert next(box for box in at.selectbox if box.label == "Campaign").value == "rated"
