"""Rating commands: campaigns (create, list, status) and raters (invite, list, revoke)."""

from __future__ import annotations

import click

from cpdm.rating.assignment import rebuild_pair_load
from cpdm.rating.auth import create_rater, invite_url, list_raters, rater_by_name_or_id, revoke_rater
from cpdm.rating.campaigns import (
    DEFAULT_OVERLAP, campaign_id_by_name, create_campaign_from_filters, format_overlap, list_campaigns, parse_overlap,
)
from cpdm.cli.options import cpdm_command, open_ws, print_table, workspace_option
from cpdm.cli.recruit_cmds import CAMPAIGN_COMMANDS
from cpdm.rating.protocol import load_protocol_file
from cpdm.rating.submit import campaign_status
from cpdm.rating.triplets import campaign_design, create_2afc_campaign_from_filters
from cpdm.store.workspace import CAMPAIGN_KINDS, TRIPLET_DESIGNS


@click.group("campaign")
def campaign_cmd():
    """Rating campaigns: which pairs raters judge, under which protocol, how many times.

    \b
    Examples:
      cpdm campaign create monet-esd --artist "Claude Monet" --variant original --variant esd
      cpdm campaign create monet-duel --kind 2afc --triplets balanced --artist "Claude Monet"
      cpdm campaign list
      cpdm campaign status monet-esd
      cpdm campaign recount monet-esd
    """


@campaign_cmd.command("create")
@click.argument("name")
@click.option("--protocol", "protocol_file", type=click.Path(dir_okay=False),
              help="Protocol TOML file (default: the shipped cpdm/rating/protocols/default.toml, or 2afc.toml "
                   "with --kind 2afc).")
@click.option("--overlap", default=format_overlap(DEFAULT_OVERLAP), show_default=True,
              help="Ratings each pair needs per role.")
@click.option("--category", "categories", multiple=True, help="Only anchors of this category (repeatable).")
@click.option("--artist", "artists", multiple=True, help="Only anchors by this artist (repeatable).")
@click.option("--variant", "variants", multiple=True, help="Only generations of this model variant (repeatable).")
@click.option("--include-checks/--no-include-checks", default=True, show_default=True,
              help="Mix in attention checks (identical and unrelated pairs) at the protocol's rate.")
@click.option("--kind", type=click.Choice(CAMPAIGN_KINDS), default="rating", show_default=True,
              help="rating: each pair on the protocol's scales; 2afc: which of two AI images is more of a copy.")
@click.option("--triplets", "design", type=click.Choice(TRIPLET_DESIGNS), default=None,
              help="With --kind 2afc: how triplets are chosen (default balanced; active starts with a balanced "
                   "warm-up and offers the rest as judgments arrive).")
@click.option("--triplets-per-anchor", "per_anchor", type=click.IntRange(1, 10_000), default=None,
              help="With --kind 2afc: triplets per anchor (default: the typical pairs per anchor, so each "
                   "generation is in about two).")
@click.option("--seed", type=int, default=0, show_default=True, help="With --kind 2afc: seed of the triplet design.")
@workspace_option
@cpdm_command
def campaign_create_cmd(name, protocol_file, overlap, categories, artists, variants, include_checks, kind, design,
                        per_anchor, seed, workspace):
    """Create a campaign over the pairs matching the filters.

    The protocol file's text is frozen into the campaign: editing the file
    later does not change a running campaign. Raters work through open
    campaigns, oldest first.

    With --kind 2afc raters see the original with two AI images of it and
    choose which is more of a copy; a triplet is two generations of one
    anchor, from any variants. --triplets balanced gives each generation
    about equally many triplets and each anchor the same number; random
    draws them uniformly; active holds every candidate and offers a
    balanced warm-up first. The protocol must be a 2afc one (default: the
    shipped 2afc.toml); --overlap then counts judgments per triplet.

    \b
    Examples:
      cpdm campaign create portraits --category portrait --overlap artist=3,lay=5 \\
          --protocol my_protocol.toml
      cpdm campaign create duel --kind 2afc --triplets active --triplets-per-anchor 4
    """
    overlap_counts = parse_overlap(overlap)
    if kind != "2afc" and (design is not None or per_anchor is not None):
        from cpdm.errors import CpdmError

        option = "--triplets" if design is not None else "--triplets-per-anchor"
        raise CpdmError(f"{option} is for comparative campaigns: add --kind 2afc")
    protocol_text = load_protocol_file(protocol_file)[0] if protocol_file else None
    ws = open_ws(workspace)
    if kind == "2afc":
        design = design or "balanced"
        campaign_id, n_triplets = create_2afc_campaign_from_filters(
            ws, name, categories=categories, artists=artists, variants=variants, design=design,
            per_anchor=per_anchor, protocol_text=protocol_text, overlap=overlap_counts,
            include_checks=include_checks, seed=seed,
        )
        n_pairs = ws.conn.execute(
            "SELECT COUNT(*) FROM campaign_pairs cp JOIN pairs p ON p.id = cp.pair AND p.kind = 'normal' "
            "WHERE cp.campaign = ?", (campaign_id,)).fetchone()[0]
        checks = ws.conn.execute(
            "SELECT COUNT(*) FROM campaign_triplets ct JOIN triplets t ON t.id = ct.triplet AND t.kind = 'check' "
            "WHERE ct.campaign = ?", (campaign_id,)).fetchone()[0]
        waiting = ws.conn.execute(
            "SELECT COUNT(*) FROM campaign_triplets WHERE campaign = ? AND priority = 0", (campaign_id,)).fetchone()[0]
        held_back = f", {waiting} more held for the active queue" if waiting else ""
        click.echo(
            f"campaign {name.strip()!r} (id {campaign_id}, 2afc, {design}): {n_triplets} triplets over "
            f"{n_pairs} pairs{held_back}, {checks} attention checks, "
            f"overlap {format_overlap(overlap_counts)}"
        )
        return
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
    """List campaigns with their kind (rating or 2afc), triplet design, pair and triplet counts, overlap and status.

    \b
    Example:
      cpdm campaign list
    """
    rows = list_campaigns(open_ws(workspace))
    if not rows:
        click.echo("no campaigns (create one with `cpdm campaign create NAME`)")
        return
    print_table([{**r, "overlap": format_overlap(r["overlap"]), "design": r["design"] or "-",
                  "triplets": r["triplets"] if r["kind"] == "2afc" else "-"} for r in rows],
                ["id", "name", "status", "kind", "design", "pairs", "triplets", "overlap"])


@campaign_cmd.command("status")
@click.argument("name")
@workspace_option
@cpdm_command
def campaign_status_cmd(name, workspace):
    """Show a campaign's progress per role and per rater.

    Per role: ratings needed and done, raters, flagged raters, median seconds
    per pair. Per rater: pairs done and skipped, attention checks, too-fast
    answers, flag. A 2afc campaign counts triplets (those offered now)
    instead of pairs.

    \b
    Example:
      cpdm campaign status monet-esd
    """
    ws = open_ws(workspace)
    campaign_id = campaign_id_by_name(ws, name)
    status = campaign_status(ws, campaign_id)
    if status["kind"] == "2afc":
        design = campaign_design(ws, campaign_id)[1]
        click.echo(f"campaign {name!r} (2afc, {design}): {status['triplets']} triplets over {status['pairs']} pairs")
    else:
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
    """Recount how often each pair (2afc: triplet) of campaign NAME was assigned and answered.

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
    if campaign_design(ws, campaign_id)[0] == "2afc":
        click.echo(f"campaign {name!r}: triplet load recounted from its assignments and judgments")
    else:
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


# `cpdm campaign recruit` lives in its own module.
for _command in CAMPAIGN_COMMANDS:
    campaign_cmd.add_command(_command)

# The commands this module adds to `cpdm` (cpdm.cli registers them).
COMMANDS = (campaign_cmd, raters_cmd)
