"""``cpdm campaign recruit``: open recruitment links for crowd platforms (see cpdm.rating.recruit).

A subcommand of ``cpdm campaign``: :mod:`cpdm.cli.rating_cmds` adds :data:`CAMPAIGN_COMMANDS` to that group.
"""

from __future__ import annotations

import click

from cpdm.cli.options import cpdm_command, open_ws, print_table, workspace_option
from cpdm.errors import CpdmError
from cpdm.rating.campaigns import campaign_id_by_name
from cpdm.store.time import utc_now


@click.command("recruit")
@click.argument("name")
@click.option("--role", type=click.Choice(["lay", "artist"]), default="lay", show_default=True,
              help="Role of the raters the link admits.")
@click.option("--quota", type=click.IntRange(1), default=None, help="Raters the link admits at most (default: no limit).")
@click.option("--per-rater", type=click.IntRange(1), default=None,
              help="Pairs each rater gets, attention checks included (default: as many as the campaign has for them).")
@click.option("--id-param", default=None,
              help="Query parameter carrying the platform's participant id, e.g. PROLIFIC_PID or workerId; "
                   "required on every visit. Without it the app makes an id per visitor (no resuming elsewhere).")
@click.option("--completion-code", default=None, help="Code the end page shows, for the participant to enter.")
@click.option("--completion-url", default=None, help="Address the end page sends the participant to.")
@click.option("--closes", default=None,
              help="No new raters from then on: a date (the end of that day, UTC) or date and time (UTC unless given).")
@click.option("--per-address", type=click.IntRange(1), default=None,
              help="New raters per client address per hour (default 10).")
@click.option("--base-url", default="http://127.0.0.1:8501", show_default=True,
              help="Address where participants reach the app.")
@click.option("--close", "close", is_flag=True, help="Close the campaign's link for --role at once.")
@click.option("--list", "list_", is_flag=True, help="List the campaign's links.")
@workspace_option
@cpdm_command
def campaign_recruit_cmd(name, role, quota, per_rater, id_param, completion_code, completion_url, closes, per_address,
                     base_url, close, list_, workspace):
    """Print an open recruitment link for a crowd platform (Prolific, MTurk, a participant pool).

    Every participant opens the same link; the platform adds their
    participant id (--id-param). A participant is admitted as a rater once
    they consent, up to --quota raters; the same id resumes the same rater on
    any device. Each gets --per-rater pairs and then the end page with the
    completion code and/or a redirect to --completion-url. The link is shown
    once (only its hash is stored); --close stops new admissions at once,
    while admitted raters can finish.

    \b
    Examples:
      cpdm campaign recruit pilot --role lay --quota 100 --per-rater 40 --id-param PROLIFIC_PID \\
          --completion-url "https://app.prolific.com/submissions/complete?cc=C1A2B3" --closes 2026-12-31
      cpdm campaign recruit pilot --list
      cpdm campaign recruit pilot --role lay --close
    """
    from cpdm.rating import recruit

    if close and list_:
        raise click.UsageError("give --close or --list, not both")
    ws = open_ws(workspace)
    campaign_id = campaign_id_by_name(ws, name)
    now = utc_now()
    if list_:
        links = recruit.list_links(ws, campaign_id)
        if links:
            print_table([recruit.link_row(link, now) for link in links], recruit.LINK_COLUMNS)
        else:
            click.echo(f"campaign {name!r} has no recruitment links (make one with `cpdm campaign recruit {name}`)")
        return
    if close:
        links = recruit.open_links_of(ws, campaign_id, role, now)
        if not links:
            raise CpdmError(f"campaign {name!r} has no {role} recruitment link that is not closed")
        for link in links:
            closed = recruit.close_link(ws, link.id, now)
            click.echo(f"closed recruitment link {closed.id}: {closed.admitted} raters admitted, "
                       f"{closed.finished} finished; admitted raters can still finish")
        return
    link, secret = recruit.create_link(
        ws, campaign_id, role, quota=quota, per_rater=per_rater, id_param=id_param, completion_code=completion_code,
        completion_url=completion_url, closes_at=recruit.parse_closes(closes) if closes else None,
        signups_per_address=per_address or recruit.DEFAULT_SIGNUPS_PER_ADDRESS, now=now)
    click.echo(f"recruitment link {link.id} for campaign {name!r} ({role} raters): {recruit.describe_link(link)}")
    click.echo("this link is shown only once:")
    click.echo(recruit.link_url(secret, base_url))
    if id_param:
        click.echo(f"the platform must add &{id_param}=<participant id> to it (on Prolific: URL parameters)")
    for note in filter(None, [recruit.capacity_note(ws, link),
                              None if completion_code or completion_url else
                              "no --completion-code or --completion-url: the end page only thanks the participant"]):
        click.echo(f"note: {note}")

# The subcommands this module adds to `cpdm campaign` (rating_cmds adds them).
CAMPAIGN_COMMANDS = (campaign_recruit_cmd,)
