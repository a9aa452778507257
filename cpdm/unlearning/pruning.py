r"""Pruning, a baseline the CPDM paper names (Ma et al., 2024), as cpdm implements it.

Procedure.
    1. Channels. For every feed-forward layer of the UNet's transformer
       blocks, record the mean absolute activation a_j of each hidden
       channel j (the input of ``ff.net.2``) on the concept's prompts and on
       neutral prompts, over the same noisy latents and timesteps. Choose,
       per layer, the fraction ``channel_fraction`` of channels with the
       largest excess  a_j(concept) − a_j(neutral).
    2. Weights. Inside the chosen channels (the columns j of
       ``ff.net.2.weight``) zero the fraction ``weight_fraction`` of weights
       with the largest |∂L_forget/∂w|, where L_forget is the diffusion loss
       on the concept's images captioned with the concept.
    3. The mask (which weights were zeroed) is kept in the artifact's JSON
       (``run.mask``: flat indices per parameter); applying it twice
       changes nothing.

Which parameters change: ``*.ff.net.2.weight`` of every transformer block.

Source. The CPDM paper (Ma et al., 2024, arXiv 2403.12052) and its project
page name pruning as one of their baselines and publish no code or
settings for it. Everything above is cpdm's own: choosing channels by their
excess activation on the concept's prompts over neutral ones
(:data:`NEUTRAL_PROMPTS`), zeroing weights inside them by the gradient of
the forget loss, the feed-forward output layers as the place to prune, and
every default. The forget images, when ``--images`` is not given, are the
base model's own generations of the concept (DDIM, ``concept_steps``,
guidance 7.5, as latents).

Defaults: ``channel_fraction`` 0.1 and ``weight_fraction`` 0.5, so about
5 % of each feed-forward output layer's weights are zeroed; 5 timesteps and
8 concept images. The first default was 0.01 (about 0.5 % zeroed); on the
tiny pipeline that left the concept's images unchanged to a tenth of a grey
level. Measured there (``benchmarks/bench_unlearning.py --pruning-sweep``:
target prompts naming the concept, retain prompts not; CM change against
the base model's own images; the tiny feed-forwards have 32 hidden channels,
so at least one channel is chosen and the zeroed share is rounded):

    channel_fraction  zeroed  target CM change  retain CM change  target image change
    0.01 (old default)  1.6 %     −2.6e−9           −5.1e−8           0.10 grey levels
    0.05 (5×)           3.1 %     −3.2e−7           −2.1e−6           0.30
    0.1  (10×, default) 4.7 %     −3.0e−6           −3.7e−6           0.50
    1.0, all weights  100 %       −4.0e−3           −2.6e−2           1.33

At 10× the concept's CM moves a thousand times as far as at the old
default. The tiny model is random and holds no concept, so the retain
prompts move as much: these figures show strength, not specificity, which
only a real model can show (``cpdm unlearning report``).
"""

from __future__ import annotations

import torch

from cpdm.unlearning.base import (
    Method,
    TrainingOptions,
    UnlearnRequest,
    diffusion_loss,
    encode_text,
    generated_latents,
    image_latents,
    randn,
    replaced_tensors,
    step_generator,
    training_scheduler,
    unet_latent_shape,
)

NEUTRAL_PROMPTS = ("a photo", "a painting", "a landscape", "a portrait of a person", "a city street", "an animal")
FFN_OUT = ".ff.net.2"


def ffn_layers(unet) -> dict[str, torch.nn.Linear]:
    """The output projection of every transformer feed-forward, by module name."""
    return {name: module for name, module in unet.named_modules() if name.endswith(FFN_OUT)}


@torch.no_grad()
def channel_activations(unet, contexts: torch.Tensor, latents: torch.Tensor, timesteps) -> dict[str, torch.Tensor]:
    """Mean |activation| of each feed-forward hidden channel over prompts, latents and timesteps."""
    layers = ffn_layers(unet)
    sums = {name: torch.zeros(layer.in_features, device=latents.device) for name, layer in layers.items()}

    def recorder(name):
        def record(module, inputs, output) -> None:  # returns None: the layer's output stays as it is
            sums[name].add_(inputs[0].abs().float().mean(dim=(0, 1)))
        return record

    handles = [layer.register_forward_hook(recorder(name)) for name, layer in layers.items()]
    try:
        for t in timesteps:
            for context in contexts:
                unet(latents, t, encoder_hidden_states=context.expand(len(latents), -1, -1))
    finally:
        for handle in handles:
            handle.remove()
    runs = len(timesteps) * len(contexts)
    return {name: total / runs for name, total in sums.items()}


def choose_channels(concept: torch.Tensor, neutral: torch.Tensor, fraction: float) -> torch.Tensor:
    """Indices of the channels whose activation most exceeds the neutral one (at least one)."""
    count = max(1, round(fraction * len(concept)))
    return torch.topk(concept - neutral, count).indices.sort().values


def weight_mask(gradient: torch.Tensor, channels: torch.Tensor, fraction: float) -> torch.Tensor:
    """A boolean mask of the weights to zero: in the chosen columns, the ``fraction`` with the largest |gradient|."""
    candidates = torch.zeros_like(gradient, dtype=torch.bool)
    candidates[:, channels] = True
    count = round(fraction * int(candidates.sum()))
    mask = torch.zeros_like(candidates)
    if count:
        scores = gradient.abs().masked_fill(~candidates, -1.0).flatten()
        mask.view(-1)[torch.topk(scores, count).indices] = True
    return mask


def apply_mask(weight: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The weight with the masked entries zeroed (idempotent)."""
    return weight.masked_fill(mask, 0.0)


class Pruning(Method):
    """Pruning: zero the most forget-relevant weights of the most concept-specific channels."""

    name = "pruning"

    def trainable_names(self, unet, params):
        return [f"{name}.weight" for name in ffn_layers(unet)]

    def run(self, pipe, request: UnlearnRequest, params: dict, options: TrainingOptions) -> dict[str, torch.Tensor]:
        unet = pipe.unet
        device = unet.device
        generator = step_generator(request.seed, 0)
        concept_contexts, _ = encode_text(pipe, list(request.concepts))
        neutral_contexts, _ = encode_text(pipe, list(NEUTRAL_PROMPTS))
        latents = randn(unet_latent_shape(unet, 2), generator, device)
        count = pipe.scheduler.config.num_train_timesteps
        timesteps = torch.linspace(count * 0.1, count * 0.9, params["timesteps"]).round().long().tolist()
        concept_act = channel_activations(unet, concept_contexts[:, None], latents, timesteps)
        neutral_act = channel_activations(unet, neutral_contexts[:, None], latents, timesteps)

        if request.images:
            x0 = image_latents(pipe, request.images, generator)
        else:
            prompts = [request.concepts[i % len(request.concepts)] for i in range(params["concept_images"])]
            x0 = generated_latents(pipe, prompts, request.seed, params["concept_steps"], 7.5)
        forget_context, _ = encode_text(pipe, [", ".join(request.concepts)])
        layers = ffn_layers(unet)
        unet.requires_grad_(False)
        for layer in layers.values():
            layer.weight.requires_grad_(True)
        loss = diffusion_loss(unet, training_scheduler(pipe), x0, forget_context.expand(len(x0), -1, -1), generator)
        loss.backward()

        channels_record, mask_record = {}, {}
        with torch.no_grad():
            for name, layer in layers.items():
                channels = choose_channels(concept_act[name], neutral_act[name], params["channel_fraction"])
                mask = weight_mask(layer.weight.grad, channels, params["weight_fraction"])
                layer.weight.copy_(apply_mask(layer.weight, mask))
                layer.weight.grad = None
                channels_record[name] = channels.tolist()
                mask_record[f"{name}.weight"] = mask.flatten().nonzero().flatten().tolist()
        unet.requires_grad_(False)
        request.record.update(channels=channels_record, mask=mask_record)
        return replaced_tensors(unet, self.trainable_names(unet, params))
