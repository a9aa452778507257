"""Benchmark: how many judgments each design needs to pin w to ±0.1, for the same simulated raters.

Designs (:func:`cpdm.analysis.judgment_planning.plan_judgments`): Likert ratings of
pairs on the copy question (w by Spearman ρ, as calibration chooses it),
and 2AFC triplets, random, balanced or active (w maximising the 2AFC
score; the active queue of :mod:`cpdm.rating.active`). The raters are those
of :func:`cpdm.demo.simulate.synthetic_study`: a pair's latent copy score is
its CM at the planted w on the 1–5 scale; a rating adds the rater's
leniency and noise; a choice between two generations follows the difference
of their latent scores, logistic with the scale of the same noise (the
leniency cancels), "can't tell" now and then when they nearly tie.

A study draws 20 anchors (about 8 generations each) from a pool of 50; the
half-width of the central 95% of the w chosen by simulated studies is
followed as judgments come in, and the judgments needed are where it
crosses 0.1 (log-interpolated between budgets; nan when no budget simulated
reaches it). Goal: active ≤ half of random.

    python benchmarks/bench_judgments.py           # 200 simulated studies per design, up to 3000 judgments
    python benchmarks/bench_judgments.py --quick   # 60 studies, up to 1500 judgments (under a minute)
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cpdm.analysis.judgment_planning import JUDGMENT_DESIGNS, JudgmentWorld, plan_judgments  # noqa: E402
from cpdm.analysis.planning import PRECISION_TARGET  # noqa: E402
from cpdm.demo.simulate import LENIENCY_SD, NOISE_SD, synthetic_study  # noqa: E402


def world(w_true: float, seed: int) -> JudgmentWorld:
    """The simulated raters' world: 50 anchors, 400 pairs, reference pairs, latent copy = 1 + 4·CM_{w_true}."""
    pairs, _, reference = synthetic_study(n_pairs=400, n_anchors=50, n_raters=2, ratings_per_pair=1, w_true=w_true,
                                          seed=seed)
    pairs = pairs.assign(latent=1 + 4 * pairs["cm_true"])
    return JudgmentWorld(pairs, NOISE_SD, reference=reference, leniency_sd=LENIENCY_SD)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="60 simulated studies, up to 1500 judgments")
    parser.add_argument("--w", type=float, default=0.5, help="the planted w (default 0.5)")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    replicates, largest = (60, 1500) if args.quick else (200, 3000)
    start, cpu = time.perf_counter(), time.process_time()
    plan = plan_judgments(world(args.w, args.seed), anchors=20, replicates=replicates, max_judgments=largest,
                          w_true=args.w, seed=args.seed)
    elapsed = time.perf_counter() - start
    table = plan.table.pivot(index="judgments", columns="design", values="halfwidth")[list(JUDGMENT_DESIGNS)]
    print(f"half-width of the central 95% of the chosen w ({replicates} simulated studies of 20 anchors, "
          f"planted w = {args.w:g})")
    print(table.to_string(float_format=lambda v: f"{v:.3f}"))
    bias = plan.table.groupby("design")["bias"].apply(lambda b: b.iloc[-1])
    print("mean chosen w minus the planted w at the largest budget: "
          + ", ".join(f"{d} {bias[d]:+.3f}" for d in JUDGMENT_DESIGNS))
    for line in plan.summary_lines():
        print(line)
    needed = plan.needed
    print("ratios against Likert: " + ", ".join(f"{d} {needed[d] / needed['likert']:.2f}" for d in JUDGMENT_DESIGNS))
    ratio = needed["active"] / needed["random"]
    if math.isnan(needed["random"]) and not math.isnan(needed["active"]):
        bound = needed["active"] / largest
        verdict = f"active / random < {bound:.2f} (random did not reach the target within {largest} judgments; goal " \
                  f"≤ 0.5: {'met' if bound <= 0.5 else 'not shown'})"
    else:
        verdict = f"active / random = {ratio:.2f} (goal ≤ 0.5: {'met' if ratio <= 0.5 else 'NOT met'})"
    print(f"{verdict}; target ±{PRECISION_TARGET:g}; {elapsed:.1f} s wall, {time.process_time() - cpu:.1f} s CPU"
          f"{', quick run' if args.quick else ''}")
    print("RESULT " + " ".join(f"{d}={needed[d]:.0f}" for d in JUDGMENT_DESIGNS)
          + f" active_over_random={ratio:.3f}")


if __name__ == "__main__":
    main()
