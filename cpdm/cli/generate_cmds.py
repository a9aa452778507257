"""``cpdm generate``: images for the prompts with a variant, and the pairs raters judge."""

from __future__ import annotations

import click

from cpdm.cli.options import (
    cpdm_command,
    echo_notes,
    offline_tiny_option,
    open_ws,
    parse_ids,
    quiet_option,
    workspace_option,
)
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
)


@click.command("generate")
@workspace_option
@click.option("--variant", default=BASELINE_VARIANT, show_default=True,
              help="Variant to generate with ('original', the baseline, is created when missing).")
@click.option("--base-model", default=None,
              help="Base model of a newly created 'original' (hub id in the local cache, or a diffusers folder; "
                   f"default {PAPER_SD_MODEL}, the CPDM release's).")
@click.option("--prompts", "prompt_ids", multiple=True,
              help="Prompt ids (comma-separated; default: each anchor's latest prompts, those nothing was refined from).")
@click.option("--per-prompt", type=int, default=PAPER_PER_PROMPT, show_default=True,
              help="Images per prompt; image k uses seed + k.")
@click.option("--steps", type=int, default=PAPER_STEPS, show_default=True, help="Sampling steps.")
@click.option("--guidance", type=float, default=PAPER_GUIDANCE, show_default=True,
              help="Classifier-free guidance scale.")
@click.option("--seed", type=int, default=PAPER_SEED, show_default=True, help="Seed of each prompt's first image.")
@click.option("--seed-mode", type=click.Choice(SEED_MODES), default=SEED_MODES[0], show_default=True,
              help="per-image: image k from seed + k; release: one generator seeded before each prompt, its images "
                   "drawn in one batch, as the CPDM release did.")
@click.option("--scheduler", default=DEFAULT_SCHEDULER, show_default=True, help=", ".join(SCHEDULERS) + ".")
@click.option("--negative", default=None, help="Negative prompt.")
@click.option("--height", type=int, default=None, help="Image height, a multiple of 8 (default: the model's).")
@click.option("--width", type=int, default=None, help="Image width, a multiple of 8 (default: the model's).")
@click.option("--batch-size", type=click.IntRange(min=1), default=None,
              help="Images per batch (default: 4 on the CPU; on CUDA the prompt's images, halved when memory runs out).")
@click.option("--device", default="cpu", show_default=True, help="cpu or cuda (cuda:N for a given GPU).")
@click.option("--dtype", type=click.Choice(DTYPES), default=None,
              help="Weights' precision (default: float16 on CUDA, float32 on the CPU).")
@click.option("--protocol", "protocol_file", type=click.Path(dir_okay=False, exists=True), default=None,
              help="Protocol whose attention_checks.rate sets the share of check pairs (default: the default protocol).")
@offline_tiny_option
@quiet_option
@cpdm_command
def generate_cmd(workspace, variant, base_model, prompt_ids, per_prompt, steps, guidance, seed, seed_mode, scheduler,
             negative, height, width, batch_size, device, dtype, protocol_file, offline_tiny, quiet):
    """Generate images for the prompts with a variant, and make the pairs raters judge.

    The defaults are the CPDM paper's: 9 images per prompt, DDIM, 50 steps,
    guidance 9, seed 23. Every image is stored with its seed and settings.
    Images already made with the same settings are skipped, so a run that
    was stopped (even killed) can be started again.

    Image k of a prompt is drawn from its own generator seeded seed + k (so
    any image can be made alone); --seed-mode release draws the prompt's
    images as the CPDM release did, from one generator seeded with the seed
    before each prompt, in one batch (a partly made prompt is drawn whole
    again and only its missing images stored; --batch-size does not apply).

    \b
    Examples:
      cpdm generate --device cuda
      cpdm generate --variant esd-monet --prompts 4,5 --per-prompt 3
      cpdm generate --offline-tiny --steps 2 --height 64 --width 64
      cpdm generate --device cuda --seed-mode release
    """
    from cpdm.generation.batch import run_generation
    from cpdm.diffusion.settings import GenerationSettings
    from cpdm.rating.protocol import default_protocol_path, load_protocol_file

    _, protocol = load_protocol_file(protocol_file or default_protocol_path())
    settings = GenerationSettings(per_prompt=per_prompt, steps=steps, guidance=guidance, seed=seed,
                                  scheduler=scheduler, negative=negative, height=height, width=width,
                                  seed_mode=seed_mode)
    settings.check()
    ws = open_ws(workspace)
    report = run_generation(
        ws, variant=variant, prompt_ids=parse_ids(prompt_ids, "--prompts"), settings=settings, device=device,
        dtype=dtype, batch_size=batch_size, offline_tiny=offline_tiny, base_model=base_model,
        check_rate=protocol.attention_checks.rate, progress=not quiet,
    )
    echo_notes(report.notes)
    click.echo(report.summary())


# The commands this module adds to `cpdm` (cpdm.cli registers them).
COMMANDS = (generate_cmd,)
