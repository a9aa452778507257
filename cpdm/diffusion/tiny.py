"""Tiny random-initialised Stable Diffusion for tests, CI and the offline demo; no files, no network.

:func:`tiny_sd_pipeline` builds a pipeline of Stable Diffusion's architecture
from tiny parts, the way diffusers' own tests build theirs. It runs in about a
second on a CPU; its images are noise-like but deterministic.
Full-size architectures with random weights are in
:mod:`cpdm.diffusion.architectures`.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import torch
from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

from cpdm.diffusion.settings import TOKENIZER_MAX_LENGTH

BOS_TOKEN = "<|startoftext|>"
EOS_TOKEN = "<|endoftext|>"


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP's reversible map from bytes to printable unicode characters.

    Byte-level BPE works on these characters, so a vocabulary that holds all
    256 of them can encode any text without unknown tokens.
    """
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    printable += list(range(ord("®"), ord("ÿ") + 1))
    codes = printable[:]
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            codes.append(256 + extra)
            extra += 1
    return {byte: chr(code) for byte, code in zip(printable, codes)}


def tiny_tokenizer_vocab() -> dict[str, int]:
    """A 514-token CLIP vocabulary: every byte character, alone and word-final, plus BOS/EOS.

    With no merges, every word is spelled out byte by byte; that is all a
    random-initialised text encoder needs, and prompts never hit unknown tokens.
    """
    characters = list(bytes_to_unicode().values())
    tokens = characters + [character + "</w>" for character in characters] + [BOS_TOKEN, EOS_TOKEN]
    return {token: index for index, token in enumerate(tokens)}


def write_tiny_tokenizer_files(folder: str | os.PathLike) -> Path:
    """Write ``vocab.json`` and ``merges.txt`` of the tiny tokenizer into ``folder``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps(tiny_tokenizer_vocab(), ensure_ascii=False), encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n", encoding="utf-8")
    return folder


def tiny_clip_tokenizer():
    """A CLIPTokenizer read from freshly written tiny vocabulary files (no hub access)."""
    with tempfile.TemporaryDirectory(prefix="cpdm-tiny-tokenizer-") as folder:
        write_tiny_tokenizer_files(folder)
        return CLIPTokenizer.from_pretrained(folder, local_files_only=True, model_max_length=TOKENIZER_MAX_LENGTH)


def _tiny_parts(vocab: dict[str, int]) -> dict:
    """The random-initialised UNet, VAE, text encoder and scheduler.

    The sizes follow the dummy components of diffusers' own Stable Diffusion
    pipeline tests (``get_dummy_components`` in tests/pipelines/stable_diffusion),
    with a vocabulary of our own so the tokenizer needs no hub.
    """
    unet = UNet2DConditionModel(
        block_out_channels=(4, 8),
        layers_per_block=1,
        sample_size=32,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=8,
        norm_num_groups=2,
    )
    vae = AutoencoderKL(
        block_out_channels=(4, 8),
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        latent_channels=4,
        norm_num_groups=2,
    )
    text_config = CLIPTextConfig(
        hidden_size=8,
        intermediate_size=16,
        num_attention_heads=2,
        num_hidden_layers=2,
        vocab_size=1000,
        max_position_embeddings=TOKENIZER_MAX_LENGTH,
        bos_token_id=vocab[BOS_TOKEN],
        eos_token_id=vocab[EOS_TOKEN],
        pad_token_id=vocab[EOS_TOKEN],
        layer_norm_eps=1e-5,
    )
    text_encoder = CLIPTextModel(text_config)
    scheduler = DDIMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,  # as in Stable Diffusion v1's scheduler config
    )
    return {"unet": unet, "vae": vae, "text_encoder": text_encoder, "scheduler": scheduler}


def tiny_sd_pipeline(seed: int = 0, device: str | torch.device = "cpu"):
    """A Stable Diffusion pipeline from tiny random-initialised parts; the same seed gives the same weights.

    The global torch random state is left as it was. Height and width must be
    multiples of 8 (64x64 by default; 32x32 is enough for tests).
    """
    tokenizer = tiny_clip_tokenizer()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        parts = _tiny_parts(tokenizer.get_vocab())
    pipeline = StableDiffusionPipeline(
        **parts,
        tokenizer=tokenizer,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    for module in (pipeline.unet, pipeline.vae, pipeline.text_encoder):
        module.eval()
    pipeline.set_progress_bar_config(disable=True)
    return pipeline.to(device)
