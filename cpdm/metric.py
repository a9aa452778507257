"""The CPDM metric CM: pure functions on image features.

For an anchor image a and a generated image g (see DESIGN.md, "The metric CM"):

- Semantic distance ``M_sem = ‖f(a) − f(g)‖²`` with f the L2-normalised CLIP
  image embedding. It lies in [0, 4] and equals ``2 − 2·cos(f(a), f(g))``.
- Style distance ``M_style = Σ_l λ_l ‖G_l(a) − G_l(g)‖²_F`` with the Gram
  matrix ``G = F Fᵀ / (C·H·W)`` of the feature maps F at layer l.
- Paper form ``CM = 1 − Norm(M_sem · M_style)²`` with
  ``Norm(x) = min(x / x_ref, 1)``; x_ref is a reference scale, the median of
  the same quantity over mismatched pairs (an anchor against the baseline
  variant's generations of other anchors, a set defined once: see
  ``cpdm.scoring.reference``). CM lies in [0, 1]; higher means closer to the
  anchor.
- The release's own number: the authors' code scores a pair as
  ``(M_sem · M_style)²`` and reports its mean over pairs, with no Norm and no
  ``1 −`` (:func:`release_score`); lower means closer to the anchor. It is
  reported beside CM so that results can be laid next to the paper's tables.
- Weighted form ``D_w = M_sem^w · M_style^(1−w)``, ``CM_w = 1 − Norm(D_w)²``.
  At w = 0.5, D_w is the square root of the product, a monotone transform, so
  pairs rank exactly as under the paper form; w = 1 is semantic only, w = 0
  style only. Powers follow numpy: ``0.0 ** 0 == 1``, so at w = 1 a zero
  style distance does not zero D_w (and likewise at w = 0).
- w depends on the backbones' scales: CM_w ranks pairs (below the clip) by
  ``w·log M_sem + (1−w)·log M_style``. With ``s_sem``, ``s_style`` the
  standard deviations of the two log distances over the reference pairs,
  that is the ranking by ``w_std·z_sem + (1−w_std)·z_style`` (z: a log
  distance divided by its spread) with
  ``w_std = w·s_sem / (w·s_sem + (1−w)·s_style)``. ``w_std`` is the
  scale-free weight: 0.5 means the two standardised distances count equally,
  whatever the backbones (:class:`LogSpreads`).

Every function accepts scalars or arrays (numpy or torch) and returns numpy
values, except :func:`gram_matrix`, which stays in torch for batching.

The module also reads and writes the weights JSON that ``cpdm calibrate``
exports and ``cpdm score --weights`` reads back (:class:`Weights`).

Why one file of this length: the metric's formulas and the weights file
that carries w, w_std and x_ref are one definition; keeping them together
keeps a weights file from drifting away from the formulas it feeds.
"""

from __future__ import annotations

import json
import math
from dataclasses import MISSING, asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from cpdm.errors import CpdmError

if TYPE_CHECKING:
    import torch

WEIGHTS_FORMAT = "cpdm-weights/1"
# What a calibration was fitted to: ratings of single pairs, or comparative (2AFC) judgments of triplets.
JUDGMENT_KINDS = ("rating", "2afc")


class MetricError(CpdmError):
    """Bad input to the metric (a non-positive reference scale, a w outside [0, 1], ...)."""


def _as_numpy(values: Any) -> np.ndarray:
    """Any scalar, sequence, numpy array or torch tensor as a float64 numpy array."""
    if hasattr(values, "detach"):  # a torch tensor (torch is not imported here: the CLI starts faster)
        return values.detach().cpu().double().numpy()
    return np.asarray(values, dtype=np.float64)


def _scalar_or_array(values: np.ndarray):
    """A 0-d result as a Python float, anything else as the array itself."""
    return float(values) if values.ndim == 0 else values


def gram_matrix(features: torch.Tensor) -> torch.Tensor:
    """Gram matrices ``G = F Fᵀ / (C·H·W)`` of feature maps.

    ``features`` is (N, C, H, W) or (C, H, W); the result is (N, C, C) or
    (C, C) in the same dtype. Dividing by C·H·W makes layers of different
    size and images of different resolution comparable.
    """
    if features.dim() == 3:
        return gram_matrix(features.unsqueeze(0))[0]
    if features.dim() != 4:
        raise MetricError(f"gram_matrix expects (N, C, H, W) or (C, H, W) features, got shape {tuple(features.shape)}")
    n, c, h, w = features.shape
    flat = features.reshape(n, c, h * w)
    return (flat @ flat.transpose(1, 2)) / (c * h * w)


def m_sem(emb_a, emb_g):
    """Semantic distance ``‖f(a) − f(g)‖²`` of L2-normalised embeddings (last axis).

    The embeddings are normalised here, so raw CLIP outputs may be passed.
    Computed as the squared difference rather than ``2 − 2cos`` so that
    identical embeddings give exactly 0. Shapes (D,) give a float; (N, D) an
    array of N distances (broadcasting applies).
    """
    a = _as_numpy(emb_a)
    g = _as_numpy(emb_g)
    a = a / np.linalg.norm(a, axis=-1, keepdims=True)
    g = g / np.linalg.norm(g, axis=-1, keepdims=True)
    return _scalar_or_array(np.sum((a - g) ** 2, axis=-1))


def cosine_distance(emb_a, emb_g):
    """``1 − cos(f(a), f(g))``, computed as ``‖f(a) − f(g)‖² / 2`` of the normalised embeddings.

    The two are equal; the second is exactly 0 for identical embeddings and
    never negative (CSD's style distance).
    """
    return _scalar_or_array(np.asarray(m_sem(emb_a, emb_g)) / 2.0)


def m_style(grams_a: Sequence, grams_g: Sequence, layer_weights: Sequence[float], layer_distance=None):
    """Style distance ``Σ_l λ_l ‖G_l(a) − G_l(g)‖²_F``.

    ``grams_a`` and ``grams_g`` list one Gram matrix per layer, each (C, C)
    or batched (N, C, C); ``layer_weights`` holds λ_l, one per layer.
    Accumulated in float64 (deep layers' Gram entries are tiny and λ can be
    6e4, so float32 sums would lose digits). ``layer_distance(a_l, g_l)``,
    when given, computes ``‖G_l(a) − G_l(g)‖²_F`` from another form of the
    layer (the scoring engine's compact cached descriptors).
    """
    if not (len(grams_a) == len(grams_g) == len(layer_weights)):
        raise MetricError(
            f"m_style needs one Gram matrix per layer weight: got {len(grams_a)} and {len(grams_g)} "
            f"Gram matrices for {len(layer_weights)} weights"
        )
    total = np.float64(0.0)
    for gram_a, gram_g, weight in zip(grams_a, grams_g, layer_weights):
        if layer_distance is not None:
            total = total + float(weight) * np.float64(layer_distance(gram_a, gram_g))
            continue
        diff = _as_numpy(gram_a) - _as_numpy(gram_g)
        total = total + float(weight) * np.sum(diff**2, axis=(-2, -1))
    return _scalar_or_array(np.asarray(total))


def _check_w(w: float) -> float:
    w = float(w)
    if not 0.0 <= w <= 1.0 or math.isnan(w):
        raise MetricError(f"w must lie in [0, 1], got {w}")
    return w


def _check_x_ref(x_ref: float) -> float:
    x_ref = float(x_ref)
    if not x_ref > 0 or not math.isfinite(x_ref):
        raise MetricError(f"the reference scale x_ref must be a positive number, got {x_ref}")
    return x_ref


def combined_distance(m_sem_value, m_style_value, w: float = 0.5):
    """``D_w = M_sem^w · M_style^(1−w)``; numpy's ``0 ** 0 == 1`` applies at w = 0 and 1."""
    w = _check_w(w)
    sem = _as_numpy(m_sem_value)
    style = _as_numpy(m_style_value)
    if np.any(sem < 0) or np.any(style < 0):
        raise MetricError("distances must be non-negative")
    return _scalar_or_array(np.power(sem, w) * np.power(style, 1.0 - w))


def normalise(x, x_ref: float):
    """``Norm(x) = min(x / x_ref, 1)``: 1 means "as far apart as a typical mismatched pair"."""
    x_ref = _check_x_ref(x_ref)
    return _scalar_or_array(np.minimum(_as_numpy(x) / x_ref, 1.0))


def cm_from_distance(distance, x_ref: float):
    """``CM = 1 − Norm(d)²`` for any non-negative distance d; in [0, 1]."""
    return _scalar_or_array(1.0 - np.asarray(normalise(distance, x_ref)) ** 2)


def cm_paper(m_sem_value, m_style_value, x_ref: float):
    """The paper's form ``CM = 1 − Norm(M_sem · M_style)²``; x_ref scales the product."""
    product = _as_numpy(m_sem_value) * _as_numpy(m_style_value)
    return cm_from_distance(product, x_ref)


def cm_weighted(m_sem_value, m_style_value, w: float, x_ref: float):
    """The weighted form ``CM_w = 1 − Norm(D_w)²``; x_ref scales D_w at this w."""
    return cm_from_distance(combined_distance(m_sem_value, m_style_value, w), x_ref)


def release_score(m_sem_value, m_style_value):
    """The CPDM release's score of a pair, ``(M_sem · M_style)²``: no Norm, no ``1 −``; lower = closer.

    The authors' ``cpdm_metric.py`` returns this per pair and averages it
    over pairs; its numbers, unlike CM's, can be laid beside the paper's
    tables (with the release's own backbones, ``ViT-L-14/openai`` and
    ``cpdm-inception``).
    """
    sem = _as_numpy(m_sem_value)
    style = _as_numpy(m_style_value)
    if np.any(sem < 0) or np.any(style < 0):
        raise MetricError("distances must be non-negative")
    return _scalar_or_array((sem * style) ** 2)


def reference_scale(m_sem_ref, m_style_ref, w: float | None = None) -> float:
    """The reference scale x_ref: the median over mismatched pairs.

    With ``w=None`` it is the median of ``M_sem · M_style`` (for
    :func:`cm_paper`); with a w it is the median of D_w (for
    :func:`cm_weighted`). Raises if there are no mismatched pairs or the
    median is not positive (every mismatched pair at distance 0).
    """
    sem = _as_numpy(m_sem_ref).ravel()
    style = _as_numpy(m_style_ref).ravel()
    if sem.size == 0 or sem.size != style.size:
        raise MetricError(
            f"the reference scale needs mismatched pairs: got {sem.size} semantic and {style.size} style distances "
            "(score more than one anchor so that anchors can be compared with other anchors' generations)"
        )
    values = sem * style if w is None else np.asarray(combined_distance(sem, style, w))
    x_ref = float(np.median(values))
    if not x_ref > 0:
        raise MetricError("the reference scale is 0: every mismatched pair has distance 0")
    return x_ref


def _log_spread(values: np.ndarray, name: str) -> float:
    """The standard deviation (ddof=1) of log distances; distances of 0 have no log and are left out."""
    positive = values[values > 0]
    if positive.size < 2:
        raise MetricError(f"the spread of log {name} needs two reference pairs with a positive distance; "
                          f"got {positive.size}")
    spread = float(np.std(np.log(positive), ddof=1))
    if not (spread > 0 and math.isfinite(spread)):
        raise MetricError(f"log {name} does not vary over the reference pairs: w_std is undefined")
    return spread


@dataclass(frozen=True)
class LogSpreads:
    """The spreads of log M_sem and log M_style over the reference pairs, and the weights they translate.

    ``w`` weighs the raw log distances, so what it means depends on how
    widely each backbone's distances spread; ``w_std`` weighs them divided
    by their spreads (see the module docstring), so 0.5 means "equal
    importance" for any backbones. Only the ratio of the spreads matters,
    so the ddof of the standard deviation does not. Both conversions are
    increasing in their argument, map 0 to 0 and 1 to 1, and accept arrays
    (bootstrap choices, interval ends).
    """

    sem: float
    style: float

    def __post_init__(self) -> None:
        for name in ("sem", "style"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not (value > 0 and math.isfinite(value)):
                raise MetricError(f"the spread of log M_{name} must be a positive number, got {value!r}")

    @classmethod
    def of(cls, m_sem_ref, m_style_ref) -> "LogSpreads":
        """The spreads over the given (reference) pairs' distances."""
        return cls(_log_spread(_as_numpy(m_sem_ref).ravel(), "M_sem"),
                   _log_spread(_as_numpy(m_style_ref).ravel(), "M_style"))

    def w_std(self, w):
        """The scale-free weight of a w: ``w·s_sem / (w·s_sem + (1−w)·s_style)``."""
        w = _as_numpy(w)
        return _scalar_or_array(w * self.sem / (w * self.sem + (1 - w) * self.style))

    def w(self, w_std):
        """The w of a scale-free weight: ``w_std·s_style / (w_std·s_style + (1−w_std)·s_sem)``."""
        w_std = _as_numpy(w_std)
        return _scalar_or_array(w_std * self.style / (w_std * self.style + (1 - w_std) * self.sem))

    @property
    def equal_weight_w(self) -> float:
        """The w at which the standardised distances count equally (w_std = 0.5): ``s_style / (s_sem + s_style)``."""
        return self.style / (self.sem + self.style)

    def describe(self) -> str:
        """The conversion in one line, with the paper's w = 0.5 in w_std terms."""
        return (f"w_std = w·s_sem / (w·s_sem + (1−w)·s_style) with s_sem = {self.sem:.4g}, s_style = {self.style:.4g} "
                f"(the sd of log M_sem, log M_style); equal weight (w_std = 0.5) is w = {self.equal_weight_w:.3f}; "
                f"the paper's w = 0.5 is w_std = {self.w_std(0.5):.3f}")


@dataclass
class Weights:
    """A calibrated weighting of CM, as exported by ``cpdm calibrate``.

    ``semantic`` and ``style`` name the backbones the calibration used (as
    stored with the scores); CM_w computed with other backbones would mean
    something else, so :func:`check_backbones` refuses them.

    ``judgment_kind`` says what w was fitted to: ``rating`` (Spearman ρ with
    mean ratings) or ``2afc`` (the 2AFC score against comparative judgments;
    then ``n_ratings`` counts judgments). A file without it (an older cpdm's)
    reads as ``rating``; CM_w is computed the same way from either.

    ``w`` is what CM_w uses. ``w_std`` is the same weighting read on the
    standardised log distances, with the spreads it was converted with
    (``log_sd_sem``, ``log_sd_style``: see :class:`LogSpreads`); a file
    without them (an older cpdm's) still reads, and one whose w_std does not
    follow from its w and spreads is refused.
    """

    w: float
    x_ref: float
    semantic: str
    style: str
    w_std: float | None = None
    log_sd_sem: float | None = None
    log_sd_style: float | None = None
    target: str = "copy"
    rater_group: str = "all"
    stats: dict = field(default_factory=dict)
    n_pairs: int = 0
    n_raters: int = 0
    n_ratings: int = 0
    ratings_sha256: str = ""
    created_at: str = ""
    judgment_kind: str = "rating"
    format: str = WEIGHTS_FORMAT

    def __post_init__(self) -> None:
        self.validate()

    def validate(self, source: str = "weights") -> None:
        """Raise a MetricError naming the first bad field."""
        if self.format != WEIGHTS_FORMAT:
            raise MetricError(f"{source}: format is {self.format!r}, expected {WEIGHTS_FORMAT!r}")
        for name in ("w", "x_ref"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise MetricError(f"{source}: field {name!r} must be a number, got {value!r}")
        if not 0.0 <= self.w <= 1.0:
            raise MetricError(f"{source}: field 'w' must lie in [0, 1], got {self.w}")
        if not (self.x_ref > 0 and math.isfinite(self.x_ref)):
            raise MetricError(f"{source}: field 'x_ref' must be a positive number, got {self.x_ref}")
        self._validate_w_std(source)
        for name in ("semantic", "style", "target", "rater_group"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value:
                raise MetricError(f"{source}: field {name!r} must be a non-empty string, got {value!r}")
        for name in ("n_pairs", "n_raters", "n_ratings"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise MetricError(f"{source}: field {name!r} must be a non-negative integer, got {value!r}")
        if not isinstance(self.stats, dict):
            raise MetricError(f"{source}: field 'stats' must be an object")
        if self.judgment_kind not in JUDGMENT_KINDS:
            raise MetricError(f"{source}: field 'judgment_kind' must be one of {', '.join(JUDGMENT_KINDS)}, "
                              f"got {self.judgment_kind!r}")

    def _validate_w_std(self, source: str) -> None:
        """w_std and both spreads are given together, and w_std is what w and the spreads say."""
        given = [name for name in ("w_std", "log_sd_sem", "log_sd_style") if getattr(self, name) is not None]
        if not given:
            return
        if len(given) < 3:
            missing = next(name for name in ("w_std", "log_sd_sem", "log_sd_style") if name not in given)
            raise MetricError(f"{source}: field {missing!r} is missing (w_std and both log spreads go together)")
        for name in given:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise MetricError(f"{source}: field {name!r} must be a number, got {value!r}")
        try:
            spreads = self.spreads
        except MetricError as exc:
            raise MetricError(f"{source}: {exc}") from None
        expected = spreads.w_std(self.w)
        if not abs(self.w_std - expected) <= 1e-9:
            raise MetricError(f"{source}: field 'w_std' is {self.w_std}, but w = {self.w} with these log spreads "
                              f"gives w_std = {expected:.6g}")

    @property
    def spreads(self) -> LogSpreads | None:
        """The log spreads w_std was converted with, or None for a file without them."""
        if self.log_sd_sem is None or self.log_sd_style is None:
            return None
        return LogSpreads(self.log_sd_sem, self.log_sd_style)

    def check_backbones(self, semantic: str, style: str, source: str = "weights") -> None:
        """Refuse to apply these weights to scores from other backbones."""
        if (self.semantic, self.style) != (semantic, style):
            raise MetricError(
                f"{source} were calibrated for semantic={self.semantic} style={self.style}, "
                f"not semantic={semantic} style={style}; score with those backbones "
                f"(--semantic {self.semantic.removeprefix('tiny:')} --style {self.style.removeprefix('tiny:')}) "
                "or calibrate again"
            )

    def cm(self, m_sem_value, m_style_value):
        """CM_w of distances with these weights."""
        return cm_weighted(m_sem_value, m_style_value, self.w, self.x_ref)

    def to_dict(self) -> dict:
        data = asdict(self)
        if self.spreads is None:  # written as an older cpdm wrote it: no w_std without its spreads
            for name in ("w_std", "log_sd_sem", "log_sd_style"):
                del data[name]
        # Put the format first: it is what a reader checks before anything else.
        return {"format": data.pop("format"), **data}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=False) + "\n"

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.to_json(), encoding="utf-8")
        return path

    @classmethod
    def from_dict(cls, data: Any, source: str = "weights") -> "Weights":
        if not isinstance(data, dict):
            raise MetricError(f"{source}: expected a JSON object, got {type(data).__name__}")
        if data.get("format") != WEIGHTS_FORMAT:
            raise MetricError(f"{source}: field 'format' is {data.get('format')!r}, expected {WEIGHTS_FORMAT!r}")
        missing = [name for name in ("w", "x_ref", "semantic", "style") if name not in data]
        if missing:
            raise MetricError(f"{source}: missing field {missing[0]!r}")
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(data) - known)
        if unknown:
            raise MetricError(f"{source}: unknown field {unknown[0]!r}")
        # Built field by field (not via __init__) so that validation errors name the file.
        weights = cls.__new__(cls)
        for name, spec in cls.__dataclass_fields__.items():
            if name in data:
                value = data[name]
            elif spec.default_factory is not MISSING:
                value = spec.default_factory()
            else:
                value = spec.default
            setattr(weights, name, value)
        weights.validate(source)
        return weights


def load_weights(path: str | Path) -> Weights:
    """Read and validate a weights JSON written by ``cpdm calibrate``; errors name the file and field."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise MetricError(f"{path}: weights file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise MetricError(f"{path}: cannot read weights file ({exc})") from exc
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise MetricError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})") from exc
    return Weights.from_dict(data, source=str(path))
