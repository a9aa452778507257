"""Reduced precision for feature extraction, kept only where scores stay within 1e-3 of fp32.

Two precisions per device:

``float32``
    Plain fp32 everywhere. Always available.
``float16`` (CUDA)
    fp16 autocast: matrix products and convolutions on tensor cores.
``bf16-matmul`` (CPU)
    Tensors stay fp32, but oneDNN computes matrix products and convolutions
    from inputs rounded to bfloat16, accumulating in fp32 (what TF32 is on
    GPUs). Offered only on CPUs with bf16 instructions (AMX or AVX512-BF16):
    elsewhere oneDNN would emulate them, slower than fp32.

What the user asks for (``--precision``):

``auto`` (default)
    Try fp16 on CUDA; fp32 on the CPU. bf16's 8-bit mantissa moved VGG19's
    M_style by up to 0.24 % and ViT-L-14's M_sem by up to 9e-4 (full-size
    random-weight models, 512×512 images), so on the CPU the probe below
    nearly always rejects it, and running the probe costs more than it saves.
``reduced``
    Try the device's reduced precision, the CPU's included.
``fp32``
    Never reduce.

The engine does not trust either blindly. ``choose_precision`` runs a probe
batch both ways and keeps the reduced precision only if every distance among
the probe's images moves by at most ``TOLERANCE / PROBE_MARGIN`` (absolute
for M_sem, relative for M_style). The margin is there because the probe sees
only a few distances and the promise is for all of them: the largest error
over hundreds of pairs is typically two to three times the largest among six.
The choice is made per backbone, with the real weights and the user's own
images, and is the same on every run with them.

The CPU setting is process-wide in torch, so ``computing_in`` restores it on
leaving; scoring runs from one thread at a time.
"""

from __future__ import annotations

import itertools
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Sequence

import torch

from cpdm.errors import CpdmError
from cpdm.scoring import SCORING_PRECISIONS

FP32 = "float32"
CUDA_REDUCED = "float16"
CPU_REDUCED = "bf16-matmul"
TOLERANCE = 1e-3  # the most any distance may move when reduced precision is used
PROBE_IMAGES = 4  # images compared both ways: 6 distances
PROBE_MARGIN = 4.0  # on the probe, errors must stay under TOLERANCE / PROBE_MARGIN


class PrecisionError(CpdmError, ValueError):
    """A precision choice or name that this module does not know."""


def check_choice(choice: str) -> str:
    """Refuse a ``--precision`` choice other than those of ``SCORING_PRECISIONS``."""
    if choice not in SCORING_PRECISIONS:
        raise PrecisionError(f"precision must be one of {', '.join(SCORING_PRECISIONS)}, got {choice!r}")
    return choice


def cpu_has_native_bf16(cpuinfo: Path = Path("/proc/cpuinfo")) -> bool:
    """Whether this CPU computes bf16 in hardware (x86 AMX-BF16 or AVX512-BF16; Linux only)."""
    try:
        flags = cpuinfo.read_text(encoding="utf-8", errors="replace").split()
    except OSError:
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags


def reduced_precision_for(device: torch.device) -> str | None:
    """The reduced precision this device offers, or None if it has none."""
    if device.type == "cuda":
        return CUDA_REDUCED
    if device.type == "cpu" and cpu_has_native_bf16():
        return CPU_REDUCED
    return None


def precision_to_try(choice: str, device: torch.device) -> str | None:
    """The reduced precision to probe for the user's ``choice`` on ``device``, or None for fp32 only."""
    check_choice(choice)
    if choice == "reduced" or (choice == "auto" and device.type == "cuda"):
        return reduced_precision_for(device)
    return None


@contextmanager
def computing_in(precision: str, device: torch.device):
    """Run the block's forward passes in ``precision`` (one of the names above)."""
    if precision == FP32:
        yield
    elif precision == CUDA_REDUCED:
        with torch.autocast(device_type=device.type, dtype=torch.float16):
            yield
    elif precision == CPU_REDUCED:
        settings = (torch.backends.mkldnn.matmul, torch.backends.mkldnn.conv)
        before = [setting.fp32_precision for setting in settings]
        for setting in settings:
            setting.fp32_precision = "bf16"
        try:
            yield
        finally:
            for setting, value in zip(settings, before):
                setting.fp32_precision = value
    else:
        raise PrecisionError(f"unknown precision {precision!r}")


def choose_precision(
    compute: Callable[[str], Sequence],
    distance: Callable[[Sequence, int, int], float],
    reduced: str,
    relative: bool,
    tolerance: float = TOLERANCE / PROBE_MARGIN,
) -> tuple[str, Sequence]:
    """Compare distances among a probe's images computed in fp32 and in ``reduced``.

    ``compute(precision)`` returns the probe's per-image features;
    ``distance(features, i, j)`` a distance between two of them. Returns the
    chosen precision and the features computed in it (they are results, not
    waste): ``reduced`` if every distance moves by at most ``tolerance``
    (times the fp32 value when ``relative``), else fp32.
    """
    exact = compute(FP32)
    try:
        approx = compute(reduced)
    except RuntimeError:  # an op without a reduced-precision kernel on this device
        return FP32, exact
    for i, j in itertools.combinations(range(len(exact)), 2):
        reference = distance(exact, i, j)
        error = abs(distance(approx, i, j) - reference)
        limit = tolerance * abs(reference) if relative else tolerance
        if not error <= limit:
            return FP32, exact
    return reduced, approx
