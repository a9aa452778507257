"""Reading stored scores and reference distances back, without torch.

The analysis, the pages and ``cpdm scores list`` read scores through this
module; importing it loads neither torch nor any model (a test checks it).
"""

from __future__ import annotations

import pandas as pd

from cpdm import metric
from cpdm.backbones import backbone_key
from cpdm.errors import CpdmError
from cpdm.scoring.reference import load_reference_record, unavailable_reason

SCORE_COLUMNS = [
    "pair", "anchor", "artist", "category", "image", "generation", "variant",
    "kind", "semantic", "style", "m_sem", "m_style",
]  # fmt: skip


class ScoringError(CpdmError):
    """A problem while scoring: bad pair ids, a broken feature blob, ..."""


def backbone_keys(semantic: str, style: str, offline_tiny: bool = False) -> tuple[str, str]:
    """The stored names of a backbone pair (``tiny:`` prefixed with --offline-tiny)."""
    mode = "tiny" if offline_tiny else "real"
    return backbone_key(semantic, mode), backbone_key(style, mode)


def load_scores(ws, semantic: str | None = None, style: str | None = None, campaign_id: int | None = None) -> pd.DataFrame:
    """Stored scores joined with what they are about (columns: ``SCORE_COLUMNS``).

    ``semantic``/``style`` are stored names (``tiny:`` included); None means any.
    ``variant`` is the variant's name, None for attention-check pairs.
    """
    query = (
        "SELECT s.pair, p.anchor, a.artist, a.category, p.image, p.generation, v.name AS variant, p.kind, "
        "s.semantic, s.style, s.m_sem, s.m_style "
        "FROM scores s JOIN pairs p ON p.id = s.pair JOIN anchors a ON a.id = p.anchor "
        "LEFT JOIN generations g ON g.id = p.generation LEFT JOIN variants v ON v.id = g.variant "
        "WHERE (:semantic IS NULL OR s.semantic = :semantic) AND (:style IS NULL OR s.style = :style) "
        "AND (:campaign IS NULL OR s.pair IN (SELECT pair FROM campaign_pairs WHERE campaign = :campaign)) "
        "ORDER BY s.pair, s.semantic, s.style"
    )
    params = {"semantic": semantic, "style": style, "campaign": campaign_id}
    rows = ws.conn.execute(query, params).fetchall()
    frame = pd.DataFrame(rows, columns=SCORE_COLUMNS)
    for column in ("artist", "variant", "generation"):
        frame[column] = frame[column].astype(object).where(frame[column].notna(), None)
    frame["m_sem"] = frame["m_sem"].astype(float)
    frame["m_style"] = frame["m_style"].astype(float)
    return frame


def load_reference_distances(ws, semantic: str, style: str) -> pd.DataFrame:
    """The recorded reference set's distances for a backbone pair (columns anchor, image, m_sem, m_style).

    Empty when the combination has no recorded reference set
    (:mod:`cpdm.scoring.reference`): rows an earlier cpdm sampled from the
    pairs in scope are not a reference set.
    """
    if load_reference_record(ws, semantic, style) is None:
        return pd.DataFrame({"anchor": pd.Series(dtype=int), "image": pd.Series(dtype=object),
                             "m_sem": pd.Series(dtype=float), "m_style": pd.Series(dtype=float)})
    rows = ws.conn.execute(
        "SELECT anchor, image, m_sem, m_style FROM reference_distances WHERE semantic = ? AND style = ? "
        "ORDER BY anchor, image",
        (semantic, style),
    ).fetchall()
    frame = pd.DataFrame(rows, columns=["anchor", "image", "m_sem", "m_style"])
    return frame.astype({"m_sem": float, "m_style": float})


def reference_scale_for(ws, semantic: str, style: str, w: float | None = None) -> float:
    """x_ref over the recorded reference set (paper form with w=None, else D_w at w).

    A combination without a recorded set is refused with the reason and the
    command that fixes it (:func:`cpdm.scoring.reference.unavailable_reason`).
    """
    reference = load_reference_distances(ws, semantic, style)
    if reference.empty:
        raise ScoringError(f"no CM for semantic={semantic} style={style}: {unavailable_reason(ws, semantic, style)}")
    return metric.reference_scale(reference["m_sem"].to_numpy(), reference["m_style"].to_numpy(), w)


def available_backbones(ws) -> list[tuple[str, str]]:
    """The (semantic, style) backbone pairs that have scores, in a stable order."""
    rows = ws.conn.execute("SELECT DISTINCT semantic, style FROM scores ORDER BY semantic, style")
    return [(row[0], row[1]) for row in rows]
