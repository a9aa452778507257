"""The Stable Diffusion backbone: tiny offline pipeline, real-weight loading that never downloads."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from cpdm.diffusion import pipeline as diffusion
from cpdm.diffusion.pipeline import DEFAULT_SD_MODEL, generate, load_sd_pipeline
from cpdm.diffusion.tiny import tiny_clip_tokenizer, tiny_sd_pipeline, tiny_tokenizer_vocab, write_tiny_tokenizer_files
from cpdm.errors import CpdmError, MissingWeightsError

PROMPT = "a painting of water lilies in the style of claude monet"


@pytest.fixture(scope="module")
def pipeline():
    return tiny_sd_pipeline(seed=0)


def _pixels(image) -> np.ndarray:
    return np.asarray(image, dtype=np.int16)


def test_tiny_pipeline_has_the_stable_diffusion_parts(pipeline):
    from diffusers import DDIMScheduler, StableDiffusionPipeline

    assert isinstance(pipeline, StableDiffusionPipeline)
    assert isinstance(pipeline.scheduler, DDIMScheduler)
    assert pipeline.safety_checker is None
    assert pipeline.unet.config.cross_attention_dim == pipeline.text_encoder.config.hidden_size == 8
    # Every token id the tokenizer can produce must index the text encoder's embedding table.
    assert max(tiny_tokenizer_vocab().values()) < pipeline.text_encoder.config.vocab_size


def test_tiny_pipeline_generates_requested_size_deterministically(pipeline):
    first = generate(pipeline, PROMPT, seed=23, steps=2, guidance=9.0, height=32, width=32)
    again = generate(pipeline, PROMPT, seed=23, steps=2, guidance=9.0, height=32, width=32)
    assert first.size == (32, 32) and first.mode == "RGB"
    assert np.array_equal(_pixels(first), _pixels(again))
    wide = generate(pipeline, PROMPT, seed=23, steps=2, height=32, width=64)
    assert wide.size == (64, 32)


def test_seed_prompt_and_weights_each_change_the_image(pipeline):
    base = _pixels(generate(pipeline, PROMPT, seed=23, steps=2, height=32, width=32))
    other_seed = _pixels(generate(pipeline, PROMPT, seed=24, steps=2, height=32, width=32))
    other_prompt = _pixels(generate(pipeline, "a photo of a red car", seed=23, steps=2, height=32, width=32))
    other_weights = _pixels(generate(tiny_sd_pipeline(seed=1), PROMPT, seed=23, steps=2, height=32, width=32))
    for other in (other_seed, other_prompt, other_weights):
        assert np.abs(base - other).mean() > 1.0


def test_same_seed_builds_the_same_weights_and_leaves_global_rng_alone():
    torch.manual_seed(1234)
    expected_next = torch.rand(3)
    torch.manual_seed(1234)
    first = tiny_sd_pipeline(seed=7)
    assert torch.equal(torch.rand(3), expected_next)
    second = tiny_sd_pipeline(seed=7)
    for name, tensor in first.unet.state_dict().items():
        assert torch.equal(tensor, second.unet.state_dict()[name]), name
    for name, tensor in first.text_encoder.state_dict().items():
        assert torch.equal(tensor, second.text_encoder.state_dict()[name]), name


def test_default_size_is_the_models_native_size(pipeline):
    image = generate(pipeline, PROMPT, seed=0, steps=1)
    assert image.size == (64, 64)  # unet sample size 32 x VAE scale factor 2


def test_tokenizer_encodes_any_text_without_unknown_tokens():
    tokenizer = tiny_clip_tokenizer()
    vocab = tiny_tokenizer_vocab()
    ids = tokenizer("Monet's «Nymphéas», 1916 — 🌸").input_ids
    assert ids[0] == vocab["<|startoftext|>"] and ids[-1] == vocab["<|endoftext|>"]
    # Unknown would map to the EOS/unk id; only the final token may be EOS.
    assert vocab["<|endoftext|>"] not in ids[1:-1]
    assert tokenizer.decode(ids, skip_special_tokens=True).replace(" ", "") == "monet's«nymphéas»,1916—🌸"
    padded = tokenizer(PROMPT, padding="max_length", max_length=tokenizer.model_max_length).input_ids
    assert len(padded) == 77


def test_tokenizer_files_are_valid_clip_files(tmp_path):
    write_tiny_tokenizer_files(tmp_path)
    vocab = json.loads((tmp_path / "vocab.json").read_text(encoding="utf-8"))
    assert len(vocab) == 514 and sorted(vocab.values()) == list(range(514))
    assert (tmp_path / "merges.txt").read_text(encoding="utf-8").startswith("#version")


def test_generate_rejects_bad_sizes_and_steps(pipeline):
    with pytest.raises(CpdmError, match="height must be a positive multiple of 8"):
        generate(pipeline, PROMPT, height=30, width=32, steps=1)
    with pytest.raises(CpdmError, match="width must be a positive multiple of 8"):
        generate(pipeline, PROMPT, height=32, width=0, steps=1)
    with pytest.raises(CpdmError, match="steps must be at least 1"):
        generate(pipeline, PROMPT, steps=0)


def test_sizes_beyond_four_times_the_native_side_are_refused_before_any_memory_is_asked_for(pipeline):
    assert diffusion.native_side(pipeline) == 64
    with pytest.raises(CpdmError, match=r"height 100000 is beyond what this model supports: at most 256 pixels"):
        generate(pipeline, PROMPT, height=100_000, width=100_000, steps=1)
    with pytest.raises(CpdmError, match=r"width 264 is beyond what this model supports"):
        generate(pipeline, PROMPT, height=32, width=264, steps=1)
    assert generate(pipeline, PROMPT, height=32, width=256, steps=1).size == (256, 32)  # the largest side is allowed


def test_offline_tiny_ignores_the_model_name():
    pipe = load_sd_pipeline("no/such-model", offline_tiny=True)
    assert tuple(pipe.unet.config.block_out_channels) == (4, 8)


def test_missing_hub_weights_raise_and_never_download(tmp_path, monkeypatch):
    empty_home = tmp_path / "hf-home"
    empty_home.mkdir()
    monkeypatch.setenv("HF_HOME", str(empty_home))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    with pytest.raises(MissingWeightsError) as caught:
        load_sd_pipeline(DEFAULT_SD_MODEL)
    message = str(caught.value)
    assert DEFAULT_SD_MODEL in message
    assert f"hf download {DEFAULT_SD_MODEL}" in message
    assert str(empty_home) in message  # says where it looked
    assert "--offline-tiny" in message
    assert list(empty_home.rglob("*.safetensors")) == [] and list(empty_home.rglob("*.bin")) == []


def test_missing_local_folder_names_the_folder(tmp_path):
    with pytest.raises(MissingWeightsError, match=r"no-weights-here: not a Stable Diffusion folder"):
        load_sd_pipeline(str(tmp_path / "no-weights-here"))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(MissingWeightsError, match="no model_index.json"):
        load_sd_pipeline(str(empty))


def test_local_folder_round_trip(tmp_path):
    original = tiny_sd_pipeline(seed=3)
    original.save_pretrained(tmp_path / "tiny-sd")
    loaded = load_sd_pipeline(str(tmp_path / "tiny-sd"), dtype="float32")
    assert loaded.safety_checker is None
    a = generate(original, PROMPT, seed=5, steps=2, height=32, width=32)
    b = generate(loaded, PROMPT, seed=5, steps=2, height=32, width=32)
    assert np.array_equal(_pixels(a), _pixels(b))


def test_broken_local_folder_is_a_clear_error(tmp_path):
    original = tiny_sd_pipeline(seed=3)
    folder = tmp_path / "broken-sd"
    original.save_pretrained(folder)
    for weights in (folder / "unet").glob("diffusion_pytorch_model*"):
        weights.unlink()
    with pytest.raises(MissingWeightsError, match="broken-sd: could not load Stable Diffusion weights"):
        load_sd_pipeline(str(folder))


def test_dtype_resolution():
    assert diffusion.resolve_dtype(None, "cpu") is torch.float32
    assert diffusion.resolve_dtype(None, "cuda:0") is torch.float16
    assert diffusion.resolve_dtype("bfloat16", "cpu") is torch.bfloat16
    with pytest.raises(CpdmError, match="unknown dtype 'float13'"):
        diffusion.resolve_dtype("float13", "cpu")
