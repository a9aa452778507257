"""What the ``cpdm`` commands share: the common options, opening the workspace, errors as one line, tables.

The command modules import this module, never the ``cli`` group itself: the
group (``cpdm.cli``) imports them and registers their commands.
"""

from __future__ import annotations

import functools

import click

from cpdm.errors import CpdmError
from cpdm.store.workspace import Workspace, open_workspace


def workspace_option(func):
    """Add ``--workspace DIR`` (default: $CPDM_WORKSPACE or annotations/workspace)."""
    return click.option(
        "--workspace",
        "-w",
        "workspace",
        type=click.Path(file_okay=False),
        default=None,
        envvar="CPDM_WORKSPACE",
        show_envvar=True,
        help="Workspace folder (default: annotations/workspace).",
    )(func)


def offline_tiny_option(func):
    """Add ``--offline-tiny``: use tiny random-initialised models (tests, CI, demos)."""
    return click.option(
        "--offline-tiny",
        is_flag=True,
        help="Use tiny random-initialised models instead of real weights (no download; for tests and demos).",
    )(func)


def open_ws(workspace: str | None, *, create: bool = False) -> Workspace:
    """Open the workspace named by ``--workspace`` (errors become one-line messages)."""
    return open_workspace(workspace, create=create)


def quiet_option(func):
    """Add ``--quiet``: no progress bar."""
    return click.option("--quiet", "-q", is_flag=True, help="No progress bar.")(func)


# What every bootstrap interval resamples (cpdm.analysis.resampling).
resample_option = click.option(
    "--resample", type=click.Choice(["anchors", "pairs"]), default="anchors", show_default=True,
    help="What the bootstrap resamples: whole anchors (their pairs are not independent), or "
         "single pairs (too narrow; for comparison only).")


def parse_ids(values: tuple[str, ...], what: str) -> list[int] | None:
    """``("1,2", "5")`` -> [1, 2, 5]; None when no option was given; a clear error for anything else.

    An option given with no id in it (``--prompts ""``) is an error, not "all":
    an empty selection (a shell variable that came out empty) must not run on everything.
    """
    if not values:
        return None
    ids = []
    for value in values:
        for part in value.split(","):
            part = part.strip()
            if not part:
                continue
            if not part.isdigit():
                raise CpdmError(f"{what} must be ids separated by commas, got {part!r}")
            ids.append(int(part))
    if not ids:
        raise CpdmError(f"{what} names no ids; leave it out to use all of them")
    return ids


def echo_notes(notes: list[str]) -> None:
    """Print each note as ``note: ...`` on stderr."""
    for note in notes:
        click.echo(f"note: {note}", err=True)


def print_table(records: list[dict], columns: tuple[str, ...]) -> None:
    """Aligned plain-text columns; empty values print as '-'."""
    cells = [[("-" if r[c] in (None, "") else str(r[c])) for c in columns] for r in records]
    widths = [max([len(c)] + [len(row[i]) for row in cells]) for i, c in enumerate(columns)]
    click.echo("  ".join(c.ljust(w) for c, w in zip(columns, widths)).rstrip())
    for row in cells:
        click.echo("  ".join(v.ljust(w) for v, w in zip(row, widths)).rstrip())


class UserError(click.ClickException):
    """A CpdmError on its way out of a command: ``error: <message>``, exit 1."""

    def show(self, file=None) -> None:
        click.echo(f"error: {self.message}", err=True)


def cpdm_command(func):
    """Decorate a command body so a CpdmError becomes one ``error:`` line and exit 1.

    Works the same under ``cpdm`` and click's CliRunner; ``--debug`` keeps the
    traceback.
    """

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except CpdmError as exc:
            root = click.get_current_context().find_root()
            if (root.obj or {}).get("debug"):
                raise
            raise UserError(str(exc)) from exc

    return wrapper
