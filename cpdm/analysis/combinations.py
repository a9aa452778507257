"""Backbone combinations side by side: which (semantic, style) descriptor tracks human judgement best.

The paper's combination (CLIP ViT-L-14/openai with the released InceptionV3
style term, ``cpdm-inception``) is one candidate among those a campaign was
scored with. For every combination and rater group:

1. Pairs: the campaign's normal pairs that every combination scored and the
   group rated, so all rows of one group compare the same pairs.
2. w: calibrated as in :func:`cpdm.analysis.calibration.calibrate`
   (grouped-by-anchor cross-validation, x_ref from the combination's own
   reference distances); ``w`` is the choice on all pairs. What a w means
   depends on how widely each backbone's log distances spread, so the
   table compares ``w_std``, the same weighting on log distances
   standardised by their spread over the combination's reference pairs
   (:class:`cpdm.metric.LogSpreads`; ``log_sd_sem``, ``log_sd_style``), and
   shows where the paper's w = 0.5 falls on that scale (``paper_w_std``).
3. ρ: Spearman correlation of the out-of-fold calibrated CM_w with the
   group's mean rating, with a 95% bootstrap interval made as every other
   interval of the analysis (:mod:`cpdm.analysis.resampling`: by default the
   expanded percentile interval over anchors, all pairs of an anchor
   resampled together).
4. Δρ: the paired difference of ρ against the paper's combination, each
   resample of anchors shared by both, so the interval reflects the
   difference itself rather than two independent uncertainties.

Every combination and group uses the same anchor resamples.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from cpdm.analysis import data as data_module
from cpdm.analysis.calibration import calibrate
from cpdm.analysis.correlation import weighted_spearman
from cpdm.analysis.resampling import DEFAULT_RESAMPLE, make_resamples
from cpdm.backbones import PAPER_COMBINATION, is_paper_combination, key_name_and_mode
from cpdm.errors import CpdmError

COLUMNS = ["group", "semantic", "style", "paper", "w_std", "w", "paper_w_std", "rho_oof", "ci_low", "ci_high",
           "diff_vs_paper", "diff_low", "diff_high", "pairs", "anchors", "log_sd_sem", "log_sd_style"]


def plain_name(key: str) -> str:
    """A stored backbone key without its mode prefix (``tiny:vgg19`` -> ``vgg19``)."""
    return key_name_and_mode(key)[0]


def describe_combination(semantic: str, style: str) -> str:
    """A combination's stored keys in words, saying whether it is the paper's (the CPDM release's backbones)."""
    if is_paper_combination(semantic, style):
        kind = "the paper's combination"
    else:
        kind = f"not the paper's combination, {' + '.join(PAPER_COMBINATION)}"
    tiny = "; tiny random-initialised models" if semantic.startswith("tiny:") else ""
    return f"{semantic} + {style} ({kind}{tiny})"


def paper_combination(combinations: list[tuple[str, str]]) -> tuple[str, str] | None:
    """The stored keys of the paper's combination among these, or None if it was not scored."""
    return next((c for c in combinations if is_paper_combination(*c)), None)


@dataclass
class CombinationComparison:
    """The side-by-side table (``COLUMNS``), what it was compared against, and notes on left-out rows."""

    table: pd.DataFrame
    paper: tuple[str, str] | None
    n_boot: int
    notes: list[str] = field(default_factory=list)

    def figure(self) -> Figure:
        return combinations_figure(self.table)


def _common_pairs(pair_tables: dict, human: pd.DataFrame) -> pd.DataFrame:
    """Pairs scored by every combination and rated: pair, anchor, human, and m_sem/m_style per combination."""
    merged = human[["pair", "human"]]
    for index, frame in enumerate(pair_tables.values()):
        scored = frame.dropna(subset=["m_sem", "m_style"])[["pair", "anchor", "m_sem", "m_style"]]
        scored = scored.rename(columns={"m_sem": f"m_sem_{index}", "m_style": f"m_style_{index}"})
        merged = merged.merge(scored if index == 0 else scored.drop(columns="anchor"), on="pair", how="inner")
    return merged.dropna(subset=["human"]).reset_index(drop=True)


def compare_group(
    pair_tables: dict[tuple[str, str], pd.DataFrame],
    references: dict[tuple[str, str], pd.DataFrame | None],
    human: pd.DataFrame,
    group: str,
    paper: tuple[str, str] | None,
    folds: int = 5,
    step: float = 0.05,
    n_boot: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
    resample: str = DEFAULT_RESAMPLE,
) -> list[dict]:
    """The table's rows for one rater group (``human``: columns pair, human)."""
    common = _common_pairs(pair_tables, human)
    if len(common) == 0:
        raise CpdmError(f"no pair was both scored by every combination and rated by the {group} group")
    anchors = common["anchor"].to_numpy()
    human_scores = common["human"].to_numpy(dtype=np.float64)
    resamples = make_resamples(anchors, n_boot, seed + 2, resample) if n_boot > 0 else None
    rows, resampled = [], {}
    for index, combination in enumerate(pair_tables):
        pairs = common[["anchor", "human"]].assign(m_sem=common[f"m_sem_{index}"], m_style=common[f"m_style_{index}"])
        # calibrate's own intervals are skipped (n_boot=0): every row's come from the shared resamples below.
        result = calibrate(pairs, references[combination], step=step, n_folds=folds, n_boot=0, seed=seed)
        oof = result.out_of_fold.to_numpy()
        low = high = float("nan")
        if resamples is not None:
            resampled[combination] = weighted_spearman(oof, human_scores, resamples.weights)
            low, high = resamples.interval(resampled[combination], confidence)
        spreads = result.spreads
        rows.append({
            "group": group, "semantic": combination[0], "style": combination[1], "paper": combination == paper,
            "w_std": result.chosen_w_std, "w": result.chosen_w,
            "paper_w_std": float(spreads.w_std(0.5)) if spreads else float("nan"),
            "rho_oof": result.stats["spearman_oof"], "ci_low": low, "ci_high": high,
            "pairs": len(common), "anchors": int(len(np.unique(anchors))),
            "log_sd_sem": spreads.sem if spreads else float("nan"),
            "log_sd_style": spreads.style if spreads else float("nan"),
        })
    paper_rho = next((row["rho_oof"] for row in rows if row["paper"]), None)
    for row in rows:
        combination = (row["semantic"], row["style"])
        row["diff_vs_paper"] = row["rho_oof"] - paper_rho if paper_rho is not None else float("nan")
        row["diff_low"] = row["diff_high"] = float("nan")
        if paper is not None and resamples is not None and combination != paper:
            row["diff_low"], row["diff_high"] = resamples.interval(resampled[combination] - resampled[paper], confidence)
        elif combination == paper:
            row["diff_low"] = row["diff_high"] = 0.0
    return rows


def compare_loaded(ws, data, by_group: dict[str, pd.DataFrame], target: str, options) -> CombinationComparison | None:
    """Every combination that scored a loaded campaign side by side, or None if only one did.

    ``data`` is a :class:`cpdm.analysis.campaign_report.CampaignData`, ``by_group`` its
    usable ratings per rater group, ``options`` an ``AnalysisOptions`` (which
    ratings count, folds, grid step, resamples, seed).
    """
    combinations = [(s, t) for s, t, _ in data_module.scored_backbones(ws, data.campaign_id)]
    if len(combinations) < 2:
        return None
    paper = paper_combination(combinations)
    notes = [] if paper else ["the paper's combination (ViT-L-14/openai + cpdm-inception) was not scored: "
                              "no differences against it"]
    pair_tables = {c: data_module.pair_table(ws, data.campaign_id, c) for c in combinations}
    references = {c: data_module.reference_distances(ws, c) for c in combinations}
    rows = []
    for group, ratings in by_group.items():
        human = data_module.human_scores(ratings, target, zscore=options.zscore)
        try:
            rows += compare_group(pair_tables, references, human, group, paper, folds=options.folds,
                                  step=options.step, n_boot=options.n_boot, seed=options.seed,
                                  resample=options.resample)
        except CpdmError as exc:
            notes.append(f"{group}: left out ({exc})")
    return CombinationComparison(pd.DataFrame(rows, columns=COLUMNS), paper, options.n_boot, notes)


def combinations_figure(table: pd.DataFrame) -> Figure:
    """Out-of-fold Spearman ρ (2AFC score, from judgments) per combination with its 95% interval, one marker
    colour per rater group."""
    from cpdm.analysis.plots import GROUP_COLOURS

    labels = list(dict.fromkeys(f"{plain_name(s)} + {plain_name(t)}" for s, t in zip(table["semantic"], table["style"])))
    groups = list(dict.fromkeys(table["group"]))
    # A table from 2AFC judgments (cpdm.analysis.two_afc_report) holds the out-of-fold 2AFC score instead of ρ.
    value = "rho_oof" if "rho_oof" in table else "score_oof"
    figure = Figure(figsize=(6.4, 1.2 + 0.45 * max(len(labels), 1)), layout="constrained")
    axis = figure.subplots()
    offsets = np.linspace(-0.2, 0.2, len(groups)) if len(groups) > 1 else [0.0]
    for offset, group in zip(offsets, groups):
        rows = table[table["group"] == group]
        y = [labels.index(f"{plain_name(s)} + {plain_name(t)}") + offset for s, t in zip(rows["semantic"], rows["style"])]
        rho = rows[value].to_numpy(dtype=float)
        error = np.vstack([rho - rows["ci_low"].to_numpy(dtype=float), rows["ci_high"].to_numpy(dtype=float) - rho])
        axis.errorbar(rho, y, xerr=np.nan_to_num(error), fmt="o", color=GROUP_COLOURS.get(group, "#374151"),
                      capsize=3, label=group)
    axis.set_yticks(range(len(labels)), labels, fontsize=8)
    axis.invert_yaxis()
    axis.set_xlabel("out-of-fold Spearman ρ of calibrated CM_w with humans (95% CI)" if value == "rho_oof" else
                    "out-of-fold 2AFC score of calibrated CM_w against humans (95% CI)")
    axis.grid(alpha=0.3, axis="x")
    axis.legend(fontsize=8, ncol=len(groups), loc="upper center", bbox_to_anchor=(0.5, -0.25 - 0.5 / max(len(labels), 1)))
    return figure
