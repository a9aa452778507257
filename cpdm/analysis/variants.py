"""The per-variant benchmark: did an unlearning method reduce infringement, by the metric and by people?"""

from __future__ import annotations

import numpy as np
import pandas as pd

from cpdm.analysis.resampling import DEFAULT_RESAMPLE, mean_interval
from cpdm.store.workspace import BASELINE_METHOD


def baseline_variant(pairs: pd.DataFrame) -> str | None:
    """The name of the baseline variant among the pairs: the one variant whose method is ``original``.

    None when the frame has no ``variant_method`` column, or holds no
    baseline, or several (then no single one to compare against).
    """
    if "variant_method" not in pairs:
        return None
    names = set(pairs.loc[pairs["variant_method"] == BASELINE_METHOD, "variant"].dropna())
    return names.pop() if len(names) == 1 else None


def copy_threshold(scale: tuple[int, int]) -> float:
    """The mean rating from which a pair counts as "judged a copy" on a question answered on ``scale``.

    The first scale point above the scale's midpoint: 4 on a 1–5 scale, 5 on
    1–7, 6 on 1–9, 3 on 1–4. A pair is judged a copy when its raters lean,
    on average, to the "copy" side of the scale by at least that much.
    """
    low, high = scale
    return float((low + high) // 2 + 1)


def mean_by(frame: pd.DataFrame, column: str, by: str, n_boot: int = 1000, seed: int = 0, confidence: float = 0.95,
            resample: str = DEFAULT_RESAMPLE) -> pd.DataFrame:
    """Per value of ``by`` (sorted): its pairs, the mean of ``column`` and that mean's bootstrap interval.

    Columns ``by``, ``pairs``, ``mean_<column>``, ``<column>_ci_low``,
    ``<column>_ci_high``. NaNs are left out of the mean; the interval
    resamples the group's anchors (``frame["anchor"]``) or, with
    ``resample="pairs"``, its single pairs, the i-th group with seed + i.
    """
    rows = []
    for index, (group, sub) in enumerate(frame.groupby(by, sort=True)):
        values = sub[column].to_numpy(dtype=np.float64)
        low, high = mean_interval(values, sub["anchor"].to_numpy(), n_boot, seed + index, confidence, resample)
        rows.append({
            by: group,
            "pairs": int(len(sub)),
            f"mean_{column}": float(np.nanmean(values)) if np.isfinite(values).any() else float("nan"),
            f"{column}_ci_low": low,
            f"{column}_ci_high": high,
        })
    return pd.DataFrame(rows, columns=[by, "pairs", f"mean_{column}", f"{column}_ci_low", f"{column}_ci_high"])


def variant_benchmark(
    pairs: pd.DataFrame,
    copy_scores: dict[str, pd.DataFrame],
    threshold: float,
    metric: str = "CM",
    n_boot: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
    resample: str = DEFAULT_RESAMPLE,
    also: tuple[str, ...] = (),
) -> pd.DataFrame:
    """One row per model variant: mean metric (with CI) and, per rater group, the mean "copy" score and
    the share of pairs judged a copy (group mean ≥ ``threshold``; see :func:`copy_threshold`).

    The metric's interval resamples the variant's anchors (``resample``).
    ``pairs`` has columns pair, anchor, variant, ``metric`` and optionally
    variant_method; ``also`` names more per-pair columns of ``pairs`` whose
    mean and interval are reported beside the metric's (the release score,
    say). ``copy_scores`` maps a group to its per-pair scores (columns pair,
    human) on the raw scale. When the baseline variant (method
    ``original``, see :func:`baseline_variant`) is present, every other
    variant also gets its change against it and whether that change is a
    reduction by the metric and by each group.
    """
    baseline = baseline_variant(pairs)
    frame = pairs[["pair", "anchor", "variant", metric, *also]].copy()
    frame["variant"] = frame["variant"].fillna("(none)")
    for group, scores in copy_scores.items():
        frame = frame.merge(scores[["pair", "human"]].rename(columns={"human": f"copy_{group}"}), on="pair", how="left")
    table = mean_by(frame, metric, "variant", n_boot, seed, confidence, resample)
    for column in also:
        table = table.merge(mean_by(frame, column, "variant", n_boot, seed, confidence, resample).drop(columns="pairs"),
                            on="variant")
    for group in copy_scores:
        table = table.merge(_copy_columns(frame, group, threshold), on="variant")
    if baseline is not None and len(table):
        # The original model first, then the methods.
        table = pd.concat([table[table["variant"] == baseline], table[table["variant"] != baseline]])
        table = table.reset_index(drop=True)
        base = table.iloc[0]
        table[f"{metric}_change"] = table[f"mean_{metric}"] - base[f"mean_{metric}"]
        table[f"reduced_by_{metric}"] = table[f"{metric}_change"] < 0
        for group in copy_scores:
            table[f"copy_{group}_change"] = table[f"mean_copy_{group}"] - base[f"mean_copy_{group}"]
            table[f"reduced_by_{group}"] = table[f"copy_{group}_change"] < 0
        for column in [c for c in table.columns if c.startswith("reduced_by_")]:
            table.loc[0, column] = False
    return table


def _copy_columns(frame: pd.DataFrame, group: str, threshold: float) -> pd.DataFrame:
    """Per variant: how many pairs the group rated, their mean copy score, and the share judged a copy."""
    rows = []
    for variant, sub in frame.groupby("variant", sort=True):
        human = sub[f"copy_{group}"].to_numpy(dtype=np.float64)
        rated = human[np.isfinite(human)]
        rows.append({
            "variant": variant,
            f"rated_{group}": int(len(rated)),
            f"mean_copy_{group}": float(rated.mean()) if len(rated) else float("nan"),
            f"share_copy_{group}": float((rated >= threshold).mean()) if len(rated) else float("nan"),
        })
    return pd.DataFrame(rows, columns=["variant", f"rated_{group}", f"mean_copy_{group}", f"share_copy_{group}"])
