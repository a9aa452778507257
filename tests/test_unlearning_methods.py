"""Unlearning methods move the model the intended way, and change exactly their parameters."""

from __future__ import annotations

import copy

import pytest
import torch

from cpdm.generation.pipeline import tiny_sd_pipeline
from cpdm.unlearning import get_method
from cpdm.unlearning.base import TrainingOptions, UnlearnRequest, encode_text, named_parameters
from cpdm.unlearning.esd import cross_attention_names, esd_loss, non_cross_attention_names
from cpdm.unlearning.sld import PRESETS, SLDSettings, sld_guidance
from cpdm.unlearning.uce import uce_closed_form

CONCEPT = "a painting by claude monet"


def _state(unet) -> dict[str, torch.Tensor]:
    return {name: tensor.detach().clone() for name, tensor in unet.state_dict().items()}


def _run(method_name: str, params: dict, concepts=(CONCEPT,), preserve=()):
    """Run a method on a fresh tiny pipeline; return (state before, state after, returned tensors, names)."""
    pipe = tiny_sd_pipeline(seed=0)
    method = get_method(method_name)
    resolved = method.resolve_params(params)
    before = _state(pipe.unet)
    request = UnlearnRequest(concepts=tuple(concepts), preserve=tuple(preserve), params=resolved, seed=3)
    tensors = method.run(pipe, request, resolved, TrainingOptions(progress=False))
    return before, _state(pipe.unet), tensors, method.trainable_names(pipe.unet, resolved)


def _assert_changes_exactly(before, after, tensors, names):
    assert sorted(tensors) == sorted(names) and names
    for name in before:
        if name in names:
            assert not torch.equal(before[name], after[name]), f"{name} did not change"
            assert torch.equal(tensors[name], after[name])
        else:
            assert torch.equal(before[name], after[name]), f"{name} changed but is not the method's"


# --- UCE -------------------------------------------------------------------------------------------

def _unit_rows(generator, count, dim, norm=28.0):
    rows = torch.randn(count, dim, generator=generator, dtype=torch.float64)
    return rows / rows.norm(dim=1, keepdim=True) * norm  # CLIP's token embeddings have norms near 28


def test_uce_maps_erased_concepts_to_their_guide_and_keeps_preserved_ones():
    generator = torch.Generator().manual_seed(0)
    dim, out = 32, 16
    w0 = torch.randn(out, dim, generator=generator, dtype=torch.float64) / dim**0.5
    edits, guides = _unit_rows(generator, 2, dim), _unit_rows(generator, 2, dim)
    preserved = _unit_rows(generator, 3, dim)
    w = uce_closed_form(w0, edits, guides, preserved, lamb=0.5, erase_scale=1.0, preserve_scale=1.0)

    target = guides @ w0.T
    assert ((edits @ w.T - target).norm(dim=1) / target.norm(dim=1)).max() < 1e-2
    kept = preserved @ w0.T
    assert ((preserved @ w.T - kept).norm(dim=1) / kept.norm(dim=1)).max() < 1e-2
    assert not torch.allclose(w, w0)

    # A direction orthogonal to every edit and preserve embedding maps exactly as before.
    basis = torch.linalg.qr(torch.cat([edits, preserved]).T, mode="complete").Q
    orthogonal = basis[:, 5:].T
    torch.testing.assert_close(orthogonal @ w.T, orthogonal @ w0.T, rtol=0, atol=1e-12)


def test_uce_changes_exactly_the_cross_attention_keys_and_values():
    before, after, tensors, names = _run("uce", {})
    assert names and all(name.endswith((".attn2.to_k.weight", ".attn2.to_v.weight")) for name in names)
    _assert_changes_exactly(before, after, tensors, names)


def test_uce_moves_the_concept_keys_of_the_real_pipeline_to_the_guide():
    pipe = tiny_sd_pipeline(seed=0)
    method = get_method("uce")
    params = method.resolve_params({"concept_type": "object"})
    from cpdm.unlearning.uce import concept_keys

    edit_keys, guide_keys = concept_keys(pipe, [CONCEPT], [""])
    name = method.trainable_names(pipe.unet, params)[0]
    w0 = pipe.unet.state_dict()[name].clone()
    gap_before = (edit_keys @ w0.T - guide_keys @ w0.T).norm()
    method.run(pipe, UnlearnRequest(concepts=(CONCEPT,)), params, TrainingOptions(progress=False))
    w = pipe.unet.state_dict()[name]
    assert (edit_keys @ w.T - guide_keys @ w0.T).norm() < 0.5 * gap_before


# --- ESD -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("method_name", ["esd-x", "esd-u"])
def test_esd_changes_exactly_its_parameters(method_name):
    before, after, tensors, names = _run(method_name, {"iterations": 2, "ddim_steps": 2, "lr": 1e-3})
    _assert_changes_exactly(before, after, tensors, names)


def test_esd_x_and_esd_u_split_the_unet():
    unet = tiny_sd_pipeline(seed=0).unet
    cross, rest = set(cross_attention_names(unet)), set(non_cross_attention_names(unet))
    assert cross and rest and not cross & rest
    left_out = {name for name, _ in unet.named_parameters()} - cross - rest
    assert left_out and all(name.startswith(("time_embedding.", "conv_norm_out.", "conv_out.")) for name in left_out)


@pytest.mark.slow
def test_esd_pushes_the_concept_prediction_to_negative_guidance():
    """On a fixed (x_t, t) the projection of ε_θ(c) − ε*(∅) on ε*(c) − ε*(∅) falls from 1 toward −η."""
    pipe = tiny_sd_pipeline(seed=0)
    unet = pipe.unet
    frozen = copy.deepcopy(unet).requires_grad_(False)
    emb_uncond, _ = encode_text(pipe, [""])
    emb_concept, _ = encode_text(pipe, [CONCEPT])
    generator = torch.Generator().manual_seed(0)
    x_t, t = torch.randn(1, 4, 8, 8, generator=generator), torch.tensor(500)
    eta = 1.0

    def projection():
        with torch.no_grad():
            trained = unet(x_t, t, encoder_hidden_states=emb_concept).sample
            uncond = frozen(x_t, t, encoder_hidden_states=emb_uncond).sample
            concept = frozen(x_t, t, encoder_hidden_states=emb_concept).sample
        direction = concept - uncond
        return float(((trained - uncond) * direction).sum() / (direction * direction).sum())

    assert projection() == pytest.approx(1.0, abs=1e-5)
    parameters = named_parameters(unet, cross_attention_names(unet))
    optimizer = torch.optim.Adam(parameters.values(), lr=3e-3)
    losses = []
    for _ in range(25):
        optimizer.zero_grad()
        loss = esd_loss(unet, frozen, x_t, t, emb_concept, emb_uncond, eta)
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    final = float(esd_loss(unet, frozen, x_t, t, emb_concept, emb_uncond, eta).detach())
    assert final < 0.5 * losses[0]
    assert projection() < 0.0  # from +1 past 0 toward −η = −1


# --- SLD -------------------------------------------------------------------------------------------

def _eps(seed):
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(1, 4, 8, 8, generator=generator) * 0.1 for _ in range(3)]


def test_sld_equals_plain_guidance_before_warmup_and_at_scale_zero():
    uncond, text, concept = _eps(0)
    plain = uncond + 7.5 * (text - uncond)
    settings = PRESETS["MEDIUM"]
    momentum = None
    for step in range(settings.warmup_steps):
        guided, momentum = sld_guidance(uncond, text, concept, momentum, step, 7.5, settings)
        torch.testing.assert_close(guided, plain, rtol=0, atol=0)
    assert momentum.abs().sum() > 0  # momentum builds up during the warm-up
    off = SLDSettings(warmup_steps=0, guidance_scale=0.0, threshold=0.01, momentum_scale=0.3, mom_beta=0.4)
    momentum = None
    for step in range(5):
        guided, momentum = sld_guidance(uncond, text, concept, momentum, step, 7.5, off)
        torch.testing.assert_close(guided, plain, rtol=0, atol=0)


def test_sld_pushes_away_from_the_safety_concept_after_warmup():
    uncond, text, concept = _eps(1)
    plain = uncond + 7.5 * (text - uncond)
    for preset in ("WEAK", "MEDIUM", "STRONG", "MAX"):
        settings = PRESETS[preset]
        guided, _ = sld_guidance(uncond, text, concept, None, settings.warmup_steps, 7.5, settings)
        shift = guided - plain
        assert shift.abs().sum() > 0
        assert float((shift * (concept - uncond)).sum()) < 0, preset


@pytest.mark.parametrize("preset", ["MAX", pytest.param("MEDIUM", marks=pytest.mark.slow)])
def test_sld_pipeline_matches_diffusers_safe_pipeline(preset):
    import warnings
    from dataclasses import asdict

    import diffusers

    if not hasattr(diffusers, "StableDiffusionPipelineSafe"):
        pytest.skip("this diffusers no longer ships StableDiffusionPipelineSafe")
    from cpdm.unlearning.sld import SLDPipeline

    pipe = tiny_sd_pipeline(seed=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        safe = diffusers.StableDiffusionPipelineSafe(
            vae=pipe.vae, text_encoder=pipe.text_encoder, tokenizer=pipe.tokenizer, unet=pipe.unet,
            scheduler=pipe.scheduler, safety_checker=None, feature_extractor=None, requires_safety_checker=False,
        )
    safe.set_progress_bar_config(disable=True)
    safe.safety_concept = CONCEPT
    settings = PRESETS[preset]
    steps = settings.warmup_steps + 2  # past the warm-up, so safety guidance acts
    kwargs = dict(height=16, width=16, num_inference_steps=steps, guidance_scale=7.5, output_type="np")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = safe("a portrait of a woman", generator=torch.Generator().manual_seed(5),
                        **kwargs, **{f"sld_{k}": v for k, v in asdict(settings).items()}).images
    ours = SLDPipeline(pipe, CONCEPT, settings)("a portrait of a woman", generator=torch.Generator().manual_seed(5),
                                                **kwargs).images
    plain = pipe("a portrait of a woman", generator=torch.Generator().manual_seed(5), **kwargs).images
    assert abs(ours - plain).max() > 0  # safety guidance changed the image
    assert abs(ours - expected).max() < 1e-5
