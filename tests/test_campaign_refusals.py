"""A refused campaign leaves the workspace exactly as it was."""

from __future__ import annotations

from cpdm.cli import cli
from tests.rating_fixtures import make_world


def _counts(ws) -> dict[str, int]:
    return {table: ws.conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]
            for table in ("pairs", "campaigns", "campaign_pairs", "pair_load")}


def test_duplicate_campaign_name_is_refused_before_any_check_pair_is_added(ws, runner):
    make_world(ws, 3, 2, name="study")  # a campaign without attention checks
    before = _counts(ws)
    result = runner.invoke(cli, ["campaign", "create", "study", "--workspace", str(ws.root)])
    assert result.exit_code == 1
    assert "a campaign named 'study' already exists" in result.output
    assert _counts(ws) == before
    assert ws.conn.execute("SELECT COUNT(*) FROM pairs WHERE kind != 'normal'").fetchone()[0] == 0


def test_new_campaign_with_checks_still_gets_its_check_pairs(ws, runner):
    make_world(ws, 3, 2, name="study")
    result = runner.invoke(cli, ["campaign", "create", "second", "--workspace", str(ws.root)])
    assert result.exit_code == 0, result.output
    assert "6 pairs, 6 attention checks" in result.output
    kinds = dict(ws.conn.execute(
        "SELECT p.kind, COUNT(*) FROM campaign_pairs cp JOIN pairs p ON p.id = cp.pair "
        "JOIN campaigns c ON c.id = cp.campaign WHERE c.name = 'second' GROUP BY p.kind"
    ).fetchall())
    assert kinds == {"normal": 6, "check_identical": 3, "check_unrelated": 3}
    load_roles = ws.conn.execute(
        "SELECT COUNT(*) FROM pair_load pl JOIN campaigns c ON c.id = pl.campaign WHERE c.name = 'second'"
    ).fetchone()[0]
    assert load_roles == 12  # normal pairs only, one row per role
