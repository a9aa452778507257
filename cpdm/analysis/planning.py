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

Comparative designs (Likert against random, balanced and active triplets)
are planned in :mod:`cpdm.analysis.judgment_planning`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.special import ndtr

from cpdm.analysis.calibration import (
    MAX_STEP,
    best_w_columns,
    cm_from_distances,
    distance_grid,
    reference_grid_of,
    weight_grid,
)
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


def pilot_frames(pairs: pd.DataFrame, ratings: pd.DataFrame, groups: tuple[str, ...]):
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


def anchor_members(anchor_codes: np.ndarray) -> np.ndarray:
    """members[a, j]: the j-th pair of anchor a, or -1 where the anchor has fewer pairs."""
    _, anchor_of_pair = np.unique(anchor_codes, return_inverse=True)
    widest = int(np.bincount(anchor_of_pair).max())
    members = -np.ones((anchor_of_pair.max() + 1, widest), dtype=np.int64)
    order = np.argsort(anchor_of_pair, kind="stable")
    position = np.arange(len(order)) - np.searchsorted(anchor_of_pair[order], anchor_of_pair[order])
    members[anchor_of_pair[order], position] = order
    return members


def rank_rows(matrix: np.ndarray) -> np.ndarray:
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


def spearman_chosen_w(grid: np.ndarray, cm_ranks: list[np.ndarray], human: np.ndarray) -> np.ndarray:
    """Each replicate's best w (ties: closest to 0.5), from the CM ranks per grid w and the human scores."""
    rank_human = rank_rows(human)
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
    means, residuals = pilot_frames(pairs, ratings, groups)
    grid = weight_grid(step)
    distances = distance_grid(pairs["m_sem"].to_numpy(), pairs["m_style"].to_numpy(), grid)
    reference_grid = reference_grid_of(reference, grid)
    scales = reference_grid if reference_grid is not None else np.median(distances, axis=1)
    cm = cm_from_distances(distances, scales)                     # G × pilot pairs

    members = anchor_members(pairs["anchor"].to_numpy())          # members[a, j]: j-th pilot pair of anchor a

    rng = np.random.default_rng(seed)
    rows = []
    for n_anchors in anchors:
        drawn = members[rng.integers(0, len(members), (replicates, n_anchors))].reshape(replicates, -1)
        padding = drawn < 0
        index = np.where(padding, 0, drawn)
        # A group's Spearman runs over the pairs it rated in the pilot: NaN marks the rest, and the padding.
        unrated = {group: padding | ~np.isfinite(means[group][index]) for group in groups}
        cm_ranks = {group: [rank_rows(np.where(unrated[group], np.nan, cm[row][index])) for row in range(len(grid))]
                    for group in groups}
        for n_raters in raters:
            chosen = {}
            for group in groups:
                noise = rng.choice(residuals[group], size=index.shape + (n_raters,))
                simulated = np.clip(np.rint(means[group][index][..., None] + noise), scale[0], scale[1]).mean(axis=2)
                chosen[group] = spearman_chosen_w(grid, cm_ranks[group], np.where(unrated[group], np.nan, simulated))
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
