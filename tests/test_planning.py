"""cpdm plan: designs simulated by resampling a pilot, and a recommendation that keeps its promise."""

from __future__ import annotations

import numpy as np
import pytest

from cpdm.analysis.calibration import (
    best_w,
    cm_from_distances,
    distance_grid,
    reference_grid_of,
    spearman_rows,
    weight_grid,
)
from cpdm.analysis.planning import PRECISION_TARGET, rank_rows, plan_study
from cpdm.errors import CpdmError
from tests.clustered_study import clustered_study, reference_frame, with_human

GROUP_OF_ROLE = {"artist": "artists", "lay": "lay"}


def pilot_ratings(ratings):
    return ratings.assign(group=ratings["role"].map(GROUP_OF_ROLE))[["pair", "group", "value"]]


def chosen_w(pairs, ratings, group) -> float:
    """w as calibration chooses it on one whole study."""
    data = with_human(pairs, ratings, group)
    grid = weight_grid()
    cm = cm_from_distances(distance_grid(data["m_sem"], data["m_style"], grid),
                           reference_grid_of(reference_frame(), grid))
    return best_w(grid, spearman_rows(cm, data["human"].to_numpy()))


def test_ranks_match_scipy_with_ties_and_padding():
    from scipy import stats

    matrix = np.random.default_rng(0).integers(0, 4, (5, 12)).astype(float)
    matrix[1, 3] = matrix[4, :5] = np.nan
    np.testing.assert_allclose(rank_rows(matrix), stats.rankdata(matrix, axis=1, nan_policy="omit"))


@pytest.mark.slow
def test_the_recommended_design_pins_w_when_the_full_study_is_simulated():
    pairs, ratings = clustered_study(20, seed=21)
    plan = plan_study(pairs, pilot_ratings(ratings), reference_frame(), anchors=(20, 40, 80, 160),
                      raters=(1, 3), replicates=100)
    design = plan.precision_design
    assert design is not None, plan.table
    # Designs smaller than the recommendation were simulated to miss the target.
    assert plan.table.loc[plan.table["ratings"] < design["ratings"], "halfwidth_artists"].gt(PRECISION_TARGET).any() \
        or (plan.table["ratings"] >= design["ratings"]).all()
    choices = {"artists": [], "lay": []}
    for index in range(60):
        study = clustered_study(design["anchors"], raters_per_pair=design["raters_per_pair"], seed=700 + index)
        for group in choices:
            choices[group].append(chosen_w(*study, group))
    for group, values in choices.items():
        low, high = np.quantile(values, [0.025, 0.975])
        assert (high - low) / 2 <= PRECISION_TARGET + 1e-9, (group, design, sorted(values))


def test_a_pilot_with_a_real_difference_has_the_power_to_show_it():
    pairs, ratings = clustered_study(20, weights={"artists": 0.2, "lay": 0.8}, seed=3)
    plan = plan_study(pairs, pilot_ratings(ratings), reference_frame(), anchors=(20, 80), raters=(3,),
                      replicates=40)
    assert list(plan.table["anchors"]) == [20, 80]
    assert plan.table["power"].is_monotonic_increasing
    assert plan.power_design is not None


def test_a_pilot_of_one_group_plans_precision_only():
    pairs, ratings = clustered_study(8, seed=5)
    ratings = ratings[ratings["role"] == "artist"]
    plan = plan_study(pairs, pilot_ratings(ratings), reference_frame(), anchors=(20,), raters=(1,), replicates=20)
    assert plan.groups == ("artists",) and "power" not in plan.table
    assert "the pilot needs ratings from both artists and lay raters" in " ".join(plan.summary_lines())


def test_a_pilot_that_cannot_be_used_is_refused():
    pairs, ratings = clustered_study(4, seed=5)
    with pytest.raises(CpdmError, match="at least 5 rated anchors; got 4"):
        plan_study(pairs, pilot_ratings(ratings), reference_frame(), replicates=20)
    pairs, ratings = clustered_study(8, raters_per_pair=1, seed=5)
    with pytest.raises(CpdmError, match="rated at least twice by the artists group"):
        plan_study(pairs, pilot_ratings(ratings), reference_frame(), replicates=20)
