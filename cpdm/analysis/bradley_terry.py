"""Bradley–Terry strengths of "copy-ness" from 2AFC choices, fitted with ``choix``.

Under the Bradley–Terry model, the chance that item i is judged more of a
copy than item j is ``1 / (1 + exp(−(θ_i − θ_j)))``. The θ (log-strengths)
are fitted by maximum likelihood with ``choix.ilsr_pairwise_dense`` on a
matrix of wins, with a small regularisation (``ALPHA``: it keeps an item that
always or never wins finite). A "can't tell" counts half a win to each side,
as in p (:mod:`cpdm.analysis.judgments`). θ is centred (mean 0 over the
items), so only differences mean something: a higher strength = judged more
of a copy.

Two fits:

- per **variant** across anchors: items are model variants, every triplet
  whose two generations come from different variants is one comparison per
  judgment (triplets within one variant say nothing about variants). The
  interval bootstraps anchors (all of an anchor's triplets resampled
  together), refitting on every resample: the human answer to "which
  unlearning method stopped copying".
- per **generation** within each anchor: items are that anchor's
  generations. One anchor cannot be resampled over anchors, so its
  interval resamples its triplets instead (the ``interval`` column says so).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from cpdm.analysis.resampling import DEFAULT_RESAMPLE, describe_intervals, make_resamples
from cpdm.errors import CpdmError

ALPHA = 0.01  # choix's regularisation: the prior rate of every transition of the LSR chain


def win_counts(triplets: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """(first's wins, second's wins) per triplet: its choices with each "can't tell" as half a win to each side."""
    half = 0.5 * triplets["n_cant_tell"].to_numpy(dtype=np.float64)
    return triplets["n_first"].to_numpy(dtype=np.float64) + half, triplets["n_second"].to_numpy(dtype=np.float64) + half


def fit_strengths(wins: np.ndarray, alpha: float = ALPHA, start: np.ndarray | None = None,
                  tol: float = 1e-9) -> np.ndarray:
    """Centred log-strengths from a wins matrix (``wins[i, j]``: times i was judged more of a copy than j).

    ``start`` (log-strengths) warm-starts the iterations: a bootstrap refit
    starts from the fit on all the data and converges in a few steps.
    ``tol`` is choix's convergence threshold (the L1 change of the
    strengths between iterations).
    """
    import choix

    wins = np.asarray(wins, dtype=np.float64)
    if wins.shape[0] < 2:
        return np.zeros(wins.shape[0])
    theta = choix.ilsr_pairwise_dense(wins, alpha=alpha, initial_params=start, max_iter=500, tol=tol)
    return theta - theta.mean()


def _wins_by_cluster(item_first, item_second, first_wins, second_wins, cluster, n_items, n_clusters) -> np.ndarray:
    """Wins matrices per cluster (clusters × items × items)."""
    wins = np.zeros((n_clusters, n_items, n_items))
    np.add.at(wins, (cluster, item_first, item_second), first_wins)
    np.add.at(wins, (cluster, item_second, item_first), second_wins)
    return wins


def _strength_table(items, point, boot, comparisons, resamples_interval) -> pd.DataFrame:
    rows = []
    for index, item in enumerate(items):
        low, high = resamples_interval(boot[:, index]) if boot.size else (float("nan"), float("nan"))
        rows.append({"item": item, "strength": float(point[index]), "ci_low": low, "ci_high": high,
                     "comparisons": float(comparisons[index])})
    return pd.DataFrame(rows)


def _boot_fits(wins_by_cluster: np.ndarray, counts: np.ndarray, alpha: float, start: np.ndarray) -> np.ndarray:
    """Strengths refitted on every resample (rows of ``counts``: each cluster's multiplicity), each warm-started
    from ``start`` (the fit on all the data); NaN for items that take part in no comparison of a resample."""
    n_items = wins_by_cluster.shape[1]
    boot = np.full((len(counts), n_items), np.nan)
    for row, multiplicity in enumerate(counts):
        wins = np.tensordot(multiplicity, wins_by_cluster, axes=1)
        seen = (wins + wins.T).sum(axis=1) > 0
        if seen.sum() < 2:
            continue
        # A looser tolerance than the point fit's: 1e-6 in log-strength is far below any interval's width.
        boot[row, seen] = fit_strengths(wins[np.ix_(seen, seen)], alpha, start[seen] - start[seen].mean(), tol=1e-6)
    return boot


def _fit_variants(triplets: pd.DataFrame, n_boot: int, seed: int, resample: str, alpha: float) -> dict:
    """The variants' fit: names, point strengths, their refits on every resample of anchors, and counts."""
    between = triplets.dropna(subset=["first_variant", "second_variant"])
    between = between[between["first_variant"] != between["second_variant"]]
    if len(between) == 0:
        raise CpdmError("no triplet compares generations of two different variants")
    variants = sorted(set(between["first_variant"]) | set(between["second_variant"]))
    item = {name: index for index, name in enumerate(variants)}
    first_wins, second_wins = win_counts(between)
    anchor_codes, cluster = np.unique(between["anchor"].to_numpy(), return_inverse=True)
    wins_by_anchor = _wins_by_cluster(between["first_variant"].map(item).to_numpy(),
                                      between["second_variant"].map(item).to_numpy(), first_wins, second_wins,
                                      cluster, len(variants), len(anchor_codes))
    wins = wins_by_anchor.sum(axis=0)
    point = fit_strengths(wins, alpha)
    boot, resamples = np.empty((0, len(variants))), None
    if n_boot > 0 and len(anchor_codes) >= 2:
        # One entry per anchor: resampling them over anchors (or, with resample="pairs", as single units).
        resamples = make_resamples(anchor_codes, n_boot, seed + 5, resample)
        boot = _boot_fits(wins_by_anchor, resamples.weights, alpha, point)
    anchors = {name: set() for name in variants}
    for first, second, anchor in zip(between["first_variant"], between["second_variant"], between["anchor"]):
        anchors[first].add(anchor)
        anchors[second].add(anchor)
    return {"variants": variants, "point": point, "boot": boot, "resamples": resamples,
            "comparisons": (wins + wins.T).sum(axis=1), "anchors": [len(anchors[name]) for name in variants]}


def variant_strengths(triplets: pd.DataFrame, n_boot: int = 1000, seed: int = 0, confidence: float = 0.95,
                      resample: str = DEFAULT_RESAMPLE, alpha: float = ALPHA) -> pd.DataFrame:
    """Bradley–Terry strength of each variant across anchors, with a bootstrap interval over anchors.

    ``triplets``: :func:`cpdm.analysis.judgments.triplet_choices`. Columns:
    variant, strength (centred log-strength; higher = more of a copy),
    ci_low, ci_high, comparisons (judgments it took part in), anchors,
    interval. Refuses data with no triplet between two variants.
    """
    fit = _fit_variants(triplets, n_boot, seed, resample, alpha)
    resamples = fit["resamples"]
    table = _strength_table(fit["variants"], fit["point"], fit["boot"], fit["comparisons"],
                            lambda values: resamples.interval(values, confidence))
    table = table.rename(columns={"item": "variant"})
    table["anchors"] = fit["anchors"]
    table["interval"] = resamples.describe(confidence) if resamples is not None else "none"
    return table.sort_values("strength", ascending=False, kind="stable").reset_index(drop=True)


def strength_difference(triplets: pd.DataFrame, variant: str, baseline: str, n_boot: int = 1000, seed: int = 0,
                        confidence: float = 0.95, resample: str = DEFAULT_RESAMPLE,
                        alpha: float = ALPHA) -> dict | None:
    """θ(variant) − θ(baseline) from the triplets between the two, with its interval over anchors; None if none.

    The log-odds that a rater judges the variant's generation more of a copy
    than the baseline's: below 0, the variant copies less.
    """
    pair = triplets[triplets["first_variant"].isin([variant, baseline])
                    & triplets["second_variant"].isin([variant, baseline])]
    try:
        fit = _fit_variants(pair, n_boot, seed, resample, alpha)
    except CpdmError:
        return None
    index = {name: i for i, name in enumerate(fit["variants"])}
    if variant not in index or baseline not in index:
        return None
    difference = fit["point"][index[variant]] - fit["point"][index[baseline]]
    low = high = float("nan")
    if fit["resamples"] is not None:
        low, high = fit["resamples"].interval(fit["boot"][:, index[variant]] - fit["boot"][:, index[baseline]],
                                              confidence)
    return {"difference": float(difference), "ci_low": low, "ci_high": high,
            "judgments": float(fit["comparisons"][index[variant]]), "anchors": int(fit["anchors"][index[variant]]),
            "interval": fit["resamples"].describe(confidence) if fit["resamples"] is not None else "none"}


def judged_variant_triplets(ws, variants, anchors=None, include_flagged: bool = False,
                            question: str = "copy") -> tuple[str, pd.DataFrame] | None:
    """(campaign name, triplets between ``variants``) from the 2afc campaign whose judgments cover most of them.

    A campaign covers a variant when an answered normal triplet compares one
    of its generations with another of ``variants`` (on ``anchors``, when
    given); at least two must be covered. None without such a campaign.
    Flagged raters are left out unless ``include_flagged``.
    """
    from cpdm.analysis.judgments import analysis_judgments, covering_2afc_campaign, load_judgments, triplet_choices

    found = covering_2afc_campaign(ws, variants, anchors)
    if found is None:
        return None
    judgments = analysis_judgments(load_judgments(ws, found[0]), include_flagged=include_flagged)
    triplets = triplet_choices(judgments, question)
    wanted = set(variants)
    keep = triplets["first_variant"].isin(wanted) & triplets["second_variant"].isin(wanted)
    if anchors is not None:
        keep &= triplets["anchor"].isin(set(anchors))
    return found[1], triplets[keep].reset_index(drop=True)


def generation_strengths(triplets: pd.DataFrame, n_boot: int = 200, seed: int = 0, confidence: float = 0.95,
                         alpha: float = ALPHA) -> pd.DataFrame:
    """Bradley–Terry strength of each generation within its anchor, with a bootstrap over that anchor's triplets.

    Columns: anchor, generation, variant, strength (centred within the
    anchor), ci_low, ci_high, comparisons, interval.
    """
    frames = []
    for anchor, sub in triplets.groupby("anchor", sort=True):
        generations = sorted(set(sub["first_generation"].dropna()) | set(sub["second_generation"].dropna()))
        if len(generations) < 2:
            continue
        variant_of = dict(zip(sub["first_generation"], sub["first_variant"]))
        variant_of.update(zip(sub["second_generation"], sub["second_variant"]))
        item = {g: index for index, g in enumerate(generations)}
        first_wins, second_wins = win_counts(sub)
        by_triplet = _wins_by_cluster(sub["first_generation"].map(item).to_numpy(),
                                      sub["second_generation"].map(item).to_numpy(), first_wins, second_wins,
                                      np.arange(len(sub)), len(generations), len(sub))
        wins = by_triplet.sum(axis=0)
        point = fit_strengths(wins, alpha)
        boot, interval, resamples = np.empty((0, len(generations))), "none", None
        if n_boot > 0 and len(sub) >= 2:
            resamples = make_resamples(np.arange(len(sub)), n_boot, seed + 6 + int(anchor), "pairs")
            boot = _boot_fits(by_triplet, resamples.weights, alpha, point)
            interval = describe_intervals("pairs", n_boot, confidence).replace("over pairs", "over the anchor's triplets")
        table = _strength_table(generations, point, boot, (wins + wins.T).sum(axis=1),
                                lambda values: resamples.interval(values, confidence))
        table = table.rename(columns={"item": "generation"})
        table.insert(0, "anchor", anchor)
        table.insert(2, "variant", [variant_of.get(g) for g in generations])
        table["interval"] = interval
        frames.append(table)
    columns = ["anchor", "generation", "variant", "strength", "ci_low", "ci_high", "comparisons", "interval"]
    if not frames:
        return pd.DataFrame(columns=columns)
    return pd.concat(frames, ignore_index=True)[columns]
