"""Invite tokens and roles.

A rater is identified by an invite token carried in their link
(``http://HOST:8501/?token=…``). Only the token's sha256 is stored, so a
leaked database does not leak working links. Tokens are shown once, when
they are made.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass

from cpdm.errors import CpdmError
from cpdm.store.time import SQL_NOW
from cpdm.store.workspace import ROLES

TOKEN_PATTERN = re.compile(r"^[A-Za-z0-9_-]{20,64}$")


@dataclass(frozen=True)
class Rater:
    id: int
    name: str
    role: str
    disabled: bool
    simulated: bool
    flagged: bool
    consented_at: str | None


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def new_token() -> str:
    """A fresh URL-safe token (32 random bytes)."""
    return secrets.token_urlsafe(32)


def create_rater(ws, name: str, role: str, *, simulated: bool = False, token: str | None = None) -> tuple[Rater, str]:
    """Create a rater and return it with its invite token (the only time the token exists in clear)."""
    if role not in ROLES:
        raise CpdmError(f"unknown role {role!r} (choose one of {', '.join(ROLES)})")
    if not name.strip():
        raise CpdmError("a rater needs a non-empty name")
    token = token or new_token()
    with ws.transaction() as conn:
        rater_id = insert_rater(conn, name.strip(), role, token, simulated=simulated)
    return get_rater(ws, rater_id), token


def insert_rater(conn, name: str, role: str, token: str, *, simulated: bool = False, consented_at: str | None = None,
                 created_at: str | None = None) -> int:
    """Add a rater inside the caller's write transaction (the one writer of ``raters`` rows); returns its id.

    ``created_at`` defaults to now; ``consented_at`` to not yet.
    """
    return conn.execute(
        f"INSERT INTO raters (name, role, token_hash, simulated, consented_at, created_at) "
        f"VALUES (?, ?, ?, ?, ?, COALESCE(?, {SQL_NOW}))",
        (name, role, hash_token(token), int(simulated), consented_at, created_at),
    ).lastrowid


def _row_to_rater(row) -> Rater:
    return Rater(row[0], row[1], row[2], bool(row[3]), bool(row[4]), bool(row[5]), row[6])


_RATER_COLUMNS = "id, name, role, disabled, simulated, flagged, consented_at"


def get_rater(ws, rater_id: int) -> Rater:
    row = ws.conn.execute(f"SELECT {_RATER_COLUMNS} FROM raters WHERE id = ?", (rater_id,)).fetchone()
    if row is None:
        raise CpdmError(f"no rater with id {rater_id}")
    return _row_to_rater(row)


def rater_for_token(ws, token: str | None) -> Rater | None:
    """The active rater a token belongs to, or None for a missing, malformed, unknown or revoked token."""
    if not token or not TOKEN_PATTERN.match(token):
        return None
    row = ws.conn.execute(
        f"SELECT {_RATER_COLUMNS} FROM raters WHERE token_hash = ?", (hash_token(token),)
    ).fetchone()
    if row is None:
        return None
    rater = _row_to_rater(row)
    return None if rater.disabled else rater


def revoke_rater(ws, rater_id: int) -> None:
    """Disable a rater's link; their ratings are kept."""
    with ws.transaction() as conn:
        if conn.execute("UPDATE raters SET disabled = 1 WHERE id = ?", (rater_id,)).rowcount == 0:
            raise CpdmError(f"no rater with id {rater_id}")


def flag_rater(conn, rater_id: int, reason: str) -> None:
    """Flag a rater for review, in the caller's transaction (once: the first reason stays)."""
    conn.execute("UPDATE raters SET flagged = 1, flag_reason = ? WHERE id = ? AND flagged = 0", (reason, rater_id))


def list_raters(ws) -> list[Rater]:
    rows = ws.conn.execute(f"SELECT {_RATER_COLUMNS} FROM raters ORDER BY id").fetchall()
    return [_row_to_rater(row) for row in rows]


def invite_url(token: str, base_url: str = "http://127.0.0.1:8501") -> str:
    return f"{base_url.rstrip('/')}/?token={token}"


def record_consent(ws, rater_id: int) -> Rater:
    """Record that the rater read the instructions and agreed (the first time only); return the rater."""
    with ws.transaction() as conn:
        updated = conn.execute(
            f"UPDATE raters SET consented_at = COALESCE(consented_at, {SQL_NOW}) "
            "WHERE id = ? AND disabled = 0",
            (rater_id,),
        ).rowcount
    if updated == 0:
        raise CpdmError(f"no active rater with id {rater_id}")
    return get_rater(ws, rater_id)


def rater_by_name_or_id(ws, key: str) -> Rater:
    """A rater given by numeric id or by exact name (the name must be unique)."""
    if str(key).isdigit():
        return get_rater(ws, int(key))
    rows = ws.conn.execute(f"SELECT {_RATER_COLUMNS} FROM raters WHERE name = ?", (key,)).fetchall()
    if not rows:
        raise CpdmError(f"no rater named {key!r}")
    if len(rows) > 1:
        raise CpdmError(f"{len(rows)} raters are named {key!r}; give the id instead (cpdm raters list)")
    return _row_to_rater(rows[0])
