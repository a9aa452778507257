"""Part 3, unlearning at full size: each method's cost, and what it comes to at the method's defaults.

On Stable Diffusion 2.1's architecture with random weights, saved as a local
diffusers folder and loaded in float32 as ``cpdm unlearn`` loads a base
model (float32 master weights; the default training precision):

* UCE as ``cpdm unlearn`` runs it (:func:`cpdm.unlearning.runner.unlearn`):
  loading the model, the closed-form edit, the artifact written and the
  variant registered. Target: under 60 s.
* ESD-x, ESD-u, Concept Ablation and gradient ascent: seconds per
  iteration over a few iterations, each method's own ``run`` timed step by
  step through the job context its training loop reports to (the first
  iteration, which warms the allocator, is left out), and the time of its
  set-up. ESD's iterations are timed without sampling (``ddim_steps`` 1)
  and the sampling is added from the measured seconds of one guided DDIM
  step: an iteration at the defaults samples 24.5 such steps on average.
  The methods that train on images get a few random images, and the
  images their defaults generate are priced the same way (images × steps ×
  one guided step). Target: ESD-x's 1,000 iterations under 15 minutes.
* Pruning at its defaults, given its eight concept images.
* ESD-x once more with bfloat16 autocast (``--precision bfloat16``).

Each method's peak GPU memory is reported. A method's timing stops at its
share of the part's budget (the job context's cancel), keeping the
iterations it made.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from benchmarks.bench_unlearning import CONCEPT, guided_step_seconds
from benchmarks.gpu.harness import Budget, PartContext, PeakGPUMemory, release_memory, synchronize, timed
from benchmarks.gpu.models import architecture, saved_sd_folder
from cpdm.progress import JobCancelled, JobContext, running
from cpdm.store.workspace import init_workspace
from cpdm.unlearning import get_method
from cpdm.unlearning.base import TrainingOptions, UnlearnRequest
from cpdm.unlearning.runner import PRECISIONS, load_base, unlearn

UCE_TARGET_S = 60.0
ESD_X_TARGET_S = 15 * 60.0
CONCEPT_IMAGES = 8  # pruning's default number of concept images; the image-trained methods get them too


@dataclass(frozen=True)
class MethodRun:
    """One method as the part times it: the hyperparameters it runs with, whether it gets images, its precision."""

    method: str
    params: dict
    images: bool = False
    precision: str = "float32"

    @property
    def label(self) -> str:
        return self.method if self.precision == "float32" else f"{self.method} ({self.precision})"


FULL_RUNS = (
    MethodRun("esd-x", {"iterations": 4, "ddim_steps": 1}),
    MethodRun("esd-u", {"iterations": 4, "ddim_steps": 1}),
    MethodRun("ablation", {"iterations": 3}, images=True),
    MethodRun("gradient-ascent", {"iterations": 3, "retain_images": 1, "retain_steps": 1}, images=True),
    MethodRun("pruning", {}, images=True),
    MethodRun("esd-x", {"iterations": 4, "ddim_steps": 1}, precision="bfloat16"),
)
DRY_RUNS = (
    MethodRun("esd-x", {"iterations": 2, "ddim_steps": 1}),
    MethodRun("esd-u", {"iterations": 2, "ddim_steps": 1}),
    MethodRun("ablation", {"iterations": 2, "batch_size": 2}, images=True),
    MethodRun("gradient-ascent", {"iterations": 2, "batch_size": 2, "retain_images": 1, "retain_steps": 1},
              images=True),
    MethodRun("pruning", {"timesteps": 1}, images=True),
    MethodRun("esd-x", {"iterations": 2, "ddim_steps": 1}, precision="bfloat16"),
)
METHOD_SHARE_S = {False: 15.0, True: 10.0}  # most seconds one method's timing may take (by dry run)
GUIDED_STEPS = {False: 3, True: 1}  # guided steps timed (by dry run)
METHOD_NEEDS_S = 2.0  # least budget left to start timing a method


class StepClock(JobContext):
    """A job context that notes when each training step ends, and cancels the run once its budget is spent.

    A method's training loop reports to the current job at its start and
    after every step; these moments (the device's queued work included)
    give the set-up time and each step's time.
    """

    def __init__(self, budget: Budget, device: str):
        super().__init__(device=device)
        self.budget = budget
        self.marks: list[float] = []

    def _publish(self) -> None:
        synchronize(self.device)
        self.marks.append(time.perf_counter())

    def cancelled(self) -> bool:
        return self.budget.left() <= 0

    def step_seconds(self) -> list[float]:
        return [later - earlier for earlier, later in zip(self.marks, self.marks[1:])]


@dataclass
class Timing:
    """What one method's run showed: set-up seconds, seconds of each step, peak GB."""

    setup_s: float
    steps_s: list[float] = field(default_factory=list)
    peak_gb: float | None = None
    total_s: float = 0.0
    scale: float = 1.0  # an iteration at the default batch over one at the batch measured
    images: int = 0  # images the method was given

    @property
    def per_iteration(self) -> float | None:
        """Seconds per step, the first (warm-up) left out when there are others."""
        timed_steps = self.steps_s[1:] or self.steps_s
        return sum(timed_steps) / len(timed_steps) if timed_steps else None


def run(ctx: PartContext) -> None:
    sd = architecture("sd2.1", ctx.dry_run)
    folder = saved_sd_folder(ctx.settings.scratch, sd, ctx.device)
    ctx.recorder.note(f"{sd.name} with random weights, saved as a local diffusers folder and loaded from it; "
                      "float32 master weights")
    ctx.attempt("uce including loading", lambda: measure_uce(ctx, folder))
    pipe = load_base(str(folder), ctx.device, offline_tiny=False)
    guided = {}
    for precision in ("float32", "bfloat16"):
        ctx.attempt(f"guided DDIM step ({precision})", lambda precision=precision:
                    guided.update({precision: measure_guided_step(ctx, pipe, precision)}))
    with tempfile.TemporaryDirectory(prefix="concept-images-", dir=ctx.settings.scratch) as folder_of_images:
        images = write_concept_images(Path(folder_of_images), CONCEPT_IMAGES)
        for method_run in (DRY_RUNS if ctx.dry_run else FULL_RUNS):
            ctx.attempt(method_run.label, lambda method_run=method_run:
                        measure_method(ctx, pipe, method_run, images, guided.get(method_run.precision)),
                        needs_s=METHOD_NEEDS_S)
            reset_unet(pipe)


def measure_uce(ctx: PartContext, folder: Path) -> None:
    """UCE as ``cpdm unlearn`` runs it, from loading the base model to the registered variant."""
    with tempfile.TemporaryDirectory(prefix="unlearn-ws-", dir=ctx.settings.scratch) as root:
        ws = init_workspace(Path(root) / "ws")
        with PeakGPUMemory(ctx.device) as memory:
            seconds, variant = timed(ctx.device, unlearn, ws, "uce", "uce-timing", base=str(folder),
                                     concepts=(CONCEPT,), device=ctx.device, progress=False)
        ws.close()
    peak = f"; peak {memory.gb:.1f} GB" if memory.gb is not None else ""
    ctx.record("uce including loading", seconds, "s",
               detail=f"load the float32 model from disk, edit, write the artifact: variant {variant.status}{peak}",
               target=f"< {UCE_TARGET_S:g} s", met=seconds < UCE_TARGET_S)


def measure_guided_step(ctx: PartContext, pipe, precision: str) -> float:
    """Seconds of one classifier-free-guided DDIM step at batch 1, as the methods sample and generate."""
    seconds = guided_step_seconds(pipe.unet, pipe, steps=GUIDED_STEPS[ctx.dry_run], compute_dtype=PRECISIONS[precision])
    ctx.record(f"guided DDIM step ({precision})", seconds, "s",
               detail="batch 1 (unconditional + concept), as ESD samples x_t and the others generate images")
    return seconds


def write_concept_images(folder: Path, count: int) -> tuple[Path, ...]:
    """``count`` random images for the methods that train on images (resized to the model's size when read)."""
    rng = np.random.default_rng(0)
    paths = []
    for index in range(count):
        path = folder / f"concept-{index}.png"
        Image.fromarray(rng.integers(0, 256, size=(64, 64, 3), dtype=np.uint8)).save(path)
        paths.append(path)
    return tuple(paths)


def measure_method(ctx: PartContext, pipe, method_run: MethodRun, images: tuple[Path, ...],
                   guided_s: float | None) -> None:
    """Time one method's run step by step; record seconds per iteration and the projection to its defaults."""
    method = get_method(method_run.method)
    timing, params, reduced = time_fitting_batch(ctx, method, pipe, method_run, images if method_run.images else ())
    setup = f"set-up {timing.setup_s:.1f} s" + (f"; peak {timing.peak_gb:.1f} GB" if timing.peak_gb is not None else "")
    if method.iterative:
        if timing.per_iteration is None:
            ctx.record(f"{method_run.label}: seconds per iteration", None,
                       detail=f"no iteration finished within its share of the budget; {setup}")
            return
        counted = len(timing.steps_s[1:] or timing.steps_s)
        scaled = batch_scaling(method.defaults, params, reduced)
        timing.scale = scaled[0]
        ctx.record(f"{method_run.label}: seconds per iteration", timing.per_iteration, "s",
                   detail=f"{counted} iteration(s) timed{' after one warm-up' if len(timing.steps_s) > 1 else ''}; "
                          f"{describe(params, method_run.params)}{scaled[1]}; {setup}")
    else:
        ctx.record(f"{method_run.label}: seconds", timing.total_s, "s",
                   detail=f"given {timing.images} concept images; {setup}")
    record_projection(ctx, method_run, method.defaults, timing, guided_s)


def time_fitting_batch(ctx: PartContext, method, pipe, method_run: MethodRun,
                       images: tuple[Path, ...]) -> tuple[Timing, dict, bool]:
    """Time the method; if it does not fit in GPU memory, halve its batch (or its images) and try again.

    Returns the timing, the hyperparameters it ran with, and whether the
    batch was reduced to fit. Training at 768x768 in float32 may not fit
    the default batch of 8 on one GPU: a smaller batch still gives seconds
    per image, which the projection scales back to the default batch (see
    :func:`batch_scaling`). Pruning takes all its images in one gradient
    pass; it gets fewer, and its note says so.
    """
    given = dict(method_run.params)
    reduced = False
    while True:
        params = method.resolve_params(given)
        request = UnlearnRequest(concepts=(CONCEPT,), images=images, params=params)
        share = min(METHOD_SHARE_S[ctx.dry_run], ctx.budget.left())
        try:
            return time_run(ctx, method, pipe, request, params, method_run.precision, Budget(share)), params, reduced
        except torch.cuda.OutOfMemoryError:
            batch = params.get("batch_size", len(images))
            if batch <= 1 or not ctx.budget.allows(METHOD_NEEDS_S):
                raise
        reset_unet(pipe)  # here, not in the except clause: its traceback would keep the failed run's tensors
        reduced = True
        if "batch_size" in params:
            given["batch_size"] = batch // 2
        else:
            images = images[: batch // 2]
        ctx.recorder.note(f"{method_run.label}: out of GPU memory with {batch} images at a time; trying {batch // 2}")


def time_run(ctx: PartContext, method, pipe, request: UnlearnRequest, params: dict, precision: str,
             budget: Budget) -> Timing:
    """Run the method under a :class:`StepClock`; a cancel at the budget keeps the steps made."""
    clock = StepClock(budget, ctx.device)
    options = TrainingOptions(progress=False, autocast_dtype=PRECISIONS[precision])
    with PeakGPUMemory(ctx.device) as memory:
        synchronize(ctx.device)
        started = time.perf_counter()
        try:
            with running(clock):
                method.run(pipe, request, params, options)
        except JobCancelled:
            pass
        synchronize(ctx.device)
        finished = time.perf_counter()
    setup = (clock.marks[0] if clock.marks else finished) - started
    return Timing(setup_s=setup, steps_s=clock.step_seconds(), peak_gb=memory.gb, total_s=finished - started,
                  images=len(request.images))


def describe(params: dict, given: dict) -> str:
    """The hyperparameters that differ from the method's defaults (the ones given, and a reduced batch)."""
    shown = {key: params[key] for key in params if key in given or key == "batch_size"}
    return ", ".join(f"{key} {value}" for key, value in shown.items()) or "defaults"


def batch_scaling(defaults: dict, params: dict, reduced: bool) -> tuple[float, str]:
    """How much longer an iteration at the default batch takes than one at the batch measured, and why.

    A batch that fills the GPU takes time in proportion to its images, so
    an iteration at batch 8 is taken as 8/b times one at batch b.
    """
    default, measured = defaults.get("batch_size"), params.get("batch_size")
    if not default or not measured or default == measured:
        return 1.0, ""
    why = f"batch {default} ran out of GPU memory" if reduced else f"measured at batch {measured}"
    return default / measured, f" ({why}: projected to the default batch as {default}/{measured} of an iteration)"


def record_projection(ctx: PartContext, method_run: MethodRun, defaults: dict, timing: Timing,
                      guided_s: float | None) -> None:
    """The method's time at its defaults, from the measured parts; the formula is in the figure's detail."""
    if guided_s is None:
        ctx.record(f"{method_run.label}: projected at its defaults", None,
                   detail="no guided-step time to project with (its measurement failed)")
        return
    seconds, formula = projection(method_run.method, defaults, timing, guided_s)
    is_target = method_run.method == "esd-x"
    ctx.record(f"{method_run.label}: projected at its defaults", seconds / 60, "min", detail=formula,
               target=f"< {ESD_X_TARGET_S / 60:g} min" if is_target else "",
               met=seconds < ESD_X_TARGET_S if is_target else None)


def projection(method: str, defaults: dict, timing: Timing, guided_s: float) -> tuple[float, str]:
    """Seconds of a run at the method's defaults and how they add up.

    ESD samples k ~ U{0, …, ddim_steps − 1} guided steps per iteration;
    Concept Ablation generates its anchor images, gradient ascent its retain
    images and pruning its concept images with guided steps (one image at
    a time), which the measured runs were spared.
    """
    per_iteration = (timing.per_iteration or 0.0) * timing.scale
    if method in ("esd-x", "esd-u"):
        iterations, mean_k = defaults["iterations"], (defaults["ddim_steps"] - 1) / 2
        seconds = timing.setup_s + iterations * (per_iteration + mean_k * guided_s)
        return seconds, (f"set-up {timing.setup_s:.1f} s + {iterations} × ({per_iteration:.3f} s training pass "
                         f"+ {mean_k:g} guided steps × {guided_s:.3f} s)")
    generated = {"ablation": ("n_images", "anchor_steps"), "gradient-ascent": ("retain_images", "retain_steps"),
                 "pruning": ("concept_images", "concept_steps")}[method]
    images, steps = defaults[generated[0]], defaults[generated[1]]
    generation = images * steps * guided_s
    if method == "pruning":
        return timing.total_s + generation, (f"{timing.total_s:.1f} s measured + generating {images} images × "
                                             f"{steps} guided steps × {guided_s:.3f} s")
    iterations = defaults["iterations"]
    seconds = timing.setup_s + generation + iterations * per_iteration
    return seconds, (f"set-up {timing.setup_s:.1f} s + generating {images} images × {steps} guided steps × "
                     f"{guided_s:.3f} s + {iterations} × {per_iteration:.3f} s")


def reset_unet(pipe) -> None:
    """Gradients dropped and every parameter frozen again, so the next method starts as the first did."""
    for parameter in pipe.unet.parameters():
        parameter.grad = None
    pipe.unet.requires_grad_(False)
    release_memory()
