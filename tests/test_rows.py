"""The one write path for curation rows: variants, prompts, generations, pairs."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from cpdm.errors import CpdmError
from cpdm.store.images import store_image_bytes
from cpdm.store.rows import (
    GenerationRow,
    add_anchor_in,
    add_generations,
    add_prompt,
    add_variant,
    find_generation,
    get_variant,
    list_variants,
    make_check_pairs,
    make_pairs,
    set_variant_status,
)
from cpdm.store.rows import add_anchor as add_anchor_row
from tests.conftest import png_bytes

CURATION_TABLES = ("variants", "prompts", "generations", "pairs")
ROOT = Path(__file__).resolve().parents[1]


def counts(ws) -> dict[str, int]:
    return {table: ws.conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0] for table in CURATION_TABLES}


def add_anchor(ws, seed: int) -> int:
    image = store_image_bytes(ws, png_bytes(seed), f"anchor {seed}").sha256
    return add_anchor_row(ws, image, artist="someone")


@pytest.fixture
def study(ws):
    """Two anchors, a baseline variant, a prompt per anchor and two stored generation images."""
    anchors = [add_anchor(ws, 1), add_anchor(ws, 2)]
    variant = add_variant(ws, "sd15", base_model="sd-1.5", method="original")
    prompts = [add_prompt(ws, anchor, f"a painting {anchor}", origin="template") for anchor in anchors]
    images = [store_image_bytes(ws, png_bytes(10 + n), f"generation {n}").sha256 for n in range(3)]
    return {"ws": ws, "anchors": anchors, "variant": variant, "prompts": prompts, "images": images}


# -- variants ---------------------------------------------------------------


def test_a_variant_is_recorded_with_every_field(ws):
    base = add_variant(ws, "sd15", base_model="sd-1.5", method="original")
    job = ws.conn.execute("INSERT INTO jobs (kind) VALUES ('unlearn')").lastrowid
    uce = add_variant(
        ws, "uce-three-artists", base_model="sd-1.5", method="uce", concepts=["Artist A", "Artist B"],
        params={"lamb": 0.5, "erase_scale": 1}, parent="sd15", status="pending", job=job,
    )
    variant = get_variant(ws, "uce-three-artists")
    assert variant == get_variant(ws, uce)
    assert (variant.method, variant.concepts, variant.params) == ("uce", ("Artist A", "Artist B"),
                                                                  {"erase_scale": 1, "lamb": 0.5})
    assert (variant.parent, variant.status, variant.job, variant.is_baseline) == (base, "pending", job, False)
    assert variant.created_at.endswith("Z")
    assert get_variant(ws, "sd15").is_baseline and get_variant(ws, "sd15").concepts == ()
    assert [v.name for v in list_variants(ws)] == ["sd15", "uce-three-artists"]


def test_a_variant_status_change_keeps_its_artifact_and_says_why(ws):
    variant = add_variant(ws, "esd-x", base_model="sd-1.5", method="esd", concepts=["x"], status="training")
    set_variant_status(ws, variant, "ready", artifact_path="artifacts/esd-x.safetensors", artifact_sha256="a" * 64)
    set_variant_status(ws, variant, "failed", message="out of memory")
    after = get_variant(ws, variant)
    assert (after.status, after.message) == ("failed", "out of memory")
    assert (after.artifact_path, after.artifact_sha256) == ("artifacts/esd-x.safetensors", "a" * 64)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"name": "sd15"}, "already exists"),
        ({"name": "  "}, "variant name"),
        ({"method": ""}, "variant method"),
        ({"status": "done"}, "variant status must be one of"),
        ({"parent": "nope"}, "unknown variant 'nope'"),
        ({"parent": 999}, "unknown variant 999"),
        ({"job": 5}, "unknown job 5"),
        ({"concepts": "one string"}, "concepts must be a list"),
        ({"concepts": ["ok", ""]}, "concept must be non-empty"),
        ({"params": ["not", "a", "mapping"]}, "params must be a mapping"),
        ({"params": {"x": object()}}, "params are not JSON"),
        ({"artifact_sha256": "abc"}, "64 lowercase hex"),
    ],
)
def test_a_bad_variant_is_refused_and_nothing_written(ws, kwargs, message):
    add_variant(ws, "sd15", base_model="sd-1.5", method="original")
    before = counts(ws)
    arguments = {"name": "new", "base_model": "sd-1.5", "method": "esd", **kwargs}
    name = arguments.pop("name")
    with pytest.raises(CpdmError, match=message):
        add_variant(ws, name, **arguments)
    assert counts(ws) == before


def test_bad_status_changes_and_lookups_are_refused(ws):
    variant = add_variant(ws, "esd-x", base_model="sd-1.5", method="esd", status="training")
    with pytest.raises(CpdmError, match="variant status must be one of"):
        set_variant_status(ws, variant, "finished")
    with pytest.raises(CpdmError, match="unknown variant 42"):
        set_variant_status(ws, 42, "ready")
    with pytest.raises(CpdmError, match="64 lowercase hex"):
        set_variant_status(ws, variant, "ready", artifact_sha256="XYZ")
    assert get_variant(ws, variant).status == "training"
    with pytest.raises(CpdmError, match="unknown variant 'missing'"):
        get_variant(ws, "missing")


# -- prompts ----------------------------------------------------------------


def test_a_refined_prompt_records_its_parent_and_author(study):
    ws, anchor = study["ws"], study["anchors"][0]
    interrogated = add_prompt(ws, anchor, "a lighthouse, oil painting", origin="interrogator",
                              author="ViT-L-14/openai", params={"mode": "fast"})
    refined = add_prompt(ws, anchor, "A lighthouse at dusk in thick oil strokes", origin="llm",
                         author="gpt-4o", parent=interrogated)
    rows = dict(
        (row[0], row[1:]) for row in ws.conn.execute("SELECT id, origin, author, parent, params FROM prompts")
    )
    assert rows[interrogated] == ("interrogator", "ViT-L-14/openai", None, '{"mode": "fast"}')
    assert rows[refined] == ("llm", "gpt-4o", interrogated, "{}")
    assert rows[study["prompts"][0]][:2] == ("template", "template")  # the author of a template prompt


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"anchor_id": 999}, "unknown anchor 999"),
        ({"text": " "}, "prompt must be non-empty"),
        ({"origin": "chatgpt"}, "prompt origin must be one of"),
        ({"parent": 999}, "unknown parent prompt 999"),
        ({"parent": "other-anchor"}, "belongs to anchor"),
        ({"author": ""}, "prompt author"),
        ({"params": "x"}, "params must be a mapping"),
    ],
)
def test_a_bad_prompt_is_refused_and_nothing_written(study, change, message):
    ws = study["ws"]
    if change.get("parent") == "other-anchor":
        change = {"parent": study["prompts"][1]}
    arguments = {"anchor_id": study["anchors"][0], "text": "a painting", "origin": "llm", "author": "m", **change}
    before = counts(ws)
    with pytest.raises(CpdmError, match=message):
        add_prompt(ws, arguments.pop("anchor_id"), arguments.pop("text"), **arguments)
    assert counts(ws) == before


# -- generations ------------------------------------------------------------


def test_adding_generations_again_returns_the_same_ids_and_adds_nothing(study):
    ws, prompt, variant, images = study["ws"], study["prompts"][0], study["variant"], study["images"]
    rows = [
        GenerationRow(prompt, variant, 23, 50, 9.0, images[0], {"sampler": "ddim", "eta": 0.0}),
        GenerationRow(prompt, variant, 24, 50, 9.0, images[1], {"sampler": "ddim", "eta": 0.0}),
    ]
    first = add_generations(ws, rows)
    before = counts(ws)
    # A resumed run: the same rows (params in another key order, guidance as an int) plus one new one.
    again = add_generations(ws, [
        GenerationRow(prompt, variant, 23, 50, 9, images[0], {"eta": 0.0, "sampler": "ddim"}),
        GenerationRow(prompt, variant, 24, 50, 9.0, images[1], {"sampler": "ddim", "eta": 0.0}),
        GenerationRow(prompt, variant, 25, 50, 9.0, images[2], {"sampler": "ddim", "eta": 0.0}),
    ])
    assert again[:2] == first and again[2] not in first
    assert counts(ws)["generations"] == before["generations"] + 1
    assert find_generation(ws, prompt, variant, 24, 50, 9.0, {"eta": 0.0, "sampler": "ddim"}) == first[1]
    assert find_generation(ws, prompt, variant, 24, 30, 9.0, {"eta": 0.0, "sampler": "ddim"}) is None
    assert find_generation(ws, prompt, variant, 24, 50, 9.0, {"sampler": "ddim"}) is None


def test_generations_without_a_sampler_are_keyed_too(study):
    ws, prompt, variant, images = study["ws"], study["prompts"][0], study["variant"], study["images"]
    row = GenerationRow(prompt, variant, 1, None, None, images[0])
    assert add_generations(ws, [row]) == add_generations(ws, [row])
    assert find_generation(ws, prompt, variant, 1, None, None, None) is not None
    assert counts(ws)["generations"] == 1


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"seed": -1}, "seed must be a whole number"),
        ({"seed": 1.5}, "seed must be a whole number"),
        ({"seed": True}, "seed must be a whole number"),
        ({"steps": 0}, "steps must be a whole number"),
        ({"steps": "50"}, "steps must be a whole number"),
        ({"guidance": float("nan")}, "guidance must be a finite number"),
        ({"guidance": -1.0}, "guidance must be a finite number"),
        ({"params": [1]}, "params must be a mapping"),
        ({"prompt": 999}, "unknown prompt 999"),
        ({"variant": 999}, "unknown variant 999"),
        ({"image": "f" * 64}, "is not in the workspace"),
    ],
)
def test_a_bad_generation_is_refused_and_none_of_the_batch_is_written(study, change, message):
    ws = study["ws"]
    good = dict(prompt=study["prompts"][0], variant=study["variant"], seed=1, steps=50, guidance=7.5,
                image=study["images"][0], params={})
    before = counts(ws)
    with pytest.raises(CpdmError, match=message):
        add_generations(ws, [GenerationRow(**good), GenerationRow(**{**good, "seed": 2, **change})])
    assert counts(ws) == before


def test_generations_that_are_not_generation_rows_are_refused(study):
    with pytest.raises(CpdmError, match="GenerationRow"):
        add_generations(study["ws"], [(1, 1, 1, 1, 1.0, "x", {})])


# -- pairs ------------------------------------------------------------------


def test_making_pairs_links_each_generation_to_its_anchor_once(study):
    ws, variant, images = study["ws"], study["variant"], study["images"]
    generations = add_generations(ws, [
        GenerationRow(study["prompts"][0], variant, 1, 20, 7.5, images[0]),
        GenerationRow(study["prompts"][1], variant, 1, 20, 7.5, images[1]),
    ])
    pairs = make_pairs(ws, generations)
    assert make_pairs(ws, reversed(generations)) == pairs[::-1]
    rows = ws.conn.execute("SELECT anchor, generation, image, kind FROM pairs ORDER BY id").fetchall()
    assert rows == [(study["anchors"][0], generations[0], images[0], "normal"),
                    (study["anchors"][1], generations[1], images[1], "normal")]
    before = counts(ws)
    with pytest.raises(CpdmError, match="unknown generation 999"):
        make_pairs(ws, [generations[0], 999])
    assert counts(ws) == before


def test_check_pairs_are_identical_and_unrelated_and_made_once(study):
    ws = study["ws"]
    third = add_anchor(ws, 3)
    anchors = study["anchors"] + [third]
    image = dict(ws.conn.execute("SELECT id, image FROM anchors").fetchall())
    ids = make_check_pairs(ws, anchors)
    assert make_check_pairs(ws, anchors) == ids
    rows = ws.conn.execute(f"SELECT anchor, image, kind FROM pairs WHERE id IN ({','.join('?' * len(ids))}) "
                           "ORDER BY id", ids).fetchall()
    assert rows == [
        (anchors[0], image[anchors[0]], "check_identical"), (anchors[0], image[anchors[1]], "check_unrelated"),
        (anchors[1], image[anchors[1]], "check_identical"), (anchors[1], image[anchors[2]], "check_unrelated"),
        (anchors[2], image[anchors[2]], "check_identical"), (anchors[2], image[anchors[0]], "check_unrelated"),
    ]
    # A chosen unrelated anchor gives its own check pair; the identical one is reused.
    chosen = make_check_pairs(ws, [anchors[0]], unrelated={anchors[0]: anchors[2]})
    assert chosen[0] == ids[0] and chosen[1] not in ids
    assert ws.conn.execute("SELECT image FROM pairs WHERE id = ?", (chosen[1],)).fetchone()[0] == image[anchors[2]]


def test_check_pairs_for_unknown_anchors_are_refused(study):
    ws = study["ws"]
    before = counts(ws)
    with pytest.raises(CpdmError, match=r"anchors not in the workspace: \[99\]"):
        make_check_pairs(ws, [study["anchors"][0], 99])
    with pytest.raises(CpdmError, match=r"anchors not in the workspace: \[98\]"):
        make_check_pairs(ws, [study["anchors"][0]], unrelated={study["anchors"][0]: 98})
    assert counts(ws) == before


# -- anchors -------------------------------------------------------------------


def _anchor_rows(ws) -> list[tuple]:
    return ws.conn.execute("SELECT id, image, artist, title, category, source, license FROM anchors ORDER BY id").fetchall()


def test_add_anchor_stores_every_field_and_refuses_an_image_that_is_an_anchor_already(ws):
    image = store_image_bytes(ws, png_bytes(7), "work").sha256
    anchor = add_anchor_row(ws, image, artist="Ada", title="Lilies", category="portrait", source="scan",
                            license="CC0")
    assert _anchor_rows(ws) == [(anchor, image, "Ada", "Lilies", "portrait", "scan", "CC0")]
    with pytest.raises(CpdmError, match=rf"is anchor {anchor} already"):
        add_anchor_row(ws, image, artist="someone else")
    with ws.transaction() as conn:
        assert add_anchor_in(conn, image) is None  # an import meeting it again: a duplicate, not an error
    assert _anchor_rows(ws) == [(anchor, image, "Ada", "Lilies", "portrait", "scan", "CC0")]


@pytest.mark.parametrize("image, fields, message", [
    ("0" * 64, {}, "is not stored in the workspace"),
    (None, {}, "is not stored in the workspace"),
    ("stored", {"category": "sculpture"}, "anchor category must be one of style, portrait, character, illustration"),
    ("stored", {"artist": 3}, "an anchor's artist must be text or nothing, got int"),
    ("stored", {"license": ["CC0"]}, "an anchor's license must be text or nothing, got list"),
])
def test_add_anchor_refuses_bad_input_and_writes_nothing(ws, image, fields, message):
    stored = store_image_bytes(ws, png_bytes(8), "work").sha256
    with pytest.raises(CpdmError, match=re.escape(message)):
        add_anchor_row(ws, stored if image == "stored" else image, **fields)
    assert _anchor_rows(ws) == []


# -- the path stays the only one --------------------------------------------

_INSERT = re.compile(r"INSERT\s+(?:OR\s+\w+\s+)?INTO\s+(anchors|variants|prompts|generations|pairs)\b",
                     re.IGNORECASE)
# The write path itself; code that writes into an older schema's database, which the write path cannot
# open (the fixture builder runs with that old cpdm; the migration tests plant rows to migrate); the
# test that the schema's own constraints refuse bad rows.
_ALLOWED = {Path("cpdm/store/rows.py"), Path("tests/fixtures/build_schema_v4_workspace.py"),
            Path("tests/test_migration_v5.py"), Path("tests/test_workspace.py")}


def test_no_code_outside_the_write_path_inserts_curation_rows():
    sources = [ROOT / "app.py"] + [path for folder in ("cpdm", "tests", "benchmarks", "pages")
                                   for path in sorted((ROOT / folder).rglob("*.py"))]
    offenders = []
    for path in sources:
        relative = path.relative_to(ROOT)
        text = path.read_text(encoding="utf-8")
        if relative not in _ALLOWED:
            offenders += [f"{relative}:{text.count(chr(10), 0, m.start()) + 1}" for m in _INSERT.finditer(text)]
    assert offenders == [], "INSERT into curation tables outside cpdm/store/rows.py: " + ", ".join(offenders)
