"""`cpdm campaign create --kind 2afc`, `campaign list / status / recount` and `cpdm export` of a 2afc campaign."""

from __future__ import annotations

import uuid

import pandas as pd
import pytest

from cpdm.cli import cli
from cpdm.rating.auth import create_rater
from cpdm.rating.assignment import next_item
from cpdm.rating.judgments import submit_judgment
from cpdm.rating.protocol import default_protocol_path
from cpdm.rating.triplets import campaign_design, campaign_triplets
from cpdm.store.time import utc_now
from tests.rating_fixtures import add_pairs
from tests.triplet_fixtures import TWO_AFC_TEXT, make_triplet_world


def invoke(runner, ws, *args):
    return runner.invoke(cli, [*args, "--workspace", str(ws.root)])


def campaign_id(ws, name):
    return ws.conn.execute("SELECT id FROM campaigns WHERE name = ?", (name,)).fetchone()[0]


def test_create_a_balanced_2afc_campaign(ws, runner):
    add_pairs(ws, 3, 4)
    result = invoke(runner, ws, "campaign", "create", "duel", "--kind", "2afc", "--overlap", "artist=2,lay=1")
    assert result.exit_code == 0, result.output
    assert ("campaign 'duel' (id 1, 2afc, balanced): 12 triplets over 12 pairs, 3 attention checks, "
            "overlap artist=2,lay=1") in result.output
    assert campaign_design(ws, 1) == ("2afc", "balanced")
    text = ws.conn.execute("SELECT protocol FROM campaigns").fetchone()[0]
    assert text == TWO_AFC_TEXT  # the shipped 2afc protocol by default


def test_create_random_and_active_campaigns_with_a_count_per_anchor(ws, runner):
    add_pairs(ws, 2, 5)
    result = invoke(runner, ws, "campaign", "create", "rand", "--kind", "2afc", "--triplets", "random",
                    "--triplets-per-anchor", "3", "--no-include-checks", "--seed", "5")
    assert result.exit_code == 0, result.output
    # The campaign's pairs are those its triplets compare (3 of an anchor's 10 candidates may leave one out).
    frame = campaign_triplets(ws, 1)
    covered = len(set(frame["first_pair"]) | set(frame["second_pair"]))
    assert 6 <= covered <= 10
    assert f"(id 1, 2afc, random): 6 triplets over {covered} pairs, 0 attention checks" in result.output
    result = invoke(runner, ws, "campaign", "create", "act", "--kind", "2afc", "--triplets", "active",
                    "--triplets-per-anchor", "2", "--variant", "original")
    assert result.exit_code == 0, result.output
    # 'original' generations: 3 per anchor, so 3 candidates each; a warm-up of 2 per anchor is offered.
    assert "(id 2, 2afc, active): 4 triplets over 6 pairs, 2 more held for the active queue" in result.output
    frame = campaign_triplets(ws, 2)
    assert (frame["priority"] == 0).sum() == 2 and len(frame[frame["kind"] == "normal"]) == 6


def test_list_and_status_show_kind_and_design(ws, runner, tmp_path):
    world = make_triplet_world(ws, 2, 3, overlap={"artist": 1, "lay": 1})  # 6 triplets
    _a, rating_pairs = add_pairs(ws, 1, 2)
    assert invoke(runner, ws, "campaign", "create", "likert", "--no-include-checks").exit_code == 0
    rater, _ = create_rater(ws, "ann", "artist")
    item = next_item(ws, rater)
    submit_judgment(ws, rater, item.campaign, item.triplet, {"copy": "left", "content": "left", "style": "left"},
                    nonce=uuid.uuid4().hex)
    result = invoke(runner, ws, "campaign", "list")
    assert result.exit_code == 0, result.output
    lines = {line.split()[1]: line.split() for line in result.output.splitlines()[1:]}
    assert lines["duel"][:7] == ["1", "duel", "open", "2afc", "balanced", "6", "6"]
    assert lines["likert"][:7] == ["2", "likert", "open", "rating", "-", str(len(world.pairs) + 2), "-"]
    result = invoke(runner, ws, "campaign", "status", "duel")
    assert result.exit_code == 0, result.output
    assert "campaign 'duel' (2afc, balanced): 6 triplets over 6 pairs" in result.output
    artist_row = next(line for line in result.output.splitlines() if line.split()[:1] == ["artist"])
    assert artist_row.split()[:5] == ["artist", "1", "6", "1", "16.7"]
    result = invoke(runner, ws, "campaign", "recount", "duel")
    assert result.exit_code == 0 and "triplet load recounted" in result.output


@pytest.mark.parametrize("args, message", [
    (["--triplets", "random"], "--triplets is for comparative campaigns: add --kind 2afc"),
    (["--triplets-per-anchor", "2"], "--triplets-per-anchor is for comparative campaigns"),
    (["--kind", "2afc", "--protocol", "RATING"], "is a rating protocol; a 2afc campaign needs kind = \"2afc\""),
    (["--protocol", "TWO_AFC"], "is a 2afc protocol: raters would judge triplets"),
    (["--kind", "2afc", "--triplets", "sorted"], "Invalid value for '--triplets'"),
    (["--kind", "triad"], "Invalid value for '--kind'"),
    (["--kind", "2afc", "--triplets-per-anchor", "0"], "Invalid value for '--triplets-per-anchor'"),
    (["--kind", "2afc", "--variant", "nope"], "no pairs match variant in ['nope']"),
])
def test_bad_2afc_creations_are_refused_by_name(ws, runner, tmp_path, args, message):
    add_pairs(ws, 2, 3)
    rating = tmp_path / "rating.toml"
    rating.write_text(default_protocol_path().read_text(encoding="utf-8"))
    two_afc = tmp_path / "2afc.toml"
    two_afc.write_text(TWO_AFC_TEXT)
    args = [str(rating) if a == "RATING" else str(two_afc) if a == "TWO_AFC" else a for a in args]
    result = invoke(runner, ws, "campaign", "create", "duel", *args)
    assert result.exit_code != 0
    assert message in result.output
    assert ws.conn.execute("SELECT COUNT(*) FROM campaigns").fetchone()[0] == 0


def test_a_single_generation_per_anchor_cannot_make_triplets(ws, runner):
    add_pairs(ws, 2, 1)
    result = invoke(runner, ws, "campaign", "create", "duel", "--kind", "2afc")
    assert result.exit_code == 1
    assert "no anchor has two pairs to compare" in result.output


# --- Export ---------------------------------------------------------------------------------------------------------


def judged_world(ws):
    """A 2afc campaign with one artist's judgments of every triplet (one can't tell, one skip)."""
    world = make_triplet_world(ws, 2, 3, overlap={"artist": 1, "lay": 1}, include_checks=True)
    rater, _ = create_rater(ws, "Ada Secret", "artist")
    now, items = utc_now(), []
    while (item := next_item(ws, rater, now=now)) is not None:
        items.append(item)
        answers = {"copy": ["left", "right", "cant_tell"][len(items) % 3], "content": "left", "style": "right"}
        if len(items) == 2:
            submit_judgment(ws, rater, world.campaign, item.triplet, None, skip_reason="=broken image",
                            nonce=uuid.uuid4().hex, now=now)
        else:
            submit_judgment(ws, rater, world.campaign, item.triplet, answers, nonce=uuid.uuid4().hex, now=now)
    return world, rater, items


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_export_of_a_2afc_campaign_writes_one_row_per_judgment(ws, runner, tmp_path, fmt):
    world, rater, items = judged_world(ws)
    out = tmp_path / f"judgments.{fmt}"
    result = invoke(runner, ws, "export", "--campaign", "duel", "--format", fmt, "--out", str(out))
    assert result.exit_code == 0, result.output
    n_rows = 3 * len(items)
    assert f"{n_rows} judgments of campaign 'duel' written to" in result.output
    frame = pd.read_csv(out) if fmt == "csv" else pd.read_parquet(out)
    assert len(frame) == n_rows
    assert list(frame.columns)[:6] == ["triplet", "anchor", "kind", "rater", "role", "question"]
    # The rater is a pseudonym: no name, no database id.
    assert frame["rater"].nunique() == 1 and frame["rater"].iloc[0].startswith("R")
    assert "Ada" not in out.read_bytes().decode("latin-1")
    generation = dict(ws.conn.execute("SELECT id, generation FROM pairs").fetchall())
    variant = dict(ws.conn.execute("SELECT g.id, v.name FROM generations g JOIN variants v ON v.id = g.variant"))
    for item in items:
        rows = frame[frame["triplet"] == item.triplet].set_index("question")
        assert (rows["left_pair"] == item.left_pair).all() and (rows["right_pair"] == item.right_pair).all()
        copy = rows.loc["copy"]
        if item.kind == "normal":
            assert copy["left_generation"] == generation[item.left_pair]
            assert copy["right_variant"] == variant[generation[item.right_pair]]
        else:
            assert pd.isna(copy["left_generation"]) and pd.isna(copy["left_variant"])
        if pd.isna(copy["answer"]):
            assert str(copy["skip_reason"]).lstrip("'") == "=broken image" and pd.isna(copy["chosen_pair"])
        elif copy["answer"] == "cant_tell":
            assert pd.isna(copy["chosen_pair"]) and pd.isna(copy["chosen_generation"])
        else:
            side = copy["answer"]
            assert copy["chosen_pair"] == copy[f"{side}_pair"]
            if item.kind == "normal":
                assert copy["chosen_generation"] == copy[f"{side}_generation"]
                assert copy["chosen_variant"] == copy[f"{side}_variant"]
    assert set(frame["role"]) == {"artist"} and (frame["seconds"] >= 0).all()
    assert frame["submitted_at"].notna().all()
    if fmt == "csv":  # a skip reason a spreadsheet would run is neutralised, as in the ratings export
        assert (frame["skip_reason"].dropna() == "'=broken image").all()


def test_export_of_an_unjudged_2afc_campaign_is_refused(ws, runner, tmp_path):
    make_triplet_world(ws, 1, 3)
    result = invoke(runner, ws, "export", "--campaign", "duel", "--out", str(tmp_path / "x.csv"))
    assert result.exit_code == 1
    assert "campaign 'duel' has no judgments to export" in result.output


def test_the_raters_and_approvals_exports_count_triplets(ws, runner, tmp_path):
    from cpdm.rating import recruit
    from tests.recruit_support import params

    world, rater, items = judged_world(ws)
    out = tmp_path / "raters.csv"
    result = invoke(runner, ws, "export", "--campaign", "duel", "--raters", "--out", str(out))
    assert result.exit_code == 0, result.output
    raters = pd.read_csv(out)
    checks = sum(item.kind == "check" for item in items)
    row = raters.iloc[0]
    # One skip; the rest judged, checks included.
    assert (row["pairs_done"], row["pairs_skipped"]) == (len(items) - 1, 1)
    assert row["checks_answered"] == checks - (1 if items[1].kind == "check" else 0)
    link, secret = recruit.create_link(ws, world.campaign, "lay", per_rater=2, id_param="PID")
    crowd = recruit.admit(ws, params(secret, "P7", "PID"), "10.0.0.7").rater
    while (item := recruit.next_item_for(ws, crowd)) is not None:
        submit_judgment(ws, crowd, item.campaign, item.triplet, {"copy": "left", "content": "left", "style": "left"},
                        nonce=uuid.uuid4().hex)
    out = tmp_path / "approvals.csv"
    result = invoke(runner, ws, "export", "--campaign", "duel", "--approvals", "--out", str(out))
    assert result.exit_code == 0, result.output
    approvals = pd.read_csv(out)
    assert approvals["platform_id"].tolist() == ["P7"] and approvals["pairs_done"].tolist() == [2]
    assert approvals["decision"].iloc[0] in ("approve", "reject")  # a failed check, if one came, rejects
