"""Every GPU figure in one call: scoring, generation, unlearning and the end-to-end chain, on one GPU.

    make bench-gpu                                        # installs the carried wheels, then runs this
    python benchmarks/gpu_suite.py                        # all four parts, results in benchmarks/results/
    python benchmarks/gpu_suite.py --only generation,end-to-end   # rerun some parts (merged into the day's file)
    python benchmarks/gpu_suite.py --only end-to-end --budget end-to-end=300   # with more time than its default
    python benchmarks/gpu_suite.py --dry-run              # the same plumbing on the CPU, tiny models (about a minute)

The parts, each in its own process under its own time budget (a part that
fails or runs out of time is recorded with its one-line reason, and the
others run), together under 8 minutes on one H100/H200-class GPU:

1. scoring (``benchmarks/gpu/scoring.py``): the engine against the per-pair
   reference on the paper's pair, and every registered backbone's images/s,
   FLOPs and fraction of the device's peak;
2. generation (``benchmarks/gpu/generation.py``): SD 2.1 at 768 and SD 1.5 at
   512, batch 1 and 9, fp16, beside diffusers' fastest settings;
3. unlearning (``benchmarks/gpu/unlearning.py``): UCE with loading, seconds
   per iteration of the iterative methods and their projection to their
   defaults, pruning, peak memory;
4. end-to-end (``benchmarks/gpu/end_to_end.py``): ``cpdm pipeline run`` on a
   small study with a ``cpdm worker --device cuda`` process.

Every model is a full-size architecture with random weights: no weights
can be downloaded on the machines this is for, and the figures are speed and
memory, not quality. Results: ``OUT/gpu-<device>-<date>.json`` and a Markdown
table beside it (printed too); the last line is ``RESULT name=value ...``.
Without CUDA the command refuses at once, unless ``--dry-run`` (or
``--quick``, the name every benchmark script takes for its short run).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import importlib
import importlib.metadata
import os
import platform
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
# The parts run in processes forked from this one, which must not initialise the CUDA driver (forked children
# could not use CUDA then): torch's availability check asks NVML instead of the driver when this is set.
os.environ.setdefault("PYTORCH_NVML_BASED_CUDA_CHECK", "1")

from benchmarks.gpu.harness import DONE, Part, Settings, fork_call, fork_is_safe, run_part  # noqa: E402
from benchmarks.gpu.report import (  # noqa: E402
    DRY_RUN_STATEMENT, WEIGHTS_STATEMENT, markdown, result_line, results_path, write_results,
)

RESULTS_DIR = ROOT / "benchmarks" / "results"
# What the figures were measured with, by distribution name (read from the installed metadata).
SOFTWARE = ("torch", "torchvision", "transformers", "diffusers", "open_clip_torch", "pytorch-fid", "huggingface_hub")


# Budgets in seconds (GPU, dry run). On the GPU they add up, with each part's grace, to under 8 minutes.
PARTS = (
    Part("scoring", "engine vs per-pair reference; every backbone's images/s", "benchmarks.gpu.scoring", 70, 120),
    Part("generation", "SD 2.1 and 1.5 beside diffusers' fastest settings", "benchmarks.gpu.generation", 125, 120),
    Part("unlearning", "UCE with loading; each method per iteration and at its defaults", "benchmarks.gpu.unlearning",
         80, 120),
    Part("end-to-end", "cpdm pipeline run on a small study with a cpdm worker", "benchmarks.gpu.end_to_end", 150, 180),
)
# Modules every part needs, imported once before the parts' processes are forked (each then starts with them).
PRELOAD = ("torch", "diffusers", "transformers", "open_clip", "pytorch_fid.inception", "cpdm.scoring.engine",
           "cpdm.diffusion.pipeline", "cpdm.unlearning.runner", "cpdm.jobs.kinds", "benchmarks.gpu.scoring",
           "benchmarks.gpu.generation", "benchmarks.gpu.unlearning", "benchmarks.gpu.end_to_end")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dry-run", "--quick", dest="dry_run", action="store_true",
                        help="run every part on the CPU with shrunk or tiny models (under a minute), no CUDA needed")
    parser.add_argument("--only", default=None, metavar="PART[,PART]",
                        help=f"run only these parts ({', '.join(part.name for part in PARTS)})")
    parser.add_argument("--out", type=Path, default=None,
                        help="folder for the results (default: benchmarks/results; a new temporary folder for a dry run)")
    parser.add_argument("--budget", action="append", default=[], metavar="PART=SECONDS",
                        help="a part's time budget instead of its default (repeatable)")
    parser.add_argument("--scratch", type=Path, default=None,
                        help="folder for models and workspaces made during the run (default: a temporary folder, "
                             "removed at the end)")
    args = parser.parse_args(argv)
    names = [part.name for part in PARTS]
    args.only = [name.strip() for name in args.only.split(",") if name.strip()] if args.only else names
    args.budgets = {}
    for text in args.budget:
        name, _, seconds = text.partition("=")
        try:
            args.budgets[name.strip()] = float(seconds)
        except ValueError:
            parser.error(f"--budget takes PART=SECONDS, got {text!r}")
    unknown = sorted((set(args.only) | set(args.budgets)) - set(names))
    if unknown:
        parser.error(f"no part named {', '.join(unknown)} (parts: {', '.join(names)})")
    return args


def describe_device() -> dict:
    """The GPU (or, without one, the CPU) and the versions that matter; run in a forked process."""
    import torch

    info = {"cuda": torch.cuda.is_available()}
    if info["cuda"]:
        properties = torch.cuda.get_device_properties(0)
        info.update(name=properties.name, memory=f"{properties.total_memory / 2**30:.1f} GiB",
                    capability=f"{properties.major}.{properties.minor}", cuda=torch.version.cuda,
                    devices=torch.cuda.device_count())
    else:
        info.update(name=cpu_name(), cores=os.cpu_count())
    return info


def cpu_name() -> str:
    """The CPU's model name (Linux), or the platform's processor."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "cpu"


def software_versions() -> dict:
    versions = {"python": platform.python_version()}
    for distribution in SOFTWARE:
        try:
            versions[distribution] = importlib.metadata.version(distribution)
        except importlib.metadata.PackageNotFoundError:
            versions[distribution] = "missing"
    return versions


def preload() -> list[str]:
    """Import what the parts need, once; the modules that failed (their part will say why)."""
    failed = []
    for module in PRELOAD:
        try:
            importlib.import_module(module)
        except Exception as exc:  # a missing package fails the parts that need it, with its own message
            failed.append(f"{module} ({type(exc).__name__}: {exc})")
    return failed


def main(argv=None) -> int:
    args = parse_args(argv)
    info = fork_call(describe_device)
    if "error" in info:
        print(f"error: could not look at the device: {info['error']}", file=sys.stderr)
        return 1
    if not args.dry_run and not info["cuda"]:
        print("error: no CUDA device here (torch.cuda.is_available() is False); the GPU suite measures GPUs "
              "(--dry-run runs its plumbing on the CPU)", file=sys.stderr)
        return 1
    device = "cpu" if args.dry_run else "cuda"
    device_info = {key: value for key, value in info.items() if key != "cuda"}
    if args.dry_run:
        device_info["name"] = "cpu"  # the file's name; the model is below
        device_info["model"] = cpu_name()
    out = args.out or (Path(tempfile.mkdtemp(prefix="cpdm-gpu-dry-run-")) if args.dry_run else RESULTS_DIR)
    scratch = args.scratch or Path(tempfile.mkdtemp(prefix="cpdm-gpu-scratch-"))
    scratch.mkdir(parents=True, exist_ok=True)
    print(f"cpdm GPU suite on {info['name']}{' (dry run)' if args.dry_run else ''}: "
          f"{', '.join(args.only)}", flush=True)
    print(DRY_RUN_STATEMENT if args.dry_run else WEIGHTS_STATEMENT, flush=True)
    for failure in preload():
        print(f"note: could not import {failure}", flush=True)
    start_method = "fork"
    if not fork_is_safe(cuda=device == "cuda"):
        # An import initialised CUDA or CPU threads here: each part starts a fresh interpreter (a few seconds each).
        start_method = "spawn"
        print("note: forked processes could not use CUDA or CPU threads; each part starts a fresh interpreter",
              flush=True)
    settings = Settings(dry_run=args.dry_run, scratch=scratch, device=device)
    results = {"suite": "cpdm GPU suite", "dry_run": args.dry_run, "date": today(), "device": device_info,
               "software": software_versions(), "parts": {}}
    try:
        for part in PARTS:
            if part.name in args.only:
                part = with_budget(part, args.budgets.get(part.name), args.dry_run)
                results["parts"][part.name] = run_one(part, settings, device_info, start_method)
    finally:
        if args.scratch is None:
            shutil.rmtree(scratch, ignore_errors=True)
    path = results_path(out, device_info["name"], results["date"], args.dry_run)
    table = write_results(results, path)
    print()
    print(markdown(results))
    print(f"results: {path} and {table}")
    print(result_line(results))
    return 0 if all(part["status"] == DONE for part in results["parts"].values()) else 1


def with_budget(part: Part, seconds: float | None, dry_run: bool) -> Part:
    """The part with the budget given on the command line (for this kind of run), or as it is."""
    if seconds is None:
        return part
    return dataclasses.replace(part, **{"dry_budget_s" if dry_run else "budget_s": seconds})


def run_one(part: Part, settings: Settings, device_info: dict, start_method: str) -> dict:
    """Run one part in its own process and say how it ended."""
    print(f"\n== {part.name}: {part.title} (budget {part.budget(settings):.0f} s)", flush=True)
    result = run_part(part, settings, device_info, start_method)
    result["measured_at"] = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    result.pop("child_pids", None)
    error = f": {result['error']}" if result.get("error") else ""
    print(f"== {part.name}: {result['status']}{error} in {result['seconds']:.0f} s", flush=True)
    return result


def today() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d")


if __name__ == "__main__":
    sys.exit(main())
