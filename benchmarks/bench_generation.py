"""Generation speed: images/s of ``cpdm.diffusion.pipeline.generate_images`` at several batch sizes.

Three settings:

* default: the tiny random pipeline (what tests use) on the CPU, 64x64,
  images/s at batch sizes 1, 4 and 9 (``--steps``, default 50);
* ``--full-size``: Stable Diffusion v1's architecture with random weights at
  512x512 on the CPU: seconds per image at 5 steps (batch 1);
* ``--device cuda``: the same full-size architecture in fp16 with SDPA
  attention at 512x512, 50 steps: images/s at batch 1 and 9 and peak GPU
  memory (GB).

Random weights cost what real ones do, so the figures hold for real SD 1.x
weights (SD 2.x has a slightly different text encoder). As a point of
reference, SD 1.5 at 512 px, 50 steps, fp16 is often quoted at roughly 1-2 s
per image on an A100.

Each setting runs one untimed warm-up batch first (allocator, kernels),
then times ``--repeats`` batches.

    python benchmarks/bench_generation.py --quick          # under a minute on 2 CPU cores
    python benchmarks/bench_generation.py --full-size
    python benchmarks/bench_generation.py --device cuda
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cpdm.compute_device import resolve_device  # noqa: E402
from cpdm.diffusion.architectures import SD15, random_sd_pipeline  # noqa: E402
from cpdm.diffusion.pipeline import generate_images  # noqa: E402
from cpdm.diffusion.tiny import tiny_sd_pipeline  # noqa: E402

PROMPT = "water lilies on a pond, by Claude Monet, oil on canvas, impressionism"


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny pipeline, 10 steps, one repeat (under a minute)")
    parser.add_argument("--full-size", action="store_true", help="SD v1 architecture, random weights, 512x512, CPU")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (cuda: full size, fp16)")
    parser.add_argument("--steps", type=int, default=None, help="sampling steps (default: 50; 5 with --full-size; quick 10)")
    parser.add_argument("--repeats", type=int, default=None, help="timed batches per batch size (default 2; quick 1)")
    return parser.parse_args(argv)


def time_batches(pipeline, batch_size: int, steps: int, size: int, repeats: int) -> float:
    """Images per second at ``batch_size`` (after one untimed warm-up batch)."""
    def run(seed: int) -> None:
        generate_images(pipeline, [PROMPT] * batch_size, list(range(seed, seed + batch_size)), steps=steps,
                        guidance=9.0, height=size, width=size)
    run(0)
    synchronize()
    start = time.perf_counter()
    for repeat in range(repeats):
        run(1000 * (repeat + 1))
    synchronize()
    return batch_size * repeats / (time.perf_counter() - start)


def synchronize() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def main(argv=None) -> None:
    args = parse_args(argv)
    device = resolve_device(args.device)
    repeats = args.repeats or (1 if args.quick else 2)
    results: dict[str, str] = {}
    if device.type == "cuda":
        steps = args.steps or 50
        pipeline = random_sd_pipeline(SD15, device=device, dtype=torch.float16)
        print(f"full-size SD v1 architecture (random weights), fp16, SDPA, 512x512, {steps} steps on {torch.cuda.get_device_name()}")
        for batch in (1, 9):
            torch.cuda.reset_peak_memory_stats()
            rate = time_batches(pipeline, batch, steps, 512, repeats)
            peak = torch.cuda.max_memory_allocated() / 1e9
            print(f"  batch {batch}: {rate:.2f} images/s ({1 / rate:.2f} s/image), peak {peak:.1f} GB")
            results[f"cuda_b{batch}_img_s"] = f"{rate:.3f}"
            results[f"cuda_b{batch}_peak_gb"] = f"{peak:.2f}"
        print("  reference: SD 1.5, 512 px, 50 steps, fp16 is often quoted at roughly 1-2 s/image on an A100")
    elif args.full_size:
        steps = args.steps or 5
        pipeline = random_sd_pipeline(SD15)
        print(f"full-size SD v1 architecture (random weights), fp32, 512x512, {steps} steps, CPU "
              f"({torch.get_num_threads()} threads)")
        rate = time_batches(pipeline, 1, steps, 512, repeats)
        print(f"  batch 1: {1 / rate:.1f} s/image")
        results["cpu_full_s_per_image"] = f"{1 / rate:.2f}"
    else:
        steps = args.steps or (10 if args.quick else 50)
        pipeline = tiny_sd_pipeline()
        print(f"tiny pipeline, fp32, 64x64, {steps} steps, CPU ({torch.get_num_threads()} threads)")
        for batch in (1, 4, 9):
            rate = time_batches(pipeline, batch, steps, 64, repeats)
            print(f"  batch {batch}: {rate:.2f} images/s")
            results[f"tiny_b{batch}_img_s"] = f"{rate:.3f}"
    load = os.getloadavg()[0]
    print(f"load average while measuring: {load:.1f} on {os.cpu_count()} CPUs (shared machines: figures drop under load)")
    results["load_avg"] = f"{load:.1f}"
    print("RESULT " + " ".join(f"{name}={value}" for name, value in results.items()))


if __name__ == "__main__":
    main()
