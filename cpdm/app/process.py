"""The app's server process: tied to the process that starts it, and recognised when one is left behind.

``cpdm serve`` (through :func:`cpdm.app.serve.start_app`) runs Streamlit as::

    python -m cpdm.app.process STARTER_PID run …/cpdm/app/entry/main.py --server.port …

Before handing over to Streamlit's own command line, in this same process,
:func:`die_with_starter` asks the Linux kernel to SIGKILL the process the
moment its parent dies (``prctl(PR_SET_PDEATHSIG)``), however the parent
dies: Ctrl-C and SIGTERM are handled by ``cpdm serve`` itself, but SIGKILL,
an OOM kill or a crash give it no chance to stop the app, which would go on
serving the port. The kernel watches the parent *thread*: the app must be
started from a thread that lives as long as the app (the main thread of
``cpdm serve`` and of the tests).

:func:`port_holder` finds the process that listens on a port, so that a start
which finds an app left running on it (by a ``cpdm serve`` of an older
version, or on a system without the death signal) names its PID.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
from dataclasses import dataclass
from pathlib import Path

MODULE = "cpdm.app.process"
# prctl(2) option: the signal this process gets when its parent dies.
PR_SET_PDEATHSIG = 1
# /proc/net/tcp's state of a listening socket.
TCP_LISTEN = "0A"


def die_with_starter(starter_pid: int) -> bool:
    """Have the kernel SIGKILL this process when its parent dies; exit at once if the starter is already gone.

    Returns False where there is no such signal (not Linux, or prctl refused):
    the app then outlives a killed starter, as it did before this existed.
    """
    if not sys.platform.startswith("linux"):
        return False
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
        return False
    # The starter may have died between starting this process and the prctl call: this process
    # would then already belong to another parent, and no death signal would ever come.
    if os.getppid() != starter_pid:
        os._exit(1)
    return True


def command(starter_pid: int, streamlit_arguments: list[str]) -> list[str]:
    """The command line of an app process started by ``starter_pid``, running ``streamlit ARGUMENTS``."""
    return [sys.executable, "-m", MODULE, str(starter_pid), *streamlit_arguments]


def main(argv: list[str]) -> None:
    """``python -m cpdm.app.process STARTER_PID STREAMLIT_ARGUMENTS…``: tie this process to its starter, run Streamlit."""
    starter_pid, streamlit_arguments = int(argv[0]), argv[1:]
    die_with_starter(starter_pid)
    from streamlit.web.cli import main as streamlit_main

    sys.argv = ["streamlit", *streamlit_arguments]
    streamlit_main(args=streamlit_arguments, prog_name="streamlit")


@dataclass(frozen=True)
class PortHolder:
    """A process that listens on a TCP port: its PID, command line and parent's PID."""

    pid: int
    command: tuple[str, ...]
    parent_pid: int

    def is_cpdm_app(self, entry_script: Path) -> bool:
        """Whether it is a cpdm app server: this module's process, or Streamlit running cpdm's entry script."""
        return MODULE in self.command or str(entry_script) in self.command

    def starter_pid(self) -> int | None:
        """The PID of the process that started it, as its command line records it (None for an older app)."""
        if MODULE not in self.command:
            return None
        return int(self.command[self.command.index(MODULE) + 1])

    def is_orphan(self) -> bool:
        """Whether the process that started it is gone.

        An app of this version knows its starter. An older one (``python -m
        streamlit run …``) was started by a ``cpdm`` command: it is an orphan
        once its parent is no longer one (init, or a subreaper, adopted it).
        """
        starter = self.starter_pid()
        if starter is not None:
            return self.parent_pid != starter
        return self.parent_pid == 1 or "cpdm" not in " ".join(_command_line(self.parent_pid))


def port_holder(port: int) -> PortHolder | None:
    """The process that listens on TCP ``port`` (IPv4 or IPv6), if this user may see it; None elsewhere than Linux."""
    sockets = {f"socket:[{inode}]" for inode in _listening_inodes(port)}
    if not sockets:
        return None
    for process in Path("/proc").iterdir():
        if process.name.isdigit() and sockets & _open_sockets(process):
            pid = int(process.name)
            return PortHolder(pid, _command_line(pid), _parent_pid(pid))
    return None


def _listening_inodes(port: int) -> set[str]:
    """The inodes of the sockets listening on ``port``, from /proc/net/tcp and tcp6."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            rows = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            fields = row.split()
            local_address, state, inode = fields[1], fields[3], fields[9]
            if state == TCP_LISTEN and int(local_address.rsplit(":", 1)[1], 16) == port:
                inodes.add(inode)
    return inodes


def _open_sockets(process: Path) -> set[str]:
    """What a process's file descriptors point to (empty for a process of another user, or one that ended)."""
    try:
        descriptors = list((process / "fd").iterdir())
    except OSError:
        return set()
    targets = set()
    for descriptor in descriptors:
        try:
            targets.add(os.readlink(descriptor))
        except OSError:  # closed since the listing
            continue
    return targets


def _command_line(pid: int) -> tuple[str, ...]:
    try:
        return tuple(Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")[:-1])
    except OSError:
        return ()


def _parent_pid(pid: int) -> int:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    return next((int(line.split()[1]) for line in status.splitlines() if line.startswith("PPid:")), 0)


if __name__ == "__main__":
    main(sys.argv[1:])
