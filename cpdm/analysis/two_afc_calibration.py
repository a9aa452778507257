"""Calibrating w of CM_w against 2AFC judgments: the w whose CM_w sides with the raters most often.

The machinery is :mod:`cpdm.analysis.calibration`'s (the grid, x_ref(w),
the folds grouped by anchor, the refinement of the best grid w by a
parabola, the anchor resamples, w_std); only the statistic differs. Where a
rating campaign maximises Spearman ρ of CM_w with the mean rating, a 2AFC
campaign maximises the mean 2AFC score of CM_w (:mod:`cpdm.analysis.two_afc`)
over triplets:

1. Folds group triplets by anchor (no anchor in both fit and test). x_ref(w)
   comes from the reference pairs, else from the fit folds' own pairs.
2. Each fold's w maximises the 2AFC score on its fit triplets; its test
   triplets are scored with CM at that w. The out-of-fold score pools them.
3. The exported w maximises the score on all triplets; its interval repeats
   that choice on every resample of anchors (with x_ref held at the full
   data's when it comes from the campaign's own pairs).
4. w_std, the per-group w and the artists − lay difference with a paired
   interval follow as for ratings (:mod:`cpdm.analysis.groups`).

``triplets`` frames here have ``anchor``, ``p`` and the two pairs' distances
``first_m_sem``, ``first_m_style``, ``second_m_sem``, ``second_m_style``
(:func:`cpdm.analysis.two_afc.with_pair_values`), plus ``first_pair`` and
``second_pair``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from cpdm.analysis.calibration import (
    MAX_STEP,
    PAPER_W,
    CalibrationResult,
    ChoiceBootstrap,
    best_w,
    best_w_columns,
    cm_at_w,
    cm_from_distances,
    distance_grid,
    grouped_folds,
    log_spreads_of,
    reference_grid_of,
    w_std_interval,
    w_std_stats,
    weight_grid,
)
from cpdm.analysis.groups import NAN_INTERVAL, GroupComparison
from cpdm.analysis.resampling import DEFAULT_RESAMPLE, Resamples, make_resamples
from cpdm.analysis.two_afc import two_afc_scores
from cpdm.errors import CpdmError

MIN_TRIPLETS = 10
DISTANCE_COLUMNS = ["first_m_sem", "first_m_style", "second_m_sem", "second_m_style"]


def check_triplets(data: pd.DataFrame) -> None:
    """Refuse data calibration cannot use: too few scored triplets, or raters undecided on every one."""
    if len(data) < MIN_TRIPLETS:
        raise CpdmError(f"calibration needs at least {MIN_TRIPLETS} triplets that are both scored and judged; "
                        f"got {len(data)}")
    if np.all(data["p"].to_numpy(dtype=np.float64) == 0.5):
        raise CpdmError("raters split evenly on every triplet; there is nothing to calibrate against")


def campaign_pair_distances(data: pd.DataFrame) -> pd.DataFrame:
    """The distinct pairs of the triplets with their distances (columns pair, m_sem, m_style)."""
    sides = [data[[f"{side}_pair", f"{side}_m_sem", f"{side}_m_style"]].set_axis(["pair", "m_sem", "m_style"], axis=1)
             for side in ("first", "second")]
    return pd.concat(sides, ignore_index=True).drop_duplicates("pair").reset_index(drop=True)


def _distances(data: pd.DataFrame, grid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """D_w of the first and of the second pair of every triplet (each G × n)."""
    return (distance_grid(data["first_m_sem"].to_numpy(), data["first_m_style"].to_numpy(), grid),
            distance_grid(data["second_m_sem"].to_numpy(), data["second_m_style"].to_numpy(), grid))


def score_rows(p: np.ndarray, first: np.ndarray, second: np.ndarray, scales: np.ndarray) -> np.ndarray:
    """Per-triplet 2AFC score of CM_w for every grid row (G × n), x_ref(w) = ``scales``."""
    cm_first, cm_second = cm_from_distances(first, scales), cm_from_distances(second, scales)
    return two_afc_scores(np.broadcast_to(p, cm_first.shape), cm_first, cm_second)


def resampled_means(rows: np.ndarray, resamples: Resamples) -> np.ndarray:
    """The mean of each row (G × n) in every resample (G × B)."""
    weights = resamples.weights
    return rows @ weights.T / weights.sum(axis=1)


def _scales(pairs: pd.DataFrame, grid: np.ndarray, reference_grid) -> np.ndarray:
    """x_ref(w): the reference pairs' when known, else the median of D_w over these pairs."""
    if reference_grid is not None:
        return reference_grid
    return np.median(distance_grid(pairs["m_sem"].to_numpy(), pairs["m_style"].to_numpy(), grid), axis=1)


def choice_bootstrap_2afc(grid, data: pd.DataFrame, reference_grid, resamples: Resamples | None) -> ChoiceBootstrap:
    """The choice of w on all triplets (best mean 2AFC score), repeated on every resample of anchors."""
    first, second = _distances(data, grid)
    scales = _scales(campaign_pair_distances(data), grid, reference_grid)
    rows = score_rows(data["p"].to_numpy(dtype=np.float64), first, second, scales)
    curve = rows.mean(axis=1)
    chosen = best_w(grid, curve)
    if resamples is None or resamples.n_boot == 0:
        return ChoiceBootstrap(curve, scales, chosen, np.empty((len(grid), 0)), np.empty(0))
    boot = resampled_means(rows, resamples)
    return ChoiceBootstrap(curve, scales, chosen, boot, best_w_columns(grid, boot))


def _cm_pairs_at(w, data, fit, reference_pairs):
    """CM at w of the first and second pairs of ``data``, x_ref from the reference or the ``fit`` triplets' pairs."""
    scale = reference_pairs
    if scale is None:
        own = campaign_pair_distances(fit)
        scale = (own["m_sem"].to_numpy(), own["m_style"].to_numpy())
    cm_first, x_ref = cm_at_w(w, data["first_m_sem"].to_numpy(), data["first_m_style"].to_numpy(), *scale)
    cm_second, _ = cm_at_w(w, data["second_m_sem"].to_numpy(), data["second_m_style"].to_numpy(), *scale)
    return cm_first, cm_second, x_ref


def _cross_validate(grid, data, folds, n_folds, reference_grid, reference_pairs):
    """Out-of-fold per-triplet scores for every w (G × n), at each fold's chosen w (n), and the folds' w and score."""
    first, second = _distances(data, grid)
    p = data["p"].to_numpy(dtype=np.float64)
    oof = np.empty_like(first)
    calibrated = np.empty(len(data))
    fold_w, fold_score = [], []
    for fold in range(n_folds):
        test = folds == fold
        fit = ~test
        scales = _scales(campaign_pair_distances(data[fit]), grid, reference_grid)
        chosen = best_w(grid, score_rows(p[fit], first[:, fit], second[:, fit], scales).mean(axis=1))
        oof[:, test] = score_rows(p[test], first[:, test], second[:, test], scales)
        cm_first, cm_second, _ = _cm_pairs_at(chosen, data[test], data[fit], reference_pairs)
        calibrated[test] = two_afc_scores(p[test], cm_first, cm_second)
        fold_w.append(chosen)
        fold_score.append(float(calibrated[test].mean()) if test.any() else float("nan"))
    return oof, calibrated, fold_w, fold_score


def usable_triplets(triplets: pd.DataFrame) -> pd.DataFrame:
    """The triplets with both pairs scored and a p."""
    return triplets.dropna(subset=[*DISTANCE_COLUMNS, "p"]).reset_index(drop=True)


def calibrate_2afc(
    triplets: pd.DataFrame,
    reference: pd.DataFrame | None = None,
    step: float = MAX_STEP,
    n_folds: int = 5,
    n_boot: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
    resample: str = DEFAULT_RESAMPLE,
) -> CalibrationResult:
    """Choose w for CM_w from 2AFC ``triplets`` (see the module docstring); a CalibrationResult with statistic 2afc.

    Its curve has columns w, score_all, score_oof, ci_low, ci_high, x_ref,
    all_ci_low, all_ci_high, w_std; its summary setting, w, w_std, w_ci_low,
    w_ci_high, w_std_ci_low, w_std_ci_high, score, ci_low, ci_high; its
    ``out_of_fold`` the calibrated 2AFC score of each triplet.
    """
    data = usable_triplets(triplets)
    check_triplets(data)
    grid = weight_grid(step)
    anchors = data["anchor"].to_numpy()
    folds = grouped_folds(anchors, n_folds, seed)
    reference_grid = reference_grid_of(reference, grid)
    source = "reference pairs" if reference_grid is not None else "campaign pairs"
    own_pairs = campaign_pair_distances(data)
    spreads, spreads_source, no_spreads = log_spreads_of(reference, own_pairs)
    reference_pairs = ((reference["m_sem"].to_numpy(dtype=np.float64), reference["m_style"].to_numpy(dtype=np.float64))
                       if reference_grid is not None else None)
    oof, calibrated, fold_w, fold_score = _cross_validate(grid, data, folds, n_folds, reference_grid, reference_pairs)

    resamples = make_resamples(anchors, n_boot, seed + 1, resample) if n_boot > 0 else None
    choice = choice_bootstrap_2afc(grid, data, reference_grid, resamples)
    chosen_w = choice.chosen_w
    cm_first, cm_second, x_ref = _cm_pairs_at(chosen_w, data, data, reference_pairs)
    score_at_w = float(np.mean(two_afc_scores(data["p"].to_numpy(dtype=np.float64), cm_first, cm_second)))
    interval = resamples.describe(confidence) if resamples is not None else "none"

    def spread(values) -> tuple[float, float]:
        return resamples.interval(values, confidence) if resamples is not None else NAN_INTERVAL

    oof_boot = (resampled_means(np.vstack([oof, calibrated[None, :]]), resamples) if resamples is not None
                else np.full((len(grid) + 1, 0), np.nan))
    score_oof = oof.mean(axis=1)
    curve_rows = []
    for row, w in enumerate(grid):
        low, high = spread(oof_boot[row])
        all_low, all_high = spread(choice.rho_boot[row])
        curve_rows.append({"w": float(w), "score_all": float(choice.rho[row]), "score_oof": float(score_oof[row]),
                           "ci_low": low, "ci_high": high, "x_ref": float(choice.scales[row]),
                           "all_ci_low": all_low, "all_ci_high": all_high})
    curve = pd.DataFrame(curve_rows)
    curve["w_std"] = spreads.w_std(grid) if spreads else np.nan

    w_ci = spread(choice.w_boot)
    calibrated_score = float(calibrated.mean())
    low, high = spread(oof_boot[-1])
    nan = float("nan")
    summary_rows = [{"setting": "calibrated (out-of-fold)", "w": chosen_w, "w_ci_low": w_ci[0], "w_ci_high": w_ci[1],
                     "score": calibrated_score, "ci_low": low, "ci_high": high}]
    for label, w in (("paper w=0.5", PAPER_W), ("semantic only w=1", 1.0), ("style only w=0", 0.0)):
        point = curve.iloc[int(np.argmin(np.abs(grid - w)))]
        summary_rows.append({"setting": label, "w": w, "w_ci_low": nan, "w_ci_high": nan, "score": point["score_oof"],
                             "ci_low": point["ci_low"], "ci_high": point["ci_high"]})
    summary = pd.DataFrame(summary_rows)
    summary.insert(2, "w_std", spreads.w_std(summary["w"].to_numpy()) if spreads else np.nan)
    w_std_ci = w_std_interval(spreads, w_ci)
    summary.insert(5, "w_std_ci_low", [w_std_ci[0]] + [nan] * (len(summary) - 1))
    summary.insert(6, "w_std_ci_high", [w_std_ci[1]] + [nan] * (len(summary) - 1))

    stats = {
        "judgment_kind": "2afc",
        "w_ci": list(w_ci),
        "two_afc_oof": calibrated_score,
        "two_afc_oof_ci": [low, high],
        "two_afc_all_at_w": score_at_w,
        "two_afc_fold_mean": float(np.nanmean(fold_score)),
        "fold_w": fold_w,
        "baselines": {row["setting"]: {"w": row["w"], "two_afc_oof": row["score"], "ci": [row["ci_low"], row["ci_high"]]}
                      for row in summary_rows[1:]},
        "folds": n_folds,
        "grid_step": step,
        "bootstrap": interval,
        "w_interval": "the whole choice of w (best 2AFC score on all triplets) repeated on every resample; " + interval,
        "x_ref_source": source,
        "selection": "w maximising the mean 2AFC score on all triplets; out-of-fold figures from grouped-by-anchor CV",
        **w_std_stats(spreads, spreads_source, no_spreads, chosen_w, w_ci),
    }
    return CalibrationResult(
        grid=grid, chosen_w=chosen_w, x_ref=x_ref, x_ref_source=source, curve=curve, summary=summary,
        fold_w=fold_w, fold_rho=fold_score, n_pairs=int(len(data)), n_anchors=int(len(np.unique(anchors))),
        n_folds=n_folds, n_boot=n_boot, w_ci=w_ci, interval=interval, stats=stats,
        out_of_fold=pd.Series(calibrated, index=data.index), spreads=spreads, spreads_source=spreads_source,
        statistic="2afc",
    )


def compare_groups_2afc(
    by_group: dict[str, pd.DataFrame],
    reference: pd.DataFrame | None = None,
    question: str = "copy",
    step: float = MAX_STEP,
    n_boot: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
    resample: str = DEFAULT_RESAMPLE,
) -> GroupComparison:
    """Two groups' w by 2AFC score, and their difference with a paired interval over the anchors both judged.

    ``by_group`` maps each of two groups, in order, to its scored triplets
    (p from that group's judgments only). As :func:`cpdm.analysis.groups.compare_groups`.
    """
    if len(by_group) != 2:
        raise CpdmError("the group comparison needs exactly two rater groups")
    groups = tuple(by_group)
    usable = {group: usable_triplets(frame) for group, frame in by_group.items()}
    common = set.intersection(*(set(frame["anchor"]) for frame in usable.values()))
    if len(common) < 2:
        raise CpdmError(f"comparing {groups[0]} with {groups[1]} needs anchors that both groups judged; "
                        f"{len(common)} found")
    # One row per (group, triplet) on the common anchors; one set of anchor resamples for both groups.
    rows = pd.concat([frame[frame["anchor"].isin(common)].assign(_group=group) for group, frame in usable.items()],
                     ignore_index=True)
    grid = weight_grid(step)
    reference_grid = reference_grid_of(reference, grid)
    spreads = log_spreads_of(reference, campaign_pair_distances(rows))[0]
    resamples = make_resamples(rows["anchor"].to_numpy(), n_boot, seed + 1, resample)
    chosen, w_ci, w_boot, curves, n_triplets = {}, {}, {}, {}, {}
    for group in groups:
        mine = (rows["_group"] == group).to_numpy()
        data = rows[mine].reset_index(drop=True)
        check_triplets(data)
        choice = choice_bootstrap_2afc(grid, data, reference_grid, resamples.subset(mine))
        chosen[group], w_boot[group], n_triplets[group] = choice.chosen_w, choice.w_boot, int(mine.sum())
        w_ci[group] = resamples.interval(choice.w_boot, confidence)
        bands = np.array([resamples.interval(row, confidence) for row in choice.rho_boot]).reshape(len(grid), 2)
        curves[group] = pd.DataFrame({"w": grid, "score": choice.rho, "ci_low": bands[:, 0], "ci_high": bands[:, 1]})
    first, second = groups
    return GroupComparison(
        question=question, groups=groups, chosen_w=chosen, w_ci=w_ci, difference=chosen[first] - chosen[second],
        difference_ci=resamples.interval(w_boot[first] - w_boot[second], confidence), curves=curves,
        n_anchors=len(common), n_pairs=n_triplets, interval=resamples.describe(confidence), spreads=spreads,
        difference_std_ci=(resamples.interval(spreads.w_std(w_boot[first]) - spreads.w_std(w_boot[second]),
                                              confidence) if spreads else NAN_INTERVAL),
        statistic="2afc",
    )
