"""Benchmark: the full analysis of a large synthetic study.

Default size (the target): 2,000 pairs, 30 raters, 60,000 ratings (10 raters
× 3 questions per pair); Krippendorff's alpha per question and group with
1,000 bootstrap resamples, Spearman / Kendall τ-b / Pearson of four metrics
with bootstrap intervals, a split-half noise ceiling with its interval,
calibration with grouped 5-fold cross-validation over 21 values of w and the
interval of the whole choice of w, and artists' w against lay raters' w for
the three questions (paired intervals). Every interval resamples anchors
(100 anchors × 20 pairs). Target: under 10 s in total on a 2-core machine.

It also times a per-resample Python loop (krippendorff / scipy on each
resample) on a few resamples and prints the vectorised bootstrap's speed-up
side by side.

    python benchmarks/bench_analysis.py           # full size
    python benchmarks/bench_analysis.py --quick   # a quarter of the pairs, 200 resamples
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import krippendorff
import numpy as np
from scipy import stats

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cpdm.analysis.agreement import agreement_table, bootstrap_alpha, value_counts_from_long  # noqa: E402
from cpdm.analysis.calibration import calibrate  # noqa: E402
from cpdm.analysis.correlation import (  # noqa: E402
    correlation_table,
    pair_bootstrap_counts,
    split_half_ceiling,
    weighted_kendall_tau_b,
    weighted_spearman,
)
from cpdm.analysis.data import human_scores, split_groups  # noqa: E402
from cpdm.analysis.groups import compare_groups  # noqa: E402
from cpdm.demo.simulate import synthetic_study  # noqa: E402

LOOP_RESAMPLES = 20


def timed(label: str, times: dict, func, *args, **kwargs):
    """Run one stage; print its wall time and this process's CPU time (on a shared machine the two differ)."""
    start, cpu = time.perf_counter(), time.process_time()
    result = func(*args, **kwargs)
    times[label] = time.perf_counter() - start
    print(f"{label:<28} {times[label]:8.3f} s   (CPU {time.process_time() - cpu:6.3f} s)", flush=True)
    return result


def metric_columns(pairs, reference):
    """CM (paper), CM_w at w = 0.3, and the negated distances."""
    x_ref = np.median(reference["m_sem"] * reference["m_style"])
    pairs["CM"] = 1 - np.minimum(pairs["m_sem"] * pairs["m_style"] / x_ref, 1) ** 2
    d_w = pairs["m_sem"] ** 0.3 * pairs["m_style"] ** 0.7
    x_ref_w = np.median(reference["m_sem"] ** 0.3 * reference["m_style"] ** 0.7)
    pairs["CM_w"] = 1 - np.minimum(d_w / x_ref_w, 1) ** 2
    pairs["-m_sem"] = -pairs["m_sem"]
    pairs["-m_style"] = -pairs["m_style"]
    return ["CM", "CM_w", "-m_sem", "-m_style"]


def compare_all_questions(pairs, groups, reference, n_boot: int) -> list:
    """Artists' w against lay raters' w on each question, as the report computes it."""
    comparisons = []
    for question in ("content", "style", "copy"):
        frame = pairs[["pair", "anchor", "m_sem", "m_style"]]
        for group in ("artists", "lay"):
            scores = human_scores(groups[group], question)[["pair", "human"]]
            frame = frame.merge(scores.rename(columns={"human": f"score_{group}"}), on="pair", how="left")
        comparisons.append(compare_groups(frame, {"artists": "score_artists", "lay": "score_lay"}, reference,
                                          question=question, n_boot=n_boot))
    return comparisons


def loop_speedups(ratings, pairs, n_boot: int) -> dict:
    """Vectorised bootstrap vs a Python loop over resamples (krippendorff / scipy), per resample."""
    copy = ratings[(ratings["question"] == "copy")]
    domain = np.arange(1.0, 6.0)
    counts = value_counts_from_long(copy["pair"].to_numpy(), copy["value"].to_numpy(), domain)
    counts = counts[counts.sum(axis=1) >= 2]
    start = time.perf_counter()
    bootstrap_alpha(counts, "ordinal", domain, n_boot=n_boot, seed=0)
    vector_alpha = (time.perf_counter() - start) / n_boot
    rng = np.random.default_rng(0)
    start = time.perf_counter()
    for _ in range(LOOP_RESAMPLES):
        sample = counts[rng.integers(0, len(counts), len(counts))]
        krippendorff.alpha(value_counts=sample, value_domain=domain, level_of_measurement="ordinal")
    loop_alpha = (time.perf_counter() - start) / LOOP_RESAMPLES

    human = human_scores(ratings, "copy").set_index("pair")["human"]
    x = pairs.set_index("pair").loc[human.index, "CM"].to_numpy()
    y = human.to_numpy()
    weights = pair_bootstrap_counts(len(x), n_boot, np.random.default_rng(1))
    start = time.perf_counter()
    weighted_spearman(x, y, weights)
    weighted_kendall_tau_b(x, y, weights)
    vector_corr = (time.perf_counter() - start) / n_boot
    start = time.perf_counter()
    for _ in range(LOOP_RESAMPLES):
        index = rng.integers(0, len(x), len(x))
        stats.spearmanr(x[index], y[index])
        stats.kendalltau(x[index], y[index])
    loop_corr = (time.perf_counter() - start) / LOOP_RESAMPLES
    print(f"alpha bootstrap per resample:       loop {loop_alpha * 1e3:8.3f} ms   vectorised {vector_alpha * 1e3:8.3f} ms"
          f"   speed-up x{loop_alpha / vector_alpha:.1f}")
    print(f"spearman+kendall per resample:      loop {loop_corr * 1e3:8.3f} ms   vectorised {vector_corr * 1e3:8.3f} ms"
          f"   speed-up x{loop_corr / vector_corr:.1f}")
    return {"alpha_speedup": loop_alpha / vector_alpha, "corr_speedup": loop_corr / vector_corr}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="500 pairs and 200 resamples (well under a minute)")
    args = parser.parse_args(argv)
    n_pairs, n_boot = (500, 200) if args.quick else (2000, 1000)
    n_anchors = n_pairs // 20

    times: dict[str, float] = {}
    pairs, ratings, reference = timed(
        "synthesise study", times, synthetic_study, n_pairs=n_pairs, n_anchors=n_anchors, n_raters=30,
        ratings_per_pair=10, w_true=0.3, seed=0,
    )
    print(f"{n_pairs} pairs, {ratings['rater'].nunique()} raters, {len(ratings)} ratings, "
          f"{n_boot} bootstrap resamples")
    groups = split_groups(ratings)
    times_analysis = {}
    timed("agreement (3 q x 3 groups)", times_analysis, agreement_table, ratings, groups,
          ["content", "style", "copy"], n_boot=n_boot)
    metrics = metric_columns(pairs, reference)
    human = {g: human_scores(frame, "copy").rename(columns={"human": f"human_{g}"}) for g, frame in groups.items()}
    for group, frame in human.items():
        pairs = pairs.merge(frame[["pair", f"human_{group}"]], on="pair", how="left")
    timed("correlations (3 g x 4 m x 3)", times_analysis, correlation_table, pairs, metrics,
          {g: f"human_{g}" for g in groups}, n_boot=n_boot)
    timed("noise ceiling (3 groups)", times_analysis, lambda: [
        split_half_ceiling(frame[frame["question"] == "copy"], n_boot=n_boot) for frame in groups.values()])
    result = timed("calibration (5-fold, 21 w)", times_analysis, calibrate,
                   pairs.rename(columns={"human_artists": "human"}), reference, n_boot=n_boot)
    timed("artists vs lay (3 q)", times_analysis, compare_all_questions, pairs, groups, reference, n_boot)
    total = sum(times_analysis.values())
    print(f"{'total analysis':<28} {total:8.3f} s   (target < 10 s at full size: "
          f"{'met' if total < 10 else 'NOT met'}{', quick run' if args.quick else ''})")
    print(f"calibration chose w = {result.chosen_w:g} [{result.w_ci[0]:g}, {result.w_ci[1]:g}] (true w = 0.3); "
          f"out-of-fold rho {result.summary.iloc[0]['rho']:.3f}; intervals: {result.interval}")
    speedups = loop_speedups(ratings, pairs, n_boot)
    print(
        "RESULT "
        f"pairs={n_pairs} ratings={len(ratings)} n_boot={n_boot} "
        f"agreement_s={times_analysis['agreement (3 q x 3 groups)']:.3f} "
        f"correlations_s={times_analysis['correlations (3 g x 4 m x 3)']:.3f} "
        f"ceiling_s={times_analysis['noise ceiling (3 groups)']:.3f} "
        f"calibration_s={times_analysis['calibration (5-fold, 21 w)']:.3f} "
        f"groups_s={times_analysis['artists vs lay (3 q)']:.3f} "
        f"total_s={total:.3f} chosen_w={result.chosen_w:g} "
        f"alpha_speedup={speedups['alpha_speedup']:.1f} corr_speedup={speedups['corr_speedup']:.1f}"
    )


if __name__ == "__main__":
    main()
