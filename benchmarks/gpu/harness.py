"""What every part of the GPU suite runs inside: figures, a time budget, and a process of its own.

Each part runs in a process of its own (:func:`run_part`), so that a crash,
a CUDA error or an exhausted memory in one part leaves the others alone, and
so that a part still busy when its budget is spent can be stopped. The
suite's process imports the heavy modules once and never touches CUDA, so
every part forked from it starts with them loaded and initialises CUDA
itself; if an import did initialise CUDA (:func:`fork_is_safe`), each part
starts a fresh interpreter instead.

A part records each figure as soon as it is measured (:class:`Recorder`
writes them to a file after each one); a part stopped at its budget keeps
what it measured. Inside a part, :meth:`PartContext.attempt` runs one
measurement: it is skipped when the budget left is smaller than what it
needs, and its failure is recorded in one line while the part goes on.
"""

from __future__ import annotations

import gc
import importlib
import json
import multiprocessing
import os
import signal
import sys
import time
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

# Seconds a part may run past its budget to write its last figure before it is told to stop.
GRACE_S = 5.0
# Seconds a part told to stop (SIGTERM) gets to stop its own child processes before it is killed.
STOP_WAIT_S = 10.0
DONE = "done"
STOPPED = "stopped at its time budget"


class PartStopped(BaseException):
    """The part was told to stop (SIGTERM at the end of its budget); not an error of the code measured."""


@dataclass
class Figure:
    """One measured figure as the table shows it; ``value`` None means not measured (see ``detail``)."""

    name: str
    value: float | int | str | None
    unit: str = ""
    detail: str = ""
    target: str = ""
    met: bool | None = None

    def value_text(self) -> str:
        """The value with a sensible number of digits, and its unit."""
        if self.value is None:
            return "—"
        if isinstance(self.value, float):
            digits = 3 if abs(self.value) < 10 else 1 if abs(self.value) < 1000 else 0
            text = f"{self.value:,.{digits}f}"
        else:
            text = str(self.value)
        return f"{text} {self.unit}".strip()

    def line(self) -> str:
        """One printed line: name, value, target and whether it is met."""
        target = f"  (target {self.target}: {'met' if self.met else 'NOT met'})" if self.target and self.met is not None else ""
        detail = f"  [{self.detail}]" if self.detail else ""
        return f"  {self.name}: {self.value_text()}{target}{detail}"


class Recorder:
    """A part's figures and notes, written to ``path`` (JSON) after every change."""

    def __init__(self, path: Path, echo: bool = True):
        self.path = Path(path)
        self.echo = echo
        self.figures: list[Figure] = []
        self.notes: list[str] = []
        self.status: str | None = None
        self.error: str | None = None
        self.child_pids: list[int] = []  # processes the part started, stopped by the suite if the part is killed

    def add(self, figure: Figure) -> Figure:
        self.figures.append(figure)
        if self.echo:
            print(figure.line(), flush=True)
        self.save()
        return figure

    def note(self, text: str) -> None:
        self.notes.append(text)
        if self.echo:
            print(f"  note: {text}", flush=True)
        self.save()

    def started_process(self, pid: int) -> None:
        self.child_pids.append(pid)
        self.save()

    def ended_process(self, pid: int) -> None:
        if pid in self.child_pids:
            self.child_pids.remove(pid)
            self.save()

    def finish(self, status: str, error: str | None = None) -> None:
        self.status, self.error = status, error
        self.save()

    def as_dict(self) -> dict:
        return {"status": self.status, "error": self.error, "figures": [asdict(f) for f in self.figures],
                "notes": list(self.notes), "child_pids": list(self.child_pids)}

    def save(self) -> None:
        """Write atomically: a part killed mid-write leaves the previous version."""
        partial = self.path.with_name(self.path.name + ".partial")
        partial.write_text(json.dumps(self.as_dict(), indent=1), encoding="utf-8")
        os.replace(partial, self.path)

    @staticmethod
    def load(path: Path) -> dict:
        """What a part recorded, or an empty record if it wrote nothing."""
        try:
            return json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {"status": None, "error": None, "figures": [], "notes": [], "child_pids": []}


class Budget:
    """A deadline: seconds left, and whether a step of a given length still fits."""

    def __init__(self, seconds: float):
        self.seconds = float(seconds)
        self.deadline = time.monotonic() + self.seconds

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def allows(self, seconds: float) -> bool:
        return self.left() >= seconds


@dataclass
class Settings:
    """What a part needs to know of the run: dry or real, the device, where to put scratch files."""

    dry_run: bool
    scratch: Path
    device: str = "cuda"

    @property
    def cuda(self) -> bool:
        return self.device.startswith("cuda")


@dataclass
class PartContext:
    """What a running part sees: the run's settings, its budget, its recorder and the device's description."""

    settings: Settings
    budget: Budget
    recorder: Recorder
    device_info: dict = field(default_factory=dict)

    @property
    def device(self) -> str:
        return self.settings.device

    @property
    def dry_run(self) -> bool:
        return self.settings.dry_run

    def record(self, name: str, value, unit: str = "", detail: str = "", target: str = "",
               met: bool | None = None) -> Figure:
        return self.recorder.add(Figure(name, plain(value), unit, detail, target, None if met is None else bool(met)))

    def attempt(self, name: str, measure: Callable[[], None], needs_s: float = 0.0) -> bool:
        """Run one measurement unless the budget cannot hold ``needs_s`` more seconds; record a failure in one line.

        Returns whether it ran to the end. A failure frees what CUDA memory
        it left, so the next measurement starts clean.
        """
        left = self.budget.left()
        if left < needs_s:
            self.record(name, None, detail=f"skipped: {max(left, 0):.0f} s of the budget left, it needs about {needs_s:.0f} s")
            return False
        try:
            measure()
            return True
        except Exception as exc:  # any failure of the code measured: recorded, and the part goes on
            traceback.print_exc(file=sys.stderr)
            self.record(name, None, detail=f"failed: {one_line(exc)}")
        release_memory()  # outside the except clause, whose traceback holds the failed measurement's tensors
        return False


@dataclass(frozen=True)
class Part:
    """One part of the suite: its name, what it measures, the module whose ``run`` it is, its budgets in seconds.

    The module is imported in the part's own process (and is named, not
    held, so that a part can also start in a fresh interpreter).
    """

    name: str
    title: str
    module: str
    budget_s: float
    dry_budget_s: float

    def budget(self, settings: Settings) -> float:
        return self.dry_budget_s if settings.dry_run else self.budget_s

    def run(self, context: PartContext) -> None:
        importlib.import_module(self.module).run(context)


def plain(value):
    """A number as Python's own (numpy's scalars, which comparisons and pandas hand out, are not JSON)."""
    return value.item() if hasattr(value, "item") else value


def one_line(exc: BaseException, limit: int = 240) -> str:
    """An exception as one line: its type and the first line of its message."""
    message = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    text = f"{type(exc).__name__}: {message}" if message else type(exc).__name__
    return text if len(text) <= limit else text[: limit - 1] + "…"


def synchronize(device: str) -> None:
    """Wait for the GPU's queued work (timings must not end before the work does); nothing on the CPU."""
    if str(device).startswith("cuda"):
        import torch

        torch.cuda.synchronize()


def release_memory() -> None:
    """Collect garbage and hand CUDA's cached blocks back, between measurements."""
    gc.collect()
    import torch

    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.empty_cache()


class PeakGPUMemory:
    """Peak allocated CUDA memory (GB) during a block; None on the CPU (a forked part's RSS would mislead)."""

    def __init__(self, device: str):
        self.cuda = str(device).startswith("cuda")
        self.gb: float | None = None

    def __enter__(self) -> "PeakGPUMemory":
        if self.cuda:
            import torch

            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        return self

    def __exit__(self, *exc) -> None:
        if self.cuda:
            import torch

            torch.cuda.synchronize()
            self.gb = torch.cuda.max_memory_allocated() / 1e9


def timed(device: str, function: Callable, /, *args, **kwargs) -> tuple[float, object]:
    """(seconds, result) of ``function(*args, **kwargs)``, the device's queued work included."""
    synchronize(device)
    started = time.perf_counter()
    result = function(*args, **kwargs)
    synchronize(device)
    return time.perf_counter() - started, result


# --- each part in its own process -----------------------------------------------------------------------

def fork_is_safe(cuda: bool, timeout_s: float = 60.0) -> bool:
    """Whether a process forked from this one can still use CPU threads and, if ``cuda``, CUDA.

    It cannot use CUDA once this process has initialised the CUDA driver
    (torch then refuses CUDA in forked children), nor CPU threads if this
    process had started OpenMP's thread pool (the child's first parallel
    operation waits forever). The suite's process only imports modules; a
    forked child checks that none of those imports did either.
    """
    def ask() -> dict:
        import torch

        torch.ones(1 << 22).add_(1).sum()  # large enough to run in parallel
        return {"bad_fork": bool(torch.cuda._is_in_bad_fork())}

    answer = fork_call(ask, timeout_s)
    return "error" not in answer and not (cuda and answer["bad_fork"])


def _stop_on_sigterm(signum, frame) -> None:
    raise PartStopped()


def quiet_progress_bars() -> None:
    """No loading and saving bars from diffusers, transformers and the hub: the part prints its figures.

    The libraries read the variable when imported; those already imported
    (before the part's process was forked) are told directly.
    """
    os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"
    for module in ("diffusers.utils.logging", "transformers.utils.logging"):
        if module in sys.modules:
            sys.modules[module].disable_progress_bar()


def _part_main(part: Part, settings: Settings, device_info: dict, partial: Path) -> None:
    """The process of one part: run it under its budget and record how it ended."""
    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    quiet_progress_bars()
    if settings.dry_run:
        # Tiny models on shared CPUs: a second thread only waits for a core (each small operation then takes
        # milliseconds), and the dry run checks the code paths, not the speed.
        import torch

        torch.set_num_threads(1)
    recorder = Recorder(partial)
    recorder.save()
    context = PartContext(settings, Budget(part.budget(settings)), recorder, device_info)
    try:
        part.run(context)
        recorder.finish(DONE)
    except PartStopped:
        recorder.finish(STOPPED)
    except Exception as exc:
        traceback.print_exc(file=sys.stderr)
        recorder.finish("failed", one_line(exc))
    sys.stdout.flush()
    sys.stderr.flush()


def run_part(part: Part, settings: Settings, device_info: dict, start_method: str = "fork") -> dict:
    """Run ``part`` in a process of its own under its budget; what it recorded, how it ended and how long it took.

    Past its budget (and a few seconds' grace to write its last figure) the
    part is sent SIGTERM, which lets it stop its own child processes, then
    killed; what it had recorded stays.
    """
    partial = settings.scratch / f"{part.name}.json"
    budget = part.budget(settings)
    process = multiprocessing.get_context(start_method).Process(
        target=_part_main, args=(part, settings, device_info, partial), name=f"gpu-suite-{part.name}")
    started = time.monotonic()
    process.start()
    process.join(budget + GRACE_S)
    over_budget = process.is_alive()
    if over_budget:
        process.terminate()
        process.join(STOP_WAIT_S)
        if process.is_alive():
            process.kill()
            process.join()
    result = Recorder.load(partial)
    if result.get("status") is None:  # killed before it could stop what it had started
        kill_leftovers(result.get("child_pids", []))
        result["status"] = STOPPED if over_budget else f"exited with code {process.exitcode} before recording its end"
    result["seconds"] = round(time.monotonic() - started, 1)
    result["budget_s"] = budget
    return result


def kill_leftovers(pids: list[int]) -> None:
    """Kill processes a part started and left running (a part killed before it could stop them)."""
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


def fork_call(function: Callable[[], dict], timeout_s: float = 120.0) -> dict:
    """``function()`` run in a forked process; its dict result (the caller's process stays CUDA-free)."""
    context = multiprocessing.get_context("fork")
    receiver, sender = context.Pipe(duplex=False)

    def child() -> None:
        try:
            sender.send(function())
        except BaseException as exc:  # sent back: the caller decides
            sender.send({"error": one_line(exc)})

    process = context.Process(target=child, name="gpu-suite-probe")
    process.start()
    sender.close()
    try:
        result = receiver.recv() if receiver.poll(timeout_s) else {"error": f"no answer within {timeout_s:.0f} s"}
    except EOFError:
        result = {"error": "the probe process exited without an answer"}
    process.join(5)
    if process.is_alive():
        process.kill()
        process.join()
    return result
