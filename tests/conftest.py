"""Shared fixtures: a fresh workspace, a CLI runner, small test images."""

from __future__ import annotations

import io
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
