"""Curation commands: prompts (interrogate, refine, list, add), export-dataset, import-dataset."""

from __future__ import annotations

import json

import click

from cpdm.cli.options import (
    cpdm_command,
    echo_notes,
    offline_tiny_option,
    open_ws,
    parse_ids,
    print_table,
    quiet_option,
    workspace_option,
)
from cpdm.curation.interrogate import DEFAULT_INTERROGATOR_CLIP, DEFAULT_MODE, MODES, TOP_FLAVORS
from cpdm.curation.refine import DEFAULT_MAX_RETRIES, DEFAULT_SAMPLING_SEED, DEFAULT_TIMEOUT_S, INSTRUCTION, REFINERS
from cpdm.diffusion.settings import BASELINE_VARIANT, PAPER_SD_MODEL, UNKNOWN_BASE
from cpdm.store.workspace import PROMPT_ORIGINS

# Prompts longer than this are shortened in `cpdm prompts list`'s table (never in JSON).
LIST_TEXT_WIDTH = 80


@click.group("prompts")
def prompts_cmd():
    """Prompts for each anchor: CLIP interrogation, refinement, manual prompts.

    \b
    The paper's path:
      cpdm prompts interrogate            CLIP ranks term banks against each anchor
      cpdm prompts refine                 rewrite them to elicit close imitation
      cpdm generate                       9 images per prompt
    """


@prompts_cmd.command("interrogate")
@workspace_option
@click.option("--anchors", "anchor_ids", multiple=True, help="Anchor ids (comma-separated; default: all).")
@click.option("--mode", type=click.Choice(MODES), default=DEFAULT_MODE, show_default=True,
              help="clip-interrogator 0.6.0's best, fast, classic or negative mode, or cpdm's metadata recipe.")
@click.option("--clip", "--model", "model", default=DEFAULT_INTERROGATOR_CLIP, show_default=True,
              help="open_clip MODEL/TAG ranking the terms (the release's interrogator model; not the metric's CLIP).")
@click.option("--caption-model", default=None,
              help="BLIP caption weights (folder or cached model id); default: Salesforce/blip-image-captioning-large when cached.")
@click.option("--banks", "banks_dir", type=click.Path(file_okay=False, exists=True), default=None,
              help="Folder with mediums.txt, movements.txt, artists.txt, flavors.txt (and negative.txt for "
                   "--mode negative); default: clip-interrogator's.")
@click.option("--flavors", "top_flavors", type=click.IntRange(min=0), default=TOP_FLAVORS, show_default=True,
              help="Flavour terms in each prompt of the metadata mode.")
@click.option("--device", default="cpu", show_default=True, help="cpu or cuda.")
@offline_tiny_option
@quiet_option
@cpdm_command
def prompts_interrogate_cmd(workspace, anchor_ids, mode, model, caption_model, banks_dir, top_flavors, device,
                        offline_tiny, quiet):
    """Write a first prompt for each anchor by CLIP interrogation.

    The default mode is clip-interrogator's "best", as the CPDM release ran
    it: a caption, then a chain of 8 to 32 terms from the merged banks, then
    the best of caption, classic, fast and chained prompts by similarity to
    the image. "fast", "classic" and "negative" are the package's other
    modes; "metadata" writes "{title}, by {artist}, {caption}, {medium},
    {movement}, {flavours}" from the anchor's metadata. Anchors already
    interrogated with this CLIP model in this mode are skipped, so the
    command can be rerun after an interruption. Each bank's text embeddings
    are cached in the workspace per CLIP model.

    \b
    Examples:
      cpdm prompts interrogate
      cpdm prompts interrogate --mode metadata --clip ViT-L-14/openai
      cpdm prompts interrogate --anchors 3,4 --caption-model models/blip-large
    """
    from cpdm.curation.interrogate import interrogate_anchors

    ws = open_ws(workspace)
    report = interrogate_anchors(
        ws, parse_ids(anchor_ids, "--anchors"), mode=mode, model=model, offline_tiny=offline_tiny, device=device,
        caption_model=caption_model, banks_dir=banks_dir, top_flavors=top_flavors, progress=not quiet,
    )
    echo_notes(report.notes)
    click.echo(report.summary())


@prompts_cmd.command("refine")
@workspace_option
@click.option("--refiner", type=click.Choice(REFINERS), default=REFINERS[0], show_default=True,
              help="template: offline and deterministic; openai: an OpenAI-compatible endpoint from the environment; "
                   "local: a chat model run here by transformers.")
@click.option("--model", default=None,
              help="openai: the model name (default $CPDM_LLM_MODEL); local: a model folder or a cached model id.")
@click.option("--device", default="cpu", show_default=True, help="cpu or cuda (local refiner).")
@click.option("--n", "n", type=click.IntRange(min=1), default=1, show_default=True,
              help="Rewrites per source prompt (LLMs sample them; the template has 3 wordings).")
@click.option("--seed", type=int, default=DEFAULT_SAMPLING_SEED, show_default=True,
              help="LLM sampling seed when --n > 1: rewrite k uses seed + k.")
@click.option("--show-instruction", is_flag=True, is_eager=True, expose_value=False,
              callback=lambda ctx, _param, value: value and (click.echo(INSTRUCTION), ctx.exit()),
              help="Print the instruction sent to LLM refiners and exit.")
@click.option("--prompts", "prompt_ids", multiple=True,
              help="Prompt ids to refine (comma-separated; default: every interrogator and manual prompt).")
@click.option("--timeout", "timeout_s", type=click.FloatRange(min=0.1), default=DEFAULT_TIMEOUT_S, show_default=True,
              help="Seconds to wait for each answer (openai).")
@click.option("--retries", type=click.IntRange(min=0), default=DEFAULT_MAX_RETRIES, show_default=True,
              help="Retries after a timeout, a 429 or a 5xx answer, with exponential backoff (openai).")
@quiet_option
@cpdm_command
def prompts_refine_cmd(workspace, refiner, model, device, n, seed, prompt_ids, timeout_s, retries, quiet):
    """Rewrite prompts so they elicit close imitation of their anchor.

    Each refined prompt records its parent prompt and its author (template,
    or the LLM model). Rewrites already made by the same refiner and model
    are skipped; LLM answers are cached in the workspace, so a rerun asks
    nothing twice. An unreachable endpoint, missing local weights or a
    malformed answer stops the command with an error (prompts refined before
    it are kept); there is no fallback to the template. With --n K each
    source prompt gets K rewrites: LLMs sample rewrite k with seed + k (greedy
    when K is 1), the template uses its k-th wording.

    \b
    Environment (openai):
      CPDM_LLM_BASE_URL  (or OPENAI_BASE_URL; default https://api.openai.com/v1)
      CPDM_LLM_MODEL     (or OPENAI_MODEL; --model overrides)
      CPDM_LLM_API_KEY   (or OPENAI_API_KEY; not needed by local servers)

    \b
    Examples:
      cpdm prompts refine
      CPDM_LLM_BASE_URL=http://127.0.0.1:8000/v1 cpdm prompts refine --refiner openai --model llama-3.1-8b
      cpdm prompts refine --refiner local --model models/qwen2.5-1.5b-instruct --device cuda --n 3
      cpdm prompts refine --show-instruction
    """
    from cpdm.curation.refine import make_refiner, refine_prompts

    ws = open_ws(workspace)
    extra = {"timeout_s": timeout_s, "max_retries": retries} if refiner == "openai" else {}
    chosen = make_refiner(refiner, ws, model=model, device=device, **extra)
    report = refine_prompts(ws, chosen, parse_ids(prompt_ids, "--prompts"), progress=not quiet, n=n, seed=seed)
    click.echo(report.summary())


@prompts_cmd.command("list")
@workspace_option
@click.option("--anchor", "anchor_id", type=int, default=None, help="Only this anchor's prompts.")
@click.option("--origin", type=click.Choice(PROMPT_ORIGINS), default=None, help="Only prompts of this origin.")
@click.option("--format", "output_format", type=click.Choice(["table", "json"]), default="table", show_default=True)
@cpdm_command
def prompts_list_cmd(workspace, anchor_id, origin, output_format):
    """List prompts: id, anchor, origin, author, parent and text.

    \b
    Examples:
      cpdm prompts list --anchor 3
      cpdm prompts list --origin llm --format json
    """
    from cpdm.curation.prompts import anchors_without_prompts, prompt_rows

    ws = open_ws(workspace)
    rows = prompt_rows(ws, anchor_id=anchor_id, origin=origin)
    if output_format == "json":
        click.echo(json.dumps([row.__dict__ for row in rows], indent=1, ensure_ascii=False))
        return
    records = [
        {"id": r.id, "anchor": r.anchor, "origin": r.origin, "author": r.author, "parent": r.parent,
         "text": r.text if len(r.text) <= LIST_TEXT_WIDTH else r.text[: LIST_TEXT_WIDTH - 3] + "..."}
        for r in rows
    ]
    print_table(records, ("id", "anchor", "origin", "author", "parent", "text"))
    missing = anchors_without_prompts(ws) if anchor_id is None and origin is None else []
    if missing:
        click.echo(f"anchors without a prompt: {', '.join(map(str, missing))}", err=True)


@prompts_cmd.command("add")
@workspace_option
@click.argument("anchor_id", metavar="ANCHOR", type=int)
@click.argument("text")
@cpdm_command
def prompts_add_cmd(workspace, anchor_id, text):
    """Add a manual prompt for anchor ANCHOR (its id, see `cpdm anchors list`).

    \b
    Example:
      cpdm prompts add 3 "water lilies on a pond at dusk, by Claude Monet, oil on canvas"
    """
    from cpdm.curation.prompts import add_manual_prompt

    ws = open_ws(workspace)
    click.echo(f"added prompt {add_manual_prompt(ws, anchor_id, text)} for anchor {anchor_id}")


@click.command("export-dataset")
@workspace_option
@click.argument("folder", type=click.Path(file_okay=False))
@cpdm_command
def export_dataset_cmd(workspace, folder):
    """Write anchors, prompts, variants, generations and pairs to FOLDER (CSV + image files).

    FOLDER must be new or empty. The layout is described in the README
    (Dataset exchange); `cpdm import-dataset FOLDER` reads it back.

    \b
    Example:
      cpdm export-dataset exports/monet-2026-12
    """
    from cpdm.curation.dataset import export_dataset

    ws = open_ws(workspace)
    counts = export_dataset(ws, folder)
    click.echo(f"exported to {folder}: " + ", ".join(f"{n} {name}" for name, n in counts.items()))


@click.command("import-dataset")
@workspace_option
@click.argument("folder", required=False, type=click.Path(file_okay=False, exists=True))
@click.option("--anchors", "anchors_dir", type=click.Path(file_okay=False, exists=True), default=None,
              help="Metric layout: the folder of anchor images (with --generated, instead of FOLDER).")
@click.option("--generated", "generated_dir", type=click.Path(file_okay=False, exists=True), default=None,
              help="Metric layout: the folder of generated images, paired with --anchors by sorted name.")
@click.option("--variant", default=BASELINE_VARIANT, show_default=True,
              help="The variant the generated images are recorded under (all layouts but cpdm's export).")
@click.option("--base-model", default=None,
              help=f"Base model of that variant when it is created [default: {PAPER_SD_MODEL} for the "
                   f"generation layout, {UNKNOWN_BASE} otherwise].")
@cpdm_command
def import_dataset_cmd(workspace, folder, anchors_dir, generated_dir, variant, base_model):
    """Import a dataset: FOLDER in one of three layouts, or two folders with --anchors and --generated.

    \b
    Layouts (the README's "Dataset exchange" says what each follows):
      FOLDER/metadata.json + CSVs    cpdm export-dataset's layout
      FOLDER/caption.csv, anchors/, output/
                                     the release's generation layout
                                     (output/STEM_NNNNN.jpg, n = row*9 + k)
      FOLDER/anchors/NAME.png + FOLDER/generations/NAME/*.png
                                     cpdm's per-anchor folders
      --anchors DIR --generated DIR  the release's metric layout: two flat
                                     folders paired file by file, sorted by name
    Everything is checked before anything is written, and written at once.

    \b
    Examples:
      cpdm import-dataset exports/monet-2026-12 --workspace studies/copy
      cpdm import-dataset cpdm-release/ --variant sd21
      cpdm import-dataset --anchors originals/ --generated generated/ --variant esd-monet
    """
    from cpdm.curation.dataset import import_dataset, import_paired_folders

    paired = anchors_dir is not None or generated_dir is not None
    if paired and folder is not None:
        raise click.UsageError("give FOLDER or --anchors and --generated, not both")
    if paired and (anchors_dir is None or generated_dir is None):
        raise click.UsageError("--anchors and --generated go together: give both")
    if not paired and folder is None:
        raise click.UsageError("give FOLDER, or --anchors and --generated (the metric layout)")
    ws = open_ws(workspace, create=True)
    if paired:
        report = import_paired_folders(ws, anchors_dir, generated_dir, variant=variant, base_model=base_model)
    else:
        report = import_dataset(ws, folder, variant=variant, base_model=base_model)
    click.echo(report.summary())
    for warning in report.warnings:
        click.echo(f"warning: {warning}", err=True)


# The commands this module adds to `cpdm` (cpdm.cli registers them).
COMMANDS = (prompts_cmd, export_dataset_cmd, import_dataset_cmd)
