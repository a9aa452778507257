"""Inter-rater agreement: Krippendorff's alpha with a vectorised bootstrap.

Alpha is computed from the coincidence matrix ``o`` (values × values): every
pairable unit u with ``m_u`` ratings and value counts ``n_u`` contributes
``(n_u n_uᵀ − diag(n_u)) / (m_u − 1)``. With the marginals ``n_c = Σ_k o_ck``
and ``n = Σ n_c``::

    alpha = 1 − (n − 1) · Σ o_ck δ²_ck / Σ n_c n_k δ²_ck

Units with fewer than two ratings are not pairable: they are dropped and
counted. The bootstrap resamples the units' anchors (whole anchors, like
every interval in :mod:`cpdm.analysis`): each anchor's coincidence matrix is
computed once, and a resample is a count-weighted sum of them, so all
resamples are one matrix product (no Python loop per resample). Ordinal
distances depend on the marginals, so they are recomputed per resample, also
vectorised.
"""

from __future__ import annotations

from dataclasses import dataclass

import krippendorff
import numpy as np
import pandas as pd

from cpdm.analysis.resampling import DEFAULT_RESAMPLE, describe_intervals, make_resamples
from cpdm.errors import CpdmError

LEVELS = ("nominal", "ordinal", "interval", "ratio")


@dataclass(frozen=True)
class AlphaResult:
    """Alpha with its bootstrap interval and what went into it."""

    alpha: float
    ci_low: float
    ci_high: float
    n_units: int            # pairable units used
    n_excluded: int         # units with fewer than two ratings
    n_ratings: int          # ratings in the pairable units
    n_raters: int


def check_level(level: str) -> str:
    if level not in LEVELS:
        raise CpdmError(f"unknown level of measurement {level!r} (choose one of {', '.join(LEVELS)})")
    return level


def value_counts_from_long(units: np.ndarray, values: np.ndarray, value_domain: np.ndarray) -> np.ndarray:
    """Units × values count matrix from long-form (unit, value) ratings.

    ``units`` may be any labels; the rows follow ``np.unique(units)``.
    """
    _, unit_index = np.unique(units, return_inverse=True)
    value_index = np.searchsorted(value_domain, values)
    if np.any(value_index >= len(value_domain)) or np.any(value_domain[np.minimum(value_index, len(value_domain) - 1)] != values):
        raise CpdmError("a rating value is outside the value domain")
    counts = np.zeros((unit_index.max() + 1 if len(unit_index) else 0, len(value_domain)), dtype=np.int64)
    np.add.at(counts, (unit_index, value_index), 1)
    return counts


def unit_coincidences(value_counts: np.ndarray) -> np.ndarray:
    """Per-unit coincidence matrices (units × V × V) for pairable units (m_u ≥ 2)."""
    counts = np.asarray(value_counts, dtype=np.float64)
    m = counts.sum(axis=1)
    outer = counts[:, :, None] * counts[:, None, :]
    outer -= counts[:, :, None] * np.eye(counts.shape[1])[None, :, :]
    return outer / (m - 1)[:, None, None]


def distance_matrices(level: str, value_domain: np.ndarray, marginals: np.ndarray) -> np.ndarray:
    """Squared distances δ² (… × V × V) for each row of marginals (… × V).

    Nominal, interval and ratio distances do not depend on the marginals and
    are broadcast; ordinal distances are computed per row of ``marginals``.
    """
    values = np.asarray(value_domain, dtype=np.float64)
    V = len(values)
    marginals = np.asarray(marginals, dtype=np.float64)
    lead = marginals.shape[:-1]
    if level == "nominal":
        delta = 1.0 - np.eye(V)
    elif level == "interval":
        delta = (values[:, None] - values[None, :]) ** 2
    elif level == "ratio":
        total = values[:, None] + values[None, :]
        with np.errstate(invalid="ignore", divide="ignore"):
            delta = np.where(total != 0, ((values[:, None] - values[None, :]) / total) ** 2, 0.0)
    elif level == "ordinal":
        # δ_ck = Σ_{g=c..k} n_g − (n_c + n_k)/2 for c ≤ k (Krippendorff 2011).
        cumulative = np.cumsum(marginals, axis=-1)
        low = np.minimum.outer(np.arange(V), np.arange(V))
        high = np.maximum.outer(np.arange(V), np.arange(V))
        before_low = np.concatenate([np.zeros(lead + (1,)), cumulative[..., :-1]], axis=-1)
        between = cumulative[..., high] - before_low[..., low]
        half = (marginals[..., :, None] + marginals[..., None, :]) / 2
        return (between - half) ** 2
    else:
        raise CpdmError(f"unknown level of measurement {level!r}")
    return np.broadcast_to(delta, lead + (V, V))


def alpha_from_coincidences(coincidences: np.ndarray, level: str, value_domain: np.ndarray) -> np.ndarray:
    """Alpha for one coincidence matrix (V × V) or a stack of them (B × V × V)."""
    o = np.asarray(coincidences, dtype=np.float64)
    marginals = o.sum(axis=-1)
    n = marginals.sum(axis=-1)
    delta = distance_matrices(level, value_domain, marginals)
    observed = (o * delta).sum(axis=(-2, -1))
    expected = (marginals[..., :, None] * marginals[..., None, :] * delta).sum(axis=(-2, -1))
    with np.errstate(invalid="ignore", divide="ignore"):
        # No expected disagreement (everyone used one value): alpha is undefined.
        return np.where(expected > 0, 1.0 - (n - 1) * observed / np.where(expected > 0, expected, 1.0), np.nan)


def bootstrap_alpha(
    value_counts: np.ndarray,
    level: str,
    value_domain: np.ndarray,
    n_boot: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
    clusters: np.ndarray | None = None,
    resample: str = DEFAULT_RESAMPLE,
) -> tuple[np.ndarray, float, float]:
    """Alpha of ``n_boot`` resamples and its interval (see :mod:`cpdm.analysis.resampling`).

    With ``clusters`` (the anchor of each unit) whole anchors are resampled
    (``resample="anchors"``); otherwise single units. All resamples are
    computed at once: resample counts (n_boot × clusters) times the
    coincidences summed per cluster (clusters × V²).
    """
    per_unit = unit_coincidences(value_counts)
    n_units, V, _ = per_unit.shape
    if n_boot <= 0 or n_units == 0:
        return np.empty(0), float("nan"), float("nan")
    unit = resample if clusters is not None else "pairs"
    labels = np.asarray(clusters) if unit == "anchors" else np.arange(n_units)
    cluster_codes, cluster_index = np.unique(labels, return_inverse=True)
    per_cluster = np.zeros((len(cluster_codes), V * V))
    np.add.at(per_cluster, cluster_index, per_unit.reshape(n_units, V * V))
    resamples = make_resamples(cluster_codes, n_boot, seed, unit)
    resampled = (resamples.weights @ per_cluster).reshape(n_boot, V, V)
    alphas = alpha_from_coincidences(resampled, level, value_domain)
    low, high = resamples.interval(alphas, confidence)
    return alphas, low, high


def krippendorff_alpha(
    ratings: pd.DataFrame,
    level: str = "ordinal",
    value_domain=None,
    n_boot: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
    n_pairs: int | None = None,
    resample: str = DEFAULT_RESAMPLE,
) -> AlphaResult:
    """Alpha over long-form ratings (columns ``pair``, ``rater``, ``value``; NaN values are skipped).

    The point estimate comes from the ``krippendorff`` package; the interval
    from :func:`bootstrap_alpha`, over the pairs' anchors when the frame has
    an ``anchor`` column (else over pairs). ``n_pairs``, the number of pairs
    that could have been rated, lets pairs with no rating at all count as
    excluded too (otherwise only pairs with a single rating are counted).
    """
    check_level(level)
    rated = ratings.dropna(subset=["value"])
    if value_domain is None:
        value_domain = np.unique(rated["value"].to_numpy(dtype=np.float64))
    value_domain = np.asarray(value_domain, dtype=np.float64)
    if len(rated) == 0:
        return AlphaResult(float("nan"), float("nan"), float("nan"), 0, int(n_pairs or 0), 0, 0)
    counts = value_counts_from_long(rated["pair"].to_numpy(), rated["value"].to_numpy(dtype=np.float64), value_domain)
    m = counts.sum(axis=1)
    pairable = counts[m >= 2]
    n_excluded = int((m < 2).sum()) if n_pairs is None else int(n_pairs - len(pairable))
    pairable_pairs = np.unique(rated["pair"].to_numpy())[m >= 2]
    used = rated[rated["pair"].isin(pairable_pairs)]
    n_raters = int(used["rater"].nunique())
    if len(pairable) == 0 or len(np.unique(used["value"])) < 2:
        # Fewer than two pairable units' worth of data, or one value only: alpha is undefined.
        return AlphaResult(float("nan"), float("nan"), float("nan"), len(pairable), n_excluded, len(used), n_raters)
    point = float(krippendorff.alpha(value_counts=pairable, value_domain=value_domain, level_of_measurement=level))
    clusters = None
    if "anchor" in rated:
        anchor_of_pair = rated.groupby("pair")["anchor"].first()
        clusters = anchor_of_pair.loc[pairable_pairs].to_numpy()
    _, low, high = bootstrap_alpha(pairable, level, value_domain, n_boot=n_boot, seed=seed, confidence=confidence,
                                   clusters=clusters, resample=resample)
    return AlphaResult(point, low, high, len(pairable), n_excluded, len(used), n_raters)


def agreement_table(
    ratings: pd.DataFrame,
    groups: dict[str, pd.DataFrame] | None = None,
    questions: list[str] | None = None,
    level: str = "ordinal",
    value_domain=None,
    n_boot: int = 1000,
    seed: int = 0,
    n_pairs: int | None = None,
    resample: str = DEFAULT_RESAMPLE,
) -> pd.DataFrame:
    """Alpha per question and rater group.

    ``groups`` maps a group name to its slice of ``ratings`` (see
    :func:`cpdm.analysis.data.split_groups`); without it, all ratings form one
    group ``all``. ``n_pairs`` is the number of pairs in the campaign (see
    :func:`krippendorff_alpha`). Returns one row per (question, group), its
    ``interval`` column saying how the interval was made.
    """
    if groups is None:
        groups = {"all": ratings}
    if questions is None:
        questions = list(dict.fromkeys(ratings["question"]))
    rows = []
    for question in questions:
        for group, frame in groups.items():
            sub = frame[frame["question"] == question]
            result = krippendorff_alpha(sub, level=level, value_domain=value_domain, n_boot=n_boot, seed=seed,
                                        n_pairs=n_pairs, resample=resample)
            rows.append(
                {
                    "question": question,
                    "group": group,
                    "level": level,
                    "alpha": result.alpha,
                    "ci_low": result.ci_low,
                    "ci_high": result.ci_high,
                    "pairs": result.n_units,
                    "pairs_excluded": result.n_excluded,
                    "ratings": result.n_ratings,
                    "raters": result.n_raters,
                    "interval": describe_intervals(resample if "anchor" in sub else "pairs", n_boot),
                }
            )
    return pd.DataFrame(rows)
