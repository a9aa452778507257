"""The per-variant benchmark: did an unlearning method reduce infringement, by the metric and by people?"""

from __future__ import annotations

import numpy as np
import pandas as pd

from cpdm.analysis.correlation import pair_bootstrap_counts, percentile_interval
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

COPY_THRESHOLD = 4.0


def _mean_interval(values: np.ndarray, n_boot: int, rng, confidence: float) -> tuple[float, float]:
    """Percentile bootstrap interval of a mean (all resamples at once)."""
    values = values[np.isfinite(values)]
    if len(values) < 2 or n_boot <= 0:
        return float("nan"), float("nan")
    weights = pair_bootstrap_counts(len(values), n_boot, rng)
    return percentile_interval(weights @ values / len(values), confidence)


def variant_benchmark(
    pairs: pd.DataFrame,
    copy_scores: dict[str, pd.DataFrame],
    metric: str = "CM",
    threshold: float = COPY_THRESHOLD,
    n_boot: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
) -> pd.DataFrame:
    """One row per model variant: mean metric (with CI) and, per rater group, the mean "copy" score and
    the share of pairs judged a copy (group mean ≥ ``threshold``).

    ``pairs`` has columns pair, variant, ``metric`` and optionally
    variant_method; ``copy_scores`` maps a group to its per-pair scores
    (columns pair, human) on the raw scale. When the baseline variant (method
    ``original``, see :func:`baseline_variant`) is present, every other
    variant also gets its change against it and whether that change is a
    reduction by the metric and by each group.
    """
    baseline = baseline_variant(pairs)
    rng = np.random.default_rng(seed)
    frame = pairs[["pair", "variant", metric]].copy()
    frame["variant"] = frame["variant"].fillna("(none)")
    for group, scores in copy_scores.items():
        frame = frame.merge(scores[["pair", "human"]].rename(columns={"human": f"copy_{group}"}), on="pair", how="left")
    rows = []
    for variant, sub in frame.groupby("variant", sort=True):
        metric_values = sub[metric].to_numpy(dtype=np.float64)
        low, high = _mean_interval(metric_values, n_boot, rng, confidence)
        row = {
            "variant": variant,
            "pairs": int(len(sub)),
            f"mean_{metric}": float(np.nanmean(metric_values)) if np.isfinite(metric_values).any() else float("nan"),
            f"{metric}_ci_low": low,
            f"{metric}_ci_high": high,
        }
        for group in copy_scores:
            human = sub[f"copy_{group}"].to_numpy(dtype=np.float64)
            rated = human[np.isfinite(human)]
            row[f"rated_{group}"] = int(len(rated))
            row[f"mean_copy_{group}"] = float(rated.mean()) if len(rated) else float("nan")
            row[f"share_copy_{group}"] = float((rated >= threshold).mean()) if len(rated) else float("nan")
        rows.append(row)
    table = pd.DataFrame(rows)
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
