"""The active 2AFC design: offer the triplets that can still move w, the most uncertain first.

Under CM_w two generations g1, g2 of one anchor are ordered by
``x_w = w·Δs + (1 − w)·Δt``, with ``Δs = log M_sem(g1) − log M_sem(g2)`` and
``Δt = log M_style(g1) − log M_style(g2)`` (CM_w falls as D_w grows; the
clip of CM_w at the reference scale only adds ties). ``x_w`` changes sign
once, at the *flip point* ``w* = Δt / (Δt − Δs)``: a triplet whose w* lies
outside [0, 1] (Δs and Δt of one sign) is ordered the same way by every w,
and a human choice on it cannot tell one w from another. Only triplets
whose w* lies inside the current interval of w can move it.

The choice model: a rater calls g1 more of a copy with probability
``p = σ(−β·x_w)`` (logistic in the difference of log D_w; "can't tell"
counts half to each side). It is fitted by maximum likelihood over a grid
of w (for each w, the best β ≥ 0: a profile likelihood); the interval of
w is the set of grid w whose profile log-likelihood is within
``χ²₁(confidence)/2`` of the best (a likelihood-ratio interval, which
stays sensible when few judgments are in).

The queue (:func:`active_priorities`): after a warm-up of
``WARMUP_JUDGMENTS`` judgments on the balanced triplets, a triplet keeps a
positive priority only when it still has room for judgments and its flip
point lies inside the interval of some rater group's w (artists and lay
raters are fitted apart once each has ``MIN_GROUP_JUDGMENTS``); its
priority is the predicted uncertainty ``p(1 − p)`` of the human choice,
the largest over the groups whose interval holds w*. When fewer than
``MIN_OPEN_TRIPLETS`` such triplets remain open, the queue is topped up
to that many with others in balanced order (priorities below every
informative one), so the queue never runs dry while any triplet has room.

The claim path only reads ``campaign_triplets.priority``; priorities are
written by :func:`refresh_priorities` (through the rating wing's
``set_priorities``), which the ``refresh-triplets`` job kind runs: after
every ``REFRESH_EVERY`` judgments (:func:`refresh_due`) or on request
(``cpdm campaign refresh NAME``). What the last refresh found is kept in
the workspace's ``meta`` table (:func:`last_refresh`).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

import numpy as np
from scipy.special import expit, log_expit
from scipy.stats import chi2

from cpdm.errors import CpdmError

WARMUP_JUDGMENTS = 40
REFRESH_EVERY = 20
MIN_GROUP_JUDGMENTS = 30
MIN_OPEN_TRIPLETS = 10
GRID_STEP = 0.01
CONFIDENCE = 0.95
NEWTON_STEPS = 25
WARM_NEWTON_STEPS = 6
# The smallest priority an offered triplet gets (a positive priority means "offered"; 0 means "not now").
MIN_PRIORITY = 1e-6
META_PREFIX = "active_refresh:"
ROLE_GROUPS = ("artist", "lay")


# --------------------------------------------------------------------------
# The flip point and the choice model (pure functions on arrays)
# --------------------------------------------------------------------------


def log_differences(m_sem_first, m_style_first, m_sem_second, m_style_second) -> tuple[np.ndarray, np.ndarray]:
    """(Δs, Δt): log M_sem and log M_style of the first generation minus those of the second."""
    arrays = [np.asarray(value, dtype=np.float64) for value in (m_sem_first, m_style_first, m_sem_second,
                                                                 m_style_second)]
    if any(np.any(~(array > 0)) for array in arrays):
        raise CpdmError("the flip point needs positive, known distances (M_sem and M_style of both generations)")
    return np.log(arrays[0]) - np.log(arrays[2]), np.log(arrays[1]) - np.log(arrays[3])


def flip_points(delta_sem, delta_style) -> np.ndarray:
    """w* = Δt / (Δt − Δs): the w at which CM_w's order of the two generations flips.

    NaN where Δs = Δt (every w orders them alike, or ties them). A value
    outside [0, 1] means no w of CM_w flips the order.
    """
    delta_sem = np.asarray(delta_sem, dtype=np.float64)
    delta_style = np.asarray(delta_style, dtype=np.float64)
    denominator = delta_style - delta_sem
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(denominator != 0, delta_style / np.where(denominator != 0, denominator, 1.0), np.nan)


def choice_grid(step: float = GRID_STEP) -> np.ndarray:
    """The w grid the choice model is fitted on: 0 to 1 in ``step``."""
    if not 0 < step <= 0.1:
        raise CpdmError(f"the choice model's w grid step must be in (0, 0.1], got {step}")
    return np.round(np.linspace(0.0, 1.0, int(round(1 / step)) + 1), 10)


@dataclass(frozen=True)
class ChoiceModel:
    """A fitted choice model: P(first is more of a copy) = σ(−β·(w·Δs + (1 − w)·Δt))."""

    w: float
    beta: float
    low: float                 # the likelihood-ratio interval of w
    high: float
    judgments: float           # how many judgments it was fitted to (can't tell counts as one)

    def p_first(self, delta_sem, delta_style) -> np.ndarray:
        """The predicted probability that a rater calls the first generation more of a copy."""
        x = self.w * np.asarray(delta_sem, dtype=np.float64) + (1 - self.w) * np.asarray(delta_style, dtype=np.float64)
        return expit(-self.beta * x)

    def holds(self, w_star) -> np.ndarray:
        """Whether each flip point lies inside the interval of w (NaN never does)."""
        w_star = np.asarray(w_star, dtype=np.float64)
        return (w_star >= self.low - 1e-12) & (w_star <= self.high + 1e-12)

    @classmethod
    def uninformed(cls) -> "ChoiceModel":
        """Before any judgment: every w in [0, 1] is possible."""
        return cls(0.5, 0.0, 0.0, 1.0, 0.0)


def profile_loglik(delta_sem, delta_style, first, total, grid, start: float = 1.0,
                   steps: int = NEWTON_STEPS) -> tuple[np.ndarray, np.ndarray]:
    """For every grid w, the best β ≥ 0 and the log-likelihood there (Newton's method on β, G rows at once).

    ``first``: how often each triplet's first generation was chosen (a
    can't-tell adds 0.5); ``total``: its judgments; ``start``: β to start
    from (a previous fit's, with fewer ``steps``).
    """
    delta_sem = np.asarray(delta_sem, dtype=np.float64)
    delta_style = np.asarray(delta_style, dtype=np.float64)
    first = np.asarray(first, dtype=np.float64)
    total = np.asarray(total, dtype=np.float64)
    w = np.asarray(grid, dtype=np.float64)[:, None]
    # z = −x_w: the first is favoured when z > 0. y = first / total, weights = total.
    z = -(w * delta_sem[None, :] + (1 - w) * delta_style[None, :])
    beta = np.full(len(grid), float(start) if start > 0 else 1.0)
    for _ in range(steps):
        p = expit(beta[:, None] * z)
        gradient = (z * (first - total * p)).sum(axis=1)
        curvature = (z * z * total * p * (1 - p)).sum(axis=1)
        step = np.where(curvature > 1e-12, gradient / np.maximum(curvature, 1e-12), 0.0)
        beta = np.clip(beta + np.clip(step, -5.0, 5.0), 0.0, 1e3)
    eta = beta[:, None] * z
    loglik = (first * log_expit(eta) + (total - first) * log_expit(-eta)).sum(axis=1)
    return beta, loglik


def fit_choice_model(delta_sem, delta_style, first, total, confidence: float = CONFIDENCE,
                     step: float = GRID_STEP, previous: ChoiceModel | None = None) -> ChoiceModel:
    """Fit the choice model to judged triplets (see the module docstring); no judgments: :meth:`uninformed`.

    ``previous``: the last fit, whose β starts Newton's method (a few steps then suffice).
    """
    total = np.asarray(total, dtype=np.float64)
    if not 0 < confidence < 1:
        raise CpdmError(f"confidence must be between 0 and 1, got {confidence}")
    keep = total > 0
    if not keep.any():
        return ChoiceModel.uninformed()
    grid = choice_grid(step)
    beta, loglik = profile_loglik(np.asarray(delta_sem)[keep], np.asarray(delta_style)[keep],
                                  np.asarray(first)[keep], total[keep], grid,
                                  *((previous.beta, WARM_NEWTON_STEPS) if previous is not None and previous.beta > 0
                                    else ()))
    best = int(np.argmax(loglik))
    inside = loglik >= loglik[best] - chi2.ppf(confidence, 1) / 2
    return ChoiceModel(float(grid[best]), float(beta[best]), float(grid[inside].min()), float(grid[inside].max()),
                       float(total[keep].sum()))


def active_priorities(w_star, delta_sem, delta_style, models, open_, fallback,
                      min_open: int = MIN_OPEN_TRIPLETS) -> np.ndarray:
    """The active queue's priority of every candidate triplet (see the module docstring).

    ``w_star``, ``delta_sem``, ``delta_style``: per triplet; ``models``: the
    fitted :class:`ChoiceModel` of each rater group; ``open_``: whether the
    triplet still has room for judgments; ``fallback``: its balanced-order
    priority (positive), used to top the queue up.
    """
    w_star = np.asarray(w_star, dtype=np.float64)
    open_ = np.asarray(open_, dtype=bool)
    fallback = np.asarray(fallback, dtype=np.float64)
    if not models:
        raise CpdmError("the active queue needs at least one fitted choice model")
    priority = np.zeros(len(w_star))
    for model in models:
        p = model.p_first(delta_sem, delta_style)
        uncertainty = np.where(model.holds(w_star), np.maximum(p * (1 - p), MIN_PRIORITY), 0.0)
        priority = np.maximum(priority, uncertainty)
    priority = np.where(open_, priority, 0.0)
    informative = priority > 0
    missing = min_open - int(informative.sum())
    rest = np.flatnonzero(open_ & ~informative)
    if missing > 0 and len(rest):
        # Top up with just enough other open triplets, in balanced order, each below every informative one.
        chosen = rest[np.argsort(-fallback[rest], kind="stable")[:missing]]
        floor = priority[informative].min() if informative.any() else 1.0
        top = max(float(fallback[chosen].max()), 1e-300)
        priority[chosen] = MIN_PRIORITY * floor * np.clip(fallback[chosen] / top, 1e-3, 1.0)
    return priority
