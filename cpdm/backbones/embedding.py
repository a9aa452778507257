"""Backbones whose descriptor is one L2-normalised embedding per image (CLIP, DINOv2, CSD).

Two ways of comparing embeddings f(a), f(g), both exactly 0 for identical
images and never negative:

``squared-l2``
    ``‖f(a) − f(g)‖² = 2 − 2·cos``: the metric's M_sem.
``cosine``
    ``1 − cos = ‖f(a) − f(g)‖² / 2``: CSD's style distance.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import torch
from PIL import Image


@dataclass
class EmbeddingBackbone:
    """An image encoder with its preprocessing, ready for batched inference.

    ``forward`` maps a prepared batch (N, 3, S, S) on the device to raw
    features (N, D); ``model`` is the module that holds its weights.
    """

    name: str
    key: str
    model: torch.nn.Module
    forward: Callable[[torch.Tensor], torch.Tensor]
    preprocess: Callable[[Image.Image], torch.Tensor]
    device: torch.device
    role: str = "semantic"
    comparison: str = "squared-l2"
    descriptor = "embedding"

    def prepare(self, image: Image.Image) -> torch.Tensor:
        """One image as the (3, S, S) tensor the model expects (resize, crop, normalise)."""
        return self.preprocess(image.convert("RGB"))

    @torch.inference_mode()
    def embed_batch(self, batch: torch.Tensor) -> torch.Tensor:
        """L2-normalised embeddings (N, D), float32 on the CPU, of a prepared batch."""
        features = self.forward(batch.to(self.device)).float()
        return torch.nn.functional.normalize(features, dim=-1).cpu()

    def embed(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """L2-normalised embeddings (N, D) of PIL images (one batch)."""
        return self.embed_batch(torch.stack([self.prepare(image) for image in images]))


def seeded(seed: int, build):
    """Run ``build()`` under a fixed torch seed without disturbing the caller's RNG."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build()
