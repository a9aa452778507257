"""Safe Latent Diffusion's guidance and the pipeline that generates with it (the SLD variant's inference).

Guidance. With ε_∅, ε_p and ε_S the UNet's noise predictions for the empty
(negative) prompt, the prompt and the safety concept S (here: the erased
concept), at denoising step i:

    μ     = clamp(s_S · |ε_p − ε_S|, max 1)            where ε_p − ε_S < λ_thr, else 0   (eq. 6)
    γ_i   = μ ⊙ (ε_S − ε_∅) + s_m · ν_i                                                    (eqs. 4, 7)
    ν_i+1 = β_m · ν_i + (1 − β_m) · γ_i                                                    (eq. 8)
    ε     = ε_∅ + s_g · (ε_p − ε_∅ − γ_i)   for i ≥ warm-up δ, else ε_∅ + s_g · (ε_p − ε_∅)   (eq. 3)

The momentum ν builds up during the warm-up too. Safety guidance is on
when s_S > 1 and classifier-free guidance is on (s_g > 1).

The pipeline loop is written here (it follows diffusers'
StableDiffusionPipelineSafe step for step, and a test checks parity while
diffusers ships that class) because that class is deprecated and also runs
the NSFW safety checker, which is off for cpdm's generations. The method's
side (its presets and defaults) is :mod:`cpdm.unlearning.sld`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from diffusers.pipelines.stable_diffusion import StableDiffusionPipelineOutput

from cpdm.errors import CpdmError


@dataclass(frozen=True)
class SLDSettings:
    """SLD's hyperparameters: warm-up δ, safety scale s_S, threshold λ_thr, momentum s_m and β_m."""

    warmup_steps: int
    guidance_scale: float
    threshold: float
    momentum_scale: float
    mom_beta: float


def sld_guidance(
    eps_uncond: torch.Tensor,
    eps_text: torch.Tensor,
    eps_concept: torch.Tensor,
    momentum: torch.Tensor | None,
    step: int,
    guidance_scale: float,
    settings: SLDSettings,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One step of classifier-free guidance with safety guidance; returns (noise prediction, new momentum)."""
    guidance = eps_text - eps_uncond
    if momentum is None:
        momentum = torch.zeros_like(guidance)
    difference = eps_text - eps_concept
    scale = torch.clamp(difference.abs() * settings.guidance_scale, max=1.0)
    scale = torch.where(difference >= settings.threshold, torch.zeros_like(scale), scale)
    safety = (eps_concept - eps_uncond) * scale + settings.momentum_scale * momentum
    momentum = settings.mom_beta * momentum + (1 - settings.mom_beta) * safety
    if step >= settings.warmup_steps:
        guidance = guidance - safety
    return eps_uncond + guidance_scale * guidance, momentum


def settings_from_params(params: dict) -> SLDSettings:
    """The SLDSettings stored in a variant's params."""
    return SLDSettings(**{name: params[name] for name in SLDSettings.__dataclass_fields__})


class SLDPipeline:
    """A Stable Diffusion pipeline that generates with SLD against ``concept``.

    Called like the pipeline it wraps (prompt, height, width,
    num_inference_steps, guidance_scale, negative_prompt, generator,
    output_type); every other attribute is the wrapped pipeline's.
    """

    def __init__(self, pipe, concept: str, settings: SLDSettings):
        self.pipe = pipe
        self.concept = concept
        self.settings = settings

    def __getattr__(self, name):
        return getattr(self.pipe, name)

    def _embed(self, texts: list[str]) -> torch.Tensor:
        """Text-encoder states as the pipeline encodes prompts (attention mask only if the encoder uses one)."""
        pipe = self.pipe
        tokens = pipe.tokenizer(texts, padding="max_length", max_length=pipe.tokenizer.model_max_length,
                                truncation=True, return_tensors="pt")
        mask = None
        if getattr(pipe.text_encoder.config, "use_attention_mask", False):
            mask = tokens.attention_mask.to(pipe.device)
        return pipe.text_encoder(tokens.input_ids.to(pipe.device), attention_mask=mask)[0]

    @torch.no_grad()
    def __call__(self, prompt: str, height=None, width=None, num_inference_steps: int = 50, guidance_scale: float = 7.5,
                 negative_prompt: str | None = None, generator=None, output_type: str = "pil", eta: float = 0.0):
        pipe = self.pipe
        if not isinstance(prompt, str):
            raise CpdmError("SLD generation takes one prompt at a time")
        height = height or pipe.unet.config.sample_size * pipe.vae_scale_factor
        width = width or pipe.unet.config.sample_size * pipe.vae_scale_factor
        use_cfg = guidance_scale > 1.0
        use_safety = use_cfg and self.settings.guidance_scale > 1.0
        texts = [prompt]
        if use_cfg:
            texts = [negative_prompt or "", prompt] + ([self.concept] if use_safety else [])
        context = self._embed(texts)
        pipe.scheduler.set_timesteps(num_inference_steps, device=pipe.device)
        latents = pipe.prepare_latents(1, pipe.unet.config.in_channels, height, width, context.dtype,
                                       pipe.device, generator)
        step_kwargs = pipe.prepare_extra_step_kwargs(generator, eta)
        momentum = None
        for index, t in enumerate(pipe.scheduler.timesteps):
            model_input = pipe.scheduler.scale_model_input(torch.cat([latents] * len(texts)), t)
            eps = pipe.unet(model_input, t, encoder_hidden_states=context).sample
            if use_safety:
                eps_uncond, eps_text, eps_concept = eps.chunk(3)
                eps, momentum = sld_guidance(eps_uncond, eps_text, eps_concept, momentum, index,
                                             guidance_scale, self.settings)
            elif use_cfg:
                eps_uncond, eps_text = eps.chunk(2)
                eps = eps_uncond + guidance_scale * (eps_text - eps_uncond)
            latents = pipe.scheduler.step(eps, t, latents, **step_kwargs).prev_sample
        if output_type == "latent":
            return StableDiffusionPipelineOutput(images=latents, nsfw_content_detected=None)
        image = pipe.vae.decode(latents / pipe.vae.config.scaling_factor, return_dict=False)[0]
        image = (image / 2 + 0.5).clamp(0, 1).cpu().permute(0, 2, 3, 1).float().numpy()
        images = pipe.numpy_to_pil(image) if output_type == "pil" else image
        return StableDiffusionPipelineOutput(images=images, nsfw_content_detected=None)


def safety_concept(concepts) -> str:
    """The safety concept SLD guides away from: the erased concepts, comma-separated."""
    return ", ".join(concepts)
