"""Getting ratings and scores out of a workspace as DataFrames, and exporting them.

Everything else in :mod:`cpdm.analysis` works on the frames made here and
never touches SQL.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import sqlite3
from pathlib import Path

import numpy as np
import pandas as pd

from cpdm.backbones import is_paper_combination
from cpdm.errors import CpdmError
from cpdm.scoring.reader import load_reference_distances

DEFAULT_TARGET = "copy"  # the question whose answers the analysis reads unless told another

# Rater groups: the name used in reports -> the roles it holds (None: every role).
GROUPS: dict[str, tuple[str, ...] | None] = {"artists": ("artist",), "lay": ("lay",), "all": None}
EXPORT_FORMATS = ("csv", "parquet", "jsonl")
_SALT_KEY = "rater_pseudonym_salt"

_RATINGS_SELECT = """
SELECT r.id AS rating, r.campaign, r.pair, p.anchor, a.artist, a.category, p.kind,
       v.name AS variant, r.rater, ra.role, ra.flagged, ra.flag_reason, ra.simulated, ra.disabled,
       r.question, r.value, r.skip_reason, r.shown_at, r.submitted_at, r.seconds, r.too_fast
FROM ratings r
JOIN pairs p ON p.id = r.pair
JOIN anchors a ON a.id = p.anchor
JOIN raters ra ON ra.id = r.rater
LEFT JOIN generations g ON g.id = p.generation
LEFT JOIN variants v ON v.id = g.variant
"""


def check_group(group: str) -> str:
    if group not in GROUPS:
        raise CpdmError(f"unknown rater group {group!r} (choose one of {', '.join(GROUPS)})")
    return group


def load_ratings(ws, campaign_id: int) -> pd.DataFrame:
    """Every rating of a campaign in long form, with the pair's anchor/variant/kind and the rater's role and flags.

    Skipped pairs are rows with a NaN ``value``.
    """
    return _ratings_frame(ws, "r.campaign = ?", (campaign_id,))


def load_pair_ratings(ws, pair_ids) -> pd.DataFrame:
    """Every rating of these pairs, in any campaign, in :func:`load_ratings`' form."""
    pair_ids = [int(pair) for pair in pair_ids]
    return _ratings_frame(ws, f"r.pair IN ({', '.join('?' * len(pair_ids))})", pair_ids)


def _ratings_frame(ws, where: str, params) -> pd.DataFrame:
    """The ratings the condition ``where`` keeps, with their pair's and rater's facts, oldest first."""
    frame = pd.read_sql_query(f"{_RATINGS_SELECT} WHERE {where} ORDER BY r.id", ws.conn, params=tuple(params))
    for column in ("flagged", "simulated", "disabled", "too_fast"):
        frame[column] = frame[column].astype(bool)
    frame["value"] = frame["value"].astype(float)
    return frame


def analysis_ratings(
    ratings: pd.DataFrame,
    include_flagged: bool = False,
    include_simulated: bool = True,
    kinds: tuple[str, ...] = ("normal",),
) -> pd.DataFrame:
    """The ratings analysis uses: answered (not skipped), on ``kinds`` pairs, flagged raters out by default."""
    keep = ratings["value"].notna() & ratings["kind"].isin(kinds)
    if not include_flagged:
        keep &= ~ratings["flagged"]
    if not include_simulated:
        keep &= ~ratings["simulated"]
    return ratings[keep].reset_index(drop=True)


def select_group(ratings: pd.DataFrame, group: str) -> pd.DataFrame:
    """The ratings of one rater group (artists, lay or all)."""
    roles = GROUPS[check_group(group)]
    if roles is None:
        return ratings
    return ratings[ratings["role"].isin(roles)]


def split_groups(ratings: pd.DataFrame, groups=tuple(GROUPS)) -> dict[str, pd.DataFrame]:
    """``{group: ratings of that group}`` for each group name."""
    return {group: select_group(ratings, group) for group in groups}


def zscore_by_rater(ratings: pd.DataFrame) -> pd.Series:
    """Each rating as a z-score within its rater and question (removes leniency).

    A rater who gave one value only (or one rating) carries no information
    about relative judgement; their ratings become 0, the rater mean.
    """
    grouped = ratings.groupby(["rater", "question"])["value"]
    mean = grouped.transform("mean")
    sd = grouped.transform(lambda v: v.std(ddof=0))
    z = (ratings["value"] - mean) / sd.where(sd > 0)
    return z.fillna(0.0)


def human_scores(ratings: pd.DataFrame, question: str, zscore: bool = False) -> pd.DataFrame:
    """Per-pair human score for one question: columns ``pair``, ``human``, ``n_ratings``.

    The score is the mean rating, or with ``zscore`` the mean of the raters'
    z-scored ratings (computed over all of a rater's answers to the question).
    """
    sub = ratings[ratings["question"] == question].dropna(subset=["value"])
    if zscore:
        sub = sub.assign(value=zscore_by_rater(sub))
    grouped = sub.groupby("pair")["value"]
    return pd.DataFrame({"human": grouped.mean(), "n_ratings": grouped.size()}).reset_index()


def scored_backbones(ws, campaign_id: int) -> list[tuple[str, str, int]]:
    """(semantic, style, pairs scored) for each backbone combination that scored the campaign's normal pairs.

    Most pairs first; among equals the paper's combination (the CPDM
    release's backbones) first, then by name.
    """
    rows = ws.conn.execute(
        "SELECT s.semantic, s.style, COUNT(*) FROM scores s "
        "JOIN campaign_pairs cp ON cp.pair = s.pair AND cp.campaign = ? "
        "JOIN pairs p ON p.id = s.pair AND p.kind = 'normal' "
        "GROUP BY s.semantic, s.style ORDER BY s.semantic, s.style",
        (campaign_id,),
    ).fetchall()
    rows.sort(key=lambda r: (-r[2], not is_paper_combination(r[0], r[1])))
    return [(r[0], r[1], r[2]) for r in rows]


def choose_backbones(ws, campaign_id: int, semantic: str | None = None, style: str | None = None):
    """The (semantic, style) backbones to analyse: the ones asked for, else the combination scoring most pairs
    (the paper's among equals; :func:`scored_backbones`).

    Returns None when the campaign's pairs have no scores at all.
    """
    available = scored_backbones(ws, campaign_id)
    matching = [(s, t) for s, t, _ in available if (semantic is None or s == semantic) and (style is None or t == style)]
    if matching:
        return matching[0]
    if semantic is None and style is None:
        return None
    known = ", ".join(f"{s} + {t}" for s, t, _ in available) or "none"
    raise CpdmError(f"no scores with semantic={semantic or 'any'} style={style or 'any'} for this campaign (scored: {known})")


def campaign_combinations(ws) -> list[dict]:
    """Which backbone combination each campaign's numbers use, as the analysis chooses it (:func:`choose_backbones`).

    One dict per campaign: campaign, semantic and style (None when nothing is
    scored), paper (whether they are the paper's backbones), pairs_scored of
    its normal pairs, and also (its other scored combinations).
    """
    found = []
    for campaign_id, name in ws.conn.execute("SELECT id, name FROM campaigns ORDER BY id").fetchall():
        (pairs,) = ws.conn.execute(
            "SELECT COUNT(*) FROM campaign_pairs cp JOIN pairs p ON p.id = cp.pair AND p.kind = 'normal' "
            "WHERE cp.campaign = ?", (campaign_id,)).fetchone()
        available = scored_backbones(ws, campaign_id)
        semantic, style, scored = available[0] if available else (None, None, 0)
        found.append({"campaign": name, "semantic": semantic, "style": style,
                      "paper": bool(available) and is_paper_combination(semantic, style),
                      "pairs_scored": scored, "pairs": pairs,
                      "also": [f"{s} + {t}" for s, t, _ in available[1:]]})
    return found


def pair_table(ws, campaign_id: int, backbones: tuple[str, str] | None) -> pd.DataFrame:
    """The campaign's normal pairs with anchor, artist, category, variant (name and method) and (when scored) m_sem, m_style."""
    semantic, style = backbones if backbones else (None, None)
    frame = pd.read_sql_query(
        "SELECT p.id AS pair, p.anchor, a.artist, a.category, v.name AS variant, v.method AS variant_method, "
        "s.m_sem, s.m_style "
        "FROM campaign_pairs cp JOIN pairs p ON p.id = cp.pair AND p.kind = 'normal' "
        "JOIN anchors a ON a.id = p.anchor "
        "LEFT JOIN generations g ON g.id = p.generation LEFT JOIN variants v ON v.id = g.variant "
        "LEFT JOIN scores s ON s.pair = p.id AND s.semantic = ? AND s.style = ? "
        "WHERE cp.campaign = ? ORDER BY p.id",
        ws.conn,
        params=(semantic, style, campaign_id),
    )
    frame["m_sem"] = frame["m_sem"].astype(float)
    frame["m_style"] = frame["m_style"].astype(float)
    return frame


def reference_distances(ws, backbones: tuple[str, str] | None) -> pd.DataFrame | None:
    """Distances of anchors against other anchors' generations (for x_ref), or None when there are none."""
    if backbones is None:
        return None
    try:
        frame = load_reference_distances(ws, backbones[0], backbones[1])
    except sqlite3.OperationalError:
        return None  # a workspace from before reference distances were stored
    if frame is None or len(frame) == 0:
        return None
    return frame[["m_sem", "m_style"]].astype(float)


def ratings_sha256(ratings: pd.DataFrame) -> str:
    """A hash of the ratings used (pair, rater, question, value), independent of row order."""
    canonical = ratings[["pair", "rater", "question", "value"]].sort_values(["pair", "rater", "question"])
    text = "\n".join(f"{p},{r},{q},{v:g}" for p, r, q, v in canonical.itertuples(index=False))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _pseudonym_salt(ws) -> bytes:
    salt = ws.get_meta(_SALT_KEY) or ws.ensure_meta(_SALT_KEY, secrets.token_hex(16))
    return bytes.fromhex(salt)


def rater_pseudonyms(ws, rater_ids) -> dict[int, str]:
    """A stable pseudonymous id per rater (keyed hash with a per-workspace secret), e.g. ``R3f9a1c20``.

    The same rater gets the same id in every export from this workspace, and
    the id cannot be turned back into a database id without the workspace.
    """
    salt = _pseudonym_salt(ws)
    return {
        int(r): "R" + hmac.new(salt, str(int(r)).encode(), hashlib.sha256).hexdigest()[:10]
        for r in set(int(x) for x in rater_ids)
    }


EXPORT_COLUMNS = [
    "pair", "anchor", "kind", "variant", "rater", "role", "question", "value", "skip_reason",
    "shown_at", "submitted_at", "seconds", "too_fast", "flagged", "simulated",
]


def export_frame(ws, campaign_id: int) -> pd.DataFrame:
    """Ratings of a campaign in long form, with pseudonymous rater ids (no names, no database ids)."""
    ratings = load_ratings(ws, campaign_id)
    pseudonyms = rater_pseudonyms(ws, ratings["rater"])
    # Answers are whole points on the scale; Int64 keeps them whole (and empty for skips) in every format.
    out = ratings.assign(rater=ratings["rater"].map(pseudonyms), value=ratings["value"].astype("Int64"))
    return out[EXPORT_COLUMNS]


def ensure_writable(path: Path) -> Path:
    """Create the parent folder of an output file, or say clearly why it cannot be written."""
    path = Path(path)
    if path.exists() and path.is_dir():
        raise CpdmError(f"cannot write {path}: it is a folder")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CpdmError(f"cannot write {path}: {exc.strerror or exc}") from exc
    return path


# A spreadsheet reads a cell that starts with one of these as a formula (tab and CR too,
# since some strip them first); raters' free text must never run as one.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def neutralise_formulas(frame: pd.DataFrame) -> pd.DataFrame:
    """A copy whose text cells that a spreadsheet would run as a formula start with an apostrophe.

    Only text columns change: numbers, including negative ones, stay numbers.
    """
    out = frame.copy()
    for column in out.columns:
        if pd.api.types.is_object_dtype(out[column]) or pd.api.types.is_string_dtype(out[column]):
            out[column] = out[column].map(
                lambda v: "'" + v if isinstance(v, str) and v.startswith(FORMULA_STARTS) else v
            )
    return out


def write_table(frame: pd.DataFrame, path: Path, fmt: str) -> Path:
    """Write a frame as csv, parquet or jsonl; an unwritable path is a CpdmError.

    In CSV, text cells that a spreadsheet would run as a formula get a leading
    apostrophe (see :func:`neutralise_formulas`); parquet and jsonl keep text as is.
    """
    if fmt not in EXPORT_FORMATS:
        raise CpdmError(f"unknown export format {fmt!r} (choose one of {', '.join(EXPORT_FORMATS)})")
    path = ensure_writable(Path(path))
    try:
        if fmt == "csv":
            # CRLF rows (RFC 4180) also make the writer quote a text's own CR, which "\n" rows leave bare.
            neutralise_formulas(frame).to_csv(path, index=False, lineterminator="\r\n")
        elif fmt == "parquet":
            frame.to_parquet(path, index=False)
        else:
            records = frame.astype(object).where(frame.notna(), None).to_dict(orient="records")
            with open(path, "w", encoding="utf-8") as handle:
                for record in records:
                    handle.write(json.dumps(record, default=_json_default) + "\n")
    except OSError as exc:
        raise CpdmError(f"cannot write {path}: {exc.strerror or exc}") from exc
    return path


def _json_default(value):
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    if isinstance(value, (np.bool_,)):
        return bool(value)
    raise TypeError(f"cannot write {type(value).__name__} as JSON")
