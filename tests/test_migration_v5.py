"""Schema version 5 on a workspace that cpdm at schema version 4 built (tests/fixtures/schema_v4_workspace.zip)."""

from __future__ import annotations

import json
import sqlite3
import zipfile
from pathlib import Path

import pytest

from cpdm.rating.assignment import claim_next, rebuild_pair_load
from cpdm.rating.auth import create_rater
from cpdm.store.rows import GenerationRow, add_generations, find_generation, get_variant, list_variants, make_pairs
from cpdm.store.workspace import DB_NAME, WorkspaceError, open_workspace, schema_version

FIXTURE = Path(__file__).parent / "fixtures" / "schema_v4_workspace.zip"
TABLES = ("images", "anchors", "variants", "prompts", "generations", "pairs", "scores", "reference_distances",
          "campaigns", "campaign_pairs", "raters", "assignments", "ratings", "jobs", "pair_load")


@pytest.fixture
def v4_root(tmp_path) -> Path:
    """A copy of the version-4 workspace, unopened."""
    root = tmp_path / "old"
    with zipfile.ZipFile(FIXTURE) as archive:
        archive.extractall(root)
    return root


def raw(root: Path) -> sqlite3.Connection:
    return sqlite3.connect(root / DB_NAME)


def snapshot(conn: sqlite3.Connection) -> dict[str, int]:
    return {table: conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0] for table in TABLES}


def columns(conn, table: str) -> list[str]:
    return [row[1] for row in conn.execute(f"PRAGMA table_info({table})")]


def test_the_fixture_is_a_version_4_workspace_with_a_rated_study(v4_root):
    conn = raw(v4_root)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == 4
    counts = snapshot(conn)
    assert counts["anchors"] == 4 and counts["generations"] == 25 and counts["ratings"] > 100
    assert counts["scores"] == 24 and counts["jobs"] == 1
    conn.close()


def test_opening_it_migrates_every_row_and_fills_the_new_columns(v4_root):
    before_conn = raw(v4_root)
    before = snapshot(before_conn)
    ratings_before = before_conn.execute("SELECT * FROM ratings ORDER BY id").fetchall()
    scores_before = before_conn.execute("SELECT * FROM scores ORDER BY pair").fetchall()
    before_conn.close()

    ws = open_workspace(v4_root)
    conn = ws.conn
    assert conn.execute("PRAGMA user_version").fetchone()[0] == schema_version()
    assert snapshot(conn) == before
    assert conn.execute("SELECT * FROM ratings ORDER BY id").fetchall() == ratings_before
    assert conn.execute("SELECT * FROM scores ORDER BY pair").fetchall() == scores_before
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert conn.execute("PRAGMA foreign_key_check").fetchall() == []

    # variants: the single concept and weights path move into concepts and artifact_path; all are ready.
    assert "concept" not in columns(conn, "variants") and "weights_path" not in columns(conn, "variants")
    variants = {variant.name: variant for variant in list_variants(ws)}
    assert variants["esd"].concepts == ("artist 1",)
    assert variants["esd"].artifact_path == "weights/esd.safetensors"
    assert variants["esd"].params == {"lr": 1e-05, "train_method": "xattn"}
    assert variants["uce"].concepts == () and variants["uce"].artifact_path is None
    assert {v.status for v in variants.values()} == {"ready"}
    assert {v.created_at for v in variants.values()} == {None}  # not known for rows made before version 5
    assert [v.name for v in variants.values() if v.is_baseline] == ["original"]

    # prompts: who wrote them, where the row says it.
    authors = conn.execute("SELECT origin, author, parent FROM prompts ORDER BY id").fetchall()
    assert authors[:-1] == [("template", "template", None)] * 4
    assert authors[-1] == ("llm", "gpt-4o", None)

    # generations: params in canonical form, and the key now finds them.
    sampled = conn.execute("SELECT id, prompt, variant, params, image FROM generations WHERE steps = 50").fetchone()
    assert sampled[3] == '{"eta": 0, "sampler": "ddim"}'
    assert find_generation(ws, sampled[1], sampled[2], 23, 50, 9.0, {"sampler": "ddim", "eta": 0}) == sampled[0]
    again = GenerationRow(sampled[1], sampled[2], 23, 50, 9.0, sampled[4], {"sampler": "ddim", "eta": 0})
    assert add_generations(ws, [again]) == [sampled[0]]
    assert snapshot(conn)["generations"] == before["generations"]

    # jobs: the finished one was attempted once, the new columns are there.
    job = conn.execute("SELECT attempts, lease_expires_at, result, device FROM jobs").fetchone()
    assert job == (1, None, None, None)
    ws.close()


def test_load_counters_left_behind_by_old_simulated_ratings_are_recounted(v4_root):
    conn = raw(v4_root)
    # As the old simulator left them until a claim happened to repair them: ratings the counters do not know.
    conn.execute("UPDATE pair_load SET load = 0")
    conn.commit()
    conn.close()
    ws = open_workspace(v4_root)
    query = "SELECT campaign, role, pair, load FROM pair_load ORDER BY campaign, role, pair"
    migrated = ws.conn.execute(query).fetchall()
    assert sum(row[3] for row in migrated) > 0
    rebuild_pair_load(ws, migrated[0][0])
    assert ws.conn.execute(query).fetchall() == migrated
    ws.close()


def test_the_migrated_workspace_keeps_working(v4_root):
    ws = open_workspace(v4_root)
    generation = ws.conn.execute("SELECT id FROM generations WHERE steps = 50").fetchone()[0]
    (pair,) = make_pairs(ws, [generation])
    assert get_variant(ws, "original").status == "ready"
    campaign = ws.conn.execute("SELECT id FROM campaigns").fetchone()[0]
    rater, _ = create_rater(ws, "new artist", "artist")
    item = claim_next(ws, campaign, rater)
    assert item is not None and item.pair != pair  # the new pair is in no campaign yet
    ws.close()
    assert open_workspace(v4_root).conn.execute("PRAGMA user_version").fetchone()[0] == schema_version()  # opens again as is


def _duplicate_generation(conn, with_pair: bool) -> tuple[int, int]:
    """Insert a copy of the first generation (the same key); returns (original id, copy id)."""
    original = conn.execute("SELECT id, prompt, variant, seed, image FROM generations ORDER BY id").fetchone()
    # The same params, written with other spacing: equal once canonical.
    copy = conn.execute(
        "INSERT INTO generations (prompt, variant, seed, image, params) VALUES (?, ?, ?, ?, '{ }')", original[1:]
    ).lastrowid
    if with_pair:
        anchor = conn.execute("SELECT anchor FROM prompts WHERE id = ?", (original[1],)).fetchone()[0]
        conn.execute("INSERT INTO pairs (anchor, generation, image, kind) VALUES (?, ?, ?, 'check_unrelated')",
                     (anchor, copy, original[4]))
    conn.commit()
    return original[0], copy


def test_unused_duplicate_generations_are_removed(v4_root):
    conn = raw(v4_root)
    original, copy = _duplicate_generation(conn, with_pair=False)
    before = snapshot(conn)
    conn.close()
    ws = open_workspace(v4_root)
    ids = [row[0] for row in ws.conn.execute("SELECT id FROM generations")]
    assert original in ids and copy not in ids
    assert snapshot(ws.conn) == {**before, "generations": before["generations"] - 1}
    ws.close()


def test_duplicates_that_pairs_use_stop_the_upgrade_and_change_nothing(v4_root):
    conn = raw(v4_root)
    original, copy = _duplicate_generation(conn, with_pair=True)
    before = snapshot(conn)
    conn.close()
    with pytest.raises(WorkspaceError, match=rf"generations {copy} \(same as {original}\).*have pairs"):
        open_workspace(v4_root)
    conn = raw(v4_root)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == 4
    assert snapshot(conn) == before
    assert "concept" in columns(conn, "variants")
    assert json.loads(conn.execute("SELECT params FROM generations WHERE id = ?", (copy,)).fetchone()[0]) == {}
    conn.close()


def test_values_cached_for_the_old_inception_backbone_are_dropped(v4_root):
    """cpdm-inception became the release's network: its old features and scores must not mix with new ones."""
    conn = raw(v4_root)
    image = conn.execute("SELECT sha256 FROM images LIMIT 1").fetchone()[0]
    pair = conn.execute("SELECT id FROM pairs LIMIT 1").fetchone()[0]
    kept_features = conn.execute("SELECT COUNT(*) FROM features").fetchone()[0]
    kept_scores = conn.execute("SELECT COUNT(*) FROM scores").fetchone()[0]
    for key in ("cpdm-inception", "tiny:cpdm-inception", "random:cpdm-inception@512"):
        conn.execute("INSERT INTO features (image, backbone, blob) VALUES (?, ?, x'00')", (image, key))
        conn.execute("INSERT INTO scores (pair, semantic, style, m_sem, m_style) VALUES (?, 'ViT-L-14/openai', ?, 1, 1)",
                     (pair, key))
    conn.commit()
    conn.close()

    with open_workspace(v4_root) as ws:
        assert ws.conn.execute("SELECT COUNT(*) FROM features WHERE backbone LIKE '%inception%'").fetchone()[0] == 0
        assert ws.conn.execute("SELECT COUNT(*) FROM scores WHERE style LIKE '%inception%'").fetchone()[0] == 0
        assert ws.conn.execute("SELECT COUNT(*) FROM features").fetchone()[0] == kept_features
        assert ws.conn.execute("SELECT COUNT(*) FROM scores").fetchone()[0] == kept_scores
