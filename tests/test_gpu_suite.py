"""The GPU suite's plumbing on the CPU: its harness, its files, its wheels, and its dry run end to end.

The suite itself measures GPUs; here every piece it is made of runs: parts
in their own processes under budgets, the results file and table, the
architectures it builds, the random weights it puts where cpdm's loaders
look, the wheel installation, and ``--dry-run`` (the same code with tiny
models), once as the project runs it and once in an environment holding
only what the lent GPU machine has.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest

from benchmarks.gpu import harness, report, wheels
from benchmarks.gpu.harness import Budget, Figure, Part, PartContext, Recorder, Settings
from tests.gpu_env_support import device_like_venv

ROOT = Path(__file__).resolve().parent.parent
PART_NAMES = ("scoring", "generation", "unlearning", "end-to-end")


# --- the harness: parts in their own processes, under budgets ----------------------------------------------

def write_part(folder: Path, name: str, body: str) -> str:
    """A module ``name`` in ``folder`` whose ``run(ctx)`` is ``body``; the module's name."""
    (folder / f"{name}.py").write_text("import time\n\n\ndef run(ctx):\n" + textwrap.indent(textwrap.dedent(body), "    "),
                                       encoding="utf-8")
    return name


@pytest.fixture
def part_folder(tmp_path, monkeypatch):
    folder = tmp_path / "parts"
    folder.mkdir()
    monkeypatch.syspath_prepend(str(folder))
    monkeypatch.setattr(harness, "GRACE_S", 0.5)
    return folder


def settings(tmp_path) -> Settings:
    scratch = tmp_path / "scratch"
    scratch.mkdir(exist_ok=True)
    return Settings(dry_run=True, scratch=scratch, device="cpu")


def test_a_part_past_its_budget_is_stopped_and_keeps_what_it_measured(tmp_path, part_folder):
    module = write_part(part_folder, "overrun", """
        ctx.record("first", 1.0, "s")
        time.sleep(60)
        ctx.record("never", 2.0, "s")
    """)
    result = harness.run_part(Part("overrun", "sleeps", module, 60, 1.0), settings(tmp_path), {})
    assert result["status"] == harness.STOPPED
    assert [figure["name"] for figure in result["figures"]] == ["first"]
    assert result["seconds"] < 20


def test_a_failing_part_is_recorded_in_one_line_with_what_it_measured_before(tmp_path, part_folder):
    module = write_part(part_folder, "crash", """
        ctx.record("before", 3.0, "img/s")
        raise ValueError("the model was not there\\nsecond line")
    """)
    result = harness.run_part(Part("crash", "fails", module, 60, 30), settings(tmp_path), {})
    assert (result["status"], result["error"]) == ("failed", "ValueError: the model was not there")
    assert result["figures"][0]["value"] == 3.0


def test_a_part_can_start_in_a_fresh_interpreter(tmp_path, part_folder, plain_main):
    """The suite's fallback when a forked process could not use CUDA: everything a part needs crosses a pickle."""
    module = write_part(part_folder, "fresh", """
        ctx.record("device", ctx.device, detail=ctx.device_info["name"])
    """)
    result = harness.run_part(Part("fresh", "spawned", module, 60, 60), settings(tmp_path), {"name": "cpu"}, "spawn")
    assert result["status"] == harness.DONE
    assert (result["figures"][0]["value"], result["figures"][0]["detail"]) == ("cpu", "cpu")


def test_numpy_numbers_are_recorded_as_plain_json(tmp_path):
    import numpy as np

    context = PartContext(settings(tmp_path), Budget(60), Recorder(tmp_path / "part.json", echo=False))
    context.record("distance", np.float64(0.25), met=np.float64(0.25) < 1e-3)
    assert json.loads((tmp_path / "part.json").read_text())["figures"][0] == {
        "name": "distance", "value": 0.25, "unit": "", "detail": "", "target": "", "met": False}


def test_a_failed_or_unaffordable_measurement_is_recorded_and_the_next_one_runs(tmp_path):
    context = PartContext(settings(tmp_path), Budget(60), Recorder(tmp_path / "part.json", echo=False))

    def broken():
        raise RuntimeError("CUDA out of memory")

    assert not context.attempt("too big", broken)
    assert context.attempt("fine", lambda: context.record("fine", 1.5, "s"))
    assert not context.attempt("too long", lambda: context.record("ran", 1), needs_s=3600)
    recorded = {figure.name: figure for figure in context.recorder.figures}
    assert recorded["too big"].detail == "failed: RuntimeError: CUDA out of memory"
    assert recorded["fine"].value == 1.5
    assert recorded["too long"].detail.startswith("skipped:") and "ran" not in recorded
    assert json.loads((tmp_path / "part.json").read_text())["figures"][1]["name"] == "fine"


class BatchHungryMethod:
    """An iterative method that runs out of GPU memory above batch 2, and reports two steps otherwise."""

    name, iterative, defaults = "hungry", True, {"iterations": 2, "batch_size": 8}

    def resolve_params(self, given):
        return {**self.defaults, **given}

    def run(self, pipe, request, params, options):
        import torch

        from cpdm.progress import progress_bar

        if params["batch_size"] > 2:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 40.00 GiB")
        with progress_bar(params["iterations"], self.name, enabled=False) as bar:
            for _ in range(params["iterations"]):
                bar.update(1)


def test_a_batch_too_big_for_the_gpu_is_halved_and_the_projection_scales_back(tmp_path):
    import torch

    from benchmarks.gpu import unlearning

    context = PartContext(settings(tmp_path), Budget(60), Recorder(tmp_path / "part.json", echo=False))
    pipe = type("Pipe", (), {"unet": torch.nn.Linear(2, 2)})()
    method_run = unlearning.MethodRun("hungry", {"iterations": 2})
    timing, params, reduced = unlearning.time_fitting_batch(context, BatchHungryMethod(), pipe, method_run, ())
    assert (params["batch_size"], reduced, len(timing.steps_s)) == (2, True, 2)
    assert [note.split(";")[0] for note in context.recorder.notes] == [
        "hungry: out of GPU memory with 8 images at a time", "hungry: out of GPU memory with 4 images at a time"]
    scale, why = unlearning.batch_scaling(BatchHungryMethod.defaults, params, reduced)
    assert scale == 4.0 and "batch 8 ran out of GPU memory" in why


def test_esd_is_projected_from_its_training_pass_and_the_guided_steps_it_samples():
    from benchmarks.gpu.unlearning import Timing, projection

    timing = Timing(setup_s=2.0, steps_s=[9.0, 0.5, 0.5])  # the first step warms up and is left out
    seconds, formula = projection("esd-x", {"iterations": 1000, "ddim_steps": 50}, timing, guided_s=0.1)
    assert seconds == pytest.approx(2.0 + 1000 * (0.5 + 24.5 * 0.1))
    assert "24.5 guided steps" in formula


# --- the results file and its table -----------------------------------------------------------------------

def part_result(*figures: Figure, status: str = harness.DONE) -> dict:
    return {"status": status, "error": None, "figures": [figure.__dict__ for figure in figures], "notes": [],
            "seconds": 1.0, "budget_s": 10.0}


def test_a_rerun_of_some_parts_replaces_them_in_the_days_file_and_keeps_the_others(tmp_path):
    path = report.results_path(tmp_path, "NVIDIA H200", "2026-12-07", dry_run=False)
    assert path.name == "gpu-nvidia-h200-2026-12-07.json"
    first = {"device": {"name": "NVIDIA H200"}, "parts": {
        "scoring": part_result(Figure("speed-up", 12.0, "x", target=">= 10x", met=True)),
        "generation": part_result(status="failed")}}
    report.write_results(first, path)
    rerun = {"device": {"name": "NVIDIA H200"}, "parts": {"generation": part_result(Figure("a | b", 0.5, "img/s"))}}
    table = report.write_results(rerun, path)

    parts = json.loads(path.read_text())["parts"]
    assert set(parts) == {"scoring", "generation"} and parts["generation"]["status"] == harness.DONE
    text = table.read_text()
    assert "| scoring | speed-up | 12.0 x | >= 10x | yes |" in text
    assert "a \\| b" in text  # a pipe in a figure's name stays inside its cell
    line = report.result_line(json.loads(path.read_text()))
    assert line.startswith("RESULT parts_done=2 parts=2 targets_met=1 targets=1")


# --- the architectures the suite builds -----------------------------------------------------------------------

def test_the_architectures_have_the_released_models_parameter_counts():
    """Built on the meta device (no memory, no time): each part's count is that of the released checkpoint."""
    from cpdm.diffusion.architectures import SD15, SD21, random_sd_pipeline

    counts = {}
    for sd in (SD15, SD21):
        pipeline = random_sd_pipeline(sd, device="meta")
        counts[sd.name] = tuple(sum(p.numel() for p in getattr(pipeline, part).parameters())
                                for part in ("unet", "text_encoder", "vae"))
        assert len(pipeline.tokenizer) == 49408
    assert counts["sd1.5"] == (859_520_964, 123_060_480, 83_653_863)
    assert counts["sd2.1"] == (865_910_724, 340_387_840, 83_653_863)


def test_a_shrunk_architecture_keeps_the_layout_and_generates():
    from cpdm.diffusion.architectures import SD21, random_sd_pipeline
    from cpdm.diffusion.pipeline import generate_images

    shrunk = SD21.shrunk()
    assert shrunk.unet["down_block_types"] == SD21.unet["down_block_types"]
    assert shrunk.unet["use_linear_projection"] and shrunk.unet["upcast_attention"]
    pipeline = random_sd_pipeline(shrunk)
    assert pipeline.scheduler.config.prediction_type == "v_prediction"
    images = generate_images(pipeline, ["a harbour by Wen Ripple"], [0], steps=1)
    assert images[0].size == (shrunk.image_size, shrunk.image_size)


@pytest.mark.slow
@pytest.mark.parametrize("style_name", ["cpdm-inception", "vgg19"])
def test_random_backbone_weights_load_where_the_real_ones_are_looked_for(tmp_path, monkeypatch, style_name):
    """The end-to-end part's worker loads the backbones as real weights from a private cache."""
    from benchmarks.gpu.models import write_backbone_weights
    from cpdm.backbones import load_semantic, load_style

    for name, value in write_backbone_weights(tmp_path / "cache", "ViT-B-32/openai", style_name).items():
        monkeypatch.setenv(name, value)
    semantic, style = load_semantic("ViT-B-32/openai", mode="real"), load_style(style_name, mode="real")
    assert (semantic.key, style.key) == ("ViT-B-32/openai", style_name)  # real mode: the names of real weights


# --- the wheels that travel to the GPU machine -----------------------------------------------------------

def fake_wheel(folder: Path, name: str, version: str) -> Path:
    path = folder / f"{wheels.normalized(name)}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr(f"{wheels.normalized(name)}/__init__.py", f"VERSION = {version!r}\n")
    return path


def test_install_brings_only_what_the_interpreter_lacks_or_has_older(tmp_path, monkeypatch):
    monkeypatch.setattr(wheels, "WHEELS", (("newpkg", "1.0", "new"), ("hubpkg", "1.33.0", "older here"),
                                           ("toolpkg", "2.0", "present")))
    installed = {"hubpkg": "1.20.0", "toolpkg": "2.1"}
    monkeypatch.setattr(wheels, "installed_version", installed.get)
    folder = tmp_path / "wheels"
    folder.mkdir()
    for name, version, _ in wheels.WHEELS:
        fake_wheel(folder, name, version)
    assert [path.name.split("-")[0] for path in wheels.needed(folder)] == ["newpkg", "hubpkg"]

    (folder / "newpkg-1.0-py3-none-any.whl").unlink()
    with pytest.raises(wheels.WheelError, match="newpkg==1.0"):
        wheels.needed(folder)


def test_a_wheel_unpacks_into_the_target_where_pip_is_missing(tmp_path):
    wheel = fake_wheel(tmp_path, "newpkg", "1.0")
    wheels.unpack(wheel, tmp_path / "site")
    assert (tmp_path / "site" / "newpkg" / "__init__.py").read_text() == "VERSION = '1.0'\n"


# --- the suite as a command -------------------------------------------------------------------------------

def run_suite(python: str, *args: str, env: dict | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    environment = dict(os.environ, PYTHONPATH=str(ROOT)) if env is None else env
    return subprocess.run([python, str(ROOT / "benchmarks" / "gpu_suite.py"), *args], cwd=ROOT, env=environment,
                          capture_output=True, text=True, timeout=timeout)


def test_a_rerun_can_give_a_part_more_time():
    from benchmarks import gpu_suite

    args = gpu_suite.parse_args(["--only", "end-to-end", "--budget", "end-to-end=300"])
    (part,) = [part for part in gpu_suite.PARTS if part.name in args.only]
    longer = gpu_suite.with_budget(part, args.budgets.get(part.name), dry_run=False)
    assert (longer.budget_s, longer.dry_budget_s) == (300, part.dry_budget_s)
    with pytest.raises(SystemExit):
        gpu_suite.parse_args(["--budget", "rendering=10"])


def test_without_cuda_the_suite_refuses_in_one_line():
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: the suite would run")
    finished = run_suite(sys.executable, "--only", "scoring")
    assert finished.returncode == 1
    assert finished.stderr.strip().splitlines() == [finished.stderr.strip()]
    assert finished.stderr.startswith("error: no CUDA device here") and "--dry-run" in finished.stderr


def check_dry_run_results(out: Path, stdout: str) -> dict:
    """Every part done with figures; the JSON, the table and the RESULT line agree."""
    [path] = out.glob("gpu-dry-run-*.json")
    results = json.loads(path.read_text())
    assert results["dry_run"] is True
    assert {name: part["status"] for name, part in results["parts"].items()} == dict.fromkeys(PART_NAMES, "done")
    for name, part in results["parts"].items():
        assert any(figure["value"] is not None for figure in part["figures"]), name
    figures = {figure["name"]: figure for part in results["parts"].values() for figure in part["figures"]}
    assert figures["engine --precision auto: same numbers as the reference"]["met"] is True
    assert figures["uce including loading"]["value"] > 0
    assert figures["small study: enqueue to report CSV"]["value"] > 0
    assert path.with_suffix(".md").read_text().startswith("# cpdm GPU suite: cpu")
    # The last line of the suite's own output (make may add its "Leaving directory" line after it).
    [result] = [line for line in stdout.splitlines() if line.startswith("RESULT ")]
    assert result.startswith("RESULT parts_done=4 parts=4 ")
    return results


@pytest.mark.slow
def test_the_dry_run_runs_every_part_on_the_cpu(tmp_path):
    finished = run_suite(sys.executable, "--dry-run", "--out", str(tmp_path / "out"))
    assert finished.returncode == 0, finished.stdout[-3000:] + finished.stderr[-3000:]
    check_dry_run_results(tmp_path / "out", finished.stdout)
    assert "| end-to-end | small study: enqueue to report CSV |" in finished.stdout  # the table is printed


@pytest.mark.slow
def test_the_dry_run_works_with_only_torch_transformers_and_the_carried_wheels(tmp_path):
    """As on the lent machine: no project install, no diffusers or open_clip until `make bench-gpu` installs them."""
    python = device_like_venv(tmp_path / "device")
    plain = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    lacking = subprocess.run([str(python), "-c", "import diffusers"], cwd=tmp_path, env=plain, capture_output=True)
    assert lacking.returncode != 0  # the environment really lacks what the wheels bring

    wheel_dir = tmp_path / "wheels"
    fetched = subprocess.run(["make", "gpu-wheels", f"GPU_PYTHON={sys.executable}", f"GPU_WHEELS={wheel_dir}"],
                             cwd=ROOT, env=plain, capture_output=True, text=True)
    if fetched.returncode != 0:
        reason = f"make gpu-wheels could not download the wheels: {fetched.stderr.strip()[-300:]}"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    site = tmp_path / "site"
    out = tmp_path / "out"
    finished = subprocess.run(["make", "bench-gpu", f"GPU_PYTHON={python}", f"GPU_WHEELS={wheel_dir}",
                               f"GPU_SITE={site}", f"GPU_ARGS=--dry-run --out {out}"],
                              cwd=ROOT, env=plain, capture_output=True, text=True, timeout=900)
    assert finished.returncode == 0, finished.stdout[-3000:] + finished.stderr[-3000:]
    assert (site / "diffusers").is_dir() and (site / "open_clip").is_dir()
    check_dry_run_results(out, finished.stdout)
