"""A scored rating campaign and a 2afc campaign over the same pairs, judged through the rating API by simulated
raters who weigh content and style as planted (for the 2AFC analysis and page tests)."""

from __future__ import annotations

import uuid
from datetime import timedelta

import numpy as np
import pandas as pd

from cpdm.demo.simulate import add_simulated_ratings
from cpdm.rating.auth import create_rater
from cpdm.rating.judgments import claim_triplet, submit_judgment
from cpdm.rating.triplets import create_2afc_campaign
from cpdm.store.time import utc_now
from cpdm.testing import create_synthetic_campaign

PLANTED_W_STD = {"artist": 0.3, "lay": 0.7}


def judge(ws, campaign_id, rater, w_std, rng, spreads, distances, kinds, beta=3.0):
    """One rater judges every triplet offered: the side with the lower standardised weighted log distance is more
    of a copy, with a logistic choice; attention checks are answered by the identical side."""
    now = utc_now()
    while (item := claim_triplet(ws, campaign_id, rater, now=now)) is not None:
        now += timedelta(seconds=5)
        left, right = item.left_pair, item.right_pair
        if item.kind == "check":
            answer = "left" if kinds[left] == "check_identical" else "right"
        else:
            s_left, s_right = (w_std * np.log(distances[p][0]) / spreads[0]
                               + (1 - w_std) * np.log(distances[p][1]) / spreads[1] for p in (left, right))
            answer = "left" if rng.random() < 1 / (1 + np.exp(-beta * (s_right - s_left))) else "right"
            if rng.random() < 0.05:
                answer = "cant_tell"
        result = submit_judgment(ws, rater, campaign_id, item.triplet,
                                 {"copy": answer, "content": answer, "style": answer},
                                 nonce=uuid.uuid4().hex, now=now)
        assert result.status == "saved"


def build_two_afc_study(ws, n_anchors: int = 10, per_anchor: int = 10, raters_per_role: int = 4, seed: int = 2):
    """A scored rating campaign 'study' (simulated ratings) and a 2afc campaign 'duel' over the same pairs, judged
    by artists (w_std 0.3) and lay raters (w_std 0.7), three of each per triplet. Returns the 2afc campaign's id."""
    study = create_synthetic_campaign(ws, "study", n_anchors=n_anchors, seeds_per_variant=2, reference=True, seed=seed)
    add_simulated_ratings(ws, study, seed=1)
    pair_ids = [row[0] for row in ws.conn.execute(
        "SELECT cp.pair FROM campaign_pairs cp JOIN pairs p ON p.id = cp.pair AND p.kind = 'normal' "
        "WHERE cp.campaign = ?", (study,))]
    duel = create_2afc_campaign(ws, "duel", pair_ids, design="balanced", overlap={"artist": 3, "lay": 3},
                                per_anchor=per_anchor, seed=0)
    distances = {p: (s, t) for p, s, t in ws.conn.execute("SELECT pair, m_sem, m_style FROM scores")}
    kinds = dict(ws.conn.execute("SELECT id, kind FROM pairs"))
    reference = pd.read_sql_query("SELECT m_sem, m_style FROM reference_distances", ws.conn)
    spreads = (float(np.log(reference["m_sem"]).std(ddof=1)), float(np.log(reference["m_style"]).std(ddof=1)))
    rng = np.random.default_rng(seed + 3)
    for role in ("artist", "lay"):
        for number in range(raters_per_role):
            rater, _ = create_rater(ws, f"{role}{number}", role, simulated=True)
            judge(ws, duel, rater, PLANTED_W_STD[role], rng, spreads, distances, kinds)
    return duel
