"""Workspace commands: init, anchors import/list."""

from __future__ import annotations

import click

from cpdm.cli import cli, cpdm_command, open_ws, workspace_option


@cli.command()
@workspace_option
@cpdm_command
def init(workspace):
    """Create an empty workspace (or upgrade an existing one).

    \b
    Example:
      cpdm init --workspace studies/monet
    """
    ws = open_ws(workspace, create=True)
    click.echo(f"workspace ready at {ws.root} (schema version {ws.conn.execute('PRAGMA user_version').fetchone()[0]})")
