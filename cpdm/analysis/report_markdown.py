"""Rendering an analysis as Markdown: the report's summary.md, and the tables inside it."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from cpdm.analysis.combinations import describe_combination

RELEASE_SCORE_NOTE = ("`release_score` = (M_sem · M_style)² per pair, the number the CPDM release reports (its mean over "
                      "pairs; no Norm, no 1 −; lower = closer to the anchor), to lay beside the paper's tables; CM is "
                      "cpdm's calibrated form of the same product.")


def markdown_table(frame: pd.DataFrame, digits: int = 3) -> str:
    """A DataFrame as a GitHub Markdown table (numbers rounded)."""
    if frame is None or len(frame) == 0:
        return "_(none)_\n"

    def cell(value) -> str:
        if isinstance(value, (float, np.floating)):
            return "" if not math.isfinite(value) else f"{value:.{digits}f}"
        return str(value)

    header = "| " + " | ".join(str(c) for c in frame.columns) + " |"
    rule = "|" + "|".join("---" for _ in frame.columns) + "|"
    body = ["| " + " | ".join(cell(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join([header, rule, *body]) + "\n"


def summary_markdown(analysis) -> str:
    """The report's short Markdown summary."""
    data, options = analysis.data, analysis.options
    counts = data.counts
    lines = [
        f"# Analysis of campaign `{data.campaign}`",
        "",
        f"- Ratings: {counts['ratings']} in all, {counts['used']} used (answered, normal pairs) from "
        f"{counts['raters_used']} raters; {counts['skipped']} skipped; "
        + (f"{counts['excluded_flagged']} from {counts['flagged_raters']} flagged raters excluded"
           if not options.include_flagged else "flagged raters included")
        + f"; {counts['simulated_raters']} simulated raters"
        + (" excluded." if not options.include_simulated else " included."),
        f"- Target question: `{options.target}`; human score = "
        + ("mean of per-rater z-scores." if options.zscore else "mean rating per pair."),
        f"- Backbones: {describe_combination(*analysis.data.backbones)}" if analysis.data.backbones
        else "- Backbones: none (no scores)",
    ]
    if analysis.x_ref is not None:
        lines.append(f"- Paper CM reference scale x_ref = {analysis.x_ref:.4g} (from {analysis.x_ref_source}).")
    if analysis.data.backbones:
        lines.append(f"- {RELEASE_SCORE_NOTE}")
    lines.append(f"- Intervals: {options.intervals()} (every interval: alpha, correlations, noise ceiling, "
                 "calibration and the benchmark by variant).")
    lines += ["", "## Agreement (Krippendorff's alpha, " + options.level + ")", "",
              markdown_table(analysis.agreement[["question", "group", "alpha", "ci_low", "ci_high", "pairs",
                                                 "pairs_excluded", "raters"]])]
    if len(analysis.correlations):
        spearman = analysis.correlations[analysis.correlations["method"] == "spearman"]
        lines += ["## Metric vs human (Spearman ρ)", "",
                  "Distances are negated (`-m_sem`, `-m_style`) so that higher means closer, like CM.", "",
                  markdown_table(spearman[["group", "metric", "r", "ci_low", "ci_high", "n"]]),
                  "Kendall τ-b and Pearson are in `tables/correlations.csv`.", ""]
    lines += ["## Noise ceiling (split-half, Spearman–Brown)", "",
              "`ceiling`: Spearman–Brown corrected split-half reliability of the mean score, i.e. how well a second "
              "panel of the same size would agree with this one (mean over random splits; `split_low`–`split_high`: "
              "the middle 95% of the splits).", "",
              "`ci_low`–`ci_high`: the sampling interval (resamples of anchors, each on its own split).", "",
              markdown_table(analysis.ceiling[["group", "split_half", "ceiling", "ci_low", "ci_high", "split_low",
                                               "split_high", "pairs"]])]
    if analysis.calibration is not None:
        cal = analysis.calibration
        lines += [
            "## Calibration of w",
            "",
            f"Chosen w = **{cal.chosen_w:g}**, 95% interval [{cal.w_ci[0]:g}, {cal.w_ci[1]:g}] (the whole choice "
            f"bootstrapped over anchors; highest ρ on all pairs; x_ref = {cal.x_ref:.4g} from {cal.x_ref_source}); "
            f"per-fold choices {', '.join(f'{w:g}' for w in cal.fold_w)}; {cal.n_folds}-fold CV grouped by anchor "
            f"over {cal.n_anchors} anchors and {cal.n_pairs} pairs; group `{cal.stats.get('rater_group')}`.",
            "",
            w_std_paragraph(cal),
            "",
            markdown_table(cal.summary),
        ]
    if analysis.group_comparisons:
        lines += ["## Artists vs lay raters: w_std and w per question", "",
                  "Each group's w chosen as calibration chooses it (on all pairs), and read as w_std (the weight on "
                  "standardised log distances: 0.5 = content and style count equally); the differences' intervals "
                  "are a paired bootstrap (the same resamples of anchors for both groups), on anchors both groups "
                  "rated.", ""]
        lines += [f"- {comparison.headline()}" for comparison in analysis.group_comparisons]
        lines += ["", markdown_table(analysis.group_table().drop(columns=["interval"]))]
    if analysis.variants is not None and len(analysis.variants):
        columns = ["variant", "pairs", "mean_CM", "mean_release_score"] + [c for c in analysis.variants.columns
                                                      if c.startswith(("mean_copy_", "share_copy_", "reduced_by_"))]
        lines += ["## Benchmark by model variant", "",
                  f"Share judged a copy: pairs whose mean `{options.target}` rating is ≥ "
                  f"{data.copy_threshold(options.target):g} (the first point above the middle of its "
                  f"{data.scale(options.target)[0]}–{data.scale(options.target)[1]} scale).", "",
                  markdown_table(analysis.variants[[c for c in columns if c in analysis.variants]])]
    if analysis.combinations is not None and len(analysis.combinations.table):
        lines += ["## Backbone combinations", "",
                  "Calibrated w_std (comparable across combinations), w, and out-of-fold Spearman ρ per (semantic, "
                  "style) combination on the pairs all of them scored; `paper_w_std`: the paper's w = 0.5 in w_std "
                  "terms for that combination; `log_sd_*`: the spreads of the log distances over its reference "
                  "pairs; `diff_vs_paper`: ρ minus the paper's combination's, with a paired bootstrap over anchors.",
                  "", markdown_table(analysis.combinations.table)]
    lines += side_by_side_lines(getattr(analysis, "side_by_side", None))
    if analysis.notes:
        lines += ["## Notes", ""] + [f"- {note}" for note in analysis.notes] + [""]
    return "\n".join(lines)


def w_std_paragraph(cal) -> str:
    """The report's lines on w_std: its value and interval, and how it converts from w."""
    if cal.spreads is None:
        return f"w_std is undefined: {cal.stats.get('w_std_undefined')}."
    low, high = cal.w_std_ci
    return (f"As a weight on the log distances standardised over the {cal.spreads_source}: "
            f"w_std = **{cal.chosen_w_std:.3f}**, 95% interval [{low:.3f}, {high:.3f}] (0.5 = content and style count "
            f"equally, whatever the backbones). Conversion: {cal.spreads.describe()}.")


def side_by_side_lines(table: pd.DataFrame | None) -> list[str]:
    """The section laying w from ratings beside w from 2AFC judgments of the same pairs (nothing without both)."""
    if table is None or len(table) == 0:
        return []
    return ["## w from ratings and from 2AFC judgments of the same pairs", "",
            "Each campaign calibrated on the same target question and rater group, with the same settings; w_std is "
            "the number to compare (0.5 = content and style count equally).", "",
            markdown_table(table), ""]


def calibration_lines(cal, unit: str = "pairs") -> list[str]:
    """The calibration section: chosen w with its interval, how it was chosen, w_std, and the summary table."""
    return [
        "## Calibration of w",
        "",
        f"Chosen w = **{cal.chosen_w:g}**, 95% interval [{cal.w_ci[0]:.3g}, {cal.w_ci[1]:.3g}] (the whole choice "
        f"bootstrapped over anchors; highest {cal.statistic_label} on all {unit}; x_ref = {cal.x_ref:.4g} from "
        f"{cal.x_ref_source}); per-fold choices {', '.join(f'{w:g}' for w in cal.fold_w)}; {cal.n_folds}-fold CV "
        f"grouped by anchor over {cal.n_anchors} anchors and {cal.n_pairs} {unit}; group "
        f"`{cal.stats.get('rater_group')}`.",
        "",
        w_std_paragraph(cal),
        "",
        markdown_table(cal.summary),
    ]


def two_afc_markdown(analysis) -> str:
    """The Markdown summary of a 2afc campaign's analysis (:class:`cpdm.analysis.two_afc_report.TwoAfcAnalysis`)."""
    data, options = analysis.data, analysis.options
    counts = data.counts
    lines = [
        f"# Analysis of 2AFC campaign `{data.campaign}`",
        "",
        f"- Design: {data.design or 'not recorded'}. Judgments: {counts['judgments']} in all, {counts['used']} used "
        f"(answered, normal triplets) from {counts['raters_used']} raters on {counts['triplets_judged']} triplets; "
        f"{counts['skipped']} skipped; {counts['cant_tell']} \"can't tell\" (half to each side); "
        + (f"{counts['excluded_flagged']} from {counts['flagged_raters']} flagged raters excluded"
           if not options.include_flagged else "flagged raters included")
        + f"; {counts['simulated_raters']} simulated raters"
        + (" excluded." if not options.include_simulated else " included."),
        f"- Target question: `{options.target}`; p = share of raters judging the first pair more of a copy.",
        f"- Backbones: {describe_combination(*data.backbones)}" if data.backbones else "- Backbones: none (no scores)",
        f"- Intervals: {options.intervals()}.",
        "",
        "## Agreement on choices (Krippendorff's alpha, nominal)",
        "",
        "First / second / can't tell as three nominal values; triplets judged once are left out and counted.",
        "",
        markdown_table(analysis.agreement[["question", "group", "alpha", "ci_low", "ci_high", "triplets",
                                           "triplets_excluded", "raters"]]),
        "## Human ceiling (split-half)",
        "",
        "One random half of each triplet's raters scored as a metric against the other half (2AFC score), "
        "averaged over splits: what a metric that judged like the raters would reach.",
        "",
        markdown_table(analysis.ceiling[["group", "agreement", "ci_low", "ci_high", "triplets", "splits"]]),
    ]
    if len(analysis.scores):
        lines += ["## 2AFC score of the metric (BAPPS)", "",
                  "Per triplet: p when the metric prefers the first pair (a higher value = more of a copy), 1 − p "
                  "when it prefers the second, 0.5 on a tie; the mean over triplets. CM_w at the calibrated w is "
                  "in-sample here; its out-of-fold score is in the calibration table.", "",
                  markdown_table(analysis.scores[["group", "metric", "score", "ci_low", "ci_high", "triplets",
                                                  "anchors", "ties"]])]
    if analysis.calibration is not None:
        lines += calibration_lines(analysis.calibration, unit="triplets")
    if analysis.group_comparisons:
        lines += ["## Artists vs lay raters: w_std and w per question", "",
                  "Each group's w chosen by its own 2AFC choices (on all triplets), read as w_std; the differences' "
                  "intervals are a paired bootstrap over the anchors both groups judged.", ""]
        lines += [f"- {comparison.headline()}" for comparison in analysis.group_comparisons]
        lines += ["", markdown_table(analysis.group_table().drop(columns=["interval"]))]
    if analysis.strengths is not None and len(analysis.strengths):
        lines += ["## Bradley–Terry strengths by variant", "",
                  "Centred log-strengths of copy-ness fitted with choix on every judgment between generations of two "
                  "variants (higher = judged more of a copy); intervals refit on every resample of anchors.", "",
                  markdown_table(analysis.strengths.drop(columns=["interval"]))]
    if analysis.generation_strengths is not None and len(analysis.generation_strengths):
        lines += ["Per generation within each anchor: `tables/bradley_terry_generations.csv`.", ""]
    if analysis.combinations is not None and len(analysis.combinations):
        lines += ["## Backbone combinations", "",
                  "Per (semantic, style) combination, on the triplets all of them scored: calibrated w_std and w, "
                  "the 2AFC score of CM at the paper's w and, out of fold, at the calibrated w.", "",
                  markdown_table(analysis.combinations)]
    lines += side_by_side_lines(analysis.side_by_side)
    if analysis.notes:
        lines += ["## Notes", ""] + [f"- {note}" for note in analysis.notes] + [""]
    return "\n".join(lines)
