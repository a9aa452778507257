"""The scoring engine: batched feature extraction, a per-image feature cache, scores per pair.

``score_pairs`` scores every pair that has no score yet for a (semantic,
style) backbone pair:

1. Pairs are taken anchor by anchor, in chunks of about ``batch_size`` pairs.
2. For each chunk, the images whose features are not in the ``features``
   table yet are decoded once, batched (same-size images together) and run
   through both backbones; their features are written in one short
   transaction per batch. An anchor with 9 generations is embedded once, and
   after a new unlearning run only the new generations are.
3. The chunk's pairs are scored from the features and written in one short
   transaction, so an error later (a missing file, say) leaves every score
   written before it intact.
4. Finally each anchor gets up to ``REFERENCE_SAMPLE`` mismatched pairs (the
   anchor against generations of other anchors, a deterministic sample),
   computed from cached features, for the reference scale x_ref of CM.

Stored features: the L2-normalised CLIP embedding (float32), and per style
layer either the Gram matrix's upper triangle (float32) or, when the layer has
fewer positions than channels (H·W < C, e.g. InceptionV3's pooled block 3),
the feature maps themselves, from which the Gram matrix follows exactly and
which are smaller. Blobs are numpy ``.npz`` archives, read without pickle.

The engine runs in inference mode. With ``precision="auto"`` (the default)
it tries fp16 on CUDA on the first batch of each backbone and keeps it only
if every distance among a probe of that batch's images stays within 1e-3 of
fp32 (absolute for M_sem, relative for M_style); on the CPU it computes in
fp32. ``precision="reduced"`` also tries bf16 matrix products on CPUs that
have bf16 instructions, ``"fp32"`` never reduces; see ``cpdm.scoring.precision``.
"""

from __future__ import annotations

import hashlib
import io
import itertools
import time
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import pandas as pd
import torch
from PIL import Image

from cpdm import metric
from cpdm.backbones import (
    DEFAULT_SEMANTIC,
    DEFAULT_STYLE,
    backbone_key,
    check_style_name,
    load_semantic,
    load_style,
    resolve_device,
)
from cpdm.errors import CpdmError
from cpdm.store.images import ImageError
from cpdm.scoring.precision import (
    FP32,
    PROBE_IMAGES,
    check_choice,
    choose_precision,
    computing_in,
    precision_to_try,
)

REFERENCE_SAMPLE = 8  # mismatched pairs per anchor for the reference scale
PREPARE_THREADS = 8  # image decoding threads on CUDA
CPU_WORKERS = 2  # threads sharing the cores on the CPU, each running part of a batch
CPU_PIXELS_PER_PASS = 512 * 512  # input pixels per forward pass on the CPU (see FeatureExtractor)
SCORE_COLUMNS = [
    "pair", "anchor", "artist", "category", "image", "generation", "variant",
    "kind", "semantic", "style", "m_sem", "m_style",
]  # fmt: skip


class ScoringError(CpdmError):
    """A problem while scoring: bad pair ids, a broken feature blob, ..."""


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
    """M_style between two images' descriptors: ``Σ_l λ_l ‖G_l(a) − G_l(g)‖²_F``."""
    if len(a) != len(g) or len(a) != len(layer_weights):
        raise ScoringError("style descriptors with different numbers of layers cannot be compared")
    return float(sum(weight * layer_distance(la, lg) for la, lg, weight in zip(a, g, layer_weights)))


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
# Feature extraction with both backbones
# --------------------------------------------------------------------------


@dataclass
class ImageFeatures:
    """What the metric needs of one image."""

    embedding: np.ndarray | None = None
    style: list[LayerGram] | None = None


class FeatureExtractor:
    """Both backbones, batched, in the precision chosen as described in ``cpdm.scoring.precision``.

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

    def __init__(self, semantic_backbone, style_backbone, precision: str = "auto"):
        check_choice(precision)
        self.semantic = semantic_backbone
        self.style = style_backbone
        self.device = semantic_backbone.device
        self._pool = ThreadPoolExecutor(max_workers=PREPARE_THREADS) if self.device.type == "cuda" else None
        self.cpu_workers = min(CPU_WORKERS, torch.get_num_threads()) if self.device.type == "cpu" else 1
        self._cpu_pool = ThreadPoolExecutor(max_workers=self.cpu_workers) if self.cpu_workers > 1 else None
        self.reduced = precision_to_try(precision, self.device)
        # Per backbone: None until chosen on the first batch of two or more images.
        undecided = None if self.reduced else FP32
        self.precision: dict[str, str | None] = {"semantic": undecided, "style": undecided}

    def map(self, function, items: Sequence) -> list:
        """``[function(item) for item in items]``, in threads on CUDA; the first error is raised, in order."""
        if self._pool is None or len(items) < 2:
            return [function(item) for item in items]
        return list(self._pool.map(function, items))

    def embeddings(self, images: Sequence[Image.Image]) -> list[np.ndarray]:
        """L2-normalised CLIP embeddings, one float32 vector per image."""
        batch = torch.stack(self.map(self.semantic.prepare, images))
        return self._run(
            "semantic",
            lambda part: list(self.semantic.embed_batch(part).numpy()),
            batch,
            distance=lambda e, i, j: metric.m_sem(e[i], e[j]),
            relative=False,
        )

    def style_descriptors(self, images: Sequence[Image.Image]) -> list[list[LayerGram]]:
        """One style descriptor (a LayerGram per layer) per image; batches by input size."""
        prepared = self.map(self.style.prepare, images)
        results: list[list[LayerGram] | None] = [None] * len(images)
        by_shape: dict[tuple, list[int]] = {}
        for index, tensor in enumerate(prepared):
            by_shape.setdefault(tuple(tensor.shape), []).append(index)
        weights = self.style.layer_weights
        for indices in by_shape.values():
            batch = torch.stack([prepared[i] for i in indices])
            descriptors = self._run(
                "style",
                self._describe,
                batch,
                distance=lambda d, i, j: style_distance(d[i], d[j], weights),
                relative=True,
            )
            for index, descriptor in zip(indices, descriptors):
                results[index] = descriptor
        return results  # type: ignore[return-value]

    def _describe(self, batch: torch.Tensor) -> list[list[LayerGram]]:
        """Style descriptors of a prepared batch."""
        per_layer = [describe_layer(maps) for maps in self.style.feature_maps(batch)]
        return [list(layers) for layers in zip(*per_layer)]

    def _run(self, backbone: str, forward, batch: torch.Tensor, distance, relative: bool) -> list:
        """``forward(batch)`` in the backbone's precision, choosing it on a probe of this batch if undecided."""
        precision = self.precision[backbone]
        if precision is None and len(batch) >= 2:
            probe, rest = batch[:PROBE_IMAGES], batch[PROBE_IMAGES:]
            precision, probe_out = choose_precision(
                lambda candidate: self._forward_in(candidate, forward, probe), distance, self.reduced, relative
            )
            self.precision[backbone] = precision
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


# --------------------------------------------------------------------------
# The feature cache
# --------------------------------------------------------------------------


def cached_images(ws, backbone: str, shas: Iterable[str]) -> set[str]:
    """Which of these images already have features for ``backbone``."""
    shas = list(dict.fromkeys(shas))
    found: set[str] = set()
    for start in range(0, len(shas), 500):
        chunk = shas[start : start + 500]
        marks = ",".join("?" * len(chunk))
        rows = ws.conn.execute(
            f"SELECT image FROM features WHERE backbone = ? AND image IN ({marks})", [backbone, *chunk]
        )
        found.update(row[0] for row in rows)
    return found


def load_feature_blob(ws, sha: str, backbone: str) -> bytes | None:
    row = ws.conn.execute("SELECT blob FROM features WHERE image = ? AND backbone = ?", (sha, backbone)).fetchone()
    return None if row is None else row[0]


def load_features(ws, sha: str, semantic_key: str, style_key: str) -> ImageFeatures | None:
    """An image's cached features for both backbones, or None if either is missing."""
    sem_blob = load_feature_blob(ws, sha, semantic_key)
    style_blob = load_feature_blob(ws, sha, style_key)
    if sem_blob is None or style_blob is None:
        return None
    label = f"image {sha[:12]}"
    return ImageFeatures(decode_embedding(sem_blob, label), decode_style(style_blob, label))


def store_features(ws, rows: list[tuple[str, str, bytes]]) -> None:
    """Write (image, backbone, blob) rows in one short transaction."""
    with ws.transaction() as conn:
        conn.executemany(
            "INSERT INTO features (image, backbone, blob) VALUES (?, ?, ?) "
            "ON CONFLICT(image, backbone) DO UPDATE SET blob = excluded.blob",
            rows,
        )


# --------------------------------------------------------------------------
# The engine
# --------------------------------------------------------------------------


@dataclass
class ScoreReport:
    """What one ``score_pairs`` run did."""

    semantic: str
    style: str
    pairs_scored: int = 0
    pairs_already_scored: int = 0
    images_computed: int = 0
    images_cached: int = 0
    reference_distances_added: int = 0
    seconds: float = 0.0
    precision: dict = field(default_factory=dict)

    def summary(self) -> str:
        return (
            f"scored {self.pairs_scored} pairs ({self.pairs_already_scored} already scored) with "
            f"semantic={self.semantic} style={self.style}: features computed for {self.images_computed} images, "
            f"{self.images_cached} from the cache; {self.reference_distances_added} reference distances added "
            f"in {self.seconds:.1f} s"
        )


@dataclass
class _Pair:
    id: int
    anchor: int
    anchor_image: str
    image: str


def _selected_pair_ids(ws, pair_ids, campaign_id) -> list[int] | None:
    """The pair ids in scope (None: every pair), checking that they exist."""
    if pair_ids is not None and campaign_id is not None:
        raise ScoringError("give pair_ids or campaign_id, not both")
    if campaign_id is not None:
        if ws.conn.execute("SELECT 1 FROM campaigns WHERE id = ?", (campaign_id,)).fetchone() is None:
            raise ScoringError(f"no campaign with id {campaign_id}")
        return [row[0] for row in ws.conn.execute("SELECT pair FROM campaign_pairs WHERE campaign = ?", (campaign_id,))]
    if pair_ids is None:
        return None
    wanted = sorted({int(pair_id) for pair_id in pair_ids})
    known = {row[0] for row in ws.conn.execute("SELECT id FROM pairs")}
    missing = [pair_id for pair_id in wanted if pair_id not in known]
    if missing:
        raise ScoringError(f"pairs not in the workspace: {missing[:10]}")
    return wanted


def _pairs_in_scope(ws, scope: list[int] | None) -> list[_Pair]:
    rows = ws.conn.execute(
        "SELECT p.id, p.anchor, a.image, p.image FROM pairs p JOIN anchors a ON a.id = p.anchor ORDER BY p.anchor, p.id"
    ).fetchall()
    wanted = None if scope is None else set(scope)
    return [_Pair(*row) for row in rows if wanted is None or row[0] in wanted]


def _scored_pair_ids(ws, semantic_key: str, style_key: str) -> set[int]:
    rows = ws.conn.execute("SELECT pair FROM scores WHERE semantic = ? AND style = ?", (semantic_key, style_key))
    return {row[0] for row in rows}


def _chunks_by_anchor(pairs: list[_Pair], size: int) -> list[list[_Pair]]:
    """Consecutive whole anchors, about ``size`` pairs per chunk (an anchor is never split)."""
    chunks, current = [], []
    for _, group in itertools.groupby(pairs, key=lambda pair: pair.anchor):
        current.extend(group)
        if len(current) >= size:
            chunks.append(current)
            current = []
    if current:
        chunks.append(current)
    return chunks


def _open_image_file(path: Path, sha: str) -> Image.Image:
    """Decode a stored image for scoring; missing and unreadable files name their path."""
    if not path.exists():
        raise ImageError(f"{path}: image file is missing from the workspace (image {sha[:12]})")
    try:
        with Image.open(path) as image:
            return image.convert("RGB")
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageError(f"{path}: unreadable image ({exc})") from exc


class ScoringEngine:
    """Backbones plus the workspace: computes, caches and scores. ``score_pairs`` drives it."""

    def __init__(self, ws, semantic_backbone, style_backbone, batch_size: int = 16, precision: str = "auto"):
        if batch_size < 1:
            raise ScoringError(f"batch size must be at least 1, got {batch_size}")
        self.ws = ws
        self.extractor = FeatureExtractor(semantic_backbone, style_backbone, precision)
        self.semantic_key = semantic_backbone.key
        self.style_key = style_backbone.key
        self.layer_weights = style_backbone.layer_weights
        self.batch_size = batch_size

    def features_for(self, shas: Sequence[str], report: ScoreReport | None = None) -> dict[str, ImageFeatures]:
        """Features of these images: cached ones read back, the others computed in batches and cached."""
        shas = list(dict.fromkeys(shas))
        have_sem = cached_images(self.ws, self.semantic_key, shas)
        have_style = cached_images(self.ws, self.style_key, shas)
        result: dict[str, ImageFeatures] = {}
        to_compute = []
        for sha in shas:
            if sha in have_sem and sha in have_style:
                result[sha] = load_features(self.ws, sha, self.semantic_key, self.style_key)
            else:
                to_compute.append(sha)
        if report is not None:
            report.images_cached += len(shas) - len(to_compute)
        for start in range(0, len(to_compute), self.batch_size):
            batch = to_compute[start : start + self.batch_size]
            result.update(self._compute_and_store(batch, have_sem, have_style))
            if report is not None:
                report.images_computed += len(batch)
        return result

    def _compute_and_store(self, shas: list[str], have_sem: set[str], have_style: set[str]) -> dict[str, ImageFeatures]:
        paths = {sha: self.ws.image_path(sha) for sha in shas}  # the database is read from this thread only
        images = self.extractor.map(lambda sha: _open_image_file(paths[sha], sha), shas)
        # Only what is missing: scoring with a new style backbone reuses cached CLIP embeddings.
        need_sem = [i for i, sha in enumerate(shas) if sha not in have_sem]
        need_style = [i for i, sha in enumerate(shas) if sha not in have_style]
        rows = []
        if need_sem:
            embeddings = self.extractor.embeddings([images[i] for i in need_sem])
            rows += [(shas[i], self.semantic_key, encode_embedding(e)) for i, e in zip(need_sem, embeddings)]
        if need_style:
            descriptors = self.extractor.style_descriptors([images[i] for i in need_style])
            rows += [(shas[i], self.style_key, encode_style(d)) for i, d in zip(need_style, descriptors)]
        store_features(self.ws, rows)
        # Read back what the cache holds so that cached and fresh paths agree exactly.
        return {sha: load_features(self.ws, sha, self.semantic_key, self.style_key) for sha in shas}

    def distances(self, a: ImageFeatures, g: ImageFeatures) -> tuple[float, float]:
        """(M_sem, M_style) of two images' features."""
        return float(metric.m_sem(a.embedding, g.embedding)), style_distance(a.style, g.style, self.layer_weights)

    def score_chunk(self, pairs: list[_Pair], report: ScoreReport) -> None:
        """Features for the chunk's images, then its scores in one transaction."""
        images = [sha for pair in pairs for sha in (pair.anchor_image, pair.image)]
        features = self.features_for(images, report)
        rows = []
        for pair in pairs:
            sem, style = self.distances(features[pair.anchor_image], features[pair.image])
            rows.append((pair.id, self.semantic_key, self.style_key, sem, style))
        with self.ws.transaction() as conn:
            conn.executemany(
                "INSERT INTO scores (pair, semantic, style, m_sem, m_style) VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT(pair, semantic, style) DO NOTHING",
                rows,
            )
        report.pairs_scored += len(rows)

    def add_reference_distances(self, pairs: list[_Pair]) -> int:
        """Up to REFERENCE_SAMPLE mismatched pairs per anchor, from cached features; returns how many were added."""
        generation_images = self._generation_images(pairs)
        own_images: dict[int, set[str]] = {}
        anchor_image: dict[int, str] = {}
        for pair in pairs:
            own_images.setdefault(pair.anchor, set()).add(pair.image)
            anchor_image[pair.anchor] = pair.anchor_image
        features_cache: OrderedDict[str, ImageFeatures | None] = OrderedDict()
        added = 0
        for anchor, image in anchor_image.items():
            existing = {
                row[0]
                for row in self.ws.conn.execute(
                    "SELECT image FROM reference_distances WHERE anchor = ? AND semantic = ? AND style = ?",
                    (anchor, self.semantic_key, self.style_key),
                )
            }
            needed = REFERENCE_SAMPLE - len(existing)
            if needed <= 0:
                continue
            excluded = own_images[anchor] | {image} | existing
            candidates = [sha for sha, owner in generation_images.items() if owner != anchor and sha not in excluded]
            candidates.sort(key=lambda sha: hashlib.sha256(f"{anchor}:{sha}".encode()).hexdigest())
            anchor_features = self._cached(image, features_cache)
            if anchor_features is None:
                continue
            rows = []
            for sha in candidates:
                if len(rows) == needed:
                    break
                other = self._cached(sha, features_cache)
                if other is None:
                    continue
                sem, style = self.distances(anchor_features, other)
                rows.append((anchor, sha, self.semantic_key, self.style_key, sem, style))
            if rows:
                with self.ws.transaction() as conn:
                    conn.executemany(
                        "INSERT INTO reference_distances (anchor, image, semantic, style, m_sem, m_style) "
                        "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                        rows,
                    )
                added += len(rows)
        return added

    def _generation_images(self, pairs: list[_Pair]) -> dict[str, int]:
        """Images of normal pairs (generations) in scope, each with the anchor it was generated for."""
        in_scope = {pair.id for pair in pairs}
        owners: dict[str, int] = {}
        rows = self.ws.conn.execute("SELECT id, anchor, image FROM pairs WHERE kind = 'normal' AND generation IS NOT NULL")
        for pair_id, anchor, image in rows:
            if pair_id in in_scope:
                owners.setdefault(image, anchor)
        return owners

    def _cached(self, sha: str, memo: OrderedDict, limit: int = 64) -> ImageFeatures | None:
        """Cached features through a small LRU (reference sampling revisits images)."""
        if sha in memo:
            memo.move_to_end(sha)
            return memo[sha]
        value = load_features(self.ws, sha, self.semantic_key, self.style_key)
        memo[sha] = value
        if len(memo) > limit:
            memo.popitem(last=False)
        return value


def build_engine(
    ws,
    semantic: str = DEFAULT_SEMANTIC,
    style: str = DEFAULT_STYLE,
    device: str = "cpu",
    batch_size: int = 16,
    offline_tiny: bool = False,
    mode: str | None = None,
    style_image_size: int | None = None,
    precision: str = "auto",
) -> ScoringEngine:
    """Load both backbones (checking names, device and precision first) and wrap them in an engine."""
    check_style_name(style)
    resolve_device(device)
    if batch_size < 1:
        raise ScoringError(f"batch size must be at least 1, got {batch_size}")
    check_choice(precision)
    mode = mode or ("tiny" if offline_tiny else "real")
    semantic_backbone = load_semantic(semantic, mode=mode, device=device)
    style_backbone = load_style(style, mode=mode, device=device, image_size=style_image_size)
    return ScoringEngine(ws, semantic_backbone, style_backbone, batch_size=batch_size, precision=precision)


def score_pairs(
    ws,
    pair_ids: Sequence[int] | None = None,
    campaign_id: int | None = None,
    semantic: str = DEFAULT_SEMANTIC,
    style: str = DEFAULT_STYLE,
    device: str = "cpu",
    batch_size: int = 16,
    offline_tiny: bool = False,
    progress: bool = True,
    engine: ScoringEngine | None = None,
    precision: str = "auto",
) -> ScoreReport:
    """Score every pair in scope (all, ``pair_ids`` or a campaign's) that has no score for these backbones.

    Re-running scores only what is new. ``engine`` reuses loaded backbones
    (its backbones then decide semantic/style/device, and it its precision).
    ``precision`` is ``auto`` (fp16 on CUDA where it keeps scores within 1e-3
    of fp32), ``reduced`` (the CPU's bf16 too) or ``fp32``; see ``cpdm.scoring.precision``.
    """
    started = time.perf_counter()
    scope = _selected_pair_ids(ws, pair_ids, campaign_id)
    if engine is None:
        engine = build_engine(ws, semantic, style, device, batch_size, offline_tiny, precision=precision)
    report = ScoreReport(semantic=engine.semantic_key, style=engine.style_key)
    pairs = _pairs_in_scope(ws, scope)
    done = _scored_pair_ids(ws, engine.semantic_key, engine.style_key)
    todo = [pair for pair in pairs if pair.id not in done]
    report.pairs_already_scored = len(pairs) - len(todo)
    from tqdm import tqdm

    with tqdm(total=len(todo), unit="pair", desc="scoring", disable=not progress or not todo) as bar:
        for chunk in _chunks_by_anchor(todo, engine.batch_size):
            engine.score_chunk(chunk, report)
            bar.update(len(chunk))
    report.reference_distances_added = engine.add_reference_distances(pairs)
    report.precision = {
        backbone: chosen or FP32 for backbone, chosen in engine.extractor.precision.items()
    }
    report.seconds = time.perf_counter() - started
    return report


# --------------------------------------------------------------------------
# Reading scores back
# --------------------------------------------------------------------------


def backbone_keys(semantic: str, style: str, offline_tiny: bool = False) -> tuple[str, str]:
    """The stored names of a backbone pair (``tiny:`` prefixed with --offline-tiny)."""
    mode = "tiny" if offline_tiny else "real"
    return backbone_key(semantic, mode), backbone_key(style, mode)


def load_scores(ws, semantic: str | None = None, style: str | None = None, campaign_id: int | None = None) -> pd.DataFrame:
    """Stored scores joined with what they are about (columns: ``SCORE_COLUMNS``).

    ``semantic``/``style`` are stored names (``tiny:`` included); None means any.
    ``variant`` is the variant's name, None for attention-check pairs.
    """
    query = (
        "SELECT s.pair, p.anchor, a.artist, a.category, p.image, p.generation, v.name AS variant, p.kind, "
        "s.semantic, s.style, s.m_sem, s.m_style "
        "FROM scores s JOIN pairs p ON p.id = s.pair JOIN anchors a ON a.id = p.anchor "
        "LEFT JOIN generations g ON g.id = p.generation LEFT JOIN variants v ON v.id = g.variant "
        "WHERE (:semantic IS NULL OR s.semantic = :semantic) AND (:style IS NULL OR s.style = :style) "
        "AND (:campaign IS NULL OR s.pair IN (SELECT pair FROM campaign_pairs WHERE campaign = :campaign)) "
        "ORDER BY s.pair, s.semantic, s.style"
    )
    params = {"semantic": semantic, "style": style, "campaign": campaign_id}
    rows = ws.conn.execute(query, params).fetchall()
    frame = pd.DataFrame(rows, columns=SCORE_COLUMNS)
    for column in ("artist", "variant", "generation"):
        frame[column] = frame[column].astype(object).where(frame[column].notna(), None)
    frame["m_sem"] = frame["m_sem"].astype(float)
    frame["m_style"] = frame["m_style"].astype(float)
    return frame


def load_reference_distances(ws, semantic: str, style: str) -> pd.DataFrame:
    """Mismatched-pair distances stored for a backbone pair (columns m_sem, m_style)."""
    rows = ws.conn.execute(
        "SELECT m_sem, m_style FROM reference_distances WHERE semantic = ? AND style = ? ORDER BY anchor, image",
        (semantic, style),
    ).fetchall()
    return pd.DataFrame(rows, columns=["m_sem", "m_style"], dtype=float)


def reference_scale_for(ws, semantic: str, style: str, w: float | None = None) -> float:
    """x_ref from the stored mismatched pairs (paper form with w=None, else D_w at w)."""
    reference = load_reference_distances(ws, semantic, style)
    if reference.empty:
        raise ScoringError(
            f"no reference distances for semantic={semantic} style={style}: "
            "score pairs of at least two anchors (cpdm score) to get a reference scale"
        )
    return metric.reference_scale(reference["m_sem"].to_numpy(), reference["m_style"].to_numpy(), w)


def available_backbones(ws) -> list[tuple[str, str]]:
    """The (semantic, style) backbone pairs that have scores, in a stable order."""
    rows = ws.conn.execute("SELECT DISTINCT semantic, style FROM scores ORDER BY semantic, style")
    return [(row[0], row[1]) for row in rows]


# --------------------------------------------------------------------------
# A small direct API: score two images without a workspace
# --------------------------------------------------------------------------


@dataclass
class PairScore:
    m_sem: float
    m_style: float
    cm: float | None  # None when the scorer has no reference scale


class Scorer:
    """Build once, then score images directly (PIL images or paths), like LPIPS.

    >>> scorer = Scorer(offline_tiny=True, x_ref=1.0)        # doctest: +SKIP
    >>> scorer("anchor.png", "generated.png").cm              # doctest: +SKIP

    With ``weights`` (a :class:`cpdm.metric.Weights`) CM is the weighted form
    at its w and x_ref; with only ``x_ref`` it is the paper form; with
    neither, ``cm`` is None. ``precision`` is ``fp32`` (default), ``auto``
    or ``reduced`` as in ``score_pairs``.
    """

    def __init__(
        self,
        semantic: str = DEFAULT_SEMANTIC,
        style: str = DEFAULT_STYLE,
        device: str = "cpu",
        offline_tiny: bool = False,
        x_ref: float | None = None,
        weights: metric.Weights | None = None,
        precision: str = "fp32",
    ):
        check_style_name(style)
        mode = "tiny" if offline_tiny else "real"
        self.semantic_backbone = load_semantic(semantic, mode=mode, device=device)
        self.style_backbone = load_style(style, mode=mode, device=device)
        if weights is not None:
            weights.check_backbones(self.semantic_backbone.key, self.style_backbone.key)
        if x_ref is not None:
            metric.normalise(0.0, x_ref)  # refuses x_ref <= 0 now, not at the first call
        self.weights = weights
        self.x_ref = x_ref
        self.extractor = FeatureExtractor(self.semantic_backbone, self.style_backbone, precision)

    def features(self, images: Sequence) -> list[ImageFeatures]:
        """Features of each image; an image given twice (same object or path) is computed once."""
        keys = [_identity(image) for image in images]
        first: dict[tuple, object] = {}
        for key, image in zip(keys, images):
            first.setdefault(key, image)
        pil = [_as_pil(image) for image in first.values()]
        embeddings = self.extractor.embeddings(pil)
        descriptors = self.extractor.style_descriptors(pil)
        computed = {key: ImageFeatures(e, d) for key, e, d in zip(first, embeddings, descriptors)}
        return [computed[key] for key in keys]

    def score_batch(self, anchors: Sequence, generations: Sequence) -> list[PairScore]:
        """Score anchors[i] against generations[i]; each distinct image is embedded once."""
        if len(anchors) != len(generations):
            raise ScoringError(f"{len(anchors)} anchors but {len(generations)} generations")
        features = self.features(list(anchors) + list(generations))
        n = len(anchors)
        scores = []
        for i in range(n):
            a, g = features[i], features[n + i]
            sem = float(metric.m_sem(a.embedding, g.embedding))
            style = style_distance(a.style, g.style, self.style_backbone.layer_weights)
            scores.append(PairScore(sem, style, self._cm(sem, style)))
        return scores

    def __call__(self, anchor, generation) -> PairScore:
        return self.score_batch([anchor], [generation])[0]

    def _cm(self, sem: float, style: float) -> float | None:
        if self.weights is not None:
            return float(self.weights.cm(sem, style))
        if self.x_ref is not None:
            return float(metric.cm_paper(sem, style, self.x_ref))
        return None


def _identity(image) -> tuple:
    """What makes two inputs one image: the same PIL object, or the same resolved path."""
    if isinstance(image, Image.Image):
        return ("pil", id(image))
    return ("path", str(Path(image).resolve()))


def _as_pil(image) -> Image.Image:
    if isinstance(image, Image.Image):
        return image.convert("RGB")
    path = Path(image)
    try:
        with Image.open(path) as opened:
            return opened.convert("RGB")
    except FileNotFoundError:
        raise ImageError(f"{path}: no such image file") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageError(f"{path}: unreadable image ({exc})") from exc
