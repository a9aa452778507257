"""The ``cpdm`` command.

Each area keeps its commands in its own module in this package (the options
they share in :mod:`cpdm.cli.options`); this file holds the group, adds each
module's ``COMMANDS`` to it, and the error handling:
a :class:`~cpdm.errors.CpdmError` is printed as one line on stderr with exit
status 1 (2 for usage errors, as click does), with the traceback only under
``--debug``.
"""

from __future__ import annotations

import os
import sys

import click

from cpdm import __version__
from cpdm.errors import CpdmError
from cpdm.cli import (
    analysis_cmds,
    curation_cmds,
    demo_cmds,
    generate_cmds,
    jobs_cmds,
    chain_cmds,
    rating_cmds,
    score_cmds,
    unlearn_cmds,
    workspace_cmds,
)

CONTEXT_SETTINGS = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


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


# Every area's commands, in the order `cpdm --help` lists them (click sorts them by name).
for _module in (workspace_cmds, demo_cmds, analysis_cmds, score_cmds, rating_cmds, unlearn_cmds, curation_cmds,
                generate_cmds, jobs_cmds, chain_cmds):
    for _command in _module.COMMANDS:
        cli.add_command(_command)
