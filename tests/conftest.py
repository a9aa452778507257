"""Shared fixtures: a fresh workspace, a CLI runner, small test images, a plain ``__main__`` for spawned processes."""

from __future__ import annotations

import io
import sys
import types
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from cpdm.store.workspace import init_workspace


@pytest.fixture
def ws(tmp_path):
    """An empty, freshly initialised workspace."""
    workspace = init_workspace(tmp_path / "ws")
    yield workspace
    workspace.close()


@pytest.fixture
def empty_caches(tmp_path, monkeypatch):
    """Point every model-weight cache (torch hub, Hugging Face, open_clip) at empty folders."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    return tmp_path


@pytest.fixture
def plain_main(monkeypatch):
    """A ``__main__`` with no file, as in ``python -c``.

    Spawned processes first re-run the parent's ``__main__`` file;
    Streamlit's AppTest, run earlier in the same test process, leaves an app
    script there.
    """
    monkeypatch.setitem(sys.modules, "__main__", types.ModuleType("__main__"))


@pytest.fixture
def runner():
    return CliRunner()


def png_bytes(seed: int = 0, size: tuple[int, int] = (32, 24), fmt: str = "PNG") -> bytes:
    """A small random image's bytes; different seeds give different images."""
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format=fmt)
    return buffer.getvalue()


def write_png(path: Path, seed: int = 0, size: tuple[int, int] = (32, 24), fmt: str = "PNG") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(png_bytes(seed, size, fmt))
    return path
