"""Campaigns: a set of pairs, a frozen protocol, and how many ratings each pair needs per role."""

from __future__ import annotations

import json
from pathlib import Path

from cpdm.errors import CpdmError

PROTOCOLS_DIR = Path(__file__).resolve().parent.parent / "annotations" / "protocols"
DEFAULT_OVERLAP = {"artist": 3, "lay": 3}


def default_protocol_path() -> Path:
    """The protocol that ships with cpdm (annotations/protocols/default.toml, or the packaged copy)."""
    shipped = PROTOCOLS_DIR / "default.toml"
    if shipped.exists():
        return shipped
    return Path(__file__).resolve().parent / "data" / "protocols" / "default.toml"


def create_campaign(
    ws,
    name: str,
    pair_ids: list[int],
    *,
    protocol_text: str | None = None,
    overlap: dict[str, int] | None = None,
) -> int:
    """Create a campaign over ``pair_ids`` and return its id.

    The protocol's TOML text is stored in the campaign, so later edits to the
    file do not change a running campaign.
    """
    from cpdm import protocol as protocol_module

    name = name.strip()
    if not name:
        raise CpdmError("a campaign needs a name")
    if not pair_ids:
        raise CpdmError(f"campaign {name!r} would have no pairs")
    if protocol_text is None:
        protocol_text = default_protocol_path().read_text(encoding="utf-8")
    protocol_module.parse_protocol(protocol_text)  # refuses a malformed protocol, naming the field
    overlap = dict(DEFAULT_OVERLAP if overlap is None else overlap)
    for role, count in overlap.items():
        if role not in ("artist", "lay") or not isinstance(count, int) or count < 1:
            raise CpdmError(f"overlap must map artist/lay to a positive count, got {role}={count!r}")
    with ws.transaction() as conn:
        if conn.execute("SELECT 1 FROM campaigns WHERE name = ?", (name,)).fetchone():
            raise CpdmError(f"a campaign named {name!r} already exists")
        campaign_id = conn.execute(
            "INSERT INTO campaigns (name, protocol, overlap) VALUES (?, ?, ?)",
            (name, protocol_text, json.dumps(overlap)),
        ).lastrowid
        known = {row[0] for row in conn.execute("SELECT id FROM pairs")}
        missing = sorted(set(pair_ids) - known)
        if missing:
            raise CpdmError(f"pairs not in the workspace: {missing[:10]}")
        conn.executemany(
            "INSERT INTO campaign_pairs (campaign, pair) VALUES (?, ?)",
            [(campaign_id, pair_id) for pair_id in sorted(set(pair_ids))],
        )
    return campaign_id


def campaign_id_by_name(ws, name: str) -> int:
    """Look a campaign up by name, with a clear error listing the known names."""
    row = ws.conn.execute("SELECT id FROM campaigns WHERE name = ?", (name,)).fetchone()
    if row is None:
        known = [r[0] for r in ws.conn.execute("SELECT name FROM campaigns ORDER BY id")]
        hint = f" (known: {', '.join(known)})" if known else " (there are no campaigns yet)"
        raise CpdmError(f"no campaign named {name!r}{hint}")
    return row[0]


def list_campaigns(ws) -> list[dict]:
    rows = ws.conn.execute(
        "SELECT c.id, c.name, c.status, c.overlap, COUNT(cp.pair) FROM campaigns c "
        "LEFT JOIN campaign_pairs cp ON cp.campaign = c.id GROUP BY c.id ORDER BY c.id"
    ).fetchall()
    return [
        {"id": r[0], "name": r[1], "status": r[2], "overlap": json.loads(r[3]), "pairs": r[4]} for r in rows
    ]
