r"""Concept Ablation (Kumari et al., ICCV 2023), model-based, trained as the authors' diffusers script trains it.

Objective. Over images x of the anchor concept (e.g. "painting") with
their captions c, and c* the caption with the target concept put in:

    L(θ) = E_{x, ε, t} ‖ ε_θ(x_t, c*, t) − sg(ε_θ(x_t, c, t)) ‖²_M

sg is stop-gradient: the target is the model's own prediction for the
anchor caption, and carries no gradient. The target concept's captions
learn to behave like the anchor's. ‖·‖²_M is the authors' masked error
(:func:`region_mse`): summed over the latent's channels and the valid
region M, divided by the region's size, averaged over the batch.

With ``regularization`` (the authors' ``--with_prior_preservation``) each
step also draws as many anchor images x' with their own captions c' and adds
the plain diffusion loss on them:

    L(θ) + w · E ‖ ε_θ(x'_t, c', t) − ε ‖²        (w = ``prior_loss_weight``, 1)

This second term is a mean over every latent element while the first sums
over the 4 channels, so in the authors' code the ablation term weighs 4
times the regularisation at w = 1; cpdm keeps that weighting. Their
``--scale_lr`` doubles the learning rate when regularisation doubles the
batch; so does cpdm's ``scale_lr``.

Which parameters change: the cross-attention key and value projections,
``*.attn2.to_k.weight`` and ``*.attn2.to_v.weight`` (the authors'
``--parameter_group cross-attn``).

Training data, as the authors make it (nupurkmr9/concept-ablation, commit
c11fb1b, ``diffusers/train.py`` and ``diffusers/utils.py``):

1. Captions: ``caption_count`` (200, their ``--num_class_prompts``)
   captions of the anchor concept, written by a caption writer of
   :mod:`cpdm.curation.refine` (``captions``): ``template`` composes them
   offline from fixed lists (paintings of subjects for styles, photos of the
   object in places for objects); ``openai`` asks an OpenAI-compatible
   endpoint or local server the authors' question (their LLM answers for
   objects; for styles they read 200 LAION captions of paintings,
   ``assets/finetune_prompts/painting.txt``).
2. Images: ``n_images`` (1000, their ``--num_class_images``) images made by
   the base model, image i from caption i mod N, with diffusers'
   ``DPMSolverMultistepScheduler`` (DPM-Solver++, order 2) made from the
   model's scheduler config, 25 steps, guidance 6, saved as JPEG (PIL's
   quality 75). Their script also passes eta = 1, which this sampler takes
   no argument for: the pipeline drops it and sampling is deterministic, as
   here. ``--images`` replaces the generated images by the given ones.
3. Each step draws ``batch_size`` images at random, flips each
   horizontally with probability 0.5 (``hflip``; their ``--hflip``),
   encodes it with the VAE (a sample of its latent distribution) and noises
   it at a uniform random timestep. The valid region M leaves out a border
   one latent pixel wide, as their mask does for an image at full scale.
4. c* for a style: one of their three templates, drawn uniformly:
   "{c}, in the style of {target}", "in {target}'s style, {c}" and
   "in {target}'s style, {c}" (their third template repeats the second, so
   that wording is drawn two times in three). For an object: c with the
   anchor word replaced by the target, every occurrence.

Images made here are cached in the workspace (``cache/ablation/``) under
the base model (id and hub revision), the caption set, the sampler's
settings and the seed, one file per image: a run with other training
hyperparameters reuses them, and a run asking for more images makes only
the missing ones.

Departures from the authors' code: the template caption writer stands in
for an LLM offline; captions an LLM writes keep only lines that name the
anchor (for an object, a caption without it gives c* = c), without
numbering or quotes, each once. Their random rescaling augmentation (on for
objects in their README's commands, off with ``--noaug`` for styles) is
left out. The object's name is replaced ignoring case (theirs matches
case). With several target concepts each image's caption takes one at
random (theirs cycle by image index). The regularisation's regression target
is the scheduler's (ε, or v for v-prediction models; their script uses ε
for both). Image i's starting noise comes from its own seed, derived from
the run's seed and i (theirs from one global seed), and images are made in
the pipeline's precision (float32 under ``cpdm unlearn``; theirs float16 on
a GPU).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from contextlib import ExitStack
from pathlib import Path

import torch
import torch.nn.functional as F
from diffusers import DPMSolverMultistepScheduler

from cpdm.curation.refine import OpenAIRefiner, RefinerError, TemplateRefiner
from cpdm.diffusion.pipeline import generate_images
from cpdm.progress import progress_bar
from cpdm.unlearning.base import (
    Method,
    TrainingOptions,
    UnlearnRequest,
    autocast,
    batch_indices,
    encode_pixels,
    encode_text,
    image_pixels,
    named_parameters,
    native_image_size,
    noised,
    replaced_tensors,
    run_fingerprint,
    step_generator,
    train_loop,
    training_scheduler,
)
from cpdm.unlearning.uce import projection_names

# c* for a style, as the authors' CustomDiffusionDataset writes it; drawn uniformly (the third repeats the second).
STYLE_TEMPLATES = (
    "{caption}, in the style of {target}",
    "in {target}'s style, {caption}",
    "in {target}'s style, {caption}",
)
SAMPLER = "DPMSolverMultistepScheduler"
IMAGES_PER_BATCH = 4  # images per pipeline call; each has its own seed, so another batch size gives the same images
CACHE_FOLDER = "ablation"


# --- captions -------------------------------------------------------------------------------------

def caption_writer(params: dict, cache_dir: Path | None):
    """The writer of anchor captions ``params["captions"]`` names (the openai one reads the environment)."""
    if params["captions"] == "template":
        return TemplateRefiner()
    try:
        return OpenAIRefiner.from_env(model=params["caption_model"] or None,
                                      cache_dir=None if cache_dir is None else Path(cache_dir) / "captions")
    except RefinerError as exc:
        message = f"captions=openai: {exc} (for the ablation, -p caption_model=NAME names the model)"
        raise RefinerError(message) from None


def target_caption(caption: str, concept: str, concept_type: str, anchor: str, template: int = 0) -> str:
    """c*: the anchor caption with the target concept put in (a style by template ``template``, an object by name)."""
    if concept_type == "style":
        return STYLE_TEMPLATES[template].format(caption=caption, target=concept)
    return re.sub(re.escape(anchor), lambda _: concept, caption, flags=re.IGNORECASE)


# --- anchor images --------------------------------------------------------------------------------

def anchor_image_seed(seed: int, index: int) -> int:
    """The generator seed of anchor image ``index``: its own, so any prefix of the set is the same images."""
    digest = hashlib.sha256(f"{int(seed)}:anchor-image:{int(index)}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def anchor_image_key(request: UnlearnRequest, captions: list[str], params: dict, size: int) -> dict:
    """What decides the anchor images: base model, captions, sampler and seed (not the training hyperparameters)."""
    return {
        "base_model": request.base_model, "base_revision": request.base_revision,
        "captions_sha256": hashlib.sha256("\n".join(captions).encode("utf-8")).hexdigest(),
        "sampler": SAMPLER, "steps": params["anchor_steps"], "guidance": params["anchor_guidance"],
        "seed": request.seed, "size": size,
    }


def anchor_image_folder(cache_dir: Path, key: dict) -> Path:
    """The cache folder of one set of anchor images: named by a digest of its key."""
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode("utf-8")).hexdigest()[:16]
    return Path(cache_dir) / CACHE_FOLDER / digest


def anchor_image_path(folder: Path, index: int) -> Path:
    return folder / f"{index:05d}.jpg"


def generate_anchor_images(pipe, folder: Path, captions: list[str], count: int, seed: int, steps: int,
                           guidance: float, progress: bool = False) -> int:
    """Make the first ``count`` anchor images that ``folder`` lacks; return how many were made.

    Image i is made from caption i mod N with seed :func:`anchor_image_seed`,
    by the pipeline with DPM-Solver++ (made from its scheduler's config).
    Each file is written whole or not at all, so an interrupted run leaves
    only complete images, and the next makes the rest.
    """

    missing = [i for i in range(count) if not anchor_image_path(folder, i).is_file()]
    if not missing:
        return 0
    folder.mkdir(parents=True, exist_ok=True)
    original = pipe.scheduler
    pipe.scheduler = DPMSolverMultistepScheduler.from_config(original.config)
    bar = progress_bar(len(missing), "anchor images", unit="img", enabled=progress)
    try:
        for start in range(0, len(missing), IMAGES_PER_BATCH):
            indices = missing[start : start + IMAGES_PER_BATCH]
            images = generate_images(pipe, [captions[i % len(captions)] for i in indices],
                                     [anchor_image_seed(seed, i) for i in indices], steps, guidance)
            for index, image in zip(indices, images):
                # A name of its own, then a rename: two runs filling one folder never see half a file.
                handle, partial = tempfile.mkstemp(dir=folder, prefix=".incoming-", suffix=".jpg")
                with os.fdopen(handle, "wb") as file:
                    image.convert("RGB").save(file, format="JPEG")  # the authors' files: JPEG at PIL's quality 75
                os.replace(partial, anchor_image_path(folder, index))
            bar.update(len(indices))
    finally:
        pipe.scheduler = original
        bar.close()
    return len(missing)


def write_cache_description(folder: Path, key: dict, captions: list[str]) -> None:
    """Say in the folder what its images are (the key and the captions), for whoever looks at it."""
    folder.mkdir(parents=True, exist_ok=True)
    if not (folder / "key.json").is_file():
        (folder / "captions.txt").write_text("\n".join(captions) + "\n", encoding="utf-8")
        (folder / "key.json").write_text(json.dumps(key, indent=2, sort_keys=True) + "\n", encoding="utf-8")


# --- the loss -------------------------------------------------------------------------------------

def valid_region(height: int, width: int) -> torch.Tensor:
    """M: a (1, 1, h, w) latent mask of ones with a zero border one latent pixel wide."""
    region = torch.zeros(1, 1, height, width)
    region[..., 1 : height - 1, 1 : width - 1] = 1.0
    return region


def region_mse(prediction: torch.Tensor, target: torch.Tensor, region: torch.Tensor) -> torch.Tensor:
    """The authors' masked error: squared error summed over channels and the region, per region pixel, batch mean."""
    error = (prediction.float() - target.float()) ** 2 * region
    return (error.sum(dim=(1, 2, 3)) / region.expand(len(error), -1, -1, -1).sum(dim=(1, 2, 3))).mean()


def ablation_loss(unet, x_t, t, context_target, context_anchor, region, compute_dtype=None) -> torch.Tensor:
    """‖ε_θ(x_t, c*, t) − sg(ε_θ(x_t, c, t))‖²_M: the anchor prediction is computed without gradient."""
    with torch.no_grad(), autocast(x_t.device, compute_dtype):
        anchor_prediction = unet(x_t, t, encoder_hidden_states=context_anchor).sample.float()
    with autocast(x_t.device, compute_dtype):
        prediction = unet(x_t, t, encoder_hidden_states=context_target).sample
    return region_mse(prediction, anchor_prediction, region.to(x_t.device))


def flipped(pixels: torch.Tensor, generator: torch.Generator, enabled: bool) -> torch.Tensor:
    """The batch with each image mirrored left-right with probability 0.5 (when ``enabled``)."""
    flip = torch.rand(len(pixels), generator=generator) < 0.5
    if not enabled or not flip.any():
        return pixels
    return torch.where(flip[:, None, None, None], pixels.flip(-1), pixels)


class ConceptAblation(Method):
    """Concept Ablation: map the target's captions onto the anchor's predictions."""

    name = "ablation"

    def trainable_names(self, unet, params):
        return projection_names(unet)

    def run(self, pipe, request: UnlearnRequest, params: dict, options: TrainingOptions) -> dict[str, torch.Tensor]:
        unet = pipe.unet
        anchor, concept_type = params["anchor"], params["concept_type"]
        captions = caption_writer(params, options.cache_dir).write_captions(anchor, params["caption_count"],
                                                                            concept_type)
        size = native_image_size(pipe)
        with ExitStack() as stack:
            paths = self._anchor_images(pipe, request, params, options, captions, size, stack)
            count = len(paths)
            caption_of = [captions[i % len(captions)] for i in range(count)]
            names = self.trainable_names(unet, params)
            parameters = named_parameters(unet, names)
            lr = params["lr"]
            if params["scale_lr"]:
                lr *= params["batch_size"] * (2 if params["regularization"] else 1)
            optimizer = torch.optim.AdamW(parameters.values(), lr=lr, weight_decay=params["weight_decay"])
            scheduler = training_scheduler(pipe)
            latent_size = size // pipe.vae_scale_factor
            region = valid_region(latent_size, latent_size)

            def latents(indices, generator):
                pixels = flipped(image_pixels([paths[i] for i in indices], size), generator, params["hflip"])
                return encode_pixels(pipe, pixels, generator)

            def step_loss(step: int) -> torch.Tensor:
                generator = step_generator(request.seed, step)
                chosen = batch_indices(count, params["batch_size"], generator).tolist()
                concepts = torch.randint(0, len(request.concepts), (len(chosen),), generator=generator).tolist()
                templates = torch.randint(0, len(STYLE_TEMPLATES), (len(chosen),), generator=generator).tolist()
                anchor_texts = [caption_of[i] for i in chosen]
                target_texts = [target_caption(text, request.concepts[c], concept_type, anchor, k)
                                for text, c, k in zip(anchor_texts, concepts, templates)]
                x_t, t, _ = noised(scheduler, latents(chosen, generator), generator)
                loss = ablation_loss(unet, x_t, t, encode_text(pipe, target_texts)[0],
                                     encode_text(pipe, anchor_texts)[0], region, options.autocast_dtype)
                if params["regularization"]:
                    prior = batch_indices(count, params["batch_size"], generator).tolist()
                    prior_t, prior_step, prior_target = noised(scheduler, latents(prior, generator), generator)
                    with autocast(prior_t.device, options.autocast_dtype):
                        prediction = unet(prior_t, prior_step,
                                          encoder_hidden_states=encode_text(pipe, [caption_of[i] for i in prior])[0])
                    loss = loss + params["prior_loss_weight"] * F.mse_loss(prediction.sample.float(),
                                                                           prior_target.float())
                return loss

            train_loop(parameters, optimizer, step_loss, params["iterations"], options,
                       run_fingerprint(self.name, request, params), description=self.name,
                       clip_grad_norm=params["max_grad_norm"])
        unet.requires_grad_(False)
        request.record.update(anchor_captions=len(captions), anchor_images=count)
        return replaced_tensors(unet, names)

    def _anchor_images(self, pipe, request, params, options, captions, size, stack: ExitStack) -> list[Path]:
        """The images to train on: the given ones, or the base model's (cached when the run has a cache and a base)."""
        if request.images:
            return list(request.images)
        key = anchor_image_key(request, captions, params, size)
        if options.cache_dir is not None and request.base_model:
            folder = anchor_image_folder(options.cache_dir, key)
            write_cache_description(folder, key, captions)
            request.record["anchor_image_cache"] = str(Path(CACHE_FOLDER) / folder.name)
        else:  # nothing names the base model (or there is no cache): the images live as long as the run
            folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="cpdm-ablation-")))
        made = generate_anchor_images(pipe, folder, captions, params["n_images"], request.seed,
                                      params["anchor_steps"], params["anchor_guidance"], options.progress)
        request.record["anchor_images_generated"] = made
        return [anchor_image_path(folder, i) for i in range(params["n_images"])]

