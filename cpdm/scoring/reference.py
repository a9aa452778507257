"""The reference set behind CM's scale x_ref: which mismatched pairs, defined once, recorded with x_ref.

CM = 1 − min(x / x_ref, 1)² divides by x_ref, the median of M_sem · M_style
over mismatched pairs: an anchor against generations made for *other*
anchors, "as far apart as unrelated work". If that set depended on which
pairs happened to be scored first, every CM in the workspace would depend on
the order of work. So the set is a function of the workspace alone:

* images: the generations of the baseline variant (method ``original``),
  each with the anchor it was generated for (its normal pair);
* pairs: every such anchor against up to :data:`REFERENCE_SAMPLE` baseline
  generations of other anchors, the ones with the lowest
  ``sha256("{anchor}:{image}")`` (a fixed hash: no randomness, no order).

It is defined once per backbone combination, by the first ``cpdm score``
that can (the baseline has generations of at least two anchors), and
recorded with its size, x_ref and a fingerprint of the baseline generations
it was defined from. Scoring more
pairs, in any order, never changes it. ``cpdm scores rescale`` defines it
again on purpose (after new baseline generations, say) and says how far
x_ref moved; ``cpdm score`` says when the baseline has changed since.
Without a record a combination has no CM: the reader refuses and names the fix.

Stored: the pairs' distances in ``reference_distances`` (anchor, image,
semantic, style, m_sem, m_style), so M_sem and M_style of the reference
pairs stay readable per combination for other statistics of the same set,
and the record as JSON in the workspace's ``meta`` table under
``reference_set:[semantic, style]``. This module reads and writes both
without torch; computing the distances is the scoring engine's part.
"""

from __future__ import annotations

import functools
import hashlib
import json
from dataclasses import asdict, dataclass

import numpy as np
import sqlite_utils

from cpdm import metric
from cpdm.store.time import format_time, utc_now
from cpdm.store.workspace import BASELINE_METHOD

REFERENCE_SAMPLE = 8  # mismatched pairs per anchor
MIN_ANCHORS = 2  # mismatched pairs need generations of two anchors at least
DEFINITION = (f"each anchor with baseline generations (variant method '{BASELINE_METHOD}') against up to "
              f"{REFERENCE_SAMPLE} baseline generations of other anchors, lowest sha256('ANCHOR:IMAGE') first")
_META_PREFIX = "reference_set:"


@dataclass(frozen=True)
class ReferencePair:
    anchor: int
    anchor_image: str
    image: str


@dataclass
class ReferencePlan:
    """The baseline's generations, and the reference set they define (see the module docstring)."""

    anchor_images: dict[int, str]  # each anchor the baseline generated for -> the anchor's image
    owners: dict[str, set[int]]  # each baseline image -> the anchors it was generated for

    @property
    def anchors(self) -> int:
        return len(self.anchor_images)

    @property
    def baseline_generations(self) -> int:
        """Distinct baseline images."""
        return len(self.owners)

    @property
    def fingerprint(self) -> str:
        """A hash of the baseline's (anchor, image) pairs, which alone define the set: cheap to check on every run."""
        lines = sorted(f"{anchor}:{image}" for image, anchors in self.owners.items() for anchor in anchors)
        return hashlib.sha256("\n".join(lines).encode()).hexdigest()

    @functools.cached_property
    def pairs(self) -> list[ReferencePair]:
        """Each anchor against its REFERENCE_SAMPLE other-anchor baseline images of lowest sha256("ANCHOR:IMAGE")."""
        pairs = []
        for anchor, anchor_image in sorted(self.anchor_images.items()):
            others = [sha for sha, made_for in self.owners.items() if anchor not in made_for and sha != anchor_image]
            others.sort(key=lambda sha: hashlib.sha256(f"{anchor}:{sha}".encode()).hexdigest())
            pairs += [ReferencePair(anchor, anchor_image, sha) for sha in others[:REFERENCE_SAMPLE]]
        return pairs

    @property
    def images(self) -> list[str]:
        """Every image the pairs need features of (anchors first), each once."""
        return list(dict.fromkeys([p.anchor_image for p in self.pairs] + [p.image for p in self.pairs]))

    def problem(self) -> str | None:
        """Why no reference set can be defined from these generations (None when it can)."""
        if self.anchors >= MIN_ANCHORS:
            return None
        return (f"CM needs a reference scale from the baseline variant's generations (method '{BASELINE_METHOD}') "
                f"of at least {MIN_ANCHORS} anchors, and the baseline has generations of {self.anchors}: "
                "generate with the baseline for more anchors (cpdm generate), then run cpdm score")


@dataclass
class ReferenceRecord:
    """What was recorded when a combination's reference set was defined."""

    semantic: str
    style: str
    pairs: int
    anchors: int
    images: int
    baseline_generations: int  # of the baseline it was defined from (0: not defined from this workspace's baseline)
    fingerprint: str  # that baseline's ReferencePlan.fingerprint ("" likewise)
    x_ref: float | None  # the paper form's scale (median of M_sem · M_style); None if every distance is 0
    defined_at: str
    definition: str = DEFINITION

    def describe(self) -> str:
        """One line: x_ref, the set's size and when it was defined."""
        scale = "none (every distance is 0)" if self.x_ref is None else f"{self.x_ref:.6g}"
        return (f"x_ref={scale} over {self.pairs} reference pairs ({self.anchors} anchors against "
                f"{self.images} baseline generations of other anchors; defined {self.defined_at[:19]}Z)")


def plan_reference_set(ws) -> ReferencePlan:
    """The baseline's generations as the reference set reads them (see the module docstring)."""
    rows = ws.conn.execute(
        "SELECT p.anchor, a.image, p.image FROM pairs p JOIN anchors a ON a.id = p.anchor "
        "JOIN generations g ON g.id = p.generation JOIN variants v ON v.id = g.variant "
        "WHERE p.kind = 'normal' AND v.method = ?",
        (BASELINE_METHOD,),
    ).fetchall()
    anchor_images: dict[int, str] = {}
    owners: dict[str, set[int]] = {}
    for anchor, anchor_image, image in rows:
        anchor_images[anchor] = anchor_image
        owners.setdefault(image, set()).add(anchor)
    return ReferencePlan(anchor_images, owners)


def _meta_key(semantic: str, style: str) -> str:
    return _META_PREFIX + json.dumps([semantic, style])


def load_reference_record(ws, semantic: str, style: str) -> ReferenceRecord | None:
    """The recorded reference set of a combination (stored backbone keys), or None."""
    text = ws.get_meta(_meta_key(semantic, style))
    return None if text is None else ReferenceRecord(**json.loads(text))


def stale_note(record: ReferenceRecord, plan: ReferencePlan) -> str | None:
    """A note when the baseline's generations now define another set than the recorded one."""
    if record.fingerprint == plan.fingerprint:
        return None
    return (f"the reference set of semantic={record.semantic} style={record.style} was defined on "
            f"{record.baseline_generations} baseline generations; the baseline now has {plan.baseline_generations} "
            f"of {plan.anchors} anchors. CM keeps the recorded scale; `cpdm scores rescale` defines it again "
            "(and so changes every CM of this combination)")


def store_reference_set(ws, semantic: str, style: str, rows: list[tuple[int, str, float, float]],
                        baseline: ReferencePlan | None, replace: bool = False, definition: str = DEFINITION) -> int | None:
    """Record a combination's reference set: its (anchor, image, m_sem, m_style) rows and the record.

    ``baseline`` is the plan the rows were computed from (None for a set
    made another way: by hand, or synthetic). Without ``replace`` nothing
    is written when a record exists (another run defined it first): returns
    None. Otherwise the combination's earlier rows (of an earlier
    definition, or of a cpdm that sampled them from the pairs in scope) are
    deleted and the new ones written, in one transaction; returns how many
    rows this call inserted.
    """
    record = ReferenceRecord(
        semantic=semantic, style=style, pairs=len(rows), anchors=len({row[0] for row in rows}),
        images=len({row[1] for row in rows}),
        baseline_generations=baseline.baseline_generations if baseline else 0,
        fingerprint=baseline.fingerprint if baseline else "",
        x_ref=_paper_scale(rows), defined_at=format_time(utc_now()), definition=definition,
    )
    with ws.transaction() as conn:
        if not replace and load_reference_record(ws, semantic, style) is not None:
            return None
        conn.execute("DELETE FROM reference_distances WHERE semantic = ? AND style = ?", (semantic, style))
        sqlite_utils.Database(conn)["reference_distances"].insert_all(
            {"anchor": anchor, "image": image, "semantic": semantic, "style": style, "m_sem": sem, "m_style": sty}
            for anchor, image, sem, sty in rows
        )
        ws.set_meta(_meta_key(semantic, style), json.dumps(asdict(record)))
    return len(rows)


def _paper_scale(rows) -> float | None:
    """x_ref of the paper form over the rows, None when it is undefined (no rows, or all distances 0)."""
    if not rows:
        return None
    sem = np.array([row[2] for row in rows], dtype=np.float64)
    style = np.array([row[3] for row in rows], dtype=np.float64)
    try:
        return metric.reference_scale(sem, style)
    except metric.MetricError:
        return None


def unavailable_reason(ws, semantic: str, style: str) -> str:
    """Why a combination has no reference scale yet, with the command that gives it one."""
    problem = plan_reference_set(ws).problem()
    if problem is not None:
        return problem
    legacy = ws.conn.execute("SELECT 1 FROM reference_distances WHERE semantic = ? AND style = ? LIMIT 1",
                             (semantic, style)).fetchone()
    if legacy is not None:
        return (f"the reference distances of semantic={semantic} style={style} were sampled by an earlier cpdm from "
                "whatever pairs were scored first; run `cpdm scores rescale` to define the reference set from the "
                "baseline's generations")
    return f"no reference set for semantic={semantic} style={style} yet: run `cpdm score` (or `cpdm scores rescale`)"
