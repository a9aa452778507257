"""The one write path for curation rows: anchors, variants, prompts, generations and pairs.

Everything that adds these rows (curation, generation, unlearning, the demo,
the simulator, tests and benchmarks) calls these functions, so each rule is
checked in one place. Every function validates its input before it writes,
and writes in one short transaction: on an error nothing is written.

Adding generations and making pairs is idempotent: a resumed run gets the
ids of the rows it made before and adds nothing twice. A generation is
identified by (prompt, variant, seed, steps, guidance, params), params
compared as canonical JSON (:func:`cpdm.store.workspace.canonical_json`).

Why one file of this length: it is the write path of five tables that
refer to one another (an anchor's prompts, their generations, the pairs
made of them), each function with the checks its rows need; they share the
validators and the canonical params.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Iterable, Mapping, Sequence

from cpdm.errors import CpdmError
from cpdm.store.time import format_time, utc_now
from cpdm.store.workspace import ANCHOR_CATEGORIES, BASELINE_METHOD, PROMPT_ORIGINS, VARIANT_STATUSES, canonical_json

# Who writes a prompt of an origin when the caller does not say (interrogator and LLM prompts name their model).
DEFAULT_AUTHORS = {"template": "template", "manual": "manual"}
# The largest seed a generation row can hold: SQLite's INTEGER is a signed 64-bit number.
MAX_SEED = 2**63 - 1


def _params_json(params, what: str) -> str:
    """Canonical JSON of a params mapping (None is ``{}``), or a CpdmError naming ``what``."""
    if params is None:
        params = {}
    if not isinstance(params, Mapping):
        raise CpdmError(f"{what} params must be a mapping of names to values, got {type(params).__name__}")
    try:
        return canonical_json(dict(params))
    except (TypeError, ValueError) as exc:
        raise CpdmError(f"{what} params are not JSON: {exc}") from exc


def _text(value, what: str) -> str:
    """A non-empty, stripped string, or a CpdmError."""
    if not isinstance(value, str) or not value.strip():
        raise CpdmError(f"{what} must be non-empty text, got {value!r}")
    return value.strip()


def _optional_text(value, what: str) -> str | None:
    """None, or a string as given; anything else is a CpdmError."""
    if value is not None and not isinstance(value, str):
        raise CpdmError(f"{what} must be text or nothing, got {type(value).__name__}")
    return value


# --------------------------------------------------------------------------
# Anchors
# --------------------------------------------------------------------------


def add_anchor_in(
    conn,
    image: str,
    *,
    artist: str | None = None,
    title: str | None = None,
    category: str = "style",
    source: str | None = None,
    license: str | None = None,  # noqa: A002 (the column's name)
) -> int | None:
    """Add an anchor for a stored image inside the caller's transaction.

    Returns its id, or None when the image is an anchor already (an image is
    one anchor at most; an import that meets it again reports a duplicate).
    The image must be in the workspace's ``images`` table.
    """
    if category not in ANCHOR_CATEGORIES:
        raise CpdmError(f"anchor category must be one of {', '.join(ANCHOR_CATEGORIES)}, got {category!r}")
    texts = [_optional_text(value, f"an anchor's {what}") for value, what in
             ((artist, "artist"), (title, "title"), (source, "source"), (license, "license"))]
    if not isinstance(image, str) or not conn.execute("SELECT 1 FROM images WHERE sha256 = ?", (image,)).fetchone():
        raise CpdmError(f"image {image!r} is not stored in the workspace")
    cursor = conn.execute(
        "INSERT INTO anchors (image, artist, title, category, source, license) VALUES (?, ?, ?, ?, ?, ?) "
        "ON CONFLICT(image) DO NOTHING",
        (image, texts[0], texts[1], category, texts[2], texts[3]),
    )
    return cursor.lastrowid if cursor.rowcount == 1 else None


def add_anchor(ws, image: str, **fields) -> int:
    """Add an anchor for a stored image (see :func:`add_anchor_in` for ``fields``) and return its id.

    An image that is an anchor already is refused, naming that anchor.
    """
    with ws.transaction() as conn:
        anchor_id = add_anchor_in(conn, image, **fields)
        if anchor_id is None:
            existing = conn.execute("SELECT id FROM anchors WHERE image = ?", (image,)).fetchone()[0]
            raise CpdmError(f"image {image[:12]}… is anchor {existing} already")
        return anchor_id


# --------------------------------------------------------------------------
# Variants
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class Variant:
    """A diffusion model variant: a base model and how (and whether) a concept was unlearned from it."""

    id: int
    name: str
    base_model: str
    method: str  # BASELINE_METHOD ("original") for the model nothing was unlearned from
    concepts: tuple[str, ...]
    params: dict
    parent: int | None  # id of the variant it was derived from
    status: str  # one of VARIANT_STATUSES
    artifact_path: str | None
    artifact_sha256: str | None
    job: int | None  # id of the job that made it
    created_at: str | None  # None for variants made before schema version 5
    message: str | None = None  # what the last status change said (a failure's reason)

    @property
    def is_baseline(self) -> bool:
        return self.method == BASELINE_METHOD


_VARIANT_COLUMNS = (
    "id, name, base_model, method, concepts, params, parent, status, artifact_path, artifact_sha256, job, "
    "created_at, status_message"
)


def _variant_from_row(row) -> Variant:
    return Variant(
        id=row[0], name=row[1], base_model=row[2], method=row[3], concepts=tuple(json.loads(row[4])),
        params=json.loads(row[5]), parent=row[6], status=row[7], artifact_path=row[8], artifact_sha256=row[9],
        job=row[10], created_at=row[11], message=row[12],
    )


def _check_status(status) -> str:
    if status not in VARIANT_STATUSES:
        raise CpdmError(f"variant status must be one of {', '.join(VARIANT_STATUSES)}, got {status!r}")
    return status


def _check_sha256(value) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or len(value) != 64 or any(c not in "0123456789abcdef" for c in value):
        raise CpdmError(f"an artifact sha256 must be 64 lowercase hex digits, got {value!r}")
    return value


def _check_concepts(concepts) -> list[str]:
    if isinstance(concepts, str):
        raise CpdmError("concepts must be a list of names, not one string")
    return [_text(concept, "a concept") for concept in concepts]


def _variant_id(conn, name_or_id) -> int:
    """The id of a variant given by name or id, or a CpdmError."""
    if isinstance(name_or_id, bool):
        raise CpdmError(f"unknown variant {name_or_id!r}")
    if isinstance(name_or_id, int):
        row = conn.execute("SELECT id FROM variants WHERE id = ?", (name_or_id,)).fetchone()
    else:
        row = conn.execute("SELECT id FROM variants WHERE name = ?", (name_or_id,)).fetchone()
    if row is None:
        raise CpdmError(f"unknown variant {name_or_id!r}")
    return row[0]


def add_variant_in(
    conn,
    name: str,
    *,
    base_model: str,
    method: str,
    concepts: Sequence[str] = (),
    params: Mapping | None = None,
    parent: int | str | None = None,
    status: str = "ready",
    artifact_path: str | None = None,
    artifact_sha256: str | None = None,
    job: int | None = None,
) -> int:
    """:func:`add_variant` inside the caller's write transaction."""
    name = _text(name, "a variant name")
    row = (
        name, _text(base_model, "a base model"), _text(method, "a variant method"),
        json.dumps(_check_concepts(concepts)), _params_json(params, f"variant {name!r}"), _check_status(status),
        artifact_path, _check_sha256(artifact_sha256), job, format_time(utc_now()),
    )
    if conn.execute("SELECT 1 FROM variants WHERE name = ?", (name,)).fetchone():
        raise CpdmError(f"a variant named {name!r} already exists")
    parent_id = None if parent is None else _variant_id(conn, parent)
    if job is not None and not conn.execute("SELECT 1 FROM jobs WHERE id = ?", (job,)).fetchone():
        raise CpdmError(f"unknown job {job!r}")
    return conn.execute(
        "INSERT INTO variants (name, base_model, method, concepts, params, status, artifact_path, "
        "artifact_sha256, job, created_at, parent) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (*row, parent_id),
    ).lastrowid


def add_variant(ws, name: str, **fields) -> int:
    """Add a variant and return its id; ``method="original"`` is the baseline. A taken name is refused.

    ``fields`` are :func:`add_variant_in`'s: base_model and method (required),
    concepts, params, parent, status, artifact_path, artifact_sha256, job.
    """
    with ws.transaction() as conn:
        return add_variant_in(conn, name, **fields)


def set_variant_status(
    ws,
    variant_id: int,
    status: str,
    *,
    artifact_path: str | None = None,
    artifact_sha256: str | None = None,
    message: str | None = None,
) -> None:
    """Record a variant's new status (and, when given, its artifact); ``message`` says why, for a failure."""
    _check_status(status)
    _check_sha256(artifact_sha256)
    with ws.transaction() as conn:
        variant_id = _variant_id(conn, variant_id)
        conn.execute(
            "UPDATE variants SET status = ?, status_message = ?, artifact_path = COALESCE(?, artifact_path), "
            "artifact_sha256 = COALESCE(?, artifact_sha256) WHERE id = ?",
            (status, message, artifact_path, artifact_sha256, variant_id),
        )


def get_variant(ws, name_or_id: int | str) -> Variant:
    """A variant by name or id, or a CpdmError."""
    variant_id = _variant_id(ws.conn, name_or_id)
    return _variant_from_row(
        ws.conn.execute(f"SELECT {_VARIANT_COLUMNS} FROM variants WHERE id = ?", (variant_id,)).fetchone()
    )


def list_variants(ws) -> list[Variant]:
    """Every variant, in the order they were added."""
    return [_variant_from_row(row) for row in ws.conn.execute(f"SELECT {_VARIANT_COLUMNS} FROM variants ORDER BY id")]


# --------------------------------------------------------------------------
# Prompts
# --------------------------------------------------------------------------


def add_prompt_in(
    conn,
    anchor_id: int,
    text: str,
    *,
    origin: str,
    author: str | None = None,
    parent: int | None = None,
    params: Mapping | None = None,
) -> int:
    """:func:`add_prompt` inside the caller's write transaction."""
    text = _text(text, "a prompt")
    if origin not in PROMPT_ORIGINS:
        raise CpdmError(f"prompt origin must be one of {', '.join(PROMPT_ORIGINS)}, got {origin!r}")
    author = DEFAULT_AUTHORS.get(origin) if author is None else _text(author, "a prompt author")
    params_text = _params_json(params, "prompt")
    if not conn.execute("SELECT 1 FROM anchors WHERE id = ?", (anchor_id,)).fetchone():
        raise CpdmError(f"unknown anchor {anchor_id!r}")
    if parent is not None:
        row = conn.execute("SELECT anchor FROM prompts WHERE id = ?", (parent,)).fetchone()
        if row is None:
            raise CpdmError(f"unknown parent prompt {parent!r}")
        if row[0] != anchor_id:
            raise CpdmError(f"parent prompt {parent} belongs to anchor {row[0]}, not {anchor_id}")
    return conn.execute(
        "INSERT INTO prompts (anchor, text, origin, author, parent, params) VALUES (?, ?, ?, ?, ?, ?)",
        (anchor_id, text, origin, author, parent, params_text),
    ).lastrowid


def add_prompt(ws, anchor_id: int, text: str, **fields) -> int:
    """Add a prompt for an anchor and return its id.

    ``fields``: ``origin`` is how it was made (interrogator, llm, template,
    manual; required); ``author`` who made it: the interrogator or LLM
    model, or ``template`` / ``manual`` (the default for those two origins).
    ``parent`` is the prompt it was refined from, which must be a prompt of
    the same anchor; ``params`` how it was made.
    """
    with ws.transaction() as conn:
        return add_prompt_in(conn, anchor_id, text, **fields)


# --------------------------------------------------------------------------
# Generations
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class GenerationRow:
    """One generated image: which prompt and variant made it, how, and the stored image's sha256.

    ``steps`` and ``guidance`` are None for images made without a sampler.
    """

    prompt: int
    variant: int
    seed: int
    steps: int | None
    guidance: float | None
    image: str
    params: Mapping | None = field(default=None)


def _is_whole(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _checked_generation(row: GenerationRow) -> tuple:
    """The key and image of a generation row, validated (ids are checked against the database later)."""
    if not isinstance(row, GenerationRow):
        raise CpdmError(f"generations are given as GenerationRow, got {type(row).__name__}")
    if not _is_whole(row.seed) or not 0 <= row.seed <= MAX_SEED:
        raise CpdmError(f"a generation's seed must be a whole number from 0 to {MAX_SEED}, got {row.seed!r}")
    if row.steps is not None and (not _is_whole(row.steps) or row.steps < 1):
        raise CpdmError(f"a generation's steps must be a whole number ≥ 1, got {row.steps!r}")
    guidance = row.guidance
    if guidance is not None:
        if isinstance(guidance, bool) or not isinstance(guidance, (int, float)) or not math.isfinite(guidance) \
                or guidance < 0:
            raise CpdmError(f"a generation's guidance must be a finite number ≥ 0, got {guidance!r}")
        guidance = float(guidance)
    if not isinstance(row.image, str) or not row.image:
        raise CpdmError(f"a generation's image must be a stored image's sha256, got {row.image!r}")
    key = (row.prompt, row.variant, row.seed, row.steps, guidance, _params_json(row.params, "generation"))
    return key, row.image


_FIND_GENERATION = (
    "SELECT id FROM generations WHERE prompt = ? AND variant = ? AND IFNULL(seed, -1) = IFNULL(?, -1) "
    "AND IFNULL(steps, -1) = IFNULL(?, -1) AND IFNULL(guidance, -1) = IFNULL(?, -1) AND params = ?"
)


def _check_generation_refs(conn, keys_and_images: list[tuple]) -> None:
    """Refuse unknown prompts, variants and images, naming the first of each."""
    for column, table, position in (("id", "prompts", 0), ("id", "variants", 1)):
        for key, _ in keys_and_images:
            if not conn.execute(f"SELECT 1 FROM {table} WHERE {column} = ?", (key[position],)).fetchone():
                raise CpdmError(f"unknown {table[:-1]} {key[position]!r}")
    for _, image in keys_and_images:
        if not conn.execute("SELECT 1 FROM images WHERE sha256 = ?", (image,)).fetchone():
            raise CpdmError(f"image {image[:12]} is not in the workspace (store it first)")


def add_generations(ws, rows: Iterable[GenerationRow]) -> list[int]:
    """Add generations and return their ids, in order; a row already there returns its existing id.

    Idempotent on (prompt, variant, seed, steps, guidance, params), so a
    resumed run adds only what it had not made yet. A row repeating an
    earlier one with another image keeps the first image.
    """
    rows = list(rows)
    with ws.transaction() as conn:
        return add_generations_in(conn, rows)


def add_generations_in(conn, rows: Iterable[GenerationRow]) -> list[int]:
    """:func:`add_generations` inside the caller's write transaction."""
    checked = [_checked_generation(row) for row in rows]
    _check_generation_refs(conn, checked)
    ids = []
    for key, image in checked:
        existing = conn.execute(_FIND_GENERATION, key).fetchone()
        if existing is not None:
            ids.append(existing[0])
            continue
        ids.append(conn.execute(
            "INSERT INTO generations (prompt, variant, seed, steps, guidance, params, image) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            (*key, image),
        ).lastrowid)
    return ids


def find_generation(ws, prompt: int, variant: int, seed: int, steps: int | None, guidance: float | None,
                    params: Mapping | None) -> int | None:
    """The id of the generation with this key, or None (so a resumed run can skip work already done)."""
    key, _ = _checked_generation(GenerationRow(prompt, variant, seed, steps, guidance, "-", params))
    row = ws.conn.execute(_FIND_GENERATION, key).fetchone()
    return None if row is None else row[0]


# --------------------------------------------------------------------------
# Pairs
# --------------------------------------------------------------------------


def _ensure_pairs(conn, wanted: list[tuple[int, int | None, str, str]], created: list[int] | None = None) -> list[int]:
    """Ids of the pairs (anchor, generation, image, kind), inserted where missing, in order.

    ``created``, when given, receives the ids this call inserted (the
    caller's own count, true while other processes make pairs too).
    """
    ids = []
    for anchor, generation, image, kind in wanted:
        row = conn.execute(
            "SELECT id FROM pairs WHERE anchor = ? AND image = ? AND kind = ?", (anchor, image, kind)
        ).fetchone()
        if row is None:
            row = conn.execute(
                "INSERT INTO pairs (anchor, generation, image, kind) VALUES (?, ?, ?, ?) RETURNING id",
                (anchor, generation, image, kind),
            ).fetchone()
            if created is not None:
                created.append(row[0])
        ids.append(row[0])
    return ids


def make_pairs(ws, generation_ids: Iterable[int], created: list[int] | None = None) -> list[int]:
    """A normal pair (the generation's anchor against the generation) per generation; returns their ids.

    Idempotent: an existing pair's id is returned. Unknown generations are
    refused before anything is written. ``created``, when given, receives
    the ids of the pairs this call inserted.
    """
    generation_ids = list(generation_ids)
    with ws.transaction() as conn:
        return make_pairs_in(conn, generation_ids, created)


def make_pairs_in(conn, generation_ids: Iterable[int], created: list[int] | None = None) -> list[int]:
    """:func:`make_pairs` inside the caller's write transaction."""
    wanted = []
    for generation in generation_ids:
        row = conn.execute(
            "SELECT p.anchor, g.image FROM generations g JOIN prompts p ON p.id = g.prompt WHERE g.id = ?",
            (generation,),
        ).fetchone()
        if row is None:
            raise CpdmError(f"unknown generation {generation!r}")
        wanted.append((row[0], generation, row[1], "normal"))
    return _ensure_pairs(conn, wanted, created)


def make_check_pairs_in(conn, anchor_ids: Iterable[int], unrelated: Mapping[int, int] | None = None,
                        created: list[int] | None = None) -> list[int]:
    """:func:`make_check_pairs` inside the caller's write transaction."""
    anchor_ids = sorted(set(anchor_ids))
    images = dict(conn.execute("SELECT id, image FROM anchors").fetchall())
    unknown = [a for a in [*anchor_ids, *(unrelated or {}).values()] if a not in images]
    if unknown:
        raise CpdmError(f"anchors not in the workspace: {unknown[:10]}")
    others = anchor_ids if len(anchor_ids) > 1 else sorted(images)
    wanted = []
    for anchor in anchor_ids:
        wanted.append((anchor, None, images[anchor], "check_identical"))
        if unrelated and anchor in unrelated:
            other = unrelated[anchor]
        elif len(others) > 1:
            other = others[(others.index(anchor) + 1) % len(others)]
        else:
            continue
        if images[other] != images[anchor]:
            wanted.append((anchor, None, images[other], "check_unrelated"))
    return _ensure_pairs(conn, wanted, created)


def make_check_pairs(ws, anchor_ids: Iterable[int], *, unrelated: Mapping[int, int] | None = None,
                     created: list[int] | None = None) -> list[int]:
    """Attention-check pairs for these anchors, made where missing; returns their ids.

    Each anchor gets an identical check (the anchor against itself) and an
    unrelated check: the anchor against another anchor's image, by default
    the next anchor in the list (or, for a single anchor, the next anchor in
    the workspace; none when the workspace has only one), or the one
    ``unrelated`` names for it. Ids come per anchor, identical first.
    ``created``, when given, receives the ids of the pairs this call inserted.
    """
    with ws.transaction() as conn:
        return make_check_pairs_in(conn, anchor_ids, unrelated, created)


def variant_pair_ids(ws, variant: int | str) -> list[int]:
    """The normal pairs of a variant's generations (by variant name or id), in id order."""
    variant_id = get_variant(ws, variant).id
    rows = ws.conn.execute(
        "SELECT p.id FROM pairs p JOIN generations g ON g.id = p.generation "
        "WHERE g.variant = ? AND p.kind = 'normal' ORDER BY p.id",
        (variant_id,),
    ).fetchall()
    return [row[0] for row in rows]
