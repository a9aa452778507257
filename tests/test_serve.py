"""Serving the app: the Streamlit server starts on a workspace, answers, and never outlives its starter."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import pytest

from cpdm.app import process as app_process, serve
from cpdm.testing import free_port
from cpdm.cli import cli
from cpdm.demo.build import build_demo, demo_links
from cpdm.errors import CpdmError

REPO_ROOT = Path(__file__).resolve().parent.parent


def _answers(port: int) -> bool:
    """Whether anything accepts TCP connections on 127.0.0.1:port."""
    with socket.socket() as probe:
        probe.settimeout(0.5)
        return probe.connect_ex(("127.0.0.1", port)) == 0


def _group_gone(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return True
    return False


@pytest.fixture(scope="module")
def demo_workspace(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("serve") / "ws"
    build_demo(path, seed=0, analysis_data=False)
    return path


@pytest.fixture
def app_server(demo_workspace, tmp_path):
    """The repository's app.py served on a free loopback port; stopped (whole process group) whatever happens."""
    log = open(tmp_path / "streamlit.log", "wb")
    server = serve.start_app(demo_workspace, host="127.0.0.1", port=free_port(), stdout=log)
    try:
        serve.wait_until_ready(server, timeout=90)
        yield server
    finally:
        serve.stop_app(server)
        log.close()


@pytest.mark.slow
def test_app_answers_health_and_root(app_server, demo_workspace):
    assert app_server.process.args[1:5] == ["-m", "cpdm.app.process", str(os.getpid()), "run"]
    assert Path(app_server.process.args[5]) == serve.entry_script()
    assert serve.health(app_server.url) == "ok"
    with urllib.request.urlopen(f"{app_server.url}/", timeout=10) as response:
        assert response.status == 200
        assert "text/html" in response.headers.get("Content-Type", "")
        assert b"<html" in response.read().lower()
    assert app_server.workspace == demo_workspace.absolute()


@pytest.mark.slow
def test_stopping_ends_the_whole_process_group(demo_workspace, tmp_path):
    with open(tmp_path / "log", "wb") as log:
        with serve.running_app(demo_workspace, port=free_port(), stdout=log, timeout=90) as server:
            pgid = server.process.pid
            port = server.port
            assert _answers(port)
    assert server.process.poll() is not None
    assert _group_gone(pgid)
    assert not _answers(port)


@pytest.mark.slow
def test_cpdm_serve_prints_demo_links_and_stops_with_its_command(demo_workspace, tmp_path):
    """`cpdm serve` in a child process: it prints the demo links for its port, and SIGTERM stops the app too."""
    port = free_port()
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env.pop("CPDM_WORKSPACE", None)
    command = [sys.executable, "-c", "from cpdm.cli import main; main()", "serve", "--port", str(port), "--workspace", str(demo_workspace)]
    out_path = tmp_path / "out"
    with open(out_path, "wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        try:
            expected = demo_links(0, f"http://127.0.0.1:{port}")[0].url
            deadline = time.monotonic() + 90
            while expected not in out_path.read_text() and time.monotonic() < deadline and process.poll() is None:
                time.sleep(0.25)
            assert expected in out_path.read_text(), out_path.read_text()
            assert _answers(port)
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=30)
        finally:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
    deadline = time.monotonic() + 10
    while _answers(port) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _answers(port), "the app outlived `cpdm serve`"


def test_missing_app_is_reported_clearly(tmp_path):
    with pytest.raises(CpdmError, match=r"app is not installed: .*app\.py not found"):
        serve.find_app(tmp_path)
    assert serve.find_app(REPO_ROOT) == REPO_ROOT / "app.py"


def test_streamlit_command_line():
    command = serve.streamlit_command(Path("/x/app.py"), "127.0.0.1", 8600)
    assert command[:6] == [sys.executable, "-m", "cpdm.app.process", str(os.getpid()), "run", "/x/app.py"]
    options = dict(zip(command[6::2], command[7::2]))
    assert options == {
        "--server.port": "8600",
        "--server.address": "127.0.0.1",
        "--server.headless": "true",
        "--browser.gatherUsageStats": "false",
        "--client.toolbarMode": "viewer",
        "--runner.postScriptGC": "false",
        "--server.fileWatcherType": "none",
        "--server.runOnSave": "false",
    }


def test_busy_port_is_refused_before_starting(ws):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(CpdmError, match=f"cannot serve on 127.0.0.1:{port}.*--port"):
            serve.start_app(ws.root, port=port)
        holder = app_process.port_holder(port)
        assert holder.pid == os.getpid() and not holder.is_cpdm_app(serve.entry_script())


def test_serve_refuses_a_missing_workspace(runner, tmp_path):
    result = runner.invoke(cli, ["serve", "--workspace", str(tmp_path / "nowhere")])
    assert result.exit_code == 1
    assert result.output.startswith("error: no workspace at") and "Traceback" not in result.output
    assert not (tmp_path / "nowhere").exists()


def test_demo_refuses_a_busy_port_before_building(runner, tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = runner.invoke(cli, ["demo", "--port", str(port), "--workspace", str(tmp_path / "ws")])
    assert result.exit_code == 1
    assert result.output.startswith(f"error: cannot serve on 127.0.0.1:{port}")
    assert not (tmp_path / "ws").exists()


def test_dev_command_line_turns_the_file_watcher_on():
    command = serve.streamlit_command(Path("/x/main.py"), "127.0.0.1", 8600, dev=True)
    options = dict(zip(command[6::2], command[7::2]))
    assert options["--server.fileWatcherType"] == "auto" and options["--server.runOnSave"] == "true"
    assert options["--server.folderWatchList"] == str(REPO_ROOT / "cpdm")


def test_entry_script_has_no_pages_folder_beside_it():
    entry = serve.entry_script()
    assert entry.is_file() and entry.parent != REPO_ROOT
    assert not (entry.parent / "pages").exists()


@pytest.mark.parametrize("command", [["serve"], ["serve", "--dev"], ["demo"], ["demo", "--dev"]])
def test_serve_and_demo_pass_dev_to_the_server(runner, demo_workspace, monkeypatch, command):
    calls = []
    monkeypatch.setattr(serve, "serve_forever", lambda root, **kwargs: calls.append(kwargs))
    result = runner.invoke(cli, [*command, "--port", str(free_port()), "--workspace", str(demo_workspace)])
    assert result.exit_code == 0, result.output
    assert [call["dev"] for call in calls] == ["--dev" in command]


def _child_pids(pid: int) -> list[int]:
    children = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in children.read_text().split()] if children.exists() else []


@contextmanager
def _command_serving(command: str, workspace: Path, port: int, out_path: Path):
    """`cpdm COMMAND` in a child process until its app answers; yields it and its app's PID; ends it at the end."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env.pop("CPDM_WORKSPACE", None)
    args = [sys.executable, "-c", "from cpdm.cli import main; main()", command, "--port", str(port),
            "--workspace", str(workspace)]
    with open(out_path, "wb") as out:
        process = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        try:
            deadline = time.monotonic() + 90
            while "app running at" not in out_path.read_text() and time.monotonic() < deadline and process.poll() is None:
                time.sleep(0.25)
            assert "app running at" in out_path.read_text(), out_path.read_text()
            (app_pid,) = _child_pids(process.pid)
            yield process, app_pid
        finally:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


@pytest.mark.slow
@pytest.mark.parametrize("command", ["serve", "demo"])
def test_a_dead_app_makes_serve_and_demo_exit_non_zero_saying_why(demo_workspace, tmp_path, command):
    """The app killed under `cpdm serve` / `cpdm demo` (as an OOM kill would): the command says so and exits 1."""
    out_path = tmp_path / "out"
    with _command_serving(command, demo_workspace, free_port(), out_path) as (process, app_pid):
        app_args = Path(f"/proc/{app_pid}/cmdline").read_bytes().decode().split("\0")
        assert "--server.fileWatcherType\0none" in "\0".join(app_args)  # raters' servers watch no files
        os.killpg(app_pid, signal.SIGKILL)  # the app leads its own process group
        status = process.wait(timeout=30)
    output = out_path.read_text()
    assert status == 1, output
    assert "error: the app stopped unexpectedly (killed by signal SIGKILL)" in output


def _gone(pid: int, timeout: float) -> bool:
    """Whether process ``pid`` has ended (or become a zombie) within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            return True
        if state == "Z":
            return True
        time.sleep(0.1)
    return False


def test_the_app_process_refuses_to_run_once_its_starter_is_gone():
    """Started for a parent it does not have (its starter died before it could tie itself to it): it exits at once."""
    gone = subprocess.run([sys.executable, "-m", "cpdm.app.process", "1", "version"], capture_output=True, text=True,
                          timeout=60)
    assert gone.returncode == 1 and "Streamlit" not in gone.stdout
    tied = subprocess.run(app_process.command(os.getpid(), ["version"]), capture_output=True, text=True, timeout=60)
    assert tied.returncode == 0 and "Streamlit, version" in tied.stdout


@pytest.mark.slow
def test_the_app_dies_with_a_killed_serve_and_the_port_serves_again(demo_workspace, tmp_path):
    """`cpdm serve` killed with SIGKILL (no chance to stop its app): the app dies too, and a new start gets the port."""
    port = free_port()
    with _command_serving("serve", demo_workspace, port, tmp_path / "out") as (process, app_pid):
        process.kill()  # SIGKILL, to `cpdm serve` alone
        process.wait(timeout=30)
        app_gone = _gone(app_pid, timeout=10)
        if not app_gone:
            os.killpg(app_pid, signal.SIGKILL)  # the app leads its own process group
        assert app_gone, "the app outlived its killed `cpdm serve`"
    with open(tmp_path / "again", "wb") as log, serve.running_app(demo_workspace, port=port, stdout=log,
                                                                  timeout=90) as server:
        assert serve.health(server.url) == "ok"


@pytest.mark.slow
def test_a_start_names_the_app_an_older_serve_left_on_its_port(demo_workspace, tmp_path):
    """An app left serving by an older `cpdm serve` (plain `streamlit run`, no death signal): the start names its PID."""
    port = free_port()
    env = dict(os.environ, CPDM_WORKSPACE=str(demo_workspace), CPDM_APP=str(serve.find_app()))
    legacy = ["-m", "streamlit", *serve.streamlit_command(serve.entry_script(), "127.0.0.1", port)[4:]]
    # Started through a shell that exits at once: the app is left with no parent, as a killed `cpdm serve` left it.
    shell = subprocess.run(["sh", "-c", f'"$0" "$@" >{tmp_path / "orphan.log"} 2>&1 </dev/null & echo $!',
                            sys.executable, *legacy], env=env, capture_output=True, text=True, check=True)
    orphan = int(shell.stdout)
    try:
        deadline = time.monotonic() + 90
        while not _answers(port) and time.monotonic() < deadline:
            time.sleep(0.25)
        assert _answers(port), (tmp_path / "orphan.log").read_text()
        holder = app_process.port_holder(port)
        assert holder is not None and holder.pid == orphan and holder.is_orphan()
        with pytest.raises(CpdmError) as refused:
            serve.start_app(demo_workspace, port=port)
        assert str(refused.value) == (
            f"cannot serve on 127.0.0.1:{port}: an earlier cpdm app (PID {orphan}) still serves it, left running "
            f"when the `cpdm serve` that started it ended. Stop it with `kill {orphan}`, or use --port")
    finally:
        os.kill(orphan, signal.SIGKILL)
