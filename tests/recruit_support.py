"""Recruitment links in tests: a campaign with a link, visitors arriving with platform ids, raters working through."""

from __future__ import annotations

import uuid

from cpdm.rating import recruit
from cpdm.rating.submit import submit
from tests.rating_fixtures import ANSWERS, make_world

ID_PARAM = "PROLIFIC_PID"


def recruiting_world(ws, *, n_anchors=4, gens_per_anchor=2, lay_overlap=3, include_checks=False,
                     protocol_text=None, **link_settings):
    """A campaign (lay overlap ``lay_overlap``) with one lay recruitment link; returns (world, link, secret)."""
    world = make_world(ws, n_anchors, gens_per_anchor, overlap={"artist": 1, "lay": lay_overlap},
                       include_checks=include_checks, protocol_text=protocol_text)
    settings = {"id_param": ID_PARAM, **link_settings}
    link, secret = recruit.create_link(ws, world.campaign, "lay", **settings)
    return world, link, secret


def params(secret: str, platform_id: str | None = None, id_param: str = ID_PARAM) -> dict:
    """The query parameters of a participant's visit: the link's secret and their platform id."""
    query = {recruit.JOIN_PARAM: secret}
    if platform_id is not None:
        query[id_param] = platform_id
    return query


def rate_all(ws, rater, answers=None) -> list[int]:
    """Answer every pair the app gives the rater, as the rating page would; the pairs in order."""
    done = []
    while (item := recruit.next_item_for(ws, rater)) is not None:
        submit(ws, rater, item.campaign, item.pair, answers or ANSWERS, nonce=uuid.uuid4().hex)
        done.append(item.pair)
    return done
