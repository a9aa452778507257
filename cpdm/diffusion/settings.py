"""How images are generated, without torch: the paper's settings, the samplers, and their checks.

``cpdm generate``, a generate job and the unlearning report read their
defaults here, so the command line and the app cannot drift apart.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from cpdm.errors import CpdmError
from cpdm.store.rows import MAX_SEED

DEFAULT_SD_MODEL = "runwayml/stable-diffusion-v1-5"
# The CPDM release generated with Stable Diffusion 2.1; a new baseline variant defaults to it.
PAPER_SD_MODEL = "stabilityai/stable-diffusion-2-1"
BASELINE_VARIANT = "original"  # the name of the baseline variant generate creates
# The base model name of variants made on the tiny random pipeline (--offline-tiny).
TINY_BASE = "offline-tiny"
# The base model recorded for imported generations whose model nobody named.
UNKNOWN_BASE = "unknown"

# The CPDM paper's generation settings.
PAPER_PER_PROMPT = 9
PAPER_STEPS = 50
PAPER_GUIDANCE = 9.0
PAPER_SEED = 23
DEFAULT_SCHEDULER = "ddim"

# How a prompt's images get their starting noise.
#   per-image (cpdm's default): image k from its own generator seeded seed + k, so any image can be made alone
#       and a stopped run resumes exactly;
#   release (the CPDM release's sd_inference_v2_1.py, which calls seed_everything(23) before each prompt): one
#       generator seeded with the seed before each prompt, the prompt's per_prompt latents drawn from it in one
#       batch, image k being the k-th of them.
SEED_MODES = ("per-image", "release")
PER_IMAGE_SEEDS, RELEASE_SEEDS = SEED_MODES

# Sampler names and the diffusers class each one loads.
SCHEDULERS = {
    "ddim": "DDIMScheduler",
    "pndm": "PNDMScheduler",
    "lms": "LMSDiscreteScheduler",
    "euler": "EulerDiscreteScheduler",
    "euler-a": "EulerAncestralDiscreteScheduler",
    "dpm": "DPMSolverMultistepScheduler",
}
TOKENIZER_MAX_LENGTH = 77  # tokens Stable Diffusion's CLIP text encoder reads
DTYPES = ("float16", "bfloat16", "float32")
# What a generation made by the tiny random pipeline records in its params; real runs never match it.
TINY_MARK = {"pipeline": "tiny"}


def uses_tiny_model(base_model: str, offline_tiny: bool) -> bool:
    """Whether a variant generates with the tiny random pipeline: asked for, or its base model is the tiny one."""
    return offline_tiny or base_model == TINY_BASE


@dataclass(frozen=True)
class GenerationSettings:
    """How images are made (the paper's defaults); everything here is recorded with each image."""

    per_prompt: int = PAPER_PER_PROMPT
    steps: int = PAPER_STEPS
    guidance: float = PAPER_GUIDANCE
    seed: int = PAPER_SEED
    scheduler: str = DEFAULT_SCHEDULER
    negative: str | None = None
    height: int | None = None
    width: int | None = None
    seed_mode: str = PER_IMAGE_SEEDS

    def image_seed(self, k: int) -> int:
        """The seed recorded with a prompt's image k: seed + k per image; the prompt's one seed in release mode."""
        return self.seed if self.seed_mode == RELEASE_SEEDS else self.seed + k

    def check(self) -> None:
        """Refuse settings that cannot make an image, before any model is loaded."""
        if self.per_prompt < 1:
            raise CpdmError(f"--per-prompt must be at least 1, got {self.per_prompt}")
        if self.steps < 1:
            raise CpdmError(f"--steps must be at least 1, got {self.steps}")
        if not math.isfinite(self.guidance) or self.guidance < 0:
            raise CpdmError(f"--guidance must be a finite number ≥ 0, got {self.guidance}")
        if self.seed_mode not in SEED_MODES:
            raise CpdmError(f"--seed-mode must be one of {', '.join(SEED_MODES)}, got {self.seed_mode!r}")
        last_seed = self.image_seed(self.per_prompt - 1)
        if self.seed_mode == RELEASE_SEEDS and not 0 <= self.seed <= MAX_SEED:
            raise CpdmError(f"--seed must be from 0 to {MAX_SEED}, got {self.seed}")
        if self.seed < 0 or last_seed > MAX_SEED:
            raise CpdmError(f"--seed must be from 0 to {MAX_SEED - self.per_prompt + 1} with --per-prompt "
                            f"{self.per_prompt} (image k uses seed + k; the workspace records seeds up to 2^63 - 1), "
                            f"got {self.seed}")
        for label, value in (("height", self.height), ("width", self.width)):
            if value is not None and (value <= 0 or value % 8):
                raise CpdmError(f"--{label} must be a positive multiple of 8, got {value}")
