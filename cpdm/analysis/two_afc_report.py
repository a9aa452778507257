"""The whole analysis of a comparative (2AFC) campaign, and weights calibrated on its judgments.

Loading (:func:`load_2afc_campaign`), computing (:func:`run_2afc_analysis`,
:func:`calibrate_2afc_campaign`); Markdown is
:func:`cpdm.analysis.report_markdown.two_afc_markdown`, files
:mod:`cpdm.analysis.report_files`. :func:`cpdm.analysis.campaign_report.run_analysis`
and ``calibrate_campaign`` come here for a 2afc campaign, so pages and
commands ask one function for either kind.

What it holds, per rater group (flagged raters out by default, as for ratings):

- agreement: Krippendorff's alpha (nominal) on the choices, per question;
- the split-half human agreement, the ceiling a metric can reach;
- the 2AFC score of CM at the paper's w = 0.5, of CM_w at the calibrated w,
  of the two distances alone, each with an interval over anchors;
- the calibration of w by the out-of-fold 2AFC score, and artists' w
  against lay raters' w (:mod:`cpdm.analysis.two_afc_calibration`);
- Bradley–Terry strengths per variant across anchors and per generation
  within each anchor (:mod:`cpdm.analysis.bradley_terry`);
- each backbone combination scored, side by side;
- when a rating campaign covers the same pairs, its w beside this one's.

Why one file of this length: it is the 2AFC twin of the rating report's
computing step, one function per section of the report, each reading the
same loaded judgments and groups; apart they would pass that state around.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

from cpdm.analysis import data as data_module
from cpdm.analysis import judgments as judgments_module
from cpdm.analysis.calibration import CalibrationResult
from cpdm.analysis.campaign_data import AnalysisOptions, groups_with_answers, paper_scale, protocol_questions
from cpdm.analysis.combinations import paper_combination
from cpdm.analysis.data import DEFAULT_TARGET
from cpdm.analysis.groups import COMPARED_GROUPS, GroupComparison
from cpdm.analysis.resampling import make_resamples
from cpdm.analysis.two_afc import agreement_rows, mean_score, score_table, split_half_agreement, two_afc_scores
from cpdm.analysis.two_afc_calibration import calibrate_2afc, compare_groups_2afc, usable_triplets
from cpdm.errors import CpdmError

PAIR_COLUMNS = ["m_sem", "m_style"]
GENERATION_BOOT = 100  # resamples (of each anchor's triplets) for the per-generation strengths' intervals


@dataclass
class TwoAfcData:
    """The judgments, triplets and pairs of one 2afc campaign, filtered as the options say."""

    campaign: str
    campaign_id: int
    design: str | None
    all_judgments: pd.DataFrame
    judgments: pd.DataFrame
    pairs: pd.DataFrame
    backbones: tuple[str, str] | None
    reference: pd.DataFrame | None
    questions: list[str]
    counts: dict

    kind = "2afc"


def load_2afc_campaign(ws, campaign: str, options: AnalysisOptions) -> TwoAfcData:
    """A 2afc campaign's judgments and pairs by name; a clear error for another kind or nothing judged."""
    from cpdm.analysis.agreement import check_level
    from cpdm.analysis.resampling import check_resample
    from cpdm.rating.campaigns import campaign_id_by_name

    campaign_id = campaign_id_by_name(ws, campaign)
    check_level(options.level)
    check_resample(options.resample)
    for group in (*options.groups, options.calibration_group):
        data_module.check_group(group)
    kind, design, protocol_text = ws.conn.execute(
        "SELECT kind, design, protocol FROM campaigns WHERE id = ?", (campaign_id,)).fetchone()
    if kind != "2afc":
        raise CpdmError(f"campaign {campaign!r} rates pairs, it has no 2AFC judgments")
    all_judgments = judgments_module.load_judgments(ws, campaign_id)
    if all_judgments["chosen"].notna().sum() == 0:
        raise CpdmError(f"campaign {campaign!r} has no judgments yet (invite raters, or add simulated ones for a demo)")
    judgments = judgments_module.analysis_judgments(all_judgments, options.include_flagged, options.include_simulated)
    normal = all_judgments[all_judgments["kind"] == "normal"]
    counts = {
        "judgments": int(len(all_judgments)),
        "answered_normal": int(normal["chosen"].notna().sum()),
        "skipped": int(all_judgments["chosen"].isna().sum()),
        "cant_tell": int((normal["chosen"] == "cant_tell").sum()),
        "flagged_raters": int(all_judgments.loc[all_judgments["flagged"], "rater"].nunique()),
        "excluded_flagged": 0 if options.include_flagged else int((normal["flagged"] & normal["chosen"].notna()).sum()),
        "simulated_raters": int(all_judgments.loc[all_judgments["simulated"], "rater"].nunique()),
        "used": int(len(judgments)),
        "raters_used": int(judgments["rater"].nunique()),
        "triplets_judged": int(judgments["triplet"].nunique()),
    }
    if len(judgments) == 0:
        raise CpdmError(
            f"campaign {campaign!r} has no usable judgments of normal triplets "
            f"({counts['excluded_flagged']} excluded from flagged raters; --include-flagged keeps them)")
    backbones = data_module.choose_backbones(ws, campaign_id, options.semantic, options.style)
    pairs = data_module.pair_table(ws, campaign_id, backbones)
    reference = data_module.reference_distances(ws, backbones)
    questions = judgments_module.judgments_questions(all_judgments, list(protocol_questions(protocol_text)))
    return TwoAfcData(campaign, campaign_id, design, all_judgments, judgments, pairs, backbones, reference, questions,
                      counts)


def group_triplets(data: TwoAfcData, group: str, question: str, pairs: pd.DataFrame | None = None) -> pd.DataFrame:
    """One group's triplets on ``question`` (p from its judgments) with both pairs' m_sem, m_style."""
    from cpdm.analysis.two_afc import with_pair_values

    triplets = judgments_module.triplet_choices(data_module.select_group(data.judgments, group), question)
    return with_pair_values(triplets, data.pairs if pairs is None else pairs, PAIR_COLUMNS)


@dataclass
class TwoAfcAnalysis:
    """Everything one analysis of a 2afc campaign produced (see the module docstring)."""

    data: TwoAfcData
    options: AnalysisOptions
    groups: list[str]
    triplets: pd.DataFrame               # the target question's triplets: p per group, the pairs' metrics
    agreement: pd.DataFrame
    ceiling: pd.DataFrame
    scores: pd.DataFrame                 # group, metric, score, ci_low, ci_high, triplets, anchors, ties
    calibration: CalibrationResult | None
    strengths: pd.DataFrame | None       # Bradley–Terry per variant (group column)
    generation_strengths: pd.DataFrame | None
    group_comparisons: list[GroupComparison] = field(default_factory=list)
    combinations: pd.DataFrame | None = None
    side_by_side: pd.DataFrame | None = None  # this campaign's w beside a rating campaign's over the same pairs
    notes: list[str] = field(default_factory=list)
    _png: dict = field(default_factory=dict, repr=False)

    kind = "2afc"

    def figure_names(self) -> list[str]:
        names = ["scores"] if len(self.scores) else []
        if self.calibration is not None:
            names.append("calibration")
        names += [f"groups_{comparison.question}" for comparison in self.group_comparisons]
        if self.strengths is not None and len(self.strengths):
            names.append("strengths")
        return names

    def figure(self, name: str):
        from cpdm.analysis.plots import calibration_figure, group_curves_figure, strengths_figure, two_afc_scores_figure

        if name == "scores":
            return two_afc_scores_figure(self.scores, self.ceiling)
        if name == "calibration":
            return calibration_figure(self.calibration.curve, self.calibration.chosen_w, spreads=self.calibration.spreads)
        if name == "strengths":
            return strengths_figure(self.strengths)
        for comparison in self.group_comparisons:
            if name == f"groups_{comparison.question}":
                return group_curves_figure(comparison)
        raise KeyError(name)

    def png(self, name: str) -> bytes:
        """One figure as PNG bytes, rendered once and kept."""
        from cpdm.analysis.plots import figure_png

        if name not in self._png:
            self._png[name] = figure_png(self.figure(name))
        return self._png[name]

    def group_table(self) -> pd.DataFrame:
        return pd.DataFrame([comparison.row() for comparison in self.group_comparisons])

    def tables(self) -> dict[str, pd.DataFrame]:
        tables = {"agreement": self.agreement, "human_ceiling": self.ceiling, "two_afc_scores": self.scores,
                  "triplets": self.triplets}
        if self.calibration is not None:
            tables["calibration_curve"] = self.calibration.curve
            tables["calibration_summary"] = self.calibration.summary
        if self.group_comparisons:
            tables["group_comparison"] = self.group_table()
        if self.strengths is not None:
            tables["bradley_terry_variants"] = self.strengths
        if self.generation_strengths is not None:
            tables["bradley_terry_generations"] = self.generation_strengths
        if self.combinations is not None:
            tables["combinations"] = self.combinations
        if self.side_by_side is not None:
            tables["w_by_judgment_kind"] = self.side_by_side
        return tables

    def markdown(self) -> str:
        from cpdm.analysis.report_markdown import two_afc_markdown

        return two_afc_markdown(self)


def _metric_columns(pairs: pd.DataFrame, x_ref: float | None, calibration: CalibrationResult | None) -> dict:
    """Metric columns on ``pairs`` (higher = more of a copy) and their labels in the score table."""
    from cpdm.metric import cm_paper, cm_weighted

    metrics = {}
    scored = pairs["m_sem"].notna() & pairs["m_style"].notna()
    if x_ref is not None:
        pairs.loc[scored, "CM"] = cm_paper(pairs.loc[scored, "m_sem"].to_numpy(), pairs.loc[scored, "m_style"].to_numpy(),
                                           x_ref)
        metrics["CM (paper w=0.5)"] = "CM"
    if calibration is not None:
        pairs.loc[scored, "CM_w"] = cm_weighted(pairs.loc[scored, "m_sem"].to_numpy(),
                                                pairs.loc[scored, "m_style"].to_numpy(), calibration.chosen_w,
                                                calibration.x_ref)
        metrics[f"CM_w (w={calibration.chosen_w:g}, calibrated)"] = "CM_w"
    pairs["-m_sem"] = -pairs["m_sem"]
    pairs["-m_style"] = -pairs["m_style"]
    metrics["-m_sem (semantic only)"] = "-m_sem"
    metrics["-m_style (style only)"] = "-m_style"
    return metrics


def run_2afc_analysis(ws, campaign: str, options: AnalysisOptions | None = None) -> TwoAfcAnalysis:
    """Agreement, human ceiling, 2AFC scores, calibration, Bradley–Terry strengths of a 2afc campaign."""
    from cpdm.analysis.bradley_terry import generation_strengths, variant_strengths

    options = options or AnalysisOptions()
    data = load_2afc_campaign(ws, campaign, options)
    target = options.target
    if target not in data.questions:
        raise CpdmError(f"no judgments for question {target!r} in campaign {data.campaign!r} "
                        f"(questions: {', '.join(data.questions)})")
    notes: list[str] = []
    if data.design == "active":
        notes.append("active design: most triplets were chosen where CM_w's order flips inside the interval of w, "
                     "so 2AFC scores and agreement describe those hard triplets, not a random sample of them")
    groups = groups_with_answers(data.judgments, "judgments", data.campaign, options, notes)
    by_group = {group: data_module.select_group(data.judgments, group) for group in groups}
    agreement = agreement_rows(data.judgments, by_group, data.questions, n_boot=options.n_boot, seed=options.seed,
                               resample=options.resample)
    ceiling = pd.DataFrame([{"group": group, **split_half_agreement(by_group[group], target, seed=options.seed,
                                                                     n_boot=options.n_boot, resample=options.resample)}
                            for group in groups])
    pairs = data.pairs.copy()
    triplets_by_group = {group: group_triplets(data, group, target) for group in groups}

    calibration, x_ref = None, None
    comparisons: list[GroupComparison] = []
    combinations = None
    if data.backbones is None:
        notes.append("no metric scores for this campaign's pairs (run `cpdm score`); 2AFC scores and calibration "
                     "are left out")
    else:
        x_ref, _ = paper_scale(pairs, data.reference)
        calibration_group = options.calibration_group if options.calibration_group in groups else groups[0]
        if calibration_group != options.calibration_group:
            notes.append(f"calibrated on the {calibration_group} group ({options.calibration_group} has no judgments)")
        try:
            calibration = calibrate_2afc(triplets_by_group[calibration_group], data.reference, step=options.step,
                                         n_folds=options.folds, n_boot=options.n_boot, seed=options.seed,
                                         resample=options.resample)
            calibration.stats["rater_group"] = calibration_group
        except CpdmError as exc:
            notes.append(f"calibration left out: {exc}")
        comparisons = compare_2afc_questions(data, options, notes)
        try:
            combinations = compare_2afc_combinations(ws, data, options)
        except CpdmError as exc:
            notes.append(f"backbone combinations left out: {exc}")

    metrics = _metric_columns(pairs, x_ref, calibration) if data.backbones is not None else {}
    score_frames = []
    for group in groups:
        if metrics:
            table = score_table(triplets_by_group[group], pairs, metrics, n_boot=options.n_boot, seed=options.seed,
                                resample=options.resample)
            score_frames.append(table.assign(group=group))
    scores = (pd.concat(score_frames, ignore_index=True) if score_frames else
              pd.DataFrame(columns=["metric", "score", "ci_low", "ci_high", "triplets", "anchors", "ties", "interval",
                                    "group"]))
    scores = scores[["group"] + [c for c in scores.columns if c != "group"]]

    strengths, generations = None, None
    frames = []
    for group in groups:
        try:
            frames.append(variant_strengths(triplets_by_group[group], n_boot=options.n_boot, seed=options.seed,
                                            resample=options.resample).assign(group=group))
        except CpdmError as exc:
            notes.append(f"Bradley–Terry strengths of variants ({group}) left out: {exc}")
    if frames:
        strengths = pd.concat(frames, ignore_index=True)
        strengths = strengths[["group"] + [c for c in strengths.columns if c != "group"]]
    everyone = "all" if "all" in groups else groups[0]
    # One fit per anchor and resample: fewer resamples than elsewhere keep a large campaign's analysis quick.
    generations = generation_strengths(triplets_by_group[everyone], n_boot=min(options.n_boot, GENERATION_BOOT),
                                       seed=options.seed)
    generations.insert(0, "group", everyone)

    triplets = triplets_by_group[everyone].copy()
    for group in groups:
        triplets[f"p_{group}"] = triplets["triplet"].map(triplets_by_group[group].set_index("triplet")["p"])
        triplets[f"n_{group}"] = triplets["triplet"].map(triplets_by_group[group].set_index("triplet")["n"])
    # The rating campaign over the same pairs, if any, is laid beside by campaign_report.run_analysis.
    return TwoAfcAnalysis(data, options, groups, triplets, agreement, ceiling, scores, calibration, strengths,
                          generations, comparisons, combinations, None, notes)


def compare_2afc_questions(data: TwoAfcData, options: AnalysisOptions, notes: list[str]) -> list[GroupComparison]:
    """Artists' w against lay raters' w, by 2AFC score, for every question both groups answered."""
    if any(len(data_module.select_group(data.judgments, group)) == 0 for group in COMPARED_GROUPS):
        return []
    comparisons = []
    for question in data.questions:
        try:
            by_group = {group: group_triplets(data, group, question) for group in COMPARED_GROUPS}
            comparisons.append(compare_groups_2afc(by_group, data.reference, question=question, step=options.step,
                                                   n_boot=options.n_boot, seed=options.seed,
                                                   resample=options.resample))
        except CpdmError as exc:
            notes.append(f"artists vs lay on '{question}' left out: {exc}")
    return comparisons


COMBINATION_COLUMNS = ["group", "semantic", "style", "paper", "w_std", "w", "paper_w_std", "score_paper_w",
                       "paper_w_ci_low", "paper_w_ci_high", "score_oof", "ci_low", "ci_high", "triplets", "anchors"]


def compare_2afc_combinations(ws, data: TwoAfcData, options: AnalysisOptions) -> pd.DataFrame | None:
    """Every backbone combination that scored the campaign, on the calibration group's triplets: its calibrated
    w, w_std, and the 2AFC score of CM at the paper's w and (out of fold) at its calibrated w, with intervals over
    one shared set of anchor resamples. None when only one combination scored the pairs."""
    from cpdm.metric import cm_paper, reference_scale

    combinations = [(s, t) for s, t, _ in data_module.scored_backbones(ws, data.campaign_id)]
    if len(combinations) < 2:
        return None
    paper = paper_combination(combinations)
    group = options.calibration_group if options.calibration_group in options.groups else options.groups[0]
    tables = {c: data_module.pair_table(ws, data.campaign_id, c) for c in combinations}
    triplets = {c: usable_triplets(group_triplets(data, group, options.target, tables[c])) for c in combinations}
    common = set.intersection(*(set(frame["triplet"]) for frame in triplets.values()))
    if not common:
        raise CpdmError("no triplet has both pairs scored by every combination")
    rows = []
    resamples = None
    for combination in combinations:
        frame = triplets[combination]
        frame = frame[frame["triplet"].isin(common)].sort_values("triplet").reset_index(drop=True)
        if resamples is None and options.n_boot > 0:
            resamples = make_resamples(frame["anchor"].to_numpy(), options.n_boot, options.seed + 2, options.resample)
        reference = data_module.reference_distances(ws, combination)
        result = calibrate_2afc(frame, reference, step=options.step, n_folds=options.folds, n_boot=0, seed=options.seed)
        oof = mean_score(result.out_of_fold.to_numpy(), frame["anchor"].to_numpy(), resamples=resamples)
        scale_pairs = reference if reference is not None else tables[combination].dropna(subset=PAIR_COLUMNS)
        x_ref = reference_scale(scale_pairs["m_sem"], scale_pairs["m_style"])
        paper_scores = two_afc_scores(frame["p"], cm_paper(frame["first_m_sem"], frame["first_m_style"], x_ref),
                                      cm_paper(frame["second_m_sem"], frame["second_m_style"], x_ref))
        at_paper = mean_score(paper_scores, frame["anchor"].to_numpy(), resamples=resamples)
        spreads = result.spreads
        rows.append({"group": group, "semantic": combination[0], "style": combination[1],
                     "paper": combination == paper, "w_std": result.chosen_w_std, "w": result.chosen_w,
                     "paper_w_std": float(spreads.w_std(0.5)) if spreads else float("nan"),
                     "score_paper_w": at_paper[0], "paper_w_ci_low": at_paper[1], "paper_w_ci_high": at_paper[2],
                     "score_oof": oof[0], "ci_low": oof[1], "ci_high": oof[2], "triplets": len(frame),
                     "anchors": int(frame["anchor"].nunique())})
    return pd.DataFrame(rows, columns=COMBINATION_COLUMNS)


def calibrate_2afc_campaign(ws, campaign: str, target: str = DEFAULT_TARGET, group: str = "artists",
                            options: AnalysisOptions | None = None):
    """Calibrate w on a 2afc campaign's judgments of ``target`` by one rater group; (CalibrationResult, Weights).

    The weights say ``judgment_kind = "2afc"``; their ``n_ratings`` counts
    the judgments used and ``ratings_sha256`` hashes them.
    """
    from cpdm.analysis.report_files import json_safe
    from cpdm.metric import Weights
    from cpdm.store.time import format_time, utc_now

    options = options or AnalysisOptions()
    data = load_2afc_campaign(ws, campaign, options)
    if target not in data.questions:
        raise CpdmError(f"no judgments for question {target!r} in campaign {campaign!r} "
                        f"(questions: {', '.join(data.questions)})")
    data_module.check_group(group)
    judged = data_module.select_group(data.judgments, group)
    if len(judged) == 0:
        raise CpdmError(f"no usable judgments from the {group} group in campaign {campaign!r}")
    if data.backbones is None:
        raise CpdmError(f"campaign {campaign!r} has no metric scores; run `cpdm score` first")
    triplets = group_triplets(data, group, target)
    result = calibrate_2afc(triplets, data.reference, step=options.step, n_folds=options.folds, n_boot=options.n_boot,
                            seed=options.seed, resample=options.resample)
    used_triplets = set(usable_triplets(triplets)["triplet"])
    used = judged[(judged["question"] == target) & judged["triplet"].isin(used_triplets)]
    result.stats.update({"rater_group": group, "include_flagged": options.include_flagged,
                         "include_simulated": options.include_simulated, "campaign": campaign,
                         "n_triplets": int(result.n_pairs),
                         "curve": result.curve[["w", "score_oof", "ci_low", "ci_high"]].to_dict(orient="list")})
    spreads = result.spreads
    weights = Weights(
        w=float(result.chosen_w), x_ref=float(result.x_ref), semantic=data.backbones[0], style=data.backbones[1],
        w_std=result.chosen_w_std if spreads else None, log_sd_sem=spreads.sem if spreads else None,
        log_sd_style=spreads.style if spreads else None, target=target, rater_group=group,
        stats=json_safe(result.stats), n_pairs=int(len(set(used["first_pair"]) | set(used["second_pair"]))),
        n_raters=int(used["rater"].nunique()), n_ratings=int(len(used)),
        ratings_sha256=judgments_module.judgments_sha256(used), created_at=format_time(utc_now()),
        judgment_kind="2afc",
    )
    return result, weights


def calibration_choices_2afc(ws, campaign_id: int) -> tuple[list[str], list[str]]:
    """The questions and rater groups a 2afc campaign offers (as calibration_choices for ratings)."""
    from cpdm.rating.campaigns import get_campaign

    campaign = get_campaign(ws, campaign_id)
    judged = ws.conn.execute(
        "SELECT DISTINCT j.question, ra.role FROM judgments j JOIN raters ra ON ra.id = j.rater WHERE j.campaign = ?",
        (campaign_id,)).fetchall()
    questions = list(dict.fromkeys([*campaign.protocol.question_ids, *(question for question, _ in judged)]))
    roles = set(campaign.overlap) | {role for _, role in judged}
    groups = [group for group, members in data_module.GROUPS.items()
              if members is not None and roles.intersection(members)]
    return questions, groups + ["all"]


def strengths_for_variants(ws, variants, options: AnalysisOptions | None = None,
                           target: str = DEFAULT_TARGET) -> tuple[str, pd.DataFrame] | None:
    """(campaign name, Bradley–Terry strengths per variant) from the 2afc campaign covering most of ``variants``
    (:func:`cpdm.analysis.bradley_terry.judged_variant_triplets`), or None."""
    from cpdm.analysis.bradley_terry import judged_variant_triplets, variant_strengths

    options = options or AnalysisOptions()
    found = judged_variant_triplets(ws, variants, include_flagged=options.include_flagged, question=target)
    if found is None:
        return None
    try:
        return found[0], variant_strengths(found[1], n_boot=options.n_boot, seed=options.seed,
                                           resample=options.resample)
    except CpdmError:
        return None
