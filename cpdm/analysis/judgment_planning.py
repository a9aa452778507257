"""How many judgments pin w: Likert ratings against random, balanced and active triplets.

``cpdm plan --kind 2afc`` (:func:`plan_judgments`):
for the same raters (:class:`JudgmentWorld`: each pair's latent copy score
and the rating noise, from a pilot or from stated assumptions), how many
judgments pin w to ±0.1 with Likert ratings, random, balanced and active
triplets (:mod:`cpdm.rating.active`). Ratings choose w by Spearman ρ as
above; triplets by the mean 2AFC score of CM_w (the statistic 2AFC
calibration maximises: p where CM_w prefers the first generation, 1 − p
where it prefers the second, ½ on a tie). A rater's choice follows the
difference of the two latent scores, logistic with the scale of the rating
noise (:func:`rater_choices`), so a Likert rating and a choice carry the
same rater's noise.

The simulated studies resample anchors as :mod:`cpdm.analysis.planning`
does for rating studies, and reuse its ranking and Spearman helpers.

Why one file of this length: the four designs are simulated side by side
on the same anchors and raters, so the raters' model, the designs' triplet
sequences, the two ways of choosing w and the pilot reader belong together.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.special import expit

from cpdm.analysis.calibration import (
    MAX_STEP,
    best_w_columns,
    cm_from_distances,
    distance_grid,
    reference_grid_of,
    weight_grid,
)
from cpdm.analysis.planning import (
    MIN_PILOT_ANCHORS,
    PRECISION_TARGET,
    anchor_members,
    pilot_frames,
    rank_rows,
    spearman_chosen_w,
)
from cpdm.analysis.two_afc import two_afc_scores
from cpdm.errors import CpdmError

JUDGMENT_DESIGNS = ("likert", "random", "balanced", "active")
# A "can't tell" is answered, half the time, when the two generations' latent copy scores differ by less than this
# (in points of the rating scale).
CANT_TELL_MARGIN = 0.2
CANT_TELL_PROBABILITY = 0.5
# Judgments each triplet of an active design may take (a campaign's overlap, all roles together).
ACTIVE_CAP = 6


def logistic_scale(noise_sd: float) -> float:
    """The logistic scale of a choice between two items each seen with rating noise ``noise_sd``.

    A rater who would rate each item as its latent score plus noise of sd
    σ sees their difference with sd σ·√2; the logistic with the same sd has
    scale σ·√2·√3/π.
    """
    if not noise_sd > 0:
        raise CpdmError(f"the rating noise must be positive, got {noise_sd}")
    return float(noise_sd * np.sqrt(2.0) * np.sqrt(3.0) / np.pi)


def rater_choices(latent_first, latent_second, noise_sd: float, rng) -> np.ndarray:
    """Simulated 2AFC answers: 1.0 (first), 0.0 (second) or 0.5 (can't tell).

    The choice follows the difference of the two latent copy scores (on the
    rating scale), logistic with the scale of the rating noise
    (:func:`logistic_scale`); when the difference is below
    ``CANT_TELL_MARGIN`` the rater says "can't tell" with probability
    ``CANT_TELL_PROBABILITY``.
    """
    difference = np.asarray(latent_first, dtype=np.float64) - np.asarray(latent_second, dtype=np.float64)
    p_first = expit(difference / logistic_scale(noise_sd))
    chosen = (rng.random(difference.shape) < p_first).astype(np.float64)
    unsure = (np.abs(difference) < CANT_TELL_MARGIN) & (rng.random(difference.shape) < CANT_TELL_PROBABILITY)
    return np.where(unsure, 0.5, chosen)


@dataclass
class JudgmentWorld:
    """What a simulated study draws from: pairs with distances and a latent copy score, and the raters' noise.

    ``pairs``: anchor, m_sem, m_style, latent (the mean rating a pair would
    get on the copy question, on ``scale``); ``residuals``: rating noise to
    draw from (a pilot's pooled residuals), or None for normal noise of sd
    ``noise_sd``; ``reference``: m_sem, m_style of reference pairs for x_ref
    (None: the pairs' own). ``leniency_sd``: the spread of the raters' own
    offsets on the rating scale (each of ``raters`` raters has one, added
    to every rating they give; a choice between two items cancels it).
    """

    pairs: pd.DataFrame
    noise_sd: float
    scale: tuple[int, int] = (1, 5)
    residuals: np.ndarray | None = None
    reference: pd.DataFrame | None = None
    leniency_sd: float = 0.0
    raters: int = 8

    def rating_noise(self, rng, shape) -> np.ndarray:
        if self.residuals is not None and len(self.residuals):
            return rng.choice(self.residuals, size=shape)
        return rng.normal(0.0, self.noise_sd, shape)


@dataclass
class JudgmentPlan:
    """Judgments each design needs to pin w, and the simulated half-widths behind them."""

    table: pd.DataFrame          # design, judgments, halfwidth, bias (mean chosen w − w_true when known)
    needed: dict                 # design -> judgments needed (NaN when no simulated budget reached the target)
    anchors: int
    replicates: int
    target: float = PRECISION_TARGET

    def ratio(self, design: str, against: str) -> float:
        return float(self.needed[design] / self.needed[against])

    def summary_lines(self) -> list[str]:
        lines = []
        for design in self.table["design"].unique():
            needed = self.needed.get(design, float("nan"))
            if np.isfinite(needed):
                ratio = needed / self.needed["likert"] if np.isfinite(self.needed.get("likert", np.nan)) else np.nan
                against = f" ({ratio:.2f} × Likert)" if np.isfinite(ratio) else ""
                lines.append(f"{design}: about {needed:,.0f} judgments pin w to ±{self.target:g}{against}")
            else:
                lines.append(f"{design}: no simulated budget (up to {int(self.table['judgments'].max()):,} "
                             f"judgments) pins w to ±{self.target:g}")
        return lines


def _triplet_pool(groups: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every triplet of the drawn anchors: (first, second) pair indices into the world and each one's anchor slot."""
    first, second, slot = [], [], []
    for index, members in enumerate(groups):
        i, j = np.triu_indices(len(members), k=1)
        first.append(members[i])
        second.append(members[j])
        slot.append(np.full(len(i), index))
    return np.concatenate(first), np.concatenate(second), np.concatenate(slot)


def balanced_triplets(slot: np.ndarray, sizes: np.ndarray, per_anchor: int | None, rng) -> np.ndarray:
    """Indices into a triplet pool: per anchor, ``per_anchor`` triplets along cycles of its generations
    (None: as many as the anchor has generations, one when it has two).

    The generations of an anchor are shuffled; the first cycle pairs each
    with the next, the second with the one after, and so on, so each
    generation appears about equally often (``sizes``: generations per
    anchor; ``slot``: the anchor of each pool triplet, the pool listing an
    anchor's triplets as ``np.triu_indices`` does).
    """
    chosen = []
    start = 0
    for anchor, size in enumerate(sizes):
        count = size * (size - 1) // 2
        if count == 0:
            continue
        lookup = {}
        i, j = np.triu_indices(size, k=1)
        for offset, (a, b) in enumerate(zip(i, j)):
            lookup[(a, b)] = start + offset
        order = rng.permutation(size)
        picked = []
        for step in range(1, size // 2 + 1):
            for position in range(size):
                a, b = order[position], order[(position + step) % size]
                key = (min(a, b), max(a, b))
                if key in lookup and lookup[key] not in picked:
                    picked.append(lookup[key])
        chosen.extend(picked[:size if per_anchor is None else per_anchor])
        start += count
    assert start == len(slot)
    return np.asarray(chosen, dtype=np.int64)


def _round_robin(design: np.ndarray, budget: int, rng) -> np.ndarray:
    """Least-judged first, random among equals: successive shuffles of the design's triplets."""
    rounds = int(np.ceil(budget / max(len(design), 1)))
    return np.concatenate([rng.permutation(design) for _ in range(rounds)])[:budget]


def _active_sequence(pool, balanced: np.ndarray, budget: int, answer, rng, warmup: int, refresh_every: int,
                     cap: int) -> tuple[np.ndarray, np.ndarray]:
    """The triplets an active campaign serves, judgment by judgment (the claim rule on the active queue), and
    the answers they got.

    ``pool``: dict of per-triplet arrays delta_sem, delta_style, w_star;
    ``answer(t)``: a simulated answer to triplet t. Warm-up on the balanced
    design, then refreshes every ``refresh_every`` judgments; each claim
    takes the least-judged open triplet of positive priority, the highest
    priority among those, at random among equals.
    """
    from cpdm.rating.active import active_priorities, fit_choice_model

    n = len(pool["w_star"])
    load = np.zeros(n)
    first = np.zeros(n)
    sequence = list(_round_robin(balanced, min(warmup, budget), rng))
    answers = []
    for t in sequence:
        answers.append(answer(t))
        load[t] += 1
        first[t] += answers[-1]
    fallback = np.zeros(n)
    fallback[balanced] = 2.0
    fallback += rng.random(n)                          # balanced triplets first, then the rest in random order
    model = None
    while len(sequence) < budget:
        model = fit_choice_model(pool["delta_sem"], pool["delta_style"], first, load, previous=model)
        priority = active_priorities(pool["w_star"], pool["delta_sem"], pool["delta_style"], [model], load < cap,
                                     fallback)
        if not (priority > 0).any():
            break
        for _ in range(min(refresh_every, budget - len(sequence))):
            offered = (priority > 0) & (load < cap)
            if not offered.any():
                break
            candidates = np.flatnonzero(offered)
            least = candidates[load[candidates] == load[candidates].min()]
            best = least[priority[least] >= priority[least].max() - 1e-15]
            t = int(best[rng.integers(len(best))])
            answers.append(answer(t))
            load[t] += 1
            first[t] += answers[-1]
            sequence.append(t)
    return np.asarray(sequence, dtype=np.int64), np.asarray(answers, dtype=np.float64)


def _twoafc_chosen_w(grid, prefers_first: np.ndarray, triplets: np.ndarray, answers: np.ndarray,
                     checkpoints) -> np.ndarray:
    """w maximising the BAPPS-style 2AFC score after each checkpoint's first judgments.

    ``prefers_first``: G × pool, +1 where CM_w prefers a triplet's first
    generation, −1 the second, 0 a tie; a triplet where a fraction p of
    judgments chose the first scores p for a metric preferring the first,
    1 − p for one preferring the second, ½ for a tie.
    """
    scores = []
    n = prefers_first.shape[1]
    for budget in checkpoints:
        total = np.bincount(triplets[:budget], minlength=n).astype(np.float64)
        chosen = np.bincount(triplets[:budget], weights=answers[:budget], minlength=n)
        judged = total > 0
        p = chosen[judged] / total[judged]
        preference = prefers_first[:, judged]
        scores.append(two_afc_scores(np.broadcast_to(p, preference.shape), preference,
                                     np.zeros_like(preference)).mean(axis=1))
    return best_w_columns(grid, np.stack(scores, axis=1))


def judgment_checkpoints(largest: int, smallest: int = 40, count: int = 16) -> np.ndarray:
    """Budgets at which every design is assessed: geometric from ``smallest`` to ``largest``."""
    return np.unique(np.round(np.geomspace(smallest, largest, count)).astype(int))


def _needed(budgets: np.ndarray, halfwidths: np.ndarray, target: float) -> float:
    """The smallest budget whose half-width meets the target, log-interpolated from the one before it."""
    meets = halfwidths <= target + 1e-9
    if not meets.any():
        return float("nan")
    first = int(np.argmax(meets))
    if first == 0 or halfwidths[first - 1] == halfwidths[first]:
        return float(budgets[first])
    low, high = np.log(budgets[first - 1]), np.log(budgets[first])
    fraction = (halfwidths[first - 1] - target) / (halfwidths[first - 1] - halfwidths[first])
    return float(np.exp(low + fraction * (high - low)))


def plan_judgments(
    world: JudgmentWorld,
    anchors: int = 20,
    designs=JUDGMENT_DESIGNS,
    max_judgments: int = 3000,
    replicates: int = 100,
    triplets_per_anchor: int | None = None,
    w_true: float | None = None,
    step: float = MAX_STEP,
    seed: int = 0,
    warmup: int | None = None,
    refresh_every: int | None = None,
) -> JudgmentPlan:
    """Judgments each design needs for a w within ±``PRECISION_TARGET`` (the half-width of the central 95%
    of simulated choices, as :func:`plan_study` measures it).

    Every replicate draws ``anchors`` anchors with replacement from the world
    (each with its pairs) and runs every design on them with the same raters:
    ``likert`` rates pairs on the copy question (least-rated first) and w is
    chosen by Spearman ρ as calibration does; ``random`` and ``balanced``
    judge triplets (two generations of one anchor) from a fixed design of
    ``triplets_per_anchor`` per anchor on average (default: the anchor's
    generations, so each appears twice in a balanced design), least-judged
    first; ``active`` warms up on the balanced design, then serves the active
    queue (:mod:`cpdm.rating.active`), refreshed every ``refresh_every``
    judgments, each triplet taking at most ``ACTIVE_CAP`` judgments (or twice
    its share of the largest budget, where that is more). For the
    2AFC designs w maximises the 2AFC score. The raters' choices follow the
    difference of the two pairs' latent copy scores (:func:`rater_choices`).
    """
    from cpdm.rating.active import REFRESH_EVERY, WARMUP_JUDGMENTS, flip_points

    unknown = sorted(set(designs) - set(JUDGMENT_DESIGNS))
    if unknown:
        raise CpdmError(f"unknown design {unknown[0]!r} (known: {', '.join(JUDGMENT_DESIGNS)})")
    pairs = world.pairs.dropna(subset=["m_sem", "m_style", "latent"]).reset_index(drop=True)
    if pairs["anchor"].nunique() < MIN_PILOT_ANCHORS:
        raise CpdmError(f"planning needs at least {MIN_PILOT_ANCHORS} anchors with scored pairs; "
                        f"got {pairs['anchor'].nunique()}")
    if (pairs.groupby("anchor").size() < 2).all():
        raise CpdmError("comparative designs need anchors with at least two scored generations")
    warmup = WARMUP_JUDGMENTS if warmup is None else warmup
    refresh_every = REFRESH_EVERY if refresh_every is None else refresh_every
    grid = weight_grid(step)
    m_sem = pairs["m_sem"].to_numpy(dtype=np.float64)
    m_style = pairs["m_style"].to_numpy(dtype=np.float64)
    latent = pairs["latent"].to_numpy(dtype=np.float64)
    distances = distance_grid(m_sem, m_style, grid)
    reference_grid = reference_grid_of(world.reference, grid)
    cm = cm_from_distances(distances, reference_grid if reference_grid is not None else np.median(distances, axis=1))
    members = anchor_members(pairs["anchor"].to_numpy())
    checkpoints = judgment_checkpoints(max_judgments)
    rng = np.random.default_rng(seed)
    chosen = {design: np.empty((replicates, len(checkpoints))) for design in designs}
    for replicate in range(replicates):
        drawn = members[rng.integers(0, len(members), anchors)]
        groups = [row[row >= 0] for row in drawn]
        if "likert" in designs:
            chosen["likert"][replicate] = _likert_chosen_w(world, grid, cm, latent, groups, checkpoints, rng)
        twoafc = [d for d in designs if d != "likert"]
        if not twoafc:
            continue
        first, second, slot = _triplet_pool(groups)
        delta_sem = np.log(m_sem[first]) - np.log(m_sem[second])
        delta_style = np.log(m_style[first]) - np.log(m_style[second])
        pool = {"delta_sem": delta_sem, "delta_style": delta_style, "w_star": flip_points(delta_sem, delta_style)}
        prefers_first = np.sign(cm[:, first] - cm[:, second])
        sizes = np.array([len(g) for g in groups])
        balanced = balanced_triplets(slot, sizes, triplets_per_anchor, rng)
        for design in twoafc:
            if design == "random":
                size = len(balanced)
                sequence = _round_robin(rng.choice(len(first), size=min(size, len(first)), replace=False),
                                        checkpoints[-1], rng)
            elif design == "balanced":
                sequence = _round_robin(balanced, checkpoints[-1], rng)
            if design == "active":
                def answer(t, _rng=rng):
                    return float(rater_choices(latent[first[t]], latent[second[t]], world.noise_sd, _rng))

                # A campaign's overlap: ACTIVE_CAP, or more where the budget would fill every triplet to it.
                cap = max(ACTIVE_CAP, int(np.ceil(2 * checkpoints[-1] / len(first))))
                sequence, answers = _active_sequence(pool, balanced, checkpoints[-1], answer, rng, warmup,
                                                     refresh_every, cap)
            else:
                answers = rater_choices(latent[first[sequence]], latent[second[sequence]], world.noise_sd, rng)
            chosen[design][replicate] = _twoafc_chosen_w(grid, prefers_first, sequence, answers, checkpoints)
    rows, needed = [], {}
    for design in designs:
        low, high = np.quantile(chosen[design], [0.025, 0.975], axis=0)
        halfwidth = (high - low) / 2
        bias = chosen[design].mean(axis=0) - w_true if w_true is not None else np.full(len(checkpoints), np.nan)
        rows += [{"design": design, "judgments": int(b), "halfwidth": float(h), "bias": float(e)}
                 for b, h, e in zip(checkpoints, halfwidth, bias)]
        needed[design] = _needed(checkpoints, halfwidth, PRECISION_TARGET)
    return JudgmentPlan(pd.DataFrame(rows), needed, anchors, replicates)


def _likert_chosen_w(world: JudgmentWorld, grid, cm, latent, groups, checkpoints, rng) -> np.ndarray:
    """w as calibration chooses it from Likert ratings of the drawn pairs after each checkpoint's ratings.

    Pairs are rated least-rated first (rounds of shuffled pairs), the raters
    taking turns; a rating is the pair's latent score plus the rater's
    leniency plus rating noise, rounded onto the scale; w is
    the best Spearman ρ of CM_w against the pairs' mean ratings (pairs not yet
    rated left out), as in :func:`plan_study`.
    """
    index = np.concatenate(groups)
    n_pairs = len(index)
    largest = int(checkpoints[-1])
    rounds = int(np.ceil(largest / n_pairs))
    order = np.concatenate([rng.permutation(n_pairs) for _ in range(rounds)])[:largest]
    low, high = world.scale
    leniency = rng.normal(0.0, world.leniency_sd, world.raters)[np.arange(largest) % world.raters] \
        if world.leniency_sd > 0 else 0.0
    values = np.clip(np.rint(latent[index][order] + leniency + world.rating_noise(rng, largest)), low, high)
    human = np.full((len(checkpoints), n_pairs), np.nan)
    for row, budget in enumerate(checkpoints):
        total = np.bincount(order[:budget], weights=values[:budget], minlength=n_pairs)
        count = np.bincount(order[:budget], minlength=n_pairs)
        human[row] = np.where(count > 0, total / np.maximum(count, 1), np.nan)
    cm_drawn = cm[:, index]
    cm_ranks = [rank_rows(np.where(np.isnan(human), np.nan, np.broadcast_to(cm_drawn[g], human.shape)))
                for g in range(len(grid))]
    return spearman_chosen_w(grid, cm_ranks, human)


def pilot_world(ws, campaign: str, target: str = "copy", group: str = "all", include_flagged: bool = False,
                include_simulated: bool = True, noise_sd: float | None = None) -> JudgmentWorld:
    """A :class:`JudgmentWorld` from a pilot campaign's scored pairs and its human answers.

    A rating pilot: each pair's latent score is its mean rating on ``target``
    by ``group``, the rating noise its pooled residuals (as
    :func:`plan_study` resamples them). A 2afc pilot: the choice model of
    :mod:`cpdm.rating.active` fitted to its copy judgments (w and β), turned
    into latent scores on the 1–5 scale whose choices reproduce it
    (``latent = 3 − β·s·(log D_w − its median)``, s the logistic scale of
    ``noise_sd``, the assumed rating noise, default the simulated raters').
    """
    from cpdm.analysis import data as data_module
    from cpdm.rating.campaigns import campaign_id_by_name

    campaign_id = campaign_id_by_name(ws, campaign)
    kind = ws.conn.execute("SELECT kind FROM campaigns WHERE id = ?", (campaign_id,)).fetchone()[0]
    backbones = data_module.choose_backbones(ws, campaign_id)
    if backbones is None:
        raise CpdmError(f"campaign {campaign!r} has no metric scores; run `cpdm score` first")
    pairs = data_module.pair_table(ws, campaign_id, backbones).dropna(subset=["m_sem", "m_style"])
    reference = data_module.reference_distances(ws, backbones)
    if kind == "2afc":
        return _judgment_pilot(ws, campaign_id, campaign, pairs, reference, include_flagged, include_simulated,
                               DEFAULT_NOISE_SD if noise_sd is None else noise_sd)
    ratings = data_module.analysis_ratings(data_module.load_ratings(ws, campaign_id), include_flagged,
                                           include_simulated)
    ratings = data_module.select_group(ratings[ratings["question"] == target], group)
    if len(ratings) == 0:
        raise CpdmError(f"the pilot {campaign!r} has no ratings of {target!r} by {group} on scored pairs")
    means, residuals = pilot_frames(pairs, ratings.assign(group=group), (group,))
    pairs = pairs.assign(latent=means[group])
    scale = _rating_scale(ws, campaign_id, target)
    return JudgmentWorld(pairs, float(np.std(residuals[group], ddof=1)) if len(residuals[group]) > 1 else 1.0,
                         scale, residuals[group], reference)


# The rating noise assumed where a pilot does not show it (a 2afc pilot): the simulated raters' (demo.simulate).
DEFAULT_NOISE_SD = 0.6


def _rating_scale(ws, campaign_id: int, target: str) -> tuple[int, int]:
    from cpdm.rating.protocol import parse_protocol

    text = ws.conn.execute("SELECT protocol FROM campaigns WHERE id = ?", (campaign_id,)).fetchone()[0]
    for question in parse_protocol(text, frozen=True).questions:
        if question.id == target:
            return tuple(question.scale)
    raise CpdmError(f"the pilot's protocol has no question {target!r}")


def _judgment_pilot(ws, campaign_id, campaign, pairs, reference, include_flagged, include_simulated,
                    noise_sd) -> JudgmentWorld:
    """The world of a 2afc pilot (see :func:`pilot_world`)."""
    from cpdm.rating.active import fit_choice_model
    from cpdm.rating.protocol import parse_protocol

    text = ws.conn.execute("SELECT protocol FROM campaigns WHERE id = ?", (campaign_id,)).fetchone()[0]
    question = parse_protocol(text, frozen=True).questions[0].id
    judged = pd.read_sql_query(
        "SELECT t.first_pair, t.second_pair, "
        "CASE WHEN j.answer = 'cant_tell' THEN 0.5 WHEN j.chosen_pair = t.first_pair THEN 1.0 ELSE 0.0 END AS first "
        "FROM judgments j JOIN triplets t ON t.id = j.triplet AND t.kind = 'normal' JOIN raters r ON r.id = j.rater "
        "WHERE j.campaign = ? AND j.question = ? AND j.answer IS NOT NULL AND (? OR r.flagged = 0) AND (? OR "
        "r.simulated = 0)", ws.conn, params=(campaign_id, question, include_flagged, include_simulated))
    distances = pairs.set_index("pair")[["m_sem", "m_style"]]
    judged = judged[judged["first_pair"].isin(distances.index) & judged["second_pair"].isin(distances.index)]
    if len(judged) == 0:
        raise CpdmError(f"the pilot {campaign!r} has no judgments of scored triplets")
    one, two = distances.loc[judged["first_pair"]].to_numpy(), distances.loc[judged["second_pair"]].to_numpy()
    model = fit_choice_model(np.log(one[:, 0] / two[:, 0]), np.log(one[:, 1] / two[:, 1]),
                             judged["first"].to_numpy(), np.ones(len(judged)))
    log_d = model.w * np.log(pairs["m_sem"].to_numpy()) + (1 - model.w) * np.log(pairs["m_style"].to_numpy())
    latent = 3.0 - model.beta * logistic_scale(noise_sd) * (log_d - np.median(log_d))
    return JudgmentWorld(pairs.assign(latent=latent), noise_sd, (1, 5), None, reference)
