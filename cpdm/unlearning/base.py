"""The one interface every unlearning method implements, and what methods share.

A method gets a base pipeline (Stable Diffusion 1.x/2.x in diffusers form)
and an :class:`UnlearnRequest` (concepts to erase, concepts to preserve,
optional images, hyperparameters, seed) and returns the UNet parameters it
replaced, under diffusers' names. Inference-time methods (SLD) return none:
their settings travel with the variant.

Iterative methods run :func:`train_loop`, which shows a progress bar (loss,
it/s, ETA), checkpoints every N steps, resumes from a checkpoint to exactly
the weights an uninterrupted run reaches, and stops on a NaN or Inf loss.
Exact resumption holds because every step draws its randomness from its own
generator, seeded from (seed, step), not from a stream that a restart would
have to replay.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import DDIMScheduler, DDPMScheduler
from PIL import Image

from cpdm.errors import CpdmError
from cpdm.progress import JobCancelled, progress_bar
from cpdm.unlearning import Entry, lookup


@dataclass
class UnlearnRequest:
    """What to erase and how: the input every method takes."""

    concepts: tuple[str, ...]
    preserve: tuple[str, ...] = ()
    images: tuple[Path, ...] = ()
    params: dict = field(default_factory=dict)
    seed: int = 0
    # The base model as registered (a hub id, a folder, or "tiny") and its hub revision: what a method's
    # cached data (Concept Ablation's anchor images) is keyed by.
    base_model: str = ""
    base_revision: str | None = None
    # Facts a method reports about its run (chosen channels, an early stop); saved in the artifact's JSON.
    record: dict = field(default_factory=dict)


@dataclass
class TrainingOptions:
    """How a method runs: checkpoints, resumption, the progress bar, reduced precision, and a cache.

    ``cache_dir`` is a folder where a method keeps data that later runs may
    reuse (Concept Ablation's anchor images); None keeps nothing.
    """

    checkpoint_path: Path | None = None
    checkpoint_every: int = 100
    resume: bool = False
    progress: bool = True
    autocast_dtype: torch.dtype | None = None
    cache_dir: Path | None = None
    # Called with (path, steps done) once a checkpoint is written: a Ray task sends it to the driver.
    on_checkpoint: Callable[[Path, int], None] | None = None


class NonFiniteLoss(CpdmError):
    """The loss became NaN or Inf; the run stopped before applying that step."""

    def __init__(self, step: int, value: float):
        self.step = step
        self.value = value
        super().__init__(f"the loss became {value} at step {step}; the run stopped (lower the learning rate?)")

    def __reduce__(self):
        # Rebuilt from (step, value) when unpickled: a Ray task raises it on a node, the driver records its step.
        return type(self), (self.step, self.value)


def _entry_fact(name: str) -> property:
    """A read-only attribute of a method that its table entry holds (the summary, the defaults, ...)."""
    return property(lambda method: getattr(method.entry, name), doc=f"The method's {name}, from its table entry.")


class Method:
    """Base class of the unlearning methods; subclasses set ``name`` and implement :meth:`run`.

    What a method is (summary, hyperparameters with their defaults and help,
    whether it needs images, whether it changes weights) is its entry in
    :data:`cpdm.unlearning.REGISTRY`, read through the properties below: the
    table is the one place each default lives.
    """

    name: str = ""

    @property
    def entry(self) -> Entry:
        return lookup(self.name)

    summary = _entry_fact("summary")
    defaults = _entry_fact("defaults")
    help = _entry_fact("help")
    needs_images = _entry_fact("needs_images")
    inference_time = _entry_fact("inference_time")
    iterative = _entry_fact("iterative")

    def resolve_params(self, given: dict | None) -> dict:
        """The defaults overlaid with ``given``, converted to the defaults' types; unknown names and bad values refused."""
        return self.entry.resolve_params(given)

    def steps_of(self, params: dict) -> int:
        """How many optimisation steps a run takes (0 for closed-form and inference-time methods)."""
        return int(params.get("iterations", 0)) if self.iterative else 0

    def trainable_names(self, unet: torch.nn.Module, params: dict) -> list[str]:
        """The diffusers names of the UNet parameters this method replaces."""
        return []

    def preserve_set(self, params: dict, concepts, given, study_artists) -> tuple[str, ...]:
        """The concepts a run preserves: those ``given`` (``--preserve``, then the preserve file's).

        ``study_artists`` are the workspace's other artists (none naming a
        concept to erase); a method that preserves them by default (UCE for
        a style) adds them here.
        """
        return unique_texts(given)

    def run(self, pipe, request: UnlearnRequest, params: dict, options: TrainingOptions) -> dict[str, torch.Tensor]:
        """Erase the request's concepts from ``pipe``'s UNet (in place); return the replaced parameters."""
        raise NotImplementedError


# --- text ------------------------------------------------------------------------------------------

def real_token_count(tokenizer, text: str) -> int:
    """How many tokens ``text`` has between BOS and EOS (0 for empty or whitespace-only text)."""
    ids = tokenizer(text, truncation=True, max_length=tokenizer.model_max_length).input_ids
    return max(len(ids) - 2, 0)


def truncated_texts(tokenizer, texts, role: str) -> list[dict]:
    """The texts longer than the text encoder reads (its tokenizer's ``model_max_length``, 77 in Stable Diffusion).

    Each is given with its token count (start and end tokens included, as
    generation counts them) and how many the encoder keeps: methods encode
    only those, so the rest of the text never reaches the edit.
    """
    limit = tokenizer.model_max_length
    cut = []
    for text in texts:
        tokens = len(tokenizer(text, truncation=False, verbose=False).input_ids)
        if tokens > limit:
            cut.append({"text": text, "role": role, "tokens": tokens, "kept": limit})
    return cut


def check_concepts(tokenizer, concepts, label: str = "concept") -> None:
    """Refuse a concept that tokenises to nothing."""
    for concept in concepts:
        if real_token_count(tokenizer, concept) == 0:
            raise CpdmError(f"the {label} {concept!r} tokenises to nothing; give a word or a phrase")


def unique_texts(texts) -> tuple[str, ...]:
    """``texts`` without repeats (case-insensitive), in their first order."""
    seen, kept = set(), []
    for text in texts:
        if text.lower() not in seen:
            seen.add(text.lower())
            kept.append(text)
    return tuple(kept)


def encode_text(pipe, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """Text-encoder hidden states (batch, 77, d) and attention masks, padded to the tokenizer's length."""
    tokens = pipe.tokenizer(
        list(texts), padding="max_length", max_length=pipe.tokenizer.model_max_length,
        truncation=True, return_tensors="pt",
    )
    with torch.no_grad():
        hidden = pipe.text_encoder(tokens.input_ids.to(pipe.text_encoder.device))[0]
    return hidden, tokens.attention_mask


# --- randomness ------------------------------------------------------------------------------------

def step_generator(seed: int, step: int) -> torch.Generator:
    """A CPU generator for one step, seeded from (seed, step) so a resumed run draws what it would have."""
    digest = hashlib.sha256(f"{int(seed)}:{int(step)}".encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") & ((1 << 63) - 1))


def randn(shape, generator: torch.Generator, device, dtype=torch.float32) -> torch.Tensor:
    """Normal noise drawn on the CPU (the same on every device), then moved."""
    return torch.randn(shape, generator=generator, dtype=torch.float32).to(device=device, dtype=dtype)


def randint(low: int, high: int, generator: torch.Generator) -> int:
    """An integer in [low, high) from ``generator``."""
    return int(torch.randint(low, high, (1,), generator=generator).item())


def autocast(device, dtype: torch.dtype | None):
    """A reduced-precision compute context, or nothing when ``dtype`` is None or float32."""
    if dtype is None or dtype == torch.float32:
        return nullcontext()
    return torch.autocast(device_type=torch.device(device).type, dtype=dtype)


# --- the training loop -----------------------------------------------------------------------------

def named_parameters(module: torch.nn.Module, names: list[str]) -> dict[str, torch.nn.Parameter]:
    """The parameters of ``module`` with these names, made trainable; all others frozen.

    Master weights stay in float32 whatever precision the forward pass uses:
    updates of lr 1e-5 vanish in bfloat16 weights.
    """
    by_name = dict(module.named_parameters())
    module.requires_grad_(False)
    chosen = {}
    for name in names:
        parameter = by_name[name]
        if parameter.dtype != torch.float32:
            parameter.data = parameter.data.float()
        parameter.requires_grad_(True)
        chosen[name] = parameter
    return chosen


def run_fingerprint(method: str, request: UnlearnRequest, params: dict) -> str:
    """A digest of everything that decides a run's result; a checkpoint only resumes the same run.

    Images count by name and content, not by path: a run resumed from a
    copy of its images elsewhere (another node of a cluster) is the same run.
    """
    images = [f"{Path(path).name} {hashlib.sha256(Path(path).read_bytes()).hexdigest()}" for path in request.images]
    payload = {"method": method, "concepts": list(request.concepts), "preserve": list(request.preserve),
               "images": images, "params": params, "seed": request.seed}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def save_checkpoint(path: Path, step: int, parameters: dict, optimizer, fingerprint: str, losses: list[float]) -> None:
    """Write the run's state after ``step`` steps (atomically: a kill mid-write keeps the previous one)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {
        "step": step,
        "fingerprint": fingerprint,
        "parameters": {name: p.detach().cpu().clone() for name, p in parameters.items()},
        "optimizer": optimizer.state_dict(),
        "losses": list(losses),
    }
    partial = path.with_name(path.name + ".partial")
    torch.save(state, partial)
    os.replace(partial, path)


def load_checkpoint(path: Path, parameters: dict, optimizer, fingerprint: str) -> tuple[int, list[float]]:
    """Restore parameters and optimizer from a checkpoint of the same run; return (steps done, losses)."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    if state.get("fingerprint") != fingerprint:
        raise CpdmError(f"{path}: the checkpoint is of a run with other settings; start afresh without --resume")
    if set(state["parameters"]) != set(parameters):
        raise CpdmError(f"{path}: the checkpoint holds other parameters than this run trains")
    with torch.no_grad():
        for name, parameter in parameters.items():
            parameter.copy_(state["parameters"][name].to(parameter.device))
    optimizer.load_state_dict(state["optimizer"])
    return int(state["step"]), list(state["losses"])


def train_loop(
    parameters: dict[str, torch.nn.Parameter],
    optimizer: torch.optim.Optimizer,
    step_loss: Callable[[int], torch.Tensor],
    steps: int,
    options: TrainingOptions,
    fingerprint: str,
    *,
    description: str = "unlearn",
    clip_grad_norm: float | None = None,
    after_step: Callable[[int], None] | None = None,
    stop_before: Callable[[int, float], bool] | None = None,
) -> list[float]:
    """Run ``steps`` optimisation steps of ``step_loss(step)``; return the loss of every step.

    A NaN or Inf loss raises :class:`NonFiniteLoss` naming the step, before
    that step changes anything. ``stop_before(step, loss)`` returning True
    ends the run early, before that step is applied (a divergence guard).
    With ``options.resume`` and a checkpoint on disk the run continues from it.
    """
    start, losses = 0, []
    checkpoint = options.checkpoint_path
    if options.resume and checkpoint is not None and checkpoint.is_file():
        start, losses = load_checkpoint(checkpoint, parameters, optimizer, fingerprint)

    def save(done: int) -> None:
        save_checkpoint(checkpoint, done, parameters, optimizer, fingerprint, losses)
        if options.on_checkpoint is not None:
            options.on_checkpoint(checkpoint, done)

    bar = progress_bar(steps, description, unit="it", enabled=options.progress, initial=start)
    try:
        for step in range(start, steps):
            optimizer.zero_grad(set_to_none=True)
            loss = step_loss(step)
            value = float(loss.detach())
            if not math.isfinite(value):
                raise NonFiniteLoss(step, value)
            if stop_before is not None and stop_before(step, value):
                break
            loss.backward()
            if clip_grad_norm:
                torch.nn.utils.clip_grad_norm_(list(parameters.values()), clip_grad_norm)
            optimizer.step()
            if after_step is not None:
                after_step(step)
            losses.append(value)
            bar.set_postfix(loss=f"{value:.4g}")
            done = step + 1
            if checkpoint is not None and options.checkpoint_every > 0 and done % options.checkpoint_every == 0 and done < steps:
                save(done)
            try:
                bar.update(1)
            except JobCancelled:
                # Keep every step made so far: a resumed run continues from this one.
                if checkpoint is not None and done < steps:
                    save(done)
                raise
    finally:
        bar.close()
    return losses


def replaced_tensors(unet: torch.nn.Module, names: list[str]) -> dict[str, torch.Tensor]:
    """The current values of the named UNet parameters (detached CPU copies), for the artifact."""
    state = unet.state_dict()
    return {name: state[name].detach().cpu().clone() for name in names}


def unet_latent_shape(unet, batch: int = 1) -> tuple[int, int, int, int]:
    """The latent shape the UNet was trained at (its config's sample size)."""
    size = unet.config.sample_size
    return (batch, unet.config.in_channels, size, size)


# --- data for methods that train on images ----------------------------------------------------------

def native_image_size(pipe) -> int:
    """The side in pixels of the images the pipeline's UNet was trained on."""
    return pipe.unet.config.sample_size * pipe.vae_scale_factor


def image_pixels(paths, size: int) -> torch.Tensor:
    """Image files as a (N, 3, size, size) batch in [-1, 1], resized (bicubic) to ``size``."""
    batch = []
    for path in paths:
        try:
            with Image.open(path) as image:
                pixels = np.asarray(image.convert("RGB").resize((size, size), Image.BICUBIC), dtype=np.float32)
        except OSError as exc:
            raise CpdmError(f"{path}: not a readable image ({exc})") from exc
        batch.append(torch.from_numpy(pixels).permute(2, 0, 1) / 127.5 - 1.0)
    return torch.stack(batch)


def encode_pixels(pipe, pixels: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """VAE latents (scaled as the UNet sees them) of a pixel batch: a sample of the encoder's distribution."""
    with torch.no_grad():
        encoded = pipe.vae.encode(pixels.to(pipe.vae.device, pipe.vae.dtype)).latent_dist
    noise = randn(encoded.mean.shape, generator or torch.Generator().manual_seed(0), encoded.mean.device)
    return ((encoded.mean + encoded.std * noise) * pipe.vae.config.scaling_factor).float()


def image_latents(pipe, paths, generator: torch.Generator | None = None) -> torch.Tensor:
    """VAE latents (scaled as the UNet sees them) of image files, resized to the model's native size."""
    return encode_pixels(pipe, image_pixels(paths, native_image_size(pipe)), generator)


@torch.no_grad()
def generated_latents(pipe, prompts, seed: int, steps: int, guidance: float) -> torch.Tensor:
    """Clean latents x_0 the base model generates for ``prompts`` (DDIM, classifier-free guidance).

    Methods that need images of a concept can use the base model's own
    generations; staying in latent space skips a VAE decode and re-encode.
    """
    scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    scheduler.set_timesteps(steps, device=pipe.unet.device)
    uncond, _ = encode_text(pipe, [""])
    latents = []
    for index, prompt in enumerate(prompts):
        context, _ = encode_text(pipe, [prompt])
        x = randn(unet_latent_shape(pipe.unet), step_generator(seed, -1 - index), pipe.unet.device)
        x = x * scheduler.init_noise_sigma
        for t in scheduler.timesteps:
            eps = pipe.unet(scheduler.scale_model_input(torch.cat([x, x]), t), t,
                            encoder_hidden_states=torch.cat([uncond, context])).sample
            eps_uncond, eps_text = eps.chunk(2)
            x = scheduler.step(eps_uncond + guidance * (eps_text - eps_uncond), t, x).prev_sample
        latents.append(x)
    return torch.cat(latents)


def noised(scheduler, x0: torch.Tensor, generator: torch.Generator):
    """(x_t, t, regression target) for the standard diffusion loss at a random training timestep."""
    count = scheduler.config.num_train_timesteps
    t = torch.randint(0, count, (x0.shape[0],), generator=generator).to(x0.device)
    noise = randn(x0.shape, generator, x0.device)
    x_t = scheduler.add_noise(x0, noise, t)
    if scheduler.config.prediction_type == "v_prediction":  # SD 2.x 768 models
        return x_t, t, scheduler.get_velocity(x0, noise, t)
    return x_t, t, noise


def diffusion_loss(unet, scheduler, x0: torch.Tensor, context: torch.Tensor, generator: torch.Generator,
                   compute_dtype=None) -> torch.Tensor:
    """L_DM: the mean squared error of the UNet's prediction on x_0 noised to random timesteps."""
    x_t, t, target = noised(scheduler, x0, generator)
    with autocast(x0.device, compute_dtype):
        prediction = unet(x_t, t, encoder_hidden_states=context).sample
    return F.mse_loss(prediction.float(), target.float())


def training_scheduler(pipe):
    """A DDPM scheduler with the pipeline's noise schedule, for adding noise during training."""
    return DDPMScheduler.from_config(pipe.scheduler.config)


def batch_indices(count: int, batch: int, generator: torch.Generator) -> torch.Tensor:
    """``batch`` indices drawn with replacement from ``range(count)``."""
    return torch.randint(0, count, (batch,), generator=generator)
