"""``cpdm campaign refresh``: recompute an active 2afc campaign's triplet queue (see cpdm.rating.active).

A subcommand of ``cpdm campaign``: :mod:`cpdm.cli.rating_cmds` adds :data:`CAMPAIGN_COMMANDS` to that group.
"""

from __future__ import annotations

import click

from cpdm.cli.options import cpdm_command, open_ws, workspace_option


@click.command("refresh")
@click.argument("name")
@click.option("--now", "inline", is_flag=True, help="Refresh here and now instead of enqueueing a job.")
@workspace_option
@cpdm_command
def campaign_refresh_cmd(name, inline, workspace):
    """Recompute the triplet queue of an active 2afc campaign from its judgments so far.

    Only triplets whose order under CM_w flips inside the current interval
    of w stay offered, the most uncertain first; the claim path reads the
    priorities this writes, so raters are never held up. By default a
    refresh-triplets job is enqueued for a worker (`cpdm worker`); --now
    runs it in this process.

    \b
    Examples:
      cpdm campaign refresh duel
      cpdm campaign refresh duel --now
    """
    from cpdm.jobs.kinds.refresh_triplets import enqueue_refresh
    from cpdm.rating.active import active_campaign, refresh_priorities
    from cpdm.rating.campaigns import campaign_id_by_name

    ws = open_ws(workspace)
    campaign_id = campaign_id_by_name(ws, name)
    active_campaign(ws.conn, campaign_id)  # refuses anything but an active 2afc campaign, before a job is queued
    if inline:
        click.echo(refresh_priorities(ws, campaign_id).describe())
        return
    job_id, new = enqueue_refresh(ws, name)
    click.echo(f"{'enqueued' if new else 'already queued:'} job {job_id} (refresh-triplets {name}); "
               "a worker runs it (`cpdm worker`)")


# The subcommands this module adds to `cpdm campaign` (rating_cmds adds them).
CAMPAIGN_COMMANDS = (campaign_refresh_cmd,)
