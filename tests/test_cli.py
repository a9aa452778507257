"""The `cpdm` command as a whole: help that documents every command, exit codes, one-line errors."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import click
import pytest

from cpdm.cli import cli, main
from cpdm.jobs import queue
from cpdm.store.workspace import init_workspace

REPO = Path(__file__).resolve().parents[1]


def all_commands(group: click.Group = cli, prefix: str = "cpdm") -> list[tuple[str, click.Command]]:
    ctx = click.Context(group)
    found = []
    for name in group.list_commands(ctx):
        command = group.get_command(ctx, name)
        if isinstance(command, click.Group):
            found += all_commands(command, f"{prefix} {name}")
        else:
            found.append((f"{prefix} {name}", command))
    return found


def test_top_level_help_lists_every_command_with_one_line(runner):
    result = runner.invoke(cli, ["--help"])
    assert result.exit_code == 0
    listed = result.output.split("Commands:")[1]
    for name in cli.list_commands(click.Context(cli)):
        line = next(line for line in listed.splitlines() if line.strip().startswith(name + " "))
        assert len(line.split(None, 1)) == 2, f"{name} has no one-line description"


@pytest.mark.parametrize("path,command", all_commands(), ids=[path for path, _ in all_commands()])
def test_every_command_documents_itself_with_an_example(runner, path, command):
    assert command.help and len(command.help.split()) >= 8, f"{path}: help too short"
    assert "Example" in command.help, f"{path}: help has no example"
    assert "--workspace" in [opt for param in command.params for opt in getattr(param, "opts", [])], \
        f"{path}: no --workspace option"
    result = runner.invoke(cli, [*path.split()[1:], "--help"])
    assert result.exit_code == 0 and "Example" in result.output


def test_bad_input_is_one_error_line_with_status_1(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["info", "--workspace", str(tmp_path / "missing")])
    assert exit_info.value.code == 1
    err = capsys.readouterr().err
    assert err.startswith("error: no workspace at") and err.count("\n") == 1 and "Traceback" not in err


def test_usage_errors_exit_with_status_2(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["no-such-command"])
    assert exit_info.value.code == 2
    with pytest.raises(SystemExit) as exit_info:
        main(["score", "--workspace", "x", "--style", "no-such-backbone", "--all"])
    assert exit_info.value.code == 2


def test_debug_shows_the_traceback(tmp_path):
    from cpdm.errors import CpdmError

    with pytest.raises(CpdmError):
        main(["--debug", "info", "--workspace", str(tmp_path / "missing")])


def test_ctrl_c_in_a_running_command_ends_it_as_interrupted_with_status_130(tmp_path):
    ws = init_workspace(tmp_path / "ws")
    job = queue.enqueue(ws, "noop")
    queue.append_log(ws, job, "first line")
    following = subprocess.Popen(
        [sys.executable, "-m", "cpdm", "jobs", "log", str(job), "--follow", "--workspace", str(ws.root)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    try:
        assert following.stdout.readline() == "first line\n"  # it follows the log now, waiting for more
        following.send_signal(signal.SIGINT)
        _, err = following.communicate(timeout=60)
    finally:
        following.kill()
    assert following.returncode == 130
    assert err.strip() == "interrupted"


@pytest.mark.parametrize("raised, status, line", [
    (KeyboardInterrupt(), 130, "interrupted"),
    (click.exceptions.Abort(), 1, "aborted"),
    (EOFError(), 1, "aborted"),  # input closed under a command that reads it: click aborts
], ids=["interrupted", "aborted", "end of input"])
def test_an_interrupted_or_aborted_command_exits_with_its_status_and_one_line(monkeypatch, capsys, tmp_path,
                                                                               raised, status, line):
    def stopped(*args, **kwargs):
        raise raised

    monkeypatch.setattr("cpdm.cli.options.open_workspace", stopped)
    with pytest.raises(SystemExit) as exit_info:
        main(["info", "--workspace", str(tmp_path)])
    assert exit_info.value.code == status
    assert capsys.readouterr().err.strip() == line
