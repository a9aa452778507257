"""Do artists and lay raters weigh semantics against style differently?

For one protocol question, each group's w is chosen as calibration chooses
it (the grid w with the highest Spearman ρ of CM_w against the group's mean
rating, on all pairs), and the difference ``w_artists − w_lay`` gets a
*paired* bootstrap interval: every resample of anchors is applied to both
groups at once, so what the two groups share (the anchors, their images and
their distances) is held together. Only anchors that both groups rated take
part, so the groups are compared on the same images. Each w is refined
between grid points (see :func:`cpdm.analysis.calibration.refine_w_columns`):
were it left on the grid, both groups would mostly pick the same grid point
and the interval of the difference would hold 0 far more often than its
nominal level.

Each w is also read as ``w_std``, the weight on the log distances
standardised by their spread over the reference pairs
(:class:`cpdm.metric.LogSpreads`): the scale-free number to say which group
weighs content more. Both groups share the backbones, hence the spreads, so
w and w_std order the groups alike; the difference in w_std gets its paired
interval from the same resamples, each resample's choices converted first.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from cpdm.analysis.calibration import (
    MAX_STEP,
    check_calibration_pairs,
    choice_bootstrap,
    distance_grid,
    log_spreads_of,
    reference_grid_of,
    w_std_interval,
    weight_grid,
)
from cpdm.analysis.resampling import DEFAULT_RESAMPLE, make_resamples
from cpdm.errors import CpdmError
from cpdm.metric import LogSpreads

NAN_INTERVAL = (float("nan"), float("nan"))

COMPARED_GROUPS = ("artists", "lay")


@dataclass
class GroupComparison:
    """Each group's w with its interval, their difference with its paired interval, and the ρ(w) curves."""

    question: str
    groups: tuple[str, str]
    chosen_w: dict[str, float]
    w_ci: dict[str, tuple[float, float]]
    difference: float                       # w of the first group minus w of the second
    difference_ci: tuple[float, float]
    curves: dict[str, pd.DataFrame]         # per group: w, rho, ci_low, ci_high
    n_anchors: int
    n_pairs: dict[str, int]
    interval: str
    spreads: LogSpreads | None = None       # the log spreads behind w_std (None: w_std undefined)
    difference_std_ci: tuple[float, float] = field(default=NAN_INTERVAL)
    # "spearman": w from ratings (curves have a rho column, counts are pairs); "2afc": from comparative
    # judgments (a score column, counts are triplets; see cpdm.analysis.two_afc_calibration).
    statistic: str = "spearman"

    @property
    def unit(self) -> str:
        """What the counts count: pairs, or triplets for 2AFC."""
        return "triplets" if self.statistic == "2afc" else "pairs"

    @property
    def w_std(self) -> dict[str, float]:
        """Each group's w as a weight on the standardised log distances (NaN without spreads)."""
        return {group: float(self.spreads.w_std(w)) if self.spreads else float("nan")
                for group, w in self.chosen_w.items()}

    @property
    def w_std_ci(self) -> dict[str, tuple[float, float]]:
        """Each group's interval of w, converted end by end."""
        return {group: w_std_interval(self.spreads, interval) for group, interval in self.w_ci.items()}

    @property
    def difference_std(self) -> float:
        """w_std of the first group minus w_std of the second."""
        first, second = self.groups
        return self.w_std[first] - self.w_std[second]

    def row(self) -> dict:
        """One row of the comparison table: w_std, then w, each with its interval, and their differences."""
        first, second = self.groups
        row = {"question": self.question}
        for group in self.groups:
            row[f"w_std_{group}"] = self.w_std[group]
            row[f"w_std_{group}_ci_low"], row[f"w_std_{group}_ci_high"] = self.w_std_ci[group]
        row[f"w_std difference ({first} - {second})"] = self.difference_std
        row["w_std_difference_ci_low"], row["w_std_difference_ci_high"] = self.difference_std_ci
        for group in self.groups:
            row[f"w_{group}"] = self.chosen_w[group]
            row[f"w_{group}_ci_low"], row[f"w_{group}_ci_high"] = self.w_ci[group]
        row[f"difference ({first} - {second})"] = self.difference
        row["difference_ci_low"], row["difference_ci_high"] = self.difference_ci
        row["anchors"] = self.n_anchors
        for group in self.groups:
            row[f"{self.unit}_{group}"] = self.n_pairs[group]
        row["interval"] = self.interval
        return row

    def screen_row(self) -> dict:
        """One row of the table a page shows: each estimate with its interval in one cell, the pair counts in one.

        Narrow enough for a laptop screen; the interval's description, the same
        for every row, goes beside the table. ``row()`` keeps every number in
        its own column for downloads.
        """
        first, second = self.groups
        row = {"question": self.question}
        for group in self.groups:
            row[f"w_std {group} (w)"] = (f"{with_interval(self.w_std[group], self.w_std_ci[group])} "
                                         f"(w {round(self.chosen_w[group], 3):g})")
        row[f"{first} − {second}, w_std"] = with_interval(self.difference_std, self.difference_std_ci)
        row["anchors"] = self.n_anchors
        row[f"{self.unit} ({first} / {second})"] = " / ".join(str(self.n_pairs[group]) for group in self.groups)
        return row

    def headline(self) -> str:
        """One line: each group's w_std and w with intervals, and the difference in w_std."""
        first, second = self.groups
        groups = "; ".join(f"{group} w_std {with_interval(self.w_std[group], self.w_std_ci[group])} "
                           f"(w {with_interval(self.chosen_w[group], self.w_ci[group])})" for group in self.groups)
        return (f"{first} vs {second} on '{self.question}': {groups}; {first} − {second} in w_std "
                f"{with_interval(self.difference_std, self.difference_std_ci)}")


def with_interval(value: float, interval: tuple[float, float]) -> str:
    """``value [low, high]``, each to at most three decimals: exact for every grid step (0.05, 0.025, 0.01)."""
    low, high = (f"{round(bound, 3):g}" for bound in interval)
    return f"{round(value, 3):g} [{low}, {high}]"


def compare_groups(
    pairs: pd.DataFrame,
    human_columns: dict[str, str],
    reference: pd.DataFrame | None = None,
    question: str = "copy",
    step: float = MAX_STEP,
    n_boot: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
    resample: str = DEFAULT_RESAMPLE,
) -> GroupComparison:
    """Compare two groups' w on ``pairs`` (anchor, m_sem, m_style and one score column per group).

    ``human_columns`` maps each of the two groups, in order, to its score
    column; pairs a group did not rate have NaN there.
    """
    if len(human_columns) != 2:
        raise CpdmError("the group comparison needs exactly two rater groups")
    groups = tuple(human_columns)
    scored = pairs.dropna(subset=["m_sem", "m_style"])
    common = set.intersection(*(set(scored.loc[scored[column].notna(), "anchor"]) for column in human_columns.values()))
    data = scored[scored["anchor"].isin(common)].reset_index(drop=True)
    if len(common) < 2:
        raise CpdmError(f"comparing {groups[0]} with {groups[1]} needs anchors that both groups rated; "
                        f"{len(common)} found")
    grid = weight_grid(step)
    reference_grid = reference_grid_of(reference, grid)
    spreads = log_spreads_of(reference, data)[0]
    distances = distance_grid(data["m_sem"].to_numpy(), data["m_style"].to_numpy(), grid)
    # One set of resamples for both groups: the interval of the difference is paired.
    # seed + 1, as calibration: on the same anchors a group gets the same interval for w in both places.
    resamples = make_resamples(data["anchor"].to_numpy(), n_boot, seed + 1, resample)
    chosen, w_ci, w_boot, curves, n_pairs = {}, {}, {}, {}, {}
    for group, column in human_columns.items():
        rated = data[column].notna().to_numpy()
        check_calibration_pairs(data[rated].rename(columns={column: "human"}))
        choice = choice_bootstrap(grid, distances[:, rated], data.loc[rated, column].to_numpy(dtype=np.float64),
                                  reference_grid, resamples.subset(rated))
        chosen[group], w_boot[group], n_pairs[group] = choice.chosen_w, choice.w_boot, int(rated.sum())
        w_ci[group] = resamples.interval(choice.w_boot, confidence)
        bands = np.array([resamples.interval(row, confidence) for row in choice.rho_boot]).reshape(len(grid), 2)
        curves[group] = pd.DataFrame({"w": grid, "rho": choice.rho, "ci_low": bands[:, 0], "ci_high": bands[:, 1]})
    first, second = groups
    return GroupComparison(
        question=question,
        groups=groups,
        chosen_w=chosen,
        w_ci=w_ci,
        difference=chosen[first] - chosen[second],
        difference_ci=resamples.interval(w_boot[first] - w_boot[second], confidence),
        curves=curves,
        n_anchors=len(common),
        n_pairs=n_pairs,
        interval=resamples.describe(confidence),
        spreads=spreads,
        difference_std_ci=(resamples.interval(spreads.w_std(w_boot[first]) - spreads.w_std(w_boot[second]),
                                              confidence) if spreads else NAN_INTERVAL),
    )
