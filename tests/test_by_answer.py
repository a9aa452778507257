"""Calibration split by the raters' background answers: `cpdm calibrate --by QUESTION`."""

from __future__ import annotations

import pandas as pd
import pytest

from cpdm.analysis.by_answer import BY_COLUMNS, calibrate_by
from cpdm.analysis.campaign_report import AnalysisOptions
from cpdm.cli import cli
from cpdm.demo.simulate import add_simulated_ratings
from cpdm.testing import create_synthetic_campaign
from cpdm.errors import CpdmError
from cpdm.rating.background import save_step

OPTIONS = AnalysisOptions(n_boot=50, folds=3)


@pytest.fixture
def study(ws):
    """A scored synthetic campaign rated by simulated artists and lay raters, who also answered the questionnaire
    (artists lean to 'yes, it is my main work', lay raters to 'no')."""
    campaign = create_synthetic_campaign(ws, "syn", n_anchors=12, reference=True, seed=3)
    add_simulated_ratings(ws, campaign, seed=1, n_artists=5, n_lay=5)
    return campaign


def raters_of(ws, role: str) -> list[int]:
    return [row[0] for row in ws.conn.execute("SELECT id FROM raters WHERE role = ? ORDER BY id", (role,))]


def answer_all(ws, campaign: int, question: str, values_by_role: dict) -> None:
    for role, value in values_by_role.items():
        for rater in raters_of(ws, role):
            save_step(ws, rater, campaign, question, value if isinstance(value, dict) else {"": value})


def test_w_per_level_of_an_answer_that_follows_the_role_shows_the_roles_difference(ws, study):
    answer_all(ws, study, "art_profession", {"artist": "yes, it is my main work", "lay": "no"})
    result = calibrate_by(ws, "syn", "art_profession", options=OPTIONS)
    table = result.table.set_index("level")
    assert list(result.table.columns) == BY_COLUMNS
    assert list(table.index) == ["yes, it is my main work", "yes, alongside other work", "no"]  # protocol order
    assert table.loc["yes, it is my main work", "raters"] == table.loc["no", "raters"] == 5
    assert table.loc["yes, alongside other work", "note"] == "no rater gave this answer"
    # Simulated artists weigh style more than lay raters: a lower w, each with an interval around it.
    assert table.loc["yes, it is my main work", "w"] < table.loc["no", "w"]
    for level in ("yes, it is my main work", "no"):
        assert table.loc[level, "w_ci_low"] <= table.loc[level, "w"] <= table.loc[level, "w_ci_high"]
        # w_std is w read on the standardised log distances: the same conversion as the whole campaign's.
        assert table.loc[level, "w_std_ci_low"] <= table.loc[level, "w_std"] <= table.loc[level, "w_std_ci_high"]
        assert -1 <= table.loc[level, "rho"] <= 1
    assert "[" in result.screen_table()["w"].iloc[0] and "[" in result.screen_table()["w_std"].iloc[0]
    # Both levels convert w with the reference pairs' spreads: w_std = w·a / (w·a + 1 − w), a = s_sem / s_style,
    # so each level's (w, w_std) gives back the same a.
    ratios = [w_std * (1 - w) / (w * (1 - w_std)) for w, w_std in
              table.loc[["yes, it is my main work", "no"], ["w", "w_std"]].itertuples(index=False)]
    assert ratios[0] == pytest.approx(ratios[1], rel=1e-9)


def test_a_question_asked_per_artist_splits_each_raters_pairs_by_the_pairs_artist(ws, study):
    artists = [row[0] for row in ws.conn.execute("SELECT DISTINCT artist FROM anchors ORDER BY artist")]
    known = {artist: ("I know it well" if artist == artists[0] else "I do not know it") for artist in artists}
    answer_all(ws, study, "familiarity", {"artist": known, "lay": known})
    table = calibrate_by(ws, "syn", "familiarity", options=OPTIONS).table.set_index("level")
    first_artist_pairs = ws.conn.execute(
        "SELECT COUNT(*) FROM campaign_pairs cp JOIN pairs p ON p.id = cp.pair AND p.kind = 'normal' "
        "JOIN anchors a ON a.id = p.anchor WHERE a.artist = ?", (artists[0],)).fetchone()[0]
    assert table.loc["I know it well", "pairs"] == first_artist_pairs
    assert table.loc["I know it well", "raters"] == 10


def test_numbers_split_at_the_protocols_levels_and_declined_answers_are_left_out(ws, study):
    years = {rater: {"": years} for rater, years in zip(raters_of(ws, "artist") + raters_of(ws, "lay"),
                                                        [0, 2, 4, 8, 20, 30, 40, 3, 6, 1])}
    for rater, value in years.items():
        save_step(ws, rater, study, "art_years", value)
    result = calibrate_by(ws, "syn", "art_years", options=OPTIONS)
    assert result.table["level"].tolist() == ["0", "1–4", "5–14", "15 or more"]
    assert result.table["raters"].tolist() == [1, 4, 2, 3]


def test_several_choices_count_in_each_level_and_the_notes_say_so(ws, study):
    answer_all(ws, study, "media", {"artist": ["drawing or painting", "photography"], "lay": ["photography"]})
    result = calibrate_by(ws, "syn", "media", options=OPTIONS)
    raters = result.table.set_index("level")["raters"]
    assert raters["drawing or painting"] == 5 and raters["photography"] == 10
    assert any("every level they chose" in note for note in result.notes)


def test_free_text_and_unknown_questions_are_refused(ws, study):
    with pytest.raises(CpdmError, match="free-text"):
        calibrate_by(ws, "syn", "comments", options=OPTIONS)
    with pytest.raises(CpdmError, match="no background question 'nope'.*art_years"):
        calibrate_by(ws, "syn", "nope", options=OPTIONS)


def test_cpdm_calibrate_by_prints_the_table_and_writes_it(ws, study, runner, tmp_path):
    answer_all(ws, study, "art_profession", {"artist": "yes, it is my main work", "lay": "no"})
    out = tmp_path / "by.csv"
    result = runner.invoke(cli, ["calibrate", "-c", "syn", "--by", "art_profession", "--n-boot", "50",
                                 "--folds", "3", "--out", str(out), "-w", str(ws.root)])
    assert result.exit_code == 0, result.output
    assert "w per answer to 'art_profession'" in result.output and "all raters" in result.output
    assert pd.read_csv(out)["level"].tolist() == ["yes, it is my main work", "yes, alongside other work", "no"]
    lay_only = runner.invoke(cli, ["calibrate", "-c", "syn", "--by", "art_profession", "--group", "lay",
                                   "--n-boot", "20", "--folds", "3", "-w", str(ws.root)])
    assert lay_only.exit_code == 0 and "lay raters" in lay_only.output
    missing = runner.invoke(cli, ["calibrate", "-c", "syn", "-w", str(ws.root)])
    assert missing.exit_code == 2 and "--out is required" in missing.output


def test_the_calibration_page_splits_by_a_background_answer_on_request(ws, study):
    from tests.test_analysis_pages import open_page

    answer_all(ws, study, "art_profession", {"artist": "yes, it is my main work", "lay": "no"})
    at = open_page(ws, "calibration.py", cal_boot=20, cal_group="all")
    assert not at.exception, at.exception
    assert "By the raters' background" in [header.value for header in at.header]
    at.selectbox(key="cal_by").set_value("art_profession").run()
    at.button(key="cal_by_run").click().run()
    assert not at.exception, at.exception
    table = next(frame.value for frame in at.dataframe if "level" in frame.value.columns)
    assert table["level"].tolist() == ["yes, it is my main work", "yes, alongside other work", "no"]
    assert "Table (CSV)" in [element.proto.label for element in at.get("download_button")]
