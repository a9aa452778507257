"""Start and stop the Streamlit app (``app.py`` at the repository root) against a workspace.

The app finds its workspace through the environment variable
``CPDM_WORKSPACE`` (an absolute path), so one app file serves any workspace.
Streamlit's main script is not ``app.py`` itself but ``cpdm/app/entry/main.py``,
which runs the app file named by ``CPDM_APP``: with ``pages/`` beside its main
script Streamlit would serve its automatic page list, running page files
without the app's sign-in, until someone opened ``/``.
Raters' servers run without Streamlit's file watcher; ``dev=True`` turns it on.
The server runs in its own process group: stopping it stops Streamlit and
anything it started, and a server started here never outlives the
:func:`running_app` block (or the ``cpdm serve`` command) that started it,
even one killed with SIGKILL: its process dies with its parent
(:mod:`cpdm.app.process`). A start that finds an app left running on its port
by an older ``cpdm serve`` names that app's PID.

Example::

    with running_app("annotations/workspace", port=8502) as server:
        print(server.url)         # http://127.0.0.1:8502
"""

from __future__ import annotations

import importlib.util
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from cpdm.app import entry as app_entry
from cpdm.app import process as app_process
from cpdm.app.entry import APP_ENV
from cpdm.errors import CpdmError
from cpdm.store.workspace import open_workspace, resolve_workspace_path

REPO_ROOT = Path(__file__).resolve().parents[2]  # cpdm/app/serve.py -> the checkout
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8501
STARTUP_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 10.0


def find_app(repo_root: Path | None = None) -> Path:
    """The Streamlit entry ``app.py``: next to the cpdm package in a checkout, else the installed ``cpdm_app``.

    A source checkout keeps ``app.py`` and ``pages/`` at the top of the
    repository; ``pip install .`` installs the same files as the package
    ``cpdm_app`` (see pyproject.toml). ``repo_root`` looks in that folder only.
    """
    roots = [Path(repo_root)] if repo_root is not None else [REPO_ROOT, *_installed_app_dirs()]
    for root in roots:
        if (root / "app.py").is_file() and (root / "pages").is_dir():
            return root / "app.py"
    raise CpdmError(
        f"the app is not installed: {roots[0] / 'app.py'} not found. Reinstall cpdm (`pip install .` in a "
        "checkout installs the app with the package)"
    )


def _installed_app_dirs() -> list[Path]:
    """Where an installed ``cpdm_app`` package lies (none in a checkout that was never installed)."""
    spec = importlib.util.find_spec("cpdm_app")
    if spec is None or not spec.submodule_search_locations:
        return []
    return [Path(location) for location in spec.submodule_search_locations]


def entry_script() -> Path:
    """Streamlit's main script: ``main.py`` of :mod:`cpdm.app.entry`, a folder with no ``pages/`` in it."""
    return Path(app_entry.__file__).resolve().parent / "main.py"


def streamlit_command(script: Path, host: str, port: int, *, dev: bool = False,
                      starter_pid: int | None = None) -> list[str]:
    """The command line that serves ``script`` headless on ``host:port``, in a process that dies with its starter.

    ``starter_pid`` is the process that will start it (default: this one);
    see :mod:`cpdm.app.process`. Usage statistics are off (no network), and
    the toolbar is in viewer mode so raters see no developer menu or "Deploy"
    button. The file watcher is off: watching a checkout (with its virtual
    environment) costs raters several times the CPU and floods the terminal.
    ``dev`` turns it on, with reruns on save, watching the cpdm package and
    the app's pages.
    """
    if dev:
        watch = ["--server.fileWatcherType", "auto", "--server.runOnSave", "true",
                 "--server.folderWatchList", str(Path(__file__).resolve().parents[1])]  # the cpdm package
    else:
        watch = ["--server.fileWatcherType", "none", "--server.runOnSave", "false"]
    return app_process.command(os.getpid() if starter_pid is None else starter_pid, [
        "run", str(script),
        "--server.port", str(port),
        "--server.address", host,
        "--server.headless", "true",
        "--browser.gatherUsageStats", "false",
        "--client.toolbarMode", "viewer",
        # Streamlit's full garbage collection after every script run costs 60-80 ms of
        # CPU with the app's modules loaded, which a rater waits for after every submit.
        "--runner.postScriptGC", "false",
        *watch,
    ])  # fmt: skip


def check_port_free(host: str, port: int) -> None:
    """Refuse a port something already listens on, before Streamlit fails on it less clearly."""
    if not 1 <= port <= 65535:
        raise CpdmError(f"--port must be between 1 and 65535, got {port}")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise CpdmError(f"cannot serve on {host}:{port}: {_why_port_is_taken(port, exc)}") from exc


def _why_port_is_taken(port: int, error: OSError) -> str:
    """Why binding ``port`` failed, naming the cpdm app that holds it if it is one (and whether it was left behind)."""
    holder = app_process.port_holder(port)
    if holder is None or not holder.is_cpdm_app(entry_script()):
        return f"{error.strerror or error} (is another app running? use --port)"
    if holder.is_orphan():
        return (f"an earlier cpdm app (PID {holder.pid}) still serves it, left running when the `cpdm serve` that "
                f"started it ended. Stop it with `kill {holder.pid}`, or use --port")
    return (f"another cpdm app (PID {holder.pid}, started by PID {holder.parent_pid}) serves it; stop that one "
            "first, or use --port")


@dataclass
class AppServer:
    """A running Streamlit server: its process (leader of its own process group) and URL."""

    process: subprocess.Popen
    host: str
    port: int
    workspace: Path

    @property
    def url(self) -> str:
        from cpdm.demo.build import base_url_for

        return base_url_for(self.host, self.port)

    def is_running(self) -> bool:
        return self.process.poll() is None


def start_app(
    workspace,
    *,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    app: Path | None = None,
    stdout=None,
    dev: bool = False,
) -> AppServer:
    """Start Streamlit on ``app`` for ``workspace`` in a new process group and return at once.

    The workspace must exist (it is opened, and upgraded if old, first so a
    bad one fails here with a clear message rather than inside the app).
    ``stdout`` receives the server's output (default: this process's);
    ``dev`` turns on Streamlit's file watcher. The server dies with this
    process, and on Linux with the calling thread: call it from a thread
    that lives as long as the server (see :mod:`cpdm.app.process`).
    """
    app = (Path(app) if app is not None else find_app()).resolve()
    root = resolve_workspace_path(workspace).absolute()
    open_workspace(root).close()
    check_port_free(host, port)
    env = dict(os.environ, CPDM_WORKSPACE=str(root), **{APP_ENV: str(app)})
    process = subprocess.Popen(
        streamlit_command(entry_script(), host, port, dev=dev),
        cwd=app.parent,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=stdout,
        stderr=subprocess.STDOUT if stdout is not None else None,
        start_new_session=True,
    )
    return AppServer(process, host, port, root)


def health(url: str, timeout: float = 2.0) -> str | None:
    """The body of ``GET url/_stcore/health`` ("ok" when the server is up), or None if it does not answer."""
    try:
        with urllib.request.urlopen(f"{url}/_stcore/health", timeout=timeout) as response:
            return response.read().decode("utf-8", "replace").strip()
    except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
        return None


def wait_until_ready(server: AppServer, timeout: float = STARTUP_TIMEOUT_S) -> None:
    """Wait until the server's health check answers ok; raise if it exits or takes longer than ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not server.is_running():
            raise CpdmError(f"the app exited during startup ({describe_exit(server.process.returncode)}); see its output above")
        if health(server.url) == "ok":
            return
        time.sleep(0.25)
    raise CpdmError(f"the app did not answer on {server.url} within {timeout:.0f} s")


def stop_app(server: AppServer, timeout: float = STOP_TIMEOUT_S) -> None:
    """Stop the server's whole process group: SIGTERM, then SIGKILL if it lingers."""
    pgid = server.process.pid  # leader of its own session, so its pid is the group id
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            break
        try:
            server.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            continue
        if not _group_alive(pgid):
            break
    server.process.wait()


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextmanager
def running_app(
    workspace,
    *,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    app: Path | None = None,
    stdout=None,
    timeout: float = STARTUP_TIMEOUT_S,
) -> Iterator[AppServer]:
    """Start the app, wait until it is ready, and stop it when the block ends, whatever happens."""
    server = start_app(workspace, host=host, port=port, app=app, stdout=stdout)
    try:
        wait_until_ready(server, timeout)
        yield server
    finally:
        stop_app(server)


def serve_forever(workspace, *, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, on_ready=None,
                  dev: bool = False) -> None:
    """Serve until this process is interrupted (Ctrl-C or SIGTERM), then stop the app.

    ``on_ready(server)`` is called once the app answers, e.g. to print links.
    The app stopping by itself (a crash, a kill) is a :class:`CpdmError`
    saying how it ended. ``dev`` turns on Streamlit's file watcher.
    """
    server = start_app(workspace, host=host, port=port, dev=dev)
    previous = signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
    try:
        wait_until_ready(server)
        if on_ready is not None:
            on_ready(server)
        status = server.process.wait()
    except KeyboardInterrupt:
        return
    finally:
        stop_app(server)
        signal.signal(signal.SIGTERM, previous)
    raise CpdmError(f"the app stopped unexpectedly ({describe_exit(status)}); see its output above")


def describe_exit(status: int) -> str:
    """A process's exit status in words: ``exit status 3``, ``killed by signal SIGKILL``."""
    if status < 0:
        try:
            name = signal.Signals(-status).name
        except ValueError:
            name = str(-status)
        return f"killed by signal {name}"
    return f"exit status {status}"


def _raise_keyboard_interrupt(signum, frame):
    raise KeyboardInterrupt
