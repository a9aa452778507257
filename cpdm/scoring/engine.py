"""The scoring engine: scores per pair from cached features (``score_pairs``), and ``Scorer`` for two images.

``score_pairs`` scores every pair that has no score yet for a (semantic,
style) backbone pair:

1. Pairs are taken anchor by anchor, in chunks of about ``batch_size`` pairs.
2. For each chunk, the images whose features are not in the ``features``
   table yet (``cpdm.scoring.cache``) are decoded once, batched (same-size images together) and run
   through both backbones; their features are written in one short
   transaction per batch. An anchor with 9 generations is embedded once, and
   after a new unlearning run only the new generations are.
3. The chunk's pairs are scored from the features and written in one short
   transaction, so an error later (a missing file, say) leaves every score
   written before it intact.
4. Finally each anchor gets up to ``REFERENCE_SAMPLE`` mismatched pairs (the
   anchor against generations of other anchors, a deterministic sample),
   computed from cached features, for the reference scale x_ref of CM.

The engine runs in inference mode. With ``precision="auto"`` (the default)
it tries fp16 on CUDA on the first batch of each backbone and keeps it only
if every distance among a probe of that batch's images stays within 1e-3 of
fp32 (absolute for M_sem, relative for M_style); on the CPU it computes in
fp32. ``precision="reduced"`` also tries bf16 matrix products on CPUs that
have bf16 instructions, ``"fp32"`` never reduces; see ``cpdm.scoring.precision``.
"""

from __future__ import annotations

import hashlib
import itertools
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from PIL import Image

from cpdm import metric
from cpdm.backbones import (
    DEFAULT_SEMANTIC,
    DEFAULT_STYLE,
    check_style_name,
    load_semantic,
    load_style,
    resolve_device,
)
from cpdm.scoring.cache import cached_images, load_features, store_features
from cpdm.scoring.features import (
    FeatureExtractor,
    ImageFeatures,
    encode_embedding,
    encode_style,
    style_distance,
)
from cpdm.scoring.precision import FP32, check_choice
from cpdm.scoring.reader import ScoringError
from cpdm.store.images import open_image, open_stored_image

REFERENCE_SAMPLE = 8  # mismatched pairs per anchor for the reference scale


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
        images = self.extractor.map(lambda sha: open_stored_image(paths[sha], sha), shas)
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
    """A PIL image as RGB, or an image file opened upright (:func:`cpdm.store.images.open_image`)."""
    if isinstance(image, Image.Image):
        return image.convert("RGB")
    return open_image(image)
