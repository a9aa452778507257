"""Researcher page: agreement, metric vs human scatter plots, per-variant benchmark; for a comparative (2AFC)
campaign, 2AFC scores and Bradley–Terry strengths (UI only; logic in cpdm.analysis)."""

from dataclasses import astuple

import streamlit as st

from cpdm.analysis.combinations import describe_combination
from cpdm.analysis.campaign_report import (
    RELEASE_SCORE_NOTE,
    AnalysisOptions,
    campaign_fingerprint,
    group_figure_name,
    run_analysis,
    scatter_name,
)
from cpdm.errors import CpdmError
from cpdm.rating.campaigns import latest_rated_campaign_id
from cpdm.app.ui import on_demand, pick_campaign, require_researcher, session_cached, show_png

ws, rater = require_researcher()

st.title("Analysis")
campaign = pick_campaign(ws, key="analysis_campaign", preselect=latest_rated_campaign_id)["name"]

with st.expander("Which ratings, and how", expanded=False):
    left, right = st.columns(2)
    include_flagged = left.checkbox("Include raters flagged by attention checks", key="analysis_flagged")
    exclude_simulated = left.checkbox("Leave out simulated raters", key="analysis_no_sim")
    zscore = left.checkbox("Z-score each rater before averaging (removes leniency)", key="analysis_z")
    level = right.selectbox("Level of measurement (alpha)", ["ordinal", "interval", "nominal", "ratio"],
                            key="analysis_level")
    n_boot = right.number_input("Bootstrap resamples", 0, 10_000, 1000, step=100, key="analysis_boot")
    resample = right.selectbox("Intervals resample", ["anchors", "pairs"], key="analysis_resample",
                               help="Whole anchors (their pairs are not independent), or single pairs: too narrow, "
                                    "for comparison only.")

options = AnalysisOptions(include_flagged=include_flagged, include_simulated=not exclude_simulated, zscore=zscore,
                          level=level, n_boot=int(n_boot), resample=resample)
try:
    with st.spinner("Analysing…"):
        analysis = session_cached("analysis_cache", (campaign_fingerprint(ws, campaign), astuple(options)),
                                  lambda: run_analysis(ws, campaign, options))
except CpdmError as exc:
    st.error(str(exc))
    st.stop()
figure_names = analysis.figure_names()
counts = analysis.data.counts
two_afc = analysis.kind == "2afc"
st.caption(
    f"{counts['used']} {'judgments' if two_afc else 'ratings'} used from {counts['raters_used']} raters; "
    f"{counts['skipped']} skipped; {counts['excluded_flagged']} from flagged raters excluded; "
    f"{counts['simulated_raters']} simulated raters {'excluded' if exclude_simulated else 'included'}. "
    f"Intervals: {options.intervals()}."
)
if analysis.data.backbones:
    st.caption(f"Metric scores: {describe_combination(*analysis.data.backbones)}.")
for note in analysis.notes:
    st.warning(note)


def show_plot(stem: str) -> None:
    """A plot, from the same PNG bytes its download button offers."""
    show_png(analysis.png(stem))


def downloads(stem: str, table=None, plot: bool = False) -> None:
    """CSV and PNG download buttons for one table and/or plot (their files made when pressed)."""
    columns = st.columns(4)
    if table is not None:
        columns[0].download_button("Table (CSV)", on_demand(lambda: table.to_csv(index=False)), f"{campaign}-{stem}.csv",
                                   "text/csv", key=f"csv_{stem}", icon=":material/download:")
    if plot:
        columns[1].download_button("Plot (PNG)", on_demand(lambda: analysis.png(stem)), f"{campaign}-{stem}.png",
                                   "image/png", key=f"png_{stem}", icon=":material/download:")


def show_side_by_side() -> None:
    """w from ratings beside w from 2AFC judgments of the same pairs, when the study has both."""
    if analysis.side_by_side is not None:
        st.header("w from ratings and from 2AFC judgments")
        st.markdown("The same pairs judged both ways, each campaign calibrated on the same question and rater "
                    "group; compare w_std (0.5 = content and style count equally).")
        st.dataframe(analysis.side_by_side, hide_index=True, width="stretch")
        downloads("w_by_judgment_kind", analysis.side_by_side)


def show_2afc() -> None:
    """The sections of a comparative (2AFC) campaign's analysis."""
    st.header("Agreement on choices")
    st.markdown("Krippendorff's alpha (nominal) on the choices (first, second, can't tell) per question and rater "
                "group; triplets judged once are left out and counted.")
    st.dataframe(analysis.agreement, hide_index=True, width="stretch")
    downloads("agreement", analysis.agreement)
    st.header("2AFC score of the metric")
    st.markdown("As in BAPPS: on a triplet where a share p of raters judged the first pair more of a copy, a metric "
                "preferring the first (higher = more of a copy) scores p, else 1 − p, a tie 0.5; the mean over "
                "triplets. The human ceiling: one random half of each triplet's raters scored against the other half.")
    if len(analysis.scores):
        st.dataframe(analysis.scores, hide_index=True, width="stretch")
        show_plot("scores")
        downloads("two_afc_scores", analysis.scores, plot=True)
    else:
        st.info("No metric scores for this campaign yet (run `cpdm score`).")
    st.subheader("Human ceiling")
    st.dataframe(analysis.ceiling, hide_index=True, width="stretch")
    downloads("human_ceiling", analysis.ceiling)
    if analysis.group_comparisons:
        st.header("Artists vs lay raters")
        st.markdown("Each group's w by its own choices, and the difference with its paired bootstrap interval.")
        st.dataframe([comparison.screen_row() for comparison in analysis.group_comparisons], hide_index=True,
                     width="stretch")
        downloads("group_comparison", analysis.group_table())
    st.header("Bradley–Terry strengths by variant")
    if analysis.strengths is not None and len(analysis.strengths):
        st.markdown("Which model copies most, in the raters' eyes: centred log-strengths of copy-ness fitted on every "
                    "judgment between two variants' generations (higher = judged more of a copy), with intervals "
                    "refitted on resamples of anchors.")
        st.dataframe(analysis.strengths, hide_index=True, width="stretch")
        show_plot("strengths")
        downloads("strengths", analysis.strengths, plot=True)
        with st.expander("Per generation within each anchor"):
            st.dataframe(analysis.generation_strengths, hide_index=True, width="stretch")
    else:
        st.info("No triplet compares generations of two different variants.")
    show_side_by_side()


if two_afc:
    show_2afc()
    st.stop()

st.header("Agreement")
st.markdown(f"Krippendorff's alpha ({options.level}) per question and rater group; pairs with fewer than two "
            "ratings are left out and counted.")
st.dataframe(analysis.agreement, hide_index=True, width="stretch")
if "agreement" in figure_names:
    show_plot("agreement")
downloads("agreement", analysis.agreement, plot="agreement" in figure_names)

st.header("Metric vs human judgement")
if analysis.metrics:
    metric = st.radio("Metric", analysis.metrics, horizontal=True, key="analysis_metric",
                      help="-m_sem and -m_style are the distances negated, so higher means closer, like CM.")
    stem = scatter_name(metric)
    show_plot(stem)
    downloads(stem, None, plot=True)
    st.subheader("Correlations")
    method = st.radio("Method", ["spearman", "kendall", "pearson"], horizontal=True, key="analysis_method")
    st.dataframe(analysis.correlations[analysis.correlations["method"] == method], hide_index=True, width="stretch")
    downloads("correlations", analysis.correlations)
else:
    st.info("No metric scores for this campaign yet (run `cpdm score`).")
st.subheader("Noise ceiling")
st.markdown("Split-half reliability of the mean human score, corrected with Spearman–Brown: how well a second, "
            "equally large panel of raters would agree with this one. A metric that correlates this well with the "
            "raters matches them as well as raters match each other.")
st.dataframe(analysis.ceiling, hide_index=True, width="stretch")
downloads("noise_ceiling", analysis.ceiling)

if analysis.group_comparisons:
    st.header("Artists vs lay raters")
    st.markdown("Each group's w for every protocol question, and the difference with its paired bootstrap interval "
                "(anchors both groups rated).")
    st.dataframe(analysis.group_table(), hide_index=True, width="stretch")
    downloads("group_comparison", analysis.group_table())
    for comparison in analysis.group_comparisons:
        show_plot(group_figure_name(comparison.question))
        downloads(group_figure_name(comparison.question), None, plot=True)

st.header("Benchmark by model variant")
if analysis.variants is not None and len(analysis.variants):
    st.markdown("Did unlearning reduce infringement? Mean CM and the human 'copy' judgement per variant; a pair is "
                f"judged a copy when its mean rating is at least {analysis.data.copy_threshold(options.target):g} "
                "(the first point above the middle of the question's scale).")
    st.caption(RELEASE_SCORE_NOTE)
    st.dataframe(analysis.variants, hide_index=True, width="stretch")
    show_plot("variants")
    downloads("variants", analysis.variants, plot=True)
else:
    st.info("The campaign's pairs have no model variants.")

show_side_by_side()
