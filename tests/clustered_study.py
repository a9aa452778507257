"""A study generator with anchor-level effects, for checking interval coverage and planning.

Each anchor has 9 generated images (pairs). The metric's two distances and
the human judgement all carry an effect of the anchor, so pairs of one anchor
are correlated, as in a real study. Each rater group judges a pair by a
latent closeness that weighs semantics against style by the group's own w:

    L_g = −(w_g · z_sem + (1 − w_g) · z_style) + u_anchor + e_pair

(z: the log distances standardised by their population spread), then rates
it on a 1–5 scale with rater leniency and noise; each pair gets
``raters_per_pair`` ratings per group from a pool of raters.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

PAIRS_PER_ANCHOR = 9
SEM_MEAN, SEM_ANCHOR_SD, SEM_PAIR_SD = np.log(0.5), 0.5, 0.5
STYLE_MEAN, STYLE_ANCHOR_SD, STYLE_PAIR_SD = np.log(0.02), 0.6, 0.6
HUMAN_ANCHOR_SD, HUMAN_PAIR_SD = 0.45, 0.3
LENIENCY_SD, RATING_NOISE_SD = 0.3, 0.7
POOL_PER_ROLE = 12
ROLES = {"artists": "artist", "lay": "lay"}


def reference_frame(n: int = 4000, seed: int = 12345) -> pd.DataFrame:
    """Distances of mismatched pairs (an anchor against other anchors' images): further apart than matched ones."""
    rng = np.random.default_rng(seed)
    return pd.DataFrame({"m_sem": np.exp(rng.normal(np.log(0.9), 0.4, n)),
                         "m_style": np.exp(rng.normal(np.log(0.05), 0.6, n))})


def clustered_study(n_anchors: int, weights: dict[str, float] | None = None, raters_per_pair: int = 3,
                    seed: int = 0, pairs_per_anchor: int = PAIRS_PER_ANCHOR, question: str = "copy"):
    """(pairs, ratings): pairs with anchor, m_sem, m_style; long-form ratings with role and rater.

    ``weights`` maps a group (artists, lay) to its true w; both default to 0.5.
    """
    weights = weights or {"artists": 0.5, "lay": 0.5}
    rng = np.random.default_rng(seed)
    n_pairs = n_anchors * pairs_per_anchor
    anchor = np.repeat(np.arange(n_anchors), pairs_per_anchor)
    z_sem_anchor = rng.normal(0, SEM_ANCHOR_SD, n_anchors)[anchor]
    z_style_anchor = rng.normal(0, STYLE_ANCHOR_SD, n_anchors)[anchor]
    log_sem = SEM_MEAN + z_sem_anchor + rng.normal(0, SEM_PAIR_SD, n_pairs)
    log_style = STYLE_MEAN + z_style_anchor + rng.normal(0, STYLE_PAIR_SD, n_pairs)
    z_sem = (log_sem - SEM_MEAN) / np.hypot(SEM_ANCHOR_SD, SEM_PAIR_SD)
    z_style = (log_style - STYLE_MEAN) / np.hypot(STYLE_ANCHOR_SD, STYLE_PAIR_SD)
    shared = rng.normal(0, HUMAN_ANCHOR_SD, n_anchors)[anchor] + rng.normal(0, HUMAN_PAIR_SD, n_pairs)
    pairs = pd.DataFrame({"pair": np.arange(1, n_pairs + 1), "anchor": anchor, "m_sem": np.exp(log_sem),
                          "m_style": np.exp(log_style)})
    frames = []
    for offset, (group, w) in enumerate(weights.items()):
        latent = -(w * z_sem + (1 - w) * z_style) + shared
        leniency = rng.normal(0, LENIENCY_SD, POOL_PER_ROLE)
        raters = np.argsort(rng.random((n_pairs, POOL_PER_ROLE)), axis=1)[:, :raters_per_pair]
        values = 3 + latent[:, None] + leniency[raters] + rng.normal(0, RATING_NOISE_SD, raters.shape)
        frames.append(pd.DataFrame({
            "pair": np.repeat(pairs["pair"].to_numpy(), raters_per_pair),
            "anchor": np.repeat(anchor, raters_per_pair),
            "rater": (raters + 1 + offset * POOL_PER_ROLE).ravel(),
            "role": ROLES[group],
            "question": question,
            "value": np.clip(np.rint(values), 1, 5).ravel(),
        }))
    ratings = pd.concat(frames, ignore_index=True)
    ratings["kind"] = "normal"
    ratings["flagged"] = False
    ratings["simulated"] = True
    return pairs, ratings


def with_human(pairs: pd.DataFrame, ratings: pd.DataFrame, group: str = "artists") -> pd.DataFrame:
    """``pairs`` with column ``human``: the group's mean rating per pair."""
    sub = ratings[ratings["role"] == ROLES[group]]
    return pairs.merge(sub.groupby("pair")["value"].mean().rename("human").reset_index(), on="pair")
