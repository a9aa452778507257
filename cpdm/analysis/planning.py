"""Planning a study from a pilot: how many anchors and raters per pair are needed?

Two targets, both for w as calibration chooses it (the grid w with the
highest Spearman ρ of CM_w against a group's mean rating):

- *precision*: 95% of studies of that size choose a w within ±0.1 of the
  w they estimate (the half-width of the central 95% of the simulated choices);
- *power*: a difference of 0.2 between artists' and lay raters' w is
  detected (its 95% interval excludes 0) in 80% of studies.

Each candidate design is simulated by resampling the pilot. A simulated
study draws its anchors with replacement from the pilot's anchors (each
brings all its pairs and their distances); every pair gets new ratings per
group: the pilot's mean for the pair plus residuals drawn from the group's
pooled residuals (a rating minus its pair's mean, scaled up by √(m/(m−1))
for a pair with m ratings), rounded and kept on the scale. Because the
pilot's pair means already carry the pilot's rating noise, the simulated
studies are somewhat noisier than the real one would be: the
recommendation errs on the side of more data. Power uses the normal
approximation with the simulated spread of the difference.

Comparative judgments (:func:`plan_judgments`, ``cpdm plan --kind 2afc``):
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

Why one file of this length: it is one job, simulating studies from a pilot
to size a new one. Ratings (plan_study) and comparative judgments
(plan_judgments) share the pilot's frames, the rating scale and noise, the
choice of w by Spearman rho and the rater choice model; the 2afc half
compares its designs against the Likert one computed by the same helpers, so
split, each half would import the other's internals.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.special import expit, ndtr

from cpdm.analysis.calibration import (
    MAX_STEP,
    best_w_columns,
    cm_from_distances,
    distance_grid,
    reference_grid_of,
    weight_grid,
)
from cpdm.analysis.two_afc import two_afc_scores
from cpdm.errors import CpdmError

ANCHOR_CHOICES = (20, 40, 80, 160, 320)
RATER_CHOICES = (1, 3, 5, 10)
PRECISION_TARGET = 0.1
DIFFERENCE_TARGET = 0.2
POWER_TARGET = 0.8
MIN_PILOT_ANCHORS = 5


@dataclass
class Plan:
    """The simulated designs and the cheapest one meeting each target (None when none does)."""

    table: pd.DataFrame            # anchors, raters_per_pair, pairs, ratings, halfwidth_<group>…, power
    precision_design: dict | None
    power_design: dict | None
    groups: tuple[str, ...]
    pilot_anchors: int
    replicates: int

    def summary_lines(self) -> list[str]:
        """What to tell the researcher, in plain sentences."""
        lines = []
        for label, design in (
            (f"pin w to ±{PRECISION_TARGET:g} ({', '.join(self.groups)})", self.precision_design),
            (f"detect an artist–lay difference of {DIFFERENCE_TARGET:g} with {POWER_TARGET:.0%} power",
             self.power_design),
        ):
            if label.startswith("detect") and len(self.groups) < 2:
                lines.append(f"To {label}: the pilot needs ratings from both artists and lay raters.")
            elif design is None:
                lines.append(f"To {label}: no simulated design reaches it (up to {max(ANCHOR_CHOICES)} anchors, "
                             f"{max(RATER_CHOICES)} raters per pair per group).")
            else:
                raters = design["raters_per_pair"]
                lines.append(f"To {label}: {design['anchors']} anchors, {raters} rater{'s' if raters > 1 else ''} "
                             f"per pair per group ({design['ratings']} ratings per group).")
        return lines


def _pilot_frames(pairs: pd.DataFrame, ratings: pd.DataFrame, groups: tuple[str, ...]):
    """Per group: the pilot's mean per pair (NaN where unrated) and the pooled, rescaled residuals."""
    means, residuals = {}, {}
    for group in groups:
        sub = ratings[ratings["group"] == group]
        grouped = sub.groupby("pair")["value"]
        pair_mean = grouped.transform("mean")
        size = grouped.transform("size")
        keep = size >= 2
        scale = np.sqrt(size[keep] / (size[keep] - 1))
        residuals[group] = ((sub.loc[keep, "value"] - pair_mean[keep]) * scale).to_numpy(dtype=np.float64)
        means[group] = pairs["pair"].map(grouped.mean()).to_numpy(dtype=np.float64)
        if len(residuals[group]) == 0:
            raise CpdmError(f"the pilot needs pairs rated at least twice by the {group} group to estimate rating noise")
    return means, residuals


def _anchor_members(anchor_codes: np.ndarray) -> np.ndarray:
    """members[a, j]: the j-th pair of anchor a, or -1 where the anchor has fewer pairs."""
    _, anchor_of_pair = np.unique(anchor_codes, return_inverse=True)
    widest = int(np.bincount(anchor_of_pair).max())
    members = -np.ones((anchor_of_pair.max() + 1, widest), dtype=np.int64)
    order = np.argsort(anchor_of_pair, kind="stable")
    position = np.arange(len(order)) - np.searchsorted(anchor_of_pair[order], anchor_of_pair[order])
    members[anchor_of_pair[order], position] = order
    return members


def _ranks(matrix: np.ndarray) -> np.ndarray:
    """Mid-ranks along each row (ties share their mean rank); NaN entries stay NaN and take no rank."""
    rows, width = matrix.shape
    order = np.argsort(matrix, axis=1, kind="stable")            # NaN sorts last
    ordered = np.take_along_axis(matrix, order, axis=1)
    flat = ordered.ravel()
    new_run = np.ones(flat.shape, dtype=bool)
    new_run[1:] = flat[1:] != flat[:-1]
    new_run[::width] = True                                       # every row starts afresh
    run = np.cumsum(new_run) - 1
    starts = np.flatnonzero(new_run)
    lengths = np.diff(np.append(starts, flat.size))
    position = starts % width                                     # 0-based rank of a run's first entry
    midrank = (position + (lengths + 1) / 2)[run].reshape(rows, width)
    ranks = np.empty_like(midrank)
    np.put_along_axis(ranks, order, midrank, axis=1)
    return np.where(np.isnan(matrix), np.nan, ranks)


def _row_spearman(rank_x: np.ndarray, rank_y: np.ndarray) -> np.ndarray:
    """Pearson r of ranks row by row, over the entries that are not NaN (both have the same ones)."""
    x = rank_x - np.nanmean(rank_x, axis=1, keepdims=True)
    y = rank_y - np.nanmean(rank_y, axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.nansum(x * y, axis=1) / np.sqrt(np.nansum(x * x, axis=1) * np.nansum(y * y, axis=1))


def _chosen_w(grid: np.ndarray, cm_ranks: list[np.ndarray], human: np.ndarray) -> np.ndarray:
    """Each replicate's best w (ties: closest to 0.5), from the CM ranks per grid w and the human scores."""
    rank_human = _ranks(human)
    rho = np.array([_row_spearman(ranks, rank_human) for ranks in cm_ranks])
    return best_w_columns(grid, rho)


def plan_study(
    pairs: pd.DataFrame,
    ratings: pd.DataFrame,
    reference: pd.DataFrame | None = None,
    scale: tuple[int, int] = (1, 5),
    anchors=ANCHOR_CHOICES,
    raters=RATER_CHOICES,
    replicates: int = 200,
    step: float = MAX_STEP,
    seed: int = 0,
) -> Plan:
    """Simulate every design (anchors × raters per pair) by resampling the pilot; see the module docstring.

    ``pairs``: the pilot's pairs (pair, anchor, m_sem, m_style); ``ratings``:
    its ratings of the target question (pair, group, value), group being
    ``artists`` or ``lay``; ``scale``: the question's (low, high).
    """
    pairs = pairs.dropna(subset=["m_sem", "m_style"]).reset_index(drop=True)
    ratings = ratings[ratings["pair"].isin(pairs["pair"])].dropna(subset=["value"])
    groups = tuple(g for g in ("artists", "lay") if (ratings["group"] == g).any())
    if not groups:
        raise CpdmError("the pilot has no ratings from artists or lay raters on scored pairs")
    rated_anchors = pairs.loc[pairs["pair"].isin(ratings["pair"]), "anchor"].unique()
    if len(rated_anchors) < MIN_PILOT_ANCHORS:
        raise CpdmError(f"planning needs a pilot with at least {MIN_PILOT_ANCHORS} rated anchors; "
                        f"got {len(rated_anchors)}")
    pairs = pairs[pairs["anchor"].isin(rated_anchors)].reset_index(drop=True)
    means, residuals = _pilot_frames(pairs, ratings, groups)
    grid = weight_grid(step)
    distances = distance_grid(pairs["m_sem"].to_numpy(), pairs["m_style"].to_numpy(), grid)
    reference_grid = reference_grid_of(reference, grid)
    scales = reference_grid if reference_grid is not None else np.median(distances, axis=1)
    cm = cm_from_distances(distances, scales)                     # G × pilot pairs

    members = _anchor_members(pairs["anchor"].to_numpy())          # members[a, j]: j-th pilot pair of anchor a

    rng = np.random.default_rng(seed)
    rows = []
    for n_anchors in anchors:
        drawn = members[rng.integers(0, len(members), (replicates, n_anchors))].reshape(replicates, -1)
        padding = drawn < 0
        index = np.where(padding, 0, drawn)
        # A group's Spearman runs over the pairs it rated in the pilot: NaN marks the rest, and the padding.
        unrated = {group: padding | ~np.isfinite(means[group][index]) for group in groups}
        cm_ranks = {group: [_ranks(np.where(unrated[group], np.nan, cm[row][index])) for row in range(len(grid))]
                    for group in groups}
        for n_raters in raters:
            chosen = {}
            for group in groups:
                noise = rng.choice(residuals[group], size=index.shape + (n_raters,))
                simulated = np.clip(np.rint(means[group][index][..., None] + noise), scale[0], scale[1]).mean(axis=2)
                chosen[group] = _chosen_w(grid, cm_ranks[group], np.where(unrated[group], np.nan, simulated))
            row = {"anchors": n_anchors, "raters_per_pair": n_raters,
                   "pairs": int((~padding).sum(axis=1).mean()),
                   "ratings": int((~padding).sum(axis=1).mean()) * n_raters}
            for group in groups:
                low, high = np.quantile(chosen[group], [0.025, 0.975])
                row[f"halfwidth_{group}"] = float((high - low) / 2)
            if len(groups) == 2:
                spread = float(np.std(chosen[groups[0]] - chosen[groups[1]], ddof=1))
                row["difference_sd"] = spread
                row["power"] = _power(spread)
            rows.append(row)
    table = pd.DataFrame(rows)
    precise = np.all([table[f"halfwidth_{g}"] <= PRECISION_TARGET + 1e-9 for g in groups], axis=0)
    powered = table["power"] >= POWER_TARGET if "power" in table else np.zeros(len(table), dtype=bool)
    return Plan(table, _cheapest(table, precise), _cheapest(table, powered), groups,
                int(len(members)), replicates)


def _power(spread: float) -> float:
    """Chance that a 95% interval of the difference excludes 0 when the true difference is the target."""
    if not spread > 0:
        return 1.0
    shift = DIFFERENCE_TARGET / spread
    return float(ndtr(shift - 1.959964) + ndtr(-shift - 1.959964))


def _cheapest(table: pd.DataFrame, meets) -> dict | None:
    """The design with the fewest ratings among those meeting a target (fewer anchors on a tie)."""
    candidates = table[np.asarray(meets, dtype=bool)]
    if len(candidates) == 0:
        return None
    best = candidates.sort_values(["ratings", "anchors"]).iloc[0]
    return {key: int(best[key]) for key in ("anchors", "raters_per_pair", "pairs", "ratings")}


# --------------------------------------------------------------------------
# Comparative (2AFC) designs against Likert ratings: judgments needed to pin w
# --------------------------------------------------------------------------

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
    members = _anchor_members(pairs["anchor"].to_numpy())
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
    cm_ranks = [_ranks(np.where(np.isnan(human), np.nan, np.broadcast_to(cm_drawn[g], human.shape)))
                for g in range(len(grid))]
    return _chosen_w(grid, cm_ranks, human)


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
    means, residuals = _pilot_frames(pairs, ratings.assign(group=group), (group,))
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
