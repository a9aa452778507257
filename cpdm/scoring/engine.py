"""The scoring engine: scores per pair from cached features (``score_pairs``), the workspace's one scoring path.

Unless told otherwise it scores with the CPDM release's backbones
(``ViT-L-14/openai`` + ``cpdm-inception``, as the authors' ``cpdm_metric.py``
computes them; see :mod:`cpdm.backbones`).

``score_pairs`` scores every pair that has no score yet for a (semantic,
style) backbone combination; given several semantic and style backbones it
scores every combination in the same pass:

1. Pairs are taken anchor by anchor, in chunks of about ``batch_size`` pairs.
2. For each chunk, the workspace is asked again which of its pairs are
   scored already (another run may have scored them meanwhile): those are
   skipped before anything is computed. The images whose features are not in
   the ``features`` table yet (``cpdm.scoring.cache``) are decoded once,
   batched (same-size images together) and run through each backbone that
   lacks them, once per image whatever the number of combinations; their
   features are written in one short transaction per batch. An anchor with 9
   generations is embedded once, and after a new unlearning run only the new
   generations are.
3. The chunk's pairs are scored from the features and written in one short
   transaction, so an error later (a missing file, say) leaves every score
   written before it intact. Counts are of the rows this run inserted, so
   two runs at once never both claim a score.
4. Finally each combination without a recorded reference set gets one
   (:mod:`cpdm.scoring.reference`: anchors against the baseline variant's
   generations of other anchors, computed from cached features, whatever
   pairs were in scope), for the reference scale x_ref of CM.

The engine runs in inference mode. With ``precision="auto"`` (the default)
it tries fp16 on CUDA on the first batch of each backbone and keeps it only
if every distance among a probe of that batch's images stays within 1e-3 of
fp32 (absolute for M_sem, relative for M_style); on the CPU it computes in
fp32. ``precision="reduced"`` also tries bf16 matrix products on CPUs that
have bf16 instructions, ``"fp32"`` never reduces; see ``cpdm.scoring.precision``.

Why one file of this length: it is the engine and the one function that
drives it; features, scores and reference sets are the steps of one pass and
share the engine's backbones and extractor.
"""

from __future__ import annotations

import itertools
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Sequence

from cpdm.backbones import (
    DEFAULT_SEMANTIC,
    DEFAULT_STYLE,
    check_semantic_name,
    check_style_name,
)
from cpdm.executor import LocalExecutor
from cpdm.progress import progress_bar
from cpdm.scoring import DEFAULT_BATCH_SIZE, DEFAULT_SCORING_PRECISION
from cpdm.scoring.cache import cached_images, load_descriptor, store_features
from cpdm.scoring.features import (
    FeatureExtractor,
    descriptor_distance,
)
from cpdm.scoring.precision import FP32, check_choice
from cpdm.scoring.reader import ScoringError
from cpdm.scoring.reference import (
    ReferencePlan,
    ReferenceRecord,
    load_reference_record,
    plan_reference_set,
    stale_note,
    store_reference_set,
)


# --------------------------------------------------------------------------
# The engine
# --------------------------------------------------------------------------


@dataclass
class ScoreReport:
    """What one ``score_pairs`` run did: only what this run itself wrote counts.

    ``semantic`` and ``style`` are the stored backbone keys (comma-separated
    when several were scored in one pass); ``pairs_scored`` counts pairs that
    got at least one new score from this run, ``scores_written`` the (pair,
    combination) scores it inserted, ``pairs_already_scored`` the pairs in
    scope it found scored (before it started, or by another run meanwhile);
    ``reference_distances_added`` the reference rows it inserted;
    ``precision`` maps each backbone key to its precision; ``notes`` say why
    a combination has no reference scale, or that its recorded one no longer
    matches the baseline.
    """

    semantic: str
    style: str
    combinations: list = field(default_factory=list)
    pairs_scored: int = 0
    scores_written: int = 0
    pairs_already_scored: int = 0
    images_computed: int = 0
    images_cached: int = 0
    reference_distances_added: int = 0
    seconds: float = 0.0
    precision: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def summary(self) -> str:
        if len(self.combinations) > 1:
            backbones = f"{len(self.combinations)} combinations of semantic={self.semantic} x style={self.style} " \
                        f"({self.scores_written} scores)"
        else:
            backbones = f"semantic={self.semantic} style={self.style}"
        return (
            f"scored {self.pairs_scored} pairs ({self.pairs_already_scored} already scored) with "
            f"{backbones}: features computed for {self.images_computed} images, "
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


def store_scores(ws, rows: Sequence[tuple[int, str, str, float, float]]) -> list[int]:
    """Write ``(pair, semantic key, style key, M_sem, M_style)`` scores in one transaction (the one writer of
    ``scores``); a score already there is kept. Returns the pair of each row this call inserted."""
    with ws.transaction() as conn:
        return [row[0] for row in rows if conn.execute(
            "INSERT INTO scores (pair, semantic, style, m_sem, m_style) VALUES (?, ?, ?, ?, ?) "
            "ON CONFLICT(pair, semantic, style) DO NOTHING", row).rowcount]


def _as_list(backbones) -> list:
    return list(backbones) if isinstance(backbones, (list, tuple)) else [backbones]


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
    """Backbones plus the workspace: computes, caches and scores. ``score_pairs`` drives it.

    ``semantic_backbones`` and ``style_backbones`` are one backbone each or
    lists of them; every (semantic, style) combination is scored, and each
    backbone runs once per image whatever the number of combinations.
    The ``executor`` (:mod:`cpdm.executor`; by default this process)
    computes the features: a Ray executor's backbones are its stand-ins and
    its workers compute several batches at once. Caching and scoring stay
    here whatever the executor.
    """

    def __init__(self, ws, semantic_backbones, style_backbones, batch_size: int = 16, precision: str = "auto",
                 executor=None):
        if batch_size < 1:
            raise ScoringError(f"batch size must be at least 1, got {batch_size}")
        semantics, styles = _as_list(semantic_backbones), _as_list(style_backbones)
        for backbone, role in [(b, "semantic") for b in semantics] + [(b, "style") for b in styles]:
            if backbone.role != role:
                raise ScoringError(f"{backbone.name} is a {backbone.role} backbone, not a {role} one")
        self.ws = ws
        self.extractor = FeatureExtractor(semantics + styles, precision)
        self.backbones = self.extractor.backbones
        by_key = {b.key: b for b in self.backbones}
        keys = dict.fromkeys((sem.key, style.key) for sem in semantics for style in styles)
        self.combinations = [(by_key[sem], by_key[style]) for sem, style in keys]
        self.batch_size = batch_size
        self.executor = executor if executor is not None else LocalExecutor(self.backbones[0].device)

    @property
    def pairs_per_chunk(self) -> int:
        """Pairs scored together: about a feature batch, or with an executor enough to keep its workers busy."""
        return self.batch_size * self.executor.batches_in_flight

    @property
    def semantic_key(self) -> str:
        """The first combination's semantic key (the only one, usually)."""
        return self.combinations[0][0].key

    @property
    def style_key(self) -> str:
        return self.combinations[0][1].key

    def combination_keys(self) -> list[tuple[str, str]]:
        return [(sem.key, style.key) for sem, style in self.combinations]

    def features_for(self, shas: Sequence[str], report: ScoreReport | None = None) -> dict[str, dict]:
        """Descriptors of these images, ``{sha: {backbone key: descriptor}}``: cached ones read back, the others
        computed in batches (each image decoded once, each backbone run only where its feature is missing)."""
        shas = list(dict.fromkeys(shas))
        computed = self.ensure_features(shas)
        if report is not None:
            report.images_computed += computed
            report.images_cached += len(shas) - computed
        # Read back what the cache holds so that cached and fresh paths agree exactly.
        return {sha: self._cached_descriptors(sha) for sha in shas}

    def ensure_features(self, shas: Sequence[str]) -> int:
        """Compute and cache every backbone's features of these images where the cache lacks them; returns how many
        images were computed."""
        shas = list(dict.fromkeys(shas))
        have = {b.key: cached_images(self.ws, b.key, shas) for b in self.backbones}
        to_compute = [sha for sha in shas if any(sha not in have[b.key] for b in self.backbones)]
        batches = [to_compute[start : start + self.batch_size] for start in range(0, len(to_compute), self.batch_size)]
        for _, rows in self._computed_batches(batches, have):
            store_features(self.ws, rows)
        return len(to_compute)

    def _cached_descriptors(self, sha: str) -> dict | None:
        """Every backbone's cached descriptor of an image, or None if one is missing."""
        found = {b.key: load_descriptor(self.ws, sha, b) for b in self.backbones}
        return None if any(value is None for value in found.values()) else found

    def _computed_batches(self, batches: list[list[str]], have: dict[str, set[str]]):
        """``(batch, feature rows)`` for each batch of images, in order, as the executor computes them."""
        # Only what is missing: scoring with a new style backbone reuses cached CLIP embeddings.
        needs = [{b.key: [i for i, sha in enumerate(batch) if sha not in have[b.key]] for b in self.backbones}
                 for batch in batches]
        computed = self.executor.feature_rows(self.extractor, batches, needs, self.ws.image_path)
        for batch, (rows, chosen) in zip(batches, computed):
            # The precision a remote worker's extractor chose, recorded in ours.
            self.extractor.precision.update({key: value for key, value in chosen.items() if value})
            yield batch, rows

    @staticmethod
    def distances(combination, a: dict, g: dict) -> tuple[float, float]:
        """(M_sem, M_style) of two images' descriptors under one (semantic, style) combination."""
        sem, style = combination
        return (
            descriptor_distance(sem, a[sem.key], g[sem.key]),
            descriptor_distance(style, a[style.key], g[style.key]),
        )

    def score_chunk(self, pairs: list[_Pair], report: ScoreReport) -> None:
        """The chunk's missing scores: computed from the features, then written in one transaction.

        Which scores are missing is read from the workspace first, so what
        another run scored meanwhile costs nothing here; the counts are of
        the rows this call inserted.
        """
        missing = self._missing_combinations(pairs)
        pairs = [pair for pair in pairs if missing.get(pair.id)]
        if not pairs:
            return
        images = [sha for pair in pairs for sha in (pair.anchor_image, pair.image)]
        features = self.features_for(images, report)
        keys = self.combination_keys()
        rows = []
        for pair in pairs:
            for index in missing[pair.id]:
                sem, style = self.distances(self.combinations[index], features[pair.anchor_image], features[pair.image])
                rows.append((pair.id, *keys[index], sem, style))
        inserted = store_scores(self.ws, rows)
        report.pairs_scored += len(set(inserted))
        report.scores_written += len(inserted)

    def _missing_combinations(self, pairs: list[_Pair]) -> dict[int, list[int]]:
        """For each pair, the indexes (in ``self.combinations``) of the combinations it has no score for yet."""
        marks = ",".join("?" * len(pairs))
        scored = set(self.ws.conn.execute(
            f"SELECT pair, semantic, style FROM scores WHERE pair IN ({marks})", [pair.id for pair in pairs]
        ).fetchall())
        keys = self.combination_keys()
        return {pair.id: [i for i, (sem, style) in enumerate(keys) if (pair.id, sem, style) not in scored]
                for pair in pairs}

    def define_reference_sets(self, report: ScoreReport) -> None:
        """Each combination without a recorded reference set gets one (:mod:`cpdm.scoring.reference`).

        The set follows from the baseline's generations, not from the pairs
        in scope: their features are computed here if missing. A recorded set
        is never changed; a note says when the baseline no longer matches it.
        """
        plan = plan_reference_set(self.ws)
        undefined = []
        for index, keys in enumerate(self.combination_keys()):
            record = load_reference_record(self.ws, *keys)
            if record is None:
                undefined.append(index)
            elif (note := stale_note(record, plan)) is not None:
                report.notes.append(note)
        if not undefined:
            return
        if (problem := plan.problem()) is not None:
            report.notes.append(problem)
            return
        for index in undefined:
            inserted = store_reference_set(self.ws, *self.combination_keys()[index],
                                           self.reference_rows(plan, index, report), plan)
            report.reference_distances_added += inserted or 0

    def rescale(self) -> list[tuple[ReferenceRecord | None, ReferenceRecord]]:
        """Define every combination's reference set again from the baseline's generations, on purpose.

        Returns (earlier record or None, new record) per combination.
        """
        plan = plan_reference_set(self.ws)
        if (problem := plan.problem()) is not None:
            raise ScoringError(problem)
        changes = []
        for index, keys in enumerate(self.combination_keys()):
            before = load_reference_record(self.ws, *keys)
            store_reference_set(self.ws, *keys, self.reference_rows(plan, index), plan, replace=True)
            changes.append((before, load_reference_record(self.ws, *keys)))
        return changes

    def reference_rows(self, plan: ReferencePlan, index: int, report: ScoreReport | None = None) -> list[tuple]:
        """(anchor, image, M_sem, M_style) of every reference pair under combination ``index``.

        Images the scored pairs did not need (the baseline's, when another
        variant is scored first) are computed here and counted in ``report``.
        """
        computed = self.ensure_features(plan.images)
        if report is not None:
            report.images_computed += computed
        memo: OrderedDict[str, dict | None] = OrderedDict()
        rows = []
        for pair in plan.pairs:  # anchor by anchor: the anchor's features stay in the small memo
            anchor, other = self._cached(pair.anchor_image, memo), self._cached(pair.image, memo)
            rows.append((pair.anchor, pair.image, *self.distances(self.combinations[index], anchor, other)))
        return rows

    def _cached(self, sha: str, memo: OrderedDict, limit: int = 64) -> dict | None:
        """Cached descriptors through a small LRU (reference sampling revisits images)."""
        if sha in memo:
            memo.move_to_end(sha)
            return memo[sha]
        value = self._cached_descriptors(sha)
        memo[sha] = value
        if len(memo) > limit:
            memo.popitem(last=False)
        return value


def build_engine(
    ws,
    semantic: str | Sequence[str] = DEFAULT_SEMANTIC,
    style: str | Sequence[str] = DEFAULT_STYLE,
    device: str = "cpu",
    batch_size: int = DEFAULT_BATCH_SIZE,
    offline_tiny: bool = False,
    mode: str | None = None,
    executor=None,
    style_image_size: int | None = None,
    precision: str = DEFAULT_SCORING_PRECISION,
) -> ScoringEngine:
    """Load the backbones (checking names, device and precision first) and wrap them in an engine.

    ``semantic`` and ``style`` are a name each, or lists of names: every
    (semantic, style) combination is then scored in one pass; by default the
    CPDM release's pair (``ViT-L-14/openai`` + ``cpdm-inception``, as its
    ``cpdm_metric.py`` computes them). With an ``executor`` its workers load
    the backbones, on its device.
    """
    semantics, styles = _as_list(semantic), _as_list(style)
    for name in semantics:
        check_semantic_name(name)
    for name in styles:
        check_style_name(name)
    executor = executor if executor is not None else LocalExecutor(device)
    if batch_size < 1:
        raise ScoringError(f"batch size must be at least 1, got {batch_size}")
    check_choice(precision)
    mode = mode or ("tiny" if offline_tiny else "real")
    wanted = [("semantic", name, None) for name in semantics]
    wanted += [("style", name, style_image_size if name == "vgg19" else None) for name in styles]
    backbones = executor.backbones(wanted, mode)
    return ScoringEngine(ws, backbones[: len(semantics)], backbones[len(semantics) :], batch_size=batch_size,
                         precision=precision, executor=executor)


def score_pairs(
    ws,
    pair_ids: Sequence[int] | None = None,
    campaign_id: int | None = None,
    semantic: str | Sequence[str] = DEFAULT_SEMANTIC,
    style: str | Sequence[str] = DEFAULT_STYLE,
    device: str = "cpu",
    batch_size: int = DEFAULT_BATCH_SIZE,
    offline_tiny: bool = False,
    progress: bool = True,
    executor=None,
    engine: ScoringEngine | None = None,
    precision: str = DEFAULT_SCORING_PRECISION,
) -> ScoreReport:
    """Score every pair in scope (all, ``pair_ids`` or a campaign's) that lacks a score for some combination.

    ``semantic`` and ``style`` default to the CPDM release's backbones
    (``ViT-L-14/openai`` + ``cpdm-inception``, its ``cpdm_metric.py``) and
    may list several: every combination is scored in the same pass, each
    image decoded once and each backbone run once per image. Re-running
    scores only what is new, and a pair another run scores meanwhile is
    skipped before its features are computed. Each combination without a
    recorded reference set then gets one (:mod:`cpdm.scoring.reference`). ``engine`` reuses
    loaded backbones (its backbones then decide semantic/style/device, and it
    its precision). ``precision`` is ``auto`` (fp16 on CUDA where it keeps
    scores within 1e-3 of fp32), ``reduced`` (the CPU's bf16 too) or
    ``fp32``; see ``cpdm.scoring.precision``. ``executor`` (a
    :class:`cpdm.jobs.ray_executor.RayExecutor`) computes the features on its
    workers and device (``device`` is then unused); caching, scores and
    reference distances are written here exactly as without it.
    """
    started = time.perf_counter()
    scope = _selected_pair_ids(ws, pair_ids, campaign_id)
    if engine is None:
        engine = build_engine(ws, semantic, style, device, batch_size, offline_tiny, precision=precision,
                              executor=executor)
    keys = engine.combination_keys()
    report = ScoreReport(
        semantic=",".join(dict.fromkeys(sem for sem, _ in keys)),
        style=",".join(dict.fromkeys(style for _, style in keys)),
        combinations=keys,
    )
    pairs = _pairs_in_scope(ws, scope)
    done = {combination: _scored_pair_ids(ws, *combination) for combination in keys}
    todo = [pair for pair in pairs if any(pair.id not in scored for scored in done.values())]
    with progress_bar(len(todo), "scoring", unit="pair", enabled=progress and bool(todo)) as bar:
        for chunk in _chunks_by_anchor(todo, engine.pairs_per_chunk):
            engine.score_chunk(chunk, report)
            bar.update(len(chunk))  # a cancelled job stops here, once the chunk's scores are stored
    report.pairs_already_scored = len(pairs) - report.pairs_scored
    engine.define_reference_sets(report)
    report.precision = {key: chosen or FP32 for key, chosen in engine.extractor.precision.items()}
    report.seconds = time.perf_counter() - started
    return report


# --------------------------------------------------------------------------
# A small direct API: score two images without a workspace
# --------------------------------------------------------------------------
