"""Features of one image for the metric: extraction with any backbones, and their stored form.

Stored features: an L2-normalised embedding (float32) for embedding
backbones (CLIP, DINOv2, CSD), and for Gram backbones, per style layer
either the Gram matrix's upper triangle (float32) or, when the layer has
fewer positions than channels (H·W < C, e.g. InceptionV3's pooled block 3),
the feature maps themselves, from which the Gram matrix follows exactly and
which are smaller. Blobs are numpy ``.npz`` archives, read without pickle.
"""

from __future__ import annotations

import io
import itertools
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from PIL import Image

from cpdm import metric
from cpdm.scoring.precision import (
    FP32,
    PROBE_IMAGES,
    check_choice,
    choose_precision,
    computing_in,
    precision_to_try,
)
from cpdm.scoring.reader import ScoringError

PREPARE_THREADS = 8  # image decoding threads on CUDA
CPU_WORKERS = 2  # threads sharing the cores on the CPU, each running part of a batch
CPU_PIXELS_PER_PASS = 512 * 512  # input pixels per forward pass on the CPU (see FeatureExtractor)


# --------------------------------------------------------------------------
# Style descriptors: Gram matrices in a compact, exactly reproducible form
# --------------------------------------------------------------------------


@dataclass
class LayerGram:
    """One layer's Gram matrix, held either densely or as its factor ``G = F Fᵀ / norm``."""

    gram: np.ndarray | None = None  # (C, C) float32, exactly symmetric
    factor: np.ndarray | None = None  # (C, K) float32 with K = H·W < C
    norm: float = 1.0  # C·H·W, for the factor form

    def dense(self) -> np.ndarray:
        """The Gram matrix as float64 (C, C)."""
        if self.gram is not None:
            return self.gram.astype(np.float64)
        factor = self.factor.astype(np.float64)
        return factor @ factor.T / self.norm

    @property
    def channels(self) -> int:
        return (self.gram if self.gram is not None else self.factor).shape[0]


def symmetric_from_upper(upper: np.ndarray, channels: int) -> np.ndarray:
    """A symmetric (C, C) matrix from its upper triangle (row-major, diagonal included)."""
    rows, cols = np.triu_indices(channels)
    matrix = np.empty((channels, channels), dtype=upper.dtype)
    matrix[rows, cols] = upper
    matrix[cols, rows] = upper
    return matrix


def channels_from_upper_length(length: int) -> int:
    """C such that C·(C+1)/2 == length."""
    channels = int(round((np.sqrt(8 * length + 1) - 1) / 2))
    if channels * (channels + 1) // 2 != length:
        raise ScoringError(f"a stored Gram matrix has {length} entries, not a triangle")
    return channels


def describe_layer(maps: torch.Tensor) -> list[LayerGram]:
    """Each image's LayerGram for one layer's feature maps (N, C, H, W)."""
    n, c, h, w = maps.shape
    if h * w < c:
        flat = maps.reshape(n, c, h * w).float().cpu().numpy()
        return [LayerGram(factor=flat[i].copy(), norm=float(c * h * w)) for i in range(n)]
    grams = metric.gram_matrix(maps.float()).cpu().numpy()
    rows, cols = np.triu_indices(c)
    # Symmetrise through the upper triangle, exactly as a cached copy will be.
    return [LayerGram(gram=symmetric_from_upper(grams[i][rows, cols], c)) for i in range(n)]


def layer_distance(a: LayerGram, g: LayerGram) -> float:
    """``‖G(a) − G(g)‖²_F`` in float64.

    Two factors use ``‖AᵀA‖²/na² + ‖GᵀG‖²/ng² − 2‖AᵀG‖²/(na·ng)``, which
    never builds the C×C matrices (2048×2048 for InceptionV3's block 3).
    """
    if a.factor is not None and g.factor is not None:
        if a.norm == g.norm and np.array_equal(a.factor, g.factor):
            return 0.0  # exactly; the expansion below can cancel to a rounding residue
        fa = a.factor.astype(np.float64)
        fg = g.factor.astype(np.float64)
        aa = np.sum((fa.T @ fa) ** 2) / a.norm**2
        gg = np.sum((fg.T @ fg) ** 2) / g.norm**2
        ag = np.sum((fa.T @ fg) ** 2) / (a.norm * g.norm)
        return max(float(aa + gg - 2.0 * ag), 0.0)
    return float(np.sum((a.dense() - g.dense()) ** 2))


def style_distance(a: Sequence[LayerGram], g: Sequence[LayerGram], layer_weights: Sequence[float]) -> float:
    """M_style between two images' descriptors: :func:`cpdm.metric.m_style` on their layers."""
    if len(a) != len(g) or len(a) != len(layer_weights):
        raise ScoringError("style descriptors with different numbers of layers cannot be compared")
    return float(metric.m_style(a, g, layer_weights, layer_distance=layer_distance))


def encode_style(layers: Sequence[LayerGram]) -> bytes:
    """A style descriptor as an .npz blob (see the module docstring)."""
    arrays = {}
    for index, layer in enumerate(layers):
        if layer.gram is not None:
            rows, cols = np.triu_indices(layer.channels)
            arrays[f"gram{index}"] = layer.gram[rows, cols]
        else:
            arrays[f"factor{index}"] = layer.factor
            arrays[f"norm{index}"] = np.float64(layer.norm)
    return _to_npz(arrays)


def decode_style(blob: bytes, label: str) -> list[LayerGram]:
    arrays = _from_npz(blob, label)
    layers = []
    for index in itertools.count():
        if f"gram{index}" in arrays:
            upper = arrays[f"gram{index}"]
            layers.append(LayerGram(gram=symmetric_from_upper(upper, channels_from_upper_length(upper.size))))
        elif f"factor{index}" in arrays:
            layers.append(LayerGram(factor=arrays[f"factor{index}"], norm=float(arrays[f"norm{index}"])))
        else:
            break
    if not layers:
        raise ScoringError(f"{label}: cached style features hold no layers")
    return layers


def encode_embedding(embedding: np.ndarray) -> bytes:
    return _to_npz({"embedding": np.asarray(embedding, dtype=np.float32)})


def decode_embedding(blob: bytes, label: str) -> np.ndarray:
    arrays = _from_npz(blob, label)
    if "embedding" not in arrays:
        raise ScoringError(f"{label}: cached semantic features hold no embedding")
    return arrays["embedding"]


def _to_npz(arrays: dict) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def _from_npz(blob: bytes, label: str) -> dict:
    try:
        with np.load(io.BytesIO(blob), allow_pickle=False) as archive:
            return {name: archive[name] for name in archive.files}
    except Exception as exc:  # a blob written by something else
        raise ScoringError(f"{label}: cached features are unreadable ({exc}); delete them to recompute") from exc


# --------------------------------------------------------------------------
# Any backbone's descriptor: stored form and distance
# --------------------------------------------------------------------------


def encode_descriptor(backbone, descriptor) -> bytes:
    """A descriptor as the blob cached in ``features`` (an embedding, or Gram layers)."""
    return encode_style(descriptor) if backbone.descriptor == "gram" else encode_embedding(descriptor)


def decode_descriptor(backbone, blob: bytes, label: str):
    return decode_style(blob, label) if backbone.descriptor == "gram" else decode_embedding(blob, label)


def descriptor_distance(backbone, a, g) -> float:
    """The backbone's distance: Gram style distance, squared L2 (M_sem) or cosine distance of embeddings."""
    if backbone.descriptor == "gram":
        return style_distance(a, g, backbone.layer_weights)
    if backbone.comparison == "cosine":
        return float(metric.cosine_distance(a, g))
    return float(metric.m_sem(a, g))


# --------------------------------------------------------------------------
# Feature extraction with any number of backbones
# --------------------------------------------------------------------------


@dataclass
class ImageFeatures:
    """What the metric needs of one image for one (semantic, style) combination."""

    embedding: np.ndarray | None = None
    style: list[LayerGram] | np.ndarray | None = None


class FeatureExtractor:
    """Backbones, batched, each in the precision chosen as described in ``cpdm.scoring.precision``.

    ``precision`` says which reduced precision to try (``precision_to_try``):
    it is chosen per backbone on the first batch of two or more images.

    On CUDA, images are decoded and prepared (resized, normalised) by a few
    threads, so that the CPU work of one batch does not leave the GPU idle for
    long; on the CPU, torch already uses every core and this stays sequential.
    On the CPU each forward pass sees at most ``CPU_PIXELS_PER_PASS`` input
    pixels (one 512×512 VGG19 input, five 224×224 CLIP inputs): on a few
    cores larger batches are slower per image, as their activations fall
    out of the caches. And a batch is split between ``CPU_WORKERS`` threads
    that each run their half on their share of the cores: two passes on one
    core each finish sooner than the same passes one after the other on two
    cores, since no pass scales perfectly across cores.
    """

    def __init__(self, backbones: Sequence, precision: str = "auto"):
        check_choice(precision)
        self.choice = precision  # what was asked for (auto, reduced, fp32); ``precision`` holds what was chosen
        self.backbones = list(dict((b.key, b) for b in backbones).values())
        if not self.backbones:
            raise ScoringError("feature extraction needs at least one backbone")
        self.device = self.backbones[0].device
        self._pool = ThreadPoolExecutor(max_workers=PREPARE_THREADS) if self.device.type == "cuda" else None
        self.cpu_workers = min(CPU_WORKERS, torch.get_num_threads()) if self.device.type == "cpu" else 1
        self._cpu_pool = ThreadPoolExecutor(max_workers=self.cpu_workers) if self.cpu_workers > 1 else None
        self.reduced = precision_to_try(precision, self.device)
        # Per backbone key: None until chosen on the first batch of two or more images.
        undecided = None if self.reduced else FP32
        self.precision: dict[str, str | None] = {b.key: undecided for b in self.backbones}

    def map(self, function, items: Sequence) -> list:
        """``[function(item) for item in items]``, in threads on CUDA; the first error is raised, in order."""
        if self._pool is None or len(items) < 2:
            return [function(item) for item in items]
        return list(self._pool.map(function, items))

    def descriptors(self, backbone, images: Sequence[Image.Image]) -> list:
        """One descriptor per image (an embedding, or a LayerGram per layer); batches by input size."""
        prepared = self.map(backbone.prepare, images)
        results: list = [None] * len(images)
        by_shape: dict[tuple, list[int]] = {}
        for index, tensor in enumerate(prepared):
            by_shape.setdefault(tuple(tensor.shape), []).append(index)
        if backbone.descriptor == "gram":
            forward = lambda batch: self._describe(backbone, batch)  # noqa: E731
        else:
            forward = lambda batch: list(backbone.embed_batch(batch).numpy())  # noqa: E731
        for indices in by_shape.values():
            batch = torch.stack([prepared[i] for i in indices])
            described = self._run(
                backbone.key,
                forward,
                batch,
                distance=lambda d, i, j: descriptor_distance(backbone, d[i], d[j]),
                relative=backbone.descriptor == "gram",
            )
            for index, descriptor in zip(indices, described):
                results[index] = descriptor
        return results

    @staticmethod
    def _describe(backbone, batch: torch.Tensor) -> list[list[LayerGram]]:
        """Style descriptors of a prepared batch."""
        per_layer = [describe_layer(maps) for maps in backbone.feature_maps(batch)]
        return [list(layers) for layers in zip(*per_layer)]

    def _run(self, key: str, forward, batch: torch.Tensor, distance, relative: bool) -> list:
        """``forward(batch)`` in the backbone's precision, choosing it on a probe of this batch if undecided."""
        precision = self.precision[key]
        if precision is None and len(batch) >= 2:
            probe, rest = batch[:PROBE_IMAGES], batch[PROBE_IMAGES:]
            precision, probe_out = choose_precision(
                lambda candidate: self._forward_in(candidate, forward, probe), distance, self.reduced, relative
            )
            self.precision[key] = precision
            return list(probe_out) + (self._forward_in(precision, forward, rest) if len(rest) else [])
        return self._forward_in(precision or FP32, forward, batch)
    def _forward_in(self, precision: str, forward, batch: torch.Tensor) -> list:
        """``forward`` on the batch in ``precision``; on the CPU split between workers, in small passes."""
        # The precision setting is process-wide, so it is set here, around every worker's share.
        with computing_in(precision, self.device):
            if self.device.type != "cpu":
                return forward(batch)
            if self._cpu_pool is None or len(batch) < 2:
                return self._cpu_passes(forward, batch, torch.get_num_threads())
            cores = torch.get_num_threads()
            shares = batch.tensor_split(self.cpu_workers)
            try:
                results = list(
                    self._cpu_pool.map(lambda share: self._cpu_passes(forward, share, cores // self.cpu_workers), shares)
                )
            finally:
                torch.set_num_threads(cores)  # torch also keeps the last count globally, for threads started later
            return [item for share in results for item in share]

    @staticmethod
    def _cpu_passes(forward, batch: torch.Tensor, threads: int) -> list:
        """``forward`` on passes of at most CPU_PIXELS_PER_PASS input pixels, using ``threads`` cores."""
        torch.set_num_threads(threads)  # per calling thread (OpenMP), so each worker keeps its share
        per_pass = max(1, CPU_PIXELS_PER_PASS // (batch.shape[-1] * batch.shape[-2]))
        results = []
        for part in batch.split(per_pass):
            results += forward(part)
        return results


def feature_rows(extractor: FeatureExtractor, shas: Sequence[str], images: Sequence[Image.Image],
                 needs: dict[str, list[int]]) -> list[tuple[str, str, bytes]]:
    """Cache rows ``(sha, backbone key, blob)`` for the images each backbone needs (``needs[key]``: indices)."""
    rows = []
    for backbone in extractor.backbones:
        need = needs.get(backbone.key, [])
        if need:
            described = extractor.descriptors(backbone, [images[i] for i in need])
            rows += [(shas[i], backbone.key, encode_descriptor(backbone, d)) for i, d in zip(need, described)]
    return rows
