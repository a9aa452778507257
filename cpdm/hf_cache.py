"""Where the Hugging Face hub cache is: one answer for the metric's backbones and for Stable Diffusion."""

from __future__ import annotations

import os
from pathlib import Path


def hf_hub_cache() -> Path:
    """The Hugging Face hub cache, read from the environment now (not at import), as huggingface_hub finds it.

    ``HF_HUB_CACHE`` (or its old name ``HUGGINGFACE_HUB_CACHE``), else
    ``HF_HOME``/hub, else ``$XDG_CACHE_HOME``/huggingface/hub (``~/.cache``
    without it). huggingface_hub reads these once at import; reading them
    per call lets a process (or a test) point at another cache after it
    was imported.
    """
    hub = os.environ.get("HF_HUB_CACHE") or os.environ.get("HUGGINGFACE_HUB_CACHE")
    if hub:
        return Path(os.path.expandvars(hub)).expanduser()
    hf_home = os.environ.get("HF_HOME") or os.path.join(os.environ.get("XDG_CACHE_HOME", "~/.cache"), "huggingface")
    return Path(os.path.expandvars(hf_home)).expanduser() / "hub"
