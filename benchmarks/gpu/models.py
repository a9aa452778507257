"""The suite's models: full-size architectures with random weights, saved where cpdm's loaders read weights.

No weights can be downloaded on the machines the suite is for, so every
model is a random-initialised full-size architecture (speed and memory are
those of the trained model; the numbers it computes mean nothing). The dry
run uses the same architectures shrunk (:meth:`SDArchitecture.shrunk`) or
the backbones' tiny twins.

Two parts run cpdm as a user would, loading weights from disk: the
unlearning part times UCE with its loading, and the end-to-end part runs a
``cpdm worker``. For them, :func:`saved_sd_folder` writes a random Stable
Diffusion model as a local diffusers folder (a base model cpdm accepts), and
:func:`write_backbone_weights` writes random weights of the scoring
backbones into a private cache laid out as the real caches are (the Hugging
Face hub cache for open_clip, torch hub's checkpoints folder for
torchvision), returning the environment that points a worker there. The
weights are random; the cache is the run's own scratch folder.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

import torch

from benchmarks.gpu.harness import release_memory
from cpdm.diffusion.architectures import ARCHITECTURES, SDArchitecture, cast, random_sd_pipeline

COMPLETE_MARKER = ".complete"
# The revision the private Hugging Face cache records for the weights it holds (any commit-like hash will do).
RANDOM_REVISION = hashlib.sha1(b"cpdm gpu suite: random weights").hexdigest()
OPEN_CLIP_WEIGHTS_FILE = "open_clip_pytorch_model.bin"  # one of the names open_clip's cache lookup tries


def architecture(name: str, dry_run: bool) -> SDArchitecture:
    """A Stable Diffusion architecture by name (sd1.5, sd2.1), shrunk for the dry run."""
    full = ARCHITECTURES[name]
    return full.shrunk() if dry_run else full


def slug(text: str) -> str:
    """``NVIDIA H200`` -> ``nvidia-h200``: a name for files."""
    return re.sub(r"[^a-z0-9.]+", "-", text.lower()).strip("-.") or "device"


def saved_sd_folder(scratch: Path, sd: SDArchitecture, device: str) -> Path:
    """A diffusers folder of ``sd`` with random weights (float16 files on CUDA), written once per run.

    The weights are made on ``device`` and saved; cpdm then loads them as it
    loads any local base model.
    """
    folder = Path(scratch) / f"random-{slug(sd.name)}"
    if (folder / COMPLETE_MARKER).is_file():
        return folder
    pipeline = random_sd_pipeline(sd, device=device)
    if str(device).startswith("cuda"):
        pipeline = cast(pipeline, torch.float16)
    pipeline.save_pretrained(folder, safe_serialization=True)
    (folder / COMPLETE_MARKER).write_text(f"{sd.name} with random weights\n", encoding="utf-8")
    del pipeline
    release_memory()  # the GPU memory goes back before the model is loaded again from the folder
    return folder


def write_backbone_weights(cache: Path, semantic: str, style: str) -> dict[str, str]:
    """Random weights of the full-size ``semantic`` and ``style`` backbones in a private cache under ``cache``.

    Returns the environment variables that make cpdm's real-weight loaders
    read that cache (and nothing else): ``HF_HOME``/``HF_HUB_CACHE`` for
    open_clip's weights, ``TORCH_HOME`` for torch hub's checkpoints.
    """
    cache = Path(cache)
    environment = {"HF_HOME": str(cache / "huggingface"), "HF_HUB_CACHE": str(cache / "huggingface" / "hub"),
                   "TORCH_HOME": str(cache / "torch")}
    write_open_clip_weights(Path(environment["HF_HUB_CACHE"]), semantic)
    write_torch_hub_weights(Path(environment["TORCH_HOME"]) / "hub" / "checkpoints", style)
    return environment


def write_open_clip_weights(hub_cache: Path, name: str) -> Path:
    """Random weights of the open_clip model ``name`` (MODEL/TAG) where open_clip's hub download would put them."""
    import open_clip

    from cpdm.backbones.clip import check_clip_name, load_clip

    model_name, tag = check_clip_name(name)
    repo_id, filename = os.path.split(open_clip.get_pretrained_cfg(model_name, tag).get("hf_hub", ""))
    if not repo_id:
        raise ValueError(f"{name}: open_clip names no Hugging Face repository for these weights; "
                         "the suite writes random weights only where a hub download would put them")
    weights = hub_file(hub_cache, repo_id, filename or OPEN_CLIP_WEIGHTS_FILE)
    model = load_clip(name, mode="random").model
    torch.save(half_state(model), weights)
    return weights


def write_torch_hub_weights(checkpoints: Path, name: str) -> Path:
    """Random weights of the style backbone ``name`` in torch hub's checkpoints folder, under the real file's name."""
    from torchvision.models import vgg19

    from cpdm.backbones.inception import FID_CHECKPOINT
    from cpdm.backbones.vision import VGG19_CHECKPOINT

    writers = {"vgg19": (VGG19_CHECKPOINT, lambda: vgg19(weights=None).state_dict()),
               "cpdm-inception": (FID_CHECKPOINT, random_fid_inception_state)}
    if name not in writers:
        raise ValueError(f"the suite writes random torch hub weights for {' and '.join(writers)} only, not {name}")
    filename, random_state = writers[name]
    checkpoints.mkdir(parents=True, exist_ok=True)
    path = checkpoints / filename
    torch.save(half_tensors(random_state()), path)
    return path


def random_fid_inception_state() -> dict[str, torch.Tensor]:
    """Random weights for pytorch-fid's FID InceptionV3, keyed as its released checkpoint is."""
    from cpdm.backbones.inception import fid_inception, random_init

    captured = {}

    def random_state(network):  # the FID-patched network the checkpoint is loaded into
        captured["state"] = random_init(network).state_dict()
        return captured["state"]

    fid_inception(random_state)
    return captured["state"]


def hub_file(hub_cache: Path, repo_id: str, filename: str) -> Path:
    """The path of ``filename`` in a Hugging Face hub cache's snapshot of ``repo_id`` (refs/main written)."""
    repo = Path(hub_cache) / ("models--" + repo_id.replace("/", "--"))
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(RANDOM_REVISION, encoding="utf-8")
    snapshot = repo / "snapshots" / RANDOM_REVISION
    snapshot.mkdir(parents=True, exist_ok=True)
    return snapshot / filename


def half_state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A module's state in float16 (half the file to write); loading copies it into the float32 model."""
    return half_tensors(module.state_dict())


def half_tensors(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``state`` with its floating-point tensors in float16."""
    return {key: value.half() if value.is_floating_point() else value for key, value in state.items()}
