"""Unlearning methods move the model the intended way, and change exactly their parameters."""

from __future__ import annotations

import copy

import pytest
import torch

from cpdm.diffusion.tiny import tiny_sd_pipeline
from cpdm.unlearning import get_method
from cpdm.unlearning.base import TrainingOptions, UnlearnRequest, encode_text, named_parameters
from cpdm.unlearning.esd import cross_attention_names, esd_loss, non_cross_attention_names
from cpdm.diffusion.sld import SLDSettings, sld_guidance
from cpdm.unlearning.sld import PRESETS
from cpdm.testing import uce_closed_form

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
    from cpdm.unlearning.uce import edit_rows

    edit_keys, guide_keys = edit_rows(pipe, [CONCEPT], [""], params["release"])
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


def test_esd_u_offers_the_newer_releases_parameter_set_and_records_it():
    """esd_sd.py's esd-u: every Linear and Conv2d outside attn2 (time embedding and conv_out too), no norms."""
    from cpdm.unlearning.esd import linear_and_conv_names_outside_cross_attention

    unet = tiny_sd_pipeline(seed=0).unet
    method = get_method("esd-u")
    original = set(method.trainable_names(unet, method.resolve_params({})))
    newer = set(method.trainable_names(unet, method.resolve_params({"parameters": "esd-u-2025"})))
    assert newer == set(linear_and_conv_names_outside_cross_attention(unet))
    assert newer - original == {"time_embedding.linear_1.weight", "time_embedding.linear_1.bias",
                                "time_embedding.linear_2.weight", "time_embedding.linear_2.bias",
                                "conv_out.weight", "conv_out.bias"}
    modules = dict(unet.named_modules())
    left_out = original - newer
    assert left_out and all(isinstance(modules[name.rsplit(".", 1)[0]], (torch.nn.GroupNorm, torch.nn.LayerNorm))
                            for name in left_out)
    assert not any(".attn2." in name for name in newer)

    before, after, tensors, names = _run("esd-u", {"iterations": 1, "ddim_steps": 1, "lr": 1e-3,
                                                   "parameters": "esd-u-2025"})
    assert set(names) == newer
    _assert_changes_exactly(before, after, tensors, names)

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
    from cpdm.diffusion.sld import SLDPipeline

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


# --- Concept Ablation ------------------------------------------------------------------------------

@pytest.mark.slow
def test_ablation_closes_the_gap_to_the_anchor_prediction_and_its_target_has_no_gradient():
    from cpdm.unlearning.ablation import ablation_loss, region_mse, valid_region
    from cpdm.unlearning.uce import projection_names

    pipe = tiny_sd_pipeline(seed=0)
    unet = pipe.unet
    original = copy.deepcopy(unet).requires_grad_(False)
    anchor, _ = encode_text(pipe, ["a painting of a house"])
    target, _ = encode_text(pipe, ["a painting of a house in the style of claude monet"])
    generator = torch.Generator().manual_seed(0)
    x_t, t = torch.randn(1, 4, 8, 8, generator=generator), torch.tensor(300)

    def gap():
        with torch.no_grad():
            return float((unet(x_t, t, encoder_hidden_states=target).sample
                          - original(x_t, t, encoder_hidden_states=anchor).sample).norm())

    region = valid_region(8, 8)
    parameters = named_parameters(unet, projection_names(unet))
    # The target carries no gradient: the gradient is that of a regression onto a constant.
    ablation_loss(unet, x_t, t, target, anchor, region).backward()
    ours = {name: p.grad.clone() for name, p in parameters.items()}
    for p in parameters.values():
        p.grad = None
    constant = unet(x_t, t, encoder_hidden_states=anchor).sample.detach()
    region_mse(unet(x_t, t, encoder_hidden_states=target).sample, constant, region).backward()
    for name, p in parameters.items():
        torch.testing.assert_close(ours[name], p.grad)
        p.grad = None

    start = gap()
    optimizer = torch.optim.Adam(parameters.values(), lr=3e-3)
    for _ in range(15):
        optimizer.zero_grad()
        ablation_loss(unet, x_t, t, target, anchor, region).backward()
        optimizer.step()
    assert gap() < 0.5 * start


def test_the_ablation_loss_sums_channels_over_the_region_as_the_authors_mask_does():
    """Their masked error: the 4 channels summed, the region's border left out, divided by the region's size."""
    from cpdm.unlearning.ablation import region_mse, valid_region

    generator = torch.Generator().manual_seed(0)
    prediction, target = torch.randn(2, 4, 8, 8, generator=generator), torch.randn(2, 4, 8, 8, generator=generator)
    region = valid_region(8, 8)
    assert region.sum() == 36 and region[..., 0, :].sum() == 0 and region[..., :, -1].sum() == 0
    inner = (prediction - target)[..., 1:7, 1:7] ** 2
    torch.testing.assert_close(region_mse(prediction, target, region), inner.sum(dim=(1, 2, 3)).mean() / 36)
    torch.testing.assert_close(region_mse(prediction, target, region), 4 * inner.mean())


def test_ablation_style_captions_take_the_authors_three_templates():
    from cpdm.unlearning.ablation import target_caption

    made = [target_caption("a painting of a house", "claude monet", "style", "painting", k) for k in range(3)]
    assert made == ["a painting of a house, in the style of claude monet",
                    "in claude monet's style, a painting of a house", "in claude monet's style, a painting of a house"]
    assert target_caption("A dog and a Dog", "snoopy", "object", "dog") == "A snoopy and a snoopy"


def _recorded_texts(monkeypatch):
    """Every text the ablation encodes, in order (the anchor captions and their targets)."""
    from cpdm.unlearning import ablation

    texts = []
    real = ablation.encode_text

    def recording(pipe, batch):
        texts.append(list(batch))
        return real(pipe, batch)

    monkeypatch.setattr(ablation, "encode_text", recording)
    return texts


def test_object_ablation_captions_show_the_object_and_the_target_takes_its_place(monkeypatch):
    """Object mode trains on captions of the object ("a photo of a dog in a garden"), never "a dog of a house"."""
    texts = _recorded_texts(monkeypatch)
    _run("ablation", {"iterations": 2, "batch_size": 2, "concept_type": "object", "anchor": "dog", "n_images": 2,
                      "anchor_steps": 1, "caption_count": 4}, concepts=("snoopy",))
    flat = [text for batch in texts for text in batch]
    anchors = [text for text in flat if "snoopy" not in text]
    targets = [text for text in flat if "snoopy" in text]
    assert anchors and targets
    for text in flat:
        assert " of a house" not in text and not text.startswith(("a dog of", "a snoopy of"))
    assert all("dog" in text for text in anchors) and not any("dog" in text for text in targets)
    assert {text.replace("dog", "snoopy") for text in anchors} >= set(targets)


def test_regularization_adds_the_weighted_diffusion_loss_and_doubles_the_scaled_learning_rate(monkeypatch):
    """As the authors: L + w·L_prior, and scale_lr's rate doubles with the doubled batch."""
    from cpdm.unlearning import ablation

    first_losses, rates = {}, []
    real_adamw = torch.optim.AdamW

    def adamw(parameters, lr, **kwargs):
        rates.append(lr)
        return real_adamw(parameters, lr=lr, **kwargs)

    def first_loss_only(parameters, optimizer, step_loss, steps, options, fingerprint, **kwargs):
        first_losses[len(rates)] = float(step_loss(0))
        return []

    monkeypatch.setattr(torch.optim, "AdamW", adamw)
    monkeypatch.setattr(ablation, "train_loop", first_loss_only)
    small = {"batch_size": 2, "n_images": 2, "anchor_steps": 1, "caption_count": 2}
    for changes in ({}, {"regularization": True, "prior_loss_weight": 0.0}, {"regularization": True},
                    {"regularization": True, "prior_loss_weight": 2.0}):
        _run("ablation", {**small, **changes})
    assert rates == pytest.approx([2e-6 * 2, 2e-6 * 4, 2e-6 * 4, 2e-6 * 4])
    plain, weight_zero, weight_one, weight_two = (first_losses[i] for i in (1, 2, 3, 4))
    assert weight_zero == pytest.approx(plain, rel=1e-6)
    prior = weight_one - plain
    assert prior > 0 and weight_two - plain == pytest.approx(2 * prior, rel=1e-4)

def test_ablation_captions_from_an_openai_compatible_server(monkeypatch, tmp_path):
    """captions=openai: the anchor captions are the server's (a local OpenAI-compatible one here)."""
    from tests.test_refine import FakeChatServer, _completion

    texts = _recorded_texts(monkeypatch)
    answer = "1. A dog asleep on a rug.\n2. A dog chasing a ball.\n3. A cat."
    with FakeChatServer([(200, _completion(answer), {})]) as server:
        monkeypatch.setenv("CPDM_LLM_BASE_URL", server.url)
        monkeypatch.setenv("CPDM_LLM_MODEL", "local-llm")
        method = get_method("ablation")
        params = method.resolve_params({"iterations": 1, "batch_size": 4, "concept_type": "object", "anchor": "dog",
                                        "n_images": 2, "anchor_steps": 1, "caption_count": 2, "captions": "openai"})
        request = UnlearnRequest(concepts=("snoopy",), params=params)
        method.run(tiny_sd_pipeline(seed=0), request, params,
                   TrainingOptions(progress=False, cache_dir=tmp_path / "cache"))
    assert [r["body"]["model"] for r in server.requests] == ["local-llm"]
    anchors = {text for batch in texts for text in batch if "snoopy" not in text}
    assert anchors <= {"A dog asleep on a rug.", "A dog chasing a ball."} and anchors
    assert request.record["anchor_captions"] == 2

def test_flips_mirror_about_half_the_images_and_only_when_asked():
    from cpdm.unlearning.ablation import flipped

    pixels = torch.arange(2 * 3 * 4 * 5, dtype=torch.float32).reshape(2, 3, 4, 5).repeat(50, 1, 1, 1)
    out = flipped(pixels, torch.Generator().manual_seed(0), enabled=True)
    mirrored = [torch.equal(o, p.flip(-1)) for o, p in zip(out, pixels)]
    assert all(m or torch.equal(o, p) for m, o, p in zip(mirrored, out, pixels))
    assert 30 < sum(mirrored) < 70
    assert torch.equal(flipped(pixels, torch.Generator().manual_seed(0), enabled=False), pixels)


def test_ablation_changes_exactly_the_cross_attention_keys_and_values():
    before, after, tensors, names = _run("ablation", {"iterations": 2, "batch_size": 2, "lr": 1e-3, "n_images": 2,
                                                      "anchor_steps": 1, "caption_count": 2})
    assert all(name.endswith((".attn2.to_k.weight", ".attn2.to_v.weight")) for name in names)
    _assert_changes_exactly(before, after, tensors, names)


# --- gradient ascent -------------------------------------------------------------------------------

def _forget_images(folder, count=2):
    from tests.conftest import write_png

    return tuple(write_png(folder / f"forget{i}.png", seed=i, size=(64, 64)) for i in range(count))


def _forget_loss(pipe, images):
    from cpdm.unlearning.base import diffusion_loss, image_latents, training_scheduler

    x0 = image_latents(pipe, images)
    context, _ = encode_text(pipe, [CONCEPT])
    with torch.no_grad():
        return sum(float(diffusion_loss(pipe.unet, training_scheduler(pipe), x0, context.expand(len(x0), -1, -1),
                                        torch.Generator().manual_seed(seed))) for seed in range(4))


@pytest.mark.slow
def test_gradient_ascent_raises_the_forget_loss_and_changes_every_unet_parameter(tmp_path):
    images = _forget_images(tmp_path)
    pipe = tiny_sd_pipeline(seed=0)
    method = get_method("gradient-ascent")
    params = method.resolve_params({"iterations": 3, "lr": 1e-3, "batch_size": 2, "retain_images": 1,
                                    "retain_steps": 1})
    before_state, before_loss = _state(pipe.unet), _forget_loss(pipe, images)
    request = UnlearnRequest(concepts=(CONCEPT,), images=images, params=params)
    tensors = method.run(pipe, request, params, TrainingOptions(progress=False))
    assert _forget_loss(pipe, images) > before_loss
    assert sorted(tensors) == sorted(before_state)
    assert request.record["steps_run"] == 3


def test_gradient_ascent_stops_on_divergence_and_on_nan(tmp_path, monkeypatch):
    from cpdm.unlearning import gradient_ascent
    from cpdm.unlearning.base import NonFiniteLoss

    images = _forget_images(tmp_path)
    method = get_method("gradient-ascent")
    params = method.resolve_params({"iterations": 6, "lr": 0.5, "batch_size": 2, "retain_images": 1,
                                    "retain_steps": 1, "divergence": 1.5})
    request = UnlearnRequest(concepts=(CONCEPT,), images=images, params=params)
    method.run(tiny_sd_pipeline(seed=0), request, params, TrainingOptions(progress=False))
    assert 1 <= request.record["stopped_early_at_step"] < 6
    assert request.record["steps_run"] == request.record["stopped_early_at_step"]

    real = gradient_ascent.diffusion_loss
    monkeypatch.setattr(gradient_ascent, "diffusion_loss", lambda *a, **k: real(*a, **k) * float("inf"))
    with pytest.raises(NonFiniteLoss, match="at step 0"):
        method.run(tiny_sd_pipeline(seed=0), UnlearnRequest(concepts=(CONCEPT,), images=images, params=params),
                   params, TrainingOptions(progress=False))


# --- pruning ---------------------------------------------------------------------------------------

def test_pruning_chooses_a_planted_concept_specific_channel():
    from cpdm.unlearning.pruning import choose_channels

    generator = torch.Generator().manual_seed(0)
    neutral = torch.rand(200, generator=generator)
    concept = neutral + 0.01 * torch.rand(200, generator=generator)
    concept[137] += 1.0  # fires on the concept's prompts only
    concept[12] += 0.5
    assert choose_channels(concept, neutral, 0.005).tolist() == [137]
    assert choose_channels(concept, neutral, 0.01).tolist() == [12, 137]


def test_pruning_records_activations_of_every_feed_forward_channel():
    from cpdm.unlearning.pruning import channel_activations, ffn_layers

    pipe = tiny_sd_pipeline(seed=0)
    contexts, _ = encode_text(pipe, [CONCEPT, "a photo"])
    activations = channel_activations(pipe.unet, contexts[:, None], torch.randn(1, 4, 8, 8), [500])
    layers = ffn_layers(pipe.unet)
    assert set(activations) == set(layers) and layers
    for name, values in activations.items():
        assert values.shape == (layers[name].in_features,) and (values > 0).all()


def test_pruning_zeroes_exactly_the_asked_fraction_and_its_mask_is_idempotent():
    from cpdm.unlearning.pruning import apply_mask

    pipe = tiny_sd_pipeline(seed=0)
    method = get_method("pruning")
    params = method.resolve_params({"channel_fraction": 0.25, "weight_fraction": 0.5, "timesteps": 1,
                                    "concept_images": 1, "concept_steps": 1})
    before = _state(pipe.unet)
    request = UnlearnRequest(concepts=(CONCEPT,), params=params)
    tensors = method.run(pipe, request, params, TrainingOptions(progress=False))
    after = _state(pipe.unet)
    names = method.trainable_names(pipe.unet, params)
    _assert_changes_exactly(before, after, tensors, names)
    for name in names:
        module = name.removesuffix(".weight")
        channels = request.record["channels"][module]
        rows, hidden = before[name].shape
        assert len(channels) == round(0.25 * hidden)
        zeroed = torch.tensor(request.record["mask"][name], dtype=torch.long)
        assert len(zeroed) == round(0.5 * rows * len(channels))
        flat_before, flat_after = before[name].flatten(), after[name].flatten()
        assert (flat_after[zeroed] == 0).all()
        kept = torch.ones_like(flat_after, dtype=torch.bool)
        kept[zeroed] = False
        assert torch.equal(flat_after[kept], flat_before[kept])
        assert set((zeroed % hidden).tolist()) <= set(channels)  # only inside the chosen channels
        mask = torch.zeros_like(flat_after, dtype=torch.bool)
        mask[zeroed] = True
        mask = mask.view_as(after[name])
        assert torch.equal(apply_mask(apply_mask(after[name], mask), mask), after[name])


def test_pruning_by_default_zeroes_about_a_twentieth_of_each_feed_forward_output_layer():
    """10x the first default (0.5 %), which left the tiny pipeline's images unchanged (see pruning's docstring)."""
    pipe = tiny_sd_pipeline(seed=0)
    method = get_method("pruning")
    params = method.resolve_params({"timesteps": 1, "concept_images": 1, "concept_steps": 1})
    request = UnlearnRequest(concepts=(CONCEPT,), params=params)
    method.run(pipe, request, params, TrainingOptions(progress=False))
    for name in method.trainable_names(pipe.unet, params):
        share = len(request.record["mask"][name]) / pipe.unet.get_parameter(name).numel()
        assert 0.04 < share < 0.06, (name, share)  # 3 of 32 channels, half their weights: 4.7 %

def test_esd_in_bfloat16_keeps_float32_master_weights_that_take_small_updates():
    """Updates of lr 1e-5 vanish in bfloat16 weights (8 significant bits); the float32 masters keep them."""
    pipe = tiny_sd_pipeline(seed=0)
    method = get_method("esd-x")
    params = method.resolve_params({"iterations": 2, "ddim_steps": 1})
    before = _state(pipe.unet)
    request = UnlearnRequest(concepts=(CONCEPT,), params=params)
    tensors = method.run(pipe, request, params, TrainingOptions(progress=False, autocast_dtype=torch.bfloat16))
    for name, tensor in tensors.items():
        assert tensor.dtype == torch.float32
        assert not torch.equal(tensor, before[name])
        change = (tensor - before[name]).abs()
        assert change.max() < 1e-4
        # Stored in bfloat16, most of these weights would not have moved at all.
        lost_in_bfloat16 = tensor.to(torch.bfloat16) == before[name].to(torch.bfloat16)
        assert lost_in_bfloat16.float().mean() > 0.5
