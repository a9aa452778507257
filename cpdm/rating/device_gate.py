"""Whether a rater may be given a pair on the device they use now (a protocol may ask for desktop only).

Apart from :mod:`cpdm.rating.devices` (which protocols read) because it asks
the assignment and the recruitment what the rater holds.
"""

from __future__ import annotations

from cpdm.rating.assignment import campaign_allows_device, oldest_held_item
from cpdm.rating.recruit import recruitment_of


def device_refused(ws, rater, device: str) -> bool:
    """Whether the rater's study asks for another device than ``device``, so nothing may be assigned on it.

    So it is when the pair the rater holds, the campaign of the link they
    joined by, or every open campaign is in a protocol that does not allow the
    device. Checked before assignment: the rater is told, and holds nothing new.
    """
    conn = ws.conn
    held = oldest_held_item(conn, rater.id)  # a pair or a triplet
    if held is not None:
        return not campaign_allows_device(conn, held.campaign, device)
    recruitment = recruitment_of(conn, rater.id)
    if recruitment is not None:
        return recruitment.finished_at is None and not campaign_allows_device(conn, recruitment.campaign, device)
    open_campaigns = [row[0] for row in conn.execute("SELECT id FROM campaigns WHERE status = 'open'")]
    return bool(open_campaigns) and not any(campaign_allows_device(conn, c, device) for c in open_campaigns)
