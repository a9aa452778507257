"""Triplet designs and 2afc campaigns: balanced and random counts by hand, checks, active warm-up, priorities,
the 2afc protocol format, and every refusal."""

from __future__ import annotations

from collections import Counter
from itertools import combinations

import pytest

from cpdm.errors import CpdmError
from cpdm.rating.campaigns import create_campaign, list_campaigns
from cpdm.rating.protocol import ProtocolError, default_protocol_path, list_protocol_files, parse_protocol
from cpdm.rating.triplets import (
    add_triplets, campaign_design, campaign_triplets, candidate_triplets, create_2afc_campaign, default_per_anchor,
    design_triplets, set_priorities,
)
from tests.rating_fixtures import add_pairs, default_protocol_text
from tests.triplet_fixtures import TWO_AFC_TEXT, make_triplet_world, two_afc_protocol_with


def anchor_of(ws) -> dict[int, int]:
    return dict(ws.conn.execute("SELECT id, anchor FROM pairs").fetchall())


def appearances(triplets) -> Counter:
    return Counter(p for t in triplets for p in t)


# --- Designs ------------------------------------------------------------------------------------------------------


def test_balanced_default_puts_every_generation_in_two_triplets_and_every_anchor_gets_the_same(ws):
    _anchors, pairs = add_pairs(ws, 3, 4)
    triplets = design_triplets(ws, pairs, "balanced")
    # Default: 4 triplets per anchor (its 4 pairs), so each pair appears 2·4/4 = 2 times: 12 triplets in all.
    assert len(triplets) == 12 and len(set(triplets)) == 12
    assert appearances(triplets) == {p: 2 for p in pairs}
    owners = anchor_of(ws)
    assert all(first < second and owners[first] == owners[second] for first, second in triplets)
    assert Counter(owners[t[0]] for t in triplets) == {a: 4 for a in set(owners[p] for p in pairs)}


@pytest.mark.parametrize("pairs_per_anchor, n, degrees", [
    (4, 3, [1, 1, 2, 2]),  # 6 appearances over 4 pairs
    (5, 5, [2, 2, 2, 2, 2]),  # a 5-cycle
    (6, 4, [1, 1, 1, 1, 2, 2]),  # 8 appearances over 6 pairs
    (4, 6, [3, 3, 3, 3]),  # every candidate
    (3, 10, [2, 2, 2]),  # capped at the 3 candidates
])
def test_balanced_spreads_appearances_within_one(ws, pairs_per_anchor, n, degrees):
    _anchors, pairs = add_pairs(ws, 2, pairs_per_anchor)
    for seed in range(5):
        triplets = design_triplets(ws, pairs, "balanced", n=n, seed=seed)
        per_anchor = {}
        for first, second in triplets:
            per_anchor.setdefault(anchor_of(ws)[first], []).append((first, second))
        for chosen in per_anchor.values():
            assert sorted(appearances(chosen).values()) == degrees


def test_balanced_designs_are_within_one_appearance_for_every_size_and_count():
    import random

    from cpdm.rating.triplets import _balanced_subset

    for k in range(2, 11):
        for n in range(1, k * (k - 1) // 2 + 1):
            for seed in range(8):
                chosen = _balanced_subset(list(range(k)), n, random.Random(seed))
                assert len(set(chosen)) == n
                degrees = [appearances(chosen).get(p, 0) for p in range(k)]
                assert sorted(set(degrees)) in ([2 * n // k], [2 * n // k, 2 * n // k + 1]), (k, n, degrees)


def test_random_draws_per_anchor_without_repeats_uniformly_and_reproducibly(ws):
    _anchors, pairs = add_pairs(ws, 1, 4)
    candidates = list(combinations(sorted(pairs), 2))  # 6
    counts = Counter()
    for seed in range(600):
        triplets = design_triplets(ws, pairs, "random", n=2, seed=seed)
        assert len(triplets) == 2 and len(set(triplets)) == 2 and set(triplets) <= set(candidates)
        counts.update(triplets)
    # Each candidate is drawn with probability 2/6: 200 of 600 expected (sd ~ 11.5).
    assert set(counts) == set(candidates) and all(150 < c < 250 for c in counts.values())
    assert design_triplets(ws, pairs, "random", n=2, seed=7) == design_triplets(ws, pairs, "random", n=2, seed=7)
    assert len({tuple(design_triplets(ws, pairs, "random", n=2, seed=s)) for s in range(10)}) > 1


def test_a_total_is_spread_evenly_over_anchors_and_anchors_with_one_pair_are_left_out(ws):
    _anchors, pairs = add_pairs(ws, 3, 4)
    triplets = design_triplets(ws, pairs, "balanced", total=7)
    per_anchor = Counter(anchor_of(ws)[t[0]] for t in triplets)
    assert sorted(per_anchor.values()) == [2, 2, 3]
    _lone, lone_pairs = add_pairs(ws, 1, 1)
    assert design_triplets(ws, pairs + lone_pairs, "balanced") == design_triplets(ws, pairs, "balanced")
    with pytest.raises(CpdmError, match="no anchor has two pairs"):
        design_triplets(ws, lone_pairs, "balanced")


def test_default_per_anchor_is_the_median_pair_count():
    assert default_per_anchor([4, 4, 6]) == 4
    assert default_per_anchor([2, 3, 8]) == 3
    assert default_per_anchor([1, 1]) == 1


def test_adding_an_anchor_leaves_the_other_anchors_triplets_alone(ws):
    _anchors, pairs = add_pairs(ws, 2, 5)
    before = design_triplets(ws, pairs, "random", n=3, seed=1)
    _more, more_pairs = add_pairs(ws, 1, 5)
    after = design_triplets(ws, pairs + more_pairs, "random", n=3, seed=1)
    assert set(before) <= set(after) and len(after) == 9


@pytest.mark.parametrize("call, message", [
    (lambda ws, pairs: design_triplets(ws, pairs, "greedy"), "triplet design must be one of random, balanced"),
    (lambda ws, pairs: design_triplets(ws, pairs, "balanced", n=0), "triplets per anchor must be"),
    (lambda ws, pairs: design_triplets(ws, pairs, "balanced", n=2.5), "triplets per anchor must be"),
    (lambda ws, pairs: design_triplets(ws, pairs, "balanced", n=2, total=4), "not both"),
    (lambda ws, pairs: design_triplets(ws, pairs + [999], "balanced"), "pairs not in the workspace: [999]"),
])
def test_bad_designs_are_refused(ws, call, message):
    _anchors, pairs = add_pairs(ws, 2, 3)
    with pytest.raises(CpdmError) as err:
        call(ws, pairs)
    assert message in str(err.value)


# --- Campaigns ----------------------------------------------------------------------------------------------------


def test_a_2afc_campaign_holds_its_triplets_checks_pairs_and_load(ws):
    world = make_triplet_world(ws, 3, 4, include_checks=True, overlap={"artist": 2, "lay": 1})
    assert campaign_design(ws, world.campaign) == ("2afc", "balanced")
    from cpdm.rating.campaigns import get_campaign

    campaign = get_campaign(ws, world.campaign)
    assert (campaign.kind, campaign.design, campaign.protocol.kind) == ("2afc", "balanced", "2afc")
    frame = campaign_triplets(ws, world.campaign)
    normal, checks = frame[frame["kind"] == "normal"], frame[frame["kind"] == "check"]
    assert len(normal) == 12 and len(checks) == 3 and set(frame["priority"]) == {1.0}
    assert sorted(zip(normal["first_pair"], normal["second_pair"])) == design_triplets(ws, world.pairs, "balanced")
    kinds = dict(ws.conn.execute("SELECT id, kind FROM pairs").fetchall())
    for row in checks.itertuples():
        assert (kinds[row.first_pair], kinds[row.second_pair]) == ("check_identical", "check_unrelated")
        assert anchor_of(ws)[row.first_pair] == anchor_of(ws)[row.second_pair] == row.anchor
    # The campaign's pairs (scoring and the analysis read through them): the normal pairs and the checks'.
    covered = {r[0] for r in ws.conn.execute("SELECT pair FROM campaign_pairs WHERE campaign = ?", (world.campaign,))}
    assert covered == set(world.pairs) | set(checks["first_pair"]) | set(checks["second_pair"])
    # Load counters for normal triplets only, per role; none for pairs.
    loads = ws.conn.execute("SELECT role, COUNT(*), SUM(load) FROM triplet_load WHERE campaign = ? GROUP BY role",
                            (world.campaign,)).fetchall()
    assert loads == [("artist", 12, 0), ("lay", 12, 0)]
    assert ws.conn.execute("SELECT COUNT(*) FROM pair_load WHERE campaign = ?", (world.campaign,)).fetchone()[0] == 0
    listed = next(c for c in list_campaigns(ws) if c["id"] == world.campaign)
    assert (listed["kind"], listed["design"], listed["triplets"]) == ("2afc", "balanced", 12)


def test_two_campaigns_share_triplet_rows(ws):
    world = make_triplet_world(ws, 2, 3, design="random", per_anchor=3)
    other = create_2afc_campaign(ws, "again", world.pairs, design="balanced", per_anchor=3,
                                 protocol_text=TWO_AFC_TEXT, include_checks=False)
    ids = lambda c: set(campaign_triplets(ws, c)["triplet"])  # noqa: E731
    assert ids(world.campaign) == ids(other) and len(ids(other)) == 6
    assert ws.conn.execute("SELECT COUNT(*) FROM triplets").fetchone()[0] == 6


def test_an_active_campaign_holds_every_candidate_with_a_balanced_warm_up(ws):
    world = make_triplet_world(ws, 2, 5, design="active", per_anchor=3, seed=4)
    frame = campaign_triplets(ws, world.campaign)
    assert sorted(zip(frame["first_pair"], frame["second_pair"])) == candidate_triplets(ws, world.pairs)
    assert len(frame) == 20  # 2 anchors × C(5, 2)
    warm = frame[frame["priority"] > 0]
    assert sorted(zip(warm["first_pair"], warm["second_pair"])) == design_triplets(ws, world.pairs, "balanced",
                                                                                    n=3, seed=4)
    assert set(warm["priority"]) == {1.0} and set(frame[frame["priority"] == 0]["priority"]) == {0.0}
    listed = next(c for c in list_campaigns(ws) if c["id"] == world.campaign)
    assert (listed["design"], listed["triplets"]) == ("active", 6)


def test_add_triplets_and_set_priorities(ws):
    world = make_triplet_world(ws, 1, 4, design="random", per_anchor=1)
    first = campaign_triplets(ws, world.campaign)
    missing = [t for t in combinations(world.pairs, 2)
               if t not in set(zip(first["first_pair"], first["second_pair"]))]
    # Reversed order is the same triplet; a triplet already present keeps its priority.
    ids = add_triplets(ws, world.campaign, [tuple(reversed(missing[0])), missing[1]], priority=0)
    again = add_triplets(ws, world.campaign, [missing[0]], priority=5)
    assert again == ids[:1]
    frame = campaign_triplets(ws, world.campaign).set_index("triplet")
    assert frame.loc[ids, "priority"].tolist() == [0.0, 0.0] and len(frame) == 3
    assert set_priorities(ws, world.campaign, {ids[0]: 2.5, ids[1]: 1}) == 2
    frame = campaign_triplets(ws, world.campaign).set_index("triplet")
    assert frame.loc[ids, "priority"].tolist() == [2.5, 1.0]
    rows = ws.conn.execute("SELECT COUNT(*) FROM triplet_load WHERE campaign = ?", (world.campaign,)).fetchone()[0]
    assert rows == 3 * 2  # one counter per role for each triplet


@pytest.mark.parametrize("call, message", [
    (lambda ws, w, t: set_priorities(ws, w.campaign, {t: -1}), "priority must be a number of at least 0"),
    (lambda ws, w, t: set_priorities(ws, w.campaign, {t: float("nan")}), "priority must be a number"),
    (lambda ws, w, t: set_priorities(ws, w.campaign, {t: 2, 999: 1}), "triplets not in campaign 1: [999]"),
    (lambda ws, w, t: set_priorities(ws, 42, {t: 1}), "no campaign with id 42"),
    (lambda ws, w, t: add_triplets(ws, w.campaign, [(w.pairs[0], w.pairs[4])]), "of different anchors"),
    (lambda ws, w, t: add_triplets(ws, w.campaign, [(w.pairs[0], w.pairs[0])]), "two different pairs"),
    (lambda ws, w, t: add_triplets(ws, w.campaign, [(w.pairs[0],)]), "a triplet is two pairs of one anchor"),
    (lambda ws, w, t: add_triplets(ws, w.campaign, [(w.pairs[0], 999)]), "pairs not in the workspace: [999]"),
    (lambda ws, w, t: add_triplets(ws, w.campaign, [(w.pairs[0], w.pairs[1])], priority=-2), "priority must be"),
])
def test_bad_triplet_changes_are_refused_and_change_nothing(ws, call, message):
    world = make_triplet_world(ws, 2, 4, design="random", per_anchor=1)
    triplet = int(campaign_triplets(ws, world.campaign)["triplet"].iloc[0])
    before = campaign_triplets(ws, world.campaign)
    with pytest.raises(CpdmError) as err:
        call(ws, world, triplet)
    assert message in str(err.value)
    assert campaign_triplets(ws, world.campaign).equals(before)


def test_triplets_are_refused_for_a_rating_campaign(ws):
    _anchors, pairs = add_pairs(ws, 1, 3)
    rating = create_campaign(ws, "likert", pairs, protocol_text=default_protocol_text(background=False))
    with pytest.raises(CpdmError, match="rates pairs; triplets belong to 2afc campaigns"):
        add_triplets(ws, rating, [(pairs[0], pairs[1])])
    with pytest.raises(CpdmError, match="rates pairs"):
        set_priorities(ws, rating, {1: 1})


def test_attention_check_pairs_cannot_be_compared(ws):
    world = make_triplet_world(ws, 2, 3, include_checks=True)
    check = ws.conn.execute("SELECT id FROM pairs WHERE kind = 'check_identical' LIMIT 1").fetchone()[0]
    with pytest.raises(CpdmError, match="triplets are made of normal pairs"):
        add_triplets(ws, world.campaign, [(world.pairs[0], check)])


@pytest.mark.parametrize("kwargs, message", [
    ({"protocol_text": default_protocol_text(background=False)}, "is a rating protocol; a 2afc campaign needs"),
    ({"design": "sorted"}, "triplet design must be one of"),
    ({"overlap": {"artist": 0}}, "overlap asks no role"),
    ({"per_anchor": 2, "n_triplets": 4}, "not both"),
    ({"name": "  "}, "a campaign needs a name"),
])
def test_bad_2afc_campaigns_are_refused_and_write_nothing(ws, kwargs, message):
    _anchors, pairs = add_pairs(ws, 2, 3)
    args = {"name": "duel", "protocol_text": TWO_AFC_TEXT, **kwargs}
    with pytest.raises(CpdmError) as err:
        create_2afc_campaign(ws, args.pop("name"), pairs, **args)
    assert message in str(err.value)
    for table in ("campaigns", "triplets", "campaign_triplets", "triplet_load"):
        assert ws.conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0] == 0
    assert ws.conn.execute("SELECT COUNT(*) FROM pairs WHERE kind != 'normal'").fetchone()[0] == 0


def test_a_2afc_campaign_name_is_unique_and_a_rating_campaign_refuses_a_2afc_protocol(ws):
    world = make_triplet_world(ws, 2, 3)
    with pytest.raises(CpdmError, match="a campaign named 'duel' already exists"):
        create_2afc_campaign(ws, "duel", world.pairs)
    with pytest.raises(CpdmError, match="is a 2afc protocol: raters would judge triplets"):
        create_campaign(ws, "likert", world.pairs, protocol_text=TWO_AFC_TEXT)


def test_the_default_2afc_protocol_is_shipped(ws):
    _anchors, pairs = add_pairs(ws, 2, 3)
    campaign = create_2afc_campaign(ws, "plain", pairs)
    text = ws.conn.execute("SELECT protocol FROM campaigns WHERE id = ?", (campaign,)).fetchone()[0]
    assert text == TWO_AFC_TEXT


# --- The 2afc protocol format ---------------------------------------------------------------------------------------


def test_the_shipped_2afc_protocol_parses():
    protocol = parse_protocol(TWO_AFC_TEXT)
    assert protocol.kind == "2afc" and protocol.comparative
    assert protocol.question_ids == ["copy", "content", "style"]
    assert protocol.questions[0].text == "Which AI image is more of a copy of the original?"
    assert protocol.question("copy").scale is None
    assert protocol.question("copy").values == ["left", "right", "cant_tell"]
    checks = protocol.attention_checks
    assert (checks.question, checks.rate, checks.max_failures) == ("copy", 0.1, 1)
    assert (checks.identical_min, checks.unrelated_max) == (None, None)
    assert default_protocol_path("2afc") in list_protocol_files()
    rating = parse_protocol(default_protocol_path().read_text(encoding="utf-8"))
    assert rating.kind == "rating" and not rating.comparative


def test_a_2afc_protocol_checks_its_first_question_unless_told():
    text = TWO_AFC_TEXT.replace('question = "copy"\n', "")
    assert parse_protocol(text).attention_checks.question == "copy"
    assert parse_protocol(two_afc_protocol_with(question='"style"')).attention_checks.question == "style"


@pytest.mark.parametrize("edit, message", [
    (lambda t: t.replace('text = "Which AI image is more of a copy of the original?"',
                         'text = "Which?"\nscale = [1, 5]'), "'questions[0].scale' is not used by a 2afc protocol"),
    (lambda t: t.replace('text = "Which AI image is closer in style (colours, brushwork, texture)?"',
                         'text = "Style?"\nlow = "same"'), "'questions[2].low' is not used by a 2afc protocol"),
    (lambda t: t.replace("max_failures = 1", "max_failures = 1\nidentical_min = 4"),
     "'attention_checks.identical_min' is not used by a 2afc protocol"),
    (lambda t: t.replace("max_failures = 1", "max_failures = 1\nunrelated_max = 2"),
     "'attention_checks.unrelated_max' is not used"),
    (lambda t: t.replace('kind = "2afc"', 'kind = "likert"'), "protocol field 'kind' must be one of rating, 2afc"),
    (lambda t: t.replace('kind = "2afc"', "kind = 2"), "protocol field 'kind' must be one of"),
    (lambda t: t.replace('question = "copy"', 'question = "colour"'), "'attention_checks.question' must name"),
    (lambda t: t.replace('text = "Which AI image is more of a copy of the original?"', ""),
     "'questions[0].text' is missing"),
])
def test_bad_2afc_protocols_are_refused_naming_the_field(edit, message):
    text = edit(TWO_AFC_TEXT)
    assert text != TWO_AFC_TEXT
    with pytest.raises(ProtocolError) as err:
        parse_protocol(text)
    assert message in str(err.value)


def test_a_rating_protocol_without_a_scale_is_refused_naming_the_field():
    text = default_protocol_path().read_text(encoding="utf-8").replace("scale = [1, 5]\n", "", 1)
    with pytest.raises(ProtocolError, match=r"'questions\[0\]\.scale' must be two integers"):
        parse_protocol(text)
    with pytest.raises(ProtocolError, match="campaign kind must be one of"):
        default_protocol_path("triad")


def test_a_total_number_of_triplets_for_a_campaign(ws):
    _anchors, pairs = add_pairs(ws, 2, 4)
    campaign = create_2afc_campaign(ws, "five", pairs, design="random", n_triplets=5, include_checks=False,
                                    protocol_text=TWO_AFC_TEXT, seed=3)
    frame = campaign_triplets(ws, campaign)
    assert len(frame) == 5 and sorted(frame.groupby("anchor").size().tolist()) == [2, 3]


def test_the_rating_default_is_listed_first_so_menus_preselect_it():
    files = list_protocol_files()
    assert files[0] == default_protocol_path() and default_protocol_path("2afc") in files[1:]
