"""The one place the Hugging Face hub cache is found, read from the environment at each call."""

from __future__ import annotations

from pathlib import Path

from cpdm.hf_cache import hf_hub_cache


def test_hf_hub_cache_follows_the_environment_in_huggingface_hubs_order(monkeypatch, tmp_path):
    for name in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_HOME", "XDG_CACHE_HOME"):
        monkeypatch.delenv(name, raising=False)
    assert hf_hub_cache() == Path("~/.cache/huggingface/hub").expanduser()
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert hf_hub_cache() == tmp_path / "xdg" / "huggingface" / "hub"
    monkeypatch.setenv("HF_HOME", str(tmp_path / "home"))
    assert hf_hub_cache() == tmp_path / "home" / "hub"
    monkeypatch.setenv("HUGGINGFACE_HUB_CACHE", str(tmp_path / "old"))
    assert hf_hub_cache() == tmp_path / "old"
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    assert hf_hub_cache() == tmp_path / "hub"


def test_the_backbones_and_stable_diffusion_share_it():
    import cpdm.backbones.clip as clip
    import cpdm.diffusion.pipeline as pipeline

    assert clip.hf_hub_cache is hf_hub_cache and pipeline.hf_hub_cache is hf_hub_cache
