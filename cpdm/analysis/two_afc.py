"""The BAPPS 2AFC score of a metric, and how well raters agree on 2AFC choices.

2AFC score (Zhang et al. 2018, "The Unreasonable Effectiveness of Deep
Features as a Perceptual Metric", BAPPS): for a triplet where a share ``p``
of raters judged the first pair more of a copy (a "can't tell" counts half
to each side; see :mod:`cpdm.analysis.judgments`), a metric that prefers the
first pair scores ``p``, one that prefers the second scores ``1 − p``, and a
metric that ties them scores 0.5. "Prefers" means a *higher* value: for CM_w
higher = closer to the anchor = more of a copy; distances are negated
(``-m_sem``, ``-m_style``) to read the same way. The score is the mean over
triplets; 1 means the metric always sides with every rater, 0.5 is a coin.
Its interval is a bootstrap over anchors (every triplet of one anchor
resampled together; :mod:`cpdm.analysis.resampling`).

Human agreement:

- Krippendorff's alpha (nominal) on the choices, with triplets as units and
  first / second / can't tell as three nominal values (a "can't tell" is an
  answer of its own, never a side).
- The split-half human agreement, the ceiling a metric can reach: the
  raters of each triplet are split at random into two halves, and one
  half's majority is scored as a metric against the other half's ``p`` (and
  the other way round); averaged over splits, then over triplets. Triplets
  with fewer than two judgments take no part.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from cpdm.analysis.resampling import DEFAULT_RESAMPLE, describe_intervals, make_resamples
from cpdm.errors import CpdmError

NAN_INTERVAL = (float("nan"), float("nan"))


def two_afc_scores(p, first, second) -> np.ndarray:
    """The 2AFC score of each triplet: p where ``first > second``, 1 − p where less, 0.5 on a tie; NaN if unknown.

    ``first``/``second`` are the metric's values of the two pairs (higher =
    more of a copy); either being NaN makes the triplet's score NaN.
    """
    p = np.asarray(p, dtype=np.float64)
    first = np.asarray(first, dtype=np.float64)
    second = np.asarray(second, dtype=np.float64)
    if not (p.shape == first.shape == second.shape):
        raise CpdmError("p and the metric's two values need one entry per triplet each")
    if np.any((p < 0) | (p > 1)):
        raise CpdmError("p must lie in [0, 1] (the share of raters choosing the first pair)")
    score = np.where(first > second, p, np.where(first < second, 1 - p, 0.5))
    return np.where(np.isfinite(first) & np.isfinite(second) & np.isfinite(p), score, np.nan)


@dataclass(frozen=True)
class ScoreResult:
    """A metric's mean 2AFC score, its interval and what it was computed on."""

    score: float
    ci_low: float
    ci_high: float
    triplets: int
    anchors: int
    ties: int          # triplets the metric ties (scored 0.5)


def mean_score(scores, anchors, n_boot: int = 1000, seed: int = 0, confidence: float = 0.95,
               resample: str = DEFAULT_RESAMPLE, resamples=None) -> tuple[float, float, float]:
    """(mean, low, high) of per-triplet scores (NaNs dropped), the interval a bootstrap over anchors.

    ``resamples`` (over the same triplets, in order) lets several metrics share one set of resamples.
    """
    scores = np.asarray(scores, dtype=np.float64)
    anchors = np.asarray(anchors)
    finite = np.isfinite(scores)
    if not finite.any():
        return (float("nan"), *NAN_INTERVAL)
    point = float(scores[finite].mean())
    if resamples is None:
        if finite.sum() < 2 or n_boot <= 0:
            return (point, *NAN_INTERVAL)
        resamples = make_resamples(anchors[finite], n_boot, seed, resample)
    else:
        resamples = resamples.subset(finite)
    if resamples.n_boot == 0:
        return (point, *NAN_INTERVAL)
    weights = resamples.weights
    with np.errstate(invalid="ignore", divide="ignore"):
        boot = weights @ scores[finite] / weights.sum(axis=1)
    return (point, *resamples.interval(boot, confidence))


def score_metric(triplets: pd.DataFrame, first: str, second: str, n_boot: int = 1000, seed: int = 0,
                 confidence: float = 0.95, resample: str = DEFAULT_RESAMPLE, resamples=None) -> ScoreResult:
    """The 2AFC score of the metric in columns ``first``/``second`` of ``triplets`` (with ``p`` and ``anchor``)."""
    scores = two_afc_scores(triplets["p"], triplets[first], triplets[second])
    finite = np.isfinite(scores)
    point, low, high = mean_score(scores, triplets["anchor"].to_numpy(), n_boot, seed, confidence, resample,
                                  resamples)
    ties = int((triplets.loc[finite, first].to_numpy() == triplets.loc[finite, second].to_numpy()).sum())
    return ScoreResult(point, low, high, int(finite.sum()), int(triplets.loc[finite, "anchor"].nunique()), ties)


def with_pair_values(triplets: pd.DataFrame, pairs: pd.DataFrame, columns) -> pd.DataFrame:
    """``triplets`` with ``first_<c>`` and ``second_<c>`` for each column c of ``pairs`` (indexed by its ``pair``)."""
    table = pairs.set_index("pair")[list(columns)]
    out = triplets.copy()
    for side in ("first", "second"):
        values = table.reindex(out[f"{side}_pair"].to_numpy())
        for column in columns:
            out[f"{side}_{column}"] = values[column].to_numpy()
    return out


def score_table(triplets: pd.DataFrame, pairs: pd.DataFrame, metrics: dict[str, str], n_boot: int = 1000,
                seed: int = 0, confidence: float = 0.95, resample: str = DEFAULT_RESAMPLE) -> pd.DataFrame:
    """The 2AFC score of several metrics on the same triplets, one row each, all on one set of anchor resamples.

    ``metrics`` maps a label to a column of ``pairs`` (one row per pair:
    ``pair`` and the metric columns, higher = more of a copy).
    """
    merged = with_pair_values(triplets, pairs, list(dict.fromkeys(metrics.values())))
    resamples = (make_resamples(merged["anchor"].to_numpy(), n_boot, seed + 3, resample)
                 if n_boot > 0 and len(merged) >= 2 else None)
    rows = []
    for label, column in metrics.items():
        result = score_metric(merged, f"first_{column}", f"second_{column}", n_boot, seed, confidence, resample,
                              resamples)
        rows.append({"metric": label, "score": result.score, "ci_low": result.ci_low, "ci_high": result.ci_high,
                     "triplets": result.triplets, "anchors": result.anchors, "ties": result.ties})
    table = pd.DataFrame(rows, columns=["metric", "score", "ci_low", "ci_high", "triplets", "anchors", "ties"])
    table["interval"] = describe_intervals(resample, n_boot, confidence) if resamples is not None else "none"
    return table


def choice_alpha(judgments: pd.DataFrame, question: str, n_boot: int = 1000, seed: int = 0,
                 resample: str = DEFAULT_RESAMPLE):
    """Krippendorff's alpha (nominal) on one question's choices: first = 0, second = 1, can't tell = 2.

    Returns an :class:`cpdm.analysis.agreement.AlphaResult` (units = triplets).
    """
    from cpdm.analysis.agreement import krippendorff_alpha

    sub = judgments[(judgments["question"] == question) & judgments["chosen"].notna()]
    codes = sub["chosen"].map({"first": 0.0, "second": 1.0, "cant_tell": 2.0})
    frame = pd.DataFrame({"pair": sub["triplet"].to_numpy(), "rater": sub["rater"].to_numpy(),
                          "value": codes.to_numpy(), "anchor": sub["anchor"].to_numpy()})
    return krippendorff_alpha(frame, level="nominal", value_domain=[0.0, 1.0, 2.0], n_boot=n_boot, seed=seed,
                              resample=resample)


def agreement_rows(judgments: pd.DataFrame, by_group: dict[str, pd.DataFrame], questions: list[str],
                   n_boot: int = 1000, seed: int = 0, resample: str = DEFAULT_RESAMPLE) -> pd.DataFrame:
    """Alpha (nominal) on choices per question and rater group."""
    rows = []
    for question in questions:
        for group, frame in by_group.items():
            result = choice_alpha(frame, question, n_boot=n_boot, seed=seed, resample=resample)
            rows.append({"question": question, "group": group, "level": "nominal", "alpha": result.alpha,
                         "ci_low": result.ci_low, "ci_high": result.ci_high, "triplets": result.n_units,
                         "triplets_excluded": result.n_excluded, "judgments": result.n_ratings,
                         "raters": result.n_raters, "interval": describe_intervals(resample, n_boot)})
    return pd.DataFrame(rows, columns=["question", "group", "level", "alpha", "ci_low", "ci_high", "triplets",
                                       "triplets_excluded", "judgments", "raters", "interval"])


def _half_p(index: np.ndarray, value: np.ndarray, half: np.ndarray, n: int) -> np.ndarray:
    """p per triplet from one half of its judgments (value: 1 first, 0 second, 0.5 can't tell)."""
    return np.bincount(index[half], value[half], n) / np.bincount(index[half], minlength=n)


def split_half_agreement(judgments: pd.DataFrame, question: str, n_splits: int = 100, seed: int = 0,
                         n_boot: int = 1000, confidence: float = 0.95, resample: str = DEFAULT_RESAMPLE) -> dict:
    """The human-vs-human 2AFC score: one random half of each triplet's raters scored against the other half.

    In each split a triplet's judgments are divided at random into two
    halves; half A's majority choice is scored as a metric against half B's
    p, and B's against A's (:func:`two_afc_scores`; a half split evenly
    scores 0.5). A triplet's agreement is its mean over both directions and
    all splits; the result is the mean over triplets with at least two
    judgments, with an interval over anchors. It is the score a metric that
    judged like one half-panel would reach, the ceiling to read metric scores
    against.
    """
    from cpdm.analysis.correlation import _random_halves

    sub = judgments[(judgments["question"] == question) & judgments["chosen"].notna()]
    codes, index = np.unique(sub["triplet"].to_numpy(), return_inverse=True)
    sizes = np.bincount(index, minlength=len(codes))
    usable = sizes[index] >= 2
    empty = {"agreement": float("nan"), "ci_low": float("nan"), "ci_high": float("nan"), "triplets": 0,
             "splits": 0, "interval": "none"}
    if not usable.any():
        return empty
    index = np.unique(index[usable], return_inverse=True)[1]
    n = int(index.max()) + 1
    value = sub["chosen"].map({"first": 1.0, "second": 0.0, "cant_tell": 0.5}).to_numpy()[usable]
    anchors = sub["anchor"].to_numpy()[usable][np.unique(index, return_index=True)[1]]
    sizes = np.bincount(index)
    rng = np.random.default_rng(seed)
    total = np.zeros(n)
    for _ in range(n_splits):
        in_first = _random_halves(index, sizes, rng)
        p_a, p_b = _half_p(index, value, in_first, n), _half_p(index, value, ~in_first, n)
        # A half's "preference": first when more than half of it chose the first pair.
        total += (two_afc_scores(p_b, p_a, 1 - p_a) + two_afc_scores(p_a, p_b, 1 - p_b)) / 2
    per_triplet = total / n_splits
    point, low, high = mean_score(per_triplet, anchors, n_boot, seed + 4, confidence, resample)
    return {"agreement": point, "ci_low": low, "ci_high": high, "triplets": n, "splits": n_splits,
            "interval": describe_intervals(resample, n_boot, confidence) if n_boot > 0 else "none"}
