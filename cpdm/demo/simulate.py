"""Simulated raters: ratings for demos and synthetic studies for tests and benchmarks.

Simulated raters are ordinary rows in ``raters`` with ``simulated = 1`` and
names like "simulated artist 1", so analysis can include or exclude them.
Their answers follow what is known about each pair, plus a per-rater
leniency and per-answer noise:

* when the pair has metric scores, content follows semantic closeness and
  style follows style closeness (each as a rank within the campaign, so the
  scale of the backbone does not matter);
* otherwise the variant's known effect in the demo (:mod:`cpdm.demo.variants`):
  ``original`` copies content and style, ``demo-style-erased`` keeps content
  but loses style, ``demo-content-changed`` keeps style but loses content,
  ``demo-unrelated`` loses both;
* the "copy" answer mixes the two, with artists weighting style more than
  lay raters do (``COPY_CONTENT_WEIGHT``). On scored pairs a rater weighs
  the *standardised* log distances, each divided by its spread over the
  combination's reference pairs (the spreads behind w_std, see
  :class:`cpdm.metric.LogSpreads`): the answer follows the rank of
  ``weight·log M_sem/s_sem + (1 − weight)·log M_style/s_style``. So the
  planted weights are w_std values, the number calibration reports as
  "how much raters weigh content", and calibration can recover them;
* attention checks get the expected answer: identical pairs 5, unrelated 1.

Simulated raters rate as people do, through the app's path: each claims its
next pair with the assignment rules (:func:`cpdm.rating.assignment.claim_next`)
and submits with :func:`cpdm.rating.submit.submit`, on a simulated clock.

In a comparative (2AFC) campaign the same raters judge triplets
(:func:`add_simulated_judgments`): each question's choice follows the
difference of the two pairs' latent scores (the closeness above, on the
1–5 scale of a rating), logistic with the scale of the rating noise, with
"can't tell" now and then when the two are nearly equal
(:func:`cpdm.analysis.judgment_planning.rater_choices`); an attention check gets the
anchor's side. They claim with :func:`cpdm.rating.assignment.claim_next` and
submit with :func:`cpdm.rating.judgments.submit_judgment`; in an active
campaign the queue is refreshed every ``REFRESH_EVERY`` judgments, as the
``refresh-triplets`` job would.

Why one file of this length: ratings and 2AFC judgments come from the same
simulated raters and latent scores, so both kinds live beside the raters'
model they share.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import numpy as np
import pandas as pd

from cpdm.demo.variants import CONTENT_CHANGED, ORIGINAL, STYLE_ERASED, UNRELATED, VARIANTS
from cpdm.errors import CpdmError
from cpdm.metric import LogSpreads, MetricError
from cpdm.rating.protocol import parse_protocol

# (content closeness, style closeness) in [0, 1] per demo variant.
VARIANT_CLOSENESS = {
    ORIGINAL: (0.85, 0.85),
    STYLE_ERASED: (0.8, 0.25),
    CONTENT_CHANGED: (0.25, 0.8),
    UNRELATED: (0.2, 0.2),
}
UNKNOWN_VARIANT_CLOSENESS = (0.5, 0.5)
# Weight of content (vs style) in a rater's "copy" judgement, by role; on scored pairs a w_std (see above).
COPY_CONTENT_WEIGHT = {"artist": 0.35, "lay": 0.65}
LENIENCY_SD = 0.35
NOISE_SD = 0.6
SKIP_PROBABILITY = 0.02
START_TIME = datetime(2026, 1, 5, 9, 0, 0, tzinfo=timezone.utc)
SKIP_REASON = "cannot judge (simulated)"


def to_scale(latent: np.ndarray, low: int, high: int, offset: np.ndarray | float = 0.0, noise=0.0) -> np.ndarray:
    """Map a closeness in [0, 1] to an integer answer on [low, high], after leniency and noise."""
    raw = low + (high - low) * np.asarray(latent) + offset + noise
    return np.clip(np.rint(raw), low, high).astype(int)


def _questions(protocol_text: str) -> list[tuple[str, int, int]]:
    """(id, low, high) of each question of a campaign's frozen protocol."""
    return [(question.id, *question.scale) for question in parse_protocol(protocol_text, frozen=True).questions]


def _closeness_rank(values: pd.Series) -> pd.Series:
    """1 for the closest pair (smallest distance), 0 for the farthest; ties share a rank."""
    ranks = values.rank(method="average")
    if len(values.dropna()) <= 1:
        return pd.Series(0.5, index=values.index)
    return 1 - (ranks - 1) / (len(values.dropna()) - 1)


def copy_column(role: str) -> str:
    """The column of :func:`pair_closeness` that holds a role's closeness on the "copy" question."""
    return f"copy_{role}"


def _campaign_pairs(ws, campaign_id: int) -> tuple[pd.DataFrame, LogSpreads | None]:
    """Pairs of the campaign with kind, variant and (for the backbones scoring most pairs) distances.

    Also the log spreads the raters standardise by: over that combination's
    reference pairs; None when nothing is scored or there is no reference
    set (:func:`pair_closeness` then takes them from the scored pairs).
    """
    pairs = pd.read_sql_query(
        "SELECT p.id AS pair, p.kind, v.name AS variant FROM campaign_pairs cp JOIN pairs p ON p.id = cp.pair "
        "LEFT JOIN generations g ON g.id = p.generation LEFT JOIN variants v ON v.id = g.variant "
        "WHERE cp.campaign = ? ORDER BY p.id",
        ws.conn,
        params=(campaign_id,),
    )
    best = ws.conn.execute(
        "SELECT s.semantic, s.style FROM scores s JOIN campaign_pairs cp ON cp.pair = s.pair AND cp.campaign = ? "
        "GROUP BY s.semantic, s.style ORDER BY COUNT(*) DESC, s.semantic, s.style LIMIT 1",
        (campaign_id,),
    ).fetchone()
    if best is None:
        pairs["m_sem"] = np.nan
        pairs["m_style"] = np.nan
        return pairs, None
    scores = pd.read_sql_query(
        "SELECT pair, m_sem, m_style FROM scores WHERE semantic = ? AND style = ?", ws.conn, params=best
    )
    pairs = pairs.merge(scores, on="pair", how="left")
    return pairs, _reference_spreads(ws, best)


def _reference_spreads(ws, combination: tuple[str, str]) -> LogSpreads | None:
    """The spreads behind w_std for this combination, over its reference pairs; None without a usable set."""
    from cpdm.scoring.reader import load_reference_distances

    reference = load_reference_distances(ws, *combination)
    try:
        return LogSpreads.of(reference["m_sem"].to_numpy(), reference["m_style"].to_numpy())
    except MetricError:
        return None


def _standardised_log(distances: pd.Series, spread: float) -> pd.Series:
    """log distance / spread; a distance of 0 (identical images) is the closest possible, not undefined."""
    return np.log(np.maximum(distances.to_numpy(dtype=np.float64), np.finfo(np.float64).tiny)) / spread


def pair_closeness(pairs: pd.DataFrame, spreads: LogSpreads | None = None) -> pd.DataFrame:
    """Content, style and each role's copy closeness in [0, 1] per pair (columns pair, kind, variant, m_sem, m_style).

    On scored pairs a role's copy closeness is the closeness rank of its
    weighted sum of the standardised log distances (``spreads``: None takes
    them from the scored pairs themselves); elsewhere, its weighted mean of
    content and style closeness.
    """
    out = pairs.copy()
    normal = out["kind"] == "normal"
    scored = normal & out["m_sem"].notna() & out["m_style"].notna()
    content = pd.Series(np.nan, index=out.index)
    style = pd.Series(np.nan, index=out.index)
    if scored.any():
        content[scored] = _closeness_rank(out.loc[scored, "m_sem"])
        style[scored] = _closeness_rank(out.loc[scored, "m_style"])
    by_variant = normal & ~scored
    for index in out.index[by_variant]:
        content[index], style[index] = VARIANT_CLOSENESS.get(out.at[index, "variant"], UNKNOWN_VARIANT_CLOSENESS)
    content[out["kind"] == "check_identical"] = 1.0
    style[out["kind"] == "check_identical"] = 1.0
    content[out["kind"] == "check_unrelated"] = 0.0
    style[out["kind"] == "check_unrelated"] = 0.0
    out["content"] = content
    out["style"] = style
    if spreads is None and scored.sum() >= 2:
        try:
            spreads = LogSpreads.of(out.loc[scored, "m_sem"].to_numpy(), out.loc[scored, "m_style"].to_numpy())
        except MetricError:
            spreads = None  # the distances do not vary: ranks of content and style are all there is
    for role, weight in COPY_CONTENT_WEIGHT.items():
        copy = weight * content + (1 - weight) * style
        if scored.any() and spreads is not None:
            standardised = (weight * _standardised_log(out.loc[scored, "m_sem"], spreads.sem)
                            + (1 - weight) * _standardised_log(out.loc[scored, "m_style"], spreads.style))
            copy[scored] = _closeness_rank(pd.Series(standardised, index=out.index[scored]))
        out[copy_column(role)] = copy
    return out


def _simulated_raters(ws, n_artists: int, n_lay: int) -> list:
    """The simulated raters (:class:`cpdm.rating.auth.Rater`), reusing ones that already exist under the same names."""
    from cpdm.rating.auth import create_rater, get_rater

    raters = []
    for role, count, label in (("artist", n_artists, "artist"), ("lay", n_lay, "lay rater")):
        for number in range(1, count + 1):
            name = f"simulated {label} {number}"
            row = ws.conn.execute(
                "SELECT id FROM raters WHERE name = ? AND simulated = 1 AND role = ?", (name, role)
            ).fetchone()
            raters.append(get_rater(ws, row[0]) if row else create_rater(ws, name, role, simulated=True)[0])
    return raters


def add_simulated_ratings(ws, campaign_id: int, seed: int = 0, n_artists: int = 4, n_lay: int = 4) -> dict:
    """Fill a campaign with ratings from simulated raters; returns counts of what was added.

    The raters take turns, one pair each per turn: each claims its next pair
    by the assignment rules and submits its answers (or a skip) through the
    app's submit path, until the rules leave none of them anything to rate.
    So overlap, "never the same pair twice" and the attention-check rate
    hold as for people. Times follow a simulated clock from ``START_TIME``,
    and values are deterministic for a seed. Running it again adds nothing
    (the same raters find their work done). A 2afc campaign is filled with
    judgments instead (:func:`add_simulated_judgments`).
    """
    row = ws.conn.execute("SELECT protocol, kind FROM campaigns WHERE id = ?", (campaign_id,)).fetchone()
    if row is None:
        raise CpdmError(f"no campaign with id {campaign_id}")
    if n_artists < 0 or n_lay < 0 or n_artists + n_lay == 0:
        raise CpdmError("simulated ratings need at least one simulated rater")
    if row[1] == "2afc":
        return add_simulated_judgments(ws, campaign_id, seed=seed, n_artists=n_artists, n_lay=n_lay)
    questions = _questions(row[0])
    pairs = pair_closeness(*_campaign_pairs(ws, campaign_id))
    if len(pairs) == 0:
        raise CpdmError(f"campaign {campaign_id} has no pairs")
    raters = _simulated_raters(ws, n_artists, n_lay)
    rng = np.random.default_rng(seed)
    leniency = {rater.id: rng.normal(0, LENIENCY_SD) for rater in raters}
    before = _rating_count(ws, campaign_id)
    _rate_in_turns(ws, campaign_id, raters, pairs.set_index("pair"), questions, leniency, rng)
    _answer_background(ws, campaign_id, raters, seed)
    return {
        "raters": len(raters),
        "pairs": int((pairs["kind"] == "normal").sum()),
        "checks": int((pairs["kind"] != "normal").sum()),
        "ratings": _rating_count(ws, campaign_id) - before,
        "scored_pairs": int(pairs["m_sem"].notna().sum()),
    }


def _simulated_answer(question, role: str, rng):
    """A simulated rater's answer to a background question: artists lean to the first half of the options and
    to more years of practice, lay raters to the second half and fewer; an optional text is declined."""
    if question.type == "text":
        return None if question.optional else "simulated"
    if question.type == "number":
        top = min(question.max, question.min + 40)
        middle = (question.min + top) / 2
        value = rng.uniform(middle, top) if role == "artist" else rng.uniform(question.min, middle)
        return int(round(value)) if question.integer else float(value)
    half = max(1, len(question.options) // 2)
    leaning = question.options[:half] if role == "artist" else question.options[half:]
    choice = str(rng.choice(leaning))
    return [choice] if question.type == "multiple" else choice


def _answer_background(ws, campaign_id: int, raters: list, seed: int) -> None:
    """Answer the campaign's background questionnaire for each simulated rater (its own random stream, so the
    ratings are those of a seed whether or not the protocol has a questionnaire)."""
    from cpdm.rating.background import questionnaire_steps, save_step

    steps = questionnaire_steps(ws.conn, campaign_id)
    for rater in raters:
        rng = np.random.default_rng([seed, rater.id])
        for step in steps:
            values = {subject: _simulated_answer(step.question, rater.role, rng) for subject in step.subjects}
            save_step(ws, rater.id, campaign_id, step.question.id, values, now=START_TIME)


def _rating_count(ws, campaign_id: int) -> int:
    return ws.conn.execute("SELECT COUNT(*) FROM ratings WHERE campaign = ?", (campaign_id,)).fetchone()[0]


def _rate_in_turns(ws, campaign_id: int, raters: list, pairs: pd.DataFrame, questions, leniency: dict, rng) -> None:
    """Let the raters claim and submit in turns until none of them is given a pair.

    A rater given nothing waits until a skip frees a slot (nothing else
    frees one here: every claim is answered at once, none times out).
    """
    from cpdm.rating.assignment import claim_next
    from cpdm.rating.submit import submit

    clock = START_TIME
    active = list(raters)
    while active:
        for rater in list(active):
            item = claim_next(ws, campaign_id, rater, now=clock)
            if item is None:
                active.remove(rater)
                continue
            pair = pairs.loc[item.pair]
            seconds = float(np.round(rng.lognormal(np.log(9.0), 0.5), 2))
            submitted = clock + timedelta(seconds=seconds)
            nonce = f"sim-{campaign_id}-{item.pair}-{rater.id}"
            if pair.kind == "normal" and rng.random() < SKIP_PROBABILITY:
                submit(ws, rater, campaign_id, item.pair, None, nonce=nonce, skip_reason=SKIP_REASON, now=submitted)
                active = list(raters)  # a freed slot: every rater may claim again
            else:
                answers = {question: _answer(pair, rater.role, question, low, high, leniency[rater.id], rng)
                           for question, low, high in questions}
                submit(ws, rater, campaign_id, item.pair, answers, nonce=nonce, now=submitted)
            clock = submitted + timedelta(seconds=1)


def _answer(pair, role: str, question: str, low: int, high: int, leniency: float, rng) -> int:
    """One simulated answer to one question on one pair."""
    if pair.kind == "check_identical":
        return high
    if pair.kind == "check_unrelated":
        return low
    if question == "content":
        latent = pair.content
    elif question == "style":
        latent = pair.style
    else:
        latent = pair[copy_column(role)]
    return int(to_scale(latent, low, high, leniency, rng.normal(0, NOISE_SD)))


def synthetic_study(
    n_pairs: int = 300,
    n_anchors: int = 30,
    n_raters: int = 10,
    ratings_per_pair: int = 5,
    w_true: float = 0.5,
    noise_sd: float = NOISE_SD,
    questions=("content", "style", "copy"),
    n_reference: int = 500,
    seed: int = 0,
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """A study with known truth: (pairs, ratings, reference distances) as DataFrames.

    Distances are log-normal and independent, so the weight is identifiable.
    Every rater's "copy" answer follows CM_{w_true} (scaled to 1–5) plus
    leniency and noise; content follows semantic, style follows style
    closeness. Half of the raters are artists, half lay. The frames have the
    columns the analysis functions expect.
    """
    rng = np.random.default_rng(seed)
    anchors = np.sort(rng.integers(0, n_anchors, n_pairs))
    anchors[:n_anchors] = np.arange(n_anchors) if n_pairs >= n_anchors else anchors[:n_anchors]
    m_sem = np.exp(rng.normal(np.log(0.5), 0.6, n_pairs))
    m_style = np.exp(rng.normal(np.log(0.02), 0.9, n_pairs))
    reference = pd.DataFrame({
        "m_sem": np.exp(rng.normal(np.log(0.9), 0.4, n_reference)),
        "m_style": np.exp(rng.normal(np.log(0.05), 0.6, n_reference)),
    })
    x_ref = np.median(reference["m_sem"] ** w_true * reference["m_style"] ** (1 - w_true))
    cm_true = 1 - np.minimum(m_sem**w_true * m_style ** (1 - w_true) / x_ref, 1) ** 2
    variants = np.array([variant.name for variant in VARIANTS])[rng.integers(0, 4, n_pairs)]
    pairs = pd.DataFrame({
        "pair": np.arange(1, n_pairs + 1), "anchor": anchors, "variant": variants,
        "m_sem": m_sem, "m_style": m_style, "cm_true": cm_true,
    })
    sem_close = 1 - (pd.Series(m_sem).rank() - 1) / max(n_pairs - 1, 1)
    style_close = 1 - (pd.Series(m_style).rank() - 1) / max(n_pairs - 1, 1)
    latent = {"content": sem_close.to_numpy(), "style": style_close.to_numpy(), "copy": cm_true}

    roles = np.where(np.arange(n_raters) < n_raters // 2, "artist", "lay")
    leniency = rng.normal(0, LENIENCY_SD, n_raters)
    per_pair = min(ratings_per_pair, n_raters)
    rater_of = (np.arange(n_pairs)[:, None] + np.arange(per_pair)[None, :] * max(n_raters // per_pair, 1)) % n_raters
    pair_idx = np.repeat(np.arange(n_pairs), per_pair)
    rater_idx = rater_of.ravel()
    frames = []
    for question in questions:
        base = latent.get(question, cm_true)[pair_idx]
        values = to_scale(base, 1, 5, leniency[rater_idx], rng.normal(0, noise_sd, len(pair_idx)))
        frames.append(pd.DataFrame({
            "pair": pairs["pair"].to_numpy()[pair_idx], "anchor": anchors[pair_idx], "rater": rater_idx + 1,
            "role": roles[rater_idx], "question": question, "value": values.astype(float),
        }))
    ratings = pd.concat(frames, ignore_index=True)
    ratings["kind"] = "normal"
    ratings["flagged"] = False
    ratings["simulated"] = True
    return pairs, ratings, reference


# --------------------------------------------------------------------------
# Comparative (2AFC) campaigns
# --------------------------------------------------------------------------


# The closeness column each 2afc question follows; any other question (copy) follows the role's copy column.
QUESTION_CLOSENESS = {"content": "content", "style": "style"}


def _latent_scores(pairs: pd.DataFrame, questions: list[str], high_minus_low: float = 4.0) -> dict:
    """Each pair's latent score per (role, question) on a 1–5 rating scale: what a rating of it would be, noise
    aside (``{(role, question): {pair: score}}``; copy follows the role's copy column, content and style theirs)."""
    latent = {}
    for role in COPY_CONTENT_WEIGHT:
        for question in questions:
            column = QUESTION_CLOSENESS.get(question, copy_column(role))
            latent[role, question] = (1.0 + high_minus_low * pairs[column].astype(float)).to_dict()
    return latent


def _judgment_answers(item, kinds: dict, latent: dict, role: str, questions: list[str], rng) -> dict[str, str]:
    """A simulated rater's answers to one triplet: left, right or cant_tell for every question."""
    from cpdm.analysis.judgment_planning import rater_choices

    if item.kind == "check":
        identical = "left" if kinds[item.left_pair] == "check_identical" else "right"
        return {question: identical for question in questions}
    answers = {}
    for question in questions:
        scores = latent[role, question]
        choice = float(rater_choices(scores[item.left_pair], scores[item.right_pair], NOISE_SD, rng))
        answers[question] = "cant_tell" if choice == 0.5 else ("left" if choice == 1.0 else "right")
    return answers


def _judgment_count(ws, campaign_id: int) -> int:
    return ws.conn.execute("SELECT COUNT(DISTINCT triplet || ':' || rater) FROM judgments WHERE campaign = ?",
                           (campaign_id,)).fetchone()[0]


def add_simulated_judgments(ws, campaign_id: int, seed: int = 0, n_artists: int = 4, n_lay: int = 4) -> dict:
    """Fill a 2afc campaign with judgments from simulated raters; returns counts of what was added.

    The same raters as :func:`add_simulated_ratings` (same names, roles and
    latent scores), taking turns: each claims its next triplet by the
    assignment rules and submits through
    :func:`cpdm.rating.judgments.submit_judgment` (a few skips), until the
    rules leave none of them anything to judge. In an active campaign the
    queue is refreshed every ``REFRESH_EVERY`` judgments and once more when
    everyone is done (which may offer more). Deterministic for a seed;
    running it again adds nothing.
    """
    from cpdm.rating.protocol import parse_protocol

    row = ws.conn.execute("SELECT protocol, kind, design FROM campaigns WHERE id = ?", (campaign_id,)).fetchone()
    if row is None:
        raise CpdmError(f"no campaign with id {campaign_id}")
    if row[1] != "2afc":
        raise CpdmError(f"campaign {campaign_id} rates pairs; simulated judgments fill 2afc campaigns")
    if n_artists < 0 or n_lay < 0 or n_artists + n_lay == 0:
        raise CpdmError("simulated judgments need at least one simulated rater")
    questions = [question.id for question in parse_protocol(row[0], frozen=True).questions]
    pairs = pair_closeness(*_campaign_pairs(ws, campaign_id))
    if len(pairs) == 0:
        raise CpdmError(f"campaign {campaign_id} has no triplets")
    raters = _simulated_raters(ws, n_artists, n_lay)
    rng = np.random.default_rng([seed, 2])
    before = _judgment_count(ws, campaign_id)
    _judge_in_turns(ws, campaign_id, raters, pairs.set_index("pair"), questions, rng, active=row[2] == "active")
    _answer_background(ws, campaign_id, raters, seed)
    return {
        "raters": len(raters),
        "triplets": ws.conn.execute("SELECT COUNT(*) FROM campaign_triplets ct JOIN triplets t ON t.id = ct.triplet "
                                    "AND t.kind = 'normal' WHERE ct.campaign = ?", (campaign_id,)).fetchone()[0],
        "judgments": _judgment_count(ws, campaign_id) - before,
        "scored_pairs": int(pairs["m_sem"].notna().sum()),
    }


def _judge_in_turns(ws, campaign_id: int, raters: list, pairs: pd.DataFrame, questions: list[str], rng,
                    active: bool) -> None:
    """Let the raters claim and submit triplets in turns until none is given one (see add_simulated_judgments)."""
    from cpdm.rating.assignment import claim_next
    from cpdm.rating.judgments import submit_judgment

    refresh = _active_refresher(ws, campaign_id) if active else None  # None also when nothing is scored
    kinds = pairs["kind"].to_dict()
    latent = _latent_scores(pairs, questions)
    clock = START_TIME
    waiting = list(raters)
    while waiting:
        for rater in list(waiting):
            item = claim_next(ws, campaign_id, rater, now=clock)
            if item is None:
                waiting.remove(rater)
                if not waiting and refresh is not None and refresh(final=True):
                    waiting = list(raters)  # the refreshed queue offers more
                continue
            seconds = float(np.round(rng.lognormal(np.log(12.0), 0.5), 2))
            submitted = clock + timedelta(seconds=seconds)
            nonce = f"sim2afc-{campaign_id}-{item.triplet}-{rater.id}"
            if item.kind == "normal" and rng.random() < SKIP_PROBABILITY:
                submit_judgment(ws, rater, campaign_id, item.triplet, None, nonce=nonce, skip_reason=SKIP_REASON,
                                now=submitted)
                waiting = list(raters)  # a freed slot: every rater may claim again
            else:
                answers = _judgment_answers(item, kinds, latent, rater.role, questions, rng)
                submit_judgment(ws, rater, campaign_id, item.triplet, answers, nonce=nonce, now=submitted)
                if refresh is not None:
                    refresh(final=False)
            clock = submitted + timedelta(seconds=1)


def _active_refresher(ws, campaign_id: int):
    """A function refreshing an active campaign's queue when due (or, ``final``, whenever it would offer
    more); returns whether the refresh offered triplets that were not offered before."""
    from cpdm.rating.active import campaign_candidates, refresh_due, refresh_priorities

    if campaign_candidates(ws, campaign_id)["w_star"].notna().sum() == 0:
        return None  # unscored: the warm-up is all an active campaign can offer

    def offered() -> set[int]:
        return {r[0] for r in ws.conn.execute(
            "SELECT triplet FROM campaign_triplets WHERE campaign = ? AND priority > 0", (campaign_id,))}

    def refresh(final: bool) -> bool:
        if not final and not refresh_due(ws, campaign_id):
            return False
        before = offered()
        refresh_priorities(ws, campaign_id)
        return bool(offered() - before)

    return refresh
