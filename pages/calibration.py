"""Researcher page: calibrate the semantic/style weight w of CM_w and download the weights (UI only)."""

from dataclasses import astuple

import streamlit as st

from cpdm.analysis.plots import calibration_figure, figure_png
from cpdm.analysis.report import (AnalysisOptions, calibrate_campaign, campaign_fingerprint,
                                  compare_campaign_combinations, record_calibration)
from cpdm.errors import CpdmError
from cpdm.ui import pick_campaign, require_researcher, session_cached

ws, rater = require_researcher()

st.title("Calibration")
st.markdown(
    "CM_w weighs semantic against style distance: `D_w = m_sem^w · m_style^(1−w)`, `CM_w = 1 − min(D_w / x_ref, 1)²`. "
    "w is chosen on a grid over [0, 1] to best match the raters; cross-validation grouped by anchor shows how well "
    "the choice carries over to unseen anchors, next to the paper's w = 0.5."
)
left, middle, right = st.columns(3)
chosen = pick_campaign(ws, key="cal_campaign", container=left)
campaign = chosen["name"]
target = middle.selectbox("Target question", ["copy", "content", "style"], key="cal_target")
GROUPS = ("artists", "lay", "all")
group = right.selectbox("Rater group", GROUPS, key="cal_group")
with st.expander("Settings", expanded=False):
    a, b = st.columns(2)
    folds = a.number_input("Folds", 2, 20, 5, key="cal_folds")
    n_boot = a.number_input("Bootstrap resamples (over anchors)", 0, 10_000, 1000, step=100, key="cal_boot")
    step = b.selectbox("Grid step", [0.05, 0.025, 0.01], key="cal_step")
    include_flagged = b.checkbox("Include flagged raters", key="cal_flagged")
    exclude_simulated = b.checkbox("Leave out simulated raters", key="cal_no_sim")

options = AnalysisOptions(folds=int(folds), n_boot=int(n_boot), step=float(step), include_flagged=include_flagged,
                          include_simulated=not exclude_simulated)


def calibrate_and_plot():
    result, weights = calibrate_campaign(ws, campaign, target=target, group=group, options=options, record=False)
    return result, weights, figure_png(calibration_figure(result.curve, result.chosen_w))


cache_key = (campaign_fingerprint(ws, campaign), target, group, astuple(options))
try:
    with st.spinner("Calibrating…"):
        result, weights, curve_png = session_cached("calibration_cache", cache_key, calibrate_and_plot)
except CpdmError as exc:
    st.error(str(exc))
    st.stop()

st.metric("Chosen w", f"{result.chosen_w:g}",
          help="The grid value with the highest Spearman ρ on all pairs (ties go to the value closest to 0.5).")
st.caption(f"x_ref = {result.x_ref:.4g} (from {result.x_ref_source}); {result.n_pairs} pairs, {result.n_anchors} "
           f"anchors, {weights.n_raters} raters, {weights.n_ratings} ratings; per-fold choices "
           f"{', '.join(f'{w:g}' for w in result.fold_w)}.")
if result.x_ref_source != "reference pairs":
    st.warning("No reference (mismatched) distances: x_ref is the median over the campaign's own pairs.")
st.dataframe(result.summary, hide_index=True, width="stretch")

st.image(curve_png)
# One row that sizes each button to its label (and wraps), so no label is cut off.
buttons = st.container(horizontal=True)
buttons.download_button("Weights (JSON)", weights.to_json(), f"{campaign}-weights.json", "application/json",
                        key="cal_json", icon=":material/download:", help="Score with it: cpdm score --weights FILE")
buttons.download_button("Curve (CSV)", result.curve.to_csv(index=False), f"{campaign}-calibration.csv", "text/csv",
                        key="cal_csv", icon=":material/download:")
buttons.download_button("Summary (CSV)", result.summary.to_csv(index=False), f"{campaign}-calibration-summary.csv",
                        "text/csv", key="cal_summary_csv", icon=":material/download:")
buttons.download_button("Plot (PNG)", curve_png, f"{campaign}-calibration.png", "image/png",
                        key="cal_png", icon=":material/download:")
if buttons.button("Record in workspace", key="cal_record", icon=":material/save:"):
    calibration_id = record_calibration(ws, chosen["id"], weights)
    st.success(f"Calibration {calibration_id} recorded.")

# A campaign scored with several (semantic, style) backbone combinations: all of them side by side.
comparison = session_cached(
    "combination_cache", cache_key, lambda: compare_campaign_combinations(ws, campaign, target, options, GROUPS)
)
if comparison is not None:
    st.subheader("Backbone combinations")
    st.caption("Calibrated w and out-of-fold Spearman ρ (95% CI over anchors) per combination and rater group, on the "
               "pairs every combination scored; diff_vs_paper: ρ minus the paper's combination's, paired bootstrap.")
    st.dataframe(comparison.table, hide_index=True, width="stretch")
    st.image(session_cached("combination_png", cache_key, lambda: figure_png(comparison.figure())))
    for note in comparison.notes:
        st.caption(note)
