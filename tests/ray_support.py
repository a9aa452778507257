"""Run inside Ray worker processes by the Ray tests: a switch that kills one generation task's worker once.

The tests start Ray with this module's :func:`install_crash_switch` as the
workers' setup hook. While the file ``CRASH_ARMED`` exists in the folder
named by ``$CPDM_TEST_CRASH_DIR``, the first worker to make images claims
``CRASHED`` (atomically, so only one does) and dies as a killed process
would, before returning anything; Ray must then run the task again.
"""

from __future__ import annotations

import os
from pathlib import Path

CRASH_DIR_VARIABLE = "CPDM_TEST_CRASH_DIR"
ARMED = "CRASH_ARMED"
CRASHED = "CRASHED"


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
    """Wrap ``generate_images`` in this worker so that an armed switch kills the process on its first call."""
    from cpdm.generation import pipeline

    original = pipeline.generate_images

    def generate_images(*args, **kwargs):
        if _should_crash():
            os._exit(1)
        return original(*args, **kwargs)

    pipeline.generate_images = generate_images
