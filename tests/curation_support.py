"""Helpers for the curation tests: a workspace with anchors, small term banks, the tiny models."""

from __future__ import annotations

from pathlib import Path

from cpdm.curation.anchors import import_anchors
from tests.conftest import write_png

BANK_NAMES = ("mediums", "movements", "artists", "flavors")


def write_banks(folder: Path, terms_per_bank: int = 6) -> Path:
    """Four small term banks, ``{bank} term {j}``."""
    folder.mkdir(parents=True, exist_ok=True)
    for bank in BANK_NAMES:
        (folder / f"{bank}.txt").write_text("\n".join(f"{bank} term {j}" for j in range(terms_per_bank)) + "\n")
    return folder


def add_anchors(ws, folder: Path, count: int = 3) -> list[int]:
    """``count`` random anchor images with artist and title; returns their ids."""
    meta = ["file,artist,title"]
    for i in range(count):
        write_png(folder / f"work{i}.png", seed=100 + i, size=(40, 32))
        meta.append(f"work{i}.png,Artist {i % 2},Work {i}")
    (folder / "meta.csv").write_text("\n".join(meta) + "\n")
    report = import_anchors(ws, folder, meta_csv=folder / "meta.csv")
    return [item.anchor_id for item in report.imported]


def workspace_state(ws) -> dict:
    """The row count of every table and the files of the image store: what a refused import must leave as it was."""
    tables = [row[0] for row in ws.conn.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'")]
    counts = {table: ws.conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0] for table in tables}
    return {"rows": counts, "files": sorted(p.relative_to(ws.root).as_posix()
                                            for p in (ws.root / "images").rglob("*") if p.is_file())}
