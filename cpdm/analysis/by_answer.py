"""Calibration split by raters' background: w per level of an answer to the protocol's questionnaire.

``cpdm calibrate --by art_years`` calibrates w and w_std (the scale-free
weight, :mod:`cpdm.metric`), with their intervals and the out-of-fold
Spearman ρ, once per level of a background question
(:mod:`cpdm.rating.background`), on the ratings of the raters at that level.
Levels are:

- a single-choice question: each option, in the protocol's order;
- a multiple-choice question: each option; a rater who chose several
  counts in each of them (the levels overlap, and the notes say so);
- a number question: the ranges between its ``levels`` cut points, or,
  without cut points, below and from the median answer;
- a question asked per artist (familiarity with each artist): the answer
  for the artist of each pair, so a rater counts as "knows it well" on that
  artist's pairs only.

Free-text questions cannot split raters. Raters who declined or never
answered the question are left out (and counted in the notes). Each level is
calibrated exactly as ``cpdm calibrate`` calibrates a rater group
(:func:`cpdm.analysis.calibration.calibrate`): the grid, the cross-validation
grouped by anchor and the bootstrap over anchors.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from cpdm.analysis import data as data_module
from cpdm.analysis.calibration import calibrate
from cpdm.errors import CpdmError
from cpdm.rating.background import campaign_protocol
from cpdm.rating.questionnaire import BackgroundQuestion

BY_COLUMNS = ["level", "raters", "pairs", "ratings", "w", "w_ci_low", "w_ci_high", "w_std", "w_std_ci_low",
              "w_std_ci_high", "rho", "ci_low", "ci_high", "note"]


@dataclass
class ByAnswer:
    """Calibration per level of one background answer."""

    question: str
    text: str
    table: pd.DataFrame                      # BY_COLUMNS, one row per level in the question's order
    curves: dict[str, pd.DataFrame] = field(default_factory=dict)  # per calibrated level: w, rho_oof, ci_low, ci_high
    notes: list[str] = field(default_factory=list)
    interval: str = ""

    def screen_table(self) -> pd.DataFrame:
        """The table a page shows: estimates with their intervals in one cell each."""
        def cell(value, low, high):
            return "" if pd.isna(value) else f"{value:.3g} [{low:.3g}, {high:.3g}]"

        rows = self.table
        return pd.DataFrame({
            "level": rows["level"], "raters": rows["raters"], "pairs": rows["pairs"],
            "w": [cell(*values) for values in zip(rows["w"], rows["w_ci_low"], rows["w_ci_high"])],
            # The scale-free weight: the one to compare levels by, read as "how much they weigh content".
            "w_std": [cell(*values) for values in zip(rows["w_std"], rows["w_std_ci_low"], rows["w_std_ci_high"])],
            "out-of-fold ρ": [cell(*values) for values in zip(rows["rho"], rows["ci_low"], rows["ci_high"])],
            "note": rows["note"],
        })


def splittable_questions(ws, campaign_id: int) -> list[BackgroundQuestion]:
    """The campaign's background questions that can split raters (every type but free text)."""
    return [q for q in campaign_protocol(ws.conn, campaign_id).background if q.type != "text"]


def _question(ws, campaign_id: int, question_id: str) -> BackgroundQuestion:
    questions = {q.id: q for q in campaign_protocol(ws.conn, campaign_id).background}
    if question_id not in questions:
        known = ", ".join(q.id for q in splittable_questions(ws, campaign_id)) or "none: its protocol asks none"
        raise CpdmError(f"the campaign's protocol has no background question {question_id!r} (questions that can "
                        f"split raters: {known})")
    question = questions[question_id]
    if question.type == "text":
        raise CpdmError(f"{question_id!r} is a free-text question; it cannot split raters into levels")
    return question


def _number_levels(question: BackgroundQuestion, values: pd.Series) -> tuple[list[float], list[str]]:
    """Cut points and level names of a number question: its ``levels``, else the median of the answers."""
    cuts = list(question.levels) or ([float(values.median())] if len(values) else [])
    edges = [question.min, *cuts, None]
    names = []
    for low, high in zip(edges[:-1], edges[1:]):
        if high is None:
            names.append(f"{low:g} or more")
        elif question.integer and high - 1 == low:
            names.append(f"{low:g}")
        elif question.integer:
            names.append(f"{low:g}–{high - 1:g}")
        else:
            names.append(f"{low:g} to under {high:g}")
    return cuts, names


def answer_levels(ws, campaign_id: int, question: BackgroundQuestion) -> tuple[pd.DataFrame, list[str], list[str]]:
    """(rows rater, artist, level; the levels in order; notes) for one background question of a campaign.

    ``artist`` is the subject for a question asked per artist, else None (the
    level applies to all of the rater's pairs).
    """
    rows = ws.conn.execute("SELECT rater, subject, value FROM background_answers WHERE campaign = ? AND question = ?",
                           (campaign_id, question.id)).fetchall()
    answers = pd.DataFrame([(r, s or None, json.loads(v)) for r, s, v in rows], columns=["rater", "artist", "value"])
    declined = answers["value"].isna()
    notes = [f"{answers.loc[declined, 'rater'].nunique()} raters preferred not to answer {question.id!r}"
             ] if declined.any() else []
    answers = answers[~declined]
    if question.type == "number":
        cuts, order = _number_levels(question, answers["value"].astype(float))
        answers = answers.assign(level=[order[int(np.searchsorted(cuts, value, side="right"))]
                                        for value in answers["value"].astype(float)])
        if not question.levels:
            notes.append(f"{question.id!r} declares no levels: split at the median answer ({cuts[0]:g})"
                         if cuts else f"nobody answered {question.id!r}")
    else:
        order = list(question.options)
        answers = answers.explode("value").rename(columns={"value": "level"}) if question.type == "multiple" \
            else answers.rename(columns={"value": "level"})
        if question.type == "multiple":
            notes.append("several choices were allowed: a rater counts in every level they chose")
    return answers[["rater", "artist", "level"]].reset_index(drop=True), order, notes


def label_ratings(ratings: pd.DataFrame, levels: pd.DataFrame) -> pd.DataFrame:
    """The ratings of raters with a level, with a ``level`` column (a rating appears once per level it has)."""
    if levels["artist"].notna().any():
        return ratings.merge(levels, on=["rater", "artist"], how="inner")
    return ratings.merge(levels.drop(columns="artist"), on="rater", how="inner")


def calibrate_by(ws, campaign: str, question_id: str, target: str = "copy", group: str = "all", options=None) -> ByAnswer:
    """w per level of a background answer (see the module docstring), on one rater group's ratings."""
    from cpdm.analysis.campaign_report import AnalysisOptions, load_campaign

    options = options or AnalysisOptions()
    data = load_campaign(ws, campaign, options)
    question = _question(ws, data.campaign_id, question_id)
    if data.backbones is None:
        raise CpdmError(f"campaign {campaign!r} has no metric scores; run `cpdm score` first")
    group_ratings = data_module.select_group(data.ratings, data_module.check_group(group))
    target_ratings = group_ratings[group_ratings["question"] == target]
    if len(target_ratings) == 0:
        raise CpdmError(f"no usable {target!r} ratings from the {group} group in campaign {campaign!r}")
    levels, order, notes = answer_levels(ws, data.campaign_id, question)
    labelled = label_ratings(target_ratings, levels)
    unanswered = target_ratings["rater"].nunique() - labelled["rater"].nunique()
    if unanswered:
        notes.append(f"{unanswered} raters with ratings have no answer to {question_id!r} and are left out")
    result = ByAnswer(question.id, question.text_for("the pair's artist"), pd.DataFrame(columns=BY_COLUMNS),
                      notes=notes, interval=options.intervals())
    rows = [_calibrate_level(data, labelled[labelled["level"] == level], level, target, options, result)
            for level in order]
    result.table = pd.DataFrame(rows, columns=BY_COLUMNS)
    return result


def _calibrate_level(data, ratings: pd.DataFrame, level: str, target: str, options, result: ByAnswer) -> dict:
    """One row of the table: the level's w and out-of-fold ρ with intervals, or why there are none."""
    row = {"level": level, "raters": int(ratings["rater"].nunique()), "ratings": int(len(ratings)),
           "pairs": int(ratings["pair"].nunique()), "note": ""}
    if len(ratings) == 0:
        return {**row, "note": "no rater gave this answer"}
    scores = data_module.human_scores(ratings, target, zscore=options.zscore)
    pairs = data.pairs.merge(scores, on="pair", how="inner")
    try:
        calibration = calibrate(pairs, data.reference, step=options.step, n_folds=options.folds,
                                n_boot=options.n_boot, seed=options.seed, resample=options.resample)
    except CpdmError as exc:
        return {**row, "note": str(exc)}
    summary = calibration.summary.iloc[0]
    result.curves[level] = calibration.curve[["w", "rho_oof", "ci_low", "ci_high"]]
    w_std_low, w_std_high = calibration.w_std_ci
    return {**row, "w": calibration.chosen_w, "w_ci_low": calibration.w_ci[0], "w_ci_high": calibration.w_ci[1],
            "w_std": calibration.chosen_w_std, "w_std_ci_low": w_std_low, "w_std_ci_high": w_std_high,
            "rho": summary["rho"], "ci_low": summary["ci_low"], "ci_high": summary["ci_high"]}
