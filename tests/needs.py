"""What some tests need from the machine beyond the Python packages: chromium, Ray.

On a developer's machine a test whose tool is missing is skipped, saying how
to get it. In CI (``CI=true``, as CI services set it) the same test fails:
a CI run that quietly skipped the browser or Ray tests would report a pass
for code it never ran.
"""

from __future__ import annotations

import importlib
import os
from types import ModuleType
from typing import NoReturn

import pytest


def in_ci() -> bool:
    """True when the tests run in CI, where every test must run."""
    return os.environ.get("CI") == "true"


def unavailable(what: str, how_to_get: str) -> NoReturn:
    """Skip the calling test for lack of ``what`` (fail it in CI)."""
    message = f"{what} is not installed ({how_to_get})"
    if in_ci():
        pytest.fail(f"{message}; CI=true, where every test must run", pytrace=False)
    pytest.skip(message)


def import_ray() -> ModuleType:
    """The ``ray`` module; a test without it is skipped (fails in CI).

    Only Ray being absent counts as unavailable: a Ray that is installed
    but fails to import fails the test, as any other broken import does.
    """
    try:
        return importlib.import_module("ray")
    except ModuleNotFoundError as exc:
        if exc.name != "ray":
            raise
        unavailable("ray", "pip install ray")
