"""Triplets for comparative (2AFC) campaigns: which pairs of generations raters compare, and the campaign itself.

A *triplet* is an anchor with two of its pairs. A normal triplet is two
``normal`` pairs of the same anchor, any variants (so "original against
unlearned" and "two unlearned methods" are both asked), stored with
``first_pair < second_pair``. An attention-check triplet (kind ``check``) is
the anchor's ``check_identical`` pair (first) against its
``check_unrelated`` pair (second): choosing the identical side passes.

Designs (:func:`design_triplets`), per anchor, with ``k`` normal pairs and so
``k·(k−1)/2`` candidate triplets:

- ``balanced``: ``n`` triplets whose generations appear as equally often as
  the anchor allows (each in ``2n/k`` triplets, rounded up or down), every
  anchor the same ``n`` (fewer only where an anchor has fewer candidates);
- ``random``: ``n`` candidates drawn uniformly, without replacement;
- ``active``: every candidate is in the campaign, with priority 0 (not
  offered) except a balanced warm-up of ``n`` with priority 1;
  :mod:`cpdm.rating.active` raises the priorities of the triplets that can
  move w through :func:`set_priorities`, the queue's only write path.

``n`` defaults to the typical ``k`` (the median over anchors), so each
generation appears in about two triplets. Everything is deterministic for a
given seed; each anchor draws from its own seeded stream, so adding anchors
does not change the others' triplets.
"""

from __future__ import annotations

import math
import random
import statistics
from itertools import combinations

from cpdm.errors import CpdmError
from cpdm.rating.campaigns import (
    DEFAULT_OVERLAP, add_campaign_pairs_in, create_campaign_from_filters, insert_campaign_in, matching_pairs,
    validate_overlap,
)
from cpdm.rating.protocol import default_protocol_path, parse_protocol
from cpdm.rating.rules import TRIPLETS, seed_load
from cpdm.store.rows import make_check_pairs_in
from cpdm.store.workspace import TRIPLET_DESIGNS
from cpdm.store.writer import write_transaction

# The priority of an offered triplet unless a design says otherwise; 0 keeps a triplet out of the queue.
DEFAULT_PRIORITY = 1.0
_CHUNK = 500  # ids per IN (...) list


def _normal_pairs_by_anchor(conn, pair_ids) -> dict[int, list[int]]:
    """The given pairs grouped by anchor (ids sorted); refuses unknown pairs and pairs that are not normal."""
    pair_ids = sorted(set(int(p) for p in pair_ids))
    rows: dict[int, tuple[int, str]] = {}
    for start in range(0, len(pair_ids), _CHUNK):
        chunk = pair_ids[start:start + _CHUNK]
        rows.update((r[0], (r[1], r[2])) for r in conn.execute(
            f"SELECT id, anchor, kind FROM pairs WHERE id IN ({', '.join('?' * len(chunk))})", chunk))
    missing = [p for p in pair_ids if p not in rows]
    if missing:
        raise CpdmError(f"pairs not in the workspace: {missing[:10]}")
    not_normal = [p for p in pair_ids if rows[p][1] != "normal"]
    if not_normal:
        raise CpdmError(f"triplets are made of normal pairs; these are attention checks: {not_normal[:10]}")
    by_anchor: dict[int, list[int]] = {}
    for pair in pair_ids:
        by_anchor.setdefault(rows[pair][0], []).append(pair)
    return by_anchor


def default_per_anchor(pairs_per_anchor) -> int:
    """Triplets per anchor by default: the typical number of pairs an anchor has, so each generation is in ~2."""
    counts = [k for k in pairs_per_anchor if k >= 2]
    return max(1, round(statistics.median(counts))) if counts else 1


def _balanced_subset(pairs: list[int], n: int, rng: random.Random) -> list[tuple[int, int]]:
    """``n`` distinct pairs-of-pairs (at most all of them) whose members appear as equally often as possible.

    Each pair is to appear ``2n/k`` times, rounded down or up (which pairs
    get the extra one is drawn at random): a near-regular graph on the
    anchor's ``k`` pairs, which always exists. It is built by Havel–Hakimi:
    the pair with the most appearances left takes partners among those with
    the most left, ties drawn at random, so every pair appears within one of
    every other and the seed changes which triplets come out.
    """
    k = len(pairs)
    n = min(n, k * (k - 1) // 2)
    order = list(pairs)
    rng.shuffle(order)
    low, extra = divmod(2 * n, k)
    left = {pair: low + (i < extra) for i, pair in enumerate(order)}
    chosen: list[tuple[int, int]] = []
    while any(left.values()):
        tie = {pair: rng.random() for pair in order}
        pair = max(order, key=lambda p: (left[p], tie[p]))
        partners = sorted((p for p in order if p != pair and left[p] > 0), key=lambda p: (-left[p], tie[p]))
        partners = partners[:left[pair]]
        if len(partners) < left[pair]:  # cannot happen for a near-regular sequence; never return a wrong design
            raise AssertionError(f"no balanced design of {n} triplets over {k} pairs")
        left[pair] = 0
        for partner in partners:
            left[partner] -= 1
            chosen.append((min(pair, partner), max(pair, partner)))
    return chosen


def _per_anchor_counts(anchors: list[int], n: int | None, total: int | None, seed: int,
                       sizes: dict[int, int]) -> dict[int, int]:
    """How many triplets each anchor gets: ``n`` each, or ``total`` spread as evenly as the anchors allow."""
    if n is not None and total is not None:
        raise CpdmError("give triplets per anchor or a total number of triplets, not both")
    for value, what in ((n, "triplets per anchor"), (total, "number of triplets")):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise CpdmError(f"{what} must be a whole number of at least 1, got {value!r}")
    if total is None:
        per = default_per_anchor(sizes.values()) if n is None else n
        return {a: per for a in anchors}
    base, extra = divmod(total, len(anchors))
    lucky = set(random.Random(f"triplet-total:{seed}").sample(anchors, extra))
    return {a: base + (a in lucky) for a in anchors}


def design_triplets(ws, pair_ids, design: str = "balanced", n: int | None = None, seed: int = 0, *,
                    total: int | None = None) -> list[tuple[int, int]]:
    """Normal triplets over ``pair_ids`` by ``design``: a sorted list of (first_pair, second_pair), first < second.

    ``n`` is triplets per anchor (default :func:`default_per_anchor`);
    ``total`` instead spreads that many over the anchors (some get one more).
    An anchor never gets more than its candidates. For ``active`` this is the
    balanced warm-up; :func:`candidate_triplets` is its full candidate set.
    Anchors with a single pair have no triplet; with none at all the design is refused.
    """
    if design not in TRIPLET_DESIGNS:
        raise CpdmError(f"triplet design must be one of {', '.join(TRIPLET_DESIGNS)}, got {design!r}")
    by_anchor = {a: ps for a, ps in _normal_pairs_by_anchor(ws.conn, pair_ids).items() if len(ps) >= 2}
    if not by_anchor:
        raise CpdmError("no anchor has two pairs to compare: a triplet needs two generations of one anchor")
    anchors = sorted(by_anchor)
    counts = _per_anchor_counts(anchors, n, total, seed, {a: len(ps) for a, ps in by_anchor.items()})
    chosen: list[tuple[int, int]] = []
    for anchor in anchors:
        pairs = by_anchor[anchor]
        if design == "random":
            candidates = list(combinations(pairs, 2))
            rng = random.Random(f"triplets:random:{seed}:{anchor}")
            chosen += rng.sample(candidates, min(counts[anchor], len(candidates)))
        else:  # balanced, and the warm-up of active (the same triplets for the same seed)
            rng = random.Random(f"triplets:balanced:{seed}:{anchor}")
            chosen += _balanced_subset(pairs, counts[anchor], rng)
    return sorted(chosen)


def candidate_triplets(ws, pair_ids) -> list[tuple[int, int]]:
    """Every normal triplet over ``pair_ids``: each two pairs of the same anchor (first < second)."""
    by_anchor = _normal_pairs_by_anchor(ws.conn, pair_ids)
    return sorted(edge for pairs in by_anchor.values() for edge in combinations(pairs, 2))


def _existing_checks(conn, anchors: list[int]) -> dict[int, dict[str, int]]:
    """Each anchor's attention-check pairs already in the workspace: anchor -> kind -> its oldest pair."""
    found: dict[int, dict[str, int]] = {}
    for start in range(0, len(anchors), _CHUNK):
        chunk = anchors[start:start + _CHUNK]
        for pair, anchor, kind in conn.execute(
            f"SELECT id, anchor, kind FROM pairs WHERE kind IN ('check_identical', 'check_unrelated') "
            f"AND anchor IN ({', '.join('?' * len(chunk))}) ORDER BY id DESC", chunk
        ):
            found.setdefault(anchor, {})[kind] = pair
    return found


def _check_triplet_specs(conn, anchors: list[int]) -> list[tuple[int, int, int, str]]:
    """(anchor, identical pair, unrelated pair, 'check') for each anchor.

    An anchor's existing check pairs are used (those a rating campaign over
    the same pairs shows, e.g. an unrelated image chosen by hand); only the
    missing ones are made.
    """
    found = _existing_checks(conn, anchors)
    lacking = [a for a in anchors if len(found.get(a, {})) < 2]
    if lacking:
        make_check_pairs_in(conn, lacking)
        found = _existing_checks(conn, anchors)
    return [(a, kinds["check_identical"], kinds["check_unrelated"], "check") for a, kinds in sorted(found.items())
            if len(kinds) == 2]


def _ensure_triplets(conn, specs) -> list[int]:
    """Ids of the triplets (anchor, first_pair, second_pair, kind), inserted where missing, in ``specs`` order."""
    conn.executemany(
        "INSERT INTO triplets (anchor, first_pair, second_pair, kind) VALUES (?, ?, ?, ?) "
        "ON CONFLICT (first_pair, second_pair) DO NOTHING",
        specs,
    )
    return [conn.execute("SELECT id FROM triplets WHERE first_pair = ? AND second_pair = ?",
                         (first, second)).fetchone()[0] for _anchor, first, second, _kind in specs]


def _normal_specs(conn, triplets) -> list[tuple[int, int, int, str]]:
    """Checked (anchor, first, second, 'normal') rows for (pair, pair) tuples: two normal pairs of one anchor."""
    flat = [p for t in triplets for p in t]
    by_anchor = _normal_pairs_by_anchor(conn, flat)
    anchor_of = {p: a for a, ps in by_anchor.items() for p in ps}
    specs = []
    for triplet in triplets:
        if len(triplet) != 2:
            raise CpdmError(f"a triplet is two pairs of one anchor, got {tuple(triplet)!r}")
        first, second = sorted(int(p) for p in triplet)
        if first == second:
            raise CpdmError(f"a triplet needs two different pairs, got pair {first} twice")
        if anchor_of[first] != anchor_of[second]:
            raise CpdmError(f"pairs {first} and {second} are of different anchors; a triplet compares one anchor's")
        specs.append((anchor_of[first], first, second, "normal"))
    return specs


def _checked_priority(value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise CpdmError(f"a triplet's priority must be a number of at least 0 (0: not offered), got {value!r}")
    return float(value)


def _add_triplets_in(conn, campaign_id: int, specs, priorities) -> list[int]:
    """Put triplets in a 2afc campaign: their rows, the campaign's links with priorities, load counters and pairs."""
    ids = _ensure_triplets(conn, specs)
    conn.executemany(
        "INSERT INTO campaign_triplets (campaign, triplet, priority) VALUES (?, ?, ?) "
        "ON CONFLICT (campaign, triplet) DO NOTHING",
        [(campaign_id, t, p) for t, p in zip(ids, priorities)],
    )
    seed_load(conn, TRIPLETS, campaign_id, [t for t, spec in zip(ids, specs) if spec[3] == "normal"])
    # The campaign's pairs: what scoring and the analysis read its scores through.
    add_campaign_pairs_in(conn, campaign_id, sorted({p for spec in specs for p in spec[1:3]}))
    return ids


def _require_2afc(conn, campaign_id: int) -> None:
    row = conn.execute("SELECT name, kind FROM campaigns WHERE id = ?", (campaign_id,)).fetchone()
    if row is None:
        raise CpdmError(f"no campaign with id {campaign_id}")
    if row[1] != "2afc":
        raise CpdmError(f"campaign {row[0]!r} rates pairs; triplets belong to 2afc campaigns")


def create_2afc_campaign(
    ws,
    name: str,
    pair_ids,
    *,
    design: str = "balanced",
    n_triplets: int | None = None,
    per_anchor: int | None = None,
    protocol_text: str | None = None,
    overlap: dict[str, int] | None = None,
    include_checks: bool = True,
    seed: int = 0,
) -> int:
    """Create a comparative (2AFC) campaign over the triplets of ``pair_ids`` and return its id.

    ``design``: random, balanced or active (see the module). ``per_anchor``
    triplets per anchor, or ``n_triplets`` in all (spread evenly); by
    default about two per generation. ``protocol_text`` must be a 2afc
    protocol (default: the shipped ``2afc.toml``); ``overlap`` is judgments
    per triplet per role. With ``include_checks`` each anchor also gets an
    attention-check triplet (its identical against its unrelated pair).
    Everything is checked before anything is written, in one transaction.
    """
    name = (name or "").strip()
    if not name:
        raise CpdmError("a campaign needs a name")
    if not pair_ids:
        raise CpdmError(f"campaign {name!r} would have no pairs")
    if protocol_text is None:
        protocol_text = default_protocol_path("2afc").read_text(encoding="utf-8")
    protocol = parse_protocol(protocol_text)
    if protocol.kind != "2afc":
        raise CpdmError(f"protocol {protocol.name!r} is a {protocol.kind} protocol; a 2afc campaign needs "
                        "kind = \"2afc\" (e.g. the shipped 2afc.toml)")
    overlap = validate_overlap(dict(DEFAULT_OVERLAP if overlap is None else overlap))
    warm = design_triplets(ws, pair_ids, design, per_anchor, seed, total=n_triplets)
    if design == "active":
        warm_set = set(warm)
        normal = candidate_triplets(ws, pair_ids)
        priorities = [DEFAULT_PRIORITY if t in warm_set else 0.0 for t in normal]
    else:
        normal, priorities = warm, [DEFAULT_PRIORITY] * len(warm)
    with ws.transaction() as conn:
        if conn.execute("SELECT 1 FROM campaigns WHERE name = ?", (name,)).fetchone():
            raise CpdmError(f"a campaign named {name!r} already exists")
        specs = _normal_specs(conn, normal)
        if include_checks:
            checks = _check_triplet_specs(conn, sorted({s[0] for s in specs}))
            specs, priorities = specs + checks, priorities + [DEFAULT_PRIORITY] * len(checks)
        campaign_id = insert_campaign_in(conn, name, protocol_text, overlap, design=design)
        _add_triplets_in(conn, campaign_id, specs, priorities)
    return campaign_id


def create_2afc_campaign_from_filters(ws, name: str, *, categories=(), artists=(), variants=(),
                                      **options) -> tuple[int, int]:
    """:func:`create_2afc_campaign` over the normal pairs matching the filters; returns (campaign id, triplets).

    ``options`` are :func:`create_2afc_campaign`'s. The triplets counted are
    the normal ones offered now (an active campaign's warm-up).
    """
    pair_ids = matching_pairs(ws, categories=categories, artists=artists, variants=variants)
    campaign_id = create_2afc_campaign(ws, name, pair_ids, **options)
    offered = ws.conn.execute(
        "SELECT COUNT(*) FROM campaign_triplets ct JOIN triplets t ON t.id = ct.triplet "
        "WHERE ct.campaign = ? AND t.kind = 'normal' AND ct.priority > 0", (campaign_id,)).fetchone()[0]
    return campaign_id, offered


def create_campaign_for_protocol(ws, name: str, protocol_text: str | None = None, *, design: str = "balanced",
                                 **filters_and_options) -> tuple[int, int, str]:
    """A campaign of the kind its protocol names; returns (campaign id, items offered, "pairs" or "triplets").

    A rating protocol (or none: the shipped default) makes a rating campaign
    over the matching pairs; a 2afc protocol a 2afc campaign with ``design``.
    ``filters_and_options``: the filters and the options both kinds take
    (overlap, include_checks). This is what the Campaigns page's form calls.
    """
    if protocol_text is not None and parse_protocol(protocol_text).kind == "2afc":
        campaign_id, triplets = create_2afc_campaign_from_filters(
            ws, name, protocol_text=protocol_text, design=design, **filters_and_options)
        return campaign_id, triplets, "triplets"
    campaign_id, pairs = create_campaign_from_filters(ws, name, protocol_text=protocol_text, **filters_and_options)
    return campaign_id, pairs, "pairs"


def add_triplets(ws, campaign_id: int, triplets, priority: float = DEFAULT_PRIORITY) -> list[int]:
    """Add normal triplets, each (pair, pair) of one anchor, to a 2afc campaign; returns their ids.

    Triplets already in the campaign keep their priority (change it with
    :func:`set_priorities`); the rest get ``priority``.
    """
    priority = _checked_priority(priority)
    triplets = [tuple(t) for t in triplets]
    if not triplets:
        return []
    with write_transaction(ws) as conn:
        _require_2afc(conn, campaign_id)
        specs = _normal_specs(conn, triplets)
        return _add_triplets_in(conn, campaign_id, specs, [priority] * len(specs))


def set_priorities(ws, campaign_id: int, priorities: dict[int, float]) -> int:
    """Set the priority of triplets of a 2afc campaign (0: not offered); returns how many were set.

    The active queue's only write path (:mod:`cpdm.rating.active`): among
    triplets judged equally often, raters get the highest priority first.
    Every triplet must be in the campaign and every priority a number >= 0,
    or nothing is changed.
    """
    checked = {int(t): _checked_priority(p) for t, p in priorities.items()}
    if not checked:
        return 0
    with write_transaction(ws) as conn:
        _require_2afc(conn, campaign_id)
        known = {r[0] for r in conn.execute("SELECT triplet FROM campaign_triplets WHERE campaign = ?",
                                            (campaign_id,))}
        foreign = sorted(t for t in checked if t not in known)
        if foreign:
            raise CpdmError(f"triplets not in campaign {campaign_id}: {foreign[:10]}")
        conn.executemany("UPDATE campaign_triplets SET priority = ? WHERE campaign = ? AND triplet = ?",
                         [(p, campaign_id, t) for t, p in checked.items()])
    return len(checked)


TRIPLET_COLUMNS = ["triplet", "anchor", "first_pair", "second_pair", "kind", "priority"]


def campaign_triplets(ws, campaign_id: int):
    """A campaign's triplets as a DataFrame: triplet, anchor, first_pair, second_pair, kind, priority (by id)."""
    import pandas as pd

    rows = ws.conn.execute(
        "SELECT t.id, t.anchor, t.first_pair, t.second_pair, t.kind, ct.priority FROM campaign_triplets ct "
        "JOIN triplets t ON t.id = ct.triplet WHERE ct.campaign = ? ORDER BY t.id",
        (campaign_id,),
    ).fetchall()
    return pd.DataFrame(rows, columns=TRIPLET_COLUMNS)


def campaign_design(ws, campaign_id: int) -> tuple[str, str | None]:
    """(kind, design) of a campaign: ``('rating', None)`` or ``('2afc', 'balanced')`` and so on."""
    row = ws.conn.execute("SELECT kind, design FROM campaigns WHERE id = ?", (campaign_id,)).fetchone()
    if row is None:
        raise CpdmError(f"no campaign with id {campaign_id}")
    return row[0], row[1]
