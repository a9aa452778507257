"""The per-image feature cache (table ``features``): computed once per image and backbone, reused by every pair."""

from __future__ import annotations

from typing import Iterable

import sqlite_utils

from cpdm.scoring.features import decode_descriptor


def cached_images(ws, backbone: str, shas: Iterable[str]) -> set[str]:
    """Which of these images already have features for ``backbone``."""
    shas = list(dict.fromkeys(shas))
    found: set[str] = set()
    for start in range(0, len(shas), 500):
        chunk = shas[start : start + 500]
        marks = ",".join("?" * len(chunk))
        rows = ws.conn.execute(
            f"SELECT image FROM features WHERE backbone = ? AND image IN ({marks})", [backbone, *chunk]
        )
        found.update(row[0] for row in rows)
    return found


def load_feature_blob(ws, sha: str, backbone: str) -> bytes | None:
    row = ws.conn.execute("SELECT blob FROM features WHERE image = ? AND backbone = ?", (sha, backbone)).fetchone()
    return None if row is None else row[0]


def load_descriptor(ws, sha: str, backbone):
    """An image's cached descriptor for one backbone, or None."""
    blob = load_feature_blob(ws, sha, backbone.key)
    return None if blob is None else decode_descriptor(backbone, blob, f"image {sha[:12]}")


def store_features(ws, rows: list[tuple[str, str, bytes]]) -> None:
    """Write (image, backbone, blob) rows in one short transaction; a row already there takes the new blob."""
    with ws.transaction() as conn:
        sqlite_utils.Database(conn)["features"].upsert_all(
            ({"image": image, "backbone": backbone, "blob": blob} for image, backbone, blob in rows),
            pk=("image", "backbone"),
        )
