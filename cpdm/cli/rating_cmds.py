"""Rating commands: campaigns (create, list, status) and raters (invite, list, revoke)."""

from __future__ import annotations

import click

from cpdm.rating.assignment import rebuild_pair_load
from cpdm.rating.auth import create_rater, invite_url, list_raters, rater_by_name_or_id, revoke_rater
from cpdm.rating.campaigns import (
    DEFAULT_OVERLAP, campaign_id_by_name, create_campaign_from_filters, format_overlap, list_campaigns, parse_overlap,
)
from cpdm.cli.options import cpdm_command, open_ws, print_table, workspace_option
from cpdm.cli.queue_cmds import CAMPAIGN_COMMANDS as QUEUE_COMMANDS
from cpdm.cli.recruit_cmds import CAMPAIGN_COMMANDS
from cpdm.rating.protocol import load_protocol_file
from cpdm.rating.submit import campaign_status


@click.group("campaign")
def campaign_cmd():
    """Rating campaigns: which pairs raters judge, under which protocol, how many times.

    \b
    Examples:
      cpdm campaign create monet-esd --artist "Claude Monet" --variant original --variant esd
      cpdm campaign list
      cpdm campaign status monet-esd
      cpdm campaign recount monet-esd
    """


@campaign_cmd.command("create")
@click.argument("name")
@click.option("--protocol", "protocol_file", type=click.Path(dir_okay=False),
              help="Protocol TOML file (default: the shipped cpdm/rating/protocols/default.toml).")
@click.option("--overlap", default=format_overlap(DEFAULT_OVERLAP), show_default=True,
              help="Ratings each pair needs per role.")
@click.option("--category", "categories", multiple=True, help="Only anchors of this category (repeatable).")
@click.option("--artist", "artists", multiple=True, help="Only anchors by this artist (repeatable).")
@click.option("--variant", "variants", multiple=True, help="Only generations of this model variant (repeatable).")
@click.option("--include-checks/--no-include-checks", default=True, show_default=True,
              help="Mix in attention checks (identical and unrelated pairs) at the protocol's rate.")
@workspace_option
@cpdm_command
def campaign_create_cmd(name, protocol_file, overlap, categories, artists, variants, include_checks, workspace):
    """Create a campaign over the pairs matching the filters.

    The protocol file's text is frozen into the campaign: editing the file
    later does not change a running campaign. Raters work through open
    campaigns, oldest first.

    \b
    Example:
      cpdm campaign create portraits --category portrait --overlap artist=3,lay=5 \\
          --protocol my_protocol.toml
    """
    overlap_counts = parse_overlap(overlap)
    protocol_text = load_protocol_file(protocol_file)[0] if protocol_file else None
    ws = open_ws(workspace)
    campaign_id, n_pairs = create_campaign_from_filters(
        ws, name, categories=categories, artists=artists, variants=variants, protocol_text=protocol_text,
        overlap=overlap_counts, include_checks=include_checks,
    )
    total = next(c["pairs"] for c in list_campaigns(ws) if c["id"] == campaign_id)
    click.echo(
        f"campaign {name.strip()!r} (id {campaign_id}): {n_pairs} pairs, {total - n_pairs} attention checks, "
        f"overlap {format_overlap(overlap_counts)}"
    )


@campaign_cmd.command("list")
@workspace_option
@cpdm_command
def campaign_list_cmd(workspace):
    """List campaigns with their pair counts, overlap and status.

    \b
    Example:
      cpdm campaign list
    """
    rows = list_campaigns(open_ws(workspace))
    if not rows:
        click.echo("no campaigns (create one with `cpdm campaign create NAME`)")
        return
    print_table([{**r, "overlap": format_overlap(r["overlap"])} for r in rows], ["id", "name", "status", "pairs", "overlap"])


@campaign_cmd.command("status")
@click.argument("name")
@workspace_option
@cpdm_command
def campaign_status_cmd(name, workspace):
    """Show a campaign's progress per role and per rater.

    Per role: ratings needed and done, raters, flagged raters, median seconds
    per pair. Per rater: pairs done and skipped, attention checks, too-fast
    answers, flag.

    \b
    Example:
      cpdm campaign status monet-esd
    """
    ws = open_ws(workspace)
    status = campaign_status(ws, campaign_id_by_name(ws, name))
    click.echo(f"campaign {name!r}: {status['pairs']} pairs")
    click.echo()
    print_table(status["per_role"], ["role", "overlap", "needed", "done", "percent", "raters", "flagged", "median_seconds"])
    click.echo()
    if status["per_rater"]:
        print_table(status["per_rater"], ["rater", "name", "role", "done", "skipped", "checks", "too_fast",
                                     "median_seconds", "flagged", "flag_reason"])
    else:
        click.echo("no raters yet (invite some with `cpdm raters invite`)")


@campaign_cmd.command("recount")
@click.argument("name")
@workspace_option
@cpdm_command
def campaign_recount_cmd(name, workspace):
    """Recount how often each pair of campaign NAME was assigned and rated.

    Claims and submits keep these counters right. Ratings or assignments
    written by hand (SQL, an import from elsewhere) leave them behind: run
    this afterwards, or each pair's overlap is not kept.

    \b
    Example:
      cpdm campaign recount monet-esd
    """
    ws = open_ws(workspace)
    campaign_id = campaign_id_by_name(ws, name)
    rebuild_pair_load(ws, campaign_id)
    click.echo(f"campaign {name!r}: pair load recounted from its assignments and ratings")


@click.group("raters")
def raters_cmd():
    """Raters and their invite links.

    \b
    Examples:
      cpdm raters invite --name "Ada" --role artist --base-url http://rating.example.org:8501
      cpdm raters list
      cpdm raters revoke 3
    """


@raters_cmd.command("invite")
@click.option("--name", required=True, help="The rater's name or pseudonym (raters never see each other's).")
@click.option("--role", required=True, type=click.Choice(["artist", "lay", "researcher"]))
@click.option("--base-url", default="http://127.0.0.1:8501", show_default=True,
              help="Address where raters reach the app.")
@workspace_option
@cpdm_command
def raters_invite_cmd(name, role, base_url, workspace):
    """Create a rater and print their invite link, once.

    Only the token's hash is stored: copy the link now; if it is lost,
    revoke the rater and invite them again.

    \b
    Example:
      cpdm raters invite --name "Ada" --role artist
    """
    rater, token = create_rater(open_ws(workspace), name, role)
    click.echo(f"rater {rater.id} ({rater.name}, {rater.role}); this link is shown only once:")
    click.echo(invite_url(token, base_url))


@raters_cmd.command("list")
@workspace_option
@cpdm_command
def raters_list_cmd(workspace):
    """List raters: role, consent, flags, revoked links.

    \b
    Example:
      cpdm raters list
    """
    rows = list_raters(open_ws(workspace))
    if not rows:
        click.echo("no raters (invite one with `cpdm raters invite`)")
        return
    print_table(
        [{"id": r.id, "name": r.name, "role": r.role, "consented": "yes" if r.consented_at else "no",
          "flagged": "yes" if r.flagged else "no", "revoked": "yes" if r.disabled else "no",
          "simulated": "yes" if r.simulated else "no"} for r in rows],
        ["id", "name", "role", "consented", "flagged", "revoked", "simulated"],
    )


@raters_cmd.command("revoke")
@click.argument("rater")
@workspace_option
@cpdm_command
def raters_revoke_cmd(rater, workspace):
    """Disable a rater's link (by id, or by name if unique); their ratings are kept.

    \b
    Example:
      cpdm raters revoke 3
    """
    ws = open_ws(workspace)
    target = rater_by_name_or_id(ws, rater)
    revoke_rater(ws, target.id)
    click.echo(f"revoked rater {target.id} ({target.name}); their link no longer works")


# `cpdm campaign recruit` and `cpdm campaign refresh` live in their own modules.
for _command in CAMPAIGN_COMMANDS + QUEUE_COMMANDS:
    campaign_cmd.add_command(_command)

# The commands this module adds to `cpdm` (cpdm.cli registers them).
COMMANDS = (campaign_cmd, raters_cmd)
