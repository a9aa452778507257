"""Did unlearning work? The per-variant table: CM on the target concept and on the retain set.

For a variant and a baseline (``original`` by default) of the same base
model, the report generates from the target concept's prompts and from the
other anchors' prompts (the retain set) with the same seeds and settings,
pairs each generation with its anchor, scores the pairs, and reports per set:

* the mean CM of each variant, with a bootstrap interval (target: lower is
  better; retain: it should stay);
* the variant's change against the baseline, paired by prompt and seed,
  with a bootstrap interval;
* the same three figures for two measures CM hides: the uncapped ratio
  x / x_ref (x = M_sem · M_style), which CM clips at 1, so that every
  generation beyond the reference scale scores CM 0 however far it went;
  and the CPDM release's own number, (M_sem · M_style)², with no x_ref;
  both grow as generations move away from their anchors;
* where campaigns rated these pairs, the human "copy" mean beside each;
* where a comparative (2AFC) campaign judged generations of the variant
  against the baseline's on the set's anchors, the human Bradley–Terry
  comparison: ``human_bt`` = θ(variant) − θ(baseline), the log-odds that a
  rater judges the variant's generation more of a copy (below 0: it copies
  less), with its interval over anchors (:mod:`cpdm.analysis.bradley_terry`;
  from the generations that campaign judged, which need not be the
  report's own).

The target set is the anchors whose artist or title is the concept, by the
exact rule of :mod:`cpdm.unlearning.concepts` (the one UCE uses to leave
the concept out of its preserve set), or the anchors chosen by artist or
id (:class:`TargetRule`); each row lists its anchors.

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
from cpdm.analysis.data import DEFAULT_TARGET
from cpdm.analysis.resampling import DEFAULT_RESAMPLE, check_resample, describe_intervals, mean_interval
from cpdm.errors import CpdmError
from cpdm.diffusion.settings import PAPER_GUIDANCE, PAPER_SEED, PAPER_STEPS, GenerationSettings
from cpdm.unlearning.concepts import anchor_names_concept, names_concept

SETS = ("target", "retain")


@dataclass
class ReportSettings:
    """How the report picks its sets, generates and scores (the paper's generation settings by default)."""

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
    # The concept's anchors chosen by hand (see TargetRule); none: the anchors that name the concept.
    target_artists: tuple[str, ...] = ()
    target_anchors: tuple[int, ...] = ()

    def generation(self, first_seed: int, count: int) -> GenerationSettings:
        """How ``cpdm generate`` makes images of seeds ``first_seed`` .. ``first_seed + count - 1``."""
        return GenerationSettings(per_prompt=count, steps=self.steps, guidance=self.guidance, seed=first_seed,
                                  height=self.size, width=self.size)


@dataclass(frozen=True)
class TargetRule:
    """Which anchors are the concept's (the target set); every other anchor is in the retain set.

    By default an anchor is the concept's when its artist or its title is
    one of ``concepts`` (the same words in any case:
    :func:`cpdm.unlearning.concepts.names_concept`). Chosen ``artists``
    (the same rule on the artist alone) or ``anchor_ids`` replace that rule:
    then exactly those anchors are the target.
    """

    concepts: tuple[str, ...] = ()
    artists: tuple[str, ...] = ()
    anchor_ids: tuple[int, ...] = ()

    @property
    def chosen(self) -> bool:
        """Whether the target was chosen by artist or id rather than by the concept."""
        return bool(self.artists or self.anchor_ids)

    def is_target(self, anchor: dict) -> bool:
        """Whether an anchor (``list_anchors``' form: id, artist, title) is the concept's."""
        if self.chosen:
            return anchor["id"] in self.anchor_ids or names_concept(anchor["artist"], self.artists)
        return anchor_names_concept(anchor["artist"], anchor["title"], self.concepts)

    def describe(self) -> str:
        """How the target set was chosen, in words."""
        if not self.chosen:
            return f"artist or title equal to the concept {_quoted(self.concepts)} (any case)"
        parts = []
        if self.artists:
            parts.append(f"artist {_quoted(self.artists)}")
        if self.anchor_ids:
            parts.append("anchor " + ", ".join(f"#{anchor_id}" for anchor_id in sorted(self.anchor_ids)))
        return "chosen by " + " and ".join(parts)

    def check(self, anchors: list[dict]) -> None:
        """Refuse a chosen anchor id that no anchor has, or a chosen artist no anchor has."""
        ids = {anchor["id"] for anchor in anchors}
        unknown = sorted(set(self.anchor_ids) - ids)
        if unknown:
            raise CpdmError(f"no anchor with id {', '.join(map(str, unknown))} "
                            "(--target-anchor; see cpdm anchors list)")
        for artist in self.artists:
            if not any(names_concept(anchor["artist"], [artist]) for anchor in anchors):
                raise CpdmError(f"no anchor's artist is {artist!r} (--target-artist; see cpdm anchors list)")


def _quoted(texts) -> str:
    return " or ".join(repr(text) for text in texts)


def split_prompts(ws, rule: TargetRule, max_prompts: int | None = None,
                  max_retain_prompts: int | None = None) -> dict[str, list[tuple[int, int, str]]]:
    """(prompt id, anchor id, text) of the target concept's anchors and of the others, oldest first.

    ``rule`` tells the concept's anchors from the others. Each set keeps at
    most ``max_prompts``; the retain set at most ``max_retain_prompts`` too.
    """
    from cpdm.curation.anchors import list_anchors
    from cpdm.curation.prompts import prompt_rows

    listed = list_anchors(ws)
    rule.check(listed)
    anchors = {anchor["id"]: anchor for anchor in listed}
    split = {name: [] for name in SETS}
    for prompt in prompt_rows(ws):
        target = rule.is_target(anchors[prompt.anchor])
        split["target" if target else "retain"].append((prompt.id, prompt.anchor, prompt.text))
    if max_prompts is not None:
        split = {name: found[:max_prompts] for name, found in split.items()}
    if max_retain_prompts is not None:
        split["retain"] = split["retain"][:max_retain_prompts]
    if not split["target"]:
        raise CpdmError(_no_target_message(rule, listed))
    if not split["retain"]:
        raise CpdmError("no prompts of other anchors: the retain set is empty")
    return split


def _no_target_message(rule: TargetRule, anchors: list[dict], shown: int = 8) -> str:
    """Why the target set is empty: the rule, and the artists there are to choose from."""
    if rule.chosen:
        return f"the anchors {rule.describe()} have no prompts: add prompts first"
    artists = sorted({anchor["artist"] for anchor in anchors if anchor["artist"]}, key=str.casefold)
    listed = ", ".join(artists[:shown]) + (f" and {len(artists) - shown} more" if len(artists) > shown else "")
    return (f"no prompts of anchors by {', '.join(rule.concepts)} (an anchor is the concept's when its artist or "
            f"title is the concept, in any case; artists here: {listed or 'none'}); import its anchors and prompts "
            "first, or choose them with --target-artist / --target-anchor")


def anchor_listing(anchors: dict[int, dict], ids) -> dict:
    """The ``anchor_ids`` ("1 2 3") and ``anchor_artists`` ("Ada Target (3); Ben (1)") of a set's anchors."""
    ids = sorted(set(ids))
    counts: dict[str, int] = {}
    for anchor_id in ids:
        artist = anchors[anchor_id]["artist"] or "(no artist)"
        counts[artist] = counts.get(artist, 0) + 1
    return {"anchor_ids": " ".join(map(str, ids)),
            "anchor_artists": "; ".join(f"{artist} ({count})" for artist, count in counts.items())}


def check_same_base(variant_name: str, variant_base: str, baseline_name: str, baseline_base: str) -> None:
    """Refuse to compare variants of two base models: the change would be the models', not the unlearning's."""
    if variant_base != baseline_base:
        raise CpdmError(f"variant {variant_name!r} is of base model {variant_base!r}, its baseline {baseline_name!r} "
                        f"of {baseline_base!r}: compare a variant with a baseline of its own base model (--vs)")


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


# Per generation, the measures the report summarises, with the name of their paired change's column.
# CM's change keeps the column name it always had.
MEASURES = {"cm": "change", "ratio": "ratio_change", "release_score": "release_score_change"}


HUMAN_BT_COLUMNS = ("human_bt_campaign", "human_bt", "human_bt_low", "human_bt_high", "human_bt_judgments")


def human_bradley_terry(ws, variant: str, baseline: str, anchors, settings: "ReportSettings") -> dict:
    """The human Bradley–Terry comparison of ``variant`` with ``baseline`` on ``anchors`` (``HUMAN_BT_COLUMNS``).

    From the 2afc campaign that judged the two variants against each other on
    these anchors (flagged raters out); an empty campaign name and NaNs when none did.
    """
    from cpdm.analysis.bradley_terry import judged_variant_triplets, strength_difference

    none = {"human_bt_campaign": "", "human_bt": float("nan"), "human_bt_low": float("nan"),
            "human_bt_high": float("nan"), "human_bt_judgments": 0}
    found = judged_variant_triplets(ws, [variant, baseline], anchors=[int(a) for a in anchors])
    if found is None:
        return none
    difference = strength_difference(found[1], variant, baseline, n_boot=settings.n_boot,
                                     resample=settings.resample)
    if difference is None:
        return none
    return {"human_bt_campaign": found[0], "human_bt": difference["difference"], "human_bt_low": difference["ci_low"],
            "human_bt_high": difference["ci_high"], "human_bt_judgments": int(round(difference["judgments"]))}


def add_measures(frame: pd.DataFrame, x_ref: float) -> pd.DataFrame:
    """Each generation's CM, uncapped ratio x / x_ref and release score (M_sem · M_style)², x = M_sem · M_style."""
    from cpdm import metric

    m_sem, m_style = frame["m_sem"].to_numpy(), frame["m_style"].to_numpy()
    frame["cm"] = metric.cm_paper(m_sem, m_style, x_ref)
    frame["ratio"] = m_sem * m_style / x_ref  # what CM's Norm clips at 1
    frame["release_score"] = metric.release_score(m_sem, m_style)
    return frame


def measure_columns(measure: str, ours: pd.DataFrame, theirs: pd.DataFrame, matched: pd.DataFrame,
                    settings: ReportSettings) -> dict:
    """Mean of a measure for the variant and the baseline, and the paired change, each with its interval."""
    change = MEASURES[measure]
    columns = {}
    for name, values, anchors in (
            (measure, ours[measure], ours["anchor"]),
            (f"{measure}_baseline", theirs[measure], theirs["anchor"]),
            (change, matched[measure] - matched[f"{measure}_base"], matched["anchor"])):
        mean, low, high = mean_with_interval(values, anchors, settings)
        columns.update({name: mean, f"{name}_low": low, f"{name}_high": high})
    return columns


def unlearning_report(ws, variant_name: str, vs: str = "original",
                      settings: ReportSettings | None = None) -> pd.DataFrame:
    """One row per set (target, retain): CM, x / x_ref and the release score of the variant and the baseline,
    their changes, human copy means, and which anchors the set holds."""
    from cpdm.curation.anchors import list_anchors
    from cpdm.scoring.engine import score_pairs
    from cpdm.scoring.reader import reference_scale_for
    from cpdm.store.rows import get_variant, make_pairs

    settings = settings or ReportSettings()
    check_resample(settings.resample)
    variant, baseline = get_variant(ws, variant_name), get_variant(ws, vs)
    if variant.id == baseline.id:
        raise CpdmError("compare a variant with another one (--vs)")
    check_same_base(variant.name, variant.base_model, baseline.name, baseline.base_model)
    rule = TargetRule(tuple(variant.concepts or baseline.concepts or ()), tuple(settings.target_artists),
                      tuple(settings.target_anchors))
    if not rule.concepts and not rule.chosen:
        raise CpdmError(f"variant {variant.name!r} names no concept: nothing tells the target set from the retain "
                        "set (choose its anchors with --target-artist or --target-anchor)")
    split = split_prompts(ws, rule, settings.max_prompts, settings.max_retain_prompts)
    generations = {(name, model.name): generate_variant(ws, model, split[name], settings)
                   for name in SETS for model in (variant, baseline)}
    pair_ids = make_pairs(ws, [g for ids in generations.values() for g in ids.values()])
    score_kwargs = {key: value for key, value in (("semantic", settings.semantic), ("style", settings.style)) if value}
    scored = score_pairs(ws, pair_ids, device=settings.device, offline_tiny=settings.offline_tiny,
                         progress=settings.progress, **score_kwargs)
    x_ref = reference_scale_for(ws, scored.semantic, scored.style)
    anchors = {anchor["id"]: anchor for anchor in list_anchors(ws)}
    rows = []
    for name in SETS:
        frames = {}
        for model in (variant, baseline):
            frame = _scored_frame(ws, generations[(name, model.name)], split[name], scored.semantic, scored.style)
            frame = add_measures(frame, x_ref)
            frame["copy"] = frame["pair"].map(copy_means(ws, frame["pair"]))
            frames[model.name] = frame
        ours, theirs = frames[variant.name], frames[baseline.name]
        matched = ours.merge(theirs, on=["prompt", "seed"], suffixes=("", "_base"))
        rows.append({
            "set": name, "variant": variant.name, "baseline": baseline.name, "prompts": len(split[name]),
            "generations": len(ours), **measure_columns("cm", ours, theirs, matched, settings),
            "copy": float(ours["copy"].mean()) if ours["copy"].notna().any() else float("nan"),
            "copy_baseline": float(theirs["copy"].mean()) if theirs["copy"].notna().any() else float("nan"),
            "rated": int(ours["copy"].notna().sum()),
            **human_bradley_terry(ws, variant.name, baseline.name, ours["anchor"].unique(), settings),
            "anchors": int(ours["anchor"].nunique()),
            "interval": describe_intervals(settings.resample, settings.n_boot),
            "x_ref": x_ref,
            **measure_columns("ratio", ours, theirs, matched, settings),
            **measure_columns("release_score", ours, theirs, matched, settings),
            "target_rule": rule.describe(),
            **anchor_listing(anchors, [anchor for _, anchor, _ in split[name]]),
        })
    return pd.DataFrame(rows)


def _cell(mean: float, low: float, high: float, number: str = ".3f", signed: bool = False) -> str:
    """A mean with its interval, "0.250 [0.000, 0.750]" (no interval when there is none)."""
    text = format(mean, ("+" if signed else "") + number)
    return text + (f" [{low:{number}}, {high:{number}}]" if np.isfinite(low) else "")


def _measure_lines(table: pd.DataFrame, measure: str, title: str, number: str) -> list[str]:
    """A block of the text report: one line per set with the measure's variant, baseline and change."""
    change = MEASURES[measure]
    lines = [title, f"  {'set':<7} {'variant [95% CI]':<30} {'baseline [95% CI]':<30} change [95% CI]"]
    for row in table.to_dict("records"):
        cells = [_cell(row[name], row[f"{name}_low"], row[f"{name}_high"], number, signed=name == change)
                 for name in (measure, f"{measure}_baseline", change)]
        lines.append(f"  {row['set']:<7} {cells[0]:<30} {cells[1]:<30} {cells[2]}")
    return lines


def _listed_ids(ids: str, shown: int = 12) -> str:
    """"#1 #2 #3", the first ``shown`` ids of a long list and how many there are in all."""
    numbers = ids.split()
    text = " ".join(f"#{number}" for number in numbers[:shown])
    return text + (f" … ({len(numbers)} in all)" if len(numbers) > shown else "")


def _human_bt_lines(table: pd.DataFrame) -> list[str]:
    """The human Bradley–Terry comparison per set, when a 2AFC campaign judged the variant against the baseline."""
    if "human_bt" not in table or not np.isfinite(table["human_bt"].to_numpy(dtype=float)).any():
        return []
    campaigns = sorted({name for name in table["human_bt_campaign"] if name})
    lines = [f"human Bradley–Terry (2AFC campaign {', '.join(repr(c) for c in campaigns)}): variant − baseline "
             "log-strength of copy-ness; below 0 = judged less of a copy than the baseline:"]
    for row in table.to_dict("records"):
        if np.isfinite(row["human_bt"]):
            lines.append(f"  {row['set']:<7} {_cell(row['human_bt'], row['human_bt_low'], row['human_bt_high'], signed=True)}"
                         f" from {row['human_bt_judgments']} judgments")
        else:
            lines.append(f"  {row['set']:<7} not judged")
    return lines


def format_report(table: pd.DataFrame) -> str:
    """The report as aligned text: CM per set, then x / x_ref and the release score, then the sets' anchors."""
    lines = [f"{'set':<7} {'CM variant [95% CI]':<26} {'CM baseline [95% CI]':<26} {'change [95% CI]':<28} "
             f"{'copy':>6} {'copy base':>9}  n"]
    for row in table.itertuples():
        lines.append(
            f"{row.set:<7} {_cell(row.cm, row.cm_low, row.cm_high):<26} "
            f"{_cell(row.cm_baseline, row.cm_baseline_low, row.cm_baseline_high):<26} "
            f"{_cell(row.change, row.change_low, row.change_high, signed=True):<28} "
            f"{row.copy:6.2f} {row.copy_baseline:9.2f}  {row.generations}"
        )
    lines.append("target: lower CM is better (the concept is copied less); retain: CM should stay.")
    if not len(table):
        return "\n".join(lines)
    x_ref = table["x_ref"].iloc[0]
    lines += _measure_lines(table, "ratio", f"x / x_ref, x = M_sem·M_style, x_ref = {x_ref:.4g}, uncapped (CM counts "
                                            "every x beyond x_ref as 0); higher = further from the anchors:", ".3f")
    lines += _measure_lines(table, "release_score", "release score (M_sem·M_style)², the CPDM release's number "
                                                    "(no x_ref); higher = further from the anchors:", ".4g")
    lines += _human_bt_lines(table)
    for row in table.to_dict("records"):
        chosen = row["target_rule"] if row["set"] == "target" else "every other anchor"
        lines.append(f"{row['set']} ({chosen}): {row['anchors']} anchors {_listed_ids(row['anchor_ids'])}; "
                     f"by artist: {row['anchor_artists']}")
    lines.append(f"intervals: {table['interval'].iloc[0]}")
    return "\n".join(lines)
