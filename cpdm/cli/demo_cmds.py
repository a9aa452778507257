"""Commands that build the demo and serve the app: demo, serve."""

from __future__ import annotations

import click

from cpdm.cli.options import cpdm_command, workspace_option
from cpdm.app.serve import DEFAULT_HOST, DEFAULT_PORT


def dev_option(func):
    """Add ``--dev``: Streamlit's file watcher on, rerunning the app when its code is saved."""
    return click.option(
        "--dev",
        is_flag=True,
        help="Watch the code and rerun the app on save (for developing cpdm; off by default, as it costs CPU).",
    )(func)


def _echo_links(links, heading: str) -> None:
    """Print the researcher link first, then one line per rater."""
    click.echo(heading)
    for link in links:
        label = "researcher" if link.role == "researcher" else f"{link.role} rater"
        click.echo(f"  {label:<14} {link.name:<18} {link.url}")


@click.command("demo")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True, help="Seed of the procedural images.")
@click.option("--no-serve", is_flag=True, help="Build the workspace and exit without starting the app.")
@click.option("--force", is_flag=True, help="Replace an existing demo workspace (a real workspace is never replaced).")
@click.option("--port", type=click.IntRange(1, 65535), default=DEFAULT_PORT, show_default=True, help="Port of the app.")
@click.option(
    "--analysis-data/--no-analysis-data",
    default=True,
    show_default=True,
    help="Add the simulated-ratings campaign and tiny-model scores that the analysis pages show.",
)
@dev_option
@workspace_option
@cpdm_command
def demo_cmd(seed, no_serve, force, port, analysis_data, dev, workspace):
    """Build an offline demo workspace and open the rating app on it.

    Four synthetic artists (dots, hatching, flat blocks, wavy strokes) x five
    works each, the original (a near-copy) and three demo stand-ins for
    unlearning (demo-style-erased, demo-content-changed, demo-unrelated:
    drawn, not trained; method "demo"), normal pairs and
    attention checks, a campaign "demo", and invite links for one researcher,
    two artists and two lay raters. A second, closed campaign
    "demo-simulated" is rated by simulated raters and every pair is scored
    with tiny random-initialised models, so the analysis pages, `cpdm
    analyze` and `cpdm calibrate` have data at once. No network and no model
    weights needed. The links are also written to WORKSPACE/demo_links.txt.

    Run again with the same seed, it serves the demo already built (with the
    ratings made so far); --force rebuilds it from scratch.

    \b
    Examples:
      cpdm demo                          build and serve on http://127.0.0.1:8501
      cpdm demo --no-serve --seed 7      build only, other images
      cpdm demo --force --port 8502      rebuild an existing demo, serve on 8502
      cpdm analyze --campaign demo-simulated --out reports/demo

    """
    from cpdm.demo.build import base_url_for, build_demo, demo_links, existing_demo_seed
    from cpdm.store.workspace import resolve_workspace_path

    from cpdm.app.serve import check_port_free, find_app

    root = resolve_workspace_path(workspace)
    if not no_serve:  # fail before building, not after
        find_app()
        check_port_free(DEFAULT_HOST, port)
    base_url = base_url_for(DEFAULT_HOST, port)
    if not force and existing_demo_seed(root) == str(seed):
        # Running `make demo` again serves the demo already built (and rated so far).
        click.echo(f"demo workspace already built at {root.absolute()} (seed {seed}); --force rebuilds it")
        if no_serve:
            _echo_links(demo_links(seed, base_url), f"invite links (open once the app runs: cpdm serve --workspace {root}):")
            return
        _serve(root.absolute(), DEFAULT_HOST, port, dev)
        return
    info = build_demo(root, seed, force=force, base_url=base_url, analysis_data=analysis_data)
    counts = ", ".join(f"{count} {kind}" for kind, count in sorted(info.pairs.items()))
    click.echo(
        f"demo workspace built at {info.workspace} (seed {info.seed}): {len(info.artists)} artists x "
        f"{info.anchors // len(info.artists)} works, {len(info.relations)} variants "
        f"({', '.join(info.relations)}), {info.generations} generations, pairs: {counts}; "
        f"campaign {info.campaign_name!r}"
    )
    if no_serve:
        _echo_links(info.links, f"invite links (open once the app runs: cpdm serve --workspace {info.workspace}):")
        return
    _serve(info.workspace, DEFAULT_HOST, port, dev)


@click.command("serve")
@click.option("--port", type=click.IntRange(1, 65535), default=DEFAULT_PORT, show_default=True, help="Port to listen on.")
@click.option(
    "--host",
    default=DEFAULT_HOST,
    show_default=True,
    help="Address to listen on; 0.0.0.0 makes the app reachable from other machines.",
)
@dev_option
@workspace_option
@cpdm_command
def serve_cmd(port, host, dev, workspace):
    """Start the rating and analysis app (Streamlit) on a workspace.

    The app reads the workspace from CPDM_WORKSPACE, which this command sets.
    Raters open their invite link (`cpdm raters invite` prints it); on a demo
    workspace the demo links are printed here. Stop with Ctrl-C. If the app
    stops by itself, the command says how and exits with status 1.

    \b
    Examples:
      cpdm serve --workspace studies/monet
      cpdm serve --host 0.0.0.0 --port 8600
    """
    from cpdm.store.workspace import resolve_workspace_path

    _serve(resolve_workspace_path(workspace).absolute(), host, port, dev)


def _serve(root, host: str, port: int, dev: bool) -> None:
    """Run the app in the foreground, printing the links to open once it answers."""
    from cpdm.demo.build import demo_links
    from cpdm.app.serve import serve_forever
    from cpdm.store.workspace import open_workspace

    with open_workspace(root) as ws:
        seed = ws.get_meta("demo_seed") if ws.is_demo else None

    def on_ready(server) -> None:
        click.echo(f"app running at {server.url} on workspace {root} (Ctrl-C to stop)")
        if seed is not None and seed.isdigit():
            _echo_links(demo_links(int(seed), server.url), "open one of these links:")

    serve_forever(root, host=host, port=port, on_ready=on_ready, dev=dev)

# The commands this module adds to `cpdm` (cpdm.cli registers them).
COMMANDS = (demo_cmd, serve_cmd)
