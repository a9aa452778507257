"""The library's job kinds: each runs the function its CLI command runs, reporting through the job's context.

Kinds: generate, unlearn, score, interrogate, refine, analyze, report (the
unlearning report). Each one declares its parameters (:class:`Parameter`:
name, type, default, help) with the defaults its command uses, read from
the same constants. ``check_params`` turns what a user gave into complete,
converted parameters, or refuses them with a clear error before anything is
queued. ``run(ws, params, context)`` calls the library function on the
worker's device and returns a small JSON-able result.

Importing this module loads no torch, and neither do the checks and the
forms: an unlearn job's method is checked against the unlearning methods'
table (:data:`cpdm.unlearning.REGISTRY`), not their code.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from cpdm.errors import CpdmError
from cpdm.progress import running
from cpdm.jobs.jobkind import JobKind
from cpdm.values import parse_bool

# Parameter types: what a value is converted to.
TYPES = ("str", "int", "float", "bool", "ids", "strings", "mapping", "path")
HYPERPARAMETERS = "hyperparameters"  # the unlearn parameter holding the method's hyperparameters


@dataclass(frozen=True)
class Parameter:
    """One parameter of a kind, as a form shows it: name, type, default and help.

    ``type`` is one of :data:`TYPES` (``ids``: a list of integer ids,
    ``strings``: a list of texts, ``path``: a file or folder, stored
    absolute). ``section`` names the dict parameter the value belongs in
    (``hyperparameters`` for an unlearning method's own parameters).
    """

    name: str
    type: str
    default: Any = None
    help: str = ""
    choices: tuple = ()
    required: bool = False
    minimum: float | None = None
    maximum: float | None = None
    section: str = ""


# --- converting and checking values ---------------------------------------------------------------

def _as_number(value, integer: bool):
    """An int or a finite float from a number or its text; ValueError otherwise (never from a bool)."""
    if isinstance(value, bool):
        raise ValueError
    if integer and isinstance(value, int):
        return value  # exactly, however large (a float keeps only 53 bits: seeds are 63)
    if integer and isinstance(value, str) and value.strip().lstrip("+-").isdigit():
        return int(value)
    number = float(value)
    if not math.isfinite(number):
        raise ValueError
    if integer:
        if not number.is_integer():
            raise ValueError
        return int(number)
    return number


def _as_list(value) -> list:
    """A list from a list or tuple, from text separated by commas, or from one number (a list of one)."""
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    if isinstance(value, (list, tuple)):
        return list(value)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return [value]  # `cpdm jobs add ... -p prompt_ids=1` reads the 1 as JSON: one id
    raise ValueError


_DESCRIBED = {"int": "an integer", "float": "a finite number", "bool": "true or false",
              "ids": "a list of integer ids", "strings": "a list of texts", "mapping": "a mapping of names to values",
              "str": "a text", "path": "a path"}


def _convert_value(parameter: Parameter, value):
    """``value`` as the parameter's type; ValueError when it is not one."""
    kind = parameter.type
    if kind in ("int", "float"):
        return _as_number(value, integer=kind == "int")
    if kind == "bool":
        return parse_bool(value)
    if kind == "ids":
        return [_as_number(item, integer=True) for item in _as_list(value)]
    if kind == "strings":
        return [str(item) for item in _as_list(value)]
    if kind == "mapping":
        if not isinstance(value, dict):
            raise ValueError
        return dict(value)
    if kind == "path":
        return str(Path(str(value)).expanduser().resolve())
    if not isinstance(value, (str, int, float)) or isinstance(value, bool):
        raise ValueError
    return str(value)


def _fresh(default):
    """A default as a new object: a job never shares a default's list or dict."""
    return type(default)(default) if isinstance(default, (list, dict)) else default


def convert(parameter: Parameter, value, kind_name: str):
    """The checked value of one parameter (None stays None for an optional one)."""
    label = f"{kind_name} job: {parameter.name}"
    if value is None or isinstance(value, str) and not value.strip():  # an empty form field: not given
        if parameter.required:
            raise CpdmError(f"{label} is required ({parameter.help})")
        return _fresh(parameter.default)
    try:
        converted = _convert_value(parameter, value)
    except (TypeError, ValueError):
        raise CpdmError(f"{label} must be {_DESCRIBED[parameter.type]}, got {value!r}") from None
    if parameter.required and converted in ("", []):
        raise CpdmError(f"{label} is required ({parameter.help})")
    if parameter.choices and converted not in parameter.choices:
        raise CpdmError(f"{label} must be one of {', '.join(map(str, parameter.choices))}, got {value!r}")
    items = converted if isinstance(converted, list) else [converted]
    for item in items:
        if isinstance(item, (int, float)) and not isinstance(item, bool):
            if parameter.minimum is not None and item < parameter.minimum:
                raise CpdmError(f"{label} must be at least {parameter.minimum:g}, got {item!r}")
            if parameter.maximum is not None and item > parameter.maximum:
                raise CpdmError(f"{label} must be at most {parameter.maximum:g}, got {item!r}")
    return converted


def check_against(kind_name: str, parameters: list[Parameter], given: dict | None) -> dict:
    """Complete parameters: unknown names refused, each value converted, defaults filled in."""
    if given is not None and not isinstance(given, dict):
        raise CpdmError(f"{kind_name} job: parameters must be a mapping, got {type(given).__name__}")
    given = dict(given or {})
    known = {parameter.name for parameter in parameters if not parameter.section}
    unknown = sorted(set(given) - known)
    if unknown:
        raise CpdmError(f"{kind_name} job has no parameter {', '.join(map(repr, unknown))} "
                        f"(known: {', '.join(sorted(known))})")
    checked = {}
    for parameter in parameters:
        if parameter.section:
            continue
        checked[parameter.name] = convert(parameter, given.get(parameter.name), kind_name)
    return checked


# --- what every kind shares --------------------------------------------------------------------------

OFFLINE_TINY = Parameter("offline_tiny", "bool", False,
                         "use tiny random-initialised models instead of real weights (tests, demos)")


def _job_body(run: Callable) -> Callable:
    """Run a kind's body as the current job (so progress bars report to it), then mark it complete."""

    @functools.wraps(run)
    def wrapper(ws, params: dict, context) -> dict:
        with running(context):
            result = run(ws, params, context)
        context.progress(1.0, "done")
        return result

    return wrapper


def _log_notes(context, notes) -> None:
    for note in notes:
        context.log(f"note: {note}")


def _json_number(value):
    """A float for JSON: NaN and infinities become None."""
    value = float(value)
    return value if math.isfinite(value) else None


@dataclass(frozen=True)
class _Spec:
    """A kind as this module defines it: its parameters, extra checks and body."""

    name: str
    summary: str
    parameters: Callable[[], list[Parameter]]
    run: Callable
    wants_gpu: bool = False
    extra_check: Callable[[dict], None] | None = None


# Each kind's parameters, for its checker and its form.
_PARAMETERS: dict[str, Callable[[], list[Parameter]]] = {}
# The kinds :mod:`cpdm.jobs.registry` loads.
BUILTIN_KINDS: list[JobKind] = []


def _register(spec: _Spec) -> None:
    """Add the kind to :data:`BUILTIN_KINDS` with a checker built from its parameters."""
    _PARAMETERS[spec.name] = spec.parameters

    def check_params(params: dict | None) -> dict:
        checked = check_against(spec.name, spec.parameters(), params)
        if spec.extra_check is not None:
            prefix = f"{spec.name} job: "
            try:
                spec.extra_check(checked)
            except CpdmError as exc:
                message = str(exc)
                raise CpdmError(message if message.startswith(prefix) else prefix + message) from exc
        return checked

    BUILTIN_KINDS.append(JobKind(spec.name, spec.summary, _job_body(spec.run), check_params, spec.wants_gpu))


def kind_parameters(kind_name: str, method: str | None = None) -> list[Parameter]:
    """The parameters a form for ``kind_name`` shows, with defaults and help.

    For ``unlearn`` with a ``method``, the method's hyperparameters follow,
    each in the ``hyperparameters`` section with the method's default and help.
    """
    if kind_name not in _PARAMETERS:
        raise CpdmError(f"no form for job kind {kind_name!r} (kinds with forms: {', '.join(sorted(_PARAMETERS))})")
    parameters = _PARAMETERS[kind_name]()
    if method is not None:
        if kind_name != "unlearn":
            raise CpdmError(f"only unlearn jobs take a method, not {kind_name} jobs")
        parameters += method_parameters(method)
    return parameters


def method_parameters(method_name: str) -> list[Parameter]:
    """An unlearning method's hyperparameters as parameters, with the type, default and help of the methods' table."""
    from cpdm.unlearning import lookup

    return [Parameter(hp.name, hp.type, hp.default, hp.help, section=HYPERPARAMETERS)
            for hp in lookup(method_name).hyperparameters]


# --- generate ----------------------------------------------------------------------------------------

def _generate_parameters() -> list[Parameter]:
    from cpdm.diffusion.settings import (
        BASELINE_VARIANT, DEFAULT_SCHEDULER, DTYPES, PAPER_GUIDANCE, PAPER_PER_PROMPT, PAPER_SD_MODEL, PAPER_SEED,
        PAPER_STEPS, SCHEDULERS,
    )

    return [
        Parameter("variant", "str", BASELINE_VARIANT, "variant to generate with ('original' is created when missing)"),
        Parameter("base_model", "str", None, f"base model of a newly created 'original' (default {PAPER_SD_MODEL})"),
        Parameter("prompt_ids", "ids", None, "prompt ids (default: each anchor's latest prompts)"),
        Parameter("per_prompt", "int", PAPER_PER_PROMPT, "images per prompt; image k uses seed + k", minimum=1),
        Parameter("steps", "int", PAPER_STEPS, "sampling steps", minimum=1),
        Parameter("guidance", "float", PAPER_GUIDANCE, "classifier-free guidance scale", minimum=0),
        Parameter("seed", "int", PAPER_SEED, "seed of each prompt's first image", minimum=0),
        Parameter("scheduler", "str", DEFAULT_SCHEDULER, "sampler", choices=tuple(SCHEDULERS)),
        Parameter("negative", "str", None, "negative prompt"),
        Parameter("height", "int", None, "image height, a multiple of 8 (default: the model's)"),
        Parameter("width", "int", None, "image width, a multiple of 8 (default: the model's)"),
        Parameter("batch_size", "int", None, "images per batch (default: 4 on the CPU, a prompt's images on CUDA)",
                  minimum=1),
        Parameter("dtype", "str", None, "weights' precision (default: float16 on CUDA, float32 on the CPU)",
                  choices=DTYPES),
        Parameter("protocol_file", "path", None,
                  "protocol whose attention_checks.rate sets the share of check pairs (default: the default protocol)"),
        OFFLINE_TINY,
    ]


def _generation_settings(params: dict):
    from cpdm.diffusion.settings import GenerationSettings

    return GenerationSettings(per_prompt=params["per_prompt"], steps=params["steps"], guidance=params["guidance"],
                              seed=params["seed"], scheduler=params["scheduler"], negative=params["negative"],
                              height=params["height"], width=params["width"])


def _check_rate(protocol_file: str | None) -> float:
    """The share of attention-check pairs the protocol asks for (the default protocol's without a file)."""
    from cpdm.rating.protocol import default_protocol_path, load_protocol_file

    _, protocol = load_protocol_file(protocol_file or default_protocol_path())
    return protocol.attention_checks.rate


def _check_generate(params: dict) -> None:
    _generation_settings(params).check()
    _check_rate(params["protocol_file"])


def _run_generate(ws, params: dict, context) -> dict:
    """``cpdm generate``: make the missing images of the prompts with a variant and pair them."""
    from cpdm.generation.batch import run_generation

    report = run_generation(
        ws, variant=params["variant"], prompt_ids=params["prompt_ids"], settings=_generation_settings(params),
        device=context.device, dtype=params["dtype"], batch_size=params["batch_size"],
        offline_tiny=params["offline_tiny"], base_model=params["base_model"],
        check_rate=_check_rate(params["protocol_file"]), executor=context.executor,
    )
    _log_notes(context, report.notes)
    context.log(report.summary())
    return {"variant": params["variant"], "generated": len(report.generated), "skipped": report.skipped,
            "pairs": report.pairs, "check_pairs": report.check_pairs}


# --- unlearn -----------------------------------------------------------------------------------------

def _unlearn_parameters() -> list[Parameter]:
    from cpdm.diffusion.settings import DEFAULT_SD_MODEL
    from cpdm.unlearning import (
        DEFAULT_CHECKPOINT_EVERY,
        DEFAULT_SEED,
        DEFAULT_TRAINING_PRECISION,
        TRAINING_PRECISIONS,
        names,
    )

    return [
        Parameter("method", "str", None, "unlearning method", choices=names(), required=True),
        Parameter("variant_name", "str", None, "name of the new variant", required=True),
        Parameter("base", "str", DEFAULT_SD_MODEL, "base model: a local diffusers folder or a cached Hugging Face id"),
        Parameter("concepts", "strings", None, "concepts to erase", required=True),
        Parameter("preserve", "strings", [], "concepts to keep as they are"),
        Parameter("preserve_file", "path", None, "a file of concepts to keep, one a line (a long list such as the "
                  "1,733 artists UCE's 2023 release preserves)"),
        Parameter("images_dir", "path", None, "folder of images of the concept (methods that train on images)"),
        Parameter(HYPERPARAMETERS, "mapping", {}, "the method's hyperparameters (the method's defaults for the rest)"),
        Parameter("seed", "int", DEFAULT_SEED, "seed of the run"),
        Parameter("precision", "str", DEFAULT_TRAINING_PRECISION,
                  "compute precision of training passes (weights stay float32)",
                  choices=TRAINING_PRECISIONS),
        Parameter("checkpoint_every", "int", DEFAULT_CHECKPOINT_EVERY, "save a resumable checkpoint every N steps",
                  minimum=1),
        OFFLINE_TINY,
    ]


def _check_unlearn(params: dict) -> None:
    """Resolve the method's hyperparameters now (defaults filled in, bad values refused) and check its inputs.

    Only the methods' table is read: queueing a job loads no method's code (nor torch).
    """
    from cpdm.unlearning import image_files, lookup, read_preserve_file

    method = lookup(params["method"])
    if not params["variant_name"].strip():
        raise CpdmError("unlearn job: variant_name is required (name of the new variant)")
    params[HYPERPARAMETERS] = method.resolve_params(params[HYPERPARAMETERS])
    if params["preserve_file"]:
        read_preserve_file(params["preserve_file"])  # refused now rather than on the worker
    if method.needs_images and not image_files(params["images_dir"]):
        raise CpdmError(f"unlearn job: {method.name} needs images of the concept: set images_dir to a folder of images")


def _earlier_attempt(ws, variant_name: str, job_id: int | None):
    """The variant an earlier attempt of this job registered, or None."""
    from cpdm.store.rows import get_variant

    if job_id is None:
        return None
    try:
        variant = get_variant(ws, variant_name)
    except CpdmError:
        return None
    return variant if variant.job == job_id else None


def _unlearn_result(variant, resumed: bool) -> dict:
    return {"variant": variant.name, "variant_id": variant.id, "method": variant.method, "status": variant.status,
            "artifact_path": variant.artifact_path, "resumed": resumed}


def _run_unlearn(ws, params: dict, context) -> dict:
    """``cpdm unlearn``: erase the concepts and register the variant.

    A job run again after an attempt that stopped (killed, cancelled,
    failed) resumes the variant from its last checkpoint; after an attempt
    that made the variant but could not record it, it returns that variant.
    """
    from cpdm.unlearning.runner import unlearn

    earlier = _earlier_attempt(ws, params["variant_name"], context.job_id)
    if earlier is not None and earlier.status == "ready":
        context.log(f"variant {earlier.name} was made by an earlier attempt of this job")
        return _unlearn_result(earlier, resumed=False)
    resume = earlier is not None and earlier.status in ("training", "failed")
    if resume:
        context.log(f"resuming variant {params['variant_name']} from its last checkpoint")
    variant = unlearn(
        ws, params["method"], params["variant_name"], base=params["base"], concepts=params["concepts"],
        preserve=params["preserve"], preserve_file=params["preserve_file"], images_dir=params["images_dir"],
        params=params[HYPERPARAMETERS],
        seed=params["seed"], device=context.device, precision=params["precision"],
        offline_tiny=params["offline_tiny"], resume=resume, checkpoint_every=params["checkpoint_every"],
        job=context.job_id, warn=lambda note: _log_notes(context, [note]),
    )
    context.log(f"variant {variant.name} ({variant.method}) {variant.status}")
    return _unlearn_result(variant, resume)


# --- score -------------------------------------------------------------------------------------------

def _score_parameters() -> list[Parameter]:
    from cpdm.backbones import DEFAULT_SEMANTIC, DEFAULT_STYLE
    from cpdm.scoring import DEFAULT_BATCH_SIZE, DEFAULT_SCORING_PRECISION, SCORING_PRECISIONS

    return [
        Parameter("variant", "str", None, "score the pairs of this variant's generations"),
        Parameter("campaign", "str", None, "score the pairs of this campaign"),
        Parameter("pair_ids", "ids", None, "score these pairs"),
        # The defaults are the CPDM release's metric (its cpdm_metric.py); see cpdm.backbones.
        Parameter("semantic", "str", DEFAULT_SEMANTIC, "semantic backbone (default: the CPDM release's CLIP)"),
        Parameter("style", "str", DEFAULT_STYLE, "style backbone (default: the CPDM release's InceptionV3; or vgg19)"),
        Parameter("batch_size", "int", DEFAULT_BATCH_SIZE, "images per batch", minimum=1),
        Parameter("precision", "str", DEFAULT_SCORING_PRECISION,
                  "auto: fp16 on CUDA where scores stay within 1e-3 of fp32; reduced: also bf16 on CPUs; fp32: always",
                  choices=SCORING_PRECISIONS),
        OFFLINE_TINY,
    ]


def _check_score(params: dict) -> None:
    from cpdm.backbones import lookup

    scopes = [name for name in ("variant", "campaign", "pair_ids") if params[name]]
    if len(scopes) > 1:
        raise CpdmError(f"score job: give one of variant, campaign or pair_ids, not {' and '.join(scopes)}")
    lookup(params["semantic"], "semantic")
    lookup(params["style"], "style")


def _score_scope(ws, params: dict) -> tuple[list[int] | None, int | None]:
    """(pair ids, campaign id) to score; both None means every pair."""
    from cpdm.store.rows import variant_pair_ids

    if params["variant"]:
        pair_ids = variant_pair_ids(ws, params["variant"])
        if not pair_ids:
            raise CpdmError(f"variant {params['variant']!r} has no pairs yet (generate with it first)")
        return pair_ids, None
    if params["campaign"]:
        from cpdm.rating.campaigns import campaign_id_by_name

        return None, campaign_id_by_name(ws, params["campaign"])
    return params["pair_ids"], None


def _run_score(ws, params: dict, context) -> dict:
    """``cpdm score``: score every pair in scope that has no score yet for these backbones."""
    from cpdm.scoring.engine import score_pairs

    pair_ids, campaign_id = _score_scope(ws, params)
    report = score_pairs(ws, pair_ids, campaign_id, semantic=params["semantic"], style=params["style"],
                         device=context.device, batch_size=params["batch_size"], offline_tiny=params["offline_tiny"],
                         precision=params["precision"], executor=context.executor)
    context.log(report.summary())
    _log_notes(context, report.notes)
    return {"semantic": report.semantic, "style": report.style, "pairs_scored": report.pairs_scored,
            "pairs_already_scored": report.pairs_already_scored, "scores_written": report.scores_written,
            "reference_distances_added": report.reference_distances_added}


# --- interrogate and refine --------------------------------------------------------------------------

def _interrogate_parameters() -> list[Parameter]:
    from cpdm.backbones import DEFAULT_SEMANTIC
    from cpdm.curation.interrogate import TOP_FLAVORS

    return [
        Parameter("anchor_ids", "ids", None, "anchors to interrogate (default: all)"),
        Parameter("model", "str", DEFAULT_SEMANTIC, "open_clip MODEL/TAG ranking the terms"),
        Parameter("caption_model", "str", None, "BLIP caption weights (default: the large BLIP when cached)"),
        Parameter("banks_dir", "path", None, "folder with the term banks (default: clip-interrogator's)"),
        Parameter("top_flavors", "int", TOP_FLAVORS, "flavour terms in each prompt", minimum=0),
        OFFLINE_TINY,
    ]


def _run_interrogate(ws, params: dict, context) -> dict:
    """``cpdm prompts interrogate``: a first prompt for each anchor from CLIP-ranked term banks."""
    from cpdm.curation.interrogate import interrogate_anchors

    report = interrogate_anchors(ws, params["anchor_ids"], model=params["model"], offline_tiny=params["offline_tiny"],
                                 device=context.device, caption_model=params["caption_model"],
                                 banks_dir=params["banks_dir"], top_flavors=params["top_flavors"])
    _log_notes(context, report.notes)
    context.log(report.summary())
    return {"added": len(report.added), "skipped": len(report.skipped), "prompt_ids": report.added}


def _refine_parameters() -> list[Parameter]:
    from cpdm.curation.refine import DEFAULT_MAX_RETRIES, DEFAULT_TIMEOUT_S, REFINERS

    return [
        Parameter("refiner", "str", REFINERS[0], "template: offline; openai: an endpoint from the environment",
                  choices=REFINERS),
        Parameter("model", "str", None, "LLM model name (openai refiner)"),
        Parameter("prompt_ids", "ids", None, "prompts to refine (default: every interrogator and manual prompt)"),
        Parameter("timeout_s", "float", DEFAULT_TIMEOUT_S, "seconds to wait for each answer (openai)", minimum=0.1),
        Parameter("retries", "int", DEFAULT_MAX_RETRIES, "retries after a timeout, 429 or 5xx (openai)", minimum=0),
    ]


def _make_refiner(ws, params: dict):
    from cpdm.curation.refine import make_refiner

    extra = {"timeout_s": params["timeout_s"], "max_retries": params["retries"]} if params["refiner"] == "openai" else {}
    return make_refiner(params["refiner"], ws, model=params["model"], **extra)


def _check_refine(params: dict) -> None:
    if params["refiner"] == "template":
        _make_refiner(None, params)  # refuses a model for the template refiner


def _run_refine(ws, params: dict, context) -> dict:
    """``cpdm prompts refine``: rewrite prompts so they elicit close imitation."""
    from cpdm.curation.refine import refine_prompts

    report = refine_prompts(ws, _make_refiner(ws, params), params["prompt_ids"])
    context.log(report.summary())
    return {"added": len(report.added), "skipped": len(report.skipped), "prompt_ids": report.added}


# --- analyze -----------------------------------------------------------------------------------------

def _analyze_parameters() -> list[Parameter]:
    from cpdm.analysis.agreement import LEVELS
    from cpdm.analysis.campaign_report import AnalysisOptions

    defaults = AnalysisOptions()
    return [
        Parameter("campaign", "str", None, "campaign name", required=True),
        Parameter("group", "str", None, "rater group (default: artists, lay and all; calibration on artists)",
                  choices=("artists", "lay", "all")),
        Parameter("target", "str", defaults.target, "protocol question the metric is compared with"),
        Parameter("level", "str", defaults.level, "level of measurement for Krippendorff's alpha", choices=LEVELS),
        Parameter("include_flagged", "bool", defaults.include_flagged, "keep ratings of flagged raters"),
        Parameter("exclude_simulated", "bool", not defaults.include_simulated, "leave out simulated raters"),
        Parameter("zscore", "bool", defaults.zscore, "z-score each rater's ratings before averaging per pair"),
        Parameter("semantic", "str", defaults.semantic, "semantic backbone of the scores, as stored"),
        Parameter("style", "str", defaults.style, "style backbone of the scores, as stored"),
        Parameter("n_boot", "int", defaults.n_boot, "bootstrap resamples for the 95% intervals", minimum=0,
                  maximum=10_000),
        Parameter("resample", "str", defaults.resample, "what the bootstrap resamples", choices=("anchors", "pairs")),
        Parameter("folds", "int", defaults.folds, "cross-validation folds (grouped by anchor)", minimum=2, maximum=50),
        Parameter("step", "float", defaults.step, "step of the w grid over [0, 1]", minimum=0.001, maximum=0.05),
        Parameter("seed", "int", defaults.seed, "seed for resampling and folds"),
        Parameter("out", "path", None, "report folder (default: WORKSPACE/exports/report-CAMPAIGN)"),
    ]


def _run_analyze(ws, params: dict, context) -> dict:
    """``cpdm analyze``: the campaign's report folder (agreement, correlation, calibration)."""
    from cpdm.analysis.campaign_report import AnalysisOptions, default_report_dir, run_analysis, write_report

    group = params["group"]
    options = AnalysisOptions(
        groups=(group,) if group else AnalysisOptions.groups, strict_groups=group is not None,
        calibration_group=group or AnalysisOptions.calibration_group, include_flagged=params["include_flagged"],
        include_simulated=not params["exclude_simulated"], zscore=params["zscore"], semantic=params["semantic"],
        style=params["style"], n_boot=params["n_boot"], folds=params["folds"], step=params["step"],
        seed=params["seed"], resample=params["resample"], level=params["level"], target=params["target"],
    )
    analysis = run_analysis(ws, params["campaign"], options)
    out_dir = Path(params["out"]) if params["out"] else default_report_dir(ws, params["campaign"])
    written = write_report(analysis, out_dir)
    _log_notes(context, analysis.notes)
    result = {"report_dir": str(out_dir), "files": len(written), "calibrated_w": None}
    if analysis.calibration is not None:
        result["calibrated_w"] = _json_number(analysis.calibration.chosen_w)
    return result


# --- report (unlearning) -----------------------------------------------------------------------------

def _report_parameters() -> list[Parameter]:
    from cpdm.diffusion.settings import BASELINE_VARIANT, PAPER_GUIDANCE, PAPER_SEED, PAPER_STEPS

    return [
        Parameter("variant", "str", None, "the unlearned variant", required=True),
        Parameter("vs", "str", BASELINE_VARIANT, "the variant to compare with"),
        Parameter("seeds", "ids", [PAPER_SEED], "generation seeds", minimum=0),
        Parameter("steps", "int", PAPER_STEPS, "sampling steps", minimum=1),
        Parameter("guidance", "float", PAPER_GUIDANCE, "classifier-free guidance scale", minimum=0),
        Parameter("size", "int", None, "image side in pixels, a multiple of 8 (default: the model's)", minimum=8),
        Parameter("max_prompts", "int", None, "at most this many prompts per set", minimum=1),
        Parameter("max_retain_prompts", "int", None, "at most this many prompts in the retain set", minimum=1),
        Parameter("semantic", "str", None, "semantic backbone (default: the scoring default)"),
        Parameter("style", "str", None, "style backbone (default: the scoring default)"),
        Parameter("out", "path", None, "CSV file of the table (default: WORKSPACE/exports/unlearning-NAME-HASH.csv)"),
        OFFLINE_TINY,
    ]


def _check_report(params: dict) -> None:
    if not params["seeds"]:
        raise CpdmError("report job: give at least one seed")
    if params["size"] is not None and params["size"] % 8:
        raise CpdmError(f"report job: size must be a multiple of 8, got {params['size']}")


def report_path(ws, variant: str) -> Path:
    """Where a report job writes a variant's table unless told otherwise (named like the variant's folder)."""
    from cpdm.unlearning.runner import variant_dir

    return ws.exports_dir / f"unlearning-{variant_dir(ws.root, variant).name}.csv"


def _run_report(ws, params: dict, context) -> dict:
    """``cpdm unlearning report``: CM on the target concept and on the retain set, written as CSV."""
    from cpdm.analysis.unlearning import ReportSettings, format_report, unlearning_report
    from cpdm.devices import check_device

    settings = ReportSettings(seeds=tuple(params["seeds"]), steps=params["steps"], guidance=params["guidance"],
                              size=params["size"], max_prompts=params["max_prompts"],
                              max_retain_prompts=params["max_retain_prompts"],
                              device=check_device(context.device), offline_tiny=params["offline_tiny"],
                              semantic=params["semantic"], style=params["style"])
    table = unlearning_report(ws, params["variant"], params["vs"], settings)
    path = Path(params["out"]) if params["out"] else report_path(ws, params["variant"])
    path.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(path, index=False)
    context.log(format_report(table))
    rows = [{key: _json_number(value) if isinstance(value, float) else value for key, value in row.items()}
            for row in table.to_dict(orient="records")]
    return {"variant": params["variant"], "vs": params["vs"], "report_path": str(path), "rows": rows}


# --- the registry ------------------------------------------------------------------------------------

def _noop_parameters() -> list[Parameter]:
    return [Parameter("steps", "int", 1, "steps", minimum=1), Parameter("seconds", "float", 0.0, "seconds in all",
                                                                         minimum=0)]


for _spec in (
    _Spec("generate", "generate images for prompts with a variant, and pair them", _generate_parameters,
          _run_generate, wants_gpu=True, extra_check=_check_generate),
    _Spec("unlearn", "erase concepts from a model and register the variant", _unlearn_parameters, _run_unlearn,
          wants_gpu=True, extra_check=_check_unlearn),
    _Spec("score", "score pairs with the CM metric", _score_parameters, _run_score, wants_gpu=True,
          extra_check=_check_score),
    _Spec("interrogate", "write a first prompt for each anchor (CLIP interrogation)", _interrogate_parameters,
          _run_interrogate, wants_gpu=True),
    _Spec("refine", "rewrite prompts to elicit close imitation", _refine_parameters, _run_refine,
          extra_check=_check_refine),
    _Spec("analyze", "write a campaign's analysis report", _analyze_parameters, _run_analyze),
    _Spec("report", "unlearning report: CM on the concept and the retain set", _report_parameters, _run_report,
          wants_gpu=True, extra_check=_check_report),
):
    _register(_spec)
# The built-in noop kind keeps its own body and checker; its form shows these parameters.
_PARAMETERS["noop"] = _noop_parameters
