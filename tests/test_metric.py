"""The CM metric: hand-computed values, invariants, the weights file."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from scipy import stats

from cpdm import metric
from cpdm.metric import MetricError, Weights, load_weights


def test_gram_matrix_by_hand():
    # Two channels over two positions: F = [[1, 2], [3, 4]]; F Fᵀ = [[5, 11], [11, 25]]; C·H·W = 4.
    features = torch.tensor([[[[1.0, 2.0]], [[3.0, 4.0]]]])
    gram = metric.gram_matrix(features)
    assert gram.shape == (1, 2, 2)
    assert torch.allclose(gram[0], torch.tensor([[1.25, 2.75], [2.75, 6.25]]))
    # Unbatched input gives the unbatched Gram matrix.
    assert torch.allclose(metric.gram_matrix(features[0]), gram[0])


def test_gram_matrix_is_batched_per_image():
    rng = torch.Generator().manual_seed(0)
    features = torch.randn(3, 4, 5, 6, generator=rng)
    batched = metric.gram_matrix(features)
    for i in range(3):
        flat = features[i].reshape(4, 30)
        assert torch.allclose(batched[i], flat @ flat.T / (4 * 5 * 6), atol=1e-6)


def test_gram_matrix_rejects_wrong_shape():
    with pytest.raises(MetricError, match="shape"):
        metric.gram_matrix(torch.zeros(4, 4))


def test_m_style_with_layer_weights_by_hand():
    grams_a = [np.eye(2), np.array([[3.0]])]
    grams_g = [np.zeros((2, 2)), np.array([[0.0]])]
    # Layer 1: ‖I‖² = 2, times 0.5 = 1; layer 2: 3² = 9, times 2 = 18.
    assert metric.m_style(grams_a, grams_g, [0.5, 2.0]) == pytest.approx(19.0)


def test_m_style_batched_and_mismatched_lengths():
    grams_a = [np.stack([np.eye(2), np.eye(2)])]
    grams_g = [np.stack([np.eye(2), np.zeros((2, 2))])]
    assert np.allclose(metric.m_style(grams_a, grams_g, [1.0]), [0.0, 2.0])
    with pytest.raises(MetricError, match="one Gram matrix per layer"):
        metric.m_style(grams_a, grams_g, [1.0, 1.0])


def test_m_sem_is_two_minus_two_cos():
    assert metric.m_sem([1.0, 0.0], [0.0, 1.0]) == pytest.approx(2.0)
    assert metric.m_sem([1.0, 0.0], [-1.0, 0.0]) == pytest.approx(4.0)
    # Not normalised on input: (3, 4) and (4, 3) have cos = 24/25, so 2 - 48/25 = 0.08.
    assert metric.m_sem([3.0, 4.0], [4.0, 3.0]) == pytest.approx(0.08)
    assert metric.m_sem([3.0, 4.0], [6.0, 8.0]) == 0.0
    rng = np.random.default_rng(1)
    a, g = rng.normal(size=(5, 8)), rng.normal(size=(5, 8))
    cos = np.sum(a * g, axis=1) / np.linalg.norm(a, axis=1) / np.linalg.norm(g, axis=1)
    assert np.allclose(metric.m_sem(a, g), 2 - 2 * cos)


def test_normalise_and_cm_from_distance_by_hand():
    assert metric.normalise(2.0, 4.0) == 0.5
    assert metric.normalise(8.0, 4.0) == 1.0  # clipped
    assert metric.cm_from_distance(2.0, 4.0) == pytest.approx(0.75)
    assert metric.cm_from_distance(100.0, 4.0) == 0.0
    assert np.allclose(metric.normalise([0.0, 1.0, 5.0], 2.0), [0.0, 0.5, 1.0])


def test_cm_paper_by_hand():
    # M_sem·M_style = 1, x_ref = 4: Norm = 0.25, CM = 1 - 1/16.
    assert metric.cm_paper(0.5, 2.0, 4.0) == pytest.approx(0.9375)


def test_release_score_by_hand():
    # The release's (M_sem · M_style)²: no Norm, no x_ref, no "1 −"; lower = closer.
    assert metric.release_score(0.5, 0.2) == pytest.approx(0.01)  # (0.1)²
    assert metric.release_score(2.0, 3.0) == pytest.approx(36.0)  # far apart: not clipped at 1, unlike CM
    np.testing.assert_allclose(metric.release_score([0.0, 0.3, 1.5], [4.0, 0.1, 0.02]), [0.0, 9e-4, 9e-4])
    # It ranks pairs in the opposite order to CM (while CM is not clipped).
    sem, style = np.array([0.2, 0.6, 1.0]), np.array([0.3, 0.1, 0.2])
    assert np.array_equal(np.argsort(metric.release_score(sem, style)), np.argsort(-metric.cm_paper(sem, style, 10.0)))
    with pytest.raises(MetricError, match="non-negative"):
        metric.release_score(-0.1, 1.0)


def test_weighted_form_at_w_0_half_1():
    sem, style = 4.0, 9.0
    assert metric.combined_distance(sem, style, 0.0) == pytest.approx(9.0)  # style only
    assert metric.combined_distance(sem, style, 1.0) == pytest.approx(4.0)  # semantic only
    assert metric.combined_distance(sem, style, 0.5) == pytest.approx(6.0)  # sqrt of the product
    assert metric.cm_weighted(sem, style, 0.5, 12.0) == pytest.approx(0.75)
    assert metric.cm_weighted(sem, style, 0.0, 18.0) == pytest.approx(0.75)
    assert metric.cm_weighted(sem, style, 1.0, 8.0) == pytest.approx(0.75)


def test_zero_to_the_zero_is_one():
    # At w = 1 a zero style distance does not zero D_w, and vice versa at w = 0.
    assert metric.combined_distance(3.0, 0.0, 1.0) == 3.0
    assert metric.combined_distance(0.0, 5.0, 0.0) == 5.0
    assert metric.combined_distance(0.0, 5.0, 1.0) == 0.0


def test_w_half_ranks_exactly_like_the_product():
    rng = np.random.default_rng(2)
    sem = rng.uniform(0.01, 2.0, size=50)
    style = rng.uniform(1e-4, 1e-2, size=50)
    x_ref_paper = metric.reference_scale(sem, style)
    x_ref_half = metric.reference_scale(sem, style, w=0.5)
    # Odd count: the median of sqrt(product) is sqrt of the median product.
    odd_sem, odd_style = sem[:49], style[:49]
    assert metric.reference_scale(odd_sem, odd_style, 0.5) == pytest.approx(
        math.sqrt(metric.reference_scale(odd_sem, odd_style))
    )
    paper = metric.cm_paper(sem, style, x_ref_paper * 100)  # x_ref large: no clipping, no ties
    weighted = metric.cm_weighted(sem, style, 0.5, x_ref_half * 100)
    assert np.array_equal(np.argsort(paper), np.argsort(weighted))
    assert stats.spearmanr(paper, weighted).statistic == pytest.approx(1.0)
    # Other weights rank differently on this data.
    assert not np.array_equal(np.argsort(weighted), np.argsort(metric.cm_weighted(sem, style, 0.9, 1e3)))


def test_reference_scale_by_hand():
    assert metric.reference_scale([1, 2, 3], [1, 1, 2]) == 2.0  # products 1, 2, 6
    assert metric.reference_scale([1, 2, 3], [1, 1, 2], w=1.0) == 2.0  # semantic only
    assert metric.reference_scale([1, 2, 3], [5, 1, 2], w=0.0) == 2.0  # style only
    with pytest.raises(MetricError, match="mismatched pairs"):
        metric.reference_scale([], [])
    with pytest.raises(MetricError, match="is 0"):
        metric.reference_scale([0, 0, 1], [1, 1, 1])


def test_identical_images_give_cm_one():
    assert metric.cm_paper(0.0, 0.0, 1.0) == 1.0
    assert metric.cm_weighted(0.0, 0.0, 0.3, 1.0) == 1.0


def test_cm_stays_in_unit_interval():
    rng = np.random.default_rng(3)
    sem = rng.uniform(0, 4, size=200)
    style = rng.exponential(10.0, size=200)
    style[:5] = 0.0
    for w in (0.0, 0.25, 0.5, 1.0):
        for x_ref in (1e-3, 1.0, 1e3):
            values = metric.cm_weighted(sem, style, w, x_ref)
            assert np.all((values >= 0) & (values <= 1))
    values = metric.cm_paper(sem, style, 0.5)
    assert np.all((values >= 0) & (values <= 1))


@pytest.mark.parametrize("x_ref", [0.0, -1.0, float("nan"), float("inf")])
def test_bad_reference_scale_is_refused(x_ref):
    with pytest.raises(MetricError, match="x_ref"):
        metric.normalise(1.0, x_ref)
    with pytest.raises(MetricError, match="x_ref"):
        metric.cm_paper(1.0, 1.0, x_ref)
    with pytest.raises(MetricError, match="x_ref"):
        metric.cm_weighted(1.0, 1.0, 0.5, x_ref)


def test_bad_w_and_negative_distances_are_refused():
    with pytest.raises(MetricError, match="w must lie"):
        metric.combined_distance(1.0, 1.0, 1.5)
    with pytest.raises(MetricError, match="non-negative"):
        metric.combined_distance(-1.0, 1.0, 0.5)


def _weights_dict(**changes) -> dict:
    data = {
        "format": "cpdm-weights/1",
        "w": 0.35,
        "x_ref": 1.23,
        "semantic": "ViT-L-14/openai",
        "style": "vgg19",
        "target": "copy",
        "rater_group": "artists",
        "stats": {"spearman": 0.6},
        "n_pairs": 40,
        "n_raters": 6,
        "n_ratings": 240,
        "ratings_sha256": "ab" * 32,
        "created_at": "2026-11-27T10:00:00Z",
    }
    data.update(changes)
    return data


def test_weights_round_trip(tmp_path):
    path = tmp_path / "weights.json"
    path.write_text(json.dumps(_weights_dict()))
    weights = load_weights(path)
    assert (weights.w, weights.x_ref, weights.style, weights.n_ratings) == (0.35, 1.23, "vgg19", 240)
    copy = tmp_path / "copy.json"
    weights.save(copy)
    # Written back, the file also says what w was fitted to (ratings, for a file that did not say).
    assert json.loads(copy.read_text()) == {**_weights_dict(), "judgment_kind": "rating"}
    assert load_weights(copy) == weights
    assert weights.cm(0.5, 2.0) == pytest.approx(metric.cm_weighted(0.5, 2.0, 0.35, 1.23))


def test_weights_with_defaults_only_needs_the_core_fields():
    weights = Weights(w=0.5, x_ref=2.0, semantic="tiny:ViT-L-14/openai", style="tiny:vgg19")
    assert Weights.from_dict(json.loads(weights.to_json())) == weights


@pytest.mark.parametrize(
    "text, message",
    [
        ("{not json", "not valid JSON"),
        ("[1, 2]", "expected a JSON object"),
        (json.dumps(_weights_dict(format="cpdm-weights/9")), "format"),
        (json.dumps({k: v for k, v in _weights_dict().items() if k != "x_ref"}), "missing field 'x_ref'"),
        (json.dumps(_weights_dict(w=1.5)), "'w' must lie in"),
        (json.dumps(_weights_dict(w="0.5")), "'w' must be a number"),
        (json.dumps(_weights_dict(x_ref=0)), "'x_ref' must be a positive"),
        (json.dumps(_weights_dict(style="")), "'style' must be a non-empty"),
        (json.dumps(_weights_dict(n_pairs=-1)), "'n_pairs'"),
        (json.dumps(_weights_dict(surprise=1)), "unknown field 'surprise'"),
    ],
)
def test_malformed_weights_name_file_and_field(tmp_path, text, message):
    path = tmp_path / "weights.json"
    path.write_text(text)
    with pytest.raises(MetricError, match=message) as info:
        load_weights(path)
    assert str(path) in str(info.value)


def test_missing_weights_file(tmp_path):
    with pytest.raises(MetricError, match="not found"):
        load_weights(tmp_path / "nope.json")


def test_weights_refuse_other_backbones():
    weights = Weights.from_dict(_weights_dict())
    weights.check_backbones("ViT-L-14/openai", "vgg19")
    with pytest.raises(MetricError, match="calibrated for semantic=ViT-L-14/openai style=vgg19"):
        weights.check_backbones("ViT-L-14/openai", "cpdm-inception")
    with pytest.raises(MetricError, match="calibrated for"):
        weights.check_backbones("tiny:ViT-L-14/openai", "tiny:vgg19")


def test_scoring_computes_m_style_with_the_metric_function(monkeypatch):
    """The engine's style distance is metric.m_style on its compact descriptors, not a second formula."""
    from cpdm.scoring.features import LayerGram, style_distance

    a = [LayerGram(gram=np.eye(2)), LayerGram(gram=np.zeros((3, 3)))]
    g = [LayerGram(gram=np.zeros((2, 2))), LayerGram(gram=np.ones((3, 3)))]
    expected = metric.m_style([np.eye(2), np.zeros((3, 3))], [np.zeros((2, 2)), np.ones((3, 3))], [0.5, 2.0])
    assert style_distance(a, g, [0.5, 2.0]) == pytest.approx(expected) == pytest.approx(0.5 * 2 + 2.0 * 9)
    calls = []
    monkeypatch.setattr(metric, "m_style", lambda *args, **kwargs: calls.append(args) or 7.0)
    assert style_distance(a, g, [0.5, 2.0]) == 7.0 and len(calls) == 1


# --- w_std: the weight on standardised log distances ----------------------------------------------------------


def test_w_std_by_hand():
    spreads = metric.LogSpreads(sem=2.0, style=1.0)
    # w_std = w·s_sem / (w·s_sem + (1−w)·s_style): 0.5·2 / (0.5·2 + 0.5·1) = 2/3.
    assert spreads.w_std(0.5) == pytest.approx(2 / 3)
    assert spreads.w(2 / 3) == pytest.approx(0.5)
    # Equal standardised weights are w = s_style / (s_sem + s_style) = 1/3 here …
    assert spreads.equal_weight_w == pytest.approx(1 / 3)
    assert spreads.w_std(1 / 3) == pytest.approx(0.5)
    # … and 0.75 when style's log spread is three times semantics' (the issue's example).
    assert metric.LogSpreads(sem=1.0, style=3.0).equal_weight_w == pytest.approx(0.75)
    assert metric.LogSpreads(sem=1.0, style=3.0).w(0.5) == pytest.approx(0.75)
    # The ends stay put, and equal spreads change nothing.
    assert (spreads.w_std(0.0), spreads.w_std(1.0), spreads.w(0.0), spreads.w(1.0)) == (0.0, 1.0, 0.0, 1.0)
    assert metric.LogSpreads(1.3, 1.3).w_std(0.27) == pytest.approx(0.27)


def test_w_std_ranks_like_w_and_converts_back_monotonically():
    rng = np.random.default_rng(3)
    log_sem, log_style = rng.normal(-1.0, 0.4, 50), rng.normal(2.0, 1.7, 50)
    spreads = metric.LogSpreads(sem=0.4, style=1.7)
    z_sem, z_style = log_sem / spreads.sem, log_style / spreads.style
    for w in (0.1, 0.35, 0.5, 0.8):
        w_std = spreads.w_std(w)
        raw = w * log_sem + (1 - w) * log_style
        standardised = w_std * z_sem + (1 - w_std) * z_style
        # Not just the same ranking: the two scores are proportional, by w·s_sem + (1−w)·s_style.
        assert raw == pytest.approx((w * spreads.sem + (1 - w) * spreads.style) * standardised)
        assert (np.argsort(raw) == np.argsort(standardised)).all()
        assert spreads.w(w_std) == pytest.approx(w)
    grid = np.linspace(0, 1, 21)
    assert (np.diff(spreads.w_std(grid)) > 0).all() and (np.diff(spreads.w(grid)) > 0).all()
    assert spreads.w(spreads.w_std(grid)) == pytest.approx(grid)


def test_log_spreads_of_reference_distances_by_hand():
    # log M_sem = 0, 2 (sd √2); log M_style = 1, 4 (sd 3/√2); the zero distance has no log and is left out.
    spreads = metric.LogSpreads.of([0.0, 1.0, math.e**2], [math.e, math.e**4, 0.0])
    assert (spreads.sem, spreads.style) == (pytest.approx(math.sqrt(2)), pytest.approx(3 / math.sqrt(2)))
    assert spreads.equal_weight_w == pytest.approx(0.6)
    with pytest.raises(MetricError, match="does not vary"):
        metric.LogSpreads.of([0.5, 0.5, 0.5], [1.0, 2.0, 3.0])
    with pytest.raises(MetricError, match="two reference pairs"):
        metric.LogSpreads.of([0.0, 0.5], [1.0, 2.0])
    with pytest.raises(MetricError, match="positive number"):
        metric.LogSpreads(0.0, 1.0)


def test_weights_carry_w_std_with_its_spreads(tmp_path):
    spreads = metric.LogSpreads(sem=2.0, style=1.0)
    data = _weights_dict(w=0.5, w_std=spreads.w_std(0.5), log_sd_sem=2.0, log_sd_style=1.0)
    weights = Weights.from_dict(data)
    assert weights.w_std == pytest.approx(2 / 3) and weights.spreads == spreads
    assert Weights.from_dict(json.loads(weights.to_json())) == weights
    assert weights.cm(0.5, 2.0) == pytest.approx(metric.cm_weighted(0.5, 2.0, 0.5, 1.23))  # scoring reads w
    # A file without w_std (an older cpdm's) writes back without it.
    assert "w_std" not in Weights.from_dict(_weights_dict()).to_dict()


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"w_std": 0.5, "log_sd_sem": 2.0, "log_sd_style": 1.0}, "w = 0.35 with these log spreads gives w_std = 0.518"),
        ({"w_std": 0.5, "log_sd_sem": 2.0}, "field 'log_sd_style' is missing"),
        ({"w_std": "half", "log_sd_sem": 2.0, "log_sd_style": 1.0}, "'w_std' must be a number"),
        ({"w_std": 0.0, "log_sd_sem": -1.0, "log_sd_style": 1.0}, "spread of log M_sem must be a positive"),
    ],
)
def test_weights_refuse_a_w_std_that_does_not_follow_from_w(tmp_path, changes, message):
    path = tmp_path / "weights.json"
    path.write_text(json.dumps(_weights_dict(**changes)))
    with pytest.raises(MetricError, match=message) as info:
        load_weights(path)
    assert str(path) in str(info.value)


def test_weights_record_the_kind_of_judgment_they_were_fitted_to():
    weights = Weights(w=0.4, x_ref=2.0, semantic="s", style="t", judgment_kind="2afc")
    data = json.loads(weights.to_json())
    assert data["judgment_kind"] == "2afc"
    assert Weights.from_dict(data) == weights
    # An older file without the field reads as ratings.
    del data["judgment_kind"]
    assert Weights.from_dict(data).judgment_kind == "rating"
    with pytest.raises(MetricError, match="'judgment_kind' must be one of rating, 2afc"):
        Weights.from_dict({**data, "judgment_kind": "likert"})
