"""The suite does not lie: a missing chromium or Ray skips tests only outside CI, and no import is skipped away."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from tests import browser_support, needs

TESTS = Path(__file__).resolve().parent


@pytest.fixture
def outside_ci(monkeypatch):
    monkeypatch.delenv("CI", raising=False)


@pytest.fixture
def in_ci(monkeypatch):
    monkeypatch.setenv("CI", "true")


@pytest.fixture
def no_chromium(monkeypatch, tmp_path):
    monkeypatch.setattr(browser_support, "CHROMIUM", tmp_path / "no-chromium")


@pytest.fixture
def no_ray(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` then fails as if it were not installed


def test_without_chromium_a_browser_test_is_skipped_outside_ci(outside_ci, no_chromium):
    with pytest.raises(pytest.skip.Exception, match=r"chromium is not installed \(run `make browser-deps`\)"):
        browser_support.require_chromium()


def test_without_chromium_a_browser_test_fails_in_ci(in_ci, no_chromium):
    with pytest.raises(pytest.fail.Exception, match="chromium is not installed .*CI=true, where every test must run"):
        browser_support.require_chromium()


def test_without_ray_a_ray_test_is_skipped_outside_ci(outside_ci, no_ray):
    with pytest.raises(pytest.skip.Exception, match=r"ray is not installed \(pip install ray\)"):
        needs.import_ray()


def test_without_ray_a_ray_test_fails_in_ci(in_ci, no_ray):
    with pytest.raises(pytest.fail.Exception, match="ray is not installed .*CI=true"):
        needs.import_ray()


@pytest.mark.parametrize("value", ["", "false", "0"])
def test_only_ci_true_counts_as_ci(monkeypatch, no_ray, value):
    monkeypatch.setenv("CI", value)
    with pytest.raises(pytest.skip.Exception):
        needs.import_ray()


def test_a_ray_that_is_installed_but_broken_fails_the_test_even_outside_ci(outside_ci, monkeypatch):
    def broken_import(name):
        raise ModuleNotFoundError("No module named 'grpc'", name="grpc")  # one of Ray's own imports

    monkeypatch.setattr(needs.importlib, "import_module", broken_import)
    with pytest.raises(ModuleNotFoundError, match="grpc"):
        needs.import_ray()


def test_no_test_skips_itself_when_an_import_fails():
    """A skip on ImportError would turn a broken cpdm module into a quiet skip; tests/needs.py says what may be missing."""
    call = "pytest." + "importorskip("
    offenders = [path.name for path in sorted(TESTS.glob("*.py")) if call in path.read_text(encoding="utf-8")]
    assert offenders == []
