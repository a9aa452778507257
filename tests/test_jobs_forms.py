"""The Jobs page's logic without a browser: form fields from job parameters, the requests that queue jobs
(a bad value queues nothing), how jobs are described, and when the page says no worker is running."""

from __future__ import annotations

from datetime import timedelta

import pytest

from cpdm.errors import CpdmError
from cpdm.jobs import forms, queue
from cpdm.jobs.parameters import Parameter
from cpdm.store.rows import add_variant
from cpdm.store.time import format_time, utc_now
from tests.test_jobs_page import prompted


def test_each_parameter_type_gets_its_widget_default_and_help():
    assert forms.form_field(Parameter("offline_tiny", "bool", False, "tiny")) == \
        forms.Field("offline_tiny", "Offline tiny", "checkbox", False, "tiny")
    steps = forms.form_field(Parameter("steps", "int", 50, "sampling steps", minimum=1))
    assert (steps.widget, steps.value, steps.minimum, steps.help) == ("int", 50, 1, "sampling steps")
    lr = forms.form_field(Parameter("lr", "float", 1e-5, "learning rate"))
    assert lr.widget == "float" and lr.value == 1e-5 and isinstance(lr.value, float)
    height = forms.form_field(Parameter("height", "int", None, "height"))
    assert height.value is None  # an empty box: the model's own size
    dtype = forms.form_field(Parameter("dtype", "str", None, "precision", choices=("float16", "float32")))
    assert dtype.widget == "select" and dtype.options == (None, "float16", "float32") and dtype.value is None
    scheduler = forms.form_field(Parameter("scheduler", "str", "ddim", "sampler", choices=("ddim", "pndm")))
    assert scheduler.options == ("ddim", "pndm")
    seeds = forms.form_field(Parameter("seeds", "ids", [23, 24], "seeds"))
    assert (seeds.widget, seeds.value) == ("text", "23, 24") and "commas" in seeds.help
    with pytest.raises(CpdmError, match="mapping"):
        forms.form_field(Parameter("hyperparameters", "mapping", {}, "the method's"))


def test_kind_fields_follow_the_kinds_parameters():
    names = [field.name for field in forms.form_fields("generate", ("per_prompt", "steps"))]
    assert names == ["per_prompt", "steps"]
    unlearn = [field.name for field in forms.form_fields("unlearn")]
    assert "hyperparameters" not in unlearn and "concepts" in unlearn
    with pytest.raises(CpdmError, match="generate jobs have no parameter nonsense"):
        forms.form_fields("generate", ("nonsense",))
    hyper = {field.name: field for field in forms.hyperparameter_fields("esd-x")}
    assert hyper["iterations"].value == 1000 and hyper["lr"].help == "Adam learning rate"
    assert hyper["negative_guidance"].label == "negative_guidance"  # as `cpdm unlearn -p` names it


def test_only_changed_values_override_a_methods_defaults():
    fields = forms.hyperparameter_fields("sld")
    defaults = {field.name: field.value for field in fields}
    assert forms.changed_values(fields, defaults) == {}  # the preset's own values stay in charge
    assert forms.changed_values(fields, {**defaults, "preset": "STRONG"}) == {"preset": "STRONG"}
    assert forms.changed_values(fields, {**defaults, "warmup_steps": 3}) == {"warmup_steps": 3}
    assert forms.changed_values(fields, {**defaults, "threshold": None, "preset": ""}) == {}  # emptied boxes
    text_field = forms.Field("negative", "Negative", "text", "", "")
    assert forms.changed_values([text_field], {"negative": "   "}) == {}


def test_the_device_choice():
    assert forms.job_device("auto", offline_tiny=False) is None  # the kind's default: a CUDA worker
    assert forms.job_device("auto", offline_tiny=True) == "cpu"
    assert forms.job_device("cuda", offline_tiny=True) == "cuda"
    with pytest.raises(CpdmError, match="device must be one of auto, cuda, cpu"):
        forms.job_device("tpu", offline_tiny=False)


def test_prompt_selection(ws, tmp_path):
    with pytest.raises(CpdmError, match="no prompts yet"):
        forms.prompt_selection(ws, "all")
    prompt_ids = prompted(ws, tmp_path / "anchors")
    assert forms.prompt_selection(ws, "latest") is None
    assert forms.prompt_selection(ws, "all") == prompt_ids
    assert forms.prompt_selection(ws, "chosen", [prompt_ids[1]]) == [prompt_ids[1]]
    with pytest.raises(CpdmError, match="choose at least one prompt"):
        forms.prompt_selection(ws, "chosen", [])
    with pytest.raises(CpdmError, match="no prompt 999"):
        forms.prompt_selection(ws, "chosen", [999])
    with pytest.raises(CpdmError, match="prompts must be one of"):
        forms.prompt_selection(ws, "some")


def test_a_generation_request(ws):
    ids = forms.enqueue_generation(ws, {"per_prompt": 2, "offline_tiny": True}, score_after=True, device="cpu")
    generate, score = (queue.get_job(ws, job_id) for job_id in ids)
    assert generate.title == "generate with original: latest prompts x 2" and generate.device == "cpu"
    assert score.parents == [generate.id] and score.params["variant"] == "original" and score.params["offline_tiny"]


@pytest.mark.parametrize("params, message", [
    ({"steps": 0}, "generate job: steps must be at least 1"),
    ({"height": 30}, "height"),
    ({"scheduler": "fancy"}, "scheduler must be one of"),
])
def test_a_bad_generation_queues_nothing(ws, params, message):
    with pytest.raises(CpdmError, match=message):
        forms.enqueue_generation(ws, params, score_after=True)
    assert queue.list_jobs(ws) == []


def test_an_unlearning_request(ws):
    job_id = forms.enqueue_unlearning(ws, "uce", {"concepts": [" Van Gogh ", ""], "offline_tiny": True},
                                      {"lamb": 0.25}, device="cpu")
    job = queue.get_job(ws, job_id)
    assert job.params["concepts"] == ["Van Gogh"] and job.params["variant_name"] == "uce-van-gogh"
    assert job.params["hyperparameters"]["lamb"] == 0.25 and job.params["hyperparameters"]["erase_scale"] == 1.0
    assert job.title == "unlearn Van Gogh with uce -> uce-van-gogh"
    add_variant(ws, "taken", base_model="offline-tiny", method="original")
    with pytest.raises(CpdmError, match="a variant named 'taken' already exists"):
        forms.enqueue_unlearning(ws, "uce", {"concepts": ["x"], "variant_name": "taken"})
    with pytest.raises(CpdmError, match="choose at least one concept"):
        forms.enqueue_unlearning(ws, "uce", {"concepts": []})
    with pytest.raises(CpdmError, match="lamb"):
        forms.enqueue_unlearning(ws, "uce", {"concepts": ["x"]}, {"lamb": "much"})
    assert len(queue.list_jobs(ws)) == 1


def test_a_scoring_request(ws):
    job = queue.get_job(ws, forms.enqueue_scoring(ws, "variant", "original", {"offline_tiny": True}))
    assert job.params["variant"] == "original" and job.title == "score the pairs of variant original"
    job = queue.get_job(ws, forms.enqueue_scoring(ws, "all", None, {}))
    assert job.params["variant"] is None and job.params["campaign"] is None and job.title == "score every pair"
    with pytest.raises(CpdmError, match="choose the campaign whose pairs to score"):
        forms.enqueue_scoring(ws, "campaign", None, {})
    with pytest.raises(CpdmError, match="score scope must be one of"):
        forms.enqueue_scoring(ws, "anchor", "1", {})
    with pytest.raises(CpdmError, match="batch_size must be at least 1"):
        forms.enqueue_scoring(ws, "all", None, {"batch_size": 0})
    assert len(queue.list_jobs(ws)) == 2


def test_the_chain_refuses_without_a_baseline_and_queues_nothing(ws):
    with pytest.raises(CpdmError, match="baseline variant 'original'"):
        forms.enqueue_chain(ws, "Van Gogh", "uce", variant_name="", offline_tiny=True)
    assert queue.list_jobs(ws) == []


def test_how_a_job_is_described(ws):
    now = utc_now()
    job_id = queue.enqueue(ws, "noop", {}, title="wait")
    job = queue.get_job(ws, job_id)
    assert forms.status_badge(job) == ("queued", "gray", ":material/schedule:")
    assert forms.can_cancel(job) and not forms.can_retry(job)
    assert forms.job_facts(job, now + timedelta(seconds=65)) == [
        "kind noop", "needs any worker", "attempt 0 of 3", "queued 1 min 5 s ago"]
    running = queue.claim(ws, "gpu-box:7", device="cuda:1")
    queue.report_progress(ws, job_id, "gpu-box:7", 0.425, "sampling", 75.0)
    running = queue.get_job(ws, job_id)
    assert forms.progress_text(running) == "42% · sampling · about 1 min 15 s left"
    assert "worker gpu-box:7 on cuda:1" in forms.job_facts(running)
    queue.cancel(ws, job_id)
    cancelling = queue.get_job(ws, job_id)
    assert forms.status_badge(cancelling)[0] == "cancelling" and not forms.can_cancel(cancelling)
    queue.fail(ws, job_id, "gpu-box:7", "Traceback (most recent call last):\n  File x\nValueError: bad\n")
    failed = queue.get_job(ws, job_id)
    assert forms.error_summary(failed) == "ValueError: bad" and forms.can_retry(failed)
    assert forms.progress_text(failed) == "42% · sampling"  # no time left on a job that ended
    assert any(fact.startswith("ran ") for fact in forms.job_facts(failed))
    child = queue.get_job(ws, queue.enqueue(ws, "noop", {}, after=[queue.enqueue(ws, "noop", {})]))
    assert "after job " in forms.job_facts(child)[3]


@pytest.mark.parametrize("seconds, shown", [
    (None, ""), (0.2, "under 1 s"), (42, "42 s"), (60, "1 min"), (65, "1 min 5 s"), (3600, "1 h"),
    (3725, "1 h 2 min"),
])
def test_durations(seconds, shown):
    assert forms.format_duration(seconds) == shown


def _backdate(ws, column: str, job_id: int, seconds: float) -> None:
    with ws.transaction() as conn:
        conn.execute(f"UPDATE jobs SET {column} = ? WHERE id = ?",
                     (format_time(utc_now() - timedelta(seconds=seconds)), job_id))


def test_a_stalled_queue_is_noticed_and_names_the_workers_to_start(ws):
    assert forms.stalled_queue(ws) is None  # nothing waits
    cpu_job = queue.enqueue(ws, "noop", {}, device="cpu")
    assert forms.stalled_queue(ws) is None  # just queued: an idle worker takes it within a second
    _backdate(ws, "created_at", cpu_job, 30)
    stalled = forms.stalled_queue(ws)
    assert [job.id for job in stalled.waiting] == [cpu_job] and stalled.last_heartbeat is None
    assert stalled.commands == [f"cpdm worker --workspace {ws.root}"]

    gpu_job = queue.enqueue(ws, "noop", {}, device="cuda")
    _backdate(ws, "created_at", gpu_job, 30)
    assert forms.stalled_queue(ws).commands == [f"cpdm worker --workspace {ws.root} --device cuda:0",
                                                f"cpdm worker --workspace {ws.root}"]

    # A worker that beat in the last minute is there: a job waits only because it is busy.
    busy = queue.enqueue(ws, "noop", {}, device="mps")
    claimed = queue.claim(ws, "w", device="mps")
    assert claimed.id == busy
    assert forms.stalled_queue(ws) is None
    _backdate(ws, "heartbeat_at", busy, 120)
    assert len(forms.stalled_queue(ws).waiting) == 2


def test_jobs_waiting_for_a_parent_are_not_stalled(ws):
    parent = queue.enqueue(ws, "noop", {}, device="cuda")
    child = queue.enqueue(ws, "noop", {}, after=[parent])
    for job_id in (parent, child):
        _backdate(ws, "created_at", job_id, 30)
    assert [job.id for job in forms.stalled_queue(ws).waiting] == [parent]
