"""A plain, non-editable `pip install .` gives a working `cpdm serve` and the shipped protocol."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import sysconfig
import time
import urllib.request
from pathlib import Path

import pytest

from cpdm.app import serve
from cpdm.testing import free_port

REPO_ROOT = Path(__file__).resolve().parent.parent
# What `pip install .` needs of a checkout (everything else stays behind).
SOURCE_ENTRIES = ("pyproject.toml", "README.md", "app.py", "pages", "cpdm")


def fresh_venv(where: Path) -> Path:
    """A new venv whose dependencies (torch, streamlit, ...) come from this interpreter's site-packages.

    The site-packages folder is added as a plain path (a .pth line), so its
    own .pth hooks, such as an editable install of cpdm, do not come along.
    """
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(where)], check=True)
    python = where / "bin" / "python"
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          check=True, capture_output=True, text=True).stdout.strip()
    Path(site, "cpdm_test_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return python


def clean_env() -> dict[str, str]:
    """This process's environment without anything that would point Python at the checkout."""
    env = {key: value for key, value in os.environ.items() if key not in ("PYTHONPATH", "CPDM_WORKSPACE")}
    env["PYTHONUNBUFFERED"] = "1"
    return env


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """The bin folder of a fresh venv holding cpdm installed from a copy of the checkout (no network)."""
    root = tmp_path_factory.mktemp("install")
    source = root / "source"
    source.mkdir()
    for entry in SOURCE_ENTRIES:
        original = REPO_ROOT / entry
        if original.is_dir():
            shutil.copytree(original, source / entry, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(original, source / entry)
    python = fresh_venv(root / "venv")
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet", "--no-deps",
         "--no-build-isolation", "--no-index", str(source)],
        check=True, cwd=root, env=clean_env(),
    )
    shutil.rmtree(source)  # the installed copy must stand alone
    return python.parent


def run_installed(bin_dir: Path, code: str, cwd: Path) -> str:
    result = subprocess.run([str(bin_dir / "python"), "-c", code], check=True, capture_output=True, text=True,
                            cwd=cwd, env=clean_env())
    return result.stdout.strip()


@pytest.mark.slow
def test_the_installed_package_is_the_copy_and_ships_its_protocol_and_app(installed, tmp_path):
    where = run_installed(installed, "import cpdm, cpdm.app.serve as s; print(cpdm.__file__); print(s.find_app())", tmp_path)
    package, app = (Path(line) for line in where.splitlines())
    assert installed.parent in package.parents and installed.parent in app.parents
    assert app.name == "app.py" and (app.parent / "pages" / "rate.py").is_file()
    questions = run_installed(
        installed, "from cpdm.rating.protocol import list_protocol_files, load_protocol_file; "
        "print(*load_protocol_file(list_protocol_files()[0])[1].question_ids)", tmp_path)
    assert questions.split() == ["content", "style", "copy"]


@pytest.mark.slow
def test_cpdm_serve_from_the_installed_package_answers(installed, tmp_path):
    workspace = tmp_path / "ws"
    subprocess.run([str(installed / "cpdm"), "demo", "--no-serve", "--no-analysis-data", "--workspace", str(workspace)],
                   check=True, cwd=tmp_path, env=clean_env(), capture_output=True)
    port = free_port()
    out_path = tmp_path / "serve.log"
    with open(out_path, "wb") as out:
        process = subprocess.Popen([str(installed / "cpdm"), "serve", "--port", str(port), "--workspace", str(workspace)],
                                   stdout=out, stderr=subprocess.STDOUT, cwd=tmp_path, env=clean_env(),
                                   start_new_session=True)
        try:
            url = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 90
            while serve.health(url) != "ok" and time.monotonic() < deadline and process.poll() is None:
                time.sleep(0.5)
            assert serve.health(url) == "ok", out_path.read_text()
            with urllib.request.urlopen(f"{url}/", timeout=10) as response:
                assert response.status == 200 and b"<html" in response.read().lower()
        finally:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
    assert "error" not in out_path.read_text().lower()


@pytest.mark.slow
def test_the_installed_app_runs_its_pages(installed, tmp_path):
    """The installed app.py finds its installed pages: a rater's link renders the rating flow without an exception."""
    workspace = tmp_path / "ws"
    subprocess.run([str(installed / "cpdm"), "demo", "--no-serve", "--no-analysis-data", "--workspace", str(workspace)],
                   check=True, cwd=tmp_path, env=clean_env(), capture_output=True)
    code = (
        "import os; from streamlit.testing.v1 import AppTest; from cpdm.app.serve import find_app; "
        "from cpdm.demo.build import demo_links; "
        f"os.environ['CPDM_WORKSPACE'] = {str(workspace)!r}; "
        "token = [l for l in demo_links(0) if l.role == 'researcher'][0].token; "
        "at = AppTest.from_file(str(find_app()), default_timeout=60); at.query_params['token'] = token; at.run(); "
        "print(len(at.exception), [t.value for t in at.title][:1])"
    )
    out = run_installed(installed, code, tmp_path)
    assert out.startswith("0 "), out
