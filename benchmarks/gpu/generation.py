"""Part 2, generation: cpdm's generation beside diffusers' own fastest settings, on the same pipeline.

Two architectures with random weights, in fp16 on the GPU: Stable
Diffusion 2.1 at 768×768 (the CPDM release's model) and 1.5 at 512×512, the
paper's settings (DDIM 50 steps, classifier-free guidance 9). For each, at
batch 1 and 9:

* cpdm: the pipeline prepared as generation prepares any loaded model
  (``prepare_for_generation``: DDIM, SDPA attention) and
  ``generate_images`` (one seeded generator per image, PIL images out);
* diffusers' fastest eager settings on the same pipeline, called as its
  documentation shows: TF32 matrix products, channels-last UNet and VAE,
  fused QKV projections, SDPA, fp16, one generator for the batch;
* for SD 2.1, the same with the UNet under ``torch.compile``, if it
  compiles within what is left of the part's budget (the compile time is
  reported).

Figures: images/s, seconds per image and peak GPU memory of each, and
cpdm's images/s as a share of diffusers' (target: within 10 %). Each timing
follows an untimed warm-up batch of a few steps (allocator, kernel choice);
every step costs the same, so a few steps warm what fifty use.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import torch

from benchmarks.bench_generation import PROMPT
from benchmarks.gpu.harness import PartContext, PeakGPUMemory, release_memory, timed
from benchmarks.gpu.models import architecture
from cpdm.diffusion.architectures import random_sd_pipeline
from cpdm.diffusion.pipeline import generate_images, prepare_for_generation
from cpdm.diffusion.settings import PAPER_GUIDANCE, PAPER_STEPS

BATCHES = (1, 9)
COMPILED_BATCHES = (9, 1)  # the paper's nine images per prompt first: each batch size compiles anew
RATIO_TARGET = 0.90  # cpdm's images/s at least 90 % of diffusers' fastest
COMPILED_ARCHITECTURE = "sd2.1"
COMPILE_NEEDS_S = 20.0  # least budget left to try compiling at all


@dataclass(frozen=True)
class Sizes:
    """Sampling steps, warm-up steps and timed repeats per batch size."""

    steps: int
    warm_steps: int
    repeats: dict = field(default_factory=dict)


FULL = Sizes(steps=PAPER_STEPS, warm_steps=3, repeats={1: 1, 9: 1})
DRY = Sizes(steps=2, warm_steps=1, repeats={1: 1, 9: 1})


@dataclass
class Rates:
    """Images/s measured so far, by (architecture, side, batch), and the seconds per image seen last."""

    measured: dict = field(default_factory=dict)
    seconds_per_image: float = 0.0

    def needs(self, batch: int, repeats: int, steps: int, warm_steps: int) -> float:
        """About how long a measurement takes, from the last one (0 before any)."""
        return self.seconds_per_image * batch * (repeats + warm_steps / steps)


def run(ctx: PartContext) -> None:
    # Random weights in fp16 may decode to NaN pixels; their cast to 8 bits warns once per batch. Speed is the same.
    warnings.filterwarnings("ignore", message="invalid value encountered in cast", category=RuntimeWarning)
    sizes = DRY if ctx.dry_run else FULL
    dtype = torch.float16 if ctx.settings.cuda else torch.float32
    ctx.recorder.note(f"random-initialised full-size architectures{' (shrunk: dry run)' if ctx.dry_run else ''}, "
                      f"{str(dtype).removeprefix('torch.')}, DDIM {sizes.steps} steps, guidance {PAPER_GUIDANCE:g}")
    rates = Rates()
    compiled_candidate = None
    for name in ("sd2.1", "sd1.5"):
        pipeline = build(ctx, name, dtype)
        if pipeline is None:
            continue
        sd = architecture(name, ctx.dry_run)
        torch.set_float32_matmul_precision("highest")  # torch's default, as cpdm runs (the fastest settings change it)
        measure_side(ctx, rates, sd, pipeline, "cpdm", cpdm_batch, sizes)
        ctx.recorder.note(f"{sd.name}, diffusers fastest eager: {apply_fastest_settings(ctx, pipeline)}")
        measure_side(ctx, rates, sd, pipeline, "diffusers fastest eager", diffusers_batch, sizes)
        record_ratios(ctx, rates, sd.name, "diffusers fastest eager")
        if name == COMPILED_ARCHITECTURE:
            compiled_candidate = (sd, pipeline)
        else:
            del pipeline
            release_memory()
    if compiled_candidate is not None:
        measure_compiled(ctx, rates, *compiled_candidate, sizes)


def build(ctx: PartContext, name: str, dtype: torch.dtype):
    """The random pipeline of ``name`` prepared as cpdm's generation prepares a loaded one; None if it failed."""
    built = {}

    def make() -> None:
        seconds, pipeline = timed(ctx.device, random_sd_pipeline, architecture(name, ctx.dry_run), device=ctx.device,
                                  dtype=dtype)
        prepare_for_generation(pipeline, ctx.device)
        built["pipeline"] = pipeline
        ctx.recorder.note(f"{name}: built with random weights in {seconds:.1f} s")

    ctx.attempt(f"{name}: build", make)
    return built.get("pipeline")


def cpdm_batch(pipeline, batch: int, steps: int, size: int, device: str) -> None:
    """A batch as cpdm makes it: ``generate_images``, one seeded generator per image."""
    generate_images(pipeline, [PROMPT] * batch, list(range(batch)), steps=steps, guidance=PAPER_GUIDANCE,
                    height=size, width=size)


def diffusers_batch(pipeline, batch: int, steps: int, size: int, device: str) -> None:
    """A batch as diffusers' documentation calls the pipeline: one generator for the batch."""
    pipeline(prompt=[PROMPT] * batch, num_inference_steps=steps, guidance_scale=PAPER_GUIDANCE, height=size,
             width=size, generator=torch.Generator(device=device).manual_seed(0), output_type="pil")


def measure_side(ctx: PartContext, rates: Rates, sd, pipeline, side: str, make_batch, sizes: Sizes) -> None:
    """Images/s and peak memory of one way of generating, at each batch size."""
    for batch in BATCHES:
        repeats = sizes.repeats[batch]
        label = f"{sd.name} {side}, batch {batch}"
        ctx.attempt(label, lambda batch=batch, repeats=repeats, label=label:
                    measure_batch(ctx, rates, sd, pipeline, make_batch, batch, repeats, sizes, label, side),
                    needs_s=rates.needs(batch, repeats, sizes.steps, sizes.warm_steps))


def measure_batch(ctx: PartContext, rates: Rates, sd, pipeline, make_batch, batch: int, repeats: int, sizes: Sizes,
                  label: str, side: str) -> None:
    size = sd.image_size
    warm_s, _ = timed(ctx.device, make_batch, pipeline, batch, sizes.warm_steps, size, ctx.device)
    with PeakGPUMemory(ctx.device) as memory:
        seconds, _ = timed(ctx.device, lambda: [make_batch(pipeline, batch, sizes.steps, size, ctx.device)
                                                for _ in range(repeats)])
    rate = batch * repeats / seconds
    rates.measured[(sd.name, side, batch)] = rate
    rates.seconds_per_image = 1 / rate
    peak = f", peak {memory.gb:.1f} GB" if memory.gb is not None else ""
    ctx.record(label, rate, "img/s", detail=f"{1 / rate:.2f} s/image{peak}; warm-up {warm_s:.1f} s")


def apply_fastest_settings(ctx: PartContext, pipeline) -> str:
    """diffusers' documented speed-ups for eager inference, each applied if it applies; what was applied."""
    applied = ["SDPA", str(pipeline.unet.dtype).removeprefix("torch.")]
    if ctx.settings.cuda:
        torch.set_float32_matmul_precision("high")
        applied.append("TF32")
    for label, step in (
        ("channels-last", lambda: (pipeline.unet.to(memory_format=torch.channels_last),
                                   pipeline.vae.to(memory_format=torch.channels_last))),
        ("fused QKV", pipeline.fuse_qkv_projections),
    ):
        try:
            step()
            applied.append(label)
        except Exception as exc:  # a speed-up this diffusers version lacks: measured without it, and said so
            ctx.recorder.note(f"diffusers fastest: {label} not applied ({type(exc).__name__}: {exc})")
    return ", ".join(applied)


def record_ratios(ctx: PartContext, rates: Rates, name: str, side: str) -> None:
    """cpdm's images/s as a share of ``side``'s, per batch size measured on both."""
    for batch in BATCHES:
        ours, theirs = rates.measured.get((name, "cpdm", batch)), rates.measured.get((name, side, batch))
        if ours and theirs:
            ratio = ours / theirs
            ctx.record(f"{name} cpdm / {side}, batch {batch}", ratio, "x",
                       detail="images/s of cpdm's generation over diffusers' on the same pipeline",
                       target=f">= {RATIO_TARGET:g}x", met=ratio >= RATIO_TARGET)


def measure_compiled(ctx: PartContext, rates: Rates, sd, pipeline, sizes: Sizes) -> None:
    """The fastest eager settings with the UNet under ``torch.compile``: compile time, images/s, ratio to cpdm."""
    side = "diffusers fastest + torch.compile"
    # On the CPU (dry run) the compiler's tracing runs without code generation, which needs a C++ toolchain.
    backend = "inductor" if ctx.settings.cuda else "eager"
    if not ctx.budget.allows(COMPILE_NEEDS_S):
        ctx.record(f"{sd.name} {side}", None, detail=f"skipped: {ctx.budget.left():.0f} s of the budget left")
        return
    pipeline.unet = torch.compile(pipeline.unet, dynamic=False, backend=backend)
    ctx.recorder.note(f"{sd.name}: UNet under torch.compile (backend {backend}, static shapes); the warm-up "
                      "of each batch size includes its compilation")
    for batch in COMPILED_BATCHES:
        label = f"{sd.name} {side}, batch {batch}"
        repeats = sizes.repeats[batch]
        done = ctx.attempt(label, lambda batch=batch, repeats=repeats, label=label:
                           measure_batch(ctx, rates, sd, pipeline, diffusers_batch, batch, repeats, sizes, label, side),
                           needs_s=rates.needs(batch, repeats, sizes.steps, sizes.warm_steps))
        if not done:
            break  # a compile that failed or ran out of time will not do better at the other batch size
    record_ratios(ctx, rates, sd.name, side)
