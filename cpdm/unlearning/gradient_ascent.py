r"""Gradient ascent, a baseline the CPDM paper names (Ma et al., 2024), as cpdm implements it.

Objective, minimised:

    L(θ) = −L_DM(forget) + α · L_DM(retain),   L_DM(D) = E_{x∈D, ε, t} ‖ε_θ(x_t, c_x, t) − ε‖²

The forget set is the concept's images (``--images``: its anchors or its
generations), captioned with the concept; the retain set is what the base
model generates for the concepts to preserve (an empty prompt when none are
given), captioned with their prompts. Ascending the forget loss makes the
model worse at the concept; the retain term holds the rest in place.

Which parameters change: every UNet parameter.

Source. The CPDM paper (Ma et al., 2024, arXiv 2403.12052) and its project
page name gradient ascent as one of their baselines and publish no code or
settings for it. Everything here is cpdm's own: the retain term and its
weight α = 0.1, Adam with lr 1e-5, batch 8 from each set, every UNet
parameter trained, the cap of ``iterations`` = 200 steps, and the
divergence guard: when the forget loss exceeds ``divergence`` (default 10)
times its first value, the run ends before applying that step (ascent has
no natural end; the guard stops it before the model is destroyed). NaN or
Inf stops the run as failed. The retain images are the base model's own
generations of the preserved concepts (DDIM, ``retain_steps`` steps,
guidance 7.5), kept as latents.
"""

from __future__ import annotations

import torch

from cpdm.unlearning.base import (
    Method,
    TrainingOptions,
    UnlearnRequest,
    batch_indices,
    diffusion_loss,
    encode_text,
    generated_latents,
    image_latents,
    named_parameters,
    replaced_tensors,
    run_fingerprint,
    step_generator,
    train_loop,
    training_scheduler,
)


def ascent_loss(unet, scheduler, forget_x0, forget_context, retain_x0, retain_context, alpha: float,
                generator: torch.Generator, compute_dtype=None) -> tuple[torch.Tensor, torch.Tensor]:
    """(−L_DM(forget) + α·L_DM(retain), L_DM(forget)) on one batch."""
    forget = diffusion_loss(unet, scheduler, forget_x0, forget_context, generator, compute_dtype)
    retain = diffusion_loss(unet, scheduler, retain_x0, retain_context, generator, compute_dtype)
    return -forget + alpha * retain, forget


class GradientAscent(Method):
    """Gradient ascent on the concept's images with a retain term."""

    name = "gradient-ascent"

    def trainable_names(self, unet, params):
        return [name for name, _ in unet.named_parameters()]

    def run(self, pipe, request: UnlearnRequest, params: dict, options: TrainingOptions) -> dict[str, torch.Tensor]:
        unet = pipe.unet
        forget_x0 = image_latents(pipe, request.images, step_generator(request.seed, -1))
        forget_context, _ = encode_text(pipe, [", ".join(request.concepts)])
        retain_prompts = list(request.preserve) or [""]
        retain_prompts = [retain_prompts[i % len(retain_prompts)] for i in range(params["retain_images"])]
        retain_x0 = generated_latents(pipe, retain_prompts, request.seed, params["retain_steps"], 7.5)
        retain_context, _ = encode_text(pipe, retain_prompts)
        names = self.trainable_names(unet, params)
        parameters = named_parameters(unet, names)
        optimizer = torch.optim.Adam(parameters.values(), lr=params["lr"])
        scheduler = training_scheduler(pipe)
        first_forget: list[float] = []
        forget_of_step: dict[int, float] = {}

        def step_loss(step: int) -> torch.Tensor:
            generator = step_generator(request.seed, step)
            forget = batch_indices(len(forget_x0), params["batch_size"], generator)
            retain = batch_indices(len(retain_x0), params["batch_size"], generator)
            loss, forget_loss = ascent_loss(
                unet, scheduler, forget_x0[forget], forget_context.expand(len(forget), -1, -1),
                retain_x0[retain], retain_context[retain], params["alpha"], generator, options.autocast_dtype)
            forget_of_step[step] = float(forget_loss.detach())
            return loss

        def diverged(step: int, loss: float) -> bool:
            value = forget_of_step[step]
            if not first_forget:
                first_forget.append(value)
            if value > params["divergence"] * first_forget[0]:
                request.record["stopped_early_at_step"] = step
                request.record["forget_loss_at_stop"] = value
                return True
            return False

        losses = train_loop(parameters, optimizer, step_loss, params["iterations"], options,
                            run_fingerprint(self.name, request, params), description=self.name, stop_before=diverged)
        request.record["steps_run"] = len(losses)
        unet.requires_grad_(False)
        return replaced_tensors(unet, names)
