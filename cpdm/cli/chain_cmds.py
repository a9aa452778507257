"""``cpdm pipeline run``: queue the unlearning chain (unlearn → generate → score → report) for workers."""

from __future__ import annotations

import click

from cpdm.cli.options import cpdm_command, offline_tiny_option, open_ws, workspace_option
from cpdm.cli.unlearn_cmds import METHOD_HELP, parse_params
from cpdm.diffusion.settings import PAPER_PER_PROMPT, PAPER_STEPS


@click.group("pipeline")
def pipeline_cmd():
    """Queue whole chains of jobs for `cpdm worker` to run."""


@pipeline_cmd.command("run", epilog=METHOD_HELP)
@click.option("--concept", required=True, help="The concept to erase, e.g. an artist's name as the anchors give it.")
@click.option("--method", required=True, help="Unlearning method (see below).")
@click.option("--variant-name", default=None, help="Name of the new variant (default: METHOD-CONCEPT).")
@click.option("--base", default=None, help="Base model (default: the baseline variant's).")
@click.option("--preserve", multiple=True, help="A concept to keep as it is (repeatable).")
@click.option("--param", "-p", "params", multiple=True, metavar="KEY=VALUE",
              help="A hyperparameter of the method, e.g. -p iterations=500 (repeatable).")
@click.option("--retain-prompts", type=click.IntRange(min=1), default=None,
              help="At most this many retain prompts (other anchors' prompts, oldest first; default: all).")
@click.option("--per-prompt", type=click.IntRange(min=1), default=PAPER_PER_PROMPT, show_default=True,
              help="Images per prompt the generate job makes.")
@click.option("--steps", type=click.IntRange(min=1), default=PAPER_STEPS, show_default=True,
              help="Sampling steps of the generations.")
@click.option("--size", type=int, default=None, help="Image side in pixels, a multiple of 8 (default: the model's).")
@click.option("--device", default=None,
              help="Device the jobs ask for (default: cuda, or any CPU worker with --offline-tiny).")
@offline_tiny_option
@workspace_option
@cpdm_command
def pipeline_run_cmd(concept, method, variant_name, base, preserve, params, retain_prompts, per_prompt, steps, size,
                 device, offline_tiny, workspace):
    """Queue unlearn -> generate (concept and retain prompts) -> score -> unlearning report.

    Each job waits for the one before; a failed job fails the rest with its
    reason. Workers (`cpdm worker`) run them; `cpdm jobs list` follows them.

    \b
    Examples:
      cpdm pipeline run --concept "Van Gogh" --method esd-x
      cpdm pipeline run --concept "Mira Dotwell" --method uce --offline-tiny --per-prompt 2 --steps 2
    """
    from cpdm.jobs.chain import STEPS, enqueue_pipeline

    ws = open_ws(workspace)
    ids = enqueue_pipeline(ws, concept, method, variant_name=variant_name, base=base, preserve=preserve,
                           retain_prompts=retain_prompts, per_prompt=per_prompt, steps=steps, size=size,
                           offline_tiny=offline_tiny, hyperparameters=parse_params(params), device=device)
    for step, job_id in zip(STEPS, ids):
        click.echo(f"{job_id}\t{step}")
    click.echo(f"queued jobs {', '.join(map(str, ids))}; run them with `cpdm worker`", err=True)

# The commands this module adds to `cpdm` (cpdm.cli registers them).
COMMANDS = (pipeline_cmd,)
