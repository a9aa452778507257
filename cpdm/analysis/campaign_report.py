"""The whole analysis of a campaign, and calibrated weights: the computing step.

:func:`run_analysis` gathers everything the researcher pages and
``cpdm analyze`` show; :func:`calibrate_campaign` produces the weights that
``cpdm calibrate`` exports and ``cpdm score --weights`` reads back. Both
handle rating campaigns here and comparative (2AFC) campaigns through
:mod:`cpdm.analysis.two_afc_report`. Loading lives in
:mod:`cpdm.analysis.campaign_data`, Markdown in
:mod:`cpdm.analysis.report_markdown`, files in
:mod:`cpdm.analysis.report_files`; their names are importable from here too.

Why one file of this length: it is one job, the computing step of a
campaign's analysis and calibration. run_analysis, the group and question
comparisons, calibration, planning from a campaign and the side-by-side of
two campaigns' weights all start from the same loaded campaign and the same
choice of rater groups and backbone combinations, and each hands the 2afc
case to two_afc_report at the same point; split, each part would import the
others' loading and group helpers. Loading, Markdown and files already live
in their own modules.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from cpdm.analysis import data as data_module
from cpdm.analysis.data import DEFAULT_TARGET
from cpdm.analysis.agreement import agreement_table
from cpdm.analysis.calibration import CalibrationResult, calibrate
from cpdm.analysis.campaign_data import (  # noqa: F401  (re-exported: callers import them from here)
    DEFAULT_CALIBRATION_GROUP,
    AnalysisOptions,
    CampaignData,
    check_target,
    groups_with_answers,
    load_campaign,
    paper_scale,
    protocol_questions,
    questions_of,
)
from cpdm.analysis.combinations import CombinationComparison, compare_loaded
from cpdm.analysis.correlation import correlation_table, split_half_ceiling
from cpdm.analysis.groups import COMPARED_GROUPS, GroupComparison, compare_groups
from cpdm.analysis.plots import (
    agreement_figure,
    calibration_figure,
    figure_png,
    group_curves_figure,
    scatter_figure,
    variant_figure,
)
from cpdm.analysis.report_files import (  # noqa: F401
    default_report_dir,
    file_stem,
    json_safe,
    save_weights,
    write_report,
)
from cpdm.analysis.report_markdown import (  # noqa: F401
    RELEASE_SCORE_NOTE,
    markdown_table,
    summary_markdown,
    w_std_paragraph,
)
from cpdm.analysis.variants import variant_benchmark
from cpdm.errors import CpdmError
from cpdm.scoring.reference import unavailable_reason
from cpdm.store.time import format_time, utc_now


@dataclass
class Analysis:
    """Everything one analysis of a campaign produced."""

    data: CampaignData
    options: AnalysisOptions
    groups: list[str]
    pairs: pd.DataFrame                  # one row per normal pair: distances, metrics, human scores per group
    metrics: list[str]
    x_ref: float | None
    x_ref_source: str | None
    agreement: pd.DataFrame
    correlations: pd.DataFrame
    ceiling: pd.DataFrame
    calibration: CalibrationResult | None
    variants: pd.DataFrame | None
    notes: list[str] = field(default_factory=list)
    group_comparisons: list[GroupComparison] = field(default_factory=list)
    _png: dict = field(default_factory=dict, repr=False)
    combinations: CombinationComparison | None = None  # when the campaign was scored with several backbone pairs
    side_by_side: pd.DataFrame | None = None  # this campaign's w beside a 2afc campaign's over the same pairs

    kind = "rating"

    def human_columns(self) -> dict[str, str]:
        return {group: f"human_{group}" for group in self.groups}

    def figure_names(self) -> list[str]:
        """File stems of the figures this analysis has (agreement, scatter_<metric>, calibration, variants)."""
        names = ["agreement"] if len(self.agreement) else []
        names += [scatter_name(metric) for metric in self.metrics]
        if self.calibration is not None:
            names.append("calibration")
        names += [group_figure_name(comparison.question) for comparison in self.group_comparisons]
        if self.variants is not None and len(self.variants):
            names.append("variants")
        if self.combinations is not None and len(self.combinations.table):
            names.append("combinations")
        return names

    def figure(self, name: str):
        """Build one named figure."""
        if name == "agreement":
            return agreement_figure(self.agreement)
        if name == "calibration":
            return calibration_figure(self.calibration.curve, self.calibration.chosen_w,
                                      spreads=self.calibration.spreads)
        if name == "variants":
            return variant_figure(self.variants, self.groups, self.data.copy_threshold(self.options.target))
        for comparison in self.group_comparisons:
            if name == group_figure_name(comparison.question):
                return group_curves_figure(comparison)
        if name == "combinations":
            return self.combinations.figure()
        for metric in self.metrics:
            if name == scatter_name(metric):
                ylabel = f"human '{self.options.target}' score" + (" (z)" if self.options.zscore else "")
                return scatter_figure(self.pairs, metric, self.human_columns(), self.correlations, ylabel=ylabel)
        raise KeyError(name)

    def png(self, name: str) -> bytes:
        """One figure as PNG bytes, rendered once and kept (pages show and offer the same bytes)."""
        if name not in self._png:
            self._png[name] = figure_png(self.figure(name))
        return self._png[name]

    def figures(self) -> dict:
        """All named matplotlib figures (file stem -> Figure)."""
        return {name: self.figure(name) for name in self.figure_names()}

    def tables(self) -> dict[str, pd.DataFrame]:
        """Named tables (file stem -> DataFrame)."""
        tables = {"agreement": self.agreement, "correlations": self.correlations, "noise_ceiling": self.ceiling,
                  "pairs": self.pairs}
        if self.calibration is not None:
            tables["calibration_curve"] = self.calibration.curve
            tables["calibration_summary"] = self.calibration.summary
        if self.group_comparisons:
            tables["group_comparison"] = self.group_table()
        if self.variants is not None:
            tables["variants"] = self.variants
        if self.combinations is not None:
            tables["combinations"] = self.combinations.table
        if self.side_by_side is not None:
            tables["w_by_judgment_kind"] = self.side_by_side
        return tables

    def group_table(self) -> pd.DataFrame:
        """Artists' w against lay raters' w, one row per protocol question."""
        return pd.DataFrame([comparison.row() for comparison in self.group_comparisons])

    def markdown(self) -> str:
        """The report's Markdown summary (:func:`cpdm.analysis.report_markdown.summary_markdown`)."""
        return summary_markdown(self)


def group_figure_name(question: str) -> str:
    """File stem of one question's artists-vs-lay plot: groups_copy, …"""
    return f"groups_{file_stem(question)}"


def scatter_name(metric: str) -> str:
    """File stem of a metric's scatter plot: scatter_CM, scatter_neg_m_sem, …"""
    return f"scatter_{file_stem(metric)}"



def is_2afc(ws, campaign: str) -> bool:
    """Whether the campaign of this name holds comparative (2AFC) judgments (False for an unknown name)."""
    row = ws.conn.execute("SELECT kind FROM campaigns WHERE name = ?", (campaign,)).fetchone()
    return row is not None and row[0] == "2afc"


def run_analysis(ws, campaign: str, options: AnalysisOptions | None = None):
    """Agreement, correlations, noise ceiling, calibration and the per-variant benchmark of a campaign.

    A rating campaign gives an :class:`Analysis`; a 2afc campaign a
    :class:`cpdm.analysis.two_afc_report.TwoAfcAnalysis` (both have
    ``kind``, ``tables()``, ``figure_names()``, ``png()`` and ``markdown()``).
    """
    from cpdm.metric import cm_paper, cm_weighted, release_score

    options = options or AnalysisOptions()
    if is_2afc(ws, campaign):
        from cpdm.analysis.two_afc_report import run_2afc_analysis

        analysis = run_2afc_analysis(ws, campaign, options)
        if analysis.calibration is not None:
            try:
                analysis.side_by_side = weights_side_by_side(
                    ws, analysis.data.campaign_id, options.target, analysis.calibration.stats["rater_group"], options,
                    this_result=analysis.calibration)
            except CpdmError as exc:
                analysis.notes.append(f"w from the rating campaign over the same pairs left out: {exc}")
        return analysis
    data = load_campaign(ws, campaign, options)
    check_target(data, options.target)
    notes: list[str] = []
    groups = groups_with_answers(data.ratings, "ratings", data.campaign, options, notes)
    by_group = data_module.split_groups(data.ratings, groups)

    agreement = agreement_table(data.ratings, by_group, data.questions, level=options.level,
                                value_domain=None, n_boot=options.n_boot, seed=options.seed,
                                n_pairs=len(data.pairs), resample=options.resample)

    pairs = data.pairs.copy()
    for group in groups:
        scores = data_module.human_scores(by_group[group], options.target, zscore=options.zscore)
        pairs = pairs.merge(scores.rename(columns={"human": f"human_{group}", "n_ratings": f"n_{group}"}),
                            on="pair", how="left")

    # The release's own number beside CM (no Norm, no reference scale): NaN where a pair has no scores.
    pairs["release_score"] = release_score(pairs["m_sem"].to_numpy(), pairs["m_style"].to_numpy())
    metrics: list[str] = []
    x_ref, x_ref_source = paper_scale(pairs, data.reference)
    calibration = None
    if data.backbones is None:
        notes.append("no metric scores for this campaign's pairs (run `cpdm score`); correlations and "
                     "calibration are left out")
    elif x_ref is None:
        notes.append("the reference scale is 0 (all distances are 0); correlations are left out")
    else:
        if x_ref_source == "campaign pairs":
            reason = unavailable_reason(ws, *data.backbones)
            notes.append(f"no reference set for these backbones ({reason}); until then x_ref is the median over the "
                         "campaign's own pairs")
        scored = pairs["m_sem"].notna() & pairs["m_style"].notna()
        pairs.loc[scored, "CM"] = cm_paper(pairs.loc[scored, "m_sem"].to_numpy(), pairs.loc[scored, "m_style"].to_numpy(), x_ref)
        metrics.append("CM")
        calibration_group = options.calibration_group if options.calibration_group in groups else groups[0]
        if calibration_group != options.calibration_group:
            notes.append(f"calibrated on the {calibration_group} group ({options.calibration_group} has no ratings)")
        try:
            calibration = calibrate(
                pairs.rename(columns={f"human_{calibration_group}": "human"}),
                data.reference, step=options.step, n_folds=options.folds, n_boot=options.n_boot, seed=options.seed,
                resample=options.resample,
            )
            calibration.stats["rater_group"] = calibration_group
            pairs.loc[scored, "CM_w"] = cm_weighted(pairs.loc[scored, "m_sem"].to_numpy(),
                                                    pairs.loc[scored, "m_style"].to_numpy(),
                                                    calibration.chosen_w, calibration.x_ref)
            metrics.append("CM_w")
        except CpdmError as exc:
            notes.append(f"calibration left out: {exc}")
        pairs["-m_sem"] = -pairs["m_sem"]
        pairs["-m_style"] = -pairs["m_style"]
        metrics += ["-m_sem", "-m_style"]

    human_columns = {group: f"human_{group}" for group in groups}
    correlations = correlation_table(pairs, metrics, human_columns, n_boot=options.n_boot, seed=options.seed,
                                     resample=options.resample) \
        if metrics else pd.DataFrame(columns=["group", "metric", "method", "r", "ci_low", "ci_high", "n"])
    ceiling = pd.DataFrame([
        {"group": group, **split_half_ceiling(by_group[group][by_group[group]["question"] == options.target],
                                              seed=options.seed, n_boot=options.n_boot,
                                              resample=options.resample)}
        for group in groups
    ])

    variants = None
    if pairs["variant"].notna().any():
        raw_copy = {group: data_module.human_scores(by_group[group], options.target) for group in groups}
        metric = "CM" if "CM" in pairs else None
        if metric is None:
            pairs_for_table = pairs.assign(CM=np.nan)
            metric = "CM"
        else:
            pairs_for_table = pairs
        variants = variant_benchmark(pairs_for_table, raw_copy, data.copy_threshold(options.target), metric=metric,
                                     n_boot=options.n_boot, seed=options.seed, resample=options.resample,
                                     also=("release_score",))

    comparisons = compare_questions(data, options, notes) if data.backbones is not None else []
    combinations = None
    if data.backbones is not None:
        combinations = compare_loaded(ws, data, by_group, options.target, options)
        notes += combinations.notes if combinations is not None else []

    side_by_side = None
    if calibration is not None:
        try:
            side_by_side = weights_side_by_side(ws, data.campaign_id, options.target,
                                                calibration.stats["rater_group"], options, this_result=calibration)
        except CpdmError as exc:
            notes.append(f"w from the 2AFC campaign over the same pairs left out: {exc}")
    return Analysis(data, options, groups, pairs, metrics, x_ref, x_ref_source, agreement, correlations, ceiling,
                    calibration, variants, notes, comparisons, combinations=combinations, side_by_side=side_by_side)


def campaign_group_comparisons(ws, campaign: str, options: AnalysisOptions | None = None):
    """(comparisons, notes): artists' w against lay raters' w on every question of a campaign."""
    options = options or AnalysisOptions()
    if is_2afc(ws, campaign):
        from cpdm.analysis.two_afc_report import compare_2afc_questions, load_2afc_campaign

        data = load_2afc_campaign(ws, campaign, options)
    else:
        data = load_campaign(ws, campaign, options)
    notes: list[str] = []
    if data.backbones is None:
        raise CpdmError(f"campaign {campaign!r} has no metric scores; run `cpdm score` first")
    if data.kind == "2afc":
        return compare_2afc_questions(data, options, notes), notes
    return compare_questions(data, options, notes), notes


def compare_questions(data: CampaignData, options: AnalysisOptions, notes: list[str]) -> list[GroupComparison]:
    """Artists' w against lay raters' w for every protocol question both groups answered (see groups.py)."""
    by_group = data_module.split_groups(data.ratings, COMPARED_GROUPS)
    if any(len(frame) == 0 for frame in by_group.values()):
        return []
    comparisons = []
    for question in data.questions:
        pairs = data.pairs
        for group, frame in by_group.items():
            scores = data_module.human_scores(frame, question, zscore=options.zscore)
            pairs = pairs.merge(scores[["pair", "human"]].rename(columns={"human": f"human_{group}"}), on="pair",
                                how="left")
        try:
            comparisons.append(compare_groups(pairs, {g: f"human_{g}" for g in COMPARED_GROUPS}, data.reference,
                                              question=question, step=options.step, n_boot=options.n_boot,
                                              seed=options.seed, resample=options.resample))
        except CpdmError as exc:
            notes.append(f"artists vs lay on '{question}' left out: {exc}")
    return comparisons


def compare_campaign_combinations(ws, campaign: str, target: str = DEFAULT_TARGET, options=None, groups=None):
    """The campaign's backbone combinations side by side (:mod:`cpdm.analysis.combinations`), or None if only one."""
    from dataclasses import replace

    options = options or AnalysisOptions()
    if is_2afc(ws, campaign):
        from cpdm.analysis.combinations import paper_combination
        from cpdm.analysis.two_afc_report import compare_2afc_combinations, load_2afc_campaign

        options = replace(options, target=target, groups=tuple(groups or options.groups))
        data = load_2afc_campaign(ws, campaign, options)
        table = compare_2afc_combinations(ws, data, options)
        if table is None:
            return None
        paper = paper_combination([(s, t) for s, t, _ in data_module.scored_backbones(ws, data.campaign_id)])
        return CombinationComparison(table, paper, options.n_boot)
    data = load_campaign(ws, campaign, options)
    by_group = data_module.split_groups(data.ratings, list(groups or options.groups))
    return compare_loaded(ws, data, by_group, target, options)



def calibrate_campaign(
    ws,
    campaign: str,
    target: str = DEFAULT_TARGET,
    group: str = DEFAULT_CALIBRATION_GROUP,
    options: AnalysisOptions | None = None,
    record: bool = True,
):
    """Calibrate w on one campaign, target question and rater group; returns (CalibrationResult, Weights).

    With ``record`` the result is also stored in the workspace's
    ``calibrations`` table.
    """
    from cpdm.metric import Weights

    options = options or AnalysisOptions()
    if is_2afc(ws, campaign):
        from cpdm.analysis.two_afc_report import calibrate_2afc_campaign

        result, weights = calibrate_2afc_campaign(ws, campaign, target=target, group=group, options=options)
        if record:
            record_calibration(ws, weights_campaign_id(ws, campaign), weights)
        return result, weights
    data = load_campaign(ws, campaign, options)
    check_target(data, target)
    data_module.check_group(group)
    group_ratings = data_module.select_group(data.ratings, group)
    if len(group_ratings) == 0:
        raise CpdmError(f"no usable ratings from the {group} group in campaign {campaign!r}")
    if data.backbones is None:
        raise CpdmError(f"campaign {campaign!r} has no metric scores; run `cpdm score` first")
    target_ratings = group_ratings[group_ratings["question"] == target]
    scores = data_module.human_scores(target_ratings, target, zscore=options.zscore)
    pairs = data.pairs.merge(scores, on="pair", how="inner")
    result = calibrate(pairs, data.reference, step=options.step, n_folds=options.folds, n_boot=options.n_boot,
                       seed=options.seed, resample=options.resample)
    used_pairs = set(pairs.dropna(subset=["m_sem", "m_style", "human"])["pair"])
    used = target_ratings[target_ratings["pair"].isin(used_pairs)]
    result.stats["rater_group"] = group
    result.stats["zscore"] = options.zscore
    result.stats["include_flagged"] = options.include_flagged
    result.stats["include_simulated"] = options.include_simulated
    result.stats["campaign"] = campaign
    result.stats["curve"] = result.curve[["w", "rho_oof", "ci_low", "ci_high"]].to_dict(orient="list")
    spreads = result.spreads
    weights = Weights(
        w=float(result.chosen_w),
        x_ref=float(result.x_ref),
        semantic=data.backbones[0],
        style=data.backbones[1],
        w_std=result.chosen_w_std if spreads else None,
        log_sd_sem=spreads.sem if spreads else None,
        log_sd_style=spreads.style if spreads else None,
        target=target,
        rater_group=group,
        stats=json_safe(result.stats),
        n_pairs=int(result.n_pairs),
        n_raters=int(used["rater"].nunique()),
        n_ratings=int(len(used)),
        ratings_sha256=data_module.ratings_sha256(used),
        created_at=format_time(utc_now()),
    )
    if record:
        record_calibration(ws, data.campaign_id, weights)
    return result, weights


def weights_campaign_id(ws, campaign: str) -> int:
    """The id of the campaign a calibration is recorded against (a clear error for an unknown name)."""
    from cpdm.rating.campaigns import campaign_id_by_name

    return campaign_id_by_name(ws, campaign)


def calibration_choices(ws, campaign_id: int) -> tuple[list[str], list[str]]:
    """The target questions and rater groups a campaign offers: its protocol's questions (then any other
    question its ratings hold), and the groups its overlap asks ratings from or whose raters rated it, then "all".
    """
    from cpdm.rating.campaigns import get_campaign

    campaign = get_campaign(ws, campaign_id)
    if campaign.protocol.kind == "2afc":
        from cpdm.analysis.two_afc_report import calibration_choices_2afc

        return calibration_choices_2afc(ws, campaign_id)
    rated = ws.conn.execute(
        "SELECT DISTINCT r.question, ra.role FROM ratings r JOIN raters ra ON ra.id = r.rater WHERE r.campaign = ?",
        (campaign_id,)).fetchall()
    questions = list(dict.fromkeys([*campaign.protocol.question_ids, *(question for question, _ in rated)]))
    roles = set(campaign.overlap) | {role for _, role in rated}
    groups = [group for group, members in data_module.GROUPS.items()
              if members is not None and roles.intersection(members)]
    return questions, groups + ["all"]


def plan_campaign(ws, campaign: str, target: str = DEFAULT_TARGET, options: AnalysisOptions | None = None,
                  replicates: int = 200):
    """A :class:`~cpdm.analysis.planning.Plan` from a pilot campaign's scored, rated pairs on ``target``."""
    from cpdm.analysis.planning import plan_study

    options = options or AnalysisOptions()
    if is_2afc(ws, campaign):
        raise CpdmError(f"campaign {campaign!r} holds 2AFC judgments; planning from it is `cpdm plan --kind 2afc`")
    data = load_campaign(ws, campaign, options)
    check_target(data, target)
    if data.backbones is None:
        raise CpdmError(f"campaign {campaign!r} has no metric scores; run `cpdm score` first")
    ratings = data.ratings[data.ratings["question"] == target]
    by_group = data_module.split_groups(ratings, COMPARED_GROUPS)
    grouped = pd.concat([frame.assign(group=group) for group, frame in by_group.items()], ignore_index=True)
    return plan_study(data.pairs, grouped[["pair", "group", "value"]], data.reference, scale=data.scale(target),
                      replicates=replicates, step=options.step, seed=options.seed)


def record_calibration(ws, campaign_id: int, weights) -> int:
    """Store a calibration in the workspace's ``calibrations`` table (stats = the whole weights document)."""
    import json

    with ws.transaction() as conn:
        return conn.execute(
            "INSERT INTO calibrations (campaign, target, rater_group, w, ref_scale, stats) VALUES (?, ?, ?, ?, ?, ?)",
            (campaign_id, weights.target, weights.rater_group, weights.w, weights.x_ref, json.dumps(weights.to_dict())),
        ).lastrowid


def campaign_fingerprint(ws, campaign: str) -> tuple:
    """Changes whenever the campaign's ratings, raters' flags or scores change (a cache key for pages)."""
    ratings = ws.conn.execute(
        "SELECT COUNT(*), MAX(r.id), TOTAL(r.value) FROM ratings r JOIN campaigns c ON c.id = r.campaign "
        "WHERE c.name = ?", (campaign,)).fetchone()
    judgments = ws.conn.execute(
        "SELECT COUNT(*), MAX(j.id), COUNT(j.answer) FROM judgments j JOIN campaigns c ON c.id = j.campaign "
        "WHERE c.name = ?", (campaign,)).fetchone()
    flags = ws.conn.execute("SELECT TOTAL(flagged), COUNT(*) FROM raters").fetchone()
    scores = ws.conn.execute("SELECT COUNT(*), MAX(scored_at) FROM scores").fetchone()
    return (campaign, *ratings, *judgments, *flags, *scores)


# --- Both kinds of judgment over the same pairs -----------------------------------------------------------------

SIDE_BY_SIDE_COLUMNS = ["judgment_kind", "campaign", "group", "w", "w_ci_low", "w_ci_high", "w_std", "w_std_ci_low",
                        "w_std_ci_high", "statistic", "value", "ci_low", "ci_high", "units"]


def companion_campaign(ws, campaign_id: int) -> tuple[int, str] | None:
    """(id, name) of the campaign of the other kind that covers the same normal pairs, or None.

    For a rating campaign, a 2afc campaign; for a 2afc campaign, a rating
    one, with answers (not only skips). "The same pairs": it holds at least
    half of this campaign's normal pairs; among several, the one sharing the
    most (then the newest).
    """
    from cpdm.analysis.judgments import campaign_kind

    kind = campaign_kind(ws, campaign_id)
    other = "rating" if kind == "2afc" else "2afc"
    rows = ws.conn.execute(
        "SELECT c.id, c.name, COUNT(*) FROM campaigns c "
        "JOIN campaign_pairs cp ON cp.campaign = c.id "
        "JOIN campaign_pairs mine ON mine.pair = cp.pair AND mine.campaign = ? "
        "JOIN pairs p ON p.id = cp.pair AND p.kind = 'normal' "
        "WHERE c.kind = ? AND c.id != ? AND (EXISTS (SELECT 1 FROM ratings r WHERE r.campaign = c.id AND "
        "r.value IS NOT NULL) OR EXISTS (SELECT 1 FROM judgments j WHERE j.campaign = c.id AND j.answer IS NOT NULL)) "
        "GROUP BY c.id ORDER BY COUNT(*) DESC, c.id DESC",
        (campaign_id, other, campaign_id)).fetchall()
    (mine,) = ws.conn.execute(
        "SELECT COUNT(*) FROM campaign_pairs cp JOIN pairs p ON p.id = cp.pair AND p.kind = 'normal' "
        "WHERE cp.campaign = ?", (campaign_id,)).fetchone()
    if not rows or mine == 0 or rows[0][2] * 2 < mine:
        return None
    return rows[0][0], rows[0][1]


def _side_row(kind: str, campaign: str, group: str, result: CalibrationResult) -> dict:
    first = result.summary.iloc[0]
    w_std_low, w_std_high = result.w_std_ci
    return {"judgment_kind": kind, "campaign": campaign, "group": group, "w": result.chosen_w,
            "w_ci_low": result.w_ci[0], "w_ci_high": result.w_ci[1], "w_std": result.chosen_w_std,
            "w_std_ci_low": w_std_low, "w_std_ci_high": w_std_high,
            "statistic": f"out-of-fold {result.statistic_label}", "value": first[result.value_column],
            "ci_low": first["ci_low"], "ci_high": first["ci_high"],
            "units": f"{result.n_pairs} {'triplets' if result.statistic == '2afc' else 'pairs'}"}


def weights_side_by_side(ws, campaign_id: int, target: str, group: str, options: AnalysisOptions,
                         this_result: CalibrationResult | None = None) -> pd.DataFrame | None:
    """This campaign's w beside the w of its companion of the other kind (:func:`companion_campaign`), or None.

    Both calibrated on ``target`` by ``group`` with the same options;
    ``this_result``, when given, is this campaign's calibration (not redone).
    """
    from cpdm.analysis.judgments import campaign_kind
    from cpdm.rating.campaigns import get_campaign

    companion = companion_campaign(ws, campaign_id)
    if companion is None:
        return None
    name = get_campaign(ws, campaign_id).name
    kind = campaign_kind(ws, campaign_id)
    if this_result is None:
        this_result, _ = calibrate_campaign(ws, name, target=target, group=group, options=options, record=False)
    other_result, _ = calibrate_campaign(ws, companion[1], target=target, group=group, options=options, record=False)
    rows = [_side_row(kind, name, group, this_result),
            _side_row("2afc" if kind == "rating" else "rating", companion[1], group, other_result)]
    return pd.DataFrame(rows, columns=SIDE_BY_SIDE_COLUMNS)


def side_by_side_note(table: pd.DataFrame | None) -> list[str]:
    """One line per row of :func:`weights_side_by_side`: kind, campaign, w [interval], w_std [interval]."""
    if table is None:
        return []
    lines = []
    for row in table.itertuples(index=False):
        lines.append(f"{row.judgment_kind} campaign {row.campaign!r} ({row.group}): w = {row.w:g} "
                     f"[{row.w_ci_low:.3g}, {row.w_ci_high:.3g}], w_std = {row.w_std:.3f} "
                     f"[{row.w_std_ci_low:.3f}, {row.w_std_ci_high:.3f}]; {row.statistic} {row.value:.3f} "
                     f"({row.units})")
    return lines
