"""Workspace commands: init, info, anchors import/list."""

from __future__ import annotations

import csv
import io
import json

import click

from cpdm.curation.anchors import import_anchors, list_anchors
from cpdm.cli.options import cpdm_command, open_ws, print_table, workspace_option
from cpdm.store.workspace import ANCHOR_CATEGORIES

# The tables `cpdm info` counts, in the order the workflow fills them.
INFO_TABLES = ("anchors", "variants", "prompts", "generations", "pairs", "scores", "campaigns", "raters", "ratings")
# Re-importing a big folder makes every file a duplicate: list a few, count the rest.
MAX_DUPLICATES_SHOWN = 20


@click.command("init")
@workspace_option
@cpdm_command
def init_cmd(workspace):
    """Create an empty workspace (or upgrade an existing one).

    \b
    Example:
      cpdm init --workspace studies/monet
    """
    ws = open_ws(workspace, create=True)
    click.echo(f"workspace ready at {ws.root} (schema version {ws.conn.execute('PRAGMA user_version').fetchone()[0]})")


def workspace_counts(ws) -> dict[str, int]:
    """Rows in each of the main tables (what `cpdm info` prints)."""
    return {table: ws.conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0] for table in INFO_TABLES}


@click.command("info")
@workspace_option
@click.option("--format", "output_format", type=click.Choice(["table", "json"]), default="table", show_default=True)
@cpdm_command
def info_cmd(workspace, output_format):
    """Show where the workspace is and how many anchors, generations, ratings... it holds.

    For each campaign it also says which backbone combination its numbers
    use (the one `cpdm analyze` and the Analysis page choose) and whether
    that is the paper's (ViT-L-14/openai + cpdm-inception).

    \b
    Example:
      cpdm info --workspace studies/monet
      cpdm info --format json
    """
    from cpdm.analysis.combinations import describe_combination
    from cpdm.analysis.data import campaign_combinations

    ws = open_ws(workspace)
    version = ws.conn.execute("PRAGMA user_version").fetchone()[0]
    counts = workspace_counts(ws)
    campaigns = campaign_combinations(ws)
    if output_format == "json":
        click.echo(json.dumps({"workspace": str(ws.root), "schema_version": version, "demo": ws.is_demo,
                               "counts": counts, "campaign_scores": campaigns}))
        return
    width = max(len(name) for name in (*INFO_TABLES, "workspace")) + 2
    click.echo(f"{'workspace':<{width}}{ws.root}{'  (demo)' if ws.is_demo else ''}")
    click.echo(f"{'schema':<{width}}version {version}")
    for table, count in counts.items():
        click.echo(f"{table:<{width}}{count}")
    for campaign in campaigns:
        if campaign["semantic"] is None:
            used = "no scores yet (cpdm score)"
        else:
            used = (f"scores of {describe_combination(campaign['semantic'], campaign['style'])}, "
                    f"{campaign['pairs_scored']} of {campaign['pairs']} pairs")
            used += f"; also scored: {', '.join(campaign['also'])}" if campaign["also"] else ""
        click.echo(f"{'campaign':<{width}}{campaign['campaign']}: {used}")


@click.group("anchors")
def anchors_cmd():
    """Anchor images: the artworks that generated images are compared with.

    \b
    Examples:
      cpdm anchors import artworks/ --meta artworks/anchors.csv
      cpdm anchors list --artist "Claude Monet"
    """


@anchors_cmd.command("import")
@workspace_option
@click.argument("folder", type=click.Path(path_type=str))
@click.option(
    "--meta",
    "meta_csv",
    type=click.Path(dir_okay=False, path_type=str),
    help="CSV naming exactly the files to import: column file (relative to FOLDER), "
    "optional artist, title, category, source, license.",
)
@click.option("--skip-bad", is_flag=True, help="Report bad files and import the rest (default: import nothing).")
@click.option(
    "--category",
    type=click.Choice(ANCHOR_CATEGORIES),
    default="style",
    show_default=True,
    help="Category of files the CSV gives none for (all files, without --meta).",
)
@cpdm_command
def import_cmd(workspace, folder, meta_csv, skip_bad, category):
    """Import anchor images from FOLDER (PNG, JPEG or WebP, searched recursively).

    Every file is checked before anything is written: a file that is not a
    complete image, is too large, or lies outside FOLDER stops the import
    with nothing imported (unless --skip-bad). An image already in the
    workspace is reported as a duplicate and stored once, so importing the
    same folder again adds nothing.

    \b
    Examples:
      cpdm anchors import artworks/
      cpdm anchors import artworks/ --meta artworks/anchors.csv --skip-bad
      cpdm anchors import portraits/ --category portrait

    \b
    anchors.csv:
      file,artist,title,category,source,license
      monet/lilies.jpg,Claude Monet,Water Lilies,style,wikiart,public domain
    """
    ws = open_ws(workspace)
    report = import_anchors(ws, folder, meta_csv=meta_csv, skip_bad=skip_bad, default_category=category)
    for note in report.skipped:
        click.echo(f"skipped {note}", err=True)
    for note in report.duplicates[:MAX_DUPLICATES_SHOWN]:
        click.echo(f"duplicate {note}", err=True)
    hidden = len(report.duplicates) - MAX_DUPLICATES_SHOWN
    if hidden > 0:
        click.echo(f"... and {hidden} more duplicates", err=True)
    click.echo(report.summary())


@anchors_cmd.command("list")
@workspace_option
@click.option("--artist", help="Only this artist's anchors (case-insensitive).")
@click.option(
    "--format", "output_format", type=click.Choice(["table", "csv", "json"]), default="table", show_default=True
)
@cpdm_command
def list_cmd(workspace, artist, output_format):
    """List anchors: id, artist, title, category, size and the image's sha256 prefix.

    \b
    Examples:
      cpdm anchors list
      cpdm anchors list --artist "Claude Monet" --format csv > monet.csv
    """
    ws = open_ws(workspace)
    rows = list_anchors(ws, artist=artist)
    columns = ("id", "artist", "title", "category", "size", "sha")
    records = [{**{c: row.get(c) for c in columns[:-1]}, "sha": row["sha256"][:12]} for row in rows]
    if output_format == "json":
        click.echo(json.dumps([{**row, "sha256": row["sha256"]} for row in rows], indent=1))
    elif output_format == "csv":
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(records)
        click.echo(buffer.getvalue(), nl=False)
    else:
        print_table(records, columns)
        if not records:
            click.echo(
                "no anchors" + (f" by {artist}" if artist else "") + " (add some with `cpdm anchors import FOLDER`)",
                err=True,
            )

# The commands this module adds to `cpdm` (cpdm.cli registers them).
COMMANDS = (init_cmd, info_cmd, anchors_cmd)
