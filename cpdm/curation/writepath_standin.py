"""STAND-IN for the store's write path (``cpdm.store.rows``), until it lands.

The functions and signatures here are those of ``cpdm.store.rows``; curation
and generation code imports them from this one module so that switching to
the real write path is a change of one import line per module. Fields the
current schema has no column for (a prompt's author and parent, a variant's
concepts, status, parent and artifact) are kept in the row's ``params`` JSON
under ``_``-prefixed keys.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Iterable, Sequence

from cpdm.errors import CpdmError
from cpdm.store.workspace import PROMPT_ORIGINS

VARIANT_STATUSES = ("pending", "training", "ready", "failed")


def canonical_json(value: dict | None) -> str:
    """Sorted-key, compact JSON: equal dicts give equal text (the idempotency key)."""
    return json.dumps(value or {}, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


@dataclass(frozen=True)
class Variant:
    """A diffusion model and how it was unlearned (``method == "original"``: not at all)."""

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


@dataclass(frozen=True)
class GenerationRow:
    """One generated image to record; ``image`` is the stored image's sha256."""

    prompt: int
    variant: int
    seed: int
    steps: int | None
    guidance: float | None
    image: str
    params: dict = field(default_factory=dict)


_VARIANT_EXTRA = ("concepts", "parent", "status", "artifact_path", "artifact_sha256", "job")


def add_variant(ws, name, *, base_model, method, concepts=(), params=None, parent=None, status="ready",
                artifact_path=None, artifact_sha256=None, job=None) -> int:
    """Record a variant; a name already used is refused."""
    if status not in VARIANT_STATUSES:
        raise CpdmError(f"variant status {status!r} is not one of {', '.join(VARIANT_STATUSES)}")
    stored = dict(params or {})
    stored.update({f"_{key}": value for key, value in zip(
        _VARIANT_EXTRA, (list(concepts), parent, status, artifact_path, artifact_sha256, job))})
    with ws.transaction() as conn:
        if conn.execute("SELECT 1 FROM variants WHERE name = ?", (name,)).fetchone():
            raise CpdmError(f"a variant named {name!r} already exists")
        return conn.execute(
            "INSERT INTO variants (name, base_model, method, concept, params, weights_path) VALUES (?, ?, ?, ?, ?, ?)",
            (name, base_model, method, ", ".join(concepts) or None, canonical_json(stored), artifact_path),
        ).lastrowid


def _variant_from_row(row) -> Variant:
    vid, name, base_model, method, params_text = row
    params = json.loads(params_text or "{}")
    extra = {key: params.pop(f"_{key}", None) for key in _VARIANT_EXTRA}
    return Variant(
        id=vid, name=name, base_model=base_model, method=method, concepts=tuple(extra["concepts"] or ()),
        params=params, parent=extra["parent"], status=extra["status"] or "ready",
        artifact_path=extra["artifact_path"], artifact_sha256=extra["artifact_sha256"], job=extra["job"],
    )


def get_variant(ws, name_or_id) -> Variant:
    """A variant by name or id; an unknown one is a clear error listing the known names."""
    column = "id" if isinstance(name_or_id, int) else "name"
    row = ws.conn.execute(
        f"SELECT id, name, base_model, method, params FROM variants WHERE {column} = ?", (name_or_id,)
    ).fetchone()
    if row is None:
        known = ", ".join(v.name for v in list_variants(ws)) or "none yet"
        raise CpdmError(f"no variant {name_or_id!r} in the workspace (known: {known})")
    return _variant_from_row(row)


def list_variants(ws) -> list[Variant]:
    rows = ws.conn.execute("SELECT id, name, base_model, method, params FROM variants ORDER BY id").fetchall()
    return [_variant_from_row(row) for row in rows]


def set_variant_status(ws, variant_id, status, *, artifact_path=None, artifact_sha256=None, message=None) -> None:
    if status not in VARIANT_STATUSES:
        raise CpdmError(f"variant status {status!r} is not one of {', '.join(VARIANT_STATUSES)}")
    with ws.transaction() as conn:
        params = json.loads(conn.execute("SELECT params FROM variants WHERE id = ?", (variant_id,)).fetchone()[0])
        params["_status"] = status
        if artifact_path is not None:
            params["_artifact_path"] = artifact_path
        if artifact_sha256 is not None:
            params["_artifact_sha256"] = artifact_sha256
        conn.execute("UPDATE variants SET params = ? WHERE id = ?", (canonical_json(params), variant_id))


def add_prompt(ws, anchor_id, text, *, origin, author=None, parent=None, params=None) -> int:
    """Record a prompt for an anchor; ``parent`` is the prompt it was refined from."""
    if origin not in PROMPT_ORIGINS:
        raise CpdmError(f"prompt origin {origin!r} is not one of {', '.join(PROMPT_ORIGINS)}")
    if not text or not text.strip():
        raise CpdmError("a prompt needs some text")
    stored = dict(params or {})
    stored.update({"_author": author, "_parent": parent})
    with ws.transaction() as conn:
        if conn.execute("SELECT 1 FROM anchors WHERE id = ?", (anchor_id,)).fetchone() is None:
            raise CpdmError(f"no anchor {anchor_id} in the workspace")
        if parent is not None and conn.execute("SELECT 1 FROM prompts WHERE id = ?", (parent,)).fetchone() is None:
            raise CpdmError(f"no prompt {parent} in the workspace")
        return conn.execute(
            "INSERT INTO prompts (anchor, text, origin, params) VALUES (?, ?, ?, ?)",
            (anchor_id, text.strip(), origin, canonical_json(stored)),
        ).lastrowid


def prompt_author_parent(params_text: str) -> tuple[str | None, int | None, dict]:
    """(author, parent, the other params) of a stored prompt's params JSON."""
    params = json.loads(params_text or "{}")
    return params.pop("_author", None), params.pop("_parent", None), params


def _generation_key(row: GenerationRow) -> tuple:
    guidance = None if row.guidance is None else float(row.guidance)
    return (row.prompt, row.variant, row.seed, row.steps, guidance, canonical_json(row.params))


_FIND_GENERATION = (
    "SELECT id FROM generations WHERE prompt = ? AND variant = ? AND IFNULL(seed, -1) = IFNULL(?, -1) "
    "AND IFNULL(steps, -1) = IFNULL(?, -1) AND IFNULL(guidance, -1) = IFNULL(?, -1) AND params = ?"
)


def find_generation(ws, prompt, variant, seed, steps, guidance, params) -> int | None:
    found = ws.conn.execute(
        _FIND_GENERATION, _generation_key(GenerationRow(prompt, variant, seed, steps, guidance, "-", params))
    ).fetchone()
    return None if found is None else found[0]


def add_generations(ws, rows: Sequence[GenerationRow]) -> list[int]:
    """Record generations in one transaction; an existing row's id is returned, nothing is duplicated."""
    ids = []
    with ws.transaction() as conn:
        for row in rows:
            key = _generation_key(row)
            found = conn.execute(_FIND_GENERATION, key).fetchone()
            if found:
                ids.append(found[0])
                continue
            ids.append(conn.execute(
                "INSERT INTO generations (prompt, variant, seed, steps, guidance, image, params) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)", (*key[:5], row.image, key[5]),
            ).lastrowid)
    return ids


def make_pairs(ws, generation_ids: Iterable[int]) -> list[int]:
    """A normal pair (generation against its anchor) per generation; idempotent."""
    ids = []
    with ws.transaction() as conn:
        for generation_id in generation_ids:
            anchor, image = conn.execute(
                "SELECT p.anchor, g.image FROM generations g JOIN prompts p ON p.id = g.prompt WHERE g.id = ?",
                (generation_id,),
            ).fetchone()
            conn.execute(
                "INSERT INTO pairs (anchor, generation, image, kind) VALUES (?, ?, ?, 'normal') "
                "ON CONFLICT (anchor, image, kind) DO NOTHING", (anchor, generation_id, image),
            )
            ids.append(conn.execute(
                "SELECT id FROM pairs WHERE anchor = ? AND image = ? AND kind = 'normal'", (anchor, image)
            ).fetchone()[0])
    return ids


def make_check_pairs(ws, anchor_ids: Iterable[int], *, unrelated: dict | None = None) -> list[int]:
    """Identical and unrelated attention-check pairs for these anchors; idempotent.

    The unrelated image is the one ``unrelated`` names for an anchor, else the
    next anchor's in the list (for one anchor, the next in the workspace).
    """
    anchor_ids = sorted(set(anchor_ids))
    with ws.transaction() as conn:
        images = dict(conn.execute("SELECT id, image FROM anchors").fetchall())
        unknown = [a for a in [*anchor_ids, *(unrelated or {}).values()] if a not in images]
        if unknown:
            raise CpdmError(f"anchors not in the workspace: {unknown[:10]}")
        others = anchor_ids if len(anchor_ids) > 1 else sorted(images)
        wanted = []
        for anchor in anchor_ids:
            wanted.append((anchor, images[anchor], "check_identical"))
            if unrelated and anchor in unrelated:
                other = unrelated[anchor]
            elif len(others) > 1:
                other = others[(others.index(anchor) + 1) % len(others)]
            else:
                continue
            if images[other] != images[anchor]:
                wanted.append((anchor, images[other], "check_unrelated"))
        conn.executemany(
            "INSERT INTO pairs (anchor, generation, image, kind) VALUES (?, NULL, ?, ?) "
            "ON CONFLICT (anchor, image, kind) DO NOTHING", wanted,
        )
        return [conn.execute("SELECT id FROM pairs WHERE anchor = ? AND image = ? AND kind = ?", w).fetchone()[0]
                for w in wanted]
