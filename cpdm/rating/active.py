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


# --------------------------------------------------------------------------
# The queue of a campaign: reading its triplets and judgments, writing priorities
# --------------------------------------------------------------------------


@dataclass
class RefreshResult:
    """What a refresh of an active campaign's queue found and wrote."""

    campaign: int
    judgments: int                      # copy judgments it was fitted to
    phase: str                          # "warm-up" (priorities left as they were) or "active"
    models: dict                        # group -> ChoiceModel (as dicts) the queue was built from
    offered: int = 0                    # normal triplets with a positive priority after the refresh
    informative: int = 0                # of those, triplets whose flip point lies inside an interval
    changed: int = 0                    # priorities written
    backbones: tuple | None = None      # (semantic, style) the flip points come from

    def to_dict(self) -> dict:
        return {**asdict(self), "backbones": list(self.backbones) if self.backbones else None}

    def describe(self) -> str:
        if self.phase == "warm-up":
            return (f"warm-up: {self.judgments} of {WARMUP_JUDGMENTS} judgments in; the balanced triplets stay "
                    "offered")
        intervals = "; ".join(f"{group}: w = {m['w']:.2f} [{m['low']:.2f}, {m['high']:.2f}]"
                              for group, m in self.models.items())
        return (f"{self.judgments} judgments; {intervals}; {self.offered} triplets offered, {self.informative} of "
                f"them can move w ({self.changed} priorities written)")


def active_campaign(conn, campaign_id: int) -> tuple[str, dict, str]:
    """(name, overlap, protocol text) of an active 2afc campaign; anything else is refused."""
    row = conn.execute("SELECT name, kind, design, overlap, protocol FROM campaigns WHERE id = ?",
                       (campaign_id,)).fetchone()
    if row is None:
        raise CpdmError(f"no campaign with id {campaign_id}")
    name, kind, design, overlap, protocol = row
    if kind != "2afc" or design != "active":
        what = "rates pairs" if kind != "2afc" else f"has the {design} design"
        raise CpdmError(f"campaign {name!r} {what}; only active 2afc campaigns have a queue to refresh")
    return name, json.loads(overlap), protocol


def _flip_backbones(conn, campaign_id: int) -> tuple[str, str] | None:
    """The backbone combination scoring most of the campaign's normal pairs (None: nothing scored)."""
    row = conn.execute(
        "SELECT s.semantic, s.style FROM scores s JOIN campaign_pairs cp ON cp.pair = s.pair AND cp.campaign = ? "
        "JOIN pairs p ON p.id = s.pair AND p.kind = 'normal' "
        "GROUP BY s.semantic, s.style ORDER BY COUNT(*) DESC, s.semantic, s.style LIMIT 1",
        (campaign_id,),
    ).fetchone()
    return (row[0], row[1]) if row else None


def campaign_candidates(ws, campaign_id: int):
    """The campaign's normal triplets with what the queue needs (a DataFrame, by triplet id).

    Columns: triplet, priority, open (room left for some role), judged (copy
    judgments so far), first_pair, second_pair, delta_sem, delta_style,
    w_star (NaN where either pair is unscored).
    """
    import pandas as pd

    _name, overlap, _protocol = active_campaign(ws.conn, campaign_id)
    backbones = _flip_backbones(ws.conn, campaign_id)
    semantic, style = backbones if backbones else (None, None)
    frame = pd.read_sql_query(
        "SELECT t.id AS triplet, ct.priority, t.first_pair, t.second_pair, "
        "s1.m_sem AS sem1, s1.m_style AS style1, s2.m_sem AS sem2, s2.m_style AS style2 "
        "FROM campaign_triplets ct JOIN triplets t ON t.id = ct.triplet AND t.kind = 'normal' "
        "LEFT JOIN scores s1 ON s1.pair = t.first_pair AND s1.semantic = ? AND s1.style = ? "
        "LEFT JOIN scores s2 ON s2.pair = t.second_pair AND s2.semantic = ? AND s2.style = ? "
        "WHERE ct.campaign = ? ORDER BY t.id",
        ws.conn, params=(semantic, style, semantic, style, campaign_id),
    )
    load = pd.read_sql_query("SELECT triplet, role, load FROM triplet_load WHERE campaign = ?", ws.conn,
                             params=(campaign_id,))
    load["room"] = load["load"] < load["role"].map(overlap).fillna(0)
    frame["open"] = frame["triplet"].map(load.groupby("triplet")["room"].any()).fillna(False).astype(bool)
    distances = frame[["sem1", "style1", "sem2", "style2"]].astype(float).to_numpy()
    scored = np.all(distances > 0, axis=1)
    frame["delta_sem"] = np.nan
    frame["delta_style"] = np.nan
    if scored.any():
        delta_sem, delta_style = log_differences(*distances[scored].T)
        frame.loc[scored, "delta_sem"] = delta_sem
        frame.loc[scored, "delta_style"] = delta_style
    frame["w_star"] = flip_points(frame["delta_sem"], frame["delta_style"])
    frame.attrs["backbones"] = backbones
    return frame.drop(columns=["sem1", "style1", "sem2", "style2"])


def copy_judgments(ws, campaign_id: int):
    """Copy-question judgments of the campaign's normal triplets by unflagged raters: triplet, role, first, total.

    ``first`` counts the judgments that chose the triplet's first pair (a
    can't-tell counts half); skips are left out.
    """
    import pandas as pd

    from cpdm.rating.protocol import parse_protocol

    _name, _overlap, protocol_text = active_campaign(ws.conn, campaign_id)
    question = parse_protocol(protocol_text, frozen=True).questions[0].id
    frame = pd.read_sql_query(
        "SELECT j.triplet, r.role, "
        "SUM(CASE WHEN j.answer = 'cant_tell' THEN 0.5 WHEN j.chosen_pair = t.first_pair THEN 1.0 ELSE 0.0 END) "
        "AS first, COUNT(*) AS total "
        "FROM judgments j JOIN triplets t ON t.id = j.triplet AND t.kind = 'normal' "
        "JOIN raters r ON r.id = j.rater AND r.flagged = 0 "
        "WHERE j.campaign = ? AND j.question = ? AND j.answer IS NOT NULL GROUP BY j.triplet, r.role",
        ws.conn, params=(campaign_id, question),
    )
    return frame.astype({"first": float, "total": float})


def _balanced_fallback(candidates, judged) -> np.ndarray:
    """Balanced order for topping the queue up: triplets whose two generations were judged least come first."""
    per_pair = {}
    for first, second, total in zip(candidates["first_pair"], candidates["second_pair"], judged):
        per_pair[first] = per_pair.get(first, 0.0) + total
        per_pair[second] = per_pair.get(second, 0.0) + total
    seen = np.array([per_pair[a] + per_pair[b] for a, b in zip(candidates["first_pair"], candidates["second_pair"])])
    return 1.0 / (1.0 + seen)


def group_models(candidates, judgments) -> dict[str, ChoiceModel]:
    """A choice model per role with ``MIN_GROUP_JUDGMENTS`` judgments, else one over all raters (``all``)."""
    scored = candidates.dropna(subset=["w_star"]).set_index("triplet")
    judged = judgments[judgments["triplet"].isin(scored.index)]
    models = {}
    for role in ROLE_GROUPS:
        sub = judged[judged["role"] == role]
        if sub["total"].sum() >= MIN_GROUP_JUDGMENTS:
            rows = scored.loc[sub["triplet"]]
            models[role] = fit_choice_model(rows["delta_sem"], rows["delta_style"], sub["first"], sub["total"])
    if not models:
        pooled = judged.groupby("triplet")[["first", "total"]].sum()
        rows = scored.loc[pooled.index]
        models["all"] = fit_choice_model(rows["delta_sem"], rows["delta_style"], pooled["first"], pooled["total"])
    return models


def refresh_priorities(ws, campaign_id: int, now=None) -> RefreshResult:
    """Recompute an active campaign's queue from its judgments so far and write it (see the module docstring).

    During the warm-up (fewer than ``WARMUP_JUDGMENTS`` copy judgments while
    warm-up triplets remain open) nothing is written. Priorities go through
    :func:`cpdm.rating.triplets.set_priorities`; attention checks keep theirs.
    What was found is recorded in ``meta`` (:func:`last_refresh`).
    """
    from cpdm.rating.triplets import set_priorities
    from cpdm.store.time import format_time, utc_now
    from cpdm.store.writer import write_transaction

    candidates = campaign_candidates(ws, campaign_id)
    judgments = copy_judgments(ws, campaign_id)
    count = int(judgments["total"].sum())
    warm_open = bool(((candidates["priority"] > 0) & candidates["open"]).any())
    backbones = candidates.attrs.get("backbones")
    if candidates["w_star"].notna().sum() == 0:
        raise CpdmError("the active queue needs metric scores of the campaign's pairs (run `cpdm score` first)")
    if count < WARMUP_JUDGMENTS and warm_open:
        result = RefreshResult(campaign_id, count, "warm-up", {}, int((candidates["priority"] > 0).sum()),
                               backbones=backbones)
    else:
        models = group_models(candidates, judgments)
        judged = candidates["triplet"].map(judgments.groupby("triplet")["total"].sum()).fillna(0).to_numpy()
        scored = candidates["w_star"].notna().to_numpy()
        priority = np.zeros(len(candidates))
        priority[scored] = active_priorities(
            candidates.loc[scored, "w_star"], candidates.loc[scored, "delta_sem"],
            candidates.loc[scored, "delta_style"], list(models.values()), candidates.loc[scored, "open"],
            _balanced_fallback(candidates[scored], judged[scored]))
        informative = np.zeros(len(candidates), dtype=bool)
        for model in models.values():
            informative |= model.holds(candidates["w_star"].to_numpy())
        informative &= candidates["open"].to_numpy()
        current = candidates["priority"].to_numpy(dtype=np.float64)
        changed = {int(t): float(p) for t, p, old in zip(candidates["triplet"], priority, current)
                   if not np.isclose(p, old, rtol=1e-9, atol=0.0)}
        set_priorities(ws, campaign_id, changed)
        result = RefreshResult(campaign_id, count, "active", {g: asdict(m) for g, m in models.items()},
                               int((priority > 0).sum()), int(informative.sum()), len(changed), backbones)
    record = {**result.to_dict(), "seen": judgment_count(ws, campaign_id), "at": format_time(now or utc_now())}
    ws.set_meta(f"{META_PREFIX}{campaign_id}", json.dumps(record))
    return result


def last_refresh(ws, campaign_id: int) -> dict | None:
    """What the last refresh of the campaign's queue recorded (judgments, models, offered, at), or None."""
    row = ws.conn.execute("SELECT value FROM meta WHERE key = ?", (f"{META_PREFIX}{campaign_id}",)).fetchone()
    return json.loads(row[0]) if row else None


def judgment_count(ws, campaign_id: int) -> int:
    """Answered copy judgments of the campaign's normal triplets (every rater)."""
    row = ws.conn.execute(
        "SELECT COUNT(DISTINCT j.triplet || ':' || j.rater) FROM judgments j "
        "JOIN triplets t ON t.id = j.triplet AND t.kind = 'normal' WHERE j.campaign = ? AND j.answer IS NOT NULL",
        (campaign_id,)).fetchone()
    return int(row[0])


def refresh_due(ws, campaign_id: int, every: int = REFRESH_EVERY) -> bool:
    """Whether an open active campaign has had ``every`` judgments since its queue was last refreshed."""
    row = ws.conn.execute("SELECT kind, design, status FROM campaigns WHERE id = ?", (campaign_id,)).fetchone()
    if row is None or row[0] != "2afc" or row[1] != "active" or row[2] != "open":
        return False
    previous = last_refresh(ws, campaign_id)
    return judgment_count(ws, campaign_id) - (previous["seen"] if previous else 0) >= every
