"""Unlearning: erase a concept from a Stable Diffusion model, one method per module, one interface.

:data:`REGISTRY` is the table of methods, and the one place each of their
facts lives: name, one-line summary, hyperparameters (default, type, help,
allowed range), whether the method needs images of the concept, and the
file and class that implement it (``cpdm.unlearning.<module>``). The Jobs
page's forms, ``cpdm variants methods``, ``cpdm unlearn --help``, the checks
made when a job is queued, and the method classes themselves all read it.

Reading the table loads no torch: :func:`lookup` gives an entry and its
:meth:`Entry.resolve_params` checks hyperparameters. Only
:func:`get_method` imports an implementation (and torch with it), by its
module path. :mod:`cpdm.unlearning.runner` runs a method and registers the
variant; :func:`cpdm.diffusion.variants.apply_variant` puts a variant onto a
base pipeline for generation; :mod:`cpdm.analysis.unlearning` tells
whether it worked.
"""

from __future__ import annotations

import importlib
import math
from dataclasses import dataclass, field
from pathlib import Path

from cpdm.errors import CpdmError
from cpdm.values import parse_bool

# The value of an ``or_auto`` hyperparameter that lets the method work it out.
AUTO = "auto"

# What `cpdm unlearn` and an unlearn job use unless told otherwise.
DEFAULT_SEED = 0
TRAINING_PRECISIONS = ("float32", "bfloat16", "float16")  # compute precision of training passes
DEFAULT_TRAINING_PRECISION = "float32"
DEFAULT_CHECKPOINT_EVERY = 100
# Files a method that trains on images reads from its images folder.
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")


@dataclass(frozen=True)
class Hyperparameter:
    """One hyperparameter of a method: its default (whose type a given value is converted to), help and range.

    ``at_least`` and ``at_most`` are inclusive bounds, ``above`` an
    exclusive one; ``choices`` lists the texts allowed. ``or_auto``: the
    value is a number or the text ``auto`` (the default, which the method
    works out from its other settings).
    """

    name: str
    default: bool | int | float | str
    help: str
    at_least: float | None = None
    above: float | None = None
    at_most: float | None = None
    choices: tuple[str, ...] = ()
    or_auto: bool = False

    @property
    def type(self) -> str:
        """``bool``, ``int``, ``float`` or ``str``: the type of the default."""
        return {bool: "bool", int: "int", float: "float"}.get(type(self.default), "str")

    def convert(self, value):
        """``value`` (a number, or text from the command line) as the default's type."""
        if self.or_auto:
            if str(value).strip().lower() == AUTO:
                return AUTO
            try:
                return convert_param(self.name, value, 0.0)
            except CpdmError:
                raise CpdmError(f"{self.name} must be a finite number or {AUTO}, got {value!r}") from None
        return convert_param(self.name, value, self.default)

    def check(self, value) -> None:
        """Refuse a converted value outside the allowed range or choices."""
        if self.or_auto and value == AUTO:
            return
        if self.choices and value not in self.choices:
            raise CpdmError(f"{self.name} must be one of {', '.join(self.choices)}, got {value!r}")
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return
        too_low = ((self.at_least is not None and value < self.at_least)
                   or (self.above is not None and value <= self.above))
        too_high = self.at_most is not None and value > self.at_most
        if too_low or too_high:
            raise CpdmError(f"{self.name} must {self.allowed_range()}, got {value!r}")

    def allowed_range(self) -> str:
        """The range in words: ``be positive``, ``be at least 1``, ``lie in (0, 1]``, ..."""
        low = self.above if self.above is not None else self.at_least
        if self.at_most is not None:
            opening = "(" if self.above is not None else "["
            return f"lie in {opening}{low:g}, {self.at_most:g}]"
        if self.above is not None:
            return "be positive" if self.above == 0 else f"be above {self.above:g}"
        return "not be negative" if self.at_least == 0 else f"be at least {self.at_least:g}"


def convert_param(key: str, value, default):
    """Convert a hyperparameter given as text (from the command line) to its default's type."""
    if isinstance(default, bool):
        try:
            return parse_bool(value)
        except ValueError:
            raise CpdmError(f"{key} must be true or false, got {value!r}") from None
    try:
        if isinstance(default, int):
            converted = float(value)
            if not converted.is_integer():
                raise ValueError
            return int(converted)
        if isinstance(default, float):
            converted = float(value)
            if not math.isfinite(converted):
                raise ValueError
            return converted
    except (TypeError, ValueError):
        kind = "an integer" if isinstance(default, int) else "a finite number"
        raise CpdmError(f"{key} must be {kind}, got {value!r}") from None
    return str(value)


@dataclass(frozen=True, eq=False)
class Entry:
    """One method of the table: what users read about it, how to check its hyperparameters, where its code is.

    ``module`` and ``implementation`` name the file (``cpdm.unlearning.<module>``)
    and the :class:`~cpdm.unlearning.base.Method` class in it. ``presets``
    (SLD) are named sets of values that the ``preset`` hyperparameter picks;
    values given by name override them. ``inference_time`` methods change no
    weights; ``iterative`` ones run an optimisation loop.
    """

    name: str
    summary: str
    module: str
    implementation: str
    hyperparameters: tuple[Hyperparameter, ...]
    needs_images: bool = False
    inference_time: bool = False
    iterative: bool = False
    presets: dict[str, dict] = field(default_factory=dict)

    @property
    def defaults(self) -> dict:
        """Each hyperparameter's default, in the table's order."""
        return {hp.name: hp.default for hp in self.hyperparameters}

    @property
    def help(self) -> dict:
        """Each hyperparameter's one line of help."""
        return {hp.name: hp.help for hp in self.hyperparameters}

    def hyperparameter(self, name: str) -> Hyperparameter:
        """The hyperparameter called ``name``; an unknown name is refused with the known ones."""
        found = next((hp for hp in self.hyperparameters if hp.name == name), None)
        if found is None:
            known = ", ".join(sorted(self.defaults)) or "none"
            raise CpdmError(f"{self.name} has no hyperparameter {name!r} (known: {known})")
        return found

    def resolve_params(self, given: dict | None) -> dict:
        """The defaults (or the chosen preset's values) overlaid with ``given``, converted and checked."""
        given = dict(given or {})
        resolved = self.defaults
        if self.presets:
            resolved.update(self._preset_values(given.pop("preset", resolved["preset"])))
        for key, value in given.items():
            resolved[key] = self.hyperparameter(key).convert(value)
        for hp in self.hyperparameters:
            hp.check(resolved[hp.name])
        return resolved

    def _preset_values(self, preset) -> dict:
        """The named preset's values, with its name (case-insensitive) as the ``preset`` hyperparameter."""
        name = str(preset).upper()
        if name not in self.presets:
            raise CpdmError(f"unknown {self.name} preset {name!r} (one of {', '.join(self.presets)})")
        return {"preset": name, **self.presets[name]}


# --- the table --------------------------------------------------------------------------------------
# Defaults follow one author release per method; each method's docstring names it.

_ESD = (
    Hyperparameter("iterations", 1000, "optimisation steps (one concept and one sampled x_t each)", at_least=1),
    Hyperparameter("lr", 1e-5, "Adam learning rate", above=0),
    Hyperparameter("negative_guidance", 1.0, "η: how far the target is pushed away from the concept"),
    Hyperparameter("ddim_steps", 50, "DDIM steps of the frozen model's sampler that makes x_t", at_least=1),
    Hyperparameter("start_guidance", 3.0, "classifier-free guidance of that sampler, on the concept"),
)
ESD_U_PARAMETER_SETS = ("original", "esd-u-2025")  # the original release's esd-u, and the newer esd_sd.py's
CONCEPT_TYPES = ("style", "object")
CAPTION_WRITERS = ("template", "openai")  # the caption writers of cpdm.curation.refine
# UCE's two author releases (rohitgandikota/unified-concept-editing): the paper's, and the current scripts.
UCE_RELEASES = ("2023", "2024")
UCE_DEFAULT_RELEASE = "2023"

# SLD's presets, as diffusers ships the paper's (SafetyConfig); MEDIUM is the default.
SLD_PRESETS = {
    "WEAK": {"warmup_steps": 15, "guidance_scale": 20.0, "threshold": 0.0, "momentum_scale": 0.0, "mom_beta": 0.0},
    "MEDIUM": {"warmup_steps": 10, "guidance_scale": 1000.0, "threshold": 0.01, "momentum_scale": 0.3,
               "mom_beta": 0.4},
    "STRONG": {"warmup_steps": 7, "guidance_scale": 2000.0, "threshold": 0.025, "momentum_scale": 0.5,
               "mom_beta": 0.7},
    "MAX": {"warmup_steps": 0, "guidance_scale": 5000.0, "threshold": 1.0, "momentum_scale": 0.5, "mom_beta": 0.7},
}
SLD_DEFAULT_PRESET = "MEDIUM"
_SLD_DEFAULTS = SLD_PRESETS[SLD_DEFAULT_PRESET]

REGISTRY: tuple[Entry, ...] = (
    Entry("esd-x", "ESD on cross-attention (attn2): specific erasure, for styles", "esd", "ESDX", _ESD,
          iterative=True),
    Entry("esd-u", "ESD on all but cross-attention: general erasure, for objects and nudity", "esd", "ESDU", _ESD + (
        Hyperparameter("parameters", "original", "which layers train: original (train-esd.py: all but attn2, the "
                       "time embedding and the output head, norms included) or esd-u-2025 (esd_sd.py: every Linear "
                       "and Conv2d outside attn2, time embedding and conv_out included, no norms)",
                       choices=ESD_U_PARAMETER_SETS),
    ), iterative=True),
    Entry("uce", "Unified Concept Editing: closed-form edit of cross-attention K/V", "uce", "UCE", (
        Hyperparameter("release", UCE_DEFAULT_RELEASE,
                       "which author release to follow: 2023 (the paper's train_erase.py: token spans, the empty "
                       "prompt always preserved) or 2024 (uce_sd_erase.py: last tokens only)",
                       choices=UCE_RELEASES),
        Hyperparameter("lamb", 0.5, "λ: weight of staying close to the original projections", above=0),
        Hyperparameter("erase_scale", 1.0, "s_e: weight of mapping the concepts onto their guide", at_least=0),
        Hyperparameter("preserve_scale", AUTO, "s_p: weight of keeping the preserved concepts' projections; "
                       "auto: max(0.1, 1/N) for N preserved prompts (release 2023), 1 (release 2024)",
                       at_least=0, or_auto=True),
        Hyperparameter("concept_type", "style", "style (guide \"art\") or object (guide \"\")",
                       choices=CONCEPT_TYPES),
        Hyperparameter("guide", AUTO, "the text each concept is mapped onto; auto: from concept_type"),
        Hyperparameter("preserve_artists", True, "a style erasure also preserves the study's other artists "
                       "(the anchors' artist names)"),
    )),
    Entry("ablation", "Concept Ablation (model-based): target captions predict like anchor captions", "ablation",
          "ConceptAblation", (
              Hyperparameter("iterations", 100, "optimisation steps", at_least=1),
              Hyperparameter("lr", 2e-6, "AdamW learning rate (multiplied by the batch size when scale_lr)", above=0),
              Hyperparameter("scale_lr", True, "scale lr by the batch size (twice that with regularization), as the "
                             "authors do"),
              Hyperparameter("weight_decay", 1e-2, "AdamW weight decay"),
              Hyperparameter("max_grad_norm", 1.0, "gradient clipping norm"),
              Hyperparameter("batch_size", 8, "anchor images per step", at_least=1),
              Hyperparameter("anchor", "painting", "the concept the target's captions should behave like"),
              Hyperparameter("concept_type", "style",
                             "style (the target's name added to anchor captions) or object (it replaces the "
                             "anchor's name)", choices=CONCEPT_TYPES),
              Hyperparameter("captions", "template", "who writes the anchor captions: template (offline) or openai "
                             "(an OpenAI-compatible endpoint or local server, set up as for `cpdm prompts refine`)",
                             choices=CAPTION_WRITERS),
              Hyperparameter("caption_model", "", "the model the openai caption writer asks (empty: CPDM_LLM_MODEL)"),
              Hyperparameter("caption_count", 200, "anchor captions written", at_least=1),
              Hyperparameter("n_images", 1000, "anchor images the base model generates when --images is not given "
                             "(cached per base model and captions)", at_least=1),
              Hyperparameter("anchor_steps", 25, "DPM-Solver++ steps of those generations", at_least=1),
              Hyperparameter("anchor_guidance", 6.0, "classifier-free guidance of those generations"),
              Hyperparameter("hflip", True, "mirror each training image left-right with probability 0.5"),
              Hyperparameter("regularization", False, "also fit anchor images to their own captions with the plain "
                             "diffusion loss (the authors' --with_prior_preservation)"),
              Hyperparameter("prior_loss_weight", 1.0, "weight of that regularization term", at_least=0),
          ), iterative=True),
    Entry("gradient-ascent", "Gradient ascent on the concept's images, with a retain term (a baseline the CPDM paper "
          "names; cpdm's design)",
          "gradient_ascent", "GradientAscent", (
              Hyperparameter("iterations", 200, "most optimisation steps (the run may stop earlier on divergence)",
                             at_least=1),
              Hyperparameter("lr", 1e-5, "Adam learning rate", above=0),
              Hyperparameter("alpha", 0.1, "α: weight of the retain loss"),
              Hyperparameter("batch_size", 8, "images per step from each set", at_least=1),
              Hyperparameter("divergence", 10.0, "stop when the forget loss exceeds this multiple of its first value",
                             above=1),
              Hyperparameter("retain_images", 8, "retain images the base model generates", at_least=1),
              Hyperparameter("retain_steps", 50, "DDIM steps of those generations", at_least=1),
          ), needs_images=True, iterative=True),
    Entry("pruning", "Zero concept-specific feed-forward weights (a baseline the CPDM paper names; cpdm's design)",
          "pruning", "Pruning", (
        Hyperparameter("channel_fraction", 0.1, "share of each feed-forward layer's channels chosen as "
                       "concept-specific", above=0, at_most=1),
        Hyperparameter("weight_fraction", 0.5, "share of weights zeroed inside the chosen channels (largest "
                       "gradients first)", above=0, at_most=1),
        Hyperparameter("timesteps", 5, "timesteps at which activations and gradients are measured", at_least=1),
        Hyperparameter("concept_images", 8, "concept images the base model generates when --images is not given",
                       at_least=1),
        Hyperparameter("concept_steps", 50, "DDIM steps of those generations", at_least=1),
    )),
    Entry("sld", "Safe Latent Diffusion: guidance away from the concept at inference (presets WEAK..MAX)", "sld",
          "SLD", (
              Hyperparameter("preset", SLD_DEFAULT_PRESET,
                             f"the paper's settings: {', '.join(SLD_PRESETS)} (values given by name override it)",
                             choices=tuple(SLD_PRESETS)),
              Hyperparameter("warmup_steps", _SLD_DEFAULTS["warmup_steps"],
                             "δ: sampling steps before safety guidance starts", at_least=0),
              Hyperparameter("guidance_scale", _SLD_DEFAULTS["guidance_scale"],
                             "s_S: scale of the guidance away from the concept"),
              Hyperparameter("threshold", _SLD_DEFAULTS["threshold"],
                             "λ_thr: where in the latent the guidance applies"),
              Hyperparameter("momentum_scale", _SLD_DEFAULTS["momentum_scale"],
                             "s_m: scale of the guidance's momentum"),
              Hyperparameter("mom_beta", _SLD_DEFAULTS["mom_beta"],
                             "β_m: how much momentum carries over between steps", at_least=0, at_most=1),
          ), inference_time=True, presets=SLD_PRESETS),
)


def names() -> tuple[str, ...]:
    """The methods' names, in the table's order."""
    return tuple(entry.name for entry in REGISTRY)


def lookup(name: str) -> Entry:
    """The table's entry for a method (case-insensitive); an unknown name is refused with the known ones."""
    entry = next((entry for entry in REGISTRY if entry.name == str(name).lower()), None)
    if entry is None:
        raise CpdmError(f"unknown unlearning method {name!r} (known: {', '.join(names())})")
    return entry


def get_method(name: str):
    """The implementation of the method called ``name`` (imports its module, and torch with it)."""
    entry = lookup(name)
    module = importlib.import_module(f"cpdm.unlearning.{entry.module}")
    return getattr(module, entry.implementation)()


def image_files(folder) -> tuple[Path, ...]:
    """The image files in ``folder`` (sorted) that a method trains on; a missing folder is refused."""
    if folder is None:
        return ()
    folder = Path(folder)
    if not folder.is_dir():
        raise CpdmError(f"{folder}: no such folder of images")
    return tuple(sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES))


def read_preserve_file(path) -> tuple[str, ...]:
    """The concepts listed in a preserve file: one a line, spaces around them stripped, blank lines skipped.

    A missing or unreadable file, one that is not UTF-8 text, and one that
    lists nothing are refused, naming the file.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise CpdmError(f"{path}: no such preserve file") from None
    except UnicodeDecodeError:
        raise CpdmError(f"{path}: not UTF-8 text; a preserve file lists one concept a line") from None
    except OSError as exc:
        raise CpdmError(f"{path}: cannot read the preserve file ({exc.strerror or exc})") from None
    concepts = tuple(line.strip() for line in text.splitlines() if line.strip())
    if not concepts:
        raise CpdmError(f"{path}: the preserve file lists no concepts (one a line)")
    return concepts
