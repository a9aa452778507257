"""Getting a 2AFC campaign's judgments out of a workspace, and the share of raters choosing each side.

A *triplet* is an anchor with two of its pairs, stored with ``first_pair <
second_pair``; raters saw them on sides drawn at random, recorded per
judgment (``left_pair``/``right_pair``). Everything here reads sides back
into the stored order: ``chosen`` is ``first``, ``second`` or ``cant_tell``
(NULL: skipped), so analyses never depend on the side a rater happened to see.

Per triplet, ``p`` is the share of raters who judged the **first** pair more
of a copy. A "can't tell" counts half to each side: the rater found them
equal, which is what a coin between them would say, and leaving it out would
make a triplet that most raters found equal look decided by the few who
chose. Skips count nowhere.
"""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd

from cpdm.analysis.data import DEFAULT_TARGET

CHOICES = ("first", "second", "cant_tell")

_JUDGMENTS_SELECT = """
SELECT j.id AS judgment, j.campaign, j.triplet, t.kind, t.anchor, a.artist, a.category,
       t.first_pair, t.second_pair, p1.generation AS first_generation, p2.generation AS second_generation,
       v1.name AS first_variant, v2.name AS second_variant,
       j.rater, ra.role, ra.flagged, ra.flag_reason, ra.simulated, ra.disabled,
       j.question, j.answer, j.left_pair, j.right_pair, j.chosen_pair, j.skip_reason,
       j.shown_at, j.submitted_at, j.seconds, j.too_fast
FROM judgments j
JOIN triplets t ON t.id = j.triplet
JOIN anchors a ON a.id = t.anchor
JOIN pairs p1 ON p1.id = t.first_pair
JOIN pairs p2 ON p2.id = t.second_pair
JOIN raters ra ON ra.id = j.rater
LEFT JOIN generations g1 ON g1.id = p1.generation
LEFT JOIN generations g2 ON g2.id = p2.generation
LEFT JOIN variants v1 ON v1.id = g1.variant
LEFT JOIN variants v2 ON v2.id = g2.variant
"""


def campaign_kind(ws, campaign_id: int) -> str:
    """'rating' or '2afc' (:func:`cpdm.rating.rules.campaign_kind`)."""
    from cpdm.rating.rules import campaign_kind as kind_of

    return kind_of(ws.conn, campaign_id)


def chosen_side(answer, left_pair, right_pair, first_pair) -> str | None:
    """A judgment's answer in the stored order: first, second, cant_tell, or None for a skip."""
    if answer is None or (isinstance(answer, float) and np.isnan(answer)):
        return None
    if answer == "cant_tell":
        return "cant_tell"
    chosen = left_pair if answer == "left" else right_pair
    return "first" if int(chosen) == int(first_pair) else "second"


def load_judgments(ws, campaign_id: int) -> pd.DataFrame:
    """Every judgment of a 2AFC campaign, one row per (triplet, rater, question), oldest first.

    Columns: judgment, campaign, triplet, kind (normal or check), anchor,
    artist, category, first_pair, second_pair, first_generation,
    second_generation, first_variant, second_variant, rater, role, flagged,
    flag_reason, simulated, disabled, question, answer (left, right,
    cant_tell; None: skipped), left_pair, right_pair, chosen_pair, chosen
    (first, second, cant_tell; None: skipped), skip_reason, shown_at,
    submitted_at, seconds, too_fast.
    """
    frame = pd.read_sql_query(f"{_JUDGMENTS_SELECT} WHERE j.campaign = ? ORDER BY j.id", ws.conn,
                              params=(int(campaign_id),))
    for column in ("flagged", "simulated", "disabled", "too_fast"):
        frame[column] = frame[column].astype(bool)
    frame["chosen"] = [chosen_side(a, left, right, first) for a, left, right, first in
                       zip(frame["answer"], frame["left_pair"], frame["right_pair"], frame["first_pair"])]
    return frame


def analysis_judgments(
    judgments: pd.DataFrame,
    include_flagged: bool = False,
    include_simulated: bool = True,
    kinds: tuple[str, ...] = ("normal",),
) -> pd.DataFrame:
    """The judgments analysis uses: answered (skips out), on ``kinds`` triplets, flagged raters out by default.

    The same rules as :func:`cpdm.analysis.data.analysis_ratings` for ratings.
    """
    keep = judgments["chosen"].notna() & judgments["kind"].isin(kinds)
    if not include_flagged:
        keep &= ~judgments["flagged"]
    if not include_simulated:
        keep &= ~judgments["simulated"]
    return judgments[keep].reset_index(drop=True)


TRIPLET_COLUMNS = ["triplet", "anchor", "first_pair", "second_pair", "first_generation", "second_generation",
                   "first_variant", "second_variant", "n_first", "n_second", "n_cant_tell", "n", "p"]


def triplet_choices(judgments: pd.DataFrame, question: str = DEFAULT_TARGET) -> pd.DataFrame:
    """Per triplet: how many raters chose each side of ``question`` and p, the share choosing the first pair.

    ``p = (n_first + n_cant_tell / 2) / n`` (see the module docstring);
    skipped judgments are not counted. Columns: ``TRIPLET_COLUMNS``.
    """
    sub = judgments[(judgments["question"] == question) & judgments["chosen"].notna()]
    if len(sub) == 0:
        return pd.DataFrame(columns=TRIPLET_COLUMNS)
    keys = ["triplet", "anchor", "first_pair", "second_pair", "first_generation", "second_generation",
            "first_variant", "second_variant"]
    counts = pd.crosstab(sub["triplet"], sub["chosen"]).reindex(columns=list(CHOICES), fill_value=0)
    facts = sub.drop_duplicates("triplet").set_index("triplet")[keys[1:]]
    out = facts.join(counts.rename(columns={c: f"n_{c}" for c in CHOICES})).reset_index()
    out["n"] = out["n_first"] + out["n_second"] + out["n_cant_tell"]
    out["p"] = (out["n_first"] + 0.5 * out["n_cant_tell"]) / out["n"]
    return out[TRIPLET_COLUMNS].sort_values("triplet").reset_index(drop=True)


def judgments_sha256(judgments: pd.DataFrame) -> str:
    """A hash of the judgments used (triplet, rater, question, chosen side), independent of row order."""
    canonical = judgments[["triplet", "rater", "question", "chosen"]].sort_values(["triplet", "rater", "question"])
    text = "\n".join(f"{t},{r},{q},{c}" for t, r, q, c in canonical.itertuples(index=False))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def judgments_questions(judgments: pd.DataFrame, protocol_ids: list[str] | None = None) -> list[str]:
    """Question ids in protocol order, then any other the judgments hold."""
    seen = list(dict.fromkeys(judgments["question"]))
    protocol_ids = protocol_ids or []
    return [q for q in protocol_ids if q in seen] + [q for q in seen if q not in protocol_ids]


def covering_2afc_campaign(ws, variants, anchors=None) -> tuple[int, str] | None:
    """(id, name) of the 2afc campaign whose answered normal triplets compare the most of ``variants``
    (two generations of different ones among them; on ``anchors`` when given); None if none covers two.

    Among equals, the newest campaign.
    """
    variants = sorted(set(variants))
    if len(variants) < 2:
        return None
    marks = ", ".join("?" * len(variants))
    where, params = "", []
    if anchors is not None:
        anchors = sorted({int(a) for a in anchors})
        if not anchors:
            return None
        where, params = f" AND t.anchor IN ({', '.join('?' * len(anchors))})", anchors
    rows = ws.conn.execute(
        "SELECT c.id, c.name, v1.name, v2.name FROM campaigns c "
        "JOIN judgments j ON j.campaign = c.id AND j.answer IS NOT NULL "
        "JOIN triplets t ON t.id = j.triplet AND t.kind = 'normal' "
        "JOIN pairs p1 ON p1.id = t.first_pair JOIN generations g1 ON g1.id = p1.generation "
        "JOIN variants v1 ON v1.id = g1.variant "
        "JOIN pairs p2 ON p2.id = t.second_pair JOIN generations g2 ON g2.id = p2.generation "
        "JOIN variants v2 ON v2.id = g2.variant "
        f"WHERE c.kind = '2afc' AND v1.name IN ({marks}) AND v2.name IN ({marks}) AND v1.name != v2.name{where} "
        "GROUP BY c.id, v1.name, v2.name",
        (*variants, *variants, *params)).fetchall()
    covered: dict[tuple[int, str], set] = {}
    for campaign_id, name, first, second in rows:
        covered.setdefault((campaign_id, name), set()).update((first, second))
    if not covered:
        return None
    (campaign_id, name), _ = max(covered.items(), key=lambda item: (len(item[1]), item[0][0]))
    return campaign_id, name
