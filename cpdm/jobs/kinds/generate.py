"""The generate kind: ``cpdm generate`` as a job (images for prompts with a variant, and their pairs)."""

from __future__ import annotations

from cpdm.diffusion.settings import (
    BASELINE_VARIANT,
    DEFAULT_SCHEDULER,
    DTYPES,
    PAPER_GUIDANCE,
    PAPER_PER_PROMPT,
    PAPER_SD_MODEL,
    PAPER_SEED,
    PAPER_STEPS,
    SCHEDULERS,
    SEED_MODES,
    GenerationSettings,
)
from cpdm.jobs.kinds import log_notes
from cpdm.jobs.parameters import OFFLINE_TINY, Parameter
from cpdm.jobs.registry import parameterised_kind
from cpdm.rating.protocol import default_protocol_path, load_protocol_file


def _generate_parameters() -> list[Parameter]:
    return [
        Parameter("variant", "str", BASELINE_VARIANT, "variant to generate with ('original' is created when missing)"),
        Parameter("base_model", "str", None, f"base model of a newly created 'original' (default {PAPER_SD_MODEL})"),
        Parameter("prompt_ids", "ids", None, "prompt ids (default: each anchor's latest prompts)"),
        Parameter("per_prompt", "int", PAPER_PER_PROMPT, "images per prompt; image k uses seed + k", minimum=1),
        Parameter("steps", "int", PAPER_STEPS, "sampling steps", minimum=1),
        Parameter("guidance", "float", PAPER_GUIDANCE, "classifier-free guidance scale", minimum=0),
        Parameter("seed", "int", PAPER_SEED, "seed of each prompt's first image", minimum=0),
        Parameter("seed_mode", "str", SEED_MODES[0],
                  "per-image: image k from seed + k; release: one generator per prompt, as the CPDM release",
                  choices=SEED_MODES),
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
    return GenerationSettings(per_prompt=params["per_prompt"], steps=params["steps"], guidance=params["guidance"],
                              seed=params["seed"], scheduler=params["scheduler"], negative=params["negative"],
                              height=params["height"], width=params["width"], seed_mode=params["seed_mode"])


def _check_rate(protocol_file: str | None) -> float:
    """The share of attention-check pairs the protocol asks for (the default protocol's without a file)."""
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
    log_notes(context, report.notes)
    context.log(report.summary())
    return {"variant": params["variant"], "generated": len(report.generated), "skipped": report.skipped,
            "pairs": report.pairs, "check_pairs": report.check_pairs}


KIND = parameterised_kind(
    "generate", "generate images for prompts with a variant, and pair them",
    _generate_parameters, _run_generate, wants_gpu=True, extra_check=_check_generate,
)
