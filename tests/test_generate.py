"""Generation for a variant: determinism per seed, resumability (also after SIGKILL), pairs, bad input."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from cpdm.curation.prompts import add_manual_prompt
from cpdm.store.rows import MAX_SEED, add_variant, get_variant
from cpdm.errors import CpdmError
from cpdm.generation.batch import GenerationSettings, ensure_check_rate, run_generation
from cpdm.diffusion.pipeline import generate_images, variant_pipeline
from cpdm.diffusion.tiny import tiny_sd_pipeline
from cpdm.store.images import load_image
from tests.curation_support import add_anchors

SMALL = GenerationSettings(per_prompt=3, steps=2, height=32, width=32)
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def pipeline():
    return tiny_sd_pipeline()


@pytest.fixture
def prompted(ws, tmp_path):
    """A workspace with two anchors and one manual prompt each."""
    anchors = add_anchors(ws, tmp_path / "anchors", count=2)
    prompts = [add_manual_prompt(ws, anchor, f"a painting number {anchor}") for anchor in anchors]
    return ws, anchors, prompts


def _generations(ws) -> list[tuple]:
    return ws.conn.execute("SELECT prompt, variant, seed, steps, guidance, image, params FROM generations ORDER BY id").fetchall()


def test_image_k_uses_seed_plus_k_and_the_same_seed_gives_the_same_image(prompted, pipeline):
    ws, anchors, prompts = prompted
    report = run_generation(ws, settings=SMALL, offline_tiny=True, progress=False, pipeline=pipeline)
    rows = _generations(ws)
    assert len(report.generated) == 6
    assert [(r[0], r[2]) for r in rows] == [(p, 23 + k) for p in prompts for k in range(3)]
    assert len({r[5] for r in rows}) == 6
    again = generate_images(pipeline, ["a painting number 1"], [24], steps=2, height=32, width=32)[0]
    stored = load_image(ws, rows[1][5])
    difference = np.abs(np.asarray(again, dtype=int) - np.asarray(stored, dtype=int))
    assert difference.max() <= 1  # made alone vs in a batch of three: the same image


def test_every_image_is_stored_with_its_seed_and_settings(prompted, pipeline):
    ws, _, _ = prompted
    settings = GenerationSettings(per_prompt=1, steps=2, guidance=7.5, seed=5, negative="blurry", height=32, width=32)
    run_generation(ws, settings=settings, offline_tiny=True, progress=False, pipeline=pipeline)
    prompt, variant, seed, steps, guidance, image, params = _generations(ws)[0]
    assert (seed, steps, guidance) == (5, 2, 7.5)
    assert '"negative": "blurry"' in params.replace('":"', '": "') and '"scheduler"' in params
    assert get_variant(ws, variant).name == "original" and get_variant(ws, variant).method == "original"


def test_a_rerun_adds_nothing_and_other_settings_add_new_images(prompted, pipeline):
    ws, _, _ = prompted
    run_generation(ws, settings=SMALL, offline_tiny=True, progress=False, pipeline=pipeline)
    before = _generations(ws)
    pairs = ws.conn.execute("SELECT COUNT(*) FROM pairs").fetchone()[0]
    report = run_generation(ws, settings=SMALL, offline_tiny=True, progress=False, pipeline=pipeline)
    assert report.generated == [] and report.skipped == 6
    assert (report.pairs, report.check_pairs) == (0, 0)
    assert _generations(ws) == before
    assert ws.conn.execute("SELECT COUNT(*) FROM pairs").fetchone()[0] == pairs
    more = GenerationSettings(per_prompt=4, steps=2, height=32, width=32)
    assert len(run_generation(ws, settings=more, offline_tiny=True, progress=False, pipeline=pipeline).generated) == 2


def test_the_report_gives_every_images_generation_made_now_or_before(prompted, pipeline):
    ws, _, prompts = prompted
    first = run_generation(ws, settings=SMALL, offline_tiny=True, progress=False, pipeline=pipeline)
    assert first.ids == {(row[0], row[2]): generation for row, generation in zip(_generations(ws), first.generated)}
    more = GenerationSettings(per_prompt=4, steps=2, height=32, width=32)
    second = run_generation(ws, settings=more, offline_tiny=True, progress=False, pipeline=pipeline)
    assert len(second.generated) == 2 and len(second.ids) == 8
    assert {key: second.ids[key] for key in first.ids} == first.ids
    assert {second.ids[(prompt, 26)] for prompt in prompts} == set(second.generated)


def test_a_run_with_nothing_left_to_make_loads_no_model(prompted, pipeline, monkeypatch):
    from cpdm.executor import LocalExecutor

    ws, _, _ = prompted
    first = run_generation(ws, settings=SMALL, offline_tiny=True, progress=False, pipeline=pipeline)

    def no_model(*args, **kwargs):
        raise AssertionError("the model was loaded, though every image was made")

    monkeypatch.setattr(LocalExecutor, "pipeline", no_model)
    again = run_generation(ws, settings=SMALL, offline_tiny=True, progress=False)
    assert again.generated == [] and again.skipped == 6 and again.ids == first.ids


def test_the_tokenizer_of_a_model_folder_is_read_without_the_model(pipeline, tmp_path):
    import types

    from cpdm.errors import MissingWeightsError
    from cpdm.diffusion.pipeline import variant_tokenizer

    pipeline.save_pretrained(tmp_path / "sd")
    tokenizer = variant_tokenizer(types.SimpleNamespace(base_model=str(tmp_path / "sd")))
    assert tokenizer("a painting by nobody").input_ids == pipeline.tokenizer("a painting by nobody").input_ids
    with pytest.raises(MissingWeightsError, match="not a Stable Diffusion folder"):
        variant_tokenizer(types.SimpleNamespace(base_model=str(tmp_path)))


def _marks(ws, generation_ids) -> set:
    """The ``pipeline`` entry of these generations' params (None where there is none)."""
    rows = ws.conn.execute(f"SELECT params FROM generations WHERE id IN ({', '.join('?' * len(generation_ids))})",
                           list(generation_ids)).fetchall()
    return {json.loads(params).get("pipeline") for (params,) in rows}


def test_tiny_images_are_marked_and_a_real_run_never_takes_one_for_its_own(prompted, pipeline):
    ws, _, _ = prompted
    add_variant(ws, "original", base_model="stabilityai/stable-diffusion-2-1", method="original")
    tiny = run_generation(ws, settings=SMALL, offline_tiny=True, progress=False, pipeline=pipeline)
    assert _marks(ws, tiny.generated) == {"tiny"}
    # A run with real weights (the tiny pipeline stands in for them: test machines have none) makes its own images.
    real = run_generation(ws, settings=SMALL, progress=False, pipeline=pipeline)
    assert real.skipped == 0 and len(real.generated) == 6 and not set(real.generated) & set(tiny.generated)
    assert _marks(ws, real.generated) == {None}
    assert run_generation(ws, settings=SMALL, offline_tiny=True, progress=False, pipeline=pipeline).skipped == 6
    # A variant made on the tiny base generates with the tiny pipeline, --offline-tiny or not: marked too.
    add_variant(ws, "uce-tiny", base_model="offline-tiny", method="uce", concepts=["Artist 0"])
    made = run_generation(ws, variant="uce-tiny", settings=SMALL, progress=False, pipeline=pipeline)
    assert _marks(ws, made.generated) == {"tiny"}


def test_pairs_are_made_for_every_generation_with_checks_at_the_protocols_rate(prompted, pipeline):
    ws, anchors, _ = prompted
    report = run_generation(ws, settings=SMALL, offline_tiny=True, progress=False, pipeline=pipeline, check_rate=0.1)
    normal = ws.conn.execute(
        "SELECT p.generation, p.anchor, g.image, pr.anchor FROM pairs p JOIN generations g ON g.id = p.generation "
        "JOIN prompts pr ON pr.id = g.prompt WHERE p.kind = 'normal'").fetchall()
    assert sorted(r[0] for r in normal) == sorted(report.generated)
    assert all(anchor == prompt_anchor for _, anchor, _, prompt_anchor in normal)
    kinds = dict(ws.conn.execute("SELECT kind, COUNT(*) FROM pairs GROUP BY kind").fetchall())
    # 6 normal pairs at rate 0.1 need one check; checks come per anchor (identical + unrelated).
    assert kinds == {"normal": 6, "check_identical": 1, "check_unrelated": 1}
    assert (report.pairs, report.check_pairs) == (6, 2)
    assert ensure_check_rate(ws, 0.1) == 0
    assert ensure_check_rate(ws, 0.4) == 2  # 4 checks are needed now: the second anchor gets its two
    assert ensure_check_rate(ws, 0.0) == 0


def test_each_run_counts_the_pairs_it_made_while_another_run_makes_pairs(prompted, pipeline, monkeypatch):
    """A second run (other seeds, its own connection) runs whole in the middle of the first: each counts its own."""
    from cpdm.generation import batch
    from cpdm.store.workspace import open_workspace

    ws, _, _ = prompted
    other = open_workspace(ws.root)
    encode = batch.encoded_images
    reports = {}

    def encode_then_let_the_other_run(pipe, request):
        if len(reports) == 0 and ws.conn.execute("SELECT COUNT(*) FROM pairs").fetchone()[0] > 0:
            reports["other"] = None  # the other run's own batches go straight through
            reports["other"] = run_generation(other, settings=GenerationSettings(per_prompt=3, steps=2, height=32,
                                                                                 width=32, seed=100),
                                              offline_tiny=True, progress=False, pipeline=pipeline, check_rate=0.2)
        return encode(pipe, request)

    monkeypatch.setattr(batch, "encoded_images", encode_then_let_the_other_run)
    first = run_generation(ws, settings=SMALL, offline_tiny=True, progress=False, pipeline=pipeline, batch_size=1,
                           check_rate=0.2)
    second = reports["other"]
    other.close()
    kinds = dict(ws.conn.execute("SELECT kind = 'normal', COUNT(*) FROM pairs GROUP BY kind = 'normal'").fetchall())
    assert (len(first.generated), len(second.generated)) == (6, 6)
    assert (first.pairs, second.pairs) == (6, 6)  # not 12 for the first: the other run's pairs are not its own
    assert first.pairs + second.pairs == kinds[1] == 12
    assert first.check_pairs + second.check_pairs == kinds[0] > 0


def test_the_default_prompts_are_the_latest_of_each_anchor(prompted, pipeline):
    from cpdm.store.rows import add_prompt

    ws, anchors, prompts = prompted
    refined = add_prompt(ws, anchors[0], "refined", origin="template", author="template", parent=prompts[0])
    run_generation(ws, settings=GenerationSettings(per_prompt=1, steps=1, height=32, width=32), offline_tiny=True,
                   progress=False, pipeline=pipeline)
    assert sorted(r[0] for r in _generations(ws)) == [prompts[1], refined]


def test_a_prompt_longer_than_77_tokens_is_truncated_with_a_warning_and_recorded(prompted, pipeline):
    ws, anchors, _ = prompted
    long_id = add_manual_prompt(ws, anchors[0], "word " * 100)
    report = run_generation(ws, prompt_ids=[long_id], settings=GenerationSettings(per_prompt=1, steps=1, height=32,
                            width=32), offline_tiny=True, progress=False, pipeline=pipeline)
    assert any(note.startswith(f"prompt {long_id} has ") and "first 77" in note for note in report.notes)
    params = ws.conn.execute("SELECT params FROM generations WHERE prompt = ?", (long_id,)).fetchone()[0]
    assert '"truncated"' in params and '"kept": 77' in params.replace('":', '": ').replace(':  ', ': ')


def test_an_anchor_without_a_prompt_is_reported(prompted, pipeline, tmp_path):
    ws, _, _ = prompted
    from tests.conftest import write_png
    from cpdm.curation.anchors import import_anchors

    write_png(tmp_path / "lonely" / "x.png", seed=999)
    lonely = import_anchors(ws, tmp_path / "lonely").imported[0].anchor_id
    report = run_generation(ws, settings=GenerationSettings(per_prompt=1, steps=1, height=32, width=32),
                            offline_tiny=True, progress=False, pipeline=pipeline)
    assert f"anchors without a prompt (nothing generated for them): {lonely}" in report.notes


@pytest.mark.parametrize("settings, message", [
    (GenerationSettings(per_prompt=0), "--per-prompt must be at least 1"),
    (GenerationSettings(steps=0), "--steps must be at least 1"),
    (GenerationSettings(guidance=float("nan")), "--guidance must be a finite number"),
    (GenerationSettings(height=30), "--height must be a positive multiple of 8"),
    (GenerationSettings(seed=-1), "--seed must be from 0 to"),
    (GenerationSettings(seed=MAX_SEED + 1, per_prompt=1), f"--seed must be from 0 to {MAX_SEED} with --per-prompt 1"),
    (GenerationSettings(seed=MAX_SEED, per_prompt=2), f"--seed must be from 0 to {MAX_SEED - 1} with --per-prompt 2"),
    (GenerationSettings(height=32, width=100_000), "width 100000 is beyond what this model supports"),
    (GenerationSettings(scheduler="warp-drive"), "unknown scheduler 'warp-drive'"),
])
def test_bad_settings_are_refused_before_anything_is_written(prompted, settings, message):
    ws, _, _ = prompted
    with pytest.raises(CpdmError, match=message):
        run_generation(ws, settings=settings, offline_tiny=True, progress=False)
    assert ws.conn.execute("SELECT COUNT(*) FROM variants").fetchone()[0] == 0
    assert _generations(ws) == []


def test_the_largest_seed_the_workspace_records_is_generated_and_stored(prompted, pipeline):
    ws, _, prompts = prompted
    settings = GenerationSettings(per_prompt=2, steps=1, height=32, width=32, seed=MAX_SEED - 1)
    run_generation(ws, prompt_ids=prompts[:1], settings=settings, offline_tiny=True, progress=False,
                   pipeline=pipeline)
    assert [row[2] for row in _generations(ws)] == [MAX_SEED - 1, MAX_SEED]


class OutOfMemoryAbove:
    """A stand-in pipeline that runs out of memory, as a GPU does, on batches of more than ``most`` images.

    It raises torch's own out-of-memory error (on the CPU) and otherwise makes
    one flat image per seed, its colour taken from the seed.
    """

    def __init__(self, most: int):
        from cpdm.diffusion.tiny import tiny_clip_tokenizer

        self.most = most
        self.tokenizer = tiny_clip_tokenizer()  # generation counts each prompt's tokens with it
        self.device = torch.device("cpu")
        self.batches: list[int] = []  # the size of every batch asked for, in order

    def __call__(self, prompts, *, generator, **settings):
        self.batches.append(len(prompts))
        if len(prompts) > self.most:
            raise torch.OutOfMemoryError(f"CUDA out of memory. Tried to allocate {len(prompts)} images")
        seeds = [g.initial_seed() for g in generator]
        return SimpleNamespace(images=[Image.new("RGB", (32, 32), (seed % 256, 7, 7)) for seed in seeds])


def test_a_batch_that_runs_out_of_memory_is_halved_until_it_fits(prompted):
    ws, _, prompts = prompted
    pipeline = OutOfMemoryAbove(most=1)
    settings = GenerationSettings(per_prompt=4, steps=1, seed=10)
    report = run_generation(ws, settings=settings, offline_tiny=True, progress=False, pipeline=pipeline)
    assert pipeline.batches == [4, 2, 1, 1, 1, 1, 1, 1, 1, 1]  # 4 and 2 ran out; the rest went one by one
    rows = _generations(ws)
    assert len(report.generated) == len(rows) == 8
    assert sorted((prompt, seed) for prompt, _, seed, *_ in rows) == [(p, s) for p in prompts for s in (10, 11, 12, 13)]
    for _, _, seed, _, _, image, _ in rows:  # each image is its own seed's
        assert load_image(ws, image).getpixel((0, 0)) == (seed % 256, 7, 7)


@pytest.mark.parametrize("batch_size, most", [(2, 1), (None, 0)], ids=["given --batch-size", "one image too many"])
def test_out_of_memory_at_a_given_batch_size_or_at_one_image_is_a_clear_error(prompted, batch_size, most):
    ws, _, _ = prompted
    pipeline = OutOfMemoryAbove(most=most)
    with pytest.raises(CpdmError) as caught:
        run_generation(ws, settings=GenerationSettings(per_prompt=2, steps=1), batch_size=batch_size,
                       offline_tiny=True, progress=False, pipeline=pipeline)
    size = batch_size or 1
    assert str(caught.value) == (f"out of GPU memory at batch size {size}; try a smaller --batch-size or "
                                 "--height/--width")
    assert pipeline.batches[-1] == size and _generations(ws) == []


def test_a_folder_that_is_not_a_diffusers_pipeline_is_refused_and_no_variant_is_recorded(prompted, tmp_path):
    ws, _, _ = prompted
    (tmp_path / "not-a-model").mkdir()
    with pytest.raises(CpdmError, match="not a Stable Diffusion folder"):
        run_generation(ws, settings=SMALL, base_model=str(tmp_path / "not-a-model"), progress=False)
    assert ws.conn.execute("SELECT COUNT(*) FROM variants").fetchone()[0] == 0


def test_cuda_on_a_machine_without_it_is_a_clear_error(prompted):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    ws, _, _ = prompted
    with pytest.raises(CpdmError, match="CUDA is not available"):
        run_generation(ws, settings=SMALL, device="cuda", offline_tiny=True, progress=False)


def test_a_variant_that_is_not_ready_or_unknown_is_refused(prompted):
    ws, _, _ = prompted
    add_variant(ws, "esd-artist-0", base_model="offline-tiny", method="esd", status="training")
    with pytest.raises(CpdmError, match="is training, not ready"):
        run_generation(ws, variant="esd-artist-0", settings=SMALL, offline_tiny=True, progress=False)
    with pytest.raises(CpdmError, match="no-such-variant"):
        run_generation(ws, variant="no-such-variant", settings=SMALL, offline_tiny=True, progress=False)


def test_the_baseline_is_used_as_loaded_and_other_methods_go_through_apply_variant(monkeypatch):
    import types

    baseline = types.SimpleNamespace(base_model="offline-tiny", method="original")
    pipe = variant_pipeline(baseline, scheduler="euler")
    assert type(pipe.scheduler).__name__ == "EulerDiscreteScheduler"
    from cpdm.diffusion import pipeline

    applied = []
    monkeypatch.setattr(pipeline, "apply_variant",
                        lambda pipeline, variant, root, base_model: applied.append((variant.method, root, base_model))
                        or "edited")
    variant_pipeline(baseline)
    assert applied == []
    edited = variant_pipeline(types.SimpleNamespace(base_model="offline-tiny", method="esd"), root="/ws")
    assert applied == [("esd", "/ws", "offline-tiny")] and edited == "edited"


def _count(db: Path, sql: str) -> int:
    conn = sqlite3.connect(db, timeout=10)
    try:
        return conn.execute(sql).fetchone()[0]
    except sqlite3.OperationalError:
        return 0
    finally:
        conn.close()


@pytest.mark.slow  # two cpdm processes load torch and diffusers: over a minute on 2 shared cores
def test_sigkill_mid_run_then_rerun_leaves_no_duplicates_and_no_half_written_rows(prompted, tmp_path):
    ws, _, _ = prompted
    args = [sys.executable, "-c", "from cpdm.cli import main; main()", "generate", "--workspace", str(ws.root),
            "--offline-tiny", "--per-prompt", "8", "--steps", "2", "--height", "32", "--width", "32",
            "--batch-size", "2", "-q"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    process = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while _count(ws.db_path, "SELECT COUNT(*) FROM generations") < 2 and process.poll() is None:
            assert time.monotonic() < deadline, "the generation never started"
            time.sleep(0.05)
        process.send_signal(signal.SIGKILL)
    finally:
        process.wait()
    assert process.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    made = _count(ws.db_path, "SELECT COUNT(*) FROM generations")
    assert 2 <= made < 16
    rerun = subprocess.run(args, env=env, capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr
    assert f"generated {16 - made} images, skipped {made}" in rerun.stdout
    rows = ws.conn.execute("SELECT prompt, variant, seed, steps, guidance, params, image FROM generations").fetchall()
    assert len(rows) == 16 and len({row[:6] for row in rows}) == 16
    assert sorted((r[0], r[2]) for r in rows) == sorted((p, 23 + k) for p in (1, 2) for k in range(8))
    for *_, image in rows:
        assert load_image(ws, image).size == (32, 32)  # every row's file is there and complete
    unpaired = ws.conn.execute(
        "SELECT COUNT(*) FROM generations WHERE id NOT IN (SELECT generation FROM pairs WHERE kind = 'normal')"
    ).fetchone()[0]
    assert unpaired == 0
    assert ws.conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_the_generate_command_reports_progress_and_bad_input(prompted, runner):
    from cpdm.cli import cli

    ws, _, _ = prompted
    base = ["generate", "--workspace", str(ws.root), "--offline-tiny", "--steps", "1", "--height", "32", "--width", "32"]
    result = runner.invoke(cli, [*base, "--per-prompt", "2"])
    assert result.exit_code == 0, result.output
    assert "generated 4 images" in result.output and "img/s" in result.output.replace("s/img", "img/s")
    result = runner.invoke(cli, [*base, "--scheduler", "nope"])
    assert result.exit_code == 1 and "error: unknown scheduler 'nope'" in result.output
    result = runner.invoke(cli, [*base, "--prompts", "1,x"])
    assert result.exit_code == 1 and "--prompts must be ids" in result.output


@pytest.mark.parametrize("selection", ["", " , "])
def test_an_empty_prompt_selection_is_an_error_not_all_prompts(prompted, runner, selection):
    from cpdm.cli import cli

    ws, _, _ = prompted
    result = runner.invoke(cli, ["generate", "--workspace", str(ws.root), "--offline-tiny", "-q", "--steps", "1",
                                 "--height", "32", "--width", "32", "--prompts", selection])
    assert result.exit_code == 1
    assert result.output.strip() == "error: --prompts names no ids; leave it out to use all of them"
    assert _generations(ws) == []


@pytest.mark.parametrize("options, message", [
    (["--seed", "99999999999999999999"], f"error: --seed must be from 0 to {MAX_SEED} with --per-prompt 1"),
    (["--height", "100000", "--width", "100000"],
     "error: height 100000 is beyond what this model supports: at most 256 pixels (4 times the 64 it was trained at)"),
])
def test_a_seed_or_size_out_of_range_is_one_line_and_exit_1(prompted, runner, options, message):
    from cpdm.cli import cli

    ws, _, _ = prompted
    result = runner.invoke(cli, ["generate", "--workspace", str(ws.root), "--offline-tiny", "-q", "--steps", "1",
                                 "--per-prompt", "1", *options])
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(message)
    assert ws.conn.execute("SELECT COUNT(*) FROM variants").fetchone()[0] == 0  # refused before anything is recorded
