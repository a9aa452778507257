"""Stable Diffusion architectures written as configs, built with random weights for speed measurements.

A random-initialised model costs what the trained one does (same layers,
same shapes), so speed and memory measured on it hold for the real weights;
its images are noise. No file is read and nothing is downloaded, which is
what a machine without the weights (a lent GPU, CI) needs.

Two architectures, as the released checkpoints' configs give them:

* :data:`SD15` (Stable Diffusion 1.5, 512×512): UNet with 768-wide cross
  attention, 8 heads per block; CLIP ViT-L/14's text encoder (12 layers,
  768 wide); epsilon prediction.
* :data:`SD21` (Stable Diffusion 2.1, 768×768, the CPDM release's model):
  UNet with 1024-wide cross attention, (5, 10, 20, 20) heads, linear
  projections in the transformer blocks, attention computed in float32
  (``upcast_attention``); OpenCLIP ViT-H/14's text encoder as diffusers
  ships it (23 layers, 1024 wide, GELU); v-prediction.

Both use Stable Diffusion's VAE (scale factor 8) and the DDIM schedule of the
paper's generations. :meth:`SDArchitecture.shrunk` keeps an architecture's
layout (block types, heads per level, projections, prediction type) with
tiny widths, so that the same code runs on a CPU in seconds.

The tokenizer is built from local files: every byte character as a token,
padded with unused entries to the text encoder's vocabulary size, start and
end tokens last (as in CLIP's). Prompts are padded to 77 tokens, as
Stable Diffusion's are; the ids only index the embedding table, so the
cost is the real one.
"""

from __future__ import annotations

import dataclasses
import json
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import torch
from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
from diffusers.utils import logging as diffusers_logging
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

from cpdm.diffusion.settings import TOKENIZER_MAX_LENGTH
from cpdm.diffusion.tiny import BOS_TOKEN, EOS_TOKEN, bytes_to_unicode

CLIP_VOCAB_SIZE = 49408
CROSS_ATTENTION_DOWN = ("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D")
CROSS_ATTENTION_UP = ("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D")
# Stable Diffusion's VAE (both versions): four levels, 8x fewer pixels per side in the latent.
SD_VAE = {
    "block_out_channels": (128, 256, 512, 512),
    "down_block_types": ("DownEncoderBlock2D",) * 4,
    "up_block_types": ("UpDecoderBlock2D",) * 4,
    "layers_per_block": 2,
    "latent_channels": 4,
    "norm_num_groups": 32,
}
# The DDIM sampler of the paper's generations, on Stable Diffusion's noise schedule.
SD_SCHEDULER = {"beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear", "clip_sample": False,
                "set_alpha_to_one": False, "steps_offset": 1}


@dataclass(frozen=True)
class SDArchitecture:
    """A Stable Diffusion model as configs: UNet, text encoder, VAE, scheduler, and its native image side."""

    name: str
    image_size: int
    unet: dict
    text_encoder: dict
    vae: dict = field(default_factory=lambda: dict(SD_VAE))
    scheduler: dict = field(default_factory=lambda: dict(SD_SCHEDULER))

    @property
    def latent_size(self) -> int:
        return self.image_size // 2 ** (len(self.vae["block_out_channels"]) - 1)

    def shrunk(self) -> SDArchitecture:
        """The same layout with tiny widths and 64x64 images: what a CPU runs in seconds."""
        heads = self.unet["attention_head_dim"]
        few_heads = tuple(max(1, h // 5) for h in heads) if isinstance(heads, tuple) else 2
        widths = (8, 16, 32, 32)
        unet = dict(self.unet, block_out_channels=widths, cross_attention_dim=16, attention_head_dim=few_heads,
                    norm_num_groups=4, layers_per_block=1)
        text = dict(self.text_encoder, hidden_size=16, intermediate_size=32, num_attention_heads=2,
                    num_hidden_layers=2, vocab_size=1000, projection_dim=16)
        vae = dict(self.vae, block_out_channels=(8, 16, 16, 16), norm_num_groups=4, layers_per_block=1)
        shrunk = dataclasses.replace(self, name=f"{self.name} (shrunk)", image_size=64, unet=unet, text_encoder=text,
                                     vae=vae)
        return dataclasses.replace(shrunk, unet=dict(unet, sample_size=shrunk.latent_size))


SD15 = SDArchitecture(
    name="sd1.5",
    image_size=512,
    unet={"sample_size": 64, "block_out_channels": (320, 640, 1280, 1280), "layers_per_block": 2,
          "down_block_types": CROSS_ATTENTION_DOWN, "up_block_types": CROSS_ATTENTION_UP,
          "cross_attention_dim": 768, "attention_head_dim": 8, "norm_num_groups": 32},
    text_encoder={"vocab_size": CLIP_VOCAB_SIZE, "hidden_size": 768, "intermediate_size": 3072,
                  "num_attention_heads": 12, "num_hidden_layers": 12, "hidden_act": "quick_gelu",
                  "projection_dim": 768},
)

SD21 = SDArchitecture(
    name="sd2.1",
    image_size=768,
    unet={"sample_size": 96, "block_out_channels": (320, 640, 1280, 1280), "layers_per_block": 2,
          "down_block_types": CROSS_ATTENTION_DOWN, "up_block_types": CROSS_ATTENTION_UP,
          "cross_attention_dim": 1024, "attention_head_dim": (5, 10, 20, 20), "use_linear_projection": True,
          "upcast_attention": True, "norm_num_groups": 32},
    text_encoder={"vocab_size": CLIP_VOCAB_SIZE, "hidden_size": 1024, "intermediate_size": 4096,
                  "num_attention_heads": 16, "num_hidden_layers": 23, "hidden_act": "gelu",
                  "projection_dim": 512},
    scheduler=dict(SD_SCHEDULER, prediction_type="v_prediction"),
)

ARCHITECTURES = {architecture.name: architecture for architecture in (SD15, SD21)}


def padded_vocab(size: int) -> dict[str, int]:
    """Every byte character, alone and word-final, then unused entries up to ``size``; BOS and EOS last."""
    characters = list(bytes_to_unicode().values())
    tokens = characters + [character + "</w>" for character in characters]
    if size < len(tokens) + 2:
        raise ValueError(f"a vocabulary needs at least {len(tokens) + 2} entries, got {size}")
    tokens += [f"<|unused-{index}|>" for index in range(size - len(tokens) - 2)] + [BOS_TOKEN, EOS_TOKEN]
    return {token: index for index, token in enumerate(tokens)}


def sized_clip_tokenizer(vocab_size: int):
    """A CLIPTokenizer of ``vocab_size`` entries from freshly written local files, padding prompts to 77 tokens."""
    with tempfile.TemporaryDirectory(prefix="cpdm-tokenizer-") as folder:
        (Path(folder) / "vocab.json").write_text(json.dumps(padded_vocab(vocab_size), ensure_ascii=False),
                                                 encoding="utf-8")
        (Path(folder) / "merges.txt").write_text("#version: 0.2\n", encoding="utf-8")
        return CLIPTokenizer.from_pretrained(folder, local_files_only=True, model_max_length=TOKENIZER_MAX_LENGTH)


def random_sd_pipeline(architecture: SDArchitecture, seed: int = 0, device: str | torch.device = "cpu",
                       dtype: torch.dtype = torch.float32):
    """A StableDiffusionPipeline of ``architecture`` with random weights, on ``device`` in ``dtype``.

    The weights are created on ``device`` itself (a GPU initialises a
    billion parameters far faster than a CPU), in float32, then cast.
    The same seed gives the same weights on the same device.
    """
    tokenizer = sized_clip_tokenizer(architecture.text_encoder["vocab_size"])
    vocab = tokenizer.get_vocab()
    text_config = CLIPTextConfig(**architecture.text_encoder, max_position_embeddings=TOKENIZER_MAX_LENGTH,
                                 bos_token_id=vocab[BOS_TOKEN], eos_token_id=vocab[EOS_TOKEN],
                                 pad_token_id=vocab[EOS_TOKEN], layer_norm_eps=1e-5)
    with torch.random.fork_rng(devices=[]), torch.device(device):
        torch.manual_seed(seed)
        unet = UNet2DConditionModel(**architecture.unet)
        vae = AutoencoderKL(**architecture.vae, sample_size=architecture.image_size)
        text_encoder = CLIPTextModel(text_config)
    pipeline = StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                                       scheduler=DDIMScheduler(**architecture.scheduler), safety_checker=None,
                                       feature_extractor=None, requires_safety_checker=False)
    for module in (pipeline.unet, pipeline.vae, pipeline.text_encoder):
        module.eval()
    pipeline.set_progress_bar_config(disable=True)
    return cast(pipeline.to(device), dtype)


def cast(pipeline, dtype: torch.dtype):
    """The pipeline in ``dtype``, without diffusers' warning that casting skips its keep-in-float32 modules.

    These random models have no such modules (the warning lists none), so
    the warning would only be noise in a benchmark's output.
    """
    if dtype == torch.float32:
        return pipeline

    level = diffusers_logging.get_verbosity()
    diffusers_logging.set_verbosity_error()
    try:
        return pipeline.to(dtype=dtype)
    finally:
        diffusers_logging.set_verbosity(level)
