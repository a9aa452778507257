r"""ESD: Erasing Concepts from Diffusion Models (Gandikota et al., ICCV 2023).

Objective. With ε* the frozen base UNet and ε_θ the one being trained,

    L(θ) = ‖ ε_θ(x_t, c, t) − [ ε*(x_t, ∅, t) − η (ε*(x_t, c, t) − ε*(x_t, ∅, t)) ] ‖²

averaged over the latent, where c is the concept's text embedding and ∅ the
empty prompt's. x_t is sampled by the frozen model with DDIM (50 steps,
classifier-free guidance 3 on c) from Gaussian noise, stopped after a random
number k ∈ [0, 50) of steps; t is the timestep x_t is then at. The model
learns to predict, for c, the noise of negative guidance away from c.

Which parameters change.
    * ESD-x (``esd-x``): every parameter of the cross-attention layers, the
      diffusers modules ``*.attn2.*`` (to_q, to_k, to_v, to_out.0; weights
      and biases). Erases the concept only where the text enters, so it
      stays specific to prompts that name it (the authors' choice for
      artistic styles). Both releases train this same set.
    * ESD-u (``esd-u``), two sets, chosen by ``parameters``:
        - ``original`` (the default): every UNet parameter except
          ``*.attn2.*``, ``time_embedding.*`` and the output head
          ``conv_norm_out.*`` / ``conv_out.*``: conv_in, the ResNet blocks,
          self-attention ``attn1``, the feed-forwards, norms and projections
          of the transformer blocks, the down/up samplers. These are the
          layers of the original release's ``noxattn`` (CompVis names
          ``time_embed`` and ``out.`` excluded).
        - ``esd-u-2025``: the newer release's esd-u (``esd_sd.py``,
          ``get_esd_trainable_parameters``): the weights and biases of every
          Linear and Conv2d layer outside ``attn2``. It trains the time
          embedding's two layers and ``conv_out``, which the original leaves
          out, and no norm layer (GroupNorm, LayerNorm), which the original
          trains.
      The chosen set is recorded with the variant's hyperparameters.

Defaults (the original release, rohitgandikota/erasing, train-esd.py as of
commit 6eb7dc8): 1000 iterations, Adam, lr 1e-5, η (``negative_guidance``)
= 1, batch 1, DDIM 50 steps, start guidance 3.

η convention. This module exposes the original release's η, in the target
ε*(∅) − η(ε*(c) − ε*(∅)); η = 1 is the published default and a run with
η = 1 reproduces the original objective. The newer diffusers-based release
(the same repository's ``esd_sd.py``, commit 25613d2) writes its target as
ε*(x_t, c_from, t) − η'(ε*(c) − ε*(∅)), where c_from is the concept to
erase from and defaults to c. With c_from = c that target is
ε*(∅) − (η' − 1)(ε*(c) − ε*(∅)): η' = η + 1, and its default η' = 2 is this
module's η = 1. Its other defaults (200 iterations, lr 5e-5, bfloat16
weights) are not this module's; the original release's are kept because
they are the published ones.

Which timestep x_t is paired with. cpdm pairs x_t with exactly the timestep
it is at: after k DDIM steps from pure noise, x_t sits at the sampler's
k-th timestep and the loss is taken there, as the newer release does (it
labels the latent with the scheduler timestep it stopped at). The original
release labels each latent about 47 DDPM steps noisier than it is, at the
same end of the schedule. A replay of its sampler: with t_enc = k drawn from
[0, 50), its CompVis DDIM sampler (timesteps 1, 21, …, 981) stops after the
step at index k − 1, leaving the latent at DDPM timestep 20k − 39, and the
loss is taken at a time drawn uniformly from [20k, 20k + 20): 48.5 steps
noisier on average for k ≥ 2; 29.5 at k = 1 and 9.5 at k = 0, where the
sampler runs to the end and the latent is fully denoised; about 47 over all k.

Departures from the authors' code, and why.
    * x_t comes from the frozen model. The original samples x_t with the
      model being trained; sampling with ε* keeps the training distribution
      fixed, which is what the objective states and what makes a run
      reproducible step by step (and resumable bit for bit).
    * t is the timestep x_t is at (above), not the original's noisier label.
    * Weights stay float32 ("master weights"); a reduced precision is only
      used for the forward passes (autocast). bfloat16 weights round away
      updates of lr 1e-5.
    * With several concepts each step erases one, chosen at random (as the
      original does with a comma-separated prompt).
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from diffusers import DDIMScheduler

from cpdm.unlearning.base import (
    Method,
    TrainingOptions,
    UnlearnRequest,
    autocast,
    encode_text,
    named_parameters,
    randint,
    randn,
    replaced_tensors,
    run_fingerprint,
    step_generator,
    train_loop,
    unet_latent_shape,
)

OUTPUT_HEAD = ("time_embedding.", "conv_norm_out.", "conv_out.")


def cross_attention_names(unet) -> list[str]:
    """Names of every cross-attention (``attn2``) parameter of the UNet."""
    return [name for name, _ in unet.named_parameters() if ".attn2." in name]


def non_cross_attention_names(unet) -> list[str]:
    """Names of the original ESD-u's parameters: all but cross-attention, the time embedding and the output head."""
    return [name for name, _ in unet.named_parameters()
            if ".attn2." not in name and not name.startswith(OUTPUT_HEAD)]


def linear_and_conv_names_outside_cross_attention(unet) -> list[str]:
    """Names of the newer release's ESD-u parameters: those of every Linear and Conv2d layer outside attn2.

    Its release picks layers by class name, so diffusers' LoRA-compatible
    subclasses of Linear and Conv2d count too; norm layers do not.
    """
    kinds = (torch.nn.Linear, torch.nn.Conv2d)
    return [f"{module_name}.{name}" for module_name, module in unet.named_modules()
            if isinstance(module, kinds) and "attn2" not in module_name
            for name, _ in module.named_parameters(recurse=False)]


def esd_target(eps_uncond: torch.Tensor, eps_concept: torch.Tensor, eta: float) -> torch.Tensor:
    """ESD's regression target: ε*(∅) − η (ε*(c) − ε*(∅))."""
    return eps_uncond - eta * (eps_concept - eps_uncond)


def esd_loss(unet, frozen, x_t, t, emb_concept, emb_uncond, eta: float, compute_dtype=None) -> torch.Tensor:
    """The ESD loss of ``unet`` at one (x_t, t): MSE between ε_θ(x_t, c, t) and the negatively guided target."""
    with torch.no_grad(), autocast(x_t.device, compute_dtype):
        eps = frozen(torch.cat([x_t, x_t]), t, encoder_hidden_states=torch.cat([emb_uncond, emb_concept])).sample
    eps_uncond, eps_concept = eps.float().chunk(2)
    with autocast(x_t.device, compute_dtype):
        prediction = unet(x_t, t, encoder_hidden_states=emb_concept).sample
    return F.mse_loss(prediction.float(), esd_target(eps_uncond, eps_concept, eta))


@torch.no_grad()
def sample_partway(unet, scheduler, latents, emb_concept, emb_uncond, guidance: float, stop: int, compute_dtype=None):
    """Run ``stop`` DDIM steps with classifier-free guidance from ``latents``; return (x_t, t).

    ``scheduler`` must have its timesteps set; t is ``scheduler.timesteps[stop]``.
    """
    context = torch.cat([emb_uncond, emb_concept])
    for t in scheduler.timesteps[:stop]:
        model_input = scheduler.scale_model_input(torch.cat([latents, latents]), t)
        with autocast(latents.device, compute_dtype):
            eps = unet(model_input, t, encoder_hidden_states=context).sample.float()
        eps_uncond, eps_text = eps.chunk(2)
        latents = scheduler.step(eps_uncond + guidance * (eps_text - eps_uncond), t, latents).prev_sample
    return latents, scheduler.timesteps[stop]


class ESD(Method):
    """ESD; the subclasses pick the parameters (ESD-x: cross-attention, ESD-u: the rest)."""

    def run(self, pipe, request: UnlearnRequest, params: dict, options: TrainingOptions) -> dict[str, torch.Tensor]:
        unet = pipe.unet
        device = unet.device
        frozen = copy.deepcopy(unet).requires_grad_(False).eval()
        names = self.trainable_names(unet, params)
        parameters = named_parameters(unet, names)
        optimizer = torch.optim.Adam(parameters.values(), lr=params["lr"])
        emb_uncond, _ = encode_text(pipe, [""])
        emb_concepts, _ = encode_text(pipe, list(request.concepts))
        scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
        scheduler.set_timesteps(params["ddim_steps"], device=device)
        shape = unet_latent_shape(unet)
        compute_dtype = options.autocast_dtype

        def step_loss(step: int) -> torch.Tensor:
            generator = step_generator(request.seed, step)
            index = randint(0, len(request.concepts), generator)
            stop = randint(0, params["ddim_steps"], generator)
            emb_concept = emb_concepts[index : index + 1]
            start = randn(shape, generator, device) * scheduler.init_noise_sigma
            x_t, t = sample_partway(frozen, scheduler, start, emb_concept, emb_uncond,
                                    params["start_guidance"], stop, compute_dtype)
            return esd_loss(unet, frozen, x_t, t, emb_concept, emb_uncond, params["negative_guidance"], compute_dtype)

        train_loop(parameters, optimizer, step_loss, params["iterations"], options,
                   run_fingerprint(self.name, request, params), description=self.name)
        unet.requires_grad_(False)
        return replaced_tensors(unet, names)


class ESDX(ESD):
    """ESD-x: cross-attention only (styles, specific erasure)."""

    name = "esd-x"

    def trainable_names(self, unet, params):
        return cross_attention_names(unet)


class ESDU(ESD):
    """ESD-u: everything but cross-attention (general erasure), in the original release's set or the newer one's."""

    name = "esd-u"

    def trainable_names(self, unet, params):
        if params["parameters"] == "esd-u-2025":
            return linear_and_conv_names_outside_cross_attention(unet)
        return non_cross_attention_names(unet)
