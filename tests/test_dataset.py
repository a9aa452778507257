"""Dataset exchange: export then import preserves everything; per-anchor folders; bad datasets refused whole.

The release's own layouts are tested in test_dataset_layouts.py.
"""

from __future__ import annotations

import csv
import json
import shutil

import pytest

from cpdm.curation.dataset import DatasetError, export_dataset, import_dataset
from cpdm.curation.prompts import add_manual_prompt
from cpdm.store.rows import add_prompt, add_variant
from cpdm.generation.batch import GenerationSettings, run_generation
from cpdm.diffusion.tiny import tiny_sd_pipeline
from cpdm.store.workspace import init_workspace, open_workspace
from tests.conftest import write_png
from tests.curation_support import add_anchors, workspace_state


@pytest.fixture(scope="module")
def pipeline():
    return tiny_sd_pipeline()


@pytest.fixture(scope="module")
def curated_once(tmp_path_factory, pipeline):
    """Three anchors, refined prompts, two variants' generations, normal and check pairs (built once)."""
    root = tmp_path_factory.mktemp("curated")
    ws = init_workspace(root / "ws")
    anchors = add_anchors(ws, root / "anchors", count=3)
    for anchor in anchors:
        parent = add_manual_prompt(ws, anchor, f"prompt {anchor}")
        add_prompt(ws, anchor, f"refined {anchor}", origin="llm", author="some-llm", parent=parent,
                   params={"refiner": "openai"})
    settings = GenerationSettings(per_prompt=2, steps=1, height=32, width=32)
    run_generation(ws, settings=settings, offline_tiny=True, progress=False, pipeline=pipeline, check_rate=0.3)
    add_variant(ws, "esd-artist-0", base_model="offline-tiny", method="esd", concepts=("Artist 0",),
                params={"lr": 1e-5})
    run_generation(ws, variant="esd-artist-0", settings=settings, offline_tiny=True, progress=False,
                   pipeline=pipeline)
    ws.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    ws.close()
    return root / "ws"


@pytest.fixture
def curated(curated_once, tmp_path):
    """A private copy of the curated workspace."""
    shutil.copytree(curated_once, tmp_path / "curated")
    ws = open_workspace(tmp_path / "curated")
    yield ws
    ws.close()


def _snapshot(ws) -> dict:
    """Everything the round trip must keep, keyed by content (ids may differ)."""
    anchor_sha = dict(ws.conn.execute("SELECT id, image FROM anchors"))
    prompts = {pid: (anchor_sha[a], text, origin, params) for pid, a, text, origin, params in
               ws.conn.execute("SELECT id, anchor, text, origin, params FROM prompts")}
    variant_name = dict(ws.conn.execute("SELECT id, name FROM variants"))
    generations = {gid: (prompts[p][:2], variant_name[v], seed, steps, guidance, image, params)
                   for gid, p, v, seed, steps, guidance, image, params in ws.conn.execute(
                       "SELECT id, prompt, variant, seed, steps, guidance, image, params FROM generations")}
    return {
        "anchors": sorted(ws.conn.execute("SELECT image, artist, title, category, source, license FROM anchors"),
                          key=repr),
        "prompts": sorted(prompts.values()),
        "variants": sorted(ws.conn.execute("SELECT name, base_model, method, concepts, params, status FROM variants"), key=repr),
        "generations": sorted(generations.values(), key=repr),
        "pairs": sorted(((anchor_sha[a], generations[g][5] if g else "-", image, kind) for a, g, image, kind in
                         ws.conn.execute("SELECT anchor, generation, image, kind FROM pairs")), key=repr),
        "images": sorted(r[0] for r in ws.conn.execute(
            "SELECT image FROM anchors UNION SELECT image FROM generations")),
    }


def test_export_then_import_into_a_fresh_workspace_preserves_everything(curated, tmp_path):
    counts = export_dataset(curated, tmp_path / "dataset")
    assert counts["generations"] == 12 and counts["variants"] == 2 and counts["prompts"] == 6
    metadata = json.loads((tmp_path / "dataset" / "metadata.json").read_text())
    assert metadata["format"] == "cpdm-dataset" and metadata["counts"] == counts
    assert "generations/1.png" in metadata["checksums"] and "anchors.csv" in metadata["checksums"]
    fresh = init_workspace(tmp_path / "fresh")
    report = import_dataset(fresh, tmp_path / "dataset")
    assert report.new_anchors == 3
    assert _snapshot(fresh) == _snapshot(curated)
    kinds = {kind for *_, kind in _snapshot(fresh)["pairs"]}
    assert kinds == {"normal", "check_identical", "check_unrelated"}
    import_dataset(fresh, tmp_path / "dataset")  # again: nothing added
    assert _snapshot(fresh) == _snapshot(curated)
    assert fresh.conn.execute("SELECT COUNT(*) FROM prompts").fetchone()[0] == 6


def test_export_refuses_a_folder_that_is_not_empty(curated, tmp_path):
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "keep.txt").write_text("mine")
    with pytest.raises(DatasetError, match="not an empty folder"):
        export_dataset(curated, tmp_path / "busy")
    assert [p.name for p in (tmp_path / "busy").iterdir()] == ["keep.txt"]


def test_a_damaged_dataset_is_refused_with_nothing_imported(curated, tmp_path):
    export_dataset(curated, tmp_path / "dataset")
    image = tmp_path / "dataset" / "generations" / "3.png"
    image.write_bytes(image.read_bytes()[:-10])
    fresh = init_workspace(tmp_path / "fresh")
    with pytest.raises(DatasetError, match=r"generations/3.png: checksum differs"):
        import_dataset(fresh, tmp_path / "dataset")
    assert fresh.conn.execute("SELECT COUNT(*) FROM anchors").fetchone()[0] == 0
    assert not list((fresh.root / "images").rglob("*.png"))


def test_a_dangling_reference_is_refused_with_nothing_imported(curated, tmp_path):
    export_dataset(curated, tmp_path / "dataset")
    path = tmp_path / "dataset" / "prompts.csv"
    rows = list(csv.DictReader(path.open(encoding="utf-8")))
    rows[0]["anchor"] = "999"
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    metadata_path = tmp_path / "dataset" / "metadata.json"
    metadata = json.loads(metadata_path.read_text())
    metadata["checksums"].pop("prompts.csv")
    metadata_path.write_text(json.dumps(metadata))
    fresh = init_workspace(tmp_path / "fresh")
    with pytest.raises(DatasetError, match="points at anchor 999"):
        import_dataset(fresh, tmp_path / "dataset")
    assert fresh.conn.execute("SELECT COUNT(*) FROM anchors").fetchone()[0] == 0


def test_a_folder_of_neither_layout_is_a_clear_error(ws, tmp_path):
    (tmp_path / "random").mkdir()
    with pytest.raises(DatasetError, match="none of the layouts cpdm reads.*--anchors and --generated"):
        import_dataset(ws, tmp_path / "random")


def _per_anchor_folders(root):
    """anchors/a.png, anchors/b.png; generations/a/ with three images (named out of order), none for b."""
    write_png(root / "anchors" / "a.png", seed=1)
    write_png(root / "anchors" / "b.png", seed=2)
    for name, seed in (("10.png", 12), ("2.png", 11), ("1.png", 10)):
        write_png(root / "generations" / "a" / name, seed=seed)
    return root


def test_per_anchor_folders_import_with_files_paired_by_name_in_sorted_order(ws, tmp_path):
    from cpdm.store.images import read_image_file

    root = _per_anchor_folders(tmp_path / "release")
    report = import_dataset(ws, root, variant="sd21", base_model="stabilityai/stable-diffusion-2-1")
    assert report.layout == "per-anchor folders"
    assert report.counts == {"anchors": 2, "prompts": 1, "generations": 3}
    assert report.warnings == [f"no generated images for 1 anchor: {root / 'anchors' / 'b.png'}"]
    rows = ws.conn.execute(
        "SELECT a.image, g.seed, g.image, v.name, v.base_model FROM generations g JOIN prompts p ON p.id = g.prompt "
        "JOIN anchors a ON a.id = p.anchor JOIN variants v ON v.id = g.variant ORDER BY g.seed").fetchall()
    sha = {name: read_image_file(root / "generations" / "a" / name)[1].sha256 for name in ("1.png", "10.png", "2.png")}
    anchor_a = read_image_file(root / "anchors" / "a.png")[1].sha256
    assert [(r[0], r[1], r[2]) for r in rows] == [(anchor_a, 0, sha["1.png"]), (anchor_a, 1, sha["10.png"]),
                                                  (anchor_a, 2, sha["2.png"])]
    assert {(r[3], r[4]) for r in rows} == {("sd21", "stabilityai/stable-diffusion-2-1")}
    assert ws.conn.execute("SELECT COUNT(*) FROM pairs WHERE kind = 'normal'").fetchone()[0] == 3
    import_dataset(ws, root, variant="sd21")
    assert ws.conn.execute("SELECT COUNT(*) FROM generations").fetchone()[0] == 3
    assert ws.conn.execute("SELECT COUNT(*) FROM prompts").fetchone()[0] == 1


def test_a_folder_named_after_no_anchor_or_a_bad_image_is_refused_with_nothing_imported(ws, tmp_path):
    root = _per_anchor_folders(tmp_path / "release")
    write_png(root / "generations" / "c" / "1.png", seed=20)
    with pytest.raises(DatasetError, match="no anchor named c"):
        import_dataset(ws, root)
    (root / "generations" / "c" / "1.png").unlink()
    (root / "generations" / "c").rmdir()
    (root / "generations" / "a" / "3.png").write_bytes(b"not an image")
    with pytest.raises(DatasetError, match="3.png"):
        import_dataset(ws, root)
    assert ws.conn.execute("SELECT COUNT(*) FROM anchors").fetchone()[0] == 0


def test_the_commands_export_and_import(curated, tmp_path, runner):
    from cpdm.cli import cli

    result = runner.invoke(cli, ["export-dataset", "--workspace", str(curated.root), str(tmp_path / "out")])
    assert result.exit_code == 0 and "12 generations" in result.output
    result = runner.invoke(cli, ["import-dataset", "--workspace", str(tmp_path / "new"), str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    assert "3 new anchors" in result.output
    result = runner.invoke(cli, ["export-dataset", "--workspace", str(curated.root), str(tmp_path / "out")])
    assert result.exit_code == 1 and "not an empty folder" in result.output


# --- refusals: nothing outside the dataset is read, and a refused import writes nothing ----------------


def _set(dataset, table: str, line: int, column: str, value: str) -> None:
    """Change one cell of TABLE.csv (``line`` as an editor numbers it, the header is line 1) and its checksum."""
    import hashlib

    path = dataset / f"{table}.csv"
    with path.open(encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))
    rows[line - 2][column] = value
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    metadata = json.loads((dataset / "metadata.json").read_text())
    metadata["checksums"][f"{table}.csv"] = hashlib.sha256(path.read_bytes()).hexdigest()
    (dataset / "metadata.json").write_text(json.dumps(metadata))


def _refused_leaving_it_as_it_was(ws, dataset, match: str) -> str:
    """Import ``dataset``, expecting a refusal matching ``match`` and a workspace as it was; returns the message."""
    before = workspace_state(ws)
    with pytest.raises(DatasetError, match=match) as refused:
        import_dataset(ws, dataset)
    assert workspace_state(ws) == before
    return str(refused.value)


@pytest.fixture
def exported(curated, tmp_path):
    export_dataset(curated, tmp_path / "dataset")
    return tmp_path / "dataset"


@pytest.fixture
def busy(tmp_path):
    """A workspace that already holds something (two anchors), so 'as it was' is not just 'empty'."""
    workspace = init_workspace(tmp_path / "busy")
    add_anchors(workspace, tmp_path / "busy-anchors", count=2)
    yield workspace
    workspace.close()


def test_a_generation_file_outside_the_dataset_is_refused_with_nothing_imported(exported, busy, tmp_path):
    outside = tmp_path / "outside.png"
    shutil.copyfile(exported / "generations" / "1.png", outside)  # the row's sha256 would match
    _set(exported, "generations", 2, "file", "../outside.png")
    _refused_leaving_it_as_it_was(busy, exported, r"generations.csv line 2: '../outside.png' is not a path inside")
    (exported / "generations" / "link.png").symlink_to(outside)
    _set(exported, "generations", 2, "file", "generations/link.png")
    _refused_leaving_it_as_it_was(busy, exported, "'generations/link.png' is a symlink that leads outside")


def test_an_absolute_path_is_refused_before_it_is_opened(exported, busy, tmp_path):
    """The refusal reads the same whether the file exists or not: it tells nothing about the machine."""
    outside = tmp_path / "outside.png"
    shutil.copyfile(exported / "generations" / "1.png", outside)
    messages = []
    for path in (outside, tmp_path / "absent.png"):
        _set(exported, "generations", 2, "file", str(path))
        message = _refused_leaving_it_as_it_was(busy, exported, "is not a path inside")
        messages.append(message.replace(str(path), "PATH"))
    assert messages[0] == messages[1] and "no such file" not in messages[0]


def test_a_duplicate_variant_name_is_refused_and_the_workspace_is_as_it_was(exported, busy):
    _set(exported, "variants", 3, "name", "original")
    _refused_leaving_it_as_it_was(busy, exported, "variants.csv line 3: variant name 'original' is also the name at")


def _command_refusal(runner, ws, dataset) -> str:
    """``cpdm import-dataset`` refusing ``dataset``: exit 1, one line, the workspace as it was; returns the line."""
    from cpdm.cli import cli

    before = workspace_state(ws)
    result = runner.invoke(cli, ["import-dataset", "--workspace", str(ws.root), str(dataset)])
    assert result.exit_code == 1
    assert len(result.output.strip().splitlines()) == 1, result.output
    assert workspace_state(ws) == before
    return result.output


def test_bad_json_in_params_is_one_line_through_the_command_and_the_workspace_is_as_it_was(exported, busy, runner):
    _set(exported, "prompts", 7, "params", "{not json")
    output = _command_refusal(runner, busy, exported)
    assert f"{exported / 'prompts.csv'} line 7: params is not valid JSON" in output
    assert "nothing was imported" in output and "Traceback" not in output


def test_an_export_without_its_metadata_is_an_error_not_an_empty_import(exported, busy):
    (exported / "metadata.json").unlink()
    _refused_leaving_it_as_it_was(busy, exported, "holds anchors.csv.*of a cpdm export but no metadata.json")


def test_a_pair_of_unknown_kind_is_an_error(exported, busy):
    _set(exported, "pairs", 2, "kind", "check_sideways")
    _refused_leaving_it_as_it_was(busy, exported, "pairs.csv line 2: pair kind 'check_sideways' is not one of")


def test_a_row_the_store_refuses_rolls_back_the_images_and_rows_written_before_it(exported, busy):
    """Prompt origins are checked by the store while writing: by then the images are stored and anchors inserted."""
    _set(exported, "prompts", 3, "origin", "dream")
    _refused_leaving_it_as_it_was(busy, exported, "prompts.csv line 3: prompt origin must be one of")


def test_a_bad_anchor_row_is_named_in_the_users_file_with_no_option_the_command_lacks(exported, busy, runner):
    _set(exported, "anchors", 4, "category", "sculpture")
    output = _command_refusal(runner, busy, exported)
    assert f"{exported / 'anchors.csv'} line 4: anchor category must be one of" in output
    assert "--skip-bad" not in output and "cpdm-dataset-" not in output
