"""Small 2afc workspaces for tests: anchors with several generations each, and a comparative campaign."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import timedelta

from cpdm.rating.assignment import next_item
from cpdm.rating.judgments import TripletItem, submit_judgment
from cpdm.rating.protocol import default_protocol_path
from cpdm.rating.triplets import create_2afc_campaign
from tests.rating_fixtures import add_pairs

TWO_AFC_TEXT = default_protocol_path("2afc").read_text(encoding="utf-8")
# One answer per question of the shipped 2afc protocol.
CHOICES = {"copy": "left", "content": "right", "style": "cant_tell"}


@dataclass
class TripletWorld:
    anchors: list[int]
    pairs: list[int]  # normal pairs
    campaign: int


def two_afc_protocol_with(**values) -> str:
    """The shipped 2afc protocol with some ``key = value`` lines replaced (first occurrence of each key)."""
    text = TWO_AFC_TEXT
    for key, value in values.items():
        lines = text.splitlines()
        for i, line in enumerate(lines):
            if line.startswith(f"{key} ="):
                lines[i] = f"{key} = {value}"
                break
        else:
            raise KeyError(key)
        text = "\n".join(lines) + "\n"
    return text


def make_triplet_world(ws, n_anchors=3, pairs_per_anchor=4, *, design="balanced", overlap=None,
                       include_checks=False, protocol_text=None, name="duel", **options) -> TripletWorld:
    """Anchors with ``pairs_per_anchor`` generations each (variants original / esd alternating) and one
    open 2afc campaign over all their pairs."""
    anchors, pairs = add_pairs(ws, n_anchors, pairs_per_anchor)
    campaign = create_2afc_campaign(ws, name, pairs, design=design, overlap=overlap, include_checks=include_checks,
                                    protocol_text=protocol_text or TWO_AFC_TEXT, **options)
    return TripletWorld(anchors, pairs, campaign)


def judge_all(ws, rater, start, answers=CHOICES, step=timedelta(seconds=5)) -> tuple[list[TripletItem], object]:
    """Let a rater judge everything offered (``answers``: a dict, or a function of the item); return the items
    in order and the end time."""
    seen, now = [], start
    while (item := next_item(ws, rater, now=now)) is not None:
        assert isinstance(item, TripletItem)
        seen.append(item)
        now += step
        answer = answers(item) if callable(answers) else answers
        result = submit_judgment(ws, rater, item.campaign, item.triplet, answer, nonce=uuid.uuid4().hex, now=now)
        assert result.status == "saved"
    return seen, now
