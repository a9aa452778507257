"""cpdm plan --kind 2afc: the judgments each design needs to pin w, for the same simulated raters."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from cpdm.analysis.judgment_planning import (
    CANT_TELL_MARGIN,
    JUDGMENT_DESIGNS,
    JudgmentWorld,
    _needed,
    _triplet_pool,
    balanced_triplets,
    logistic_scale,
    pilot_world,
    plan_judgments,
    rater_choices,
)
from cpdm.cli import cli
from cpdm.demo.simulate import LENIENCY_SD, NOISE_SD, add_simulated_judgments, add_simulated_ratings, synthetic_study
from cpdm.errors import CpdmError
from cpdm.rating.active import fit_choice_model
from cpdm.rating.triplets import create_2afc_campaign
from cpdm.testing import create_synthetic_campaign
from tests.triplet_fixtures import TWO_AFC_TEXT


def synthetic_world(w=0.5, seed=1, n_anchors=30):
    pairs, _, reference = synthetic_study(n_pairs=8 * n_anchors, n_anchors=n_anchors, n_raters=2,
                                          ratings_per_pair=1, w_true=w, seed=seed)
    return JudgmentWorld(pairs.assign(latent=1 + 4 * pairs["cm_true"]), NOISE_SD, reference=reference,
                         leniency_sd=LENIENCY_SD)


def test_the_choice_follows_the_latent_difference_on_the_scale_of_the_rating_noise():
    # σ = 0.6: a difference seen with sd 0.6·√2; the logistic with that sd has scale 0.6·√2·√3/π = 0.4678.
    assert logistic_scale(0.6) == pytest.approx(0.6 * math.sqrt(6) / math.pi)
    assert logistic_scale(0.6) == pytest.approx(0.46781, abs=1e-5)
    rng = np.random.default_rng(0)
    n = 40_000
    difference = 0.5                                     # above the can't-tell margin: always a side
    choices = rater_choices(np.full(n, 3.0 + difference), np.full(n, 3.0), 0.6, rng)
    assert set(np.unique(choices)) == {0.0, 1.0}
    assert choices.mean() == pytest.approx(1 / (1 + math.exp(-difference / 0.46781)), abs=0.01)   # 0.742
    # Nearly equal: "can't tell" about half the time, the rest a coin.
    close = rater_choices(np.full(n, 3.0 + CANT_TELL_MARGIN / 2), np.full(n, 3.0), 0.6, rng)
    assert (close == 0.5).mean() == pytest.approx(0.5, abs=0.02)
    with pytest.raises(CpdmError, match="rating noise must be positive"):
        logistic_scale(0.0)


def test_a_balanced_design_shows_every_generation_equally_often():
    groups = [np.arange(0, 6), np.arange(6, 14), np.arange(14, 16)]   # 6, 8 and 2 generations
    first, second, slot = _triplet_pool(groups)
    assert len(first) == 15 + 28 + 1 and (slot == np.repeat([0, 1, 2], [15, 28, 1])).all()
    chosen = balanced_triplets(slot, np.array([6, 8, 2]), None, np.random.default_rng(0))
    assert len(chosen) == 6 + 8 + 1 and len(set(chosen)) == len(chosen)
    appearances = np.bincount(np.concatenate([first[chosen], second[chosen]]), minlength=16)
    assert (appearances[:14] == 2).all() and (appearances[14:] == 1).all()
    assert (first[chosen] != second[chosen]).all() and (slot[chosen] == np.repeat([0, 1, 2], [6, 8, 1])).all()


def test_the_judgments_needed_are_log_interpolated_where_the_half_width_crosses_the_target():
    budgets = np.array([100, 200, 400])
    # 0.15 at 200, 0.05 at 400: the target 0.1 is halfway, so exp((log 200 + log 400) / 2) = 282.8.
    assert _needed(budgets, np.array([0.3, 0.15, 0.05]), 0.1) == pytest.approx(math.sqrt(200 * 400))
    assert _needed(budgets, np.array([0.09, 0.05, 0.04]), 0.1) == 100
    assert math.isnan(_needed(budgets, np.array([0.3, 0.2, 0.11]), 0.1))


def test_every_design_is_simulated_on_the_same_studies():
    plan = plan_judgments(synthetic_world(), anchors=12, replicates=20, max_judgments=400, w_true=0.5, seed=3)
    assert list(plan.table["design"].unique()) == list(JUDGMENT_DESIGNS)
    sizes = plan.table.groupby("design")["judgments"].apply(list)
    assert all(sizes[d] == sizes["likert"] for d in JUDGMENT_DESIGNS)
    assert (plan.table["halfwidth"] >= 0).all() and plan.table["bias"].abs().max() < 0.2
    assert set(plan.needed) == set(JUDGMENT_DESIGNS)
    lines = plan.summary_lines()
    assert len(lines) == 4 and lines[0].startswith("likert: ")
    # More judgments pin w better: the last budget beats the first for every design.
    first, last = plan.table.groupby("design")["halfwidth"].first(), plan.table.groupby("design")["halfwidth"].last()
    assert (last < first).all()


@pytest.mark.slow
def test_active_triplets_need_at_most_half_the_judgments_of_random_ones():
    plan = plan_judgments(synthetic_world(n_anchors=50), anchors=20, replicates=60, max_judgments=1500, w_true=0.5,
                          seed=1)
    assert plan.ratio("active", "random") <= 0.5, plan.needed


def test_bad_plans_are_refused():
    world = synthetic_world()
    with pytest.raises(CpdmError, match="unknown design 'adaptive'"):
        plan_judgments(world, designs=("likert", "adaptive"))
    few = JudgmentWorld(world.pairs[world.pairs["anchor"] < 3], NOISE_SD)
    with pytest.raises(CpdmError, match="at least 5 anchors"):
        plan_judgments(few)
    single = world.pairs.drop_duplicates("anchor")
    with pytest.raises(CpdmError, match="at least two scored generations"):
        plan_judgments(JudgmentWorld(single, NOISE_SD))


def normal_pairs(ws, campaign):
    return [r[0] for r in ws.conn.execute("SELECT cp.pair FROM campaign_pairs cp JOIN pairs p ON p.id = cp.pair "
                                          "AND p.kind = 'normal' WHERE cp.campaign = ?", (campaign,))]


def test_a_rating_pilot_gives_its_pair_means_and_rating_noise(ws):
    campaign = create_synthetic_campaign(ws, name="pilot", n_anchors=8)
    add_simulated_ratings(ws, campaign)
    world = pilot_world(ws, "pilot")
    means = pd.read_sql_query("SELECT pair, AVG(value) AS mean FROM ratings WHERE question = 'copy' AND value IS "
                              "NOT NULL GROUP BY pair", ws.conn).set_index("pair")["mean"]
    np.testing.assert_allclose(world.pairs.set_index("pair")["latent"], means.loc[world.pairs["pair"]])
    assert world.scale == (1, 5) and len(world.residuals) > 0 and world.noise_sd > 0


def test_a_2afc_pilot_gives_latent_scores_whose_choices_reproduce_its_fitted_model(ws):
    ratings = create_synthetic_campaign(ws, name="pairs", n_anchors=8, seeds_per_variant=2)
    campaign = create_2afc_campaign(ws, "pilot2", normal_pairs(ws, ratings), protocol_text=TWO_AFC_TEXT)
    add_simulated_judgments(ws, campaign)
    world = pilot_world(ws, "pilot2", noise_sd=0.5)
    rows = ws.conn.execute(
        "SELECT s1.m_sem, s1.m_style, s2.m_sem, s2.m_style, CASE WHEN j.answer = 'cant_tell' THEN 0.5 "
        "WHEN j.chosen_pair = t.first_pair THEN 1.0 ELSE 0.0 END FROM judgments j "
        "JOIN triplets t ON t.id = j.triplet AND t.kind = 'normal' JOIN scores s1 ON s1.pair = t.first_pair "
        "JOIN scores s2 ON s2.pair = t.second_pair WHERE j.campaign = ? AND j.question = 'copy' "
        "AND j.answer IS NOT NULL", (campaign,)).fetchall()
    data = np.array(rows, dtype=float)
    model = fit_choice_model(np.log(data[:, 0] / data[:, 2]), np.log(data[:, 1] / data[:, 3]), data[:, 4],
                             np.ones(len(data)))
    pairs = world.pairs.reset_index(drop=True)
    a, b = pairs.iloc[0], pairs.iloc[1]
    by_latent = 1 / (1 + math.exp(-(a["latent"] - b["latent"]) / logistic_scale(0.5)))
    by_model = model.p_first(math.log(a["m_sem"] / b["m_sem"]), math.log(a["m_style"] / b["m_style"]))
    assert by_latent == pytest.approx(float(by_model))
    assert world.noise_sd == 0.5 and world.residuals is None


def test_pilots_that_cannot_be_used_are_refused(ws):
    create_synthetic_campaign(ws, name="blind", n_anchors=5, scored=False)
    with pytest.raises(CpdmError, match="has no metric scores"):
        pilot_world(ws, "blind")
    create_synthetic_campaign(ws, name="unrated", n_anchors=5)
    with pytest.raises(CpdmError, match="no ratings of 'copy' by all"):
        pilot_world(ws, "unrated")


def test_the_command_plans_from_assumptions_and_needs_a_pilot_for_ratings(ws):
    runner = CliRunner()
    result = runner.invoke(cli, ["plan", "--kind", "2afc", "--replicates", "20", "--max-judgments", "200",
                                 "--anchors", "10", "--workspace", str(ws.root)])
    assert result.exit_code == 0, result.output
    assert "assumptions (w = 0.5, rating noise sd 0.6)" in result.output
    for design in JUDGMENT_DESIGNS:
        assert f"\n{design}: " in result.output
    refused = runner.invoke(cli, ["plan", "--workspace", str(ws.root)])
    assert refused.exit_code == 1 and "needs --campaign" in refused.output
