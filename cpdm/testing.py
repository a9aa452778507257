"""What only tests (and benchmarks) use: a synthetic campaign, a direct scorer, free ports, reference formulas.

Nothing in the library imports this module. It sits on the top floor, so it
may use any wing:

* :func:`create_synthetic_campaign`: a small study of tiny images, pairs,
  scores and a campaign, for trying the analysis without a real study.
* :class:`Scorer`: CM of two images given directly (PIL images or paths), like LPIPS.
* :func:`free_port`: a TCP port nothing listens on, for starting the app.
* :func:`uce_closed_form` (UCE's edit of one projection) and
  :func:`alpha_from_counts` (Krippendorff's alpha of one count matrix): the
  plain forms tests check against published values and the methods' runs.
"""

from __future__ import annotations

import io
import socket
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image

from cpdm import metric
from cpdm.analysis.agreement import alpha_from_coincidences, check_level, unit_coincidences
from cpdm.backbones import DEFAULT_SEMANTIC, DEFAULT_STYLE, check_semantic_name, check_style_name, load_semantic, load_style
from cpdm.demo.variants import CONTENT_CHANGED, DEMO_METHOD, ORIGINAL, RELATIONS, STYLE_ERASED, UNRELATED
from cpdm.errors import CpdmError
from cpdm.rating.campaigns import create_campaign
from cpdm.scoring.engine import store_scores
from cpdm.scoring.features import FeatureExtractor, ImageFeatures, descriptor_distance
from cpdm.scoring.reader import ScoringError
from cpdm.scoring.reference import store_reference_set
from cpdm.store.images import open_image, store_image_bytes
from cpdm.store.rows import GenerationRow, add_anchor, add_generations, add_prompt, add_variant, get_variant
from cpdm.store.rows import make_check_pairs, make_pairs
from cpdm.unlearning.uce import uce_edit_matrix


# Typical distances per demo variant (m_sem, m_style): small = close to the anchor.
VARIANT_DISTANCES = {
    ORIGINAL: (0.25, 0.004),
    STYLE_ERASED: (0.3, 0.04),
    CONTENT_CHANGED: (1.0, 0.005),
    UNRELATED: (1.1, 0.05),
}


def _tiny_png(rng: np.random.Generator) -> bytes:
    """A distinct 8×8 PNG (its content does not matter, only that it is a valid, unique image)."""
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, size=(8, 8, 3), dtype=np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def create_synthetic_campaign(
    ws,
    name: str = "synthetic",
    n_anchors: int = 10,
    variants=tuple(RELATIONS),
    seeds_per_variant: int = 1,
    scored: bool = True,
    semantic: str = "tiny:clip",
    style: str = "tiny:vgg19",
    checks: bool = True,
    reference: bool = False,
    seed: int = 0,
) -> int:
    """A small study with synthetic images, pairs, (optionally) scores and a campaign; returns the campaign id.

    For trying the analysis without a real study and for tests: every anchor
    gets one generation per variant and seed, distances follow the variant's
    typical effect (``VARIANT_DISTANCES``) with log-normal spread, and each
    anchor gets an identical and an unrelated attention check. With
    ``reference`` (and ``scored``), every anchor also gets reference distances
    to the generations of the next two anchors, as ``cpdm score`` stores them.
    """
    # The name enters the seed, so two synthetic campaigns in one workspace get different images.
    rng = np.random.default_rng([seed, zlib.crc32(name.encode("utf-8"))])
    variant_ids = {variant: _synthetic_variant(ws, variant) for variant in variants}
    anchors, pair_ids, scores = [], [], []
    for number in range(n_anchors):
        anchor = _synthetic_anchor(ws, rng, number)
        anchors.append(anchor)
        prompt = add_prompt(ws, anchor, f"work {number}", origin="template")
        rows = []
        for variant in variants:
            typical_sem, typical_style = VARIANT_DISTANCES.get(variant, (0.6, 0.02))
            for generation_seed in range(seeds_per_variant):
                image = _store_tiny_png(ws, rng, f"generation {number}")
                rows.append(GenerationRow(prompt, variant_ids[variant], generation_seed, None, None, image))
                if scored:  # drawn per generation, in the order the generations are made
                    scores.append((float(typical_sem * np.exp(rng.normal(0, 0.3))),
                                   float(typical_style * np.exp(rng.normal(0, 0.5)))))
        pair_ids += make_pairs(ws, add_generations(ws, rows))
    if scored:
        store_scores(ws, [(pair, semantic, style, m_sem, m_style) for pair, (m_sem, m_style) in zip(pair_ids, scores)])
        if reference:
            _add_reference_set(ws, rng, semantic, style)
    if checks:
        pair_ids += make_check_pairs(ws, anchors)
    return create_campaign(ws, name, pair_ids)


def _synthetic_variant(ws, name: str) -> int:
    """The id of a synthetic study's variant, added (as its demo relation's method, else ``demo``) if missing."""
    try:
        return get_variant(ws, name).id
    except CpdmError:
        method = RELATIONS[name].method if name in RELATIONS else DEMO_METHOD
        return add_variant(ws, name, base_model="synthetic", method=method)


def _store_tiny_png(ws, rng: np.random.Generator, label: str) -> str:
    """Store a distinct tiny PNG; returns its sha256."""
    return store_image_bytes(ws, _tiny_png(rng), label).sha256


def _synthetic_anchor(ws, rng: np.random.Generator, number: int) -> int:
    """A synthetic anchor with a tiny random image; returns its id."""
    image = _store_tiny_png(ws, rng, f"anchor {number}")
    return add_anchor(ws, image, artist=f"artist {number % 4 + 1}", title=f"work {number}", category="style")


def _add_reference_set(ws, rng, semantic: str, style: str) -> None:
    """A recorded synthetic reference set: each anchor against the generations of the next two anchors."""
    anchors = [r[0] for r in ws.conn.execute("SELECT id FROM anchors ORDER BY id")]
    images = {
        anchor: [r[0] for r in ws.conn.execute(
            "SELECT g.image FROM generations g JOIN prompts p ON p.id = g.prompt WHERE p.anchor = ?", (anchor,))]
        for anchor in anchors
    }
    rows = []
    for index, anchor in enumerate(anchors):
        for step in (1, 2):
            other = anchors[(index + step) % len(anchors)]
            if other == anchor:
                continue
            for image in images[other]:
                rows.append((anchor, image, float(1.2 * np.exp(rng.normal(0, 0.2))),
                             float(0.06 * np.exp(rng.normal(0, 0.3)))))
    store_reference_set(ws, semantic, style, rows, baseline=None, replace=True,
                        definition="synthetic: each anchor against the generations of the next two anchors")


@dataclass
class PairScore:
    m_sem: float
    m_style: float
    cm: float | None  # None when the scorer has no reference scale


class Scorer:
    """Build once, then score images directly (PIL images or paths), like LPIPS.

    >>> scorer = Scorer(offline_tiny=True, x_ref=1.0)        # doctest: +SKIP
    >>> scorer("anchor.png", "generated.png").cm              # doctest: +SKIP

    The backbones default to the CPDM release's (``ViT-L-14/openai`` +
    ``cpdm-inception``, its ``cpdm_metric.py``); ``style="vgg19"`` names
    Gatys et al.'s VGG19. With ``weights`` (a :class:`cpdm.metric.Weights`) CM is the weighted form
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
        check_semantic_name(semantic)
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
        self.extractor = FeatureExtractor([self.semantic_backbone, self.style_backbone], precision)

    def features(self, images: Sequence) -> list[ImageFeatures]:
        """Features of each image; an image given twice (same object or path) is computed once."""
        keys = [_identity(image) for image in images]
        first: dict[tuple, object] = {}
        for key, image in zip(keys, images):
            first.setdefault(key, image)
        pil = [_as_pil(image) for image in first.values()]
        embeddings = self.extractor.descriptors(self.semantic_backbone, pil)
        descriptors = self.extractor.descriptors(self.style_backbone, pil)
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
            sem = descriptor_distance(self.semantic_backbone, a.embedding, g.embedding)
            style = descriptor_distance(self.style_backbone, a.style, g.style)
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


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port on ``host`` that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


def uce_closed_form(
    w0: torch.Tensor,
    edit_keys: torch.Tensor,
    guide_keys: torch.Tensor,
    preserve_keys: torch.Tensor,
    lamb: float = 0.5,
    erase_scale: float = 1.0,
    preserve_scale: float = 1.0,
) -> torch.Tensor:
    """The UCE edit of one projection W₀ (out × d): rows of ``edit_keys`` map to W₀ · (rows of ``guide_keys``).

    ``edit_keys`` and ``guide_keys`` are (n, d), ``preserve_keys`` (m, d);
    the result has W₀'s dtype.
    """
    keep = preserve_keys.detach().to(torch.float64)
    matrix = uce_edit_matrix(edit_keys.to(w0.device), guide_keys.to(w0.device), (keep.T @ keep).to(w0.device),
                             lamb, erase_scale, preserve_scale)
    return (w0.detach().to(torch.float64) @ matrix).to(w0.dtype)


def alpha_from_counts(value_counts: np.ndarray, level: str = "ordinal", value_domain=None) -> float:
    """Alpha from a units × values count matrix; units with < 2 ratings are ignored."""
    counts = np.asarray(value_counts)
    if value_domain is None:
        value_domain = np.arange(counts.shape[1])
    pairable = counts.sum(axis=1) >= 2
    if not pairable.any():
        return float("nan")
    o = unit_coincidences(counts[pairable]).sum(axis=0)
    return float(alpha_from_coincidences(o, check_level(level), np.asarray(value_domain)))
