"""Rating under load: next-pair and submit latency with many raters on one workspace.

Builds a workspace with a campaign of 20,000 pairs (overlap artist=5, lay=5:
room for 100,000 more pair ratings, so the raters never run out of pairs
within a phase) that already holds 100,000 submitted pair ratings (300,000
answer rows, from 200 earlier raters), then lets 50 simulated raters loop next-pair + submit
for a fixed time. The raters are threads of one process, each with its own
SQLite connection (half artists, half lay), as in a Streamlit server: one
process, a thread per browser session. Every tenth submit is sent twice with
the same nonce, as a double click would.

Each turn of a rater is what the rating page does: draw the page
(``next_item_for``: the pair the rater holds, or a newly claimed one), then
``submit``; the next page draw claims the following pair. Each of the two is
one write transaction.

Three phases run, each on a fresh copy of the same workspace:

- paced: each rater looks at a pair for 2 to 4 s before submitting (2 s is
  the protocol's fastest answer not flagged as too fast), starting at a
  random moment; this is the load 50 quick humans put on the server;
- saturated: no pause at all; every rater hammers next-pair + submit, which
  measures throughput (latency there is mostly queueing: with one SQLite
  writer, 50 clients wait about 50 x the time of one write);
- recruited: 50 new lay raters arrive through a recruitment link
  (``cpdm.rating.recruit``) at random moments in the first seconds, each
  from its own address with its own platform id: the consent page's visit
  check, then admission (the quota's claim and the new rater, one write
  transaction), then the paced loop. Target: admission p95 under the same
  50 ms; exactly one rater admitted per participant.

Prints p50/p95/p99 latency of next-pair and of submit for each phase, and of
"click to next pair" (a submit plus the next page draw: what a rater waits
for), ratings per second, and the number of lost or duplicated ratings (must
be 0). Target: p95 of next-pair and of submit under 50 ms, paced and
saturated.

    python benchmarks/bench_rating.py            # 20,000 pairs, 100,000 ratings, 50 raters, 20 s per phase
    python benchmarks/bench_rating.py --quick    # 5,000 pairs, 20,000 ratings, 50 raters, 8 s per phase
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import random
import shutil
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cpdm.rating import recruit  # noqa: E402
from cpdm.rating.assignment import rebuild_pair_load  # noqa: E402
from cpdm.store.time import format_time, utc_now  # noqa: E402
from cpdm.rating.auth import create_rater, get_rater  # noqa: E402
from cpdm.rating.campaigns import create_campaign  # noqa: E402
from cpdm.rating.submit import submit  # noqa: E402
from cpdm.store.rows import GenerationRow, add_anchor_in, add_generations, add_prompt, add_variant, make_pairs  # noqa: E402
from cpdm.store.workspace import init_workspace, open_workspace  # noqa: E402

TARGET_P95_MS = 50.0
QUESTIONS = ("content", "style", "copy")
EARLIER_RATERS_PER_ROLE = 100
OVERLAP = 5  # ratings per pair per role


@dataclass(frozen=True)
class Load:
    """The size of a measurement: campaign pairs, earlier pair ratings, concurrent raters, seconds per phase."""

    pairs: int
    ratings: int
    raters: int = 50
    seconds: float = 20.0


FULL_LOAD = Load(pairs=20_000, ratings=100_000, seconds=20.0)
QUICK_LOAD = Load(pairs=5_000, ratings=20_000, seconds=8.0)


def fake_sha(i: int) -> str:
    return hashlib.sha256(f"bench-image-{i}".encode()).hexdigest()


def build_workspace(root: Path, n_pairs: int, n_ratings: int) -> int:
    """A workspace with one campaign of ``n_pairs`` pairs and ``n_ratings`` earlier pair ratings."""
    ws = init_workspace(root)
    n_anchors = max(1, n_pairs // 10)
    with ws.transaction() as conn:
        # Image rows only: next-pair and submit never open the files.
        conn.executemany(
            "INSERT INTO images (sha256, path, width, height, format, bytes) VALUES (?, ?, 512, 512, 'PNG', 1000)",
            [(fake_sha(i), f"images/{i}.png") for i in range(n_anchors + n_pairs)],
        )
        anchor_ids = [add_anchor_in(conn, fake_sha(a), artist="bench") for a in range(n_anchors)]
    variant = add_variant(ws, "original", base_model="sd", method="original")
    prompts = [add_prompt(ws, anchor, "p", origin="manual") for anchor in anchor_ids]
    generations = add_generations(ws, [GenerationRow(prompts[g % n_anchors], variant, g, None, None,
                                                     fake_sha(n_anchors + g)) for g in range(n_pairs)])
    pair_ids = make_pairs(ws, generations)
    campaign = create_campaign(ws, "bench", pair_ids, overlap={"artist": OVERLAP, "lay": OVERLAP})
    earlier = {role: [create_rater(ws, f"earlier-{role}-{i}", role, simulated=True)[0].id
                      for i in range(EARLIER_RATERS_PER_ROLE)] for role in ("artist", "lay")}
    # Rounds over all pairs, roles alternating (artist first on even pairs, lay first on odd ones):
    # both roles keep free slots and no pair gets more than its overlap.
    stamp = format_time(utc_now())
    rng = np.random.default_rng(0)
    rating_rows, assignment_rows = [], []
    for k in range(n_ratings):
        pair, round_ = k % n_pairs + 1, k // n_pairs
        role = "artist" if (round_ + pair) % 2 == 0 else "lay"
        rater = earlier[role][(pair + 37 * round_) % EARLIER_RATERS_PER_ROLE]
        nonce = f"earlier-{k}"
        for question, value in zip(QUESTIONS, rng.integers(1, 6, size=3)):
            rating_rows.append((campaign, pair, rater, question, int(value), stamp, stamp, 5.0, nonce))
        assignment_rows.append((campaign, pair, rater, stamp, stamp))
    with ws.transaction() as conn:
        conn.executemany(
            "INSERT INTO ratings (campaign, pair, rater, question, value, shown_at, submitted_at, seconds, nonce) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", rating_rows)
        conn.executemany(
            "INSERT INTO assignments (campaign, pair, rater, status, assigned_at, expires_at) "
            "VALUES (?, ?, ?, 'done', ?, ?)", assignment_rows)
    rebuild_pair_load(ws, campaign)
    with ws.transaction() as conn:
        conn.execute("ANALYZE")
    ws.close()
    return campaign


def add_raters(root: Path, count: int) -> list[int]:
    """``count`` simulated raters for the phases, half artists and half lay; their ids."""
    ws = open_workspace(root)
    try:
        return [create_rater(ws, f"bench-{i}", "artist" if i % 2 == 0 else "lay", simulated=True)[0].id
                for i in range(count)]
    finally:
        ws.close()


def join_through_link(ws, join: tuple[str, str, str], admit_ms: list) -> int:
    """A participant's arrival through a recruitment link (secret, platform id, client address): the visit, then
    admission.

    Appends the admission's milliseconds (the visit check plus the claim) and returns the new rater's id.
    """
    secret, platform_id, address = join
    query = {recruit.JOIN_PARAM: secret, "PROLIFIC_PID": platform_id}
    t0 = time.perf_counter()
    recruit.visit(ws, query, address)  # the consent page's run
    admission = recruit.admit(ws, query, address)
    admit_ms.append((time.perf_counter() - t0) * 1000)
    if admission.rater is None:
        raise RuntimeError(f"{platform_id} was not admitted: {admission.state}")
    return admission.rater.id


def rater_loop(root, rater_id, stop_at, think_s, out, errors, join=None):
    """One simulated rater: next pair, look at it, submit, until time is up (or nothing is left).

    With ``think_s`` the rater starts at a random moment within the first
    ``think_s`` seconds and looks at each pair for ``think_s`` to twice that,
    as people do: they neither start nor answer in lockstep. With ``join``
    (a recruitment link's secret and a platform id) the rater is first
    admitted through the link, as a crowd participant is. The next pair is
    what the rating page asks for (``next_item_for``).
    """
    rng = random.Random(rater_id)
    ws = open_workspace(root)
    next_ms, submit_ms, saved, resent, admit_ms = [], [], {}, 0, []
    try:
        if think_s:
            time.sleep(rng.uniform(0, think_s))
        if join is not None:
            rater_id = join_through_link(ws, join, admit_ms)
        rater = get_rater(ws, rater_id)
        while time.monotonic() < stop_at:
            t0 = time.perf_counter()
            item = recruit.next_item_for(ws, rater)
            t1 = time.perf_counter()
            next_ms.append((t1 - t0) * 1000)
            if item is None:
                break
            if think_s:
                time.sleep(rng.uniform(think_s, 2 * think_s))
            answers = {q: 1 + (item.pair + i + rater_id) % 5 for i, q in enumerate(QUESTIONS)}
            nonce = uuid.uuid4().hex
            t2 = time.perf_counter()
            result = submit(ws, rater, item.campaign, item.pair, answers, nonce=nonce)
            submit_ms.append((time.perf_counter() - t2) * 1000)
            if result.status == "saved":
                saved[item.pair] = answers
            if len(submit_ms) % 10 == 0:  # a double click: the same request again
                resent += 1
                submit(ws, rater, item.campaign, item.pair, answers, nonce=nonce)
    except Exception as exc:
        errors.append(f"rater {rater_id}: {exc!r}")
    finally:
        ws.close()
    out[rater_id] = (next_ms, submit_ms, saved, resent, admit_ms)


def check_integrity(root, campaign, results) -> tuple[int, int, int]:
    """(lost, duplicated, over-overlap pairs) after the run."""
    ws = open_workspace(root)
    conn = ws.conn
    lost = 0
    merged: dict[int, dict] = {}
    for rater_id, (_, _, saved, _, _) in results:
        merged.setdefault(rater_id, {}).update(saved)
    for rater_id, saved in merged.items():
        stored = {}
        for pair, question, value in conn.execute(
            "SELECT pair, question, value FROM ratings WHERE rater = ?", (rater_id,)
        ):
            stored.setdefault(pair, {})[question] = value
        lost += sum(1 for pair, answers in saved.items() if stored.get(pair) != answers)
        lost += sum(1 for pair in stored if pair not in saved)  # rows nobody was told were saved
    duplicated = conn.execute(
        "SELECT COALESCE(SUM(n - 1), 0) FROM (SELECT COUNT(*) AS n FROM ratings "
        "GROUP BY campaign, pair, rater, question HAVING n > 1)"
    ).fetchone()[0]
    over = conn.execute(
        "SELECT COUNT(*) FROM (SELECT r.pair, x.role, COUNT(DISTINCT r.rater) AS n FROM ratings r "
        "JOIN raters x ON x.id = r.rater WHERE r.campaign = ? GROUP BY r.pair, x.role HAVING n > ?)",
        (campaign, OVERLAP),
    ).fetchone()[0]
    ws.close()
    return lost, duplicated, over


def percentiles(values: list[float]) -> tuple[float, float, float]:
    if not values:
        return (float("nan"),) * 3
    p50, p95, p99 = np.percentile(values, [50, 95, 99])
    return float(p50), float(p95), float(p99)


def run_phase(root, raters, seconds, think_s, joins=None) -> dict:
    """Run every rater in its own thread for ``seconds``; return latencies and what was saved.

    With ``joins`` (one (secret, platform id, address) per rater) the raters are new
    participants who first join through a recruitment link; ``raters`` then
    only numbers them.
    """
    results, errors = {}, []
    stop_at = time.monotonic() + seconds
    threads = [threading.Thread(target=rater_loop, args=(root, r, stop_at, think_s, results, errors),
                                kwargs={"join": joins[i] if joins else None})
               for i, r in enumerate(raters)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    return {
        "next": percentiles([v for r in results.values() for v in r[0]]),
        "submit": percentiles([v for r in results.values() for v in r[1]]),
        # A submit and the page draw after it, per rater in order.
        "click": percentiles([s + n for r in results.values() for s, n in zip(r[1], r[0][1:])]),
        "calls": (sum(len(r[0]) for r in results.values()), sum(len(r[1]) for r in results.values())),
        "saved": sum(len(r[2]) for r in results.values()),
        "resent": sum(r[3] for r in results.values()),
        "rate": sum(len(r[2]) for r in results.values()) / elapsed,
        "admit": percentiles([v for r in results.values() for v in r[4]]),
        "admitted": sum(len(r[4]) for r in results.values()),
        "elapsed": elapsed, "errors": errors, "results": list(results.items()),
    }


def run_phase_on_copy(base, root, campaign, raters, seconds, think_s, during=None, recruits: int = 0) -> dict:
    """:func:`run_phase` on a copy of the workspace at ``base``, so every phase starts from the same ratings.

    ``during``, if given, is called with the copy's path and must return a
    context manager: the phase runs inside it (another process busy on the
    same workspace, say). With ``recruits``, that many new lay raters join
    through a recruitment link instead of ``raters`` (quota: exactly them).
    Adds ``integrity``: (lost, duplicated, over-overlap pairs) of the phase,
    and for recruits ``recruit_integrity``: (raters admitted, platform ids
    admitted more than once).
    """
    shutil.copytree(base, root)
    joins = None
    if recruits:
        secret = open_recruitment_link(root, campaign, recruits)
        joins = [(secret, f"bench-participant-{i}", f"10.{i // 250}.{i % 250}.1") for i in range(recruits)]
        raters = list(range(recruits))
    with during(root) if during else contextlib.nullcontext():
        phase = run_phase(root, raters, seconds, think_s, joins)
    phase["integrity"] = check_integrity(root, campaign, phase["results"])
    if recruits:
        phase["recruit_integrity"] = check_admissions(root)
    return phase


def open_recruitment_link(root, campaign: int, quota: int) -> str:
    """A lay recruitment link on the campaign admitting ``quota`` raters with plenty of pairs each; its secret."""
    ws = open_workspace(root)
    try:
        _link, secret = recruit.create_link(ws, campaign, "lay", quota=quota, per_rater=100_000,
                                            id_param="PROLIFIC_PID", completion_code="BENCH")
        return secret
    finally:
        ws.close()


def check_admissions(root) -> tuple[int, int]:
    """(raters admitted through links, platform ids admitted more than once)."""
    ws = open_workspace(root)
    try:
        return ws.conn.execute(
            "SELECT COUNT(*), COUNT(*) - COUNT(DISTINCT platform_id) FROM recruited_raters").fetchone()
    finally:
        ws.close()


def meets_target(phase: dict) -> bool:
    """Whether a phase kept next-pair and submit p95 under :data:`TARGET_P95_MS`."""
    return phase["next"][1] < TARGET_P95_MS and phase["submit"][1] < TARGET_P95_MS


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smaller campaign, shorter run (under a minute)")
    parser.add_argument("--pairs", type=int,
                        help=f"pairs in the campaign (default {FULL_LOAD.pairs}; quick {QUICK_LOAD.pairs})")
    parser.add_argument("--ratings", type=int,
                        help=f"earlier pair ratings (default {FULL_LOAD.ratings}; quick {QUICK_LOAD.ratings})")
    parser.add_argument("--raters", type=int, default=FULL_LOAD.raters,
                        help=f"simulated concurrent raters (default {FULL_LOAD.raters})")
    parser.add_argument("--seconds", type=float,
                        help=f"run time of each phase (default {FULL_LOAD.seconds:g}; quick {QUICK_LOAD.seconds:g})")
    parser.add_argument("--think", type=float, default=2.0, help="least seconds per pair in the paced phase (default 2; each pair takes 1-2x this)")
    args = parser.parse_args()
    load = QUICK_LOAD if args.quick else FULL_LOAD
    n_pairs = args.pairs or load.pairs
    n_ratings = args.ratings or load.ratings
    seconds = args.seconds or load.seconds
    if n_ratings > 5 * n_pairs:
        parser.error("--ratings may be at most 5 x --pairs (at most 3 earlier ratings per pair and role)")

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "ws"
        t0 = time.perf_counter()
        campaign = build_workspace(root, n_pairs, n_ratings)
        build_s = time.perf_counter() - t0
        raters = add_raters(root, args.raters)
        print(f"workspace: {n_pairs:,} pairs, {n_ratings:,} earlier ratings ({3 * n_ratings:,} rows), "
              f"built in {build_s:.1f} s")
        print(f"{args.raters} raters (threads, one connection each), {seconds:.0f} s per phase, "
              "each phase on a fresh copy of the workspace")
        paced = run_phase_on_copy(root, Path(tmp) / "paced", campaign, raters, seconds, args.think)
        saturated = run_phase_on_copy(root, Path(tmp) / "saturated", campaign, raters, seconds, 0.0)
        recruited = run_phase_on_copy(root, Path(tmp) / "recruited", campaign, raters, seconds, args.think,
                                      recruits=args.raters)
        lost, duplicated, over = (sum(phase["integrity"][i] for phase in (paced, saturated, recruited))
                                  for i in range(3))

    phases = ((f"paced ({args.think:g} s/pair)", "paced", paced), ("saturated (no pause)", "saturated", saturated),
              (f"recruited (join, then {args.think:g} s/pair)", "recruited", recruited))
    print()
    print(f"{'':26}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}{'p95/target':>12}{'calls':>8}")
    for _label, short, phase in phases:
        keys = (("admit", "admission"),) if short == "recruited" else ()
        for key, name in keys + (("next", "next-pair"), ("submit", "submit"), ("click", "click to next")):
            p50, p95, p99 = phase[key]
            calls = {"admit": phase["admitted"], "next": phase["calls"][0]}.get(key, phase["calls"][1])
            print(f"{name + ', ' + short:26}{p50:9.2f}{p95:9.2f}{p99:9.2f}"
                  f"{p95 / TARGET_P95_MS:12.2f}{calls:8d}")
    print()
    for label, _short, phase in phases:
        print(f"{label}: {phase['saved']:,} ratings saved in {phase['elapsed']:.1f} s = {phase['rate']:.0f} ratings/s; "
              f"resent submits (same nonce): {phase['resent']}; lost {phase['integrity'][0]}, "
              f"duplicated {phase['integrity'][1]}, pairs over their overlap {phase['integrity'][2]}")
    print(f"lost ratings: {lost}; duplicated ratings: {duplicated}; pairs over their overlap: {over}")
    admitted, admitted_twice = recruited["recruit_integrity"]
    print(f"recruited: {admitted} of {args.raters} participants admitted through the link, "
          f"{admitted_twice} platform ids admitted twice")
    errors = paced["errors"] + saturated["errors"] + recruited["errors"]
    if errors:
        print(f"errors ({len(errors)}): {errors[:3]}")
    ok = (lost == 0 and duplicated == 0 and over == 0 and not errors and admitted == args.raters
          and admitted_twice == 0)
    for label, _short, phase in phases:
        print(f"target p95 < {TARGET_P95_MS:.0f} ms for next-pair and submit, {label}: "
              f"{'met' if meets_target(phase) else 'NOT met'}")
    print(f"target p95 < {TARGET_P95_MS:.0f} ms for admission through a recruitment link: "
          f"{'met' if recruited['admit'][1] < TARGET_P95_MS else 'NOT met'}")
    print(
        f"RESULT next_p50_ms={paced['next'][0]:.2f} next_p95_ms={paced['next'][1]:.2f} "
        f"next_p99_ms={paced['next'][2]:.2f} submit_p50_ms={paced['submit'][0]:.2f} "
        f"submit_p95_ms={paced['submit'][1]:.2f} submit_p99_ms={paced['submit'][2]:.2f} "
        f"saturated_next_p95_ms={saturated['next'][1]:.2f} saturated_submit_p95_ms={saturated['submit'][1]:.2f} "
        f"saturated_click_p95_ms={saturated['click'][1]:.2f} ratings_per_s={saturated['rate']:.1f} "
        f"admit_p50_ms={recruited['admit'][0]:.2f} admit_p95_ms={recruited['admit'][1]:.2f} "
        f"recruited_next_p95_ms={recruited['next'][1]:.2f} admitted={admitted} "
        f"lost={lost} duplicated={duplicated} over_overlap={over} "
        f"raters={args.raters} pairs={n_pairs} earlier_ratings={n_ratings}"
    )
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
