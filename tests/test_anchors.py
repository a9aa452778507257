"""Anchor import: every bad input is refused by name with the database untouched; duplicates stored once."""

from __future__ import annotations

import json
import os
import struct
import zlib
from pathlib import Path

import pytest

import cpdm.curation.anchors as anchors_module
from cpdm.curation.anchors import AnchorImportError, import_anchors, list_anchors
from cpdm.cli import cli
from cpdm.store.images import store_image_bytes
from tests.conftest import png_bytes, write_png


def dump(ws) -> dict[str, list[tuple]]:
    """Every row of every table, for before/after comparisons."""
    tables = [r[0] for r in ws.conn.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")]
    return {t: sorted(ws.conn.execute(f"SELECT * FROM {t}").fetchall(), key=repr) for t in tables}


def stored_files(ws) -> set[str]:
    return {p.relative_to(ws.root).as_posix() for p in ws.images_dir.rglob("*") if p.is_file()}


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def bomb_png(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims ``width`` x ``height`` RGB pixels (never allocated)."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", header)
        + png_chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + png_chunk(b"IEND", b"")
    )


def corrupt_png() -> bytes:
    data = bytearray(png_bytes(5))
    data[len(data) // 2] ^= 0xFF
    return bytes(data)


@pytest.fixture
def seeded(ws, tmp_path):
    """A workspace that already holds two anchors, so 'unchanged' means something."""
    first = tmp_path / "first"
    write_png(first / "a.png", seed=100)
    write_png(first / "b.png", seed=101)
    import_anchors(ws, first)
    return ws


def good_folder(root: Path) -> Path:
    write_png(root / "one.png", seed=1)
    write_png(root / "deeper" / "two.jpg", seed=2, fmt="JPEG")
    return root


# --- the good path ---------------------------------------------------------------


def test_imports_every_image_recursively_by_suffix(ws, tmp_path):
    art = tmp_path / "art"
    write_png(art / "a.png", seed=1)
    write_png(art / "sub" / "b.JPG", seed=2, fmt="JPEG")
    write_png(art / "sub" / "deep" / "c.jpeg", seed=3, fmt="JPEG")
    write_png(art / "d.webp", seed=4, fmt="WEBP", size=(40, 30))
    (art / "notes.txt").write_text("not an image, not imported")
    write_png(art / ".hidden.png", seed=5)  # hidden files are not looked at
    report = import_anchors(ws, art)
    assert len(report.imported) == 4 and report.duplicates == [] and report.skipped == []
    assert report.ignored == 1
    rows = ws.conn.execute(
        "SELECT i.format, i.width, i.height, a.category FROM anchors a JOIN images i ON i.sha256 = a.image"
    ).fetchall()
    assert sorted(rows) == sorted(
        [("PNG", 32, 24, "style"), ("JPEG", 32, 24, "style"), ("JPEG", 32, 24, "style"), ("WEBP", 40, 30, "style")]
    )
    for item in report.imported:
        path = ws.image_path(item.sha256)
        assert path.is_file() and path.name.startswith(item.sha256)
    assert report.summary() == "imported 4, duplicates 0, skipped 0 (ignored 1 files without an image suffix)"


def test_stored_bytes_are_the_original_bytes(ws, tmp_path):
    original = write_png(tmp_path / "art" / "x.jpg", seed=9, fmt="JPEG").read_bytes()
    report = import_anchors(ws, tmp_path / "art")
    assert ws.image_path(report.imported[0].sha256).read_bytes() == original


def test_default_category_applies_to_a_folder(ws, tmp_path):
    import_anchors(ws, good_folder(tmp_path / "art"), default_category="portrait")
    assert {r["category"] for r in list_anchors(ws)} == {"portrait"}


def test_meta_csv_imports_exactly_its_rows_with_metadata(ws, tmp_path):
    art = good_folder(tmp_path / "art")
    write_png(art / "not-listed.png", seed=3)
    meta = tmp_path / "anchors.csv"
    meta.write_text(
        "\ufefffile,artist,title,category,source,license\n"  # Excel's BOM is accepted
        "one.png,Claude Monet,Water Lilies,style,wikiart,public domain\n"
        "\n"
        "deeper\\two.jpg,  Frida Kahlo ,Self-Portrait,Portrait,,\n",  # Windows separators, padding, case
        encoding="utf-8",
    )
    report = import_anchors(ws, art, meta_csv=meta, default_category="illustration")
    assert len(report.imported) == 2
    rows = [{k: r[k] for k in ("artist", "title", "category", "source", "license")} for r in list_anchors(ws)]
    assert rows == [
        {
            "artist": "Claude Monet",
            "title": "Water Lilies",
            "category": "style",
            "source": "wikiart",
            "license": "public domain",
        },
        {"artist": "Frida Kahlo", "title": "Self-Portrait", "category": "portrait", "source": None, "license": None},
    ]


def test_meta_csv_with_only_the_file_column_uses_the_default_category(ws, tmp_path):
    art = good_folder(tmp_path / "art")
    meta = tmp_path / "m.csv"
    meta.write_text("file\none.png\n")
    import_anchors(ws, art, meta_csv=meta, default_category="character")
    assert [(r["category"], r["artist"]) for r in list_anchors(ws)] == [("character", None)]


def test_meta_csv_rows_repeating_a_file_with_the_same_values_import_it_once(ws, tmp_path):
    art = good_folder(tmp_path / "art")
    meta = tmp_path / "m.csv"
    meta.write_text("file,artist\none.png,Claude Monet\none.png,Claude Monet\n", encoding="utf-8")
    report = import_anchors(ws, art, meta_csv=meta)
    assert len(report.imported) == 1 and len(report.duplicates) == 1
    assert [r["artist"] for r in list_anchors(ws)] == ["Claude Monet"]


def test_symlink_inside_the_folder_is_followed(ws, tmp_path):
    art = good_folder(tmp_path / "art")
    os.symlink(art / "one.png", art / "alias.png")
    report = import_anchors(ws, art)
    assert len(report.imported) == 2
    assert [n.reason for n in report.duplicates] == ["same image as " + str(art / "alias.png")]


# --- duplicates and re-import -----------------------------------------------------


def test_duplicates_in_one_folder_are_stored_once_and_reported(ws, tmp_path):
    art = tmp_path / "art"
    write_png(art / "a.png", seed=1)
    write_png(art / "copy" / "a-again.png", seed=1)
    write_png(art / "b.png", seed=2)
    report = import_anchors(ws, art)
    assert len(report.imported) == 2
    assert [(n.name, n.reason) for n in report.duplicates] == [
        (str(art / "copy" / "a-again.png"), f"same image as {art / 'a.png'}")
    ]
    assert ws.conn.execute("SELECT COUNT(*) FROM images").fetchone()[0] == 2
    assert ws.conn.execute("SELECT COUNT(*) FROM anchors").fetchone()[0] == 2


def test_reimport_adds_nothing_and_says_so(seeded, tmp_path):
    before = dump(seeded)
    report = import_anchors(seeded, tmp_path / "first")
    assert report.imported == []
    assert len(report.duplicates) == 2
    assert all(n.reason.startswith("already in the workspace as anchor ") for n in report.duplicates)
    assert "nothing new" in report.summary()
    assert dump(seeded) == before


def test_image_already_stored_for_another_use_becomes_an_anchor(ws, tmp_path):
    store_image_bytes(ws, png_bytes(1), "generated")
    write_png(tmp_path / "art" / "a.png", seed=1)
    report = import_anchors(ws, tmp_path / "art")
    assert len(report.imported) == 1
    assert ws.conn.execute("SELECT COUNT(*) FROM images").fetchone()[0] == 1


# --- bad input: a clear error naming the file, nothing written -----------------


def _bad_file(name: str, data: bytes):
    def make(art: Path, tmp_path: Path) -> tuple[Path | None, str]:
        (art / name).write_bytes(data)
        return None, name

    return make


def _truncated_png(art, tmp_path):
    data = png_bytes(7)
    (art / "cut.png").write_bytes(data[: len(data) - 20])
    return None, "cut.png"


def _truncated_jpeg(art, tmp_path):
    data = png_bytes(7, fmt="JPEG")
    (art / "cut.jpg").write_bytes(data[: len(data) // 2])
    return None, "cut.jpg"


def _symlink_out_of_folder(art, tmp_path):
    write_png(tmp_path / "outside" / "secret.png", seed=50)
    os.symlink(tmp_path / "outside" / "secret.png", art / "link.png")
    return None, "link.png"


def _symlinked_dir_out_of_folder(art, tmp_path):
    write_png(tmp_path / "outside" / "secret.png", seed=50)
    os.symlink(tmp_path / "outside", art / "linked-dir")
    return None, "linked-dir"


def _meta(header: str, *rows: str, setup=None):
    def make(art: Path, tmp_path: Path):
        if setup:
            setup(art, tmp_path)
        meta = tmp_path / "meta.csv"
        meta.write_text("\n".join([header, *rows]) + "\n", encoding="utf-8")
        return meta, None

    return make


def _outside_file(art, tmp_path):
    write_png(tmp_path / "x.png", seed=60)


def _outside_link(art, tmp_path):
    write_png(tmp_path / "outside" / "secret.png", seed=50)
    os.symlink(tmp_path / "outside" / "secret.png", art / "link.png")


BAD_INPUTS = {
    "text with image suffix": (_bad_file("notes.png", b"just some text\n"), "not an image"),
    "zero bytes": (_bad_file("empty.png", b""), "empty file"),
    "truncated png": (_truncated_png, "truncated"),
    "corrupt png": (_bad_file("flipped.png", corrupt_png()), "corrupt"),
    "truncated jpeg": (_truncated_jpeg, "truncated"),
    "huge header bomb": (_bad_file("bomb.png", bomb_png(100_000, 100_000)), "decompression bomb"),
    "above cpdm pixel limit": (_bad_file("big.png", bomb_png(9_000, 9_000)), "9000x9000 pixels is above the limit"),
    "gif": (_bad_file("anim.webp", png_bytes(3, fmt="GIF")), "unsupported image format GIF"),
    "symlink out": (_symlink_out_of_folder, "symlink points outside"),
    "symlinked folder out": (_symlinked_dir_out_of_folder, "symlink points outside"),
    "csv missing file column": (_meta("artist,title", "Monet,Lilies"), "missing required column 'file'"),
    "csv unknown column": (_meta("file,painter,year", "one.png,Monet,1916"), "unknown columns 'painter', 'year'"),
    "csv duplicate column": (_meta("file,artist,artist", "one.png,a,b"), "column 'artist' appears more than once"),
    "csv empty": (_meta(""), "empty file"),
    "csv header only": (_meta("file,artist"), "no rows below the header"),
    "csv too many fields": (_meta("file,artist", "one.png,Monet,extra"), "line 2: 3 fields but the header has 2"),
    "csv missing file": (_meta("file", "one.png", "ghost.png"), "ghost.png: no such file"),
    "csv dotdot": (_meta("file", "one.png", "../x.png", setup=_outside_file), "../x.png: path leads outside"),
    "csv absolute": (_meta("file", "/etc/hostname"), "/etc/hostname: absolute path"),
    "csv symlink out": (_meta("file", "link.png", setup=_outside_link), "link.png: symlink points outside"),
    "csv bad category": (_meta("file,category", "one.png,landscape"), "category 'landscape' is not one of"),
    "csv folder as file": (_meta("file", "deeper"), "deeper: not a regular file"),
    "csv empty file value": (_meta("file,artist", ",Monet"), "line 2: empty 'file' value"),
    "csv one file twice, other values": (
        _meta("file,artist,title", "one.png,Claude Monet,Lilies", "deeper/two.jpg,,", "./one.png,C. Monet,Lilies"),
        "lines 2 and 4 both describe {art}/one.png with different values (artist 'Claude Monet' vs 'C. Monet')"),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_is_refused_by_name_and_nothing_changes(seeded, tmp_path, case):
    make, expected = BAD_INPUTS[case]
    art = good_folder(tmp_path / "art")
    meta, bad_name = make(art, tmp_path)
    before, files_before = dump(seeded), stored_files(seeded)
    with pytest.raises(AnchorImportError) as caught:
        import_anchors(seeded, art, meta_csv=meta)
    message = str(caught.value)
    assert expected.format(art=art) in message
    assert "\n" not in message
    if bad_name:
        assert str(art / bad_name) in message
    if meta is not None:
        assert str(meta) in message
    assert dump(seeded) == before
    assert stored_files(seeded) == files_before


def test_missing_folder_and_csv_are_clear_errors(ws, tmp_path):
    with pytest.raises(AnchorImportError, match=r"nowhere: no such folder"):
        import_anchors(ws, tmp_path / "nowhere")
    write_png(tmp_path / "file.png")
    with pytest.raises(AnchorImportError, match=r"file.png: not a folder"):
        import_anchors(ws, tmp_path / "file.png")
    with pytest.raises(AnchorImportError, match=r"no-meta.csv: no such file"):
        import_anchors(ws, good_folder(tmp_path / "art"), meta_csv=tmp_path / "no-meta.csv")
    latin1 = tmp_path / "latin1.csv"
    latin1.write_bytes("file,artist\none.png,Dürer\n".encode("latin-1"))
    with pytest.raises(AnchorImportError, match=r"latin1.csv: not UTF-8"):
        import_anchors(ws, tmp_path / "art", meta_csv=latin1)
    with pytest.raises(AnchorImportError, match=r"category 'sculpture' is not one of"):
        import_anchors(ws, tmp_path / "art", default_category="sculpture")
    assert ws.conn.execute("SELECT COUNT(*) FROM anchors").fetchone()[0] == 0


def test_error_lists_every_bad_file_with_its_reason(ws, tmp_path):
    art = good_folder(tmp_path / "art")
    for name in ("a.png", "b.png"):
        (art / name).write_bytes(b"")
    (art / "c.png").write_bytes(b"oops")
    with pytest.raises(AnchorImportError) as refused:
        import_anchors(ws, art)
    lines = str(refused.value).splitlines()
    assert lines[0] == "3 bad files; nothing was imported (--skip-bad imports the rest):"
    assert lines[1:3] == [f"  {art / 'a.png'}: empty file (0 bytes)", f"  {art / 'b.png'}: empty file (0 bytes)"]
    assert lines[3].startswith(f"  {art / 'c.png'}: ") and len(lines) == 4


def test_good_files_beside_a_bad_one_are_not_written(ws, tmp_path):
    art = good_folder(tmp_path / "art")
    (art / "bad.png").write_bytes(b"oops")
    with pytest.raises(AnchorImportError):
        import_anchors(ws, art)
    assert stored_files(ws) == set()
    assert ws.conn.execute("SELECT COUNT(*) FROM images").fetchone()[0] == 0


# --- --skip-bad ---------------------------------------------------------------------


def test_skip_bad_reports_each_bad_file_and_imports_the_rest(seeded, tmp_path):
    art = good_folder(tmp_path / "art")
    (art / "empty.png").write_bytes(b"")
    (art / "bomb.png").write_bytes(bomb_png(100_000, 100_000))
    _symlink_out_of_folder(art, tmp_path)
    report = import_anchors(seeded, art, skip_bad=True)
    assert len(report.imported) == 2
    reasons = {Path(n.name).name: n.reason for n in report.skipped}
    assert set(reasons) == {"empty.png", "bomb.png", "link.png"}
    assert reasons["empty.png"] == "empty file (0 bytes)"
    assert "decompression bomb" in reasons["bomb.png"]
    assert reasons["link.png"].startswith("symlink points outside")
    assert seeded.conn.execute("SELECT COUNT(*) FROM anchors").fetchone()[0] == 4
    assert report.summary() == "imported 2, duplicates 0, skipped 3"


def test_skip_bad_with_meta_skips_bad_rows(ws, tmp_path):
    art = good_folder(tmp_path / "art")
    meta = tmp_path / "m.csv"
    meta.write_text("file,category\none.png,style\nghost.png,style\ndeeper/two.jpg,statue\n")
    report = import_anchors(ws, art, meta_csv=meta, skip_bad=True)
    assert [Path(n.name).name for n in report.imported] == ["one.png"]
    assert [n.reason for n in report.skipped] == [
        "no such file",
        "category 'statue' is not one of style, portrait, character, illustration",
    ]


def test_skip_bad_never_skips_a_broken_csv(ws, tmp_path):
    art = good_folder(tmp_path / "art")
    meta = tmp_path / "m.csv"
    meta.write_text("file,painter\none.png,Monet\n")
    with pytest.raises(AnchorImportError, match="unknown column 'painter'"):
        import_anchors(ws, art, meta_csv=meta, skip_bad=True)


# --- failures while writing ------------------------------------------------------


def test_failed_commit_leaves_no_rows_and_removes_new_files(seeded, tmp_path, monkeypatch):
    art = good_folder(tmp_path / "art")
    before, files_before = dump(seeded), stored_files(seeded)
    real_insert = anchors_module.insert_image_row
    calls = []

    def failing_insert(conn, info):
        calls.append(info.sha256)
        if len(calls) == 2:
            raise RuntimeError("disk full")
        return real_insert(conn, info)

    monkeypatch.setattr(anchors_module, "insert_image_row", failing_insert)
    with pytest.raises(RuntimeError, match="disk full"):
        import_anchors(seeded, art)
    assert dump(seeded) == before
    assert stored_files(seeded) == files_before


def test_file_changed_after_checking_is_refused(ws, tmp_path, monkeypatch):
    art = good_folder(tmp_path / "art")
    real_check = anchors_module._check_images

    def check_then_change(candidates, problems, progress):
        checked = real_check(candidates, problems, progress)
        write_png(art / "one.png", seed=999)  # replaced between the check and the copy
        return checked

    monkeypatch.setattr(anchors_module, "_check_images", check_then_change)
    with pytest.raises(AnchorImportError, match=r"one.png: file changed during the import"):
        import_anchors(ws, art)
    assert ws.conn.execute("SELECT COUNT(*) FROM anchors").fetchone()[0] == 0
    assert stored_files(ws) == set()


def test_progress_bar_goes_to_stderr(ws, tmp_path, capsys):
    import_anchors(ws, good_folder(tmp_path / "art"), progress=True)
    captured = capsys.readouterr()
    assert "checking" in captured.err and "storing" in captured.err
    assert captured.out == ""


# --- listing -------------------------------------------------------------------------


def test_list_anchors_filters_by_artist_case_insensitively(ws, tmp_path):
    art = good_folder(tmp_path / "art")
    meta = tmp_path / "m.csv"
    meta.write_text("file,artist,title\none.png,Claude Monet,Lilies\ndeeper/two.jpg,Hokusai,Wave\n")
    import_anchors(ws, art, meta_csv=meta)
    everything = list_anchors(ws)
    assert [a["artist"] for a in everything] == ["Claude Monet", "Hokusai"]
    assert everything[0]["size"] == "32x24" and len(everything[0]["sha256"]) == 64
    assert [a["title"] for a in list_anchors(ws, artist="claude monet")] == ["Lilies"]
    assert list_anchors(ws, artist="Rembrandt") == []


# --- the command line -------------------------------------------------------------


def run(runner, *args):
    return runner.invoke(cli, [str(a) for a in args])


def test_cli_import_prints_summary_and_reports_duplicates(runner, ws, tmp_path):
    art = good_folder(tmp_path / "art")
    write_png(art / "again.png", seed=1)
    result = run(runner, "anchors", "import", art, "--workspace", ws.root)
    assert result.exit_code == 0, result.output
    assert "imported 2, duplicates 1, skipped 0" in result.stdout
    assert f"duplicate {art / 'one.png'}: same image as {art / 'again.png'}" in result.stderr
    again = run(runner, "anchors", "import", art, "--workspace", ws.root)
    assert again.exit_code == 0
    assert "imported 0, duplicates 3, skipped 0; nothing new was added" in again.stdout


def test_cli_bad_file_exits_1_with_one_line(runner, ws, tmp_path):
    art = good_folder(tmp_path / "art")
    (art / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really")
    before = dump(ws)
    result = run(runner, "anchors", "import", art, "-w", ws.root)
    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {art / 'broken.jpg'}: ")
    assert "Traceback" not in result.output
    assert dump(ws) == before


def test_cli_skip_bad_reports_skipped_files(runner, ws, tmp_path):
    art = good_folder(tmp_path / "art")
    (art / "broken.png").write_bytes(b"")
    result = run(runner, "anchors", "import", art, "-w", ws.root, "--skip-bad", "--category", "illustration")
    assert result.exit_code == 0
    assert f"skipped {art / 'broken.png'}: empty file (0 bytes)" in result.stderr
    assert "imported 2, duplicates 0, skipped 1" in result.stdout
    assert {r["category"] for r in list_anchors(ws)} == {"illustration"}


@pytest.mark.parametrize(
    "args",
    [
        ["anchors", "import"],  # FOLDER missing
        ["anchors", "import", "ART", "--category", "landscape"],
        ["anchors", "list", "--format", "xml"],
        ["anchors", "import", "ART", "--no-such-option"],
    ],
)
def test_cli_usage_errors_exit_2(runner, ws, tmp_path, args):
    art = good_folder(tmp_path / "art")
    result = run(runner, *[str(art) if a == "ART" else a for a in args], "-w", ws.root)
    assert result.exit_code == 2
    assert ws.conn.execute("SELECT COUNT(*) FROM anchors").fetchone()[0] == 0


def test_cli_import_needs_an_existing_workspace(runner, tmp_path):
    art = good_folder(tmp_path / "art")
    result = run(runner, "anchors", "import", art, "-w", tmp_path / "typo-ws")
    assert result.exit_code == 1
    assert "no workspace at" in result.stderr
    assert not (tmp_path / "typo-ws").exists()


def test_cli_list_formats(runner, ws, tmp_path):
    art = good_folder(tmp_path / "art")
    meta = tmp_path / "m.csv"
    meta.write_text("file,artist,title\none.png,Claude Monet,Lilies\ndeeper/two.jpg,Hokusai,\n")
    import_anchors(ws, art, meta_csv=meta)
    table = run(runner, "anchors", "list", "-w", ws.root)
    assert table.exit_code == 0
    lines = table.stdout.splitlines()
    assert lines[0].split() == ["id", "artist", "title", "category", "size", "sha"]
    assert lines[2].split()[:3] == ["2", "Hokusai", "-"]
    as_csv = run(runner, "anchors", "list", "-w", ws.root, "--format", "csv", "--artist", "hokusai")
    assert as_csv.stdout.splitlines()[0] == "id,artist,title,category,size,sha"
    assert as_csv.stdout.splitlines()[1].startswith("2,Hokusai,,style,32x24,")
    assert len(as_csv.stdout.splitlines()) == 2
    as_json = json.loads(run(runner, "anchors", "list", "-w", ws.root, "--format", "json").stdout)
    assert [a["title"] for a in as_json] == ["Lilies", None]
    assert as_json[0]["size"] == "32x24" and len(as_json[0]["sha256"]) == 64


def test_cli_list_empty_says_how_to_add(runner, ws):
    result = run(runner, "anchors", "list", "-w", ws.root)
    assert result.exit_code == 0
    assert "cpdm anchors import" in result.stderr


def test_cli_reimport_of_a_big_folder_lists_a_few_duplicates(runner, ws, tmp_path):
    art = tmp_path / "art"
    for seed in range(25):
        write_png(art / f"{seed:02d}.png", seed=seed, size=(8, 8))
    assert run(runner, "anchors", "import", art, "-w", ws.root).exit_code == 0
    again = run(runner, "anchors", "import", art, "-w", ws.root)
    lines = again.stderr.splitlines()
    assert sum(line.startswith("duplicate ") for line in lines) == 20
    assert lines[-1] == "... and 5 more duplicates"
    assert "imported 0, duplicates 25, skipped 0; nothing new was added" in again.stdout


def test_error_lists_twenty_bad_files_then_counts_the_rest(ws, runner, tmp_path):
    from cpdm.cli import cli

    art = good_folder(tmp_path / "art")
    names = [f"bad{i:02d}.png" for i in range(23)]
    for name in names:
        (art / name).write_bytes(b"")
    result = runner.invoke(cli, ["anchors", "import", str(art), "--workspace", str(ws.root)])
    assert result.exit_code == 1
    lines = result.output.splitlines()
    assert lines[0] == "error: 23 bad files; nothing was imported (--skip-bad imports the rest):"
    assert lines[1:21] == [f"  {art / name}: empty file (0 bytes)" for name in names[:20]]
    assert lines[21:] == ["  and 3 more"]
    assert ws.conn.execute("SELECT COUNT(*) FROM anchors").fetchone()[0] == 0
