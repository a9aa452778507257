"""Krippendorff's alpha: hand-computed values, the published example, the package, the bootstrap."""

from __future__ import annotations

import krippendorff
import numpy as np
import pandas as pd
import pytest

from cpdm.analysis.agreement import (
    agreement_table,
    bootstrap_alpha,
    distance_matrices,
    krippendorff_alpha,
    unit_coincidences,
    value_counts_from_long,
)
from cpdm.testing import alpha_from_counts
from cpdm.errors import CpdmError

NAN = np.nan

# A small reliability data set with missing values (3 raters × 4 units, values 1..3):
#   unit    u1  u2  u3  u4
#   A        1   2   3   .
#   B        1   2   2   3
#   C        .   3   .   3
SMALL = np.array([[1, 2, 3, NAN], [1, 2, 2, 3], [NAN, 3, NAN, 3]])
DOMAIN = np.array([1.0, 2.0, 3.0])

# Worked by hand. Value counts per unit: u1 {1:2}, u2 {2:2, 3:1}, u3 {2:1, 3:1}, u4 {3:2}.
# Coincidences o_ck = Σ_u n_uc (n_uk − [c=k]) / (m_u − 1):
#   u1 (m=2): o11 += 2·1/1 = 2
#   u2 (m=3): o22 += 2·1/2 = 1, o23 = o32 += 2·1/2 = 1
#   u3 (m=2): o23 = o32 += 1
#   u4 (m=2): o33 += 2
#   o = [[2, 0, 0], [0, 1, 2], [0, 2, 2]], marginals n = (2, 3, 4), n.. = 9.
# Nominal: D_o ∝ off-diagonal = 4; D_e ∝ Σ_{c≠k} n_c n_k = 2·(6 + 8 + 12) = 52;
#   alpha = 1 − (9 − 1)·4/52 = 1 − 32/52 = 5/13.
# Interval (δ² = (c − k)²): observed Σ o δ² = (o23 + o32)·1 = 4;
#   expected Σ n_c n_k δ² = 2·(2·3·1 + 2·4·4 + 3·4·1) = 2·(6 + 32 + 12) = 100;
#   alpha = 1 − 8·4/100 = 0.68.
# Ordinal (δ_ck = Σ_{g=c..k} n_g − (n_c + n_k)/2): δ12 = 5 − 2.5 = 2.5, δ23 = 7 − 3.5 = 3.5,
#   δ13 = 9 − 3 = 6; observed = (o23 + o32)·3.5² = 4·12.25 = 49; expected = 2·(6·2.5² + 8·6² + 12·3.5²)
#   = 2·(37.5 + 288 + 147) = 945; alpha = 1 − 8·49/945 = 1 − 392/945.
HAND = {"nominal": 5 / 13, "interval": 0.68, "ordinal": 1 - 392 / 945}

# Krippendorff (2011), "Computing Krippendorff's alpha-reliability", the example with missing
# values (4 coders × 12 units); published: nominal 0.743, ordinal 0.815, interval 0.849.
PUBLISHED = np.array([
    [1, 2, 3, 3, 2, 1, 4, 1, 2, NAN, NAN, NAN],
    [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, NAN, 3],
    [NAN, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, NAN],
    [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, NAN],
])
PUBLISHED_ALPHA = {"nominal": 0.743, "ordinal": 0.815, "interval": 0.849}


def counts_of(matrix: np.ndarray, domain: np.ndarray) -> np.ndarray:
    return (matrix.T[..., None] == domain[None, None, :]).sum(axis=1)


def long_of(matrix: np.ndarray) -> pd.DataFrame:
    raters, units = np.nonzero(~np.isnan(matrix))
    return pd.DataFrame({"rater": raters, "pair": units, "value": matrix[raters, units]})


def test_coincidence_matrix_matches_hand_computation():
    o = unit_coincidences(counts_of(SMALL, DOMAIN)).sum(axis=0)
    np.testing.assert_allclose(o, [[2, 0, 0], [0, 1, 2], [0, 2, 2]])


@pytest.mark.parametrize("level", ["nominal", "ordinal", "interval"])
def test_alpha_matches_hand_computation(level):
    assert alpha_from_counts(counts_of(SMALL, DOMAIN), level, DOMAIN) == pytest.approx(HAND[level], abs=1e-12)
    result = krippendorff_alpha(long_of(SMALL), level=level, n_boot=0)
    assert result.alpha == pytest.approx(HAND[level], abs=1e-12)


@pytest.mark.parametrize("level", ["nominal", "ordinal", "interval"])
def test_alpha_matches_published_example(level):
    domain = np.arange(1.0, 6.0)
    assert alpha_from_counts(counts_of(PUBLISHED, domain), level, domain) == pytest.approx(PUBLISHED_ALPHA[level], abs=5e-4)
    result = krippendorff_alpha(long_of(PUBLISHED), level=level, n_boot=0)
    assert result.alpha == pytest.approx(PUBLISHED_ALPHA[level], abs=5e-4)
    # Unit 12 has one rating only: excluded and counted.
    assert result.n_units == 11 and result.n_excluded == 1


@pytest.mark.parametrize("level", ["nominal", "ordinal", "interval", "ratio"])
def test_alpha_agrees_with_the_krippendorff_package_on_random_data(level):
    rng = np.random.default_rng(3)
    matrix = rng.integers(1, 6, size=(6, 40)).astype(float)
    matrix[rng.random(matrix.shape) < 0.4] = NAN
    domain = np.arange(1.0, 6.0)
    expected = krippendorff.alpha(reliability_data=matrix, value_domain=domain, level_of_measurement=level)
    assert alpha_from_counts(counts_of(matrix, domain), level, domain) == pytest.approx(expected, abs=1e-12)


def test_ordinal_distances_follow_the_marginals():
    delta = distance_matrices("ordinal", DOMAIN, np.array([2.0, 3.0, 4.0]))
    np.testing.assert_allclose(np.sqrt(delta), [[0, 2.5, 6], [2.5, 0, 3.5], [6, 3.5, 0]])
    # A stack of marginals gives a stack of distance matrices, each its own.
    stacked = distance_matrices("ordinal", DOMAIN, np.array([[2.0, 3.0, 4.0], [1.0, 1.0, 1.0]]))
    np.testing.assert_allclose(stacked[0], delta)
    # Equal marginals: δ_ck = |c − k| (sums between minus the half ends).
    np.testing.assert_allclose(np.sqrt(stacked[1]), [[0, 1, 2], [1, 0, 1], [2, 1, 0]])


def test_bootstrap_resamples_equal_alpha_of_explicitly_resampled_units():
    domain = np.arange(1.0, 6.0)
    counts = counts_of(PUBLISHED, domain)
    counts = counts[counts.sum(axis=1) >= 2]
    alphas, low, high = bootstrap_alpha(counts, "ordinal", domain, n_boot=20, seed=7)
    # Re-draw the same resample counts and compute each resample the slow way.
    from cpdm.analysis.correlation import pair_bootstrap_counts

    weights = pair_bootstrap_counts(len(counts), 20, np.random.default_rng(7)).astype(int)
    for row, alpha in zip(weights, alphas):
        resampled = np.repeat(counts, row, axis=0)
        expected = krippendorff.alpha(value_counts=resampled, value_domain=domain, level_of_measurement="ordinal") \
            if len(np.unique(np.nonzero(resampled)[1])) > 1 else np.nan
        if np.isnan(expected):
            assert np.isnan(alpha)
        else:
            assert alpha == pytest.approx(expected, abs=1e-10)
    assert low <= np.nanmedian(alphas) <= high


def test_bootstrap_interval_covers_the_point_estimate_on_larger_data():
    rng = np.random.default_rng(0)
    truth = rng.integers(1, 6, size=200)
    matrix = np.clip(truth[None, :] + rng.integers(-1, 2, size=(5, 200)), 1, 5).astype(float)
    result = krippendorff_alpha(long_of(matrix), n_boot=300, seed=1)
    assert result.ci_low < result.alpha < result.ci_high
    assert result.ci_high - result.ci_low < 0.2


def test_pairs_with_fewer_than_two_ratings_are_excluded_and_counted():
    frame = pd.DataFrame({
        "pair": [1, 1, 2, 2, 3, 4],
        "rater": [1, 2, 1, 2, 1, 2],
        "value": [5, 4, 1, 2, 3, NAN],  # pair 3: one rating; pair 4: one skipped answer only
    })
    result = krippendorff_alpha(frame, n_boot=10)
    assert result.n_units == 2
    assert result.n_excluded == 1  # pair 4 has no answered rating at all, so it is not a unit
    assert result.n_ratings == 4
    # Knowing how many pairs the campaign has, unrated pairs count as excluded too.
    assert krippendorff_alpha(frame, n_boot=10, n_pairs=6).n_excluded == 4


def test_agreement_table_per_question_and_group():
    rng = np.random.default_rng(2)
    rows = []
    for pair in range(30):
        for rater, role in ((1, "artist"), (2, "artist"), (3, "lay"), (4, "lay")):
            for question in ("content", "copy"):
                rows.append({"pair": pair, "rater": rater, "role": role, "question": question,
                             "value": float(1 + (pair % 5 + rng.integers(0, 2)) % 5)})
    ratings = pd.DataFrame(rows)
    groups = {"artists": ratings[ratings["role"] == "artist"], "all": ratings}
    table = agreement_table(ratings, groups, ["content", "copy"], n_boot=50)
    assert list(zip(table["question"], table["group"])) == [
        ("content", "artists"), ("content", "all"), ("copy", "artists"), ("copy", "all")]
    assert (table.loc[table["group"] == "artists", "raters"] == 2).all()
    assert (table.loc[table["group"] == "all", "raters"] == 4).all()
    assert table["alpha"].between(-1, 1).all()


def test_unknown_level_is_refused():
    with pytest.raises(CpdmError, match="unknown level of measurement 'ordinary'"):
        krippendorff_alpha(long_of(SMALL), level="ordinary")


def test_value_outside_the_domain_is_refused():
    with pytest.raises(CpdmError, match="outside the value domain"):
        value_counts_from_long(np.array([1, 1]), np.array([1.0, 7.0]), DOMAIN)


def test_everyone_agreeing_on_one_value_leaves_alpha_undefined():
    frame = pd.DataFrame({"pair": [1, 1, 2, 2], "rater": [1, 2, 1, 2], "value": [3.0, 3.0, 3.0, 3.0]})
    assert np.isnan(krippendorff_alpha(frame, n_boot=5).alpha)
