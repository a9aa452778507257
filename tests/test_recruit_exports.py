"""Who the raters were: the per-rater exports, the approvals CSV, and `cpdm campaign recruit` / `cpdm export`."""

from __future__ import annotations

import csv
import re

import pandas as pd

from cpdm.analysis.data import export_frame
from cpdm.analysis.rater_export import APPROVAL_COLUMNS, RATER_COLUMNS, approvals_frame, rater_frame
from cpdm.cli import cli
from cpdm.rating import recruit
from cpdm.rating.auth import create_rater, record_consent
from tests.rating_fixtures import make_world, protocol_with
from tests.recruit_support import ID_PARAM, params, rate_all, recruiting_world


def crowd_study(ws):
    """Three recruited raters (one finished, one flagged by checks, one still working) and an invited artist."""
    _, link, secret = recruiting_world(ws, n_anchors=6, per_rater=6, include_checks=True, completion_code="OK-1",
                                       protocol_text=protocol_with(rate=0.5, max_failures=0))
    careful = recruit.admit(ws, params(secret, "PID-careful"), "10.0.0.1").rater
    rate_all(ws, careful, answers=None)
    careless = recruit.admit(ws, params(secret, "PID-careless"), "10.0.0.2").rater
    rate_all(ws, careless, answers={"content": 3, "style": 3, "copy": 3})
    recruit.admit(ws, params(secret, "PID-started"), "10.0.0.3")
    artist, _ = create_rater(ws, "Ada", "artist")
    record_consent(ws, artist.id)
    return link, {"careful": careful, "careless": careless}


def fix_checks(ws, rater, campaign: int) -> None:
    """Give a careful rater's attention checks the answers that pass them (ANSWERS' copy=2 fails identical ones)."""
    ws.conn.execute(
        "UPDATE ratings SET value = CASE (SELECT kind FROM pairs WHERE id = ratings.pair) "
        "WHEN 'check_identical' THEN 5 ELSE 1 END WHERE rater = ? AND question = 'copy' AND pair IN "
        "(SELECT id FROM pairs WHERE kind != 'normal')", (rater.id,))
    ws.conn.execute("UPDATE raters SET flagged = 0, flag_reason = NULL WHERE id = ?", (rater.id,))


def test_the_rater_export_is_pseudonymised_and_says_who_was_flagged(ws):
    link, raters = crowd_study(ws)
    fix_checks(ws, raters["careful"], link.campaign)
    frame = rater_frame(ws, link.campaign)
    assert list(frame.columns) == RATER_COLUMNS
    assert not frame.astype(str).apply(lambda column: column.str.contains("PID-")).any().any()
    assert all(re.fullmatch(r"R[0-9a-f]{10}", rater) for rater in frame["rater"])
    assert frame["joined"].tolist() == ["link 1"] * 3  # the invited artist never got pairs here
    finished = frame[frame["finished_at"].notna()]
    assert finished["pairs_done"].tolist() == [6, 6]
    assert finished["flagged"].tolist() == [False, True]
    assert "attention checks" in finished["flag_reason"].iloc[1]
    assert (finished["active_seconds"] >= 0).all()
    # The ratings export says the careless rater is flagged too.
    ratings = export_frame(ws, link.campaign)
    flagged_ids = set(frame.loc[frame["flagged"], "rater"])
    assert set(ratings.loc[ratings["flagged"], "rater"]) == flagged_ids


def test_active_time_is_capped_per_pair_at_the_assignment_timeout(ws):
    link, raters = crowd_study(ws)
    ws.conn.execute("UPDATE ratings SET seconds = 99999 WHERE rater = ?", (raters["careful"].id,))
    frame = rater_frame(ws, link.campaign)
    careful = frame[frame["pairs_done"] == 6].iloc[0]
    assert careful["active_seconds"] == 6 * 30 * 60  # six pairs, each at most the 30-minute timeout


def test_the_identified_export_and_the_approvals_hold_platform_ids_and_decisions(ws):
    link, raters = crowd_study(ws)
    fix_checks(ws, raters["careful"], link.campaign)
    identified = rater_frame(ws, link.campaign, identified=True)
    assert set(identified["platform_id"]) == {"PID-careful", "PID-careless", "PID-started"}
    assert set(identified["completion_code"]) == {"OK-1"}

    approvals = approvals_frame(ws, link.campaign).set_index("platform_id")
    assert list(approvals.reset_index().columns) == APPROVAL_COLUMNS
    assert approvals.loc["PID-careful", "decision"] == "approve"
    assert approvals.loc["PID-careless", "decision"] == "reject"
    assert "attention checks" in approvals.loc["PID-careless", "reason"]
    assert approvals.loc["PID-started", "decision"] == "not finished"
    review = approvals_frame(ws, link.campaign, flagged_decision="review").set_index("platform_id")
    assert review.loc["PID-careless", "decision"] == "review"


def test_cpdm_campaign_recruit_prints_lists_and_closes_links(ws, runner):
    make_world(ws, 3, 2, overlap={"artist": 1, "lay": 2}, name="pilot")
    result = runner.invoke(cli, ["campaign", "recruit", "pilot", "--role", "lay", "--quota", "3", "--per-rater", "2",
                                 "--id-param", ID_PARAM, "--completion-code", "C1", "--closes", "2099-01-31",
                                 "--base-url", "https://rate.example.org", "-w", str(ws.root)])
    assert result.exit_code == 0, result.output
    url = re.search(r"https://rate\.example\.org/\?join=(\S+)", result.output)
    assert url and f"&{ID_PARAM}=<participant id>" in result.output
    assert recruit.visit(ws, params(url.group(1), "P1"), "10.0.0.1").state == "may_join"

    listed = runner.invoke(cli, ["campaign", "recruit", "pilot", "--list", "-w", str(ws.root)])
    assert re.search(r"^1\s+lay\s+open\s+0/3\s+0\s+2\s+PROLIFIC_PID\s+code C1\s+2099-01-31", listed.output, re.M)
    again = runner.invoke(cli, ["campaign", "recruit", "pilot", "-w", str(ws.root)])
    assert again.exit_code == 1 and "not closed" in again.output

    closed = runner.invoke(cli, ["campaign", "recruit", "pilot", "--close", "-w", str(ws.root)])
    assert closed.exit_code == 0 and "closed recruitment link 1" in closed.output
    assert recruit.visit(ws, params(url.group(1), "P1"), "10.0.0.1").state == "closed"
    bad = runner.invoke(cli, ["campaign", "recruit", "pilot", "--completion-url", "ftp://x", "-w", str(ws.root)])
    assert bad.exit_code == 1 and bad.output.startswith("error: --completion-url")


def test_cpdm_export_writes_the_rater_tables_and_the_approvals_csv(ws, runner, tmp_path):
    link, raters = crowd_study(ws)
    approvals = tmp_path / "approvals.csv"
    result = runner.invoke(cli, ["export", "--campaign", "study", "--approvals", "--out", str(approvals),
                                 "-w", str(ws.root)])
    assert result.exit_code == 0, result.output
    assert "3 recruited raters" in result.output and "personal data" in result.output
    with open(approvals, newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert {row["platform_id"]: row["decision"] for row in rows}["PID-started"] == "not finished"

    pseudonymous = tmp_path / "raters.csv"
    result = runner.invoke(cli, ["export", "--campaign", "study", "--raters", "--out", str(pseudonymous),
                                 "-w", str(ws.root)])
    assert result.exit_code == 0 and "personal data" not in result.output
    assert "PID-" not in pseudonymous.read_text()
    identified = tmp_path / "raters.parquet"
    result = runner.invoke(cli, ["export", "--campaign", "study", "--raters-identified", "--format", "parquet",
                                 "--out", str(identified), "-w", str(ws.root)])
    assert result.exit_code == 0
    assert "PID-careful" in set(pd.read_parquet(identified)["platform_id"])
