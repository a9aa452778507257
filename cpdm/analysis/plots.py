"""Figures for the analysis: the app pages and the report folder use these same functions.

Figures are built with matplotlib's object API (no pyplot state), so they
are safe to make from Streamlit's threads.
"""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

GROUP_COLOURS = {"artists": "#c2410c", "lay": "#1d4ed8", "all": "#374151"}


def figure_png(figure: Figure, dpi: int = 120) -> bytes:
    """A figure as PNG bytes (for downloads and report files)."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi)
    return buffer.getvalue()


def _fmt(value: float, digits: int = 2) -> str:
    return "n/a" if value is None or not np.isfinite(value) else f"{value:.{digits}f}"


def scatter_figure(
    pairs: pd.DataFrame,
    metric: str,
    human_columns: dict[str, str],
    correlations: pd.DataFrame | None = None,
    ylabel: str = "human score",
) -> Figure:
    """Metric against human score, one panel per group, with the least-squares line and Spearman ρ."""
    groups = list(human_columns)
    figure = Figure(figsize=(4.2 * max(len(groups), 1), 3.8), layout="constrained")
    axes = figure.subplots(1, max(len(groups), 1), squeeze=False)[0]
    for axis, group in zip(axes, groups):
        sub = pairs[[metric, human_columns[group]]].dropna()
        x = sub[metric].to_numpy(dtype=float)
        y = sub[human_columns[group]].to_numpy(dtype=float)
        colour = GROUP_COLOURS.get(group, "#374151")
        axis.scatter(x, y, s=12, alpha=0.6, color=colour, edgecolors="none")
        if len(x) >= 2 and np.ptp(x) > 0:
            slope, intercept = np.polyfit(x, y, 1)
            line_x = np.linspace(x.min(), x.max(), 50)
            axis.plot(line_x, slope * line_x + intercept, color="black", linewidth=1.2)
        title = f"{group} (n = {len(x)})"
        if correlations is not None:
            match = correlations[
                (correlations["group"] == group) & (correlations["metric"] == metric)
                & (correlations["method"] == "spearman")
            ]
            if len(match):
                row = match.iloc[0]
                title = f"{group}: ρ = {_fmt(row['r'])} [{_fmt(row['ci_low'])}, {_fmt(row['ci_high'])}], n = {len(x)}"
        axis.set_title(title, fontsize=10)
        axis.set_xlabel(metric)
        axis.set_ylabel(ylabel)
        axis.grid(alpha=0.3)
    return figure


def calibration_figure(curve: pd.DataFrame, chosen_w: float, paper_w: float = 0.5, spreads=None) -> Figure:
    """Out-of-fold Spearman ρ against w with its bootstrap band; marks at the chosen w and at the paper's 0.5.

    With ``spreads`` (:class:`cpdm.metric.LogSpreads`) a second axis on top
    reads the same positions as w_std.
    """
    figure = Figure(figsize=(6.0, 3.8), layout="constrained")
    axis = figure.subplots()
    axis.fill_between(curve["w"], curve["ci_low"], curve["ci_high"], color="#93c5fd", alpha=0.5, label="95% CI")
    two_afc = "score_oof" in curve  # a curve from 2AFC judgments (cpdm.analysis.two_afc_calibration)
    axis.plot(curve["w"], curve["score_oof" if two_afc else "rho_oof"], color="#1d4ed8", marker="o", markersize=3,
              label="out-of-fold 2AFC score" if two_afc else "out-of-fold ρ")
    label = f"chosen w = {chosen_w:g}" + (f" (w_std {spreads.w_std(chosen_w):.2f})" if spreads else "")
    axis.axvline(chosen_w, color="#c2410c", linestyle="-", linewidth=1.2, label=label)
    _frame_w_axis(axis, paper_w, "2AFC score against humans" if two_afc else "Spearman ρ with humans",
                  legend_columns=3 if spreads else 4)
    _w_std_axis(axis, spreads)
    return figure


def _extended(convert, slope_at_0: float, slope_at_1: float):
    """A conversion of weights on [0, 1] continued by straight lines beyond (the w axis has margins).

    A secondary axis needs the conversion on the whole visible range; outside
    [0, 1] the formula could divide by zero for very unequal spreads.
    """
    def extended(values):
        values = np.asarray(values, dtype=np.float64)
        inside = np.asarray(convert(np.clip(values, 0.0, 1.0)), dtype=np.float64)
        return np.where(values < 0, values * slope_at_0, np.where(values > 1, 1 + (values - 1) * slope_at_1, inside))
    return extended


def _w_std_axis(axis, spreads) -> None:
    """A w_std scale along the top of a w axis (nothing without spreads)."""
    if spreads is None:
        return
    ratio = spreads.sem / spreads.style  # d w_std / d w at w = 0; its inverse at w = 1
    top = axis.secondary_xaxis("top", functions=(_extended(spreads.w_std, ratio, 1 / ratio),
                                                 _extended(spreads.w, 1 / ratio, ratio)))
    top.set_xticks([0.0, 0.25, 0.5, 0.75, 1.0])
    top.set_xlabel("w_std (weight on standardised log distances; 0.5 = equal)", fontsize=8)
    top.tick_params(labelsize=8)


def _frame_w_axis(axis, paper_w: float, ylabel: str, legend_columns: int) -> None:
    """The paper's w as a dashed mark, the w axis with its margins, and the legend below the axes."""
    axis.axvline(paper_w, color="#6b7280", linestyle="--", linewidth=1.0, label=f"paper w = {paper_w:g}")
    axis.set_xlabel("w (0 = style only, 1 = semantic only)")
    axis.set_ylabel(ylabel)
    # A margin on both sides: a chosen w of 0 or 1 (common) would otherwise lie on the frame.
    axis.set_xlim(-0.04, 1.04)
    axis.grid(alpha=0.3)
    # Below the axes: inside, the legend would hide the curves or the marks.
    axis.legend(fontsize=8, ncol=legend_columns, loc="upper center", bbox_to_anchor=(0.5, -0.2))


def variant_figure(table: pd.DataFrame, groups: list[str], threshold: float, metric: str = "CM") -> Figure:
    """Per-variant benchmark: mean metric with its CI (left), share judged a copy per group (right)."""
    figure = Figure(figsize=(9.0, 3.8), layout="constrained")
    left, right = figure.subplots(1, 2)
    positions = np.arange(len(table))
    means = table[f"mean_{metric}"].to_numpy(dtype=float)
    errors = np.vstack([
        means - table[f"{metric}_ci_low"].to_numpy(dtype=float),
        table[f"{metric}_ci_high"].to_numpy(dtype=float) - means,
    ])
    left.bar(positions, means, yerr=np.nan_to_num(errors), color="#6b7280", capsize=3)
    left.set_xticks(positions, table["variant"], rotation=20)
    left.set_ylabel(f"mean {metric}")
    left.set_title(f"{metric} by variant (higher = closer to the original)", fontsize=10)
    width = 0.8 / max(len(groups), 1)
    for index, group in enumerate(groups):
        column = f"share_copy_{group}"
        if column not in table:
            continue
        right.bar(positions + (index - (len(groups) - 1) / 2) * width, table[column].to_numpy(dtype=float), width,
                  label=group, color=GROUP_COLOURS.get(group, "#374151"))
    right.set_xticks(positions, table["variant"], rotation=20)
    right.set_ylim(0, 1)
    right.set_ylabel(f"share judged a copy (mean ≥ {threshold:g})")
    right.set_title("human judgement by variant", fontsize=10)
    if groups:
        right.legend(fontsize=8)
    for axis in (left, right):
        axis.grid(alpha=0.3, axis="y")
    return figure


def agreement_figure(table: pd.DataFrame) -> Figure:
    """Krippendorff's alpha per question and group with bootstrap intervals."""
    figure = Figure(figsize=(6.5, 3.6), layout="constrained")
    axis = figure.subplots()
    questions = list(dict.fromkeys(table["question"]))
    groups = list(dict.fromkeys(table["group"]))
    width = 0.8 / max(len(groups), 1)
    positions = np.arange(len(questions))
    for index, group in enumerate(groups):
        sub = table[table["group"] == group].set_index("question").reindex(questions)
        alpha = sub["alpha"].to_numpy(dtype=float)
        errors = np.vstack([alpha - sub["ci_low"].to_numpy(dtype=float), sub["ci_high"].to_numpy(dtype=float) - alpha])
        axis.bar(positions + (index - (len(groups) - 1) / 2) * width, alpha, width, yerr=np.nan_to_num(errors),
                 capsize=3, label=group, color=GROUP_COLOURS.get(group, "#374151"))
    axis.set_xticks(positions, questions)
    axis.set_ylabel("Krippendorff's α")
    axis.axhline(0.667, color="#6b7280", linestyle=":", linewidth=1, label="α = 0.667")
    axis.grid(alpha=0.3, axis="y")
    # Below the axes: inside, the legend would hide bars.
    axis.legend(fontsize=8, ncol=len(groups) + 1, loc="upper center", bbox_to_anchor=(0.5, -0.1))
    return figure


def group_curves_figure(comparison, paper_w: float = 0.5) -> Figure:
    """Each group's Spearman ρ(w) (2AFC score(w) for judgments) on all pairs with its bootstrap band, each group's chosen w, and the paper's w."""
    figure = Figure(figsize=(6.0, 3.9), layout="constrained")
    axis = figure.subplots()
    # The second group's mark is dotted, so that two groups choosing the same w both stay visible.
    for group, style in zip(comparison.groups, ("-", ":")):
        curve = comparison.curves[group]
        colour = GROUP_COLOURS.get(group, "#374151")
        low, high = comparison.w_ci[group]
        axis.fill_between(curve["w"], curve["ci_low"], curve["ci_high"], color=colour, alpha=0.15, linewidth=0)
        two_afc = "score" in curve  # from 2AFC judgments: the mean 2AFC score against w
        axis.plot(curve["w"], curve["score" if two_afc else "rho"], color=colour, marker="o", markersize=3,
                  label=f"{group} 2AFC score(w)" if two_afc else f"{group} ρ(w)")
        label = f"{group} w = {comparison.chosen_w[group]:g} [{_fmt(low)}, {_fmt(high)}]"
        if comparison.spreads is not None:
            label += f", w_std {_fmt(comparison.w_std[group])}"
        axis.axvline(comparison.chosen_w[group], color=colour, linewidth=2.0, linestyle=style, label=label)
    first, second = comparison.groups
    if comparison.spreads is not None:  # the scale-free difference, when there is one
        name, difference, (low, high) = "w_std", comparison.difference_std, comparison.difference_std_ci
    else:
        name, difference, (low, high) = "w", comparison.difference, comparison.difference_ci
    axis.set_title(f"'{comparison.question}': {name} {first} − {second} = {difference:+.2f} "
                   f"[{_fmt(low)}, {_fmt(high)}], {comparison.n_anchors} anchors", fontsize=10)
    _frame_w_axis(axis, paper_w, "2AFC score against the group" if getattr(comparison, "statistic", "") == "2afc"
                  else "Spearman ρ with the group", legend_columns=2)
    _w_std_axis(axis, comparison.spreads)
    return figure


def _grouped_points(axis, table: pd.DataFrame, label_column: str, value: str, labels: list[str]) -> None:
    """Points with horizontal interval bars, one row per label, one colour (and offset) per rater group."""
    groups = list(dict.fromkeys(table["group"])) if "group" in table else ["all"]
    offsets = np.linspace(-0.2, 0.2, len(groups)) if len(groups) > 1 else [0.0]
    for offset, group in zip(offsets, groups):
        rows = table[table["group"] == group] if "group" in table else table
        y = [labels.index(label) + offset for label in rows[label_column]]
        point = rows[value].to_numpy(dtype=float)
        error = np.vstack([point - rows["ci_low"].to_numpy(dtype=float), rows["ci_high"].to_numpy(dtype=float) - point])
        axis.errorbar(point, y, xerr=np.nan_to_num(np.clip(error, 0, None)), fmt="o", capsize=3, label=group,
                      color=GROUP_COLOURS.get(group, "#374151"))
    axis.set_yticks(range(len(labels)), labels, fontsize=8)
    axis.invert_yaxis()
    axis.grid(alpha=0.3, axis="x")
    axis.legend(fontsize=8, ncol=len(groups) + 1, loc="upper center", bbox_to_anchor=(0.5, -0.22))


def two_afc_scores_figure(scores: pd.DataFrame, ceiling: pd.DataFrame | None = None) -> Figure:
    """Each metric's 2AFC score with its 95% interval per rater group; the human split-half ceiling as rows too."""
    table = scores[["group", "metric", "score", "ci_low", "ci_high"]]
    if ceiling is not None and len(ceiling):
        humans = ceiling.rename(columns={"agreement": "score"}).assign(metric="humans (split-half)")
        table = pd.concat([table, humans[["group", "metric", "score", "ci_low", "ci_high"]]], ignore_index=True)
    labels = list(dict.fromkeys(table["metric"]))
    figure = Figure(figsize=(6.4, 1.4 + 0.45 * max(len(labels), 1)), layout="constrained")
    axis = figure.subplots()
    _grouped_points(axis, table, "metric", "score", labels)
    axis.axvline(0.5, color="#6b7280", linestyle="--", linewidth=1.0)
    axis.set_xlabel("2AFC score (share of raters the metric sides with; 0.5 = a coin)")
    return figure


def strengths_figure(strengths: pd.DataFrame) -> Figure:
    """Bradley–Terry strength of copy-ness per variant (centred log-strength, 95% interval), per rater group."""
    labels = list(dict.fromkeys(strengths["variant"]))
    figure = Figure(figsize=(6.4, 1.4 + 0.45 * max(len(labels), 1)), layout="constrained")
    axis = figure.subplots()
    _grouped_points(axis, strengths, "variant", "strength", labels)
    axis.axvline(0.0, color="#6b7280", linestyle="--", linewidth=1.0)
    axis.set_xlabel("Bradley–Terry strength (log scale, centred; higher = judged more of a copy)")
    return figure
