"""`cpdm export` of a comparative (2afc) campaign: one row per judgment, as the rater saw it.

A judgment is one rater's answer to one question on one triplet (the copy
question first, then any others the protocol asks). Each row holds the
triplet's anchor, the pair, generation and variant on each side as shown,
the answer (``left``, ``right`` or ``cant_tell``; empty for a skip), the
pair, generation and variant chosen (empty unless a side was chosen), and
the rater as a pseudonym (:func:`cpdm.analysis.data.rater_pseudonyms`, the
same ids as the ratings export), their role, the seconds from shown to
submitted and the times. Attention-check triplets (``kind`` check) have no
generations: their sides are the anchor itself and an unrelated image.
"""

from __future__ import annotations

import pandas as pd

from cpdm.analysis.data import rater_pseudonyms

JUDGMENT_EXPORT_COLUMNS = [
    "triplet", "anchor", "kind", "rater", "role", "question",
    "left_pair", "right_pair", "left_generation", "right_generation", "left_variant", "right_variant",
    "answer", "chosen_pair", "chosen_generation", "chosen_variant", "skip_reason",
    "shown_at", "submitted_at", "seconds", "too_fast", "flagged", "simulated",
]

_JUDGMENTS_SELECT = """
SELECT j.triplet, t.anchor, t.kind, j.rater, x.role, j.question,
       j.left_pair, j.right_pair, pl.generation AS left_generation, pr.generation AS right_generation,
       vl.name AS left_variant, vr.name AS right_variant,
       j.answer, j.chosen_pair, j.skip_reason, j.shown_at, j.submitted_at, j.seconds, j.too_fast,
       x.flagged, x.simulated
FROM judgments j
JOIN triplets t ON t.id = j.triplet
JOIN raters x ON x.id = j.rater
JOIN pairs pl ON pl.id = j.left_pair
JOIN pairs pr ON pr.id = j.right_pair
LEFT JOIN generations gl ON gl.id = pl.generation LEFT JOIN variants vl ON vl.id = gl.variant
LEFT JOIN generations gr ON gr.id = pr.generation LEFT JOIN variants vr ON vr.id = gr.variant
WHERE j.campaign = ?
ORDER BY j.id
"""


def judgment_export_frame(ws, campaign_id: int) -> pd.DataFrame:
    """A 2afc campaign's judgments, one row each, with pseudonymous rater ids (no names, no database ids)."""
    frame = pd.read_sql_query(_JUDGMENTS_SELECT, ws.conn, params=(campaign_id,))
    pseudonyms = rater_pseudonyms(ws, frame["rater"])
    frame["rater"] = frame["rater"].map(pseudonyms)
    left = frame["answer"] == "left"
    right = frame["answer"] == "right"
    frame["chosen_generation"] = frame["left_generation"].where(left, frame["right_generation"].where(right))
    frame["chosen_variant"] = frame["left_variant"].where(left, frame["right_variant"].where(right))
    # Ids are whole numbers, empty where there is none (check triplets, can't tell, skips), in every format.
    for column in ("left_generation", "right_generation", "chosen_pair", "chosen_generation"):
        frame[column] = frame[column].astype("Int64")
    for column in ("too_fast", "flagged", "simulated"):
        frame[column] = frame[column].astype(bool)
    frame["seconds"] = frame["seconds"].astype(float)
    return frame[JUDGMENT_EXPORT_COLUMNS]
