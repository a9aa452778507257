"""A Python environment like the lent GPU machine's: torch, transformers and their kind, nothing of cpdm's own.

The machine has Python with torch, torchvision, transformers, accelerate,
safetensors, timm, huggingface_hub, pandas, scipy, pillow, click, tqdm (and
pip), and not diffusers, open_clip, pytorch-fid, sqlite-utils, Streamlit or
Ray. :func:`device_like_venv` makes a virtual environment that sees exactly
those distributions, and what they depend on, from this interpreter's
site-packages: a folder of links to their files, named in a ``.pth`` file.
Nothing is installed or copied, so it takes a second.
"""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys
import sysconfig
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

# What the lent machine has installed (NOTES.md), pip included.
DEVICE_DISTRIBUTIONS = ("torch", "torchvision", "transformers", "accelerate", "safetensors", "timm", "huggingface_hub",
                        "pandas", "scipy", "pillow", "click", "tqdm", "pip")


def with_dependencies(roots) -> set[str]:
    """The installed distributions ``roots`` need, their dependencies (with the extras asked for) included."""
    extras_of: dict[str, set[str]] = {}
    todo = [(name, ()) for name in roots]
    while todo:
        name, extras = todo.pop()
        key = canonicalize_name(name)
        known = extras_of.get(key)
        new_extras = set(extras) - (known or set())
        if known is not None and not new_extras:
            continue
        extras_of.setdefault(key, set()).update(extras)
        environments = ([""] if known is None else []) + sorted(new_extras)
        for text in importlib.metadata.distribution(key).requires or []:
            requirement = Requirement(text)
            marker = requirement.marker
            if (marker is None and known is None) or (
                    marker is not None and any(marker.evaluate({"extra": extra}) for extra in environments)):
                todo.append((requirement.name, tuple(requirement.extras)))
    return set(extras_of)


def top_level_entries(distributions) -> set[str]:
    """The files and folders directly in site-packages that belong to ``distributions``."""
    entries = set()
    for name in distributions:
        for file in importlib.metadata.distribution(name).files or []:
            first = file.parts[0]
            if first not in ("..", "__pycache__") and not first.endswith(".pth"):
                entries.add(first)
    return entries


def device_like_venv(folder: Path) -> Path:
    """A virtual environment in ``folder`` seeing only the lent machine's distributions; its python."""
    site_packages = Path(sysconfig.get_paths()["purelib"])
    visible = folder / "visible-site-packages"
    visible.mkdir(parents=True)
    for entry in top_level_entries(with_dependencies(DEVICE_DISTRIBUTIONS)):
        (visible / entry).symlink_to(site_packages / entry)
    venv = folder / "venv"
    subprocess.run([sys._base_executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    venv_site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                    check=True, capture_output=True, text=True).stdout.strip())
    (venv_site / "device-packages.pth").write_text(f"{visible}\n", encoding="utf-8")
    return python
