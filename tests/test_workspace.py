"""The workspace database: schema, connection settings, migrations, refusing what it cannot open."""

from __future__ import annotations

import json
import sqlite3

import pytest

import cpdm.store.workspace as workspace_module
from cpdm.curation.anchors import import_anchors
from cpdm.cli import cli
from cpdm.store.rows import add_variant
from cpdm.store.workspace import (
    BUSY_TIMEOUT_MS,
    DB_NAME,
    MIGRATIONS,
    WorkspaceError,
    init_workspace,
    open_workspace,
    resolve_workspace_path,
    schema_version,
)
from tests.conftest import png_bytes, write_png

# Every table of DESIGN.md's data model.
DESIGN_TABLES = {
    "images", "anchors", "variants", "prompts", "generations", "pairs", "features", "scores",
    "campaigns", "campaign_pairs", "raters", "assignments", "ratings", "jobs", "calibrations", "meta",
}  # fmt: skip


def tables(conn) -> set[str]:
    return {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}


def test_cli_init_creates_the_full_schema(runner, tmp_path):
    root = tmp_path / "study"
    result = runner.invoke(cli, ["init", "--workspace", str(root)])
    assert result.exit_code == 0, result.output
    assert f"schema version {schema_version()}" in result.stdout
    conn = sqlite3.connect(root / DB_NAME)
    assert DESIGN_TABLES <= tables(conn)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == schema_version()
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"  # persistent in the file
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    conn.close()
    assert (root / "images").is_dir()


def test_connection_settings(ws):
    assert ws.conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1
    assert ws.conn.execute("PRAGMA busy_timeout").fetchone()[0] == BUSY_TIMEOUT_MS
    assert ws.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert ws.conn.execute("PRAGMA user_version").fetchone()[0] == schema_version()


def test_foreign_keys_and_checks_are_enforced(ws):
    with pytest.raises(sqlite3.IntegrityError):
        ws.conn.execute("INSERT INTO anchors (image) VALUES ('no-such-image')")
    ws.conn.execute("INSERT INTO images VALUES ('abc', 'images/ab/abc.png', 1, 1, 'PNG', 10)")
    with pytest.raises(sqlite3.IntegrityError):
        ws.conn.execute("INSERT INTO anchors (image, category) VALUES ('abc', 'sculpture')")
    with pytest.raises(sqlite3.IntegrityError):
        ws.conn.execute("INSERT INTO raters (name, role, token_hash) VALUES ('x', 'critic', 'h')")


def test_init_is_idempotent_and_keeps_data(tmp_path):
    with init_workspace(tmp_path / "w") as first:
        first.set_meta("study", "monet")
    with init_workspace(tmp_path / "w") as again:
        assert again.get_meta("study") == "monet"


def test_transaction_rolls_back_on_error(ws):
    with pytest.raises(RuntimeError):
        with ws.transaction() as conn:
            conn.execute("INSERT INTO meta (key, value) VALUES ('a', '1')")
            raise RuntimeError("boom")
    assert ws.get_meta("a") is None
    with ws.transaction() as conn:
        conn.execute("INSERT INTO meta (key, value) VALUES ('a', '2')")
    assert ws.get_meta("a") == "2"


def _old_workspace(tmp_path, monkeypatch, version: int):
    """A workspace written by a cpdm whose schema stopped at ``version``, holding one anchor."""
    monkeypatch.setattr(workspace_module, "MIGRATIONS", MIGRATIONS[:version])
    with init_workspace(tmp_path / "old") as old:
        assert old.conn.execute("PRAGMA user_version").fetchone()[0] == version
        with old.transaction() as conn:
            conn.execute("INSERT INTO images VALUES ('abc', 'images/ab/abc.png', 32, 24, 'PNG', 99)")
            conn.execute("INSERT INTO anchors (image, artist, title) VALUES ('abc', 'Claude Monet', 'Lilies')")
            conn.execute("INSERT INTO meta (key, value) VALUES ('study', 'monet')")
    monkeypatch.setattr(workspace_module, "MIGRATIONS", list(MIGRATIONS))
    return tmp_path / "old"


def test_version_1_workspace_is_upgraded_to_current_with_data_kept(tmp_path, monkeypatch):
    root = _old_workspace(tmp_path, monkeypatch, version=1)
    with open_workspace(root) as ws:
        assert ws.conn.execute("PRAGMA user_version").fetchone()[0] == schema_version()
        assert ws.conn.execute("SELECT artist, title FROM anchors").fetchall() == [("Claude Monet", "Lilies")]
        assert ws.get_meta("study") == "monet"
        assert DESIGN_TABLES <= tables(ws.conn)
        upgraded_schema = schema_sql(ws.conn)
    with init_workspace(tmp_path / "fresh") as fresh:
        assert upgraded_schema == schema_sql(fresh.conn)


def schema_sql(conn) -> list[tuple]:
    """Every table and index definition: an upgraded database must match a fresh one."""
    return conn.execute(
        "SELECT type, name, sql FROM sqlite_master WHERE name NOT LIKE 'sqlite_%' ORDER BY name"
    ).fetchall()


def test_an_appended_migration_runs_once_on_open(tmp_path, monkeypatch):
    root = _old_workspace(tmp_path, monkeypatch, version=len(MIGRATIONS))
    runs = []

    def add_anchor_notes(conn):
        runs.append(1)
        conn.execute("ALTER TABLE anchors ADD COLUMN notes TEXT")
        conn.execute("UPDATE anchors SET notes = 'from ' || artist")

    monkeypatch.setattr(workspace_module, "MIGRATIONS", [*MIGRATIONS, add_anchor_notes])
    with open_workspace(root) as ws:
        assert ws.conn.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS) + 1
        assert ws.conn.execute("SELECT title, notes FROM anchors").fetchall() == [("Lilies", "from Claude Monet")]
    with open_workspace(root):
        pass
    assert runs == [1]


def test_a_failing_migration_leaves_the_old_database_intact(tmp_path, monkeypatch):
    root = _old_workspace(tmp_path, monkeypatch, version=len(MIGRATIONS))

    def half_done(conn):
        conn.execute("CREATE TABLE half (x)")
        conn.execute("ALTER TABLE anchors ADD COLUMN notes TEXT")
        raise sqlite3.OperationalError("migration bug")

    monkeypatch.setattr(workspace_module, "MIGRATIONS", [*MIGRATIONS, half_done])
    with pytest.raises(WorkspaceError, match="upgrading the schema .* failed .*migration bug.*left unchanged"):
        open_workspace(root)
    conn = sqlite3.connect(root / DB_NAME)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
    assert "half" not in tables(conn)
    assert "notes" not in {r[1] for r in conn.execute("PRAGMA table_info(anchors)")}
    conn.close()


def test_newer_workspace_is_refused_with_a_clear_message(tmp_path):
    init_workspace(tmp_path / "w").close()
    conn = sqlite3.connect(tmp_path / "w" / DB_NAME)
    conn.execute(f"PRAGMA user_version = {schema_version() + 5}")
    conn.close()
    with pytest.raises(WorkspaceError) as caught:
        open_workspace(tmp_path / "w")
    message = str(caught.value)
    assert str(tmp_path / "w" / DB_NAME) in message
    assert f"schema version {schema_version() + 5}, newer than this cpdm understands ({schema_version()})" in message
    conn = sqlite3.connect(tmp_path / "w" / DB_NAME)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == schema_version() + 5  # not touched
    conn.close()


def test_non_database_file_is_a_clear_error(tmp_path, runner):
    root = tmp_path / "w"
    root.mkdir()
    (root / DB_NAME).write_bytes(png_bytes(1) * 20)
    with pytest.raises(WorkspaceError, match=rf"{DB_NAME} is not a readable cpdm database"):
        open_workspace(root)
    result = runner.invoke(cli, ["info", "--workspace", str(root)])
    assert result.exit_code == 1
    assert result.stderr.startswith("error: ") and "not a readable cpdm database" in result.stderr
    assert "Traceback" not in result.output


def test_missing_workspace_says_how_to_create_it(tmp_path, runner):
    with pytest.raises(WorkspaceError, match=r"no workspace at .*run `cpdm init --workspace"):
        open_workspace(tmp_path / "none")
    assert not (tmp_path / "none").exists()
    result = runner.invoke(cli, ["info", "-w", str(tmp_path / "none")])
    assert result.exit_code == 1 and "cpdm init" in result.stderr


def test_workspace_path_is_a_file_is_a_clear_error(tmp_path, runner):
    (tmp_path / "plain-file").write_text("x")
    result = runner.invoke(cli, ["init", "-w", str(tmp_path / "plain-file")])
    assert result.exit_code == 2  # a usage error: --workspace must name a folder
    assert "plain-file' is a file" in result.stderr


def test_workspace_path_resolution(monkeypatch, tmp_path):
    monkeypatch.delenv("CPDM_WORKSPACE", raising=False)
    assert resolve_workspace_path(None) == workspace_module.DEFAULT_WORKSPACE
    monkeypatch.setenv("CPDM_WORKSPACE", str(tmp_path / "env"))
    assert resolve_workspace_path(None) == tmp_path / "env"
    assert resolve_workspace_path(tmp_path / "arg") == tmp_path / "arg"


def test_info_counts_every_table(runner, ws, tmp_path):
    write_png(tmp_path / "art" / "a.png", seed=1)
    write_png(tmp_path / "art" / "b.png", seed=2)
    import_anchors(ws, tmp_path / "art")
    with ws.transaction() as conn:
        conn.execute("INSERT INTO raters (name, role, token_hash) VALUES ('ann', 'artist', 'h1')")
    add_variant(ws, "original", base_model="sd15", method="original")
    result = runner.invoke(cli, ["info", "-w", str(ws.root), "--format", "json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["schema_version"] == schema_version()
    assert report["counts"] == {
        "anchors": 2, "variants": 1, "prompts": 0, "generations": 0, "pairs": 0,
        "scores": 0, "campaigns": 0, "raters": 1, "ratings": 0,
    }  # fmt: skip
    table = runner.invoke(cli, ["info", "-w", str(ws.root)])
    lines = dict(line.split(None, 1) for line in table.stdout.splitlines())
    assert lines["anchors"] == "2" and lines["raters"] == "1" and lines["ratings"] == "0"
