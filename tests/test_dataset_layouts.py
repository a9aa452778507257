"""The CPDM release's folder layouts, built in temporary folders by the release's naming rules.

Generation (sd_inference_v2_1.py): anchors/, caption.csv (image,prompt) and one flat output/ of
``{stem}_{row*9+k:05}.jpg``, seed 23 before each prompt. Metric (cpdm_metric.py): two flat folders
paired file by file.
"""

from __future__ import annotations

import json

import pytest

from cpdm.cli import cli
from cpdm.curation.dataset import DatasetError, import_dataset, import_paired_folders
from cpdm.store.images import read_image_file
from tests.conftest import write_png
from tests.curation_support import workspace_state

PER_PROMPT = 9  # images per caption.csv row in the release
RELEASE_SEED = 23


def release_generation_folder(root, captions, anchors=("a.png", "b.png", "c.png"), rows_generated=None):
    """A folder as sd_inference_v2_1.py leaves it: ``captions`` are (image, prompt) rows of caption.csv;
    the rows in ``rows_generated`` (default: all) have their 9 images in output/."""
    for seed, name in enumerate(anchors):
        write_png(root / "anchors" / name, seed=seed, size=(24, 24))
    lines = ["image,prompt"] + [f'{image},"{prompt}"' for image, prompt in captions]
    (root / "caption.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (root / "output").mkdir()
    for row, (image, _) in enumerate(captions):
        if rows_generated is not None and row not in rows_generated:
            continue
        stem = image.rsplit(".", 1)[0]
        for k in range(PER_PROMPT):
            number = row * PER_PROMPT + k
            write_png(root / "output" / f"{stem}_{number:05}.jpg", seed=1000 + number, size=(16, 16), fmt="JPEG")
    return root


CAPTIONS = [("a.png", "water lilies at dawn, by claude monet"), ("b.png", "a starry night over a village"),
            ("a.png", "a pond with a japanese bridge, by claude monet")]


def _generations(ws) -> list[tuple]:
    """(prompt text, seed, params, image, steps, guidance, variant, base model) of every generation."""
    return ws.conn.execute(
        "SELECT p.text, g.seed, g.params, g.image, g.steps, g.guidance, v.name, v.base_model FROM generations g "
        "JOIN prompts p ON p.id = g.prompt JOIN variants v ON v.id = g.variant ORDER BY g.id").fetchall()


def test_the_generation_layout_records_prompts_and_matches_each_image_to_its_row_by_name(ws, tmp_path):
    root = release_generation_folder(tmp_path / "release", CAPTIONS + [("c.png", "a girl with a pearl earring")],
                                     anchors=("a.png", "b.png", "c.png", "d.png"), rows_generated={0, 1, 2})
    report = import_dataset(ws, root)
    assert report.layout == "release generation (caption.csv)"
    assert report.counts == {"anchors": 3, "prompts": 4, "generations": 27}
    assert report.warnings == [
        f"1 image in {root / 'anchors'} named in no row of caption.csv left out: d.png",
        f"no generated images for 1 anchor: {root / 'anchors' / 'c.png'}",
    ]
    rows = _generations(ws)
    assert len(rows) == 27
    for text, seed, params, image, steps, guidance, variant, base in rows:
        params = json.loads(params)
        row = [prompt for _, prompt in CAPTIONS].index(text)
        stem = CAPTIONS[row][0][:-4]
        assert params["file"] == f"output/{stem}_{row * PER_PROMPT + params['index']:05}.jpg"
        assert image == read_image_file(root / params["file"])[1].sha256
        assert (seed, params["seed_mode"], steps, guidance) == (RELEASE_SEED, "release", 50, 9.0)
        assert (variant, base) == ("original", "stabilityai/stable-diffusion-2-1")
    assert sorted(json.loads(r[2])["index"] for r in rows if r[0] == CAPTIONS[2][1]) == list(range(PER_PROMPT))
    pairs = ws.conn.execute("SELECT a.image, g.image FROM pairs p JOIN anchors a ON a.id = p.anchor "
                            "JOIN generations g ON g.id = p.generation WHERE p.kind = 'normal'").fetchall()
    anchor_of = {read_image_file(root / "anchors" / name)[1].sha256: name for name in ("a.png", "b.png")}
    file_of = {image: json.loads(params)["file"] for _, _, params, image, *_ in rows}
    assert len(pairs) == 27
    for anchor, generation in pairs:  # each image is paired with the anchor its name starts with
        stem = file_of[generation].removeprefix("output/").rsplit("_", 1)[0]
        assert anchor_of[anchor] == f"{stem}.png"
    before = workspace_state(ws)
    import_dataset(ws, root)  # again: nothing new
    assert workspace_state(ws) == before


@pytest.mark.parametrize("name, message", [
    ("b_00001.jpg", "its number makes it an image of .*caption.csv line 2, which names 'a', not 'b'"),
    ("a_00099.jpg", "its number makes it an image of row 12 of caption.csv, which has 3 rows"),
    ("a-final.jpg", "not named STEM_NNNNN.jpg as sd_inference_v2_1.py names its images"),
])
def test_an_output_image_whose_name_fits_no_row_is_refused_with_nothing_written(ws, tmp_path, name, message):
    root = release_generation_folder(tmp_path / "release", CAPTIONS)
    write_png(root / "output" / name, seed=5000, size=(16, 16), fmt="JPEG")
    before = workspace_state(ws)
    with pytest.raises(DatasetError, match=message + ".*; nothing was imported"):
        import_dataset(ws, root)
    assert workspace_state(ws) == before


def test_an_import_that_finds_no_generated_image_is_an_error_that_writes_nothing(ws, tmp_path):
    empty = release_generation_folder(tmp_path / "release", CAPTIONS, rows_generated=set())
    before = workspace_state(ws)
    with pytest.raises(DatasetError, match=r"no generated images found \(read as the release generation"):
        import_dataset(ws, empty)
    only_anchors = tmp_path / "folders"
    write_png(only_anchors / "anchors" / "a.png", seed=1)
    with pytest.raises(DatasetError, match=r"no generated images found \(read as the per-anchor folders layout"):
        import_dataset(ws, only_anchors)
    assert workspace_state(ws) == before


def test_a_caption_row_naming_no_anchor_image_is_refused(ws, tmp_path):
    root = release_generation_folder(tmp_path / "release", CAPTIONS + [("z.png", "nothing")])
    with pytest.raises(DatasetError, match=r"caption.csv line 5: no image 'z.png' in .*anchors"):
        import_dataset(ws, root)


def metric_folders(root, anchor_seeds, count_generated=None):
    """Two flat folders as cpdm_metric.py reads them: anchor i beside generated image i (sorted by name).

    ``anchor_seeds`` gives each position's anchor image (the same seed twice: the same image twice).
    """
    for i, seed in enumerate(anchor_seeds):
        write_png(root / "originals" / f"{i:03}.png", seed=seed, size=(24, 24))
    for i in range(len(anchor_seeds) if count_generated is None else count_generated):
        write_png(root / "generated" / f"img_{i:05}.jpg", seed=2000 + i, size=(16, 16), fmt="JPEG")
    return root / "originals", root / "generated"


def test_the_metric_layout_pairs_two_folders_by_sorted_name_through_the_command(ws, tmp_path, runner):
    originals, generated = metric_folders(tmp_path, [1, 1, 1, 2, 2])
    result = runner.invoke(cli, ["import-dataset", "--workspace", str(ws.root), "--anchors", str(originals),
                                 "--generated", str(generated), "--variant", "esd-monet"])
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("imported the release metric (two folders) layout: 2 anchors, 2 prompts, "
                                    "5 generations")
    pairs = ws.conn.execute(
        "SELECT a.image, g.image, g.seed, g.params FROM pairs p JOIN anchors a ON a.id = p.anchor "
        "JOIN generations g ON g.id = p.generation WHERE p.kind = 'normal' ORDER BY g.id").fetchall()
    sha = lambda path: read_image_file(path)[1].sha256  # noqa: E731
    assert [(a, g) for a, g, _, _ in pairs] == [
        (sha(originals / f"{i:03}.png"), sha(generated / f"img_{i:05}.jpg")) for i in range(5)]
    assert [seed for _, _, seed, _ in pairs] == [0, 1, 2, 0, 1]
    assert json.loads(pairs[3][3])["paired_with"] == "003.png"
    assert ws.conn.execute("SELECT name, base_model FROM variants").fetchall() == [("esd-monet", "unknown")]


def test_metric_folders_of_different_counts_are_refused(ws, tmp_path):
    originals, generated = metric_folders(tmp_path, [1, 2, 3], count_generated=2)
    before = workspace_state(ws)
    with pytest.raises(DatasetError, match=f"{originals} holds 3 images and {generated} holds 2; the metric pairs "
                                           "them file by file, so the counts must match; nothing was imported"):
        import_paired_folders(ws, originals, generated)
    assert workspace_state(ws) == before


def test_the_command_prints_warnings_and_refuses_half_the_metric_options(ws, tmp_path, runner):
    root = release_generation_folder(tmp_path / "release", CAPTIONS, rows_generated={0, 2})
    result = runner.invoke(cli, ["import-dataset", "--workspace", str(ws.root), str(root)])
    assert result.exit_code == 0, result.output
    assert f"warning: no generated images for 1 anchor: {root / 'anchors' / 'b.png'}" in result.stderr
    (root / "output" / "a_00000.jpg").unlink()  # the first row lost an image
    again = runner.invoke(cli, ["import-dataset", "--workspace", str(ws.root), str(root)])
    assert f"warning: 1 row of caption.csv with fewer than the script's 9 images: {root / 'caption.csv'} line 2 (8)" \
        in again.stderr
    half = runner.invoke(cli, ["import-dataset", "--workspace", str(ws.root), "--anchors", str(root / "anchors")])
    assert half.exit_code == 2 and "--anchors and --generated go together" in half.output


def test_a_metric_layout_given_as_one_folder_is_told_the_options_that_read_it(ws, tmp_path):
    originals, generated = metric_folders(tmp_path / "release", [1, 2])
    originals.rename(tmp_path / "release" / "anchors")
    with pytest.raises(DatasetError, match=f"--anchors {tmp_path / 'release' / 'anchors'} --generated {generated}"):
        import_dataset(ws, tmp_path / "release")
