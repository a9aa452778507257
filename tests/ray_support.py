"""Run inside Ray worker processes by the Ray tests: switches that kill a task's worker once.

The tests start Ray with this module's :func:`install_crash_switch` as the
workers' setup hook. Files in the folder named by ``$CPDM_TEST_CRASH_DIR``
arm the switches:

* While ``CRASH_ARMED`` exists, the first worker to make images claims
  ``CRASHED`` (atomically, so only one does) and dies as a killed process
  would, before returning anything; Ray must then run the task again.
* While ``UNLEARN_CRASH_ARMED`` exists (JSON: ``wait_for``, a path, and
  ``after_step``), every checkpoint an unlearning run saves is noted in
  ``UNLEARN_SAVES`` (process id and step), and the first run to save one
  after step ``after_step`` waits until the file ``wait_for`` exists (the
  driver has stored an earlier checkpoint), claims ``UNLEARN_CRASHED`` and
  dies before saving it.
* While the file ``OUT_OF_MEMORY`` exists there, every worker's images fail
  with torch's out-of-memory error, as a GPU that runs out of memory raises it.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

CRASH_DIR_VARIABLE = "CPDM_TEST_CRASH_DIR"
ARMED = "CRASH_ARMED"
CRASHED = "CRASHED"
OUT_OF_MEMORY = "OUT_OF_MEMORY"
UNLEARN_ARMED = "UNLEARN_CRASH_ARMED"
UNLEARN_CRASHED = "UNLEARN_CRASHED"
UNLEARN_SAVES = "UNLEARN_SAVES"
WAIT_SECONDS = 60.0


def _claim(folder: Path, name: str) -> bool:
    """Create ``folder/name`` if no one has; False when another process already did."""
    try:
        os.close(os.open(folder / name, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        return False
    return True


def _should_crash() -> bool:
    folder = os.environ.get(CRASH_DIR_VARIABLE)
    if not folder or not (Path(folder) / ARMED).exists():
        return False
    return _claim(Path(folder), CRASHED)  # False: another attempt already died, this one runs normally


def _crash_before_checkpoint(step: int) -> None:
    """The unlearning switch: note the save; once armed and past ``after_step``, die when the driver holds one."""
    folder = os.environ.get(CRASH_DIR_VARIABLE)
    armed = Path(folder or "") / UNLEARN_ARMED
    if not folder or not armed.exists():
        return
    settings = json.loads(armed.read_text(encoding="utf-8"))
    if step > settings["after_step"] and not (Path(folder) / UNLEARN_CRASHED).exists():
        stored = Path(settings["wait_for"])
        deadline = time.monotonic() + WAIT_SECONDS
        while not stored.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        if stored.exists() and _claim(Path(folder), UNLEARN_CRASHED):
            os._exit(1)
    with open(Path(folder) / UNLEARN_SAVES, "a", encoding="utf-8") as saves:
        saves.write(f"{os.getpid()} {step}\n")


def install_crash_switch() -> None:
    """Wrap ``generate_images`` and ``save_checkpoint`` in this worker so that armed switches kill it."""
    from cpdm.diffusion import pipeline
    from cpdm.unlearning import base

    original_generate = pipeline.generate_images
    original_save = base.save_checkpoint

    def generate_images(*args, **kwargs):
        if _should_crash():
            os._exit(1)
        if (Path(os.environ.get(CRASH_DIR_VARIABLE, "")) / OUT_OF_MEMORY).exists():
            import torch

            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB (a test's switch)")
        return original_generate(*args, **kwargs)

    def save_checkpoint(path, step, *args, **kwargs):
        _crash_before_checkpoint(step)
        return original_save(path, step, *args, **kwargs)

    pipeline.generate_images = generate_images
    base.save_checkpoint = save_checkpoint
