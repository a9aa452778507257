"""The ``pair_load`` counters: how many raters of each role hold each normal pair of a campaign.

A rater holds a pair who rated it, or holds an assignment to it that has not
timed out. Claims read the counters instead of counting assignments (see
:mod:`cpdm.rating.assignment`); :func:`recount_pair_load` builds them again
from the assignments and ratings.
"""

from __future__ import annotations

import sqlite3

from cpdm.store.workspace import RATING_ROLES


def recount_pair_load(conn: sqlite3.Connection, campaign_id: int, now_text: str) -> None:
    """Rebuild a campaign's ``pair_load`` rows from its assignments and ratings, in the caller's transaction.

    A rater holds a pair who rated it, or holds an assignment to it that has
    not timed out at ``now_text``.
    """
    conn.execute("DELETE FROM pair_load WHERE campaign = ?", (campaign_id,))
    roles = " UNION ALL ".join(f"SELECT '{role}' AS role" for role in RATING_ROLES)
    conn.execute(
        f"""
        WITH holders AS (
            SELECT pair, rater FROM assignments WHERE campaign = :campaign
              AND (status = 'done' OR (status = 'assigned' AND expires_at > :now))
            UNION
            SELECT pair, rater FROM ratings WHERE campaign = :campaign AND value IS NOT NULL
        ), counts AS (
            SELECT h.pair, r.role, COUNT(*) AS n FROM holders h JOIN raters r ON r.id = h.rater
            GROUP BY h.pair, r.role
        )
        INSERT INTO pair_load (campaign, role, pair, load)
        SELECT cp.campaign, roles.role, cp.pair, COALESCE(c.n, 0)
        FROM campaign_pairs cp JOIN pairs p ON p.id = cp.pair AND p.kind = 'normal'
        CROSS JOIN ({roles}) AS roles
        LEFT JOIN counts c ON c.pair = cp.pair AND c.role = roles.role
        WHERE cp.campaign = :campaign
        """,
        {"campaign": campaign_id, "now": now_text},
    )
