"""The ``cpdm`` command.

Each area keeps its commands in its own module in this package; this file
holds the group, the options every command shares, and the error handling:
a :class:`~cpdm.errors.CpdmError` is printed as one line on stderr with exit
status 1 (2 for usage errors, as click does), with the traceback only under
``--debug``.
"""

from __future__ import annotations

import functools
import os
import sys

import click

from cpdm import __version__
from cpdm.errors import CpdmError
from cpdm.store.workspace import Workspace, open_workspace

CONTEXT_SETTINGS = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


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


@click.group(context_settings=CONTEXT_SETTINGS)
@click.version_option(__version__, prog_name="cpdm")
@click.option("--debug", is_flag=True, envvar="CPDM_DEBUG", help="Show full tracebacks on errors.")
@click.pass_context
def cli(ctx: click.Context, debug: bool) -> None:
    """cpdm: measure how much text-to-image diffusion models copy artists' work.

    \b
    The workflow:
      curate     anchors (an artist's works) -> prompts -> generated images
      unlearn    erase a concept from the model, generate again
      score      the CM metric: CLIP semantics x Gram-matrix style
      rate       artists and lay raters judge pairs in the browser
      calibrate  agreement, metric-human correlation, the best weighting

    \b
    Start with:
      cpdm demo              build an offline demo workspace and open the app
      cpdm init              create an empty workspace
      cpdm anchors import    bring in anchor images

    Every command takes --workspace DIR (default annotations/workspace, or
    $CPDM_WORKSPACE).
    """
    ctx.ensure_object(dict)
    ctx.obj["debug"] = debug


def main(argv: list[str] | None = None) -> None:
    """Console entry point: run the CLI, turning CpdmError into one clean line."""
    debug = "--debug" in (argv if argv is not None else sys.argv[1:]) or bool(os.environ.get("CPDM_DEBUG"))
    try:
        status = cli.main(args=argv, prog_name="cpdm", standalone_mode=False)
    except click.exceptions.Abort as exc:
        # click turns a Ctrl-C inside a command into Abort (raised from the KeyboardInterrupt):
        # that is an interruption, status 130 as a shell reports it, not a refusal.
        if isinstance(exc.__cause__, KeyboardInterrupt):
            click.echo("interrupted", err=True)
            sys.exit(130)
        click.echo("aborted", err=True)
        sys.exit(1)
    except click.ClickException as exc:
        exc.show()  # UserError prints "error: ...", usage errors print click's usage text
        sys.exit(exc.exit_code)
    except CpdmError as exc:
        if debug:
            raise
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        sys.exit(130)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    # Without standalone mode click returns, not raises, the status of a command that exits.
    if type(status) is int and status != 0:
        sys.exit(status)


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


# Register the commands of each area (imported for their side effect on `cli`).
from cpdm.cli import workspace_cmds  # noqa: E402,F401
from cpdm.cli import demo_cmds  # noqa: E402,F401
from cpdm.cli import analysis_cmds  # noqa: E402,F401
from cpdm.cli import score_cmds  # noqa: E402,F401
from cpdm.cli import rating_cmds  # noqa: E402,F401
from cpdm.cli import recruit_cmds  # noqa: E402,F401
from cpdm.cli import unlearn_cmds  # noqa: E402,F401
from cpdm.cli import curation_cmds  # noqa: E402,F401
from cpdm.cli import jobs_cmds  # noqa: E402,F401
from cpdm.cli import pipeline_cmds  # noqa: E402,F401
