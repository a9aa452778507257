"""Researcher page: calibrate the semantic/style weight w of CM_w (from ratings or 2AFC judgments), compare artists
with lay raters, lay both kinds of judgment side by side, plan a study (UI only)."""

from dataclasses import astuple

import streamlit as st

from cpdm.analysis.by_answer import calibrate_by, splittable_questions
from cpdm.analysis.plots import calibration_figure, figure_png, group_curves_figure
from cpdm.analysis.campaign_report import (
    DEFAULT_TARGET,
    AnalysisOptions,
    calibrate_campaign,
    calibration_choices,
    campaign_fingerprint,
    campaign_group_comparisons,
    compare_campaign_combinations,
    plan_campaign,
    record_calibration,
    weights_side_by_side,
)
from cpdm.errors import CpdmError
from cpdm.rating.background import answers_fingerprint
from cpdm.rating.campaigns import latest_rated_campaign_id
from cpdm.app.ui import on_demand, pick_campaign, require_researcher, session_cached, show_png

ws, rater = require_researcher()

st.title("Calibration")
st.markdown(
    "CM_w weighs semantic against style distance: `D_w = m_sem^w · m_style^(1−w)`, `CM_w = 1 − min(D_w / x_ref, 1)²`. "
    "w is chosen on a grid over [0, 1] to best match the raters; cross-validation grouped by anchor shows how well "
    "the choice carries over to unseen anchors, next to the paper's w = 0.5. What a w means depends on how widely "
    "each backbone's log distances spread; **w_std** is the same weighting on log distances standardised by their "
    "spread over the reference pairs, so w_std = 0.5 means content and style count equally, whatever the backbones."
)
left, middle, right = st.columns(3)
chosen = pick_campaign(ws, key="cal_campaign", container=left, preselect=latest_rated_campaign_id)
campaign = chosen["name"]
two_afc = chosen.get("kind") == "2afc"
questions, groups = calibration_choices(ws, chosen["id"])
if two_afc:
    left.caption("Comparative (2AFC) judgments: w maximises the 2AFC score of CM_w against the raters' choices.")
target = middle.selectbox("Target question", questions, key="cal_target",
                          index=questions.index(DEFAULT_TARGET) if DEFAULT_TARGET in questions else 0,
                          help="The questions of the campaign's protocol.")
group = right.selectbox("Rater group", groups, key="cal_group", help="The groups the campaign asks ratings from.")
with st.expander("Settings", expanded=False):
    a, b = st.columns(2)
    folds = a.number_input("Folds", 2, 20, 5, key="cal_folds")
    n_boot = a.number_input("Bootstrap resamples", 0, 10_000, 1000, step=100, key="cal_boot")
    resample = a.selectbox("Intervals resample", ["anchors", "pairs"], key="cal_resample",
                           help="Whole anchors (their pairs are not independent), or single pairs: too narrow, "
                                "for comparison only.")
    step = b.selectbox("Grid step", [0.05, 0.025, 0.01], key="cal_step")
    include_flagged = b.checkbox("Include flagged raters", key="cal_flagged")
    exclude_simulated = b.checkbox("Leave out simulated raters", key="cal_no_sim")

options = AnalysisOptions(folds=int(folds), n_boot=int(n_boot), step=float(step), include_flagged=include_flagged,
                          include_simulated=not exclude_simulated, resample=resample)


def calibrate_and_plot():
    result, weights = calibrate_campaign(ws, campaign, target=target, group=group, options=options, record=False)
    return result, weights, figure_png(calibration_figure(result.curve, result.chosen_w, spreads=result.spreads))


fingerprint = campaign_fingerprint(ws, campaign)
cache_key = (fingerprint, target, group, astuple(options))
try:
    with st.spinner("Calibrating…"):
        result, weights, curve_png = session_cached("calibration_cache", cache_key, calibrate_and_plot)
except CpdmError as exc:
    st.error(str(exc))
    st.stop()

calibrated = result.summary.iloc[0]
unit = "triplets" if two_afc else "pairs"
first, second, third = st.columns(3)
# Each estimate large, its 95% interval small beneath it (three columns leave no room for both on one line).
interval = {"delta_color": "off", "delta_arrow": "off"}
first.metric("Chosen w", f"{result.chosen_w:g}", f"95% [{result.w_ci[0]:.3g}, {result.w_ci[1]:.3g}]", **interval,
             help=f"The value with the highest {result.statistic_label} on all {unit} (ties go to the value closest "
                  "to 0.5), "
                  "with the 95% interval of the whole choice bootstrapped over anchors. CM_w uses this w.")
if result.spreads is not None:
    second.metric("w_std (scale-free)", f"{result.chosen_w_std:.3f}",
                  f"95% [{result.w_std_ci[0]:.3f}, {result.w_std_ci[1]:.3f}]", **interval,
                  help="The same weighting on log distances standardised over the "
                       f"{result.spreads_source}: 0.5 = content and style count equally; compare this one "
                       "across backbones.")
else:
    second.metric("w_std (scale-free)", "undefined", help=str(result.stats.get("w_std_undefined")))
third.metric(f"Out-of-fold {result.statistic_label}", f"{calibrated[result.value_column]:.3f}",
             f"95% [{calibrated['ci_low']:.3f}, {calibrated['ci_high']:.3f}]", **interval,
             help=f"How well CM_w at the chosen w matches the raters on {unit} of anchors it was not fitted on.")
if result.spreads is not None:
    st.caption(f"Conversion: {result.spreads.describe()}.")
st.caption(f"x_ref = {result.x_ref:.4g} (from {result.x_ref_source}); {result.n_pairs} {unit}, {result.n_anchors} "
           f"anchors, {weights.n_raters} raters, {weights.n_ratings} {'judgments' if two_afc else 'ratings'}; "
           "per-fold choices "
           f"{', '.join(f'{w:g}' for w in result.fold_w)}. Intervals: {result.interval}.")
if result.x_ref_source != "reference pairs":
    st.warning("No reference (mismatched) distances: x_ref is the median over the campaign's own pairs.")
st.dataframe(result.summary, hide_index=True, width="stretch")

show_png(curve_png)
# One row that sizes each button to its label (and wraps), so no label is cut off. Files are made when pressed.
buttons = st.container(horizontal=True)
buttons.download_button("Weights (JSON)", on_demand(weights.to_json), f"{campaign}-weights.json", "application/json",
                        key="cal_json", icon=":material/download:", help="Score with it: cpdm score --weights FILE")
buttons.download_button("Curve (CSV)", on_demand(lambda: result.curve.to_csv(index=False)),
                        f"{campaign}-calibration.csv", "text/csv", key="cal_csv", icon=":material/download:")
buttons.download_button("Summary (CSV)", on_demand(lambda: result.summary.to_csv(index=False)),
                        f"{campaign}-calibration-summary.csv", "text/csv", key="cal_summary_csv",
                        icon=":material/download:")
buttons.download_button("Plot (PNG)", on_demand(lambda: curve_png), f"{campaign}-calibration.png", "image/png",
                        key="cal_png", icon=":material/download:")
if buttons.button("Record in workspace", key="cal_record", icon=":material/save:"):
    calibration_id = record_calibration(ws, chosen["id"], weights)
    st.success(f"Calibration {calibration_id} recorded.")

# The same pairs judged both ways (a rating and a 2AFC campaign): both w side by side.
side_by_side = session_cached("side_by_side_cache", cache_key, lambda: weights_side_by_side(
    ws, chosen["id"], target, group, options, this_result=result))
if side_by_side is not None:
    st.header("Ratings and 2AFC judgments of the same pairs")
    st.caption("Each campaign calibrated on the same question and rater group with the same settings; compare "
               "w_std (0.5 = content and style count equally).")
    st.dataframe(side_by_side, hide_index=True, width="stretch")

# A campaign scored with several (semantic, style) backbone combinations: all of them side by side.
comparison = session_cached(
    "combination_cache", cache_key, lambda: compare_campaign_combinations(ws, campaign, target, options, groups)
)
if comparison is not None:
    st.header("Backbone combinations")
    if two_afc:
        st.caption("Calibrated w_std and w per combination, and the 2AFC score of CM at the paper's w and (out of "
                   "fold) at the calibrated w, 95% CI over anchors, on the triplets every combination scored.")
    else:
        st.caption("Calibrated w_std (comparable across combinations) and w, and out-of-fold Spearman ρ (95% CI "
                   "over anchors) per combination and rater group, on the pairs every combination scored; "
                   "paper_w_std: the paper's w = 0.5 on the w_std scale of that combination; diff_vs_paper: ρ minus "
                   "the paper's combination's, paired bootstrap.")
    st.dataframe(comparison.table, hide_index=True, width="stretch")
    show_png(session_cached("combination_png", cache_key, lambda: figure_png(comparison.figure())))
    for note in comparison.notes:
        st.caption(note)

st.header("Artists vs lay raters")
st.markdown("Each group's w, chosen the same way on all pairs, for every protocol question, read as w_std "
            "(0.5 = content and style count equally); the difference's interval is a paired bootstrap (the same "
            "resamples of anchors for both groups), on the anchors both groups rated.")
try:
    with st.spinner("Comparing groups…"):
        comparisons, notes = session_cached("groups_cache", (fingerprint, astuple(options)),
                                            lambda: campaign_group_comparisons(ws, campaign, options))
except CpdmError as exc:
    comparisons, notes = [], [str(exc)]
for note in notes:
    st.info(note)
if comparisons:
    st.dataframe([comparison.screen_row() for comparison in comparisons], hide_index=True, width="stretch")
    st.caption(f"Brackets: {comparisons[0].interval}.")
    shown = next((c for c in comparisons if c.question == target), comparisons[0])
    show_png(figure_png(group_curves_figure(shown)))
elif not notes:
    st.info("The comparison needs ratings from both artists and lay raters.")

if two_afc:
    st.info("Calibrating by the raters' background and planning a study work on rating campaigns; plan a 2AFC "
            "study with `cpdm plan --kind 2afc`.")
    st.stop()

st.header("By the raters' background")
st.markdown("w for each answer to one of the protocol's questions about the raters (years of practice, "
            "familiarity with each pair's artist, …), each level calibrated like a rater group, on the chosen "
            "group's ratings (`cpdm calibrate --by QUESTION`).")
splittable = splittable_questions(ws, chosen["id"])
if not splittable:
    st.info("The campaign's protocol asks the raters no background questions that can split them.")
else:
    by = st.selectbox("Background question", [q.id for q in splittable], key="cal_by",
                      format_func=lambda qid: next(f"{q.id}: {q.text_for('each artist')}" for q in splittable
                                                   if q.id == qid))
    by_key = (fingerprint, answers_fingerprint(ws.conn, chosen["id"]), by, target, group, astuple(options))
    # Each level is a whole calibration: computed when asked for, not on every visit of the page.
    if st.button("Calibrate each level", key="cal_by_run", icon=":material/splitscreen:"):
        st.session_state["cal_by_key"] = by_key
    if st.session_state.get("cal_by_key") == by_key:
        try:
            with st.spinner("Calibrating each level…"):
                by_answer = session_cached("by_answer_cache", by_key, lambda: calibrate_by(
                    ws, campaign, by, target=target, group=group, options=options))
        except CpdmError as exc:
            st.error(str(exc))
        else:
            st.dataframe(by_answer.screen_table(), hide_index=True, width="stretch")
            st.caption(f"Brackets: {by_answer.interval}.")
            for note in by_answer.notes:
                st.caption(note)
            st.download_button("Table (CSV)", by_answer.table.to_csv(index=False), f"{campaign}-by-{by}.csv",
                               "text/csv", key="cal_by_csv", icon=":material/download:")

st.header("Plan a study from this pilot")
st.markdown("How many anchors and raters per pair pin w to ±0.1, and detect an artist–lay difference of 0.2 with "
            "80% power? Each design is simulated by resampling this campaign (its anchors, and new ratings from "
            "each pair's mean plus the group's rating noise).")
if st.button("Simulate designs", key="cal_plan", icon=":material/calculate:"):
    st.session_state["cal_plan_key"] = (fingerprint, target, astuple(options))
if st.session_state.get("cal_plan_key") == (fingerprint, target, astuple(options)):
    try:
        with st.spinner("Simulating studies…"):
            plan = session_cached("plan_cache", st.session_state["cal_plan_key"],
                                  lambda: plan_campaign(ws, campaign, target=target, options=options))
    except CpdmError as exc:
        st.error(str(exc))
    else:
        for line in plan.summary_lines():
            st.markdown(f"- {line}")
        st.dataframe(plan.table, hide_index=True, width="stretch")
