"""Job kinds and the unlearning chain: each kind gives the rows its CLI command gives, reports progress,
stops at a safe point when cancelled, and refuses bad parameters before anything is queued."""

from __future__ import annotations

import hashlib
import json

import pytest

from cpdm.backbones import PAPER_COMBINATION
from cpdm.cli import cli
from cpdm.curation.prompts import add_manual_prompt
from cpdm.demo import build as demo
from cpdm.errors import CpdmError
from cpdm.generation.batch import GenerationSettings, generation_params
from cpdm.jobs import queue
from cpdm.progress import JobCancelled, JobContext
from cpdm.jobs.parameters import HYPERPARAMETERS
from cpdm.jobs.registry import kind_parameters
from cpdm.jobs.chain import STEPS, default_variant_name, enqueue_pipeline
from cpdm.jobs.registry import get_kind
from cpdm.store.rows import MAX_SEED, add_prompt, add_variant, get_variant
from cpdm.store.workspace import init_workspace
from cpdm.diffusion.artifacts import variant_dir
from tests.curation_support import add_anchors, write_banks

TINY_IMAGES = {"per_prompt": 2, "steps": 2, "height": 32, "width": 32, "offline_tiny": True}
TINY_IMAGE_OPTIONS = ["--per-prompt", "2", "--steps", "2", "--height", "32", "--width", "32", "--offline-tiny",
                      "--quiet"]


class CancelAt(JobContext):
    """An in-memory job context whose user asks to cancel at the ``at``-th progress report."""

    def __init__(self, at: int, **kwargs):
        super().__init__(**kwargs)
        self.at = at
        self.reports = 0

    def progress(self, fraction, message=None):
        super().progress(fraction, message)
        self.reports += 1
        if self.reports >= self.at:
            self.cancel_requested = True


def run_kind(ws, kind: str, params: dict, context: JobContext | None = None):
    """Check and run a kind as a worker would; return (result, context)."""
    context = context or JobContext(device="cpu")
    result = get_kind(kind).run(ws, get_kind(kind).check_params(params), context)
    json.dumps(result)  # a job's result is stored as JSON
    return result, context


def invoke(runner, ws, *args):
    result = runner.invoke(cli, [*args, "--workspace", str(ws.root)])
    assert result.exit_code == 0, result.output
    return result


@pytest.fixture
def twin(tmp_path):
    """A second empty workspace, for the CLI's side of a comparison."""
    other = init_workspace(tmp_path / "cli-ws")
    yield other
    other.close()


def prompted(ws, folder, count: int = 2) -> list[int]:
    """Anchors with one manual prompt each (the same in every workspace made from the same folder name)."""
    anchors = add_anchors(ws, folder, count=count)
    return [add_manual_prompt(ws, anchor, f"a painting number {anchor}") for anchor in anchors]


def small_study(ws) -> list:
    """The demo's anchors (four artists), one prompt each, and a ready tiny 'original' variant."""
    anchors = demo.add_anchors(ws, seed=0)
    for anchor in anchors:
        add_prompt(ws, anchor.id, demo.prompt_text(anchor), origin="template")
    add_variant(ws, "original", base_model="offline-tiny", method="original")
    return anchors


def generation_rows(ws) -> list[tuple]:
    return ws.conn.execute(
        "SELECT g.prompt, v.name, g.seed, g.steps, g.guidance, g.image, g.params FROM generations g "
        "JOIN variants v ON v.id = g.variant ORDER BY g.id"
    ).fetchall()


def pair_rows(ws) -> list[tuple]:
    return ws.conn.execute("SELECT anchor, generation, image, kind FROM pairs ORDER BY id").fetchall()


# --- each kind against its command -------------------------------------------------------------------

def test_generate_and_score_jobs_make_the_rows_their_commands_make(ws, twin, runner, tmp_path):
    prompted(ws, tmp_path / "anchors")
    prompted(twin, tmp_path / "anchors")
    invoke(runner, twin, "generate", *TINY_IMAGE_OPTIONS)
    result, context = run_kind(ws, "generate", TINY_IMAGES)
    assert generation_rows(ws) == generation_rows(twin) and len(generation_rows(ws)) == 4
    assert pair_rows(ws) == pair_rows(twin)
    assert result == {"variant": "original", "generated": 4, "skipped": 0, "pairs": 4,
                      "check_pairs": len(pair_rows(ws)) - 4}
    assert context.fraction == 1.0

    invoke(runner, twin, "score", "--all", "--offline-tiny", "--quiet")
    result, context = run_kind(ws, "score", {"offline_tiny": True})
    query = "SELECT pair, semantic, style, m_sem, m_style FROM scores ORDER BY pair, semantic, style"
    ours, theirs = ws.conn.execute(query).fetchall(), twin.conn.execute(query).fetchall()
    assert len(ours) == len(pair_rows(ws)) and [r[:3] for r in ours] == [r[:3] for r in theirs]
    assert [v for r in ours for v in r[3:]] == pytest.approx([v for r in theirs for v in r[3:]], rel=1e-5)
    assert result["pairs_scored"] == len(ours) and context.fraction == 1.0
    assert (result["semantic"], result["style"]) == ("tiny:ViT-L-14/openai", "tiny:cpdm-inception")
    again, _ = run_kind(ws, "score", {"offline_tiny": True})
    assert again["pairs_scored"] == 0 and again["pairs_already_scored"] == len(ours)


def test_a_score_job_for_a_variant_scores_only_that_variants_pairs(ws, tmp_path):
    prompted(ws, tmp_path / "anchors")
    run_kind(ws, "generate", {**TINY_IMAGES, "per_prompt": 1})
    result, _ = run_kind(ws, "score", {"variant": "original", "offline_tiny": True})
    scored = {row[0] for row in ws.conn.execute("SELECT pair FROM scores")}
    normal = {row[0] for row in ws.conn.execute("SELECT id FROM pairs WHERE kind = 'normal'")}
    assert scored == normal and result["pairs_scored"] == 2
    add_variant(ws, "empty", base_model="offline-tiny", method="original")
    with pytest.raises(CpdmError, match="variant 'empty' has no pairs yet"):
        run_kind(ws, "score", {"variant": "empty", "offline_tiny": True})


def test_a_cancelled_generation_stops_after_the_batch_it_stored_and_paired(ws, tmp_path):
    prompted(ws, tmp_path / "anchors")
    # Report 1 opens the bar; reports 2 and 3 follow the first two batches of one image: cancel at the second.
    context = CancelAt(3, device="cpu")
    with pytest.raises(JobCancelled):
        run_kind(ws, "generate", {**TINY_IMAGES, "batch_size": 1}, context)
    generations = ws.conn.execute("SELECT id, image FROM generations").fetchall()
    assert len(generations) == 2
    paired = {row[1] for row in pair_rows(ws) if row[3] == "normal"}
    assert paired == {row[0] for row in generations}  # every stored image has its pair: no half rows
    for _, sha in generations:  # each image file is on disk, whole
        assert hashlib.sha256(ws.image_path(sha).read_bytes()).hexdigest() == sha
    assert context.fraction == pytest.approx(0.5)
    result, _ = run_kind(ws, "generate", TINY_IMAGES)  # run again (a retried job): only what is missing
    assert result["generated"] == 2 and result["skipped"] == 2


def test_a_cancelled_scoring_keeps_the_chunks_it_stored(ws, tmp_path):
    prompted(ws, tmp_path / "anchors")
    run_kind(ws, "generate", TINY_IMAGES)
    # Report 1 opens the bar, report 2 follows the first chunk: the cancel lands there.
    with pytest.raises(JobCancelled):
        run_kind(ws, "score", {"offline_tiny": True, "batch_size": 1}, CancelAt(2, device="cpu"))
    stored = ws.conn.execute("SELECT COUNT(*) FROM scores").fetchone()[0]
    total = ws.conn.execute("SELECT COUNT(*) FROM pairs").fetchone()[0]
    assert 0 < stored < total
    result, _ = run_kind(ws, "score", {"offline_tiny": True})
    assert result["pairs_already_scored"] == stored and result["pairs_scored"] == total - stored


def test_unlearn_job_registers_the_variant_the_command_registers(ws, twin, runner):
    concept = small_study(ws)[0].artist.name
    small_study(twin)
    invoke(runner, twin, "unlearn", "uce", "--variant-name", "uce-x", "--concept", concept, "--offline-tiny",
           "--quiet")
    result, context = run_kind(ws, "unlearn", {"method": "uce", "variant_name": "uce-x", "concepts": [concept],
                                               "offline_tiny": True})
    ours, theirs = get_variant(ws, "uce-x"), get_variant(twin, "uce-x")
    for field in ("method", "base_model", "concepts", "params", "status", "artifact_path"):
        assert getattr(ours, field) == getattr(theirs, field), field
    assert result == {"variant": "uce-x", "variant_id": ours.id, "method": "uce", "status": "ready",
                      "artifact_path": ours.artifact_path, "resumed": False}
    assert context.fraction == 1.0


def test_a_cancelled_unlearning_keeps_its_steps_and_the_retried_job_resumes_them(ws):
    small_study(ws)
    params = {"method": "esd-x", "variant_name": "esd-x-a", "concepts": ["Mira Dotwell"], "offline_tiny": True,
              "checkpoint_every": 100, HYPERPARAMETERS: {"iterations": 4, "ddim_steps": 2}}
    job_id = queue.enqueue(ws, "unlearn", params, device="cpu")
    # Report 1 opens the training bar at step 0; report 3 follows step 2: the cancel lands there.
    with pytest.raises(JobCancelled):
        run_kind(ws, "unlearn", params, CancelAt(3, job_id=job_id, device="cpu"))
    variant = get_variant(ws, "esd-x-a")
    assert variant.status == "failed" and variant.job == job_id
    assert variant.message == "cancelled (--resume continues from the last checkpoint)"
    checkpoint = variant_dir(ws.root, "esd-x-a") / "checkpoint.pt"
    assert checkpoint.is_file()  # saved at the cancel, though checkpoint_every is 100

    context = JobContext(job_id=job_id, device="cpu")
    result, _ = run_kind(ws, "unlearn", params, context)
    assert result["resumed"] and result["status"] == "ready"
    assert any("resuming variant esd-x-a" in line for line in context.lines)
    assert not checkpoint.exists()
    again, _ = run_kind(ws, "unlearn", params, JobContext(job_id=job_id, device="cpu"))  # result lost: run again
    assert again == {**result, "resumed": False}
    with pytest.raises(CpdmError, match="already exists"):  # another job does not take the variant over
        run_kind(ws, "unlearn", params, JobContext(job_id=None, device="cpu"))


def test_interrogate_and_refine_jobs_write_the_prompts_their_commands_write(ws, twin, runner, tmp_path):
    banks = write_banks(tmp_path / "banks")
    add_anchors(ws, tmp_path / "anchors", count=2)
    add_anchors(twin, tmp_path / "anchors", count=2)
    invoke(runner, twin, "prompts", "interrogate", "--offline-tiny", "--banks", str(banks), "--quiet")
    result, context = run_kind(ws, "interrogate", {"offline_tiny": True, "banks_dir": str(banks)})
    query = "SELECT anchor, text, origin, author, parent FROM prompts ORDER BY id"
    assert ws.conn.execute(query).fetchall() == twin.conn.execute(query).fetchall()
    assert result["added"] == 2 and result["skipped"] == 0 and context.fraction == 1.0

    invoke(runner, twin, "prompts", "refine", "--quiet")
    result, _ = run_kind(ws, "refine", {})
    assert ws.conn.execute(query).fetchall() == twin.conn.execute(query).fetchall()
    assert result["added"] == 2


def test_analyze_job_writes_the_report_the_command_writes(ws, twin, runner, tmp_path):
    from cpdm.demo.simulate import add_simulated_ratings
    from cpdm.testing import create_synthetic_campaign

    for workspace in (ws, twin):
        campaign = create_synthetic_campaign(workspace, "study", n_anchors=10, reference=True, seed=2)
        add_simulated_ratings(workspace, campaign, seed=1)
    invoke(runner, twin, "analyze", "--campaign", "study", "--n-boot", "20", "--out", str(tmp_path / "cli"))
    result, context = run_kind(ws, "analyze", {"campaign": "study", "n_boot": 20, "out": str(tmp_path / "job")})
    names = sorted(p.relative_to(tmp_path / "job") for p in (tmp_path / "job").rglob("*") if p.is_file())
    assert names == sorted(p.relative_to(tmp_path / "cli") for p in (tmp_path / "cli").rglob("*") if p.is_file())
    assert (tmp_path / "job" / "tables").is_dir() and result["files"] > 0
    for table in (tmp_path / "job" / "tables").glob("*.csv"):
        assert table.read_text() == (tmp_path / "cli" / "tables" / table.name).read_text(), table.name
    assert result["report_dir"] == str(tmp_path / "job") and context.fraction == 1.0


@pytest.mark.slow
def test_report_job_writes_the_table_the_command_prints(ws, twin, runner):
    for workspace in (ws, twin):
        artist = small_study(workspace)[0].artist.name
        run_kind(workspace, "unlearn", {"method": "uce", "variant_name": "uce-a", "concepts": [artist],
                                        "offline_tiny": True})
    printed = invoke(runner, twin, "unlearning", "report", "--variant", "uce-a", "--offline-tiny", "--steps", "1",
                     "--size", "16", "--max-prompts", "2", "--quiet", "--format", "json")
    result, _ = run_kind(ws, "report", {"variant": "uce-a", "steps": 1, "size": 16, "max_prompts": 2,
                                        "offline_tiny": True})
    expected = json.loads(printed.output)
    assert [row["set"] for row in result["rows"]] == [row["set"] for row in expected]
    for ours, theirs in zip(result["rows"], expected):
        assert ours["cm"] == pytest.approx(theirs["cm"]) and ours["generations"] == theirs["generations"]
    assert result["report_path"] == str(ws.exports_dir / f"unlearning-{variant_dir(ws.root, 'uce-a').name}.csv")


# --- parameters --------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind, params, message", [
    ("generate", {"per_prompt": 0}, "per_prompt must be at least 1"),
    ("generate", {"steps": "many"}, "steps must be an integer"),
    ("generate", {"height": 30}, "height must be a positive multiple of 8"),
    ("generate", {"scheduler": "fast"}, "scheduler must be one of ddim"),
    ("generate", {"prompt_ids": "1,x"}, "prompt_ids must be a list of integer ids"),
    ("generate", {"colour": "red"}, "generate job has no parameter 'colour'"),
    ("generate", {"protocol_file": "/nonexistent/protocol.toml"}, "generate job: .*protocol.toml"),
    ("unlearn", {"method": "esd-x", "concepts": ["A"]}, "variant_name is required"),
    ("unlearn", {"method": "forget-all", "variant_name": "v", "concepts": ["A"]}, "method must be one of esd-x"),
    ("unlearn", {"method": "esd-x", "variant_name": "v"}, "concepts is required"),
    ("unlearn", {"method": "esd-x", "variant_name": "v", "concepts": ["A"], HYPERPARAMETERS: {"lr": -1}},
     "unlearn job: lr must be positive"),
    ("unlearn", {"method": "esd-x", "variant_name": "v", "concepts": ["A"], HYPERPARAMETERS: {"speed": 2}},
     "esd-x has no hyperparameter 'speed'"),
    ("unlearn", {"method": "gradient-ascent", "variant_name": "v", "concepts": ["A"]}, "needs images of the concept"),
    ("unlearn", {"method": "uce", "variant_name": "v", "concepts": ["A"], "precision": "float8"},
     "precision must be one of float32"),
    ("score", {"variant": "a", "campaign": "b"}, "give one of variant, campaign or pair_ids"),
    ("score", {"semantic": "no-such-model"}, "unknown semantic backbone"),
    ("score", {"batch_size": 0}, "batch_size must be at least 1"),
    ("interrogate", {"top_flavors": -1}, "top_flavors must be at least 0"),
    ("refine", {"model": "gpt"}, "--model is for the openai refiner"),
    ("refine", {"refiner": "poet"}, "refiner must be one of template, openai"),
    ("analyze", {}, "campaign is required"),
    ("analyze", {"campaign": "c", "folds": 1}, "folds must be at least 2"),
    ("report", {}, "variant is required"),
    ("report", {"variant": "v", "size": 20}, "size must be a multiple of 8"),
])
def test_bad_parameters_are_refused_when_queued_and_nothing_is_written(ws, kind, params, message):
    with pytest.raises(CpdmError, match=message):
        get_kind(kind).check_params(params)
    with pytest.raises(CpdmError, match=message):
        queue.enqueue(ws, kind, params)
    assert queue.list_jobs(ws) == []


@pytest.mark.parametrize("seed", [MAX_SEED - 8, str(MAX_SEED - 8)], ids=["number", "text"])
def test_a_large_seed_is_kept_exactly(seed):
    checked = get_kind("generate").check_params({"seed": seed})  # 9 images per prompt: the last is MAX_SEED
    assert checked["seed"] == MAX_SEED - 8
    with pytest.raises(CpdmError, match=f"--seed must be from 0 to {MAX_SEED - 8} with --per-prompt 9"):
        get_kind("generate").check_params({"seed": MAX_SEED - 7})


def test_checked_parameters_are_complete_and_converted():
    checked = get_kind("generate").check_params({"per_prompt": "3", "prompt_ids": "4, 5", "offline_tiny": "yes",
                                                 "negative": ""})
    assert checked["per_prompt"] == 3 and checked["prompt_ids"] == [4, 5] and checked["offline_tiny"] is True
    assert checked["negative"] is None and checked["steps"] == 50 and checked["guidance"] == 9.0
    unlearn = get_kind("unlearn").check_params({"method": "esd-x", "variant_name": "v", "concepts": "Van Gogh",
                                                HYPERPARAMETERS: {"iterations": "10"}})
    assert unlearn[HYPERPARAMETERS] == {"iterations": 10, "lr": 1e-5, "negative_guidance": 1.0, "ddim_steps": 50,
                                        "start_guidance": 3.0}
    assert unlearn["concepts"] == ["Van Gogh"] and unlearn["preserve"] == []


def _command(*path):
    """A command's options that have a default value (flags and multiple options left out)."""
    command = cli
    for name in path:
        command = command.commands[name]
    return {param.name: param.default for param in command.params
            if isinstance(param.default, (int, float, str)) and not isinstance(param.default, bool)}


@pytest.mark.parametrize("kind, command, renamed", [
    ("generate", ("generate",), {"prompt_ids": None}),
    ("unlearn", ("unlearn",), {}),
    ("score", ("score",), {}),
    ("interrogate", ("prompts", "interrogate"), {"anchor_ids": None}),
    ("refine", ("prompts", "refine"), {"prompt_ids": None}),
    ("analyze", ("analyze",), {}),
    ("report", ("unlearning", "report"), {"variant": "variant_name", "vs": "baseline"}),
])
def test_job_defaults_are_the_commands_defaults(kind, command, renamed):
    defaults = _command(*command)
    compared = 0
    for parameter in kind_parameters(kind):
        name = renamed.get(parameter.name, parameter.name)
        if isinstance(name, str) and name in defaults:
            assert parameter.default == defaults[name], parameter.name
            compared += 1
    assert compared >= 1


def test_unlearn_form_lists_the_methods_hyperparameters_with_defaults_and_help():
    from cpdm.unlearning import REGISTRY

    for method in REGISTRY:
        extra = [p for p in kind_parameters("unlearn", method.name) if p.section == HYPERPARAMETERS]
        assert {p.name: p.default for p in extra} == method.defaults
        assert all(p.help for p in extra)
    esd = {p.name: p for p in kind_parameters("unlearn", "esd-x") if p.section == HYPERPARAMETERS}
    assert esd["iterations"].type == "int" and esd["lr"].type == "float" and "learning rate" in esd["lr"].help
    with pytest.raises(CpdmError, match="unknown unlearning method"):
        kind_parameters("unlearn", "forget-all")
    with pytest.raises(CpdmError, match="only unlearn jobs take a method"):
        kind_parameters("generate", "esd-x")
    with pytest.raises(CpdmError, match="no form for job kind 'paint'"):
        kind_parameters("paint")


def test_kinds_that_want_a_gpu_queue_for_cuda_unless_told_otherwise(ws, tmp_path):
    prompt = prompted(ws, tmp_path / "anchors", count=1)[0]
    for kind in ("generate", "unlearn", "score", "interrogate", "report"):
        assert get_kind(kind).wants_gpu, kind
    for kind in ("refine", "analyze"):
        assert not get_kind(kind).wants_gpu, kind
    job = queue.get_job(ws, queue.enqueue(ws, "generate", {"prompt_ids": [prompt]}))
    assert job.device == "cuda" and job.params["prompt_ids"] == [prompt]


def test_the_kinds_and_the_pipeline_load_no_torch():
    from tests.test_import_boundaries import imported_modules

    loaded = imported_modules("import cpdm.jobs.registry, cpdm.jobs.chain, cpdm.cli.chain_cmds; "
                              "cpdm.jobs.registry.kind_parameters('generate'); "
                              "cpdm.jobs.registry.kind_parameters('unlearn', 'sld'); "
                              "from cpdm.jobs.registry import get_kind; "
                              "get_kind('unlearn').check_params({'method': 'uce', 'variant_name': 'v', "
                              "'concepts': 'A', 'hyperparameters': {'lamb': '0.25'}})")
    assert not sorted(name for name in loaded if name.split(".")[0] in ("torch", "diffusers", "open_clip"))


# --- the pipeline ------------------------------------------------------------------------------------

def test_the_pipeline_queues_four_jobs_each_after_the_one_before(ws):
    anchors = small_study(ws)
    artist = anchors[0].artist.name
    ids = enqueue_pipeline(ws, artist, "uce", per_prompt=2, steps=2, size=32, offline_tiny=True,
                           hyperparameters={"lamb": "0.25"})
    jobs = [queue.get_job(ws, job_id) for job_id in ids]
    assert [job.kind for job in jobs] == list(STEPS)
    assert [job.parents for job in jobs] == [[], [ids[0]], [ids[1]], [ids[2]]]
    assert all(job.status == "queued" and job.device == "cpu" for job in jobs)
    name = default_variant_name("uce", artist)
    unlearn, generate, score, report = (job.params for job in jobs)
    assert unlearn["variant_name"] == name and unlearn["concepts"] == [artist]
    assert unlearn[HYPERPARAMETERS]["lamb"] == 0.25 and unlearn["base"] == "runwayml/stable-diffusion-v1-5"
    target = [a.id for a in anchors if a.artist.name == artist]
    prompts = ws.conn.execute("SELECT id, anchor FROM prompts ORDER BY id").fetchall()
    assert generate["prompt_ids"] == [p for p, a in prompts if a in target] + [p for p, a in prompts if a not in target]
    assert generate["variant"] == name and generate["per_prompt"] == 2 and generate["height"] == 32
    assert score["variant"] == name and score["offline_tiny"]
    assert (score["semantic"], score["style"]) == PAPER_COMBINATION  # the paper's metric unless told otherwise
    assert report["variant"] == name and report["vs"] == "original" and report["steps"] == 2
    assert default_variant_name("esd-x", "Van Gogh") == "esd-x-van-gogh"


def test_the_pipeline_limits_the_retain_prompts(ws):
    anchors = small_study(ws)
    artist = anchors[0].artist.name
    ids = enqueue_pipeline(ws, artist, "uce", retain_prompts=2, offline_tiny=True)
    target = sum(1 for a in anchors if a.artist.name == artist)
    assert len(queue.get_job(ws, ids[1]).params["prompt_ids"]) == target + 2
    assert queue.get_job(ws, ids[3]).params["max_retain_prompts"] == 2


@pytest.mark.parametrize("change, message", [
    ({"concept": "Nobody Known"}, "no prompts of anchors by Nobody Known"),
    ({"method": "forget-all"}, "unknown unlearning method|method must be one of"),
    ({"hyperparameters": {"lamb": "a lot"}}, "lamb must be a finite number"),
    ({"variant_name": "original"}, "a variant named 'original' already exists"),
    ({"retain_prompts": 0}, "retain_prompts must be at least 1"),
    ({"concept": "  "}, "name the concept to erase"),
    # A real base model against the tiny original: the report at the end would compare two models.
    ({"offline_tiny": False}, "is of base model 'runwayml/stable-diffusion-v1-5', its baseline 'original' of "
                              "'offline-tiny'"),
])
def test_a_bad_pipeline_queues_nothing(ws, change, message):
    anchors = small_study(ws)
    arguments = {"concept": anchors[0].artist.name, "method": "uce", "offline_tiny": True, **change}
    concept, method = arguments.pop("concept"), arguments.pop("method")
    with pytest.raises(CpdmError, match=message):
        enqueue_pipeline(ws, concept, method, **arguments)
    assert queue.list_jobs(ws) == []


def test_the_pipeline_needs_the_baseline_to_compare_with(ws, tmp_path):
    prompted(ws, tmp_path / "anchors")
    with pytest.raises(CpdmError, match="baseline variant 'original'"):
        enqueue_pipeline(ws, "Artist 0", "uce")
    assert queue.list_jobs(ws) == []


def test_pipeline_run_prints_the_job_ids(ws, runner):
    anchors = small_study(ws)
    result = invoke(runner, ws, "pipeline", "run", "--concept", anchors[0].artist.name, "--method", "esd-x",
                    "--offline-tiny", "--per-prompt", "1", "-p", "iterations=2")
    lines = [line.split("\t") for line in result.stdout.splitlines()]
    assert [step for _, step in lines] == list(STEPS)
    jobs = [queue.get_job(ws, int(job_id)) for job_id, _ in lines]
    assert jobs[0].params[HYPERPARAMETERS]["iterations"] == 2 and jobs[1].params["per_prompt"] == 1
    bad = runner.invoke(cli, ["pipeline", "run", "--concept", "Nobody", "--method", "esd-x", "-w", str(ws.root)])
    assert bad.exit_code == 1 and "error: no prompts of anchors by Nobody" in bad.output


@pytest.mark.slow
def test_a_worker_runs_the_whole_chain_on_tiny_models(ws):
    from cpdm.jobs.worker import Worker

    anchors = small_study(ws)
    artist = anchors[0].artist.name
    ids = enqueue_pipeline(ws, artist, "uce", per_prompt=2, steps=1, size=16, retain_prompts=2, offline_tiny=True)
    worker = Worker(ws.root, name="tiny", device="cpu")
    assert worker.run_forever(stop_when_idle=True) == 4
    jobs = [queue.get_job(ws, job_id) for job_id in ids]
    assert [job.status for job in jobs] == ["done"] * 4, [job.error for job in jobs]
    assert all(job.progress == 1.0 for job in jobs)
    name = default_variant_name("uce", artist)
    assert get_variant(ws, name).status == "ready" and get_variant(ws, name).job == ids[0]
    made = dict(ws.conn.execute("SELECT v.name, COUNT(*) FROM generations g JOIN variants v ON v.id = g.variant "
                                "GROUP BY v.name").fetchall())
    # Each image is made once: the report found the generate job's images (it asks for them with the same
    # settings) and made only the baseline's, one per prompt at the paper's seed.
    prompts = len(jobs[1].params["prompt_ids"])
    assert made == {name: prompts * 2, "original": prompts}
    assert jobs[1].result["generated"] == prompts * 2
    recorded = [json.loads(params) for (params,) in ws.conn.execute("SELECT DISTINCT params FROM generations")]
    assert recorded == [generation_params(GenerationSettings(steps=1, height=16, width=16), "float32", tiny=True)]
    assert jobs[2].result["pairs_scored"] >= jobs[1].result["pairs"]
    report = jobs[3].result
    assert {row["set"] for row in report["rows"]} == {"target", "retain"}
    with open(report["report_path"], encoding="utf-8") as table:
        assert table.readline().startswith("set,variant,baseline")
