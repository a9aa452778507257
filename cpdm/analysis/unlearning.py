"""Did unlearning work? The per-variant table: CM on the target concept and on the retain set.

For a variant and a baseline (``original`` by default) the report generates
from the target concept's prompts and from the other anchors' prompts (the
retain set) with the same seeds and settings, pairs each generation with
its anchor, scores the pairs, and reports per set:

* the mean CM of each variant, with a bootstrap interval (target: lower is
  better; retain: it should stay);
* the variant's change against the baseline, paired by prompt and seed,
  with a bootstrap interval;
* where campaigns rated these pairs, the human "copy" mean beside each.

Every interval resamples whole anchors by default (the generations of one
anchor share its image and prompts) with the analysis's interval method
(:mod:`cpdm.analysis.resampling`), named in the table's ``interval``
column; ``resample="pairs"`` resamples single generations instead, for
comparison only.

In UnlearnCanvas's terms, the target row is unlearning accuracy and the
retain row retained accuracy, measured by the CPDM metric.

The images come from :func:`cpdm.generation.batch.run_generation` with the
settings ``cpdm generate`` records, so the report finds the images a
generate job (the unlearning chain's, or one of your own) already made and
generates only what is missing; a rerun only scores and tabulates. Prompts,
scores and ratings are read through the curation and scoring readers and
:mod:`cpdm.analysis.data`, by the analysis's own rules: the "copy" score of
a pair is :func:`~cpdm.analysis.data.human_scores` over
:func:`~cpdm.analysis.data.analysis_ratings` (flagged raters out).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from cpdm.analysis import data as data_module
from cpdm.analysis.campaign_report import DEFAULT_TARGET
from cpdm.analysis.resampling import DEFAULT_RESAMPLE, check_resample, describe_intervals, mean_interval
from cpdm.errors import CpdmError
from cpdm.diffusion.settings import PAPER_GUIDANCE, PAPER_SEED, PAPER_STEPS, GenerationSettings

SETS = ("target", "retain")


@dataclass
class ReportSettings:
    """How the report generates and scores (the paper's generation settings by default)."""

    seeds: tuple[int, ...] = (PAPER_SEED,)
    steps: int = PAPER_STEPS
    guidance: float = PAPER_GUIDANCE
    size: int | None = None
    max_prompts: int | None = None
    max_retain_prompts: int | None = None  # a tighter limit for the retain set alone
    device: str = "cpu"
    offline_tiny: bool = False
    semantic: str | None = None
    style: str | None = None
    n_boot: int = 1000
    resample: str = DEFAULT_RESAMPLE
    progress: bool = True

    def generation(self, first_seed: int, count: int) -> GenerationSettings:
        """How ``cpdm generate`` makes images of seeds ``first_seed`` .. ``first_seed + count - 1``."""
        return GenerationSettings(per_prompt=count, steps=self.steps, guidance=self.guidance, seed=first_seed,
                                  height=self.size, width=self.size)


def concept_matches(artist: str | None, title: str | None, concepts) -> bool:
    """True when an anchor's artist (or title) and one of the concepts name each other (case-insensitive)."""
    for text in (artist, title):
        if not text:
            continue
        lowered = text.lower()
        if any(c.lower() in lowered or lowered in c.lower() for c in concepts if c.strip()):
            return True
    return False


def split_prompts(ws, concepts, max_prompts: int | None = None,
                  max_retain_prompts: int | None = None) -> dict[str, list[tuple[int, int, str]]]:
    """(prompt id, anchor id, text) of the target concept's anchors and of the others, oldest first.

    Each set keeps at most ``max_prompts``; the retain set at most ``max_retain_prompts`` too.
    """
    from cpdm.curation.anchors import list_anchors
    from cpdm.curation.prompts import prompt_rows

    anchors = {anchor["id"]: anchor for anchor in list_anchors(ws)}
    split = {name: [] for name in SETS}
    for prompt in prompt_rows(ws):
        anchor = anchors[prompt.anchor]
        target = concept_matches(anchor["artist"], anchor["title"], concepts)
        split["target" if target else "retain"].append((prompt.id, prompt.anchor, prompt.text))
    if max_prompts is not None:
        split = {name: found[:max_prompts] for name, found in split.items()}
    if max_retain_prompts is not None:
        split["retain"] = split["retain"][:max_retain_prompts]
    if not split["target"]:
        raise CpdmError(f"no prompts of anchors by {', '.join(concepts)}: import its anchors and prompts first")
    if not split["retain"]:
        raise CpdmError("no prompts of other anchors: the retain set is empty")
    return split


def seed_runs(seeds) -> list[tuple[int, int]]:
    """(first seed, count) of each run of consecutive seeds: (23,) -> [(23, 1)]; (1, 2, 5) -> [(1, 2), (5, 1)]."""
    runs: list[tuple[int, int]] = []
    for seed in sorted(set(seeds)):
        if runs and runs[-1][0] + runs[-1][1] == seed:
            runs[-1] = (runs[-1][0], runs[-1][1] + 1)
        else:
            runs.append((seed, 1))
    return runs


def generate_variant(ws, variant, prompts, settings: ReportSettings) -> dict[tuple[int, int], int]:
    """Generation ids of ``variant`` by (prompt, seed), for every prompt and seed, generating only what is missing."""
    from cpdm.generation.batch import run_generation

    prompt_ids = [prompt_id for prompt_id, _, _ in prompts]
    ids = {}
    for first_seed, count in seed_runs(settings.seeds):
        made = run_generation(ws, variant=variant.name, prompt_ids=prompt_ids,
                              settings=settings.generation(first_seed, count), device=settings.device,
                              offline_tiny=settings.offline_tiny, progress=settings.progress)
        ids.update(made.ids)
    return ids


def _scored_frame(ws, generations: dict[tuple[int, int], int], prompts, semantic: str, style: str) -> pd.DataFrame:
    """Each generation's normal pair with its scores (generations without scores left out).

    Columns generation, prompt, seed, anchor, pair, m_sem, m_style.
    """
    from cpdm.scoring.reader import load_scores

    anchor_of = {prompt_id: anchor for prompt_id, anchor, _ in prompts}
    made = pd.DataFrame([(generation, prompt, seed, anchor_of[prompt]) for (prompt, seed), generation
                         in generations.items()], columns=["generation", "prompt", "seed", "anchor"])
    scores = load_scores(ws, semantic, style)
    scores = scores.loc[scores["kind"] == "normal", ["generation", "pair", "m_sem", "m_style"]]
    return made.merge(scores.astype({"generation": "int64"}), on="generation").sort_values("generation")


def copy_means(ws, pair_ids) -> dict[int, float]:
    """Mean human "copy" score per pair that any campaign rated, by the analysis's rules (flagged raters out)."""
    ratings = data_module.analysis_ratings(data_module.load_pair_ratings(ws, pair_ids))
    scores = data_module.human_scores(ratings, DEFAULT_TARGET)
    return {int(pair): float(human) for pair, human in zip(scores["pair"], scores["human"])}


def mean_with_interval(values, anchors, settings: "ReportSettings", seed: int = 0) -> tuple[float, float, float]:
    """(mean, low, high) of ``values`` (one per generation; NaNs dropped); the interval resamples ``settings.resample``."""
    values = np.asarray(values, dtype=np.float64)
    finite = values[np.isfinite(values)]
    if len(finite) == 0:
        return float("nan"), float("nan"), float("nan")
    low, high = mean_interval(values, anchors, settings.n_boot, seed, unit=settings.resample)
    return float(finite.mean()), low, high


def unlearning_report(ws, variant_name: str, vs: str = "original", settings: ReportSettings | None = None) -> pd.DataFrame:
    """One row per set (target, retain): CM of the variant and the baseline, the change, human copy means."""
    from cpdm import metric
    from cpdm.scoring.engine import score_pairs
    from cpdm.scoring.reader import reference_scale_for
    from cpdm.store.rows import get_variant, make_pairs

    settings = settings or ReportSettings()
    check_resample(settings.resample)
    variant, baseline = get_variant(ws, variant_name), get_variant(ws, vs)
    if variant.id == baseline.id:
        raise CpdmError("compare a variant with another one (--vs)")
    concepts = variant.concepts or baseline.concepts
    if not concepts:
        raise CpdmError(f"variant {variant.name!r} names no concept: nothing tells the target set from the retain set")
    split = split_prompts(ws, concepts, settings.max_prompts, settings.max_retain_prompts)
    generations = {(name, model.name): generate_variant(ws, model, split[name], settings)
                   for name in SETS for model in (variant, baseline)}
    pair_ids = make_pairs(ws, [g for ids in generations.values() for g in ids.values()])
    score_kwargs = {key: value for key, value in (("semantic", settings.semantic), ("style", settings.style)) if value}
    scored = score_pairs(ws, pair_ids, device=settings.device, offline_tiny=settings.offline_tiny,
                         progress=settings.progress, **score_kwargs)
    x_ref = reference_scale_for(ws, scored.semantic, scored.style)
    rows = []
    for name in SETS:
        frames = {}
        for model in (variant, baseline):
            frame = _scored_frame(ws, generations[(name, model.name)], split[name], scored.semantic, scored.style)
            frame["cm"] = metric.cm_paper(frame["m_sem"].to_numpy(), frame["m_style"].to_numpy(), x_ref)
            frame["release_score"] = metric.release_score(frame["m_sem"].to_numpy(), frame["m_style"].to_numpy())
            frame["copy"] = frame["pair"].map(copy_means(ws, frame["pair"]))
            frames[model.name] = frame
        ours, theirs = frames[variant.name], frames[baseline.name]
        matched = ours.merge(theirs, on=["prompt", "seed"], suffixes=("", "_base"))
        mean, low, high = mean_with_interval(ours["cm"], ours["anchor"], settings)
        base_mean, base_low, base_high = mean_with_interval(theirs["cm"], theirs["anchor"], settings)
        change, change_low, change_high = mean_with_interval(matched["cm"] - matched["cm_base"], matched["anchor"],
                                                             settings)
        rows.append({
            "set": name, "variant": variant.name, "baseline": baseline.name, "prompts": len(split[name]),
            "generations": len(ours), "cm": mean, "cm_low": low, "cm_high": high,
            "cm_baseline": base_mean, "cm_baseline_low": base_low, "cm_baseline_high": base_high,
            "change": change, "change_low": change_low, "change_high": change_high,
            "copy": float(ours["copy"].mean()) if ours["copy"].notna().any() else float("nan"),
            "copy_baseline": float(theirs["copy"].mean()) if theirs["copy"].notna().any() else float("nan"),
            "rated": int(ours["copy"].notna().sum()),
            "anchors": int(ours["anchor"].nunique()),
            "interval": describe_intervals(settings.resample, settings.n_boot),
            **release_score_columns(ours, theirs, settings),
        })
    return pd.DataFrame(rows)


# --- The CPDM release's own number beside CM ------------------------------------------------------------

def release_score_columns(ours: pd.DataFrame, theirs: pd.DataFrame, settings: ReportSettings) -> dict:
    """Mean release score (M_sem · M_style)² of the variant and the baseline, with intervals like CM's.

    The number the CPDM release reports (no Norm, lower = closer), so a row
    can be laid beside the paper's tables; :func:`cpdm.metric.release_score`.
    """
    mean, low, high = mean_with_interval(ours["release_score"], ours["anchor"], settings)
    base, base_low, base_high = mean_with_interval(theirs["release_score"], theirs["anchor"], settings)
    return {"release_score": mean, "release_score_low": low, "release_score_high": high,
            "release_score_baseline": base, "release_score_baseline_low": base_low,
            "release_score_baseline_high": base_high}


def format_release_scores(table: pd.DataFrame) -> list[str]:
    """One line per set: the variant's and the baseline's mean release score with intervals."""
    lines = ["release_score = mean (M_sem*M_style)^2, the CPDM release's number (no Norm; lower = closer):"]
    for row in table.itertuples():
        variant = _cell(row.release_score, row.release_score_low, row.release_score_high)
        baseline = _cell(row.release_score_baseline, row.release_score_baseline_low, row.release_score_baseline_high)
        lines.append(f"{row.set:<7} variant {variant}   baseline {baseline}")
    return lines


def _cell(mean: float, low: float, high: float) -> str:
    return f"{mean:.4g}" + (f" [{low:.4g}, {high:.4g}]" if np.isfinite(low) else "")


def format_report(table: pd.DataFrame) -> str:
    """The report as aligned text: one line per set."""
    lines = [f"{'set':<7} {'CM variant [95% CI]':<26} {'CM baseline [95% CI]':<26} {'change [95% CI]':<28} "
             f"{'copy':>6} {'copy base':>9}  n"]
    for row in table.itertuples():
        def cell(mean, low, high, signed=False):
            text = f"{mean:+.3f}" if signed else f"{mean:.3f}"
            return text + (f" [{low:.3f}, {high:.3f}]" if np.isfinite(low) else "")

        lines.append(
            f"{row.set:<7} {cell(row.cm, row.cm_low, row.cm_high):<26} "
            f"{cell(row.cm_baseline, row.cm_baseline_low, row.cm_baseline_high):<26} "
            f"{cell(row.change, row.change_low, row.change_high, signed=True):<28} "
            f"{row.copy:6.2f} {row.copy_baseline:9.2f}  {row.generations}"
        )
    lines.append("target: lower CM is better (the concept is copied less); retain: CM should stay.")
    lines += format_release_scores(table)
    if len(table):
        lines.append(f"intervals: {table['interval'].iloc[0]}")
    return "\n".join(lines)
