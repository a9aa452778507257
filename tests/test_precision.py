"""Reduced precision: the chooser, the CPU/CUDA contexts, and the engine's use of them."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cpdm.scoring import features
from cpdm.scoring import precision
from cpdm.backbones import load_semantic, load_style
from cpdm.cli import cli
from cpdm.errors import CpdmError
from cpdm.scoring.precision import CPU_REDUCED, CUDA_REDUCED, FP32, choose_precision, computing_in
from cpdm.scoring.engine import ScoringEngine, score_pairs
from cpdm.scoring.reader import load_scores
from tests.test_scoring import SEM, STYLE, add_anchor

EXACT = [np.array([0.0]), np.array([1.0]), np.array([3.0])]


def compute_with(offset):
    """Features whose reduced-precision version is off by ``offset`` per image index."""
    return lambda chosen: EXACT if chosen == FP32 else [x + offset * i for i, x in enumerate(EXACT)]


def distance(features, i, j):
    return float(abs(features[i] - features[j])[0])


def test_reduced_precision_is_kept_only_within_tolerance():
    chosen, features = choose_precision(compute_with(1e-4), distance, CPU_REDUCED, relative=False)
    assert chosen == CPU_REDUCED and features[2][0] == pytest.approx(3.0002)  # the reduced results are returned
    chosen, features = choose_precision(compute_with(1e-2), distance, CPU_REDUCED, relative=False)
    assert chosen == FP32 and features is EXACT
    # Moves of 8e-4 are within the 1e-3 promise but not within the probe's margin (1e-3 / 4).
    assert precision.PROBE_MARGIN == 4
    assert choose_precision(compute_with(4e-4), distance, CPU_REDUCED, relative=False)[0] == FP32
    assert choose_precision(compute_with(4e-4), distance, CPU_REDUCED, relative=False, tolerance=1e-3)[0] == CPU_REDUCED
    # Relative tolerance: 1e-4 on distances of about 1-3 passes, 1e-2 does not.
    assert choose_precision(compute_with(1e-4), distance, CUDA_REDUCED, relative=True)[0] == CUDA_REDUCED
    assert choose_precision(compute_with(1e-2), distance, CUDA_REDUCED, relative=True)[0] == FP32


def test_a_device_without_the_kernel_stays_in_fp32():
    def compute(chosen):
        if chosen != FP32:
            raise RuntimeError("no kernel")
        return EXACT

    assert choose_precision(compute, distance, CUDA_REDUCED, relative=False) == (FP32, EXACT)


def test_cpu_context_sets_bf16_products_and_restores_them_even_after_an_error():
    settings = (torch.backends.mkldnn.matmul, torch.backends.mkldnn.conv)
    before = [setting.fp32_precision for setting in settings]
    with computing_in(CPU_REDUCED, torch.device("cpu")):
        assert [setting.fp32_precision for setting in settings] == ["bf16", "bf16"]
    assert [setting.fp32_precision for setting in settings] == before
    with pytest.raises(KeyError):
        with computing_in(CPU_REDUCED, torch.device("cpu")):
            raise KeyError("boom")
    assert [setting.fp32_precision for setting in settings] == before
    with computing_in(FP32, torch.device("cpu")):
        assert [setting.fp32_precision for setting in settings] == before
    with pytest.raises(ValueError, match="unknown precision"):
        with computing_in("float8", torch.device("cpu")):
            pass


def test_bf16_products_stay_close_to_fp32():
    """Products in the CPU mode stay within bf16's rounding of fp32.

    Whether they differ at all is the CPU's and oneDNN's choice (on some CPUs
    with avx512_bf16 they stay bit-identical), so that is not asserted; the
    tests that need a rejected or accepted reduced precision force it.
    """
    generator = torch.Generator().manual_seed(0)
    a, b = torch.randn(64, 256, generator=generator), torch.randn(256, 64, generator=generator)
    exact = a @ b
    with computing_in(CPU_REDUCED, torch.device("cpu")):
        reduced = a @ b
    assert reduced.dtype == torch.float32
    relative = ((reduced - exact).norm() / exact.norm()).item()
    assert relative < 1e-2


@pytest.mark.parametrize(
    "flags, expected",
    [("fpu avx512f amx_bf16 amx_tile", True), ("fpu avx512f avx512_bf16", True), ("fpu avx2 fma", False)],
)
def test_native_bf16_is_read_from_cpu_flags(tmp_path, flags, expected):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(f"processor\t: 0\nflags\t\t: {flags}\n")
    assert precision.cpu_has_native_bf16(cpuinfo) is expected
    assert precision.cpu_has_native_bf16(tmp_path / "absent") is False


def test_reduced_precision_offered_per_device_and_choice(monkeypatch):
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert precision.reduced_precision_for(cuda) == CUDA_REDUCED
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: True)
    assert precision.reduced_precision_for(cpu) == CPU_REDUCED
    # auto tries fp16 on CUDA but not bf16 on the CPU; reduced tries both; fp32 neither.
    assert precision.precision_to_try("auto", cuda) == CUDA_REDUCED
    assert precision.precision_to_try("auto", cpu) is None
    assert precision.precision_to_try("reduced", cpu) == CPU_REDUCED
    assert precision.precision_to_try("fp32", cuda) is None
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: False)
    assert precision.reduced_precision_for(cpu) is None
    assert precision.precision_to_try("reduced", cpu) is None
    with pytest.raises(ValueError, match="precision must be one of auto, reduced, fp32"):
        precision.precision_to_try("fast", cpu)


@pytest.fixture(scope="module")
def tiny_backbones():
    return load_semantic("ViT-L-14/openai", mode="tiny"), load_style("vgg19", mode="tiny")


def scored(tmp_path, name, tiny_backbones, chosen_precision, monkeypatch=None):
    """Scores (m_sem, m_style) of a fixed study, and the report, with one engine precision."""
    from cpdm.store.workspace import init_workspace

    with init_workspace(tmp_path / name) as ws:
        for seed in (71, 72, 73):
            add_anchor(ws, seed, 5)
        engine = ScoringEngine(ws, *tiny_backbones, batch_size=16, precision=chosen_precision)
        report = score_pairs(ws, engine=engine, progress=False)
        values = load_scores(ws, SEM, STYLE)[["m_sem", "m_style"]].to_numpy()
    return values, report


def test_reduced_keeps_scores_within_1e_3_of_fp32(tmp_path, tiny_backbones, monkeypatch):
    # Offer the CPU mode even where bf16 is emulated, so that the chooser runs on every machine.
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: True)
    exact, exact_report = scored(tmp_path, "fp32", tiny_backbones, "fp32")
    auto, report = scored(tmp_path, "reduced", tiny_backbones, "reduced")
    assert set(exact_report.precision.values()) == {FP32} and len(exact_report.precision) == 2
    assert set(report.precision.values()) <= {FP32, CPU_REDUCED}
    assert np.all(np.abs(auto[:, 0] - exact[:, 0]) <= 1e-3)
    assert np.all(np.abs(auto[:, 1] - exact[:, 1]) <= 1e-3 * np.abs(exact[:, 1]))


def rejecting_choice(compute, distance, reduced, relative, **kwargs):
    """choose_precision, with every reduced-precision distance off by 1: the probe must reject it.

    Whether bf16 moves a tiny model's distances at all depends on the CPU (on
    some, results stay bit-identical to fp32), so the rejection is forced.
    """
    outputs = {}

    def recording(chosen):
        outputs[chosen] = compute(chosen)
        return outputs[chosen]

    def skewed(probe_features, i, j):
        exact = probe_features is outputs.get(FP32)
        return distance(probe_features, i, j) + (0.0 if exact else 1.0)

    return choose_precision(recording, skewed, reduced, relative, **kwargs)


def test_a_rejected_reduced_precision_gives_exactly_the_fp32_scores(tmp_path, tiny_backbones, monkeypatch):
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: True)
    calls = []
    monkeypatch.setattr(features, "choose_precision", lambda *a, **k: calls.append(a[2]) or rejecting_choice(*a, **k))
    exact, _ = scored(tmp_path, "fp32", tiny_backbones, "fp32")
    auto, report = scored(tmp_path, "reduced", tiny_backbones, "reduced")
    assert calls == [CPU_REDUCED, CPU_REDUCED]  # both backbones were probed, and both rejected
    assert set(report.precision.values()) == {FP32} and len(report.precision) == 2
    # fp32 scores: the probe's own fp32 features are kept, computed in a pass of
    # other shape than the engine's usual ones, which moves the last float32 bits
    # only (bf16 moves distances by about 1e-3).
    np.testing.assert_allclose(auto, exact, rtol=1e-6, atol=1e-7)


def test_the_probe_is_reused_and_chosen_once(tmp_path, tiny_backbones, monkeypatch):
    """Only the probe's images run twice (once per precision); later batches never probe again."""
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: True)
    monkeypatch.setattr(features, "CPU_WORKERS", 1)  # one pass per share: the counts below stay simple
    clip, _ = tiny_backbones
    embedded = []
    original = clip.embed_batch
    monkeypatch.setattr(clip, "embed_batch", lambda batch: embedded.append(len(batch)) or original(batch))
    from cpdm.store.workspace import init_workspace

    with init_workspace(tmp_path / "ws") as ws:
        for seed in (81, 82):
            add_anchor(ws, seed, 7)  # 8 images per anchor: two batches of 8
        engine = ScoringEngine(ws, *tiny_backbones, batch_size=8, precision="reduced")
        report = score_pairs(ws, engine=engine, progress=False)
    assert report.images_computed == 16
    assert embedded == [precision.PROBE_IMAGES, precision.PROBE_IMAGES, 8 - precision.PROBE_IMAGES, 8]


def test_cli_precision_option(tmp_path, runner, tiny_backbones):
    from cpdm.store.workspace import init_workspace

    with init_workspace(tmp_path / "ws") as ws:
        add_anchor(ws, 91, 3)
    args = ["score", "--all", "--offline-tiny", "-q", "--workspace", str(tmp_path / "ws")]
    result = runner.invoke(cli, [*args, "--precision", "fp32"])
    assert result.exit_code == 0, result.output
    # The default backbones are the CPDM release's (their tiny twins here).
    assert "precision: tiny:ViT-L-14/openai float32, tiny:cpdm-inception float32" in result.output
    result = runner.invoke(cli, [*args, "--precision", "fp8"])
    assert result.exit_code == 2 and "fp8" in result.output
    with pytest.raises(CpdmError, match="precision must be one of"):
        ScoringEngine(None, *tiny_backbones, precision="fp8")


def test_auto_does_not_probe_on_the_cpu(tmp_path, tiny_backbones, monkeypatch):
    """bf16 rarely keeps CPU distances within 1e-3, so auto does not spend a probe on it."""
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: True)
    monkeypatch.setattr(features, "choose_precision", lambda *args, **kwargs: pytest.fail("auto probed on the CPU"))
    exact, _ = scored(tmp_path, "fp32", tiny_backbones, "fp32")
    auto, report = scored(tmp_path, "auto", tiny_backbones, "auto")
    assert set(report.precision.values()) == {FP32} and len(report.precision) == 2
    assert np.array_equal(auto, exact)


def test_cli_offers_exactly_the_library_choices():
    option = next(param for param in cli.commands["score"].params if param.name == "precision")
    assert tuple(option.type.choices) == precision.SCORING_PRECISIONS
