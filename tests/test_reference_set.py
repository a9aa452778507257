"""CM's reference set: defined once from the baseline's generations, whatever the order of work; rescaled on purpose."""

from __future__ import annotations

import numpy as np
import pytest

from cpdm import metric
from cpdm.backbones import load_semantic, load_style
from cpdm.cli import cli
from cpdm.errors import CpdmError
from cpdm.rating.campaigns import create_campaign
from cpdm.scoring.engine import ScoringEngine, score_pairs
from cpdm.scoring.reader import load_reference_distances, load_scores, reference_scale_for
from cpdm.scoring.reference import REFERENCE_SAMPLE, load_reference_record, plan_reference_set
from cpdm.store.rows import variant_pair_ids
from cpdm.store.workspace import init_workspace
from tests.test_scoring import SEM, STYLE, add_anchor, add_generations


@pytest.fixture(scope="module")
def tiny_backbones():
    return load_semantic("ViT-L-14/openai", mode="tiny"), load_style("vgg19", mode="tiny")


def score(ws, tiny_backbones, pair_ids=None, campaign_id=None, batch_size=4):
    engine = ScoringEngine(ws, *tiny_backbones, batch_size=batch_size, precision="fp32")
    return score_pairs(ws, pair_ids=pair_ids, campaign_id=campaign_id, engine=engine, progress=False)


def two_variant_study(ws) -> None:
    """Three anchors, each with three generations of the baseline and three of an unlearned variant."""
    for seed in (1, 2, 3):
        study = add_anchor(ws, seed, 3)  # the baseline, variant "original"
        add_generations(ws, study["anchor"], study["prompt"], seed, 3, "esd")


def cm_by_pair(ws) -> dict[int, float]:
    frame = load_scores(ws, SEM, STYLE)
    x_ref = reference_scale_for(ws, SEM, STYLE)
    return dict(zip(frame["pair"], metric.cm_paper(frame["m_sem"].to_numpy(), frame["m_style"].to_numpy(), x_ref)))


def test_three_orders_of_work_give_identical_cm_for_every_pair(tmp_path, tiny_backbones):
    orders = {
        "all at once": lambda ws: [None],
        "baseline first": lambda ws: [variant_pair_ids(ws, "original"), None],
        "unlearned variant first": lambda ws: [variant_pair_ids(ws, "esd"), None],
        "campaign by campaign": lambda ws: [variant_pair_ids(ws, "esd")[:4], variant_pair_ids(ws, "original")[5:],
                                            None],
    }
    results = {}
    for name, steps in orders.items():
        with init_workspace(tmp_path / name.replace(" ", "-")) as ws:
            two_variant_study(ws)
            for pair_ids in steps(ws):
                # One image per batch: an image's features then never depend on its batch-mates (batching moves
                # them by ~1e-7, test_scoring), so any difference left would come from the reference set.
                score(ws, tiny_backbones, pair_ids, batch_size=1)
            results[name] = (cm_by_pair(ws), load_reference_distances(ws, SEM, STYLE))
    first_cm, first_reference = results["all at once"]
    assert len(first_cm) == 18 and all(0 <= cm <= 1 for cm in first_cm.values())
    assert len(set(first_cm.values())) > 9  # mostly distinct values: a changed x_ref would show
    for name, (cm, reference) in results.items():
        assert cm == first_cm, name  # the same pairs, the same CM, to the last bit
        assert reference.equals(first_reference), name


def test_the_reference_set_is_the_baselines_mismatched_pairs(ws, tiny_backbones):
    two_variant_study(ws)
    report = score(ws, tiny_backbones, variant_pair_ids(ws, "esd"))  # the baseline's pairs are not in scope
    assert report.reference_distances_added == 3 * min(REFERENCE_SAMPLE, 6)  # each anchor: the 6 others' baseline images
    owner = dict(ws.conn.execute(
        "SELECT p.image, p.anchor FROM pairs p JOIN generations g ON g.id = p.generation "
        "JOIN variants v ON v.id = g.variant WHERE v.method = 'original'").fetchall())
    reference = load_reference_distances(ws, SEM, STYLE)
    assert set(reference["image"]) <= set(owner)  # baseline generations only
    assert all(owner[image] != anchor for anchor, image in zip(reference["anchor"], reference["image"]))
    record = load_reference_record(ws, SEM, STYLE)
    assert (record.pairs, record.anchors, record.baseline_generations) == (18, 3, 9)
    products = reference["m_sem"] * reference["m_style"]
    assert record.x_ref == pytest.approx(float(np.median(products)))
    assert record.fingerprint == plan_reference_set(ws).fingerprint
    assert "baseline generations" in record.definition


def test_without_baseline_generations_of_two_anchors_cm_is_refused_naming_the_fix(ws, tiny_backbones, runner):
    lone = add_anchor(ws, 1, 2)  # the only anchor the baseline generated for
    other = add_anchor(ws, 2, 0)
    add_generations(ws, other["anchor"], other["prompt"], 2, 2, "esd")
    report = score(ws, tiny_backbones)
    assert report.pairs_scored == 4 and report.reference_distances_added == 0
    assert any("baseline has generations of 1" in note for note in report.notes)
    message = "generate with the baseline for more anchors"
    with pytest.raises(CpdmError, match=message):
        reference_scale_for(ws, SEM, STYLE)
    listed = runner.invoke(cli, ["scores", "list", "--workspace", str(ws.root)])
    assert listed.exit_code == 0 and "CM unavailable" in listed.output and message in listed.output
    rescaled = runner.invoke(cli, ["scores", "rescale", "--offline-tiny", "--style", "vgg19",
                                   "--workspace", str(ws.root)])
    assert rescaled.exit_code == 1 and message in rescaled.output
    assert lone["pairs"]  # its pairs were scored all the same


def test_new_baseline_generations_leave_cm_alone_until_rescale_says_how_far_x_ref_moved(ws, tiny_backbones, runner):
    for seed in (1, 2):
        add_anchor(ws, seed, 2)
    score(ws, tiny_backbones)
    before_cm, before = cm_by_pair(ws), load_reference_record(ws, SEM, STYLE)
    assert before.pairs == 4  # each anchor against the other's two generations
    add_anchor(ws, 3, 3)
    report = score(ws, tiny_backbones)
    assert report.reference_distances_added == 0
    assert any("cpdm scores rescale" in note and "now has 7 of 3" in note for note in report.notes)
    assert load_reference_record(ws, SEM, STYLE) == before
    assert {pair: cm for pair, cm in cm_by_pair(ws).items() if pair in before_cm} == before_cm

    result = runner.invoke(cli, ["scores", "rescale", "--offline-tiny", "--style", "vgg19",
                                 "--workspace", str(ws.root)])
    assert result.exit_code == 0, result.output
    after = load_reference_record(ws, SEM, STYLE)
    assert (after.pairs, after.anchors, after.baseline_generations) == (5 + 5 + 4, 3, 7)
    assert after.fingerprint == plan_reference_set(ws).fingerprint
    assert f"x_ref moved from {before.x_ref:.6g} to {after.x_ref:.6g} ({after.x_ref / before.x_ref - 1:+.1%})" \
        in result.output
    assert "reference pairs 4 -> 14" in result.output
    assert len(load_reference_distances(ws, SEM, STYLE)) == 14  # the old rows replaced, not added to
    assert score(ws, tiny_backbones).notes == []


def test_reference_rows_of_an_earlier_cpdm_are_not_used_until_the_set_is_defined(ws, tiny_backbones):
    for seed in (1, 2):
        add_anchor(ws, seed, 2)
    score(ws, tiny_backbones)
    defined = load_reference_distances(ws, SEM, STYLE)
    # As an earlier cpdm left a workspace: rows sampled from whatever was in scope, no record.
    with ws.transaction() as conn:
        conn.execute("DELETE FROM meta WHERE key LIKE 'reference_set:%'")
        conn.execute("UPDATE reference_distances SET m_sem = m_sem * 3")
    with pytest.raises(CpdmError, match="earlier cpdm .* `cpdm scores rescale`"):
        reference_scale_for(ws, SEM, STYLE)
    assert load_reference_distances(ws, SEM, STYLE).empty
    report = score(ws, tiny_backbones)  # the next score run defines the set, replacing the old rows
    assert report.reference_distances_added == len(defined)
    assert load_reference_distances(ws, SEM, STYLE)[["m_sem", "m_style"]].equals(defined[["m_sem", "m_style"]])


def test_the_reference_set_does_not_depend_on_a_campaign_scope(ws, tiny_backbones):
    two_variant_study(ws)
    campaign = create_campaign(ws, "pilot", variant_pair_ids(ws, "esd")[:3])
    report = score(ws, tiny_backbones, campaign_id=campaign)
    assert report.pairs_scored == 3
    record = load_reference_record(ws, SEM, STYLE)
    assert (record.pairs, record.anchors) == (18, 3)
