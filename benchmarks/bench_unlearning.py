"""Benchmark: wall time and peak memory of each unlearning method, and how far each moves the model.

Default: every method on the tiny random pipeline (CPU), with few
iterations, each in its own process so its peak memory (max RSS) is its own.
Reported: seconds in total and per iteration, and peak RSS in MB.

Then the fidelity table: each method on the tiny pipeline (one process, one
thread), erasing "claude monet"; the mean CM change on three prompts naming
the concept (target) and three that do not (retain), against the base
model's own images of those prompts at the same seed (so the base model
scores CM = 1 and a change is how far unlearning moved the image, on the
scale of how far apart the anchors are). Beside each figure, the same
measured on the code before issue 22's changes (commit b85dee0). ``--quick``
and the default cut only how much each method computes
(:data:`FIDELITY_QUICK_SIZES`); ``--at-defaults`` runs every method at its
defaults (tens of minutes on 2 cores). Near CM = 1 the metric is flat (it
squares a product of two small distances), so small moves read as tiny
numbers: compare them by order of magnitude.

``--pruning-sweep`` measures pruning at its default sizes with several
channel and weight fractions (the figures in pruning's docstring).

``--full-size`` builds the Stable Diffusion 1.x architecture (UNet 860M
parameters, CLIP ViT-L/14 text encoder, the SD VAE) with random weights and
reports seconds per iteration of ESD-x's training pass, the seconds of one
classifier-free-guided sampling step (an ESD iteration adds on average 24.5
of them at DDIM 50), the estimated seconds of 1000 ESD-x iterations, and
UCE's total. ``--device cuda`` runs the same on a GPU and reports peak GB
(CUDA's allocator peak); that path is kept but was not measured here.

Reference points: UnlearnCanvas reports ESD 6163 s / 17.8 GB, UCE 434 s /
5.1 GB and CA 734 s / 10.1 GB on one A6000. Targets on one H100-class GPU:
UCE under 60 s including loading, ESD-x's 1000 iterations under 15 minutes.

    python benchmarks/bench_unlearning.py --quick
    python benchmarks/bench_unlearning.py --fidelity-only [--at-defaults]
    python benchmarks/bench_unlearning.py --pruning-sweep
    python benchmarks/bench_unlearning.py --full-size [--device cuda]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

TINY_PARAMS = {
    "esd-x": {"iterations": 5, "ddim_steps": 5},
    "esd-u": {"iterations": 5, "ddim_steps": 5},
    "uce": {},
    "ablation": {"iterations": 5, "batch_size": 2, "n_images": 4, "anchor_steps": 5},
    "gradient-ascent": {"iterations": 5, "batch_size": 2, "retain_images": 2, "retain_steps": 5},
    "pruning": {"concept_images": 2, "concept_steps": 5, "timesteps": 2},
    "sld": {},
}
QUICK_ITERATIONS = 2
CONCEPT = "a painting by claude monet"


def max_rss_mb() -> float:
    """This process's peak resident memory in MB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_one_tiny(method_name: str, quick: bool) -> dict:
    """Run one method on the tiny pipeline in this process; return its figures."""
    import torch

    from cpdm.diffusion.tiny import tiny_sd_pipeline
    from cpdm.unlearning import get_method
    from cpdm.unlearning.base import TrainingOptions, UnlearnRequest

    torch.set_num_threads(max(1, torch.get_num_threads()))
    method = get_method(method_name)
    given = dict(TINY_PARAMS[method_name])
    if quick and "iterations" in given:
        given["iterations"] = QUICK_ITERATIONS
    params = method.resolve_params(given)
    images = ()
    with tempfile.TemporaryDirectory() as folder:
        if method.needs_images:
            import numpy as np
            from PIL import Image

            rng = np.random.default_rng(0)
            images = []
            for index in range(2):
                path = Path(folder) / f"{index}.png"
                Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(path)
                images.append(path)
        pipe = tiny_sd_pipeline()
        before = max_rss_mb()
        start = time.perf_counter()
        method.run(pipe, UnlearnRequest(concepts=(CONCEPT,), images=tuple(images), params=params), params,
                   TrainingOptions(progress=False))
        seconds = time.perf_counter() - start
    steps = method.steps_of(params)
    return {"method": method_name, "seconds": seconds, "iterations": steps,
            "seconds_per_iteration": seconds / steps if steps else None,
            "peak_rss_mb": max_rss_mb(), "rss_before_run_mb": before}


def tiny_table(quick: bool) -> list[dict]:
    """Each method in a fresh process (its own peak memory)."""
    rows = []
    for method_name in TINY_PARAMS:
        command = [sys.executable, __file__, "--one", method_name] + (["--quick"] if quick else [])
        output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
        row = json.loads(output.strip().splitlines()[-1])
        rows.append(row)
        per = f"{row['seconds_per_iteration']:.3f} s/it" if row["seconds_per_iteration"] else "no iterations"
        print(f"{method_name:<16} {row['seconds']:8.2f} s  {per:>14}  peak RSS {row['peak_rss_mb']:7.0f} MB "
              f"(after loading {row['rss_before_run_mb']:.0f} MB)", flush=True)
    return rows


# --- fidelity: how far each method moves the concept's images and the others' ------------------------

FIDELITY_CONCEPT = "claude monet"
FIDELITY_TARGET_PROMPTS = ("a painting by claude monet", "water lilies by claude monet",
                           "a garden at giverny, claude monet")
FIDELITY_RETAIN_PROMPTS = ("a painting by vincent van gogh", "a photo of a dog", "a city street at night")
FIDELITY_PROMPTS = FIDELITY_TARGET_PROMPTS + FIDELITY_RETAIN_PROMPTS
FIDELITY_SEED = 23  # the CPDM paper's seed
FIDELITY_STEPS = 20  # DDIM steps of the images compared: SLD's default preset starts guiding after 10
FIDELITY_GUIDANCE = 7.5
# --quick cuts only how much each method computes (iterations, images, sampler steps); every other
# hyperparameter is its default. Names a method does not have are skipped, so the same sizes run on an
# older version of the code (ablation's anchor image count was called anchor_images before it was n_images).
FIDELITY_QUICK_SIZES = {
    "esd-x": {"iterations": 20, "ddim_steps": 10},
    "esd-u": {"iterations": 20, "ddim_steps": 10},
    "uce": {},
    "ablation": {"iterations": 20, "batch_size": 4, "n_images": 8, "anchor_images": 8, "anchor_steps": 10},
    "gradient-ascent": {"iterations": 20, "batch_size": 4, "retain_images": 4, "retain_steps": 10},
    "pruning": {"concept_images": 4, "concept_steps": 10},
    "sld": {},
}


# The table before issue 22's changes: this script's fidelity_table run on commit b85dee0 (one thread),
# method -> (target, retain) CM change, at the quick sizes and at every default (--at-defaults).
FIDELITY_BEFORE_COMMIT = "b85dee0"
FIDELITY_BEFORE = {
    "quick": {
        "esd-x": (-7.604e-13, -2.508e-12),
        "esd-u": (-4.420e-07, -1.516e-06),
        "uce": (-1.939e-01, -2.568e-04),
        "ablation": (-5.717e-12, -4.072e-11),
        "gradient-ascent": (-2.406e-06, -4.759e-06),
        "pruning": (-1.146e-08, -1.137e-08),
        "sld": (-5.008e-11, -1.869e-10),
    },
    "default": {  # about 60 minutes on a loaded 2-core machine
        "esd-x": (-1.424e-06, -2.466e-06),
        "esd-u": (-9.801e-05, -7.922e-04),
        "uce": (-1.939e-01, -2.568e-04),
        "ablation": (-4.114e-09, -1.398e-08),
        "gradient-ascent": (-1.000e+00, -1.000e+00),
        "pruning": (-2.642e-09, -5.111e-08),
        "sld": (-5.008e-11, -1.869e-10),
    },
}


def fidelity_sizes(method, quick: bool) -> dict:
    """The hyperparameters the fidelity table overrides: the quick sizes the method knows, or none."""
    if not quick:
        return {}
    return {key: value for key, value in FIDELITY_QUICK_SIZES[method.name].items() if key in method.defaults}


def sample(pipe, prompts, seed: int) -> list:
    """One image per prompt, each from its own generator seeded with ``seed`` (a variant's images match the base's)."""
    import torch

    return [pipe(prompt, num_inference_steps=FIDELITY_STEPS, guidance_scale=FIDELITY_GUIDANCE,
                 generator=torch.Generator().manual_seed(seed), output_type="pil").images[0] for prompt in prompts]


def pixel_change(before, after) -> float:
    """Mean absolute difference of two lists of images, in grey levels (0-255)."""
    import numpy as np

    return float(np.mean([np.abs(np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)).mean()
                          for a, b in zip(before, after)]))


class TinyCM:
    """CM of images against anchors with the tiny metric backbones; x_ref from the anchors' mismatched pairs.

    The anchors are the base model's own images of the prompts, so the base
    model scores CM = 1 on every prompt and a variant's CM change is CM − 1:
    how far unlearning moved the image of that prompt, on the scale of how far
    apart images of different prompts are (x_ref).
    """

    def __init__(self, anchors):
        from cpdm import metric
        from cpdm.backbones import DEFAULT_SEMANTIC, DEFAULT_STYLE, load_semantic, load_style

        self.metric = metric
        self.anchor_images = list(anchors)
        self.semantic = load_semantic(DEFAULT_SEMANTIC, mode="tiny")
        self.style = load_style(DEFAULT_STYLE, mode="tiny")
        self.anchor_features = self.features(anchors)
        count = len(anchors)
        sem, style = zip(*[self.distances(self.anchor_features, i, self.anchor_features, j)
                           for i in range(count) for j in range(count) if i != j])
        self.x_ref = metric.reference_scale(sem, style)

    def features(self, images):
        return self.semantic.embed(images), self.style.grams(images)

    def distances(self, first, i: int, second, j: int) -> tuple[float, float]:
        """(M_sem, M_style) of image i of ``first`` against image j of ``second``."""
        (emb_a, grams_a), (emb_b, grams_b) = first, second
        m_sem = float(self.metric.m_sem(emb_a[i], emb_b[j]))
        m_style = float(self.metric.m_style([g[i] for g in grams_a], [g[j] for g in grams_b],
                                            self.style.layer_weights))
        return m_sem, m_style

    def cm(self, images) -> list[float]:
        """CM of image i against anchor i."""
        generated = self.features(images)
        return [float(self.metric.cm_paper(*self.distances(self.anchor_features, i, generated, i), self.x_ref))
                for i in range(len(images))]

    def changes(self, pipe) -> dict:
        """The pipeline's mean CM change on the target and the retain prompts, and its images' pixel change."""
        images = sample(pipe, FIDELITY_PROMPTS, FIDELITY_SEED)
        cm, count = self.cm(images), len(FIDELITY_TARGET_PROMPTS)
        return {"target": sum(cm[:count]) / count - 1.0, "retain": sum(cm[count:]) / (len(cm) - count) - 1.0,
                "target_pixels": pixel_change(self.anchor_images[:count], images[:count]),
                "retain_pixels": pixel_change(self.anchor_images[count:], images[count:])}


@contextmanager
def one_thread():
    """One torch thread: the same arithmetic wherever the table runs (on a shared 2-core machine also the fastest)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def fidelity_setup():
    """The tiny base pipeline and the scorer of CM against its own images of the prompts."""
    from cpdm.diffusion.tiny import tiny_sd_pipeline

    base = tiny_sd_pipeline(seed=0)
    return base, TinyCM(sample(base, FIDELITY_PROMPTS, FIDELITY_SEED))


def fidelity_row(method_name: str, quick: bool, base, scorer: TinyCM) -> dict:
    """Run one method on a copy of the base pipeline; its mean CM change on the target and retain prompts."""
    import copy

    from cpdm.unlearning import get_method
    from cpdm.unlearning.base import TrainingOptions, UnlearnRequest

    method = get_method(method_name)
    params = method.resolve_params(fidelity_sizes(method, quick))
    pipe = copy.deepcopy(base)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as folder:
        images = ()
        if method.needs_images:  # the concept's images: its anchors
            images = []
            for index, image in enumerate(scorer.anchor_images[: len(FIDELITY_TARGET_PROMPTS)]):
                images.append(Path(folder) / f"concept{index}.png")
                image.save(images[-1])
        request = UnlearnRequest(concepts=(FIDELITY_CONCEPT,), images=tuple(images), params=params, seed=0)
        method.run(pipe, request, params, TrainingOptions(progress=False))
    if method.inference_time:
        from cpdm.diffusion.sld import SLDPipeline, safety_concept, settings_from_params

        pipe = SLDPipeline(pipe, safety_concept(request.concepts), settings_from_params(params))
    seconds = time.perf_counter() - start
    return {"method": method_name, **scorer.changes(pipe), "seconds": seconds}


def fidelity_table(quick: bool, methods=None) -> list[dict]:
    """Each method's CM change on the target and retain prompts, on the tiny pipeline (one process, one thread)."""
    rows = []
    with one_thread():
        base, scorer = fidelity_setup()
        for method_name in methods or FIDELITY_QUICK_SIZES:
            rows.append(fidelity_row(method_name, quick, base, scorer))
            print(f"fidelity: {method_name} ran in {rows[-1]['seconds']:.1f} s", flush=True)
    return rows


# (channel_fraction, weight_fraction): the first default, 5x and 10x its channels (10x is the default now), and all.
PRUNING_SWEEP = ((0.01, 0.5), (0.05, 0.5), (0.1, 0.5), (1.0, 1.0))


def pruning_sweep() -> list[dict]:
    """Pruning at its default sizes with (channel_fraction, weight_fraction) from PRUNING_SWEEP: CM changes."""
    import copy

    from cpdm.unlearning import get_method
    from cpdm.unlearning.base import TrainingOptions, UnlearnRequest
    from cpdm.unlearning.pruning import ffn_layers

    method = get_method("pruning")
    rows = []
    with one_thread():
        base, scorer = fidelity_setup()
        weights = sum(layer.weight.numel() for layer in ffn_layers(base.unet).values())
        for channel_fraction, weight_fraction in PRUNING_SWEEP:
            params = method.resolve_params({"channel_fraction": channel_fraction, "weight_fraction": weight_fraction})
            pipe = copy.deepcopy(base)
            request = UnlearnRequest(concepts=(FIDELITY_CONCEPT,), params=params, seed=0)
            method.run(pipe, request, params, TrainingOptions(progress=False))
            zeroed = sum(len(indices) for indices in request.record["mask"].values()) / weights
            row = {"channel_fraction": channel_fraction, "weight_fraction": weight_fraction, "zeroed": zeroed,
                   **scorer.changes(pipe)}
            rows.append(row)
            print(f"channels {channel_fraction:<5g} weights {weight_fraction:<4g} "
                  f"nominal {channel_fraction * weight_fraction:6.2%}  zeroed {zeroed:6.2%}  "
                  f"target {row['target']:+.3e} ({row['target_pixels']:.2f} levels)  "
                  f"retain {row['retain']:+.3e} ({row['retain_pixels']:.2f} levels)", flush=True)
    return rows


def guided_step_seconds(unet, pipe, steps: int, compute_dtype=None) -> float:
    """Seconds of one classifier-free-guided DDIM step of ``unet`` at batch 1, as ESD's sampler runs it.

    One untimed step first (allocations, kernel choice). ESD samples its
    x_t with such steps, and Concept Ablation, gradient ascent and pruning
    generate their images with them.
    """
    import torch
    from diffusers import DDIMScheduler

    from cpdm.unlearning.base import encode_text, unet_latent_shape
    from cpdm.unlearning.esd import sample_partway

    device = unet.device
    scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    scheduler.set_timesteps(50, device=device)
    uncond, _ = encode_text(pipe, [""])
    concept, _ = encode_text(pipe, [CONCEPT])
    latents = torch.randn(unet_latent_shape(unet), device=device)
    sample_partway(unet, scheduler, latents, concept, uncond, 3.0, 1, compute_dtype)
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    sample_partway(unet, scheduler, latents, concept, uncond, 3.0, steps, compute_dtype)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / steps


def full_size(device: str, iterations: int) -> dict:
    """Seconds per ESD-x training pass, per guided sampling step, UCE in total, on the SD 1.x architecture."""
    import copy

    import torch

    from cpdm.diffusion.architectures import SD15, random_sd_pipeline
    from cpdm.unlearning import get_method
    from cpdm.unlearning.base import TrainingOptions, UnlearnRequest

    cuda = device.startswith("cuda")
    start = time.perf_counter()
    pipe = random_sd_pipeline(SD15, device=device)
    figures = {"load_seconds": time.perf_counter() - start}
    print(f"built SD 1.x architecture on {device} in {figures['load_seconds']:.1f} s", flush=True)

    uce = get_method("uce")
    params = uce.resolve_params({})
    start = time.perf_counter()
    uce.run(pipe, UnlearnRequest(concepts=(CONCEPT,)), params, TrainingOptions(progress=False))
    if cuda:
        torch.cuda.synchronize()
    figures["uce_seconds"] = time.perf_counter() - start
    print(f"UCE total                {figures['uce_seconds']:8.2f} s", flush=True)

    esd = get_method("esd-x")
    # ddim_steps 1: every iteration samples nothing and is the training pass alone.
    esd_params = esd.resolve_params({"iterations": iterations, "ddim_steps": 1})
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    esd.run(pipe, UnlearnRequest(concepts=(CONCEPT,)), esd_params, TrainingOptions(progress=True))
    if cuda:
        torch.cuda.synchronize()
        figures["esd_peak_gb"] = torch.cuda.max_memory_allocated() / 2**30
    figures["esd_train_pass_seconds"] = (time.perf_counter() - start) / iterations

    figures["sampling_step_seconds"] = guided_step_seconds(copy.deepcopy(pipe.unet), pipe, steps=2)
    # An ESD iteration samples k ~ U{0..49} guided steps (24.5 on average) before its training pass.
    figures["esd_iteration_seconds"] = figures["esd_train_pass_seconds"] + 24.5 * figures["sampling_step_seconds"]
    figures["esd_1000_iterations_seconds"] = 1000 * figures["esd_iteration_seconds"]
    print(f"ESD-x training pass      {figures['esd_train_pass_seconds']:8.2f} s/it", flush=True)
    print(f"guided sampling step     {figures['sampling_step_seconds']:8.2f} s", flush=True)
    print(f"ESD-x iteration (mean)   {figures['esd_iteration_seconds']:8.2f} s/it  -> 1000 iterations "
          f"{figures['esd_1000_iterations_seconds'] / 3600:.1f} h", flush=True)
    return figures


def print_fidelity(rows: list[dict], sizes: str) -> None:
    """The fidelity table beside the figures recorded before issue 22's changes, where they were measured."""
    before = FIDELITY_BEFORE.get(sizes, {})
    print(f"\nCM change against the base model's own images (tiny pipeline, {sizes} sizes; "
          f"target: prompts naming {FIDELITY_CONCEPT!r}, retain: the others); before = commit {FIDELITY_BEFORE_COMMIT}")
    print(f"{'method':<16} {'target now':>12} {'target before':>14} {'retain now':>12} {'retain before':>14}")
    for row in rows:
        old = before.get(row["method"])
        then = (f"{old[0]:+14.3e}", f"{old[1]:+14.3e}") if old else (f"{'-':>14}", f"{'-':>14}")
        print(f"{row['method']:<16} {row['target']:+12.3e} {then[0]} {row['retain']:+12.3e} {then[1]}", flush=True)


def fidelity_fields(rows: list[dict]) -> str:
    return " ".join(f"{row['method']}_target={row['target']:.3e} {row['method']}_retain={row['retain']:.3e}"
                    for row in rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_ITERATIONS} iterations per method")
    parser.add_argument("--full-size", action="store_true", help="SD 1.x architecture with random weights")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (full size only)")
    parser.add_argument("--iterations", type=int, default=2, help="ESD-x iterations timed at full size")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    parser.add_argument("--fidelity-only", action="store_true", help="only the fidelity table")
    parser.add_argument("--at-defaults", action="store_true",
                        help="the fidelity table at every default (tens of minutes on 2 cores)")
    parser.add_argument("--pruning-sweep", action="store_true", help="pruning's CM changes at several strengths")
    args = parser.parse_args()
    if args.one:
        print(json.dumps(run_one_tiny(args.one, args.quick)))
        return
    if args.full_size:
        figures = full_size(args.device, args.iterations)
        fields = " ".join(f"{key}={value:.3f}" for key, value in figures.items())
        print(f"RESULT device={args.device} {fields}")
        return
    if args.pruning_sweep:
        rows = pruning_sweep()
        names = [f"pruning_{row['channel_fraction']:g}x{row['weight_fraction']:g}" for row in rows]
        print("RESULT " + " ".join(f"{name}_target={row['target']:.3e} {name}_retain={row['retain']:.3e}"
                                   for name, row in zip(names, rows)))
        return
    timing = "" if args.fidelity_only else " ".join(
        f"{row['method']}_s={row['seconds']:.3f} {row['method']}_peak_mb={row['peak_rss_mb']:.0f}"
        for row in tiny_table(args.quick))
    sizes = "default" if args.at_defaults else "quick"
    rows = fidelity_table(quick=not args.at_defaults)
    print_fidelity(rows, sizes)
    print(f"RESULT {timing} {fidelity_fields(rows)}".replace("RESULT  ", "RESULT "))


if __name__ == "__main__":
    main()
