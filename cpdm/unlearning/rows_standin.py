"""STAND-IN for ``cpdm.store.rows`` (the store's write path for variants).

Only the variant functions that unlearning needs, with the write path's
names and signatures, on the schema as it is: the fields the ``variants``
table has no column for yet (status, concepts, parent, artifact sha256, job,
created time) are kept in ``params`` under the key ``_row``. Remove this
module once ``cpdm.store.rows`` exists; :mod:`cpdm.unlearning.registry`
imports the real functions first.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from cpdm.errors import CpdmError
from cpdm.store.time import format_time, utc_now
from cpdm.store.writer import write_transaction

VARIANT_STATUSES = ("pending", "training", "ready", "failed")
_ROW_KEY = "_row"


@dataclass
class Variant:
    """One model variant: a base model and how it was unlearned."""

    id: int
    name: str
    base_model: str
    method: str
    concepts: tuple[str, ...] = ()
    params: dict = field(default_factory=dict)
    parent: int | None = None
    status: str = "ready"
    artifact_path: str | None = None
    artifact_sha256: str | None = None
    job: int | None = None
    created_at: str | None = None
    message: str | None = None


def _check_status(status: str) -> None:
    if status not in VARIANT_STATUSES:
        raise CpdmError(f"unknown variant status {status!r} (one of {', '.join(VARIANT_STATUSES)})")


def add_variant(ws, name, *, base_model, method, concepts=(), params=None, parent=None, status="ready",
                artifact_path=None, artifact_sha256=None, job=None) -> int:
    """Register a variant; a duplicate name is refused."""
    _check_status(status)
    if not str(name).strip():
        raise CpdmError("a variant needs a name")
    row = {"status": status, "concepts": list(concepts), "parent": parent, "artifact_sha256": artifact_sha256,
           "job": job, "created_at": format_time(utc_now()), "message": None}
    stored = dict(params or {}, **{_ROW_KEY: row})
    with write_transaction(ws) as conn:
        if conn.execute("SELECT 1 FROM variants WHERE name = ?", (name,)).fetchone():
            raise CpdmError(f"a variant named {name!r} already exists")
        cursor = conn.execute(
            "INSERT INTO variants (name, base_model, method, concept, params, weights_path) VALUES (?, ?, ?, ?, ?, ?)",
            (name, base_model, method, ", ".join(concepts) or None, json.dumps(stored, sort_keys=True), artifact_path),
        )
        return int(cursor.lastrowid)


def set_variant_status(ws, variant_id, status, *, artifact_path=None, artifact_sha256=None, message=None) -> None:
    """Move a variant to ``status``, recording its artifact or a message when given."""
    _check_status(status)
    with write_transaction(ws) as conn:
        found = conn.execute("SELECT params, weights_path FROM variants WHERE id = ?", (variant_id,)).fetchone()
        if found is None:
            raise CpdmError(f"no variant with id {variant_id}")
        params = json.loads(found[0] or "{}")
        row = params.setdefault(_ROW_KEY, {})
        row["status"] = status
        row["message"] = message
        if artifact_sha256 is not None:
            row["artifact_sha256"] = artifact_sha256
        conn.execute(
            "UPDATE variants SET params = ?, weights_path = ? WHERE id = ?",
            (json.dumps(params, sort_keys=True), artifact_path if artifact_path is not None else found[1], variant_id),
        )


def _variant_from_row(row) -> Variant:
    params = json.loads(row[5] or "{}")
    extra = params.pop(_ROW_KEY, {})
    concepts = extra.get("concepts") or ([c.strip() for c in row[4].split(",")] if row[4] else [])
    return Variant(
        id=row[0], name=row[1], base_model=row[2], method=row[3], concepts=tuple(concepts), params=params,
        parent=extra.get("parent"), status=extra.get("status", "ready"), artifact_path=row[6],
        artifact_sha256=extra.get("artifact_sha256"), job=extra.get("job"), created_at=extra.get("created_at"),
        message=extra.get("message"),
    )


_COLUMNS = "id, name, base_model, method, concept, params, weights_path"


def get_variant(ws, name_or_id) -> Variant:
    """The variant with this name (or integer id); a clear error when there is none."""
    if isinstance(name_or_id, int) or str(name_or_id).isdigit():
        row = ws.conn.execute(f"SELECT {_COLUMNS} FROM variants WHERE id = ?", (int(name_or_id),)).fetchone()
    else:
        row = ws.conn.execute(f"SELECT {_COLUMNS} FROM variants WHERE name = ?", (str(name_or_id),)).fetchone()
    if row is None:
        raise CpdmError(f"no variant {name_or_id!r} (see `cpdm variants list`)")
    return _variant_from_row(row)


def list_variants(ws) -> list[Variant]:
    """Every variant, oldest first."""
    return [_variant_from_row(row) for row in ws.conn.execute(f"SELECT {_COLUMNS} FROM variants ORDER BY id")]
