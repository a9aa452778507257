"""Importing an exported dataset: every refusal of its file check, each with nothing written.

The check reads metadata.json first (readable JSON, cpdm's format, a format
version this cpdm reads), then every file it lists (inside the dataset,
present, with its checksum); tests/test_dataset.py covers a changed file.
"""

from __future__ import annotations

import json

import pytest

from cpdm.cli import cli
from cpdm.curation.dataset import FORMAT_VERSION, DatasetError, export_dataset, import_dataset
from cpdm.store.workspace import init_workspace
from tests.curation_support import add_anchors


@pytest.fixture
def dataset(tmp_path):
    """A dataset exported from a workspace of two anchors."""
    source = init_workspace(tmp_path / "source")
    add_anchors(source, tmp_path / "art", count=2)
    export_dataset(source, tmp_path / "dataset")
    source.close()
    return tmp_path / "dataset"


@pytest.fixture
def fresh(tmp_path):
    ws = init_workspace(tmp_path / "fresh")
    yield ws
    ws.close()


def edit_metadata(dataset, change) -> None:
    """Rewrite the dataset's metadata.json with ``change`` applied to its parsed content."""
    path = dataset / "metadata.json"
    metadata = json.loads(path.read_text(encoding="utf-8"))
    path.write_text(json.dumps(change(metadata)), encoding="utf-8")


def with_checksum(name: str):
    """A change to metadata.json that lists one more file, ``name``."""
    def change(metadata):
        metadata["checksums"][name] = "0" * 64
        return metadata
    return change


def assert_nothing_imported(ws) -> None:
    for table in ("anchors", "prompts", "variants", "generations", "pairs", "images"):
        assert ws.conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0] == 0, table
    assert not [path for path in (ws.root / "images").rglob("*") if path.is_file()]


NOTHING_IMPORTED = "; nothing was imported"


def outside(name: str, dataset) -> str:
    """Why a listed path is refused before it is opened."""
    return f"{name!r} is not a path inside {dataset} (absolute paths and '..' are refused)"


def refusal(ws, dataset) -> str:
    """The import's refusal, less the words every refusal's first line ends with, once nothing was imported."""
    with pytest.raises(DatasetError) as caught:
        import_dataset(ws, dataset)
    assert_nothing_imported(ws)
    message = str(caught.value)
    assert NOTHING_IMPORTED in message.splitlines()[0], message
    return message.replace(NOTHING_IMPORTED, "", 1)


@pytest.mark.parametrize("content", [b"{\"format\": \"cpdm-dataset\",", b"\xff\xfe not text at all"],
                         ids=["truncated JSON", "not UTF-8"])
def test_metadata_that_cannot_be_read_is_refused(dataset, fresh, content):
    (dataset / "metadata.json").write_bytes(content)
    assert refusal(fresh, dataset).startswith(f"{dataset / 'metadata.json'}: not readable JSON (")


@pytest.mark.parametrize("metadata", [{"format": "some-other-tool"}, ["cpdm-dataset", 1], {}],
                         ids=["another format", "a list", "no format"])
def test_metadata_of_another_format_is_refused(dataset, fresh, metadata):
    (dataset / "metadata.json").write_text(json.dumps(metadata), encoding="utf-8")
    assert refusal(fresh, dataset) == f"{dataset / 'metadata.json'}: not a cpdm-dataset metadata file"


def test_a_newer_format_version_is_refused_with_what_to_do(dataset, fresh):
    edit_metadata(dataset, lambda metadata: {**metadata, "format_version": FORMAT_VERSION + 1})
    assert refusal(fresh, dataset) == (f"{dataset}: dataset format version {FORMAT_VERSION + 1} is newer than this "
                                       f"cpdm reads ({FORMAT_VERSION}); upgrade cpdm")


def test_a_listed_file_that_is_missing_is_refused_by_name(dataset, fresh):
    (dataset / "anchors" / "1.png").unlink()
    assert refusal(fresh, dataset) == f"{dataset}: 1 bad files\n  anchors/1.png: missing"


@pytest.mark.parametrize("name", ["../outside.png", "anchors/../../outside.png", "/etc/hostname"])
def test_a_listed_path_outside_the_dataset_is_refused_unread(dataset, fresh, name):
    (dataset.parent / "outside.png").write_bytes(b"not part of the dataset")
    edit_metadata(dataset, with_checksum(name))
    assert refusal(fresh, dataset) == (f"{dataset}: 1 bad files\n  {name}: {outside(name, dataset)}")


def test_every_bad_file_is_listed_with_its_reason(dataset, fresh):
    (dataset / "anchors.csv").unlink()
    edit_metadata(dataset, with_checksum("../elsewhere.csv"))
    message = refusal(fresh, dataset)
    assert message.splitlines() == [f"{dataset}: 2 bad files",
                                    f"  ../elsewhere.csv: {outside('../elsewhere.csv', dataset)}",
                                    "  anchors.csv: missing"]


def test_the_import_command_reports_a_refusal_and_exits_1(dataset, fresh, runner):
    edit_metadata(dataset, lambda metadata: {**metadata, "format_version": FORMAT_VERSION + 1})
    result = runner.invoke(cli, ["import-dataset", str(dataset), "--workspace", str(fresh.root)])
    assert result.exit_code == 1
    assert result.output.strip() == (f"error: {dataset}: dataset format version {FORMAT_VERSION + 1} is newer "
                                     f"than this cpdm reads ({FORMAT_VERSION}); upgrade cpdm{NOTHING_IMPORTED}")
    assert_nothing_imported(fresh)
