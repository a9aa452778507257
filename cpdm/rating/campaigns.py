"""Campaigns: a set of pairs, a frozen protocol, and how many ratings each pair needs per role.

A campaign holds normal pairs (an anchor against a generation) and, when
asked, attention-check pairs (the anchor against itself, or against an
unrelated anchor). Its protocol's TOML text is stored with it, so later
edits to the file do not change a running campaign.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from cpdm.errors import CpdmError
from cpdm.rating.protocol import Protocol, default_protocol_path, parse_protocol
from cpdm.rating.rules import PAIRS, seed_load
from cpdm.store.rows import make_check_pairs_in
from cpdm.store.workspace import RATING_ROLES

DEFAULT_OVERLAP = {"artist": 3, "lay": 3}


@dataclass(frozen=True)
class Campaign:
    id: int
    name: str
    protocol: Protocol
    protocol_text: str
    overlap: dict[str, int]
    status: str
    kind: str = "rating"  # or "2afc": raters judge triplets (cpdm.rating.triplets)
    design: str | None = None  # a 2afc campaign's triplet design: random, balanced or active


def parse_overlap(text: str) -> dict[str, int]:
    """Parse ``artist=3,lay=3`` into ``{"artist": 3, "lay": 3}`` (roles left out need no ratings)."""
    overlap: dict[str, int] = {}
    for part in [p.strip() for p in text.split(",") if p.strip()]:
        role, sep, count = part.partition("=")
        role = role.strip()
        if not sep or not count.strip().isdigit():
            raise CpdmError(f"overlap must look like artist=3,lay=3; cannot read {part!r}")
        overlap[role] = int(count)
    return validate_overlap(overlap)


def format_overlap(overlap: dict[str, int]) -> str:
    """``{"artist": 3, "lay": 3}`` as ``artist=3,lay=3``: the form :func:`parse_overlap` reads."""
    return ",".join(f"{role}={count}" for role, count in overlap.items())


def validate_overlap(overlap: dict) -> dict[str, int]:
    """Check an overlap mapping: roles artist/lay, counts from 0 (role not asked) to 100."""
    if not overlap:
        raise CpdmError("overlap must name at least one role, e.g. artist=3,lay=3")
    checked: dict[str, int] = {}
    for role, count in overlap.items():
        if role not in RATING_ROLES:
            raise CpdmError(f"overlap role must be artist or lay, got {role!r}")
        if isinstance(count, bool) or not isinstance(count, int) or not 0 <= count <= 100:
            raise CpdmError(f"overlap for {role} must be a count from 0 to 100, got {count!r}")
        checked[role] = count
    if not any(checked.values()):
        raise CpdmError("overlap asks no role for any rating; give at least one role a positive count")
    return checked


def select_pairs(ws, *, categories=(), artists=(), variants=()) -> list[int]:
    """Normal pairs whose anchor category, anchor artist and generation variant match the filters.

    Each filter is a list of accepted values; an empty filter accepts all.
    """
    sql = (
        "SELECT p.id FROM pairs p JOIN anchors a ON a.id = p.anchor "
        "JOIN generations g ON g.id = p.generation JOIN variants v ON v.id = g.variant "
        "WHERE p.kind = 'normal'"
    )
    params: list = []
    for column, values in (("a.category", categories), ("a.artist", artists), ("v.name", variants)):
        values = [v for v in values if v]
        if values:
            sql += f" AND {column} IN ({', '.join('?' * len(values))})"
            params.extend(values)
    return [row[0] for row in ws.conn.execute(sql + " ORDER BY p.id", params)]


def pair_filter_options(ws) -> dict[str, list[str]]:
    """The values the pair filters can take in this workspace (for menus)."""
    q = ws.conn.execute
    return {
        "category": [r[0] for r in q("SELECT DISTINCT category FROM anchors ORDER BY category")],
        "artist": [r[0] for r in q("SELECT DISTINCT artist FROM anchors WHERE artist IS NOT NULL ORDER BY artist")],
        "variant": [r[0] for r in q("SELECT name FROM variants ORDER BY id")],
    }


def create_campaign(
    ws,
    name: str,
    pair_ids: list[int],
    *,
    protocol_text: str | None = None,
    overlap: dict[str, int] | None = None,
    include_checks: bool = False,
) -> int:
    """Create a campaign over ``pair_ids`` and return its id.

    With ``include_checks`` attention-check pairs for the pairs' anchors are
    added (and created where missing). The protocol's TOML text is stored in
    the campaign, so later edits to the file do not change a running campaign.
    Everything is checked before anything is written, in one transaction: a
    refused campaign leaves the workspace as it was (no check pairs either).
    """
    name = name.strip()
    if not name:
        raise CpdmError("a campaign needs a name")
    if not pair_ids:
        raise CpdmError(f"campaign {name!r} would have no pairs")
    if protocol_text is None:
        protocol_text = default_protocol_path().read_text(encoding="utf-8")
    protocol = parse_protocol(protocol_text)  # refuses a malformed protocol, naming the field
    if protocol.kind != "rating":
        raise CpdmError(f"protocol {protocol.name!r} is a {protocol.kind} protocol: raters would judge triplets, "
                        "not rate pairs; create the campaign with --kind 2afc")
    overlap = validate_overlap(dict(DEFAULT_OVERLAP if overlap is None else overlap))
    pair_ids = sorted(set(int(p) for p in pair_ids))
    with ws.transaction() as conn:
        if conn.execute("SELECT 1 FROM campaigns WHERE name = ?", (name,)).fetchone():
            raise CpdmError(f"a campaign named {name!r} already exists")
        known = {row[0]: row[1] for row in conn.execute("SELECT id, kind FROM pairs")}
        missing = [p for p in pair_ids if p not in known]
        if missing:
            raise CpdmError(f"pairs not in the workspace: {missing[:10]}")
        if not any(known[p] == "normal" for p in pair_ids):
            raise CpdmError(f"campaign {name!r} would have only attention checks and no pairs to rate")
        if include_checks:
            checks = make_check_pairs_in(conn, _anchors_of_pairs(ws, pair_ids))
            known.update((p, "check") for p in checks if p not in known)
            pair_ids = sorted(set(pair_ids) | set(checks))
        campaign_id = insert_campaign_in(conn, name, protocol_text, overlap)
        add_campaign_pairs_in(conn, campaign_id, pair_ids)
        seed_load(conn, PAIRS, campaign_id, [p for p in pair_ids if known[p] == "normal"])
    return campaign_id


def insert_campaign_in(conn, name: str, protocol_text: str, overlap: dict, *, design: str | None = None) -> int:
    """A new campaign's row, in the caller's transaction: a rating campaign, or a 2afc one when ``design`` is given."""
    if design is None:
        return conn.execute(
            "INSERT INTO campaigns (name, protocol, overlap) VALUES (?, ?, ?)",
            (name, protocol_text, json.dumps(overlap)),
        ).lastrowid
    return conn.execute(
        "INSERT INTO campaigns (name, protocol, overlap, kind, design) VALUES (?, ?, ?, '2afc', ?)",
        (name, protocol_text, json.dumps(overlap), design),
    ).lastrowid


def add_campaign_pairs_in(conn, campaign_id: int, pair_ids) -> None:
    """Link pairs to a campaign, in the caller's transaction (links already there are kept)."""
    conn.executemany(
        "INSERT INTO campaign_pairs (campaign, pair) VALUES (?, ?) ON CONFLICT DO NOTHING",
        [(campaign_id, pair_id) for pair_id in pair_ids],
    )


def matching_pairs(ws, *, categories=(), artists=(), variants=()) -> list[int]:
    """:func:`select_pairs`, refusing an empty selection with an error that names the filters matching nothing."""
    pair_ids = select_pairs(ws, categories=categories, artists=artists, variants=variants)
    if not pair_ids:
        filters = [f"{label} in {list(values)}" for label, values in
                   (("category", categories), ("artist", artists), ("variant", variants)) if values]
        raise CpdmError("no pairs match " + (" and ".join(filters) if filters else "(the workspace has no pairs)"))
    return pair_ids


def create_campaign_from_filters(
    ws,
    name: str,
    *,
    categories=(),
    artists=(),
    variants=(),
    protocol_text: str | None = None,
    overlap: dict[str, int] | None = None,
    include_checks: bool = True,
) -> tuple[int, int]:
    """Create a campaign over the normal pairs matching the filters; return (campaign id, pairs).

    The error for an empty selection names the filters, so the user knows
    what matched nothing.
    """
    pair_ids = matching_pairs(ws, categories=categories, artists=artists, variants=variants)
    campaign_id = create_campaign(
        ws, name, pair_ids, protocol_text=protocol_text, overlap=overlap, include_checks=include_checks
    )
    return campaign_id, len(pair_ids)


def _anchors_of_pairs(ws, pair_ids: list[int]) -> list[int]:
    anchors: set[int] = set()
    for start in range(0, len(pair_ids), 500):
        chunk = pair_ids[start:start + 500]
        anchors.update(r[0] for r in ws.conn.execute(
            f"SELECT DISTINCT anchor FROM pairs WHERE id IN ({', '.join('?' * len(chunk))})", chunk
        ))
    return sorted(anchors)


def get_campaign(ws, campaign_id: int) -> Campaign:
    """A campaign with its parsed protocol."""
    row = ws.conn.execute(
        "SELECT id, name, protocol, overlap, status, kind, design FROM campaigns WHERE id = ?", (campaign_id,)
    ).fetchone()
    if row is None:
        raise CpdmError(f"no campaign with id {campaign_id}")
    return Campaign(row[0], row[1], parse_protocol(row[2], frozen=True), row[2], json.loads(row[3]), row[4],
                    row[5], row[6])


def set_overlap(ws, campaign_id: int, overlap: dict[str, int]) -> None:
    """Change how many ratings per role each pair of a campaign needs."""
    overlap = validate_overlap(dict(overlap))
    with ws.transaction() as conn:
        if conn.execute("UPDATE campaigns SET overlap = ? WHERE id = ?", (json.dumps(overlap), campaign_id)).rowcount == 0:
            raise CpdmError(f"no campaign with id {campaign_id}")


def set_campaign_status(ws, campaign_id: int, status: str) -> None:
    """Open or close a campaign; raters only get pairs from open campaigns."""
    if status not in ("open", "closed"):
        raise CpdmError(f"campaign status must be open or closed, got {status!r}")
    with ws.transaction() as conn:
        if conn.execute("UPDATE campaigns SET status = ? WHERE id = ?", (status, campaign_id)).rowcount == 0:
            raise CpdmError(f"no campaign with id {campaign_id}")


def open_campaign_ids(ws) -> list[int]:
    """Open campaigns, oldest first: the order raters work through them."""
    return [r[0] for r in ws.conn.execute("SELECT id FROM campaigns WHERE status = 'open' ORDER BY id")]


def campaign_id_by_name(ws, name: str) -> int:
    """Look a campaign up by name, with a clear error listing the known names."""
    row = ws.conn.execute("SELECT id FROM campaigns WHERE name = ?", (name,)).fetchone()
    if row is None:
        known = [r[0] for r in ws.conn.execute("SELECT name FROM campaigns ORDER BY id")]
        hint = f" (known: {', '.join(known)})" if known else " (there are no campaigns yet)"
        raise CpdmError(f"no campaign named {name!r}{hint}")
    return row[0]


def busiest_campaign_id(ws) -> int | None:
    """The campaign a researcher most likely means: open before closed, then most answers, then newest.

    None when there are no campaigns. (The newest alone is often a closed or
    simulated campaign while the study under way is another.)
    """
    row = ws.conn.execute(  # answers: ratings of pairs, or judgments of triplets (2afc)
        "SELECT c.id FROM campaigns c ORDER BY c.status = 'open' DESC, "
        "(SELECT COUNT(*) FROM ratings r WHERE r.campaign = c.id) "
        "+ (SELECT COUNT(*) FROM judgments j WHERE j.campaign = c.id) DESC, c.id DESC LIMIT 1"
    ).fetchone()
    return None if row is None else row[0]


def latest_rated_campaign_id(ws) -> int | None:
    """The campaign an analysis most likely means: the newest with answers (not only skips), else the newest.

    None when there are no campaigns. (The open campaign is often still
    unrated while an earlier or simulated campaign holds the data.)
    """
    row = ws.conn.execute(
        "SELECT c.id FROM campaigns c ORDER BY EXISTS (SELECT 1 FROM ratings r WHERE r.campaign = c.id "
        "AND r.value IS NOT NULL) DESC, c.id DESC LIMIT 1"
    ).fetchone()
    return None if row is None else row[0]


def list_campaigns(ws) -> list[dict]:
    """Every campaign: id, name, status, overlap, pairs, kind (rating or 2afc), design, triplets (2afc: offered now).

    ``design`` is how a 2afc campaign's triplets were chosen (empty for a
    rating campaign); ``triplets`` counts the normal triplets raters can be
    offered (priority above 0), 0 for a rating campaign.
    """
    rows = ws.conn.execute(
        "SELECT c.id, c.name, c.status, c.overlap, "
        "(SELECT COUNT(*) FROM campaign_pairs cp WHERE cp.campaign = c.id), c.kind, c.design, "
        "(SELECT COUNT(*) FROM campaign_triplets ct JOIN triplets t ON t.id = ct.triplet AND t.kind = 'normal' "
        " WHERE ct.campaign = c.id AND ct.priority > 0) "
        "FROM campaigns c ORDER BY c.id"
    ).fetchall()
    return [
        {"id": r[0], "name": r[1], "status": r[2], "overlap": json.loads(r[3]), "pairs": r[4], "kind": r[5],
         "design": r[6] or "", "triplets": r[7]} for r in rows
    ]
