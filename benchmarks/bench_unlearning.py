"""Benchmark: wall time and peak memory of each unlearning method.

Default: every method on the tiny random pipeline (CPU), with few
iterations, each in its own process so its peak memory (max RSS) is its own.
Reported: seconds in total and per iteration, and peak RSS in MB.

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
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

TINY_PARAMS = {
    "esd-x": {"iterations": 5, "ddim_steps": 5},
    "esd-u": {"iterations": 5, "ddim_steps": 5},
    "uce": {},
    "ablation": {"iterations": 5, "batch_size": 2, "anchor_images": 4, "anchor_steps": 5},
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_ITERATIONS} iterations per method")
    parser.add_argument("--full-size", action="store_true", help="SD 1.x architecture with random weights")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (full size only)")
    parser.add_argument("--iterations", type=int, default=2, help="ESD-x iterations timed at full size")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(run_one_tiny(args.one, args.quick)))
        return
    if args.full_size:
        figures = full_size(args.device, args.iterations)
        fields = " ".join(f"{key}={value:.3f}" for key, value in figures.items())
        print(f"RESULT device={args.device} {fields}")
        return
    rows = tiny_table(args.quick)
    fields = " ".join(f"{row['method']}_s={row['seconds']:.3f} {row['method']}_peak_mb={row['peak_rss_mb']:.0f}"
                      for row in rows)
    print(f"RESULT {fields}")


if __name__ == "__main__":
    main()
