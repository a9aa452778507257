"""Run inside Ray worker processes by the Ray tests: switches that make generation tasks fail.

The tests start Ray with this module's :func:`install_crash_switch` as the
workers' setup hook. While the file ``CRASH_ARMED`` exists in the folder
named by ``$CPDM_TEST_CRASH_DIR``, the first worker to make images claims
``CRASHED`` (atomically, so only one does) and dies as a killed process
would, before returning anything; Ray must then run the task again. While
the file ``OUT_OF_MEMORY`` exists there, every worker's images fail with
torch's out-of-memory error, as a GPU that runs out of memory raises it.
"""

from __future__ import annotations

import os
from pathlib import Path

CRASH_DIR_VARIABLE = "CPDM_TEST_CRASH_DIR"
ARMED = "CRASH_ARMED"
CRASHED = "CRASHED"
OUT_OF_MEMORY = "OUT_OF_MEMORY"


def _should_crash() -> bool:
    folder = os.environ.get(CRASH_DIR_VARIABLE)
    if not folder or not (Path(folder) / ARMED).exists():
        return False
    try:
        os.close(os.open(Path(folder) / CRASHED, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        return False  # another attempt already died: this one runs normally
    return True


def install_crash_switch() -> None:
    """Wrap ``generate_images`` in this worker so that the switches above act on its calls."""
    from cpdm.diffusion import pipeline

    original = pipeline.generate_images

    def generate_images(*args, **kwargs):
        if _should_crash():
            os._exit(1)
        if (Path(os.environ.get(CRASH_DIR_VARIABLE, "")) / OUT_OF_MEMORY).exists():
            import torch

            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB (a test's switch)")
        return original(*args, **kwargs)

    pipeline.generate_images = generate_images
