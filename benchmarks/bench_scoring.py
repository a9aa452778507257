"""Scoring speed: the engine (batched, feature cache) against the one-pair-at-a-time approach.

Both approaches score the same pairs (anchors × generations, random images)
with the same full-size, random-weight backbones:

(a) reference: for every pair, load both images and run both through CLIP
    and the style network at batch size 1 in fp32, then apply cpdm.metric;
    an anchor with 9 generations is embedded 9 times.
(b) the engine: ``cpdm.scoring.engine.score_pairs`` (each image once, batched,
    features cached in the workspace), once per ``--precisions`` entry:
    ``auto`` is the default of ``cpdm score`` (fp16 on CUDA for each backbone
    whose distances it keeps within 1e-3 of fp32, fp32 on the CPU), ``fp32``
    shows what caching and batching alone give on CUDA, ``reduced`` also
    tries bf16 on CPUs with bf16 instructions.

The reference is timed in two halves (half of the anchors each), one
before and one after the engine runs, so that a drift in the machine's speed
(shared CPUs) weighs on both sides alike. Each engine run starts from an
empty feature cache. The script checks that
runs that stayed in fp32 give the reference's numbers (within 1e-4) and the
others stay within 1e-3, then prints pairs/s for each, the ratios, images/s and peak
memory (resident memory on the CPU, allocated GPU memory on CUDA). The
target is for the default, ``auto``.

    python benchmarks/bench_scoring.py            # 8 anchors x 9 generations, 512x512, ViT-L-14 + cpdm-inception
    python benchmarks/bench_scoring.py --quick    # 2 anchors x 3 generations, 64x64, ViT-B-32 + cpdm-inception: under a minute on 2 CPU cores
    python benchmarks/bench_scoring.py --style vgg19                  # VGG19 for style (its input at --size)
    python benchmarks/bench_scoring.py --device cuda --anchors 16     # fp32 and auto (fp16) engines
    python benchmarks/bench_scoring.py --precisions auto,reduced       # CPU: also try bf16
    python benchmarks/bench_scoring.py --backbone-table-only           # only the per-backbone table

It also prints a per-backbone table: every registered backbone's images/s
through the engine's feature extraction (``FeatureExtractor.descriptors``,
preparation included) with tiny and with full-size random weights, its
FLOPs per image (counted by ``torch.utils.flop_counter`` on one forward
pass with autograd on, so that attention is counted: 2 per multiply-add,
matrix products, convolutions and attention only), and the
fraction of the device's peak those FLOPs/s reach. The CPU's peak is an
estimate: cores × the clock /proc/cpuinfo reports × 64 fp32 FLOPs per cycle
with AVX-512 (two FMA units), 32 with AVX2 (``--peak-gflops`` overrides it).
On CUDA the table is printed in fp32 and in the precision ``auto`` picks,
against the GPU's datasheet peak for that precision (a small table of known
GPUs, else ``--peak-gflops``). ``--quick`` times the tiny models on one image and no
backbone at full size (building ViT-H alone takes longer than a minute on 2 cores), and
leaves out ``cpdm-inception``, whose tiny twin is the full InceptionV3 (11 GFLOP an image).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cpdm import metric  # noqa: E402
from cpdm.backbones import DEFAULT_STYLE, REGISTRY, load_backbone, load_semantic, load_style  # noqa: E402
from cpdm.scoring.features import FeatureExtractor  # noqa: E402
from cpdm.store.images import load_image, store_pil_image  # noqa: E402
from cpdm.scoring.precision import FP32, SCORING_PRECISIONS, TOLERANCE  # noqa: E402
from cpdm.scoring.engine import ScoringEngine, score_pairs  # noqa: E402
from cpdm.scoring.reader import load_scores  # noqa: E402
from cpdm.store.rows import GenerationRow, add_anchor, add_generations, add_prompt, add_variant, make_pairs  # noqa: E402
from cpdm.store.workspace import init_workspace  # noqa: E402


# Left out of the quick table: their tiny twin costs as much as the full network.
QUICK_TABLE_SKIPS = ("cpdm-inception",)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="2 anchors x 3 generations, 64x64, ViT-B-32, the table on tiny models (under a minute on 2 cores)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--anchors", type=int, default=None, help="anchors (default 8; quick 2)")
    parser.add_argument("--generations", type=int, default=None, help="generations per anchor (default 9; quick 3)")
    parser.add_argument("--size", type=int, default=None, help="image side in pixels (default 512; quick 64)")
    parser.add_argument("--semantic", default=None, help="open_clip MODEL/TAG (default ViT-L-14/openai; quick ViT-B-32/openai)")
    parser.add_argument("--style", default=DEFAULT_STYLE, choices=["vgg19", "cpdm-inception"],
                        help="style backbone (default: the CPDM release's, as `cpdm score` uses it)")
    parser.add_argument("--batch-size", type=int, default=None, help="engine batch size (default 16 on CPU, 64 on CUDA)")
    parser.add_argument("--precisions", default=None, help="engine runs, comma-separated (default: auto on CPU, fp32,auto on CUDA)")
    parser.add_argument("--backbone-table-only", action="store_true", help="only the per-backbone table")
    parser.add_argument("--full-size", default=None, help="backbones timed at full size, comma-separated (default: all registered; quick: none)")
    parser.add_argument("--table-backbones", default=None,
                        help="backbones in the table, comma-separated (default: all registered; quick: all but cpdm-inception)")
    parser.add_argument("--table-images", type=int, default=None, help="images timed per backbone (default 4; quick 1)")
    parser.add_argument("--peak-gflops", type=float, default=None, help="the device's peak GFLOP/s for the fraction (default: estimated)")
    args = parser.parse_args(argv)
    quick = args.quick
    args.anchors = args.anchors or (2 if quick else 8)
    args.generations = args.generations or (3 if quick else 9)
    args.size = args.size or (64 if quick else 512)
    args.semantic = args.semantic or ("ViT-B-32/openai" if quick else "ViT-L-14/openai")
    args.batch_size = args.batch_size or (64 if args.device.startswith("cuda") else 16)
    args.precisions = (args.precisions or ("fp32,auto" if args.device.startswith("cuda") else "auto")).split(",")
    if args.full_size is None:
        args.full_size = "" if quick else ",".join(entry.name for entry in REGISTRY)
    args.full_size = [name for name in args.full_size.split(",") if name]
    if args.table_backbones is None:
        args.table_backbones = ",".join(entry.name for entry in REGISTRY if not (quick and entry.name in QUICK_TABLE_SKIPS))
    args.table_backbones = [name for name in args.table_backbones.split(",") if name]
    args.table_images = args.table_images or (1 if quick else 4)
    unnamed = set(args.full_size + args.table_backbones) - {entry.name for entry in REGISTRY}
    if unnamed:
        parser.error(f"no registered backbone named {', '.join(sorted(unnamed))} "
                     f"(registered: {', '.join(entry.name for entry in REGISTRY)})")
    unknown = set(args.precisions) - set(SCORING_PRECISIONS)
    if unknown or "auto" not in args.precisions:
        parser.error(f"--precisions takes {', '.join(SCORING_PRECISIONS)} and must include auto (the target's)")
    return args


class PeakMemory:
    """Peak resident memory (CPU, sampled) or peak allocated GPU memory during a block, in MiB."""

    def __init__(self, device: str):
        self.cuda = device.startswith("cuda")
        self.peak_mib = 0.0
        self._stop = threading.Event()

    def _rss_mib(self) -> float:
        with open("/proc/self/statm") as handle:
            return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak_mib = max(self.peak_mib, self._rss_mib())
            time.sleep(0.02)

    def __enter__(self) -> "PeakMemory":
        if self.cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        else:
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        if self.cuda:
            torch.cuda.synchronize()
            self.peak_mib = torch.cuda.max_memory_allocated() / 2**20
        else:
            self._stop.set()
            self._thread.join()


def build_workspace(root: Path, anchors: int, generations: int, size: int):
    """A workspace of random images: anchors × generations normal pairs."""
    ws = init_workspace(root)
    rng = np.random.default_rng(0)

    def random_image() -> Image.Image:
        # Smooth colour fields plus noise: closer to real images than pure noise.
        base = rng.uniform(0, 255, size=(8, 8, 3)).astype(np.uint8)
        image = Image.fromarray(base).resize((size, size), Image.BICUBIC)
        noise = rng.normal(0, 12, size=(size, size, 3))
        return Image.fromarray(np.clip(np.asarray(image) + noise, 0, 255).astype(np.uint8))

    variant = add_variant(ws, "original", base_model="sd", method="original")
    for a in range(anchors):
        anchor_image = store_pil_image(ws, random_image()).sha256
        anchor = add_anchor(ws, anchor_image, artist=f"artist {a}")
        prompt = add_prompt(ws, anchor, "x", origin="manual")
        rows = [GenerationRow(prompt, variant, g, None, None, store_pil_image(ws, random_image()).sha256)
                for g in range(generations)]
        make_pairs(ws, add_generations(ws, rows))
    return ws


def reference_scores(ws, clip, style, anchors: list[int]) -> dict[int, tuple[float, float]]:
    """One pair at a time, both images embedded for every pair, batch size 1, fp32 (pairs of ``anchors``)."""
    marks = ",".join("?" * len(anchors))
    rows = ws.conn.execute(
        f"SELECT p.id, a.image, p.image FROM pairs p JOIN anchors a ON a.id = p.anchor WHERE a.id IN ({marks}) ORDER BY p.id",
        anchors,
    )
    results = {}
    with torch.no_grad():
        for pair, anchor_sha, image_sha in rows.fetchall():
            anchor, generated = load_image(ws, anchor_sha), load_image(ws, image_sha)
            emb_a = clip.embed([anchor])[0]
            emb_g = clip.embed([generated])[0]
            grams_a = [gram[0] for gram in style.grams([anchor])]
            grams_g = [gram[0] for gram in style.grams([generated])]
            results[pair] = (
                float(metric.m_sem(emb_a, emb_g)),
                float(metric.m_style(grams_a, grams_g, style.layer_weights)),
            )
    return results


def time_engine(ws, clip, style, batch_size: int, precision: str, device: str):
    """Score every pair of a fresh workspace with the engine; returns (seconds, report, values, peak MiB)."""
    engine = ScoringEngine(ws, clip, style, batch_size=batch_size, precision=precision)
    with PeakMemory(device) as memory:
        t0 = time.perf_counter()
        report = score_pairs(ws, engine=engine, progress=False)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        seconds = time.perf_counter() - t0
    frame = load_scores(ws, clip.key, style.key)
    values = {int(row.pair): (row.m_sem, row.m_style) for row in frame.itertuples()}
    return seconds, report, values, memory.peak_mib


def differences(values: dict, reference: dict) -> tuple[float, float]:
    """Max |dM_sem| and max relative dM_style of ``values`` against ``reference``."""
    sem = max(abs(values[p][0] - reference[p][0]) for p in reference)
    style = max(abs(values[p][1] - reference[p][1]) / max(abs(reference[p][1]), 1e-30) for p in reference)
    return sem, style


# Datasheet dense peaks in TFLOP/s: (fp32 on CUDA cores, tf32 and fp16 on tensor cores, without sparsity).
# Looked up by the first key the device's name contains, so longer names come first (H100 PCIe before H100,
# A100 before A10, L40S before L4). GPUs without TF32 list their fp32 peak for it.
GPU_PEAKS = {"H200": (67.0, 495.0, 989.0), "H100 PCIe": (51.2, 378.0, 756.0), "H100": (67.0, 495.0, 989.0),
             "A100": (19.5, 156.0, 312.0), "A10": (31.2, 62.5, 125.0), "L40S": (91.6, 183.0, 362.0),
             "L4": (30.3, 60.0, 121.0), "V100": (15.7, 15.7, 125.0), "T4": (8.1, 8.1, 65.0)}
PEAK_PRECISIONS = ("float32", "tf32", "float16")


def cpu_peak_gflops() -> tuple[float, str]:
    """An fp32 peak for the cores torch uses: cores x clock x FLOPs per cycle (an estimate, stated as such)."""
    text = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    flags = next((line for line in text.splitlines() if line.startswith("flags")), "")
    clocks = [float(line.split(":")[1]) for line in text.splitlines() if line.startswith("cpu MHz")]
    ghz = (max(clocks) / 1000) if clocks else 2.0
    per_cycle = 64 if "avx512f" in flags else 32 if "fma" in flags else 8
    cores = torch.get_num_threads()
    return cores * ghz * per_cycle, f"{cores} core{'s' if cores != 1 else ''} x {ghz:.2f} GHz x {per_cycle} FLOP/cycle (estimate)"


def device_peak_gflops(device: str, precision: str, override: float | None) -> tuple[float | None, str]:
    """The device's peak for a precision, and where the figure comes from."""
    if override:
        return override, "--peak-gflops"
    if not device.startswith("cuda"):
        return cpu_peak_gflops()
    name = torch.cuda.get_device_name(torch.device(device))
    for key, peaks in GPU_PEAKS.items():
        if key in name:
            label = precision if precision in PEAK_PRECISIONS else "float32"
            return peaks[PEAK_PRECISIONS.index(label)] * 1000, f"{name} datasheet, dense {label}"
    return None, f"{name}: no known peak (give --peak-gflops)"


def flops_per_image(backbone, image: Image.Image) -> float:
    """FLOPs of one forward pass on one image (matrix products and convolutions, 2 per multiply-add)."""
    return float(sum(flop_counts(backbone, image).values()))


def flop_counts(backbone, image: Image.Image) -> dict[str, int]:
    """FLOPs of one forward pass on one image, per operator (``aten.convolution``, ``aten.mm``, ...).

    Counted with autograd on: in inference mode torch runs attention through a
    fused kernel (``_native_multi_head_attention``) that the counter does not
    see, which would leave out a third of a ViT's work.
    """
    from torch.utils.flop_counter import FlopCounterMode

    batch = backbone.prepare(image).unsqueeze(0).to(backbone.device)
    network = backbone.forward if backbone.descriptor == "embedding" else backbone.network
    with torch.enable_grad(), FlopCounterMode(display=False) as counter:
        network(batch)
    return {str(operator): int(count) for operator, count in counter.get_flop_counts().get("Global", {}).items()}


def time_backbone(backbone, images: list, device: str, precision: str) -> tuple[float, str]:
    """Images/s of the engine's feature extraction for one backbone, after one warm-up image; and the precision used."""
    extractor = FeatureExtractor([backbone], precision)
    extractor.descriptors(backbone, images[:1])  # warm-up: first-call allocations, cuDNN autotuning
    if precision == "auto" and extractor.precision[backbone.key] is None and len(images) >= 2:
        extractor.descriptors(backbone, images[:2])  # the probe that chooses the precision, outside the timing
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    started = time.perf_counter()
    extractor.descriptors(backbone, images)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return len(images) / (time.perf_counter() - started), extractor.precision[backbone.key] or FP32


def backbone_table(args) -> dict[str, float]:
    """Print images/s per backbone (tiny and full-size random weights), FLOPs per image and fraction of peak."""
    rng = np.random.default_rng(1)
    images = [Image.fromarray(rng.integers(0, 256, size=(args.size, args.size, 3), dtype=np.uint8))
              for _ in range(args.table_images)]
    precisions = ["fp32", "auto"] if args.device.startswith("cuda") else ["fp32"]
    print(f"\nper-backbone feature extraction, {args.table_images} images of {args.size}x{args.size} "
          f"(device={args.device}{'' if args.device.startswith('cuda') else ', no GPU measured'})")
    print(f"{'backbone':<28} {'weights':<7} {'precision':<10} {'images/s':>9} {'GFLOP/img':>10} {'GFLOP/s':>9} {'of peak':>8}")
    results = {}
    for entry in REGISTRY:
        if entry.name not in args.table_backbones:
            continue
        for mode in ("tiny", "random"):
            if mode == "random" and entry.name not in args.full_size:
                continue
            started = time.perf_counter()
            backbone = load_backbone(entry.name, mode=mode, device=args.device)
            built = time.perf_counter() - started
            gflop = flops_per_image(backbone, images[0]) / 1e9
            for precision in precisions:
                rate, used = time_backbone(backbone, images, args.device, precision)
                peak, source = device_peak_gflops(args.device, used, args.peak_gflops)
                achieved = gflop * rate
                fraction = f"{achieved / peak:.1%}" if peak else "n/a"
                label = "full" if mode == "random" else "tiny"
                print(f"{entry.name:<28} {label:<7} {used:<10} {rate:>9.3f} {gflop:>10.3f} {achieved:>9.1f} {fraction:>8}"
                      f"   (built in {built:.1f} s)")
                if mode == "random":
                    key = entry.name.replace("/", "_").replace("-", "_")
                    results[f"ips_{key}_{used}"] = rate
                    results[f"gflop_{key}"] = gflop
            del backbone
    peak, source = device_peak_gflops(args.device, FP32, args.peak_gflops)
    print(f"peak used for the fraction: {f'{peak:.0f} GFLOP/s' if peak else 'unknown'} ({source})")
    return results


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.backbone_table_only:
        table = backbone_table(args)
        print("RESULT " + " ".join(f"{k}={v:.3f}" for k, v in table.items()))
        return 0
    device = args.device
    style_size = args.size if args.style == "vgg19" else None
    print(
        f"device={device} threads={torch.get_num_threads()} pairs={args.anchors}x{args.generations} "
        f"size={args.size} semantic={args.semantic} style={args.style} (random weights, full-size) batch={args.batch_size}"
    )
    started = time.perf_counter()
    clip = load_semantic(args.semantic, mode="random", device=device)
    style = load_style(args.style, mode="random", device=device, image_size=style_size)
    print(f"built backbones in {time.perf_counter() - started:.1f} s")
    n_pairs = args.anchors * args.generations

    with tempfile.TemporaryDirectory(prefix="cpdm-bench-") as folder:
        ws = build_workspace(Path(folder) / "reference", args.anchors, args.generations, args.size)
        # Warm-up outside the timings (first-call allocations, cuDNN autotuning).
        warm = load_image(ws, ws.conn.execute("SELECT image FROM anchors LIMIT 1").fetchone()[0])
        clip.embed([warm])
        style.grams([warm])
        anchors = [row[0] for row in ws.conn.execute("SELECT id FROM anchors ORDER BY id")]
        halves = [anchors[: len(anchors) // 2], anchors[len(anchors) // 2 :]]
        # The reference is timed in two halves, before and after the engine runs, so that
        # a drift in machine speed (shared CPUs) weighs on both sides alike.
        reference, reference_seconds, reference_peak = {}, 0.0, 0.0
        runs = {}
        for half in halves:
            with PeakMemory(device) as reference_memory:
                t0 = time.perf_counter()
                reference.update(reference_scores(ws, clip, style, half))
                if device.startswith("cuda"):
                    torch.cuda.synchronize()
                reference_seconds += time.perf_counter() - t0
            reference_peak = max(reference_peak, reference_memory.peak_mib)
            if not runs:
                # Each engine starts from an empty feature cache (its own copy of the same images).
                for precision in args.precisions:
                    engine_ws = build_workspace(Path(folder) / precision, args.anchors, args.generations, args.size)
                    runs[precision] = time_engine(engine_ws, clip, style, args.batch_size, precision, device)
                    engine_ws.close()
        ws.close()

    reference_rate = n_pairs / reference_seconds
    target = 10.0 if device.startswith("cuda") else 2.0
    print(f"{'approach':<40} {'seconds':>8} {'pairs/s':>9} {'speedup':>8} {'peak MiB':>9}  precision (semantic/style)")
    print(
        f"{'(a) reference: per pair, batch 1, fp32':<40} {reference_seconds:>8.2f} {reference_rate:>9.3f} "
        f"{1:>7.2f}x {reference_peak:>9.0f}  float32/float32"
    )
    labels = {choice: f"(b) engine, --precision {choice}" for choice in args.precisions}
    labels["auto"] += " (default)"
    all_same = True
    for precision, (seconds, report, values, peak) in runs.items():
        rate = n_pairs / seconds
        print(
            f"{labels[precision]:<40} {seconds:>8.2f} {rate:>9.3f} {rate / reference_rate:>7.2f}x {peak:>9.0f}  "
            f"{'/'.join(report.precision.values())}"
        )
    print(f"target: the default engine (auto) at least {target:g}x the reference on {'CUDA' if target == 10 else 'CPU'}")
    # Caching alone: the reference runs 2 images per pair, the engine each image once.
    engine_images = args.anchors * (args.generations + 1)
    print(
        f"images through the networks: reference {2 * n_pairs}, engine {engine_images}; at the reference's "
        f"per-image speed caching alone gives {2 * n_pairs / engine_images:.2f}x, the rest is per-image speed"
    )
    for precision, (seconds, report, values, peak) in runs.items():
        # fp32 must reproduce the reference; reduced precision may move distances by the 1e-3 it promises.
        all_fp32 = set(report.precision.values()) == {FP32}
        tolerance = 1e-4 if all_fp32 else TOLERANCE
        sem_diff, style_rel = differences(values, reference)
        same = len(values) == len(reference) and sem_diff <= tolerance and style_rel <= tolerance
        all_same &= same
        print(
            f"{labels[precision]}: same numbers as (a): {'yes' if same else 'NO'} (max |dM_sem| = {sem_diff:.2e}, "
            f"max relative dM_style = {style_rel:.2e}, tolerance {tolerance:g}); "
            f"{report.images_computed} images at {report.images_computed / seconds:.2f} images/s"
        )
    table = backbone_table(args)
    auto_seconds, auto_report, auto_values, auto_peak = runs["auto"]
    sem_diff, style_rel = differences(auto_values, reference)
    others = "".join(f"speedup_{choice}={reference_seconds / runs[choice][0]:.2f} " for choice in runs if choice != "auto")
    print(
        f"RESULT reference_pairs_per_s={reference_rate:.3f} engine_pairs_per_s={n_pairs / auto_seconds:.3f} "
        f"speedup={reference_seconds / auto_seconds:.2f} {others}"
        f"engine_images_per_s={auto_report.images_computed / auto_seconds:.3f} same_numbers={int(all_same)} "
        f"max_sem_diff={sem_diff:.2e} max_style_rel_diff={style_rel:.2e} "
        f"precision={'/'.join(auto_report.precision.values())} "
        f"peak_mib_reference={reference_peak:.0f} peak_mib_engine={auto_peak:.0f} "
        + " ".join(f"{k}={v:.3f}" for k, v in table.items())
    )
    return 0 if all_same else 1


if __name__ == "__main__":
    sys.exit(main())
