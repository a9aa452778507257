"""Unlearning commands: ``cpdm unlearn METHOD ...`` and ``cpdm variants list|show``."""

from __future__ import annotations

import json
import textwrap

import click

from cpdm.cli.options import cpdm_command, offline_tiny_option, open_ws, resample_option, workspace_option
from cpdm.compute_device import check_device
from cpdm.diffusion.settings import BASELINE_VARIANT, DEFAULT_SD_MODEL, PAPER_GUIDANCE, PAPER_SEED, PAPER_STEPS
from cpdm.errors import CpdmError
from cpdm.store.rows import get_variant, list_variants
from cpdm.unlearning import (
    DEFAULT_CHECKPOINT_EVERY,
    DEFAULT_SEED,
    DEFAULT_TRAINING_PRECISION,
    REGISTRY,
    TRAINING_PRECISIONS,
)

def method_help(width: int = 77) -> str:
    """The list of methods that ends ``cpdm unlearn --help`` and ``cpdm pipeline run --help``, from the methods' table.

    Lines are wrapped to ``width``; click indents the epilog by two more columns.
    """
    lines = ["\b", "Methods (hyperparameters and their defaults: `cpdm variants methods`):"]
    for entry in REGISTRY:
        summary = entry.summary + (" (needs --images)" if entry.needs_images else "")
        lines += textwrap.wrap(summary, width, initial_indent=f"  {entry.name:<17}", subsequent_indent=" " * 19,
                               break_on_hyphens=False)
    return "\n".join(lines) + "\n"


METHOD_HELP = method_help()


def parse_params(pairs: tuple[str, ...]) -> dict[str, str]:
    """``KEY=VALUE`` options as a dict (values stay text; the method converts them)."""
    params = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise CpdmError(f"--param takes KEY=VALUE, got {pair!r}")
        params[key.strip()] = value.strip()
    return params


@click.command("unlearn", epilog=METHOD_HELP)
@click.argument("method")
@click.option("--variant-name", required=True, help="Name of the new variant (what generation and reports use).")
@click.option("--base", default=DEFAULT_SD_MODEL, show_default=True,
              help="Base model: a local diffusers folder or a cached Hugging Face id.")
@click.option("--concept", "concepts", multiple=True, required=True, help="A concept to erase (repeatable).")
@click.option("--preserve", "preserve", multiple=True, help="A concept to keep as it is (repeatable).")
@click.option("--preserve-file", "preserve_file", metavar="FILE", default=None,
              help="A file of concepts to keep, one a line (e.g. the 1,733 artists UCE's 2023 release preserves).")
@click.option("--images", "images_dir", type=click.Path(file_okay=False), default=None,
              help="Folder of images of the concept (methods that train on images).")
@click.option("--param", "-p", "params", multiple=True, metavar="KEY=VALUE",
              help="A hyperparameter, e.g. -p iterations=1000 -p lr=1e-5 (repeatable).")
@click.option("--seed", type=int, default=DEFAULT_SEED, show_default=True)
@click.option("--device", default="cpu", show_default=True, help="cpu or cuda (cuda:N).")
@click.option("--precision", type=click.Choice(TRAINING_PRECISIONS), default=DEFAULT_TRAINING_PRECISION,
              show_default=True, help="Compute precision of training passes (weights stay float32).")
@click.option("--checkpoint-every", type=click.IntRange(min=1), default=DEFAULT_CHECKPOINT_EVERY, show_default=True,
              help="Save a resumable checkpoint every N steps.")
@click.option("--resume", is_flag=True, help="Continue the variant's interrupted run from its last checkpoint.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@offline_tiny_option
@workspace_option
@cpdm_command
def unlearn_cmd(method, variant_name, base, concepts, preserve, preserve_file, images_dir, params, seed, device,
            precision, checkpoint_every, resume, quiet, offline_tiny, workspace):
    """Erase concepts from a Stable Diffusion model with METHOD and register the result as a variant.

    \b
    Examples:
      cpdm unlearn esd-x --variant-name esd-monet --base runwayml/stable-diffusion-v1-5 \\
          --concept "Claude Monet" --device cuda
      cpdm unlearn uce --variant-name uce-monet --offline-tiny --concept "Claude Monet"
      cpdm unlearn uce --variant-name uce-monet-2024 --concept "Claude Monet" -p release=2024 \\
          --preserve-file artists.txt --device cuda

    A UCE style erasure preserves the study's other artists (the anchors'
    artist names) besides --preserve and --preserve-file; the variant
    records the set it used.
    """
    from cpdm.unlearning.runner import unlearn as run_unlearning

    ws = open_ws(workspace)
    variant = run_unlearning(
        ws, method, variant_name, base=base, concepts=concepts, preserve=preserve, preserve_file=preserve_file,
        images_dir=images_dir, params=parse_params(params), seed=seed, device=device, precision=precision,
        offline_tiny=offline_tiny, resume=resume, checkpoint_every=checkpoint_every, progress=not quiet,
        warn=lambda note: click.echo(f"note: {note}", err=True),
    )
    where = f" -> {variant.artifact_path}" if variant.artifact_path else " (inference-time settings, no weights)"
    click.echo(f"variant {variant.name} ({variant.method}) ready{where}")


@click.group("variants")
def variants_cmd():
    """Model variants: the original model and what unlearning made of it."""


@variants_cmd.command("list")
@workspace_option
@click.option("--format", "output_format", type=click.Choice(["table", "json"]), default="table", show_default=True)
@cpdm_command
def variants_list_cmd(workspace, output_format):
    """List the variants of the workspace with their method, base model, concepts and status.

    \b
    Example:
      cpdm variants list --workspace studies/monet
      cpdm variants list --format json
    """
    from cpdm.unlearning.runner import describe

    found = list_variants(open_ws(workspace))
    if output_format == "json":
        click.echo(json.dumps([describe(v) for v in found], indent=2))
        return
    if not found:
        click.echo("no variants yet (make one with `cpdm unlearn`)")
        return
    rows = [("id", "name", "method", "status", "base", "concepts")]
    rows += [(str(v.id), v.name, v.method, v.status, v.base_model, ", ".join(v.concepts)) for v in found]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        click.echo("  ".join(cell.ljust(width) for cell, width in zip(row, widths)) + "  " + row[-1])


@variants_cmd.command("show")
@click.argument("name_or_id")
@workspace_option
@cpdm_command
def variants_show_cmd(name_or_id, workspace):
    """Everything about one variant (by name or id) as JSON, with its artifact's record when it has one.

    \b
    Example:
      cpdm variants show esd-monet --workspace studies/monet
    """
    from cpdm.diffusion.artifacts import json_path_of
    from cpdm.unlearning.runner import describe

    ws = open_ws(workspace)
    variant = get_variant(ws, int(name_or_id) if name_or_id.isdigit() else name_or_id)
    data = describe(variant)
    if variant.artifact_path:
        record = json_path_of(ws.root / variant.artifact_path)
        data["artifact"] = json.loads(record.read_text(encoding="utf-8")) if record.is_file() else None
    click.echo(json.dumps(data, indent=2))


@variants_cmd.command("rerecord")
@click.argument("name_or_id")
@offline_tiny_option
@workspace_option
@cpdm_command
def variants_rerecord_cmd(name_or_id, offline_tiny, workspace):
    """Re-record the artifact an older cpdm wrote, so that it loads again (its weights are checked, not changed).

    Older artifacts list parameter names only and their variant's hash leaves
    the JSON unchecked; generation refuses them. This checks that the weights
    file is still the one registered, that its tensors are float32, finite
    and fit the base model's UNet, then writes each parameter's shape, dtype
    and sha256 and the base UNet's fingerprint into the JSON, and registers
    one hash of both files. Re-running the unlearning is the alternative.

    \b
    Example:
      cpdm variants rerecord esd-monet --workspace studies/monet
    """
    from cpdm.unlearning.runner import rerecord_variant

    ws = open_ws(workspace)
    variant = rerecord_variant(ws, int(name_or_id) if name_or_id.isdigit() else name_or_id, offline_tiny=offline_tiny)
    click.echo(f"variant {variant.name}: artifact re-recorded ({variant.artifact_path})")


@variants_cmd.command("methods")
@workspace_option
@cpdm_command
def variants_methods_cmd(workspace):
    """The unlearning methods `cpdm unlearn` knows, and each one's hyperparameters with their defaults.

    \b
    Example:
      cpdm variants methods
      cpdm unlearn esd-x -p iterations=500 ...   # override a default
    """
    for method in REGISTRY:
        click.echo(f"{method.name}: {method.summary}")
        for hp in method.hyperparameters:
            click.echo(f"    {hp.name} = {hp.default!r}    {hp.help}".rstrip())


@click.group("unlearning")
def unlearning_cmd():
    """Did unlearning work? Reports over variants."""


@unlearning_cmd.command("report")
@click.option("--variant", "variant_name", required=True, help="The unlearned variant.")
@click.option("--vs", "baseline", default=BASELINE_VARIANT, show_default=True, help="The variant to compare with.")
@click.option("--seed", "seeds", type=int, multiple=True, help=f"Generation seed (repeatable; default {PAPER_SEED}).")
@click.option("--steps", type=click.IntRange(min=1), default=PAPER_STEPS, show_default=True)
@click.option("--guidance", type=float, default=PAPER_GUIDANCE, show_default=True)
@click.option("--size", type=int, default=None, help="Image side in pixels (a multiple of 8; default: the model's).")
@click.option("--max-prompts", type=click.IntRange(min=1), default=None, help="At most this many prompts per set.")
@click.option("--target-artist", "target_artists", multiple=True,
              help="The concept's anchors are this artist's (repeatable; default: the anchors whose artist or title "
                   "is the variant's concept, the same words in any case).")
@click.option("--target-anchor", "target_anchors", type=int, multiple=True,
              help="The concept's anchors include this anchor id (repeatable).")
@click.option("--device", default="cpu", show_default=True)
@click.option("--format", "output_format", type=click.Choice(["table", "json", "csv"]), default="table",
              show_default=True)
@click.option("--n-boot", type=click.IntRange(0, 10_000), default=1000, show_default=True,
              help="Bootstrap resamples for the 95% intervals.")
@resample_option
@click.option("--quiet", is_flag=True, help="No progress bars.")
@offline_tiny_option
@workspace_option
@cpdm_command
def unlearning_report_cmd(variant_name, baseline, seeds, steps, guidance, size, max_prompts, target_artists,
                          target_anchors, device, output_format, n_boot, resample, quiet, offline_tiny, workspace):
    """CM on the target concept's prompts and on the retain set, against a baseline, with bootstrap intervals.

    The target set is the anchors whose artist or title is the variant's
    concept (the same words, any case: "Monet" does not take "Claude
    Monet", nor "Ma" "Manet"), unless --target-artist or --target-anchor
    choose it; the report lists the anchors of each set. Beside CM it gives
    the uncapped ratio x / x_ref (x = M_sem·M_style; CM clips it at 1) and
    the CPDM release's number (M_sem·M_style)², each with its change. The
    baseline must be of the variant's own base model.

    \b
    Example:
      cpdm unlearning report --variant uce-monet --vs original --offline-tiny --steps 2 --max-prompts 3
    """
    # Here, not above: it loads pandas, which no other command of this module needs at start.
    from cpdm.analysis.unlearning import ReportSettings, format_report, unlearning_report

    settings = ReportSettings(seeds=tuple(seeds) or (PAPER_SEED,), steps=steps, guidance=guidance, size=size,
                              max_prompts=max_prompts, device=check_device(device), offline_tiny=offline_tiny,
                              n_boot=n_boot, resample=resample, progress=not quiet,
                              target_artists=tuple(target_artists), target_anchors=tuple(target_anchors))
    table = unlearning_report(open_ws(workspace), variant_name, baseline, settings)
    if output_format == "json":
        click.echo(table.to_json(orient="records", indent=2))
    elif output_format == "csv":
        click.echo(table.to_csv(index=False), nl=False)
    else:
        click.echo(format_report(table))

# The commands this module adds to `cpdm` (cpdm.cli registers them).
COMMANDS = (unlearn_cmd, variants_cmd, unlearning_cmd)
