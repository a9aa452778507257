"""Part 1, scoring: the engine against the per-pair reference, and every registered backbone's speed.

1. The paper's pair (``ViT-L-14/openai`` with the released InceptionV3,
   ``cpdm-inception``) scores anchors × generations of random images three
   ways: one pair at a time at batch 1 in fp32 (the reference, as the
   release computes it), and the engine (``score_pairs``: each image once,
   batched, features cached) with ``--precision fp32`` and ``auto``. Figures:
   pairs/s, the speed-up over the reference (target: at least 10× for
   ``auto`` on a GPU), whether the numbers are the reference's within the
   stated tolerance (1e-4 in fp32, 1e-3 where fp16 was chosen), peak memory.
2. Every registered backbone: images/s through the engine's feature
   extraction (preparation included) in fp32 and in ``auto``, the precision
   ``auto`` chose, FLOPs per image (counted, not estimated) and the fraction
   of the device's datasheet peak for that precision; the same for the
   network alone on a prepared batch, which says how much of the gap is
   preparation. Target: at least 40 % of the peak for the CLIP backbones.

The helpers come from ``benchmarks/bench_scoring.py``, which measures the
same things on the CPU.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from benchmarks.bench_scoring import (
    QUICK_TABLE_SKIPS, build_workspace, device_peak_gflops, differences, flop_counts, reference_scores, time_backbone,
    time_engine,
)
from benchmarks.gpu.harness import PartContext, release_memory, timed
from cpdm.backbones import REGISTRY, load_backbone
from cpdm.scoring.precision import FP32, TOLERANCE, computing_in
from cpdm.store.images import load_image

PAPER_PAIR = ("ViT-L-14/openai", "cpdm-inception")
SPEEDUP_TARGET = 10.0
CLIP_PEAK_TARGET = 0.40
FP32_TOLERANCE = 1e-4  # an engine that stayed in fp32 must give the reference's numbers
BACKBONE_NEEDS_S = {"random": 8.0, "tiny": 1.0}  # about what one backbone's row takes, its building included


@dataclass(frozen=True)
class Sizes:
    """How much the part scores: pairs (anchors × generations), image side, images per backbone, and model size."""

    anchors: int
    generations: int
    image_size: int
    table_images: int
    batch_size: int
    network_repeats: int  # timed passes of the network alone
    mode: str  # "random": full-size random weights; "tiny": the backbones' tiny twins
    table_skips: tuple[str, ...] = ()  # backbones left out of the table


FULL = Sizes(anchors=8, generations=9, image_size=512, table_images=32, batch_size=64, network_repeats=3,
             mode="random")
# cpdm-inception's tiny twin is the full network (11 GFLOP an image): the pair runs it, the dry table leaves it out.
DRY = Sizes(anchors=1, generations=2, image_size=64, table_images=2, batch_size=16, network_repeats=1, mode="tiny",
            table_skips=QUICK_TABLE_SKIPS)


class Backbones:
    """Backbones built once each (the pair's two serve the table too); others are dropped after their row."""

    def __init__(self, mode: str, device: str):
        self.mode, self.device = mode, device
        self.built: dict[str, object] = {}

    def get(self, name: str):
        if name not in self.built:
            self.built[name] = load_backbone(name, mode=self.mode, device=self.device)
        return self.built[name]

    def drop(self, name: str) -> None:
        if name not in PAPER_PAIR:
            self.built.pop(name, None)
            release_memory()


def run(ctx: PartContext) -> None:
    sizes = DRY if ctx.dry_run else FULL
    weights = "tiny random-initialised twins" if sizes.mode == "tiny" else "full-size, random weights"
    ctx.recorder.note(f"backbones: {weights}; images: random, {sizes.image_size}x{sizes.image_size}")
    backbones = Backbones(sizes.mode, ctx.device)
    ctx.attempt("engine vs per-pair reference (paper's pair)", lambda: compare_with_reference(ctx, sizes, backbones))
    for entry in REGISTRY:
        if entry.name in sizes.table_skips:
            ctx.record(entry.name, None, detail="left out of the dry run's table (its tiny twin is the full network)")
            continue
        ctx.attempt(f"{entry.name}", lambda name=entry.name: backbone_figures(ctx, sizes, backbones, name),
                    needs_s=BACKBONE_NEEDS_S[sizes.mode])
        backbones.drop(entry.name)


# --- 1. the engine against the per-pair reference --------------------------------------------------------

def compare_with_reference(ctx: PartContext, sizes: Sizes, backbones: Backbones) -> None:
    """Score the same pairs one at a time and with the engine (fp32, auto); record speed and agreement."""
    clip, style = (backbones.get(name) for name in PAPER_PAIR)
    pairs = sizes.anchors * sizes.generations
    with tempfile.TemporaryDirectory(prefix="scoring-", dir=ctx.settings.scratch) as folder:
        ws = build_workspace(Path(folder) / "reference", sizes.anchors, sizes.generations, sizes.image_size)
        warm = load_image(ws, ws.conn.execute("SELECT image FROM anchors LIMIT 1").fetchone()[0])
        clip.embed([warm])  # first-call allocations and kernel choices, outside the timings
        style.grams([warm])
        anchors = [row[0] for row in ws.conn.execute("SELECT id FROM anchors ORDER BY id")]
        reference_s, reference = timed(ctx.device, reference_scores, ws, clip, style, anchors)
        ws.close()
        reference_rate = pairs / reference_s
        ctx.record("per-pair reference (batch 1, fp32)", reference_rate, "pairs/s",
                   detail=f"{pairs} pairs, both images embedded for every pair, {' + '.join(PAPER_PAIR)}")
        for precision in ("fp32", "auto"):
            engine_ws = build_workspace(Path(folder) / precision, sizes.anchors, sizes.generations, sizes.image_size)
            seconds, report, values, peak_mib = time_engine(engine_ws, clip, style, sizes.batch_size, precision,
                                                            ctx.device)
            engine_ws.close()
            record_engine_run(ctx, precision, pairs / seconds, reference_rate, report, values, reference, peak_mib)


def record_engine_run(ctx: PartContext, precision: str, rate: float, reference_rate: float, report, values: dict,
                      reference: dict, peak_mib: float) -> None:
    """The engine's pairs/s, its speed-up over the reference, and whether its numbers are the reference's."""
    chosen = ", ".join(f"{key} {used}" for key, used in report.precision.items())
    speedup = rate / reference_rate
    is_default = precision == "auto"
    ctx.record(f"engine --precision {precision}: speed-up over the reference", speedup, "x",
               detail=f"{rate:.1f} pairs/s; precision {chosen}; peak {peak_mib / 1024:.2f} GiB",
               target=f">= {SPEEDUP_TARGET:g}x" if is_default else "",
               met=speedup >= SPEEDUP_TARGET if is_default else None)
    all_fp32 = set(report.precision.values()) == {FP32}
    tolerance = FP32_TOLERANCE if all_fp32 else TOLERANCE
    sem_diff, style_rel = differences(values, reference)
    same = len(values) == len(reference) and sem_diff <= tolerance and style_rel <= tolerance
    ctx.record(f"engine --precision {precision}: same numbers as the reference", "yes" if same else "NO",
               detail=f"max |dM_sem| {sem_diff:.1e}, max relative dM_style {style_rel:.1e}",
               target=f"within {tolerance:g}", met=same)


# --- 2. every registered backbone -------------------------------------------------------------------------

def random_images(count: int, size: int, seed: int = 1) -> list[Image.Image]:
    rng = np.random.default_rng(seed)
    return [Image.fromarray(rng.integers(0, 256, size=(size, size, 3), dtype=np.uint8)) for _ in range(count)]


def backbone_figures(ctx: PartContext, sizes: Sizes, backbones: Backbones, name: str) -> None:
    """FLOPs per image, then images/s in fp32 and auto with the fraction of the device's peak."""
    backbone = backbones.get(name)
    images = random_images(sizes.table_images, sizes.image_size)
    counts = flop_counts(backbone, images[0])
    flops = float(sum(counts.values()))
    conv_share = sum(count for op, count in counts.items() if "conv" in op) / max(flops, 1.0)
    ctx.record(f"{name}: FLOPs per image", flops / 1e9, "GFLOP",
               detail=f"counted by torch's FlopCounterMode, one forward pass; {conv_share:.0%} in convolutions")
    is_clip = next(entry.module for entry in REGISTRY if entry.name == name) == "clip"
    for choice in ("fp32", "auto"):
        rate, used = time_backbone(backbone, images, ctx.device, choice)
        network = network_rate(backbone, images, ctx.device, used, sizes.network_repeats)
        peak_gflops, source = peak_for(ctx.device, used, conv_share)
        fraction = flops * rate / (peak_gflops * 1e9) if peak_gflops else None
        network_fraction = flops * network / (peak_gflops * 1e9) if peak_gflops else None
        judged = is_clip and choice == "auto"
        ctx.record(f"{name}: images/s, --precision {choice}", rate, "img/s",
                   detail=(f"chose {used}; {percent(fraction)} of {tflops(peak_gflops)} ({source}); "
                           f"network alone {network:,.0f} img/s = {percent(network_fraction)}"),
                   target=f">= {CLIP_PEAK_TARGET:.0%} of peak" if judged else "",
                   met=(fraction is not None and fraction >= CLIP_PEAK_TARGET) if judged else None)


def percent(fraction: float | None) -> str:
    return "n/a" if fraction is None else f"{fraction:.1%}"


def tflops(gflops: float | None) -> str:
    return "an unknown peak" if not gflops else f"{gflops / 1000:,.1f} TFLOP/s"


def network_rate(backbone, images: list[Image.Image], device: str, precision: str, repeats: int) -> float:
    """Images/s of the network alone on a prepared batch already on the device, in ``precision``."""
    batch = torch.stack([backbone.prepare(image) for image in images]).to(backbone.device)
    forward = backbone.forward if backbone.descriptor == "embedding" else backbone.network
    torch_device = torch.device(device)

    def passes(count: int) -> None:
        with torch.inference_mode(), computing_in(precision, torch_device):
            for _ in range(count):
                forward(batch)

    passes(1)  # warm-up
    seconds, _ = timed(device, passes, repeats)
    return repeats * len(images) / seconds


def peak_for(device: str, precision: str, conv_share: float) -> tuple[float | None, str]:
    """The device's peak GFLOP/s for the precision used, and where it comes from.

    fp32 work runs on tensor cores as TF32 where torch allows it: matrix
    products when ``torch.get_float32_matmul_precision()`` is not
    ``highest``, convolutions when cuDNN's ``allow_tf32`` is on (its
    default); which applies follows the kind of operation that holds most
    of the backbone's FLOPs.
    """
    if precision == FP32 and str(device).startswith("cuda"):
        convolutions = conv_share >= 0.5
        tf32 = torch.backends.cudnn.allow_tf32 if convolutions else torch.get_float32_matmul_precision() != "highest"
        if tf32:
            peak, source = device_peak_gflops(device, "tf32", None)
            kind = "convolutions" if convolutions else "matrix products"
            return peak, f"{source} ({kind} run as TF32)"
    return device_peak_gflops(device, precision, None)
