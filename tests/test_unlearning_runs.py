"""Unlearning runs: registration, artifacts that reload exactly, resumption, and clear refusals."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from cpdm.cli import cli
from cpdm.errors import CpdmError
from cpdm.diffusion.pipeline import variant_pipeline
from cpdm.diffusion.tiny import tiny_sd_pipeline
from cpdm.unlearning import esd as esd_module
from cpdm.diffusion.settings import TINY_BASE
from cpdm.diffusion.artifacts import (
    ARTIFACT_FORMAT,
    ArtifactError,
    apply_artifact,
    architecture_fingerprint,
    artifact_digest,
    file_sha256,
    json_path_of,
    parameter_record,
    tensor_sha256,
    unet_architecture,
)
from cpdm.store.rows import get_variant, list_variants
from cpdm.unlearning.runner import CHECKPOINT_NAME, rerecord_variant, unlearn, variant_dir

CONCEPT = "claude monet"
FAST_ESD = {"iterations": 4, "ddim_steps": 1, "lr": 1e-3}


def _unet_output(pipe) -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    latents = torch.randn(1, 4, 8, 8, generator=generator)
    context = torch.randn(1, 77, 8, generator=generator)
    with torch.no_grad():
        return pipe.unet(latents, 400, encoder_hidden_states=context).sample


def test_a_saved_artifact_reloaded_onto_a_fresh_base_gives_identical_outputs(ws):
    variant = unlearn(ws, "uce", "uce-monet", base="unused", concepts=[CONCEPT], offline_tiny=True, progress=False)
    assert variant.status == "ready" and variant.artifact_sha256
    record = json.loads(json_path_of(ws.root / variant.artifact_path).read_text())
    for key in ("method", "base_model", "base_revision", "concepts", "preserve", "hyperparameters", "seed", "steps",
                "wall_seconds", "peak_memory_bytes", "versions", "parameters"):
        assert key in record
    assert set(record["versions"]) == {"diffusers", "torch", "cpdm"}

    edited = variant_pipeline(variant, root=ws.root)
    base = tiny_sd_pipeline()
    assert not torch.equal(_unet_output(edited), _unet_output(base))
    again = variant_pipeline(get_variant(ws, "uce-monet"), root=ws.root)
    assert torch.equal(_unet_output(edited), _unet_output(again))
    # The reloaded UNet is exactly base + the artifact: the untouched parameters are the base's.
    stored = load_file(str(ws.root / variant.artifact_path))
    for name, tensor in again.unet.state_dict().items():
        assert torch.equal(tensor, stored[name] if name in stored else base.unet.state_dict()[name])


def _made(ws, name="uce-monet"):
    """A UCE variant of the tiny model: (variant, its weights path, its tensors, its JSON)."""
    variant = unlearn(ws, "uce", name, base="unused", concepts=[CONCEPT], offline_tiny=True, progress=False)
    path = ws.root / variant.artifact_path
    return variant, path, load_file(str(path)), json.loads(json_path_of(path).read_text())


def _write(path, tensors, record, *, relist=True):
    """Write an artifact's two files; ``relist``: its JSON lists the tensors as they are (a consistent forgery)."""
    save_file(tensors, str(path))
    if relist:
        record = {**record, "parameters": [parameter_record(name, tensors[name]) for name in sorted(tensors)]}
    json_path_of(path).write_text(json.dumps(record))
    return path


def _refused(pipe, path, message, **kwargs):
    """Applying the artifact onto ``pipe`` is refused with one line naming the file, and changes nothing."""
    before = _unet_output(pipe)
    with pytest.raises(ArtifactError, match=message) as refusal:
        apply_artifact(pipe.unet, path, **{"base_model": TINY_BASE, **kwargs})
    assert str(refusal.value).startswith(f"{path}: ") and "\n" not in str(refusal.value)
    assert torch.equal(_unet_output(pipe), before)


def test_the_json_lists_every_parameter_with_shape_dtype_and_hash(ws):
    variant, path, tensors, record = _made(ws)
    assert record["format"] == ARTIFACT_FORMAT
    assert record["parameters"] == [{"name": name, "shape": list(tensors[name].shape), "dtype": "float32",
                                     "sha256": tensor_sha256(tensors[name])} for name in sorted(tensors)]
    assert record["base_model"] == TINY_BASE
    assert record["base_unet"]["fingerprint"] == architecture_fingerprint(unet_architecture(tiny_sd_pipeline().unet))
    assert variant.artifact_sha256 == artifact_digest(path) != file_sha256(path)


def test_an_artifact_with_a_foreign_or_missing_key_is_refused_and_changes_nothing(ws, tmp_path):
    _, _, tensors, record = _made(ws)
    pipe = tiny_sd_pipeline()
    unlisted = _write(tmp_path / "unlisted.safetensors",
                      {**tensors, "down_blocks.9.attn2.to_k.weight": torch.zeros(2, 2)}, record, relist=False)
    _refused(pipe, unlisted, "tensors its JSON does not list: down_blocks.9")
    foreign = _write(tmp_path / "foreign.safetensors", {**tensors, "down_blocks.9.attn2.to_k.weight": torch.zeros(2, 2)},
                     record)
    _refused(pipe, foreign, "unexpected keys \\(not in this UNet\\): down_blocks.9")
    dropped = sorted(tensors)[0]
    missing = _write(tmp_path / "missing.safetensors", {k: v for k, v in tensors.items() if k != dropped}, record,
                     relist=False)
    _refused(pipe, missing, f"missing keys its JSON lists: {dropped}")


def test_a_json_without_its_parameter_list_is_refused(ws, tmp_path):
    _, _, tensors, record = _made(ws)
    half = dict(sorted(tensors.items())[: len(tensors) // 2])
    path = _write(tmp_path / "half.safetensors", half, {k: v for k, v in record.items() if k != "parameters"},
                  relist=False)
    _refused(tiny_sd_pipeline(), path, "its JSON does not list the parameters")


def test_a_tensor_other_than_its_record_is_refused(ws, tmp_path):
    _, _, tensors, record = _made(ws)
    name = sorted(tensors)[0]
    nudged = _write(tmp_path / "nudged.safetensors", {**tensors, name: tensors[name] + 1e-3}, record, relist=False)
    _refused(tiny_sd_pipeline(), nudged, f"{name} differs from the tensor its JSON records")


def test_float16_tensors_are_refused_not_cast(ws, tmp_path):
    _, _, tensors, record = _made(ws)
    half = {name: tensor.half() for name, tensor in tensors.items()}
    path = _write(tmp_path / "half.safetensors", half, record)  # the JSON agrees: float16 throughout
    _refused(tiny_sd_pipeline(), path, "is float16; artifacts hold float32 weights")


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_nan_and_inf_tensors_are_refused(ws, tmp_path, bad):
    _, _, tensors, record = _made(ws)
    name = sorted(tensors)[-1]
    poisoned = tensors[name].clone()
    poisoned[0, 0] = bad
    path = _write(tmp_path / "bad.safetensors", {**tensors, name: poisoned}, record)
    _refused(tiny_sd_pipeline(), path, f"{name} holds NaN or Inf values")


def test_a_changed_json_is_refused(ws):
    variant, path, _, record = _made(ws)
    json_path_of(path).write_text(json.dumps({**record, "concepts": ["someone else"]}))
    with pytest.raises(ArtifactError, match="the file or its JSON changed since it was registered"):
        variant_pipeline(get_variant(ws, variant.id), root=ws.root)


def test_another_base_model_is_refused_before_anything_is_applied(ws):
    _, path, _, _ = _made(ws)
    _refused(tiny_sd_pipeline(), path, "made from 'offline-tiny', not from 'runwayml/stable-diffusion-v1-5'",
             base_model="runwayml/stable-diffusion-v1-5")
    other = tiny_sd_pipeline()
    other.unet.register_to_config(sample_size=64)  # the same weights under another architecture's config
    _refused(other, path, "architecture fingerprint differs \\(sample_size differ\\)")


def _as_older_cpdm_wrote_it(ws, variant, path, record):
    """Rewrite the JSON and the row as cpdm wrote them before: names only, the weights file's own sha256."""
    older = {k: v for k, v in record.items() if k not in ("format", "base_unet")}
    json_path_of(path).write_text(json.dumps({**older, "parameters": [p["name"] for p in record["parameters"]]}))
    with ws.transaction() as conn:
        conn.execute("UPDATE variants SET artifact_sha256 = ? WHERE id = ?", (file_sha256(path), variant.id))


def test_an_older_artifact_is_refused_until_re_recorded(ws, runner):
    variant, path, _, record = _made(ws)
    made = _unet_output(variant_pipeline(variant, root=ws.root))
    _as_older_cpdm_wrote_it(ws, variant, path, record)
    with pytest.raises(ArtifactError, match="registered by an older cpdm.*cpdm variants rerecord"):
        variant_pipeline(get_variant(ws, variant.id), root=ws.root)
    with pytest.raises(ArtifactError, match="written by an older cpdm.*re-run the unlearning"):
        apply_artifact(tiny_sd_pipeline().unet, path, base_model=TINY_BASE)

    result = runner.invoke(cli, ["variants", "rerecord", "uce-monet", "-w", str(ws.root)])
    assert result.exit_code == 0, result.output
    again = get_variant(ws, variant.id)
    assert again.artifact_sha256 == artifact_digest(path)
    assert json.loads(json_path_of(path).read_text())["parameters"] == record["parameters"]
    assert torch.equal(_unet_output(variant_pipeline(again, root=ws.root)), made)
    twice = runner.invoke(cli, ["variants", "rerecord", "uce-monet", "-w", str(ws.root)])
    assert twice.exit_code == 1 and "nothing to do" in twice.output


def test_an_older_artifact_whose_weights_changed_is_not_re_recorded(ws):
    variant, path, tensors, record = _made(ws)
    _as_older_cpdm_wrote_it(ws, variant, path, record)
    save_file({name: tensor * 2 for name, tensor in tensors.items()}, str(path))
    with pytest.raises(ArtifactError, match="not the weights file the variant registered"):
        rerecord_variant(ws, variant.id)


def test_weights_that_come_out_nan_fail_the_variant_and_write_no_artifact(ws, monkeypatch):
    from cpdm.unlearning import uce

    real = uce.uce_edit_matrix
    monkeypatch.setattr(uce, "uce_edit_matrix", lambda *args: real(*args) * float("nan"))
    with pytest.raises(ArtifactError, match="holds NaN or Inf values"):
        unlearn(ws, "uce", "uce-nan", base="unused", concepts=[CONCEPT], offline_tiny=True, progress=False)
    variant = get_variant(ws, "uce-nan")
    assert variant.status == "failed" and "NaN or Inf" in variant.message and variant.artifact_path is None
    assert not list(variant_dir(ws.root, "uce-nan").glob("*.safetensors"))


def test_a_changed_artifact_file_is_refused(ws):
    variant = unlearn(ws, "uce", "uce-monet", base="unused", concepts=[CONCEPT], offline_tiny=True, progress=False)
    path = ws.root / variant.artifact_path
    tensors = load_file(str(path))
    save_file({name: tensor + 1 for name, tensor in tensors.items()}, str(path))
    with pytest.raises(ArtifactError, match="changed since it was registered"):
        variant_pipeline(get_variant(ws, "uce-monet"), root=ws.root)


def test_an_sld_variant_generates_with_safety_guidance(ws):
    from cpdm.diffusion.sld import SLDPipeline

    variant = unlearn(ws, "sld", "sld-monet", base="unused", concepts=[CONCEPT], params={"preset": "max"},
                      offline_tiny=True, progress=False)
    assert variant.artifact_path is None and variant.params["hyperparameters"]["preset"] == "MAX"
    pipe = variant_pipeline(variant, root=ws.root)
    assert isinstance(pipe, SLDPipeline) and pipe.concept == CONCEPT and pipe.settings.warmup_steps == 0


def _interrupt_at(monkeypatch, step_to_fail: int, exception):
    """Make the ESD loss raise at its ``step_to_fail``-th call (as a kill would stop the run there)."""
    calls = {"n": 0}
    real = esd_module.esd_loss

    def failing(*args, **kwargs):
        if calls["n"] == step_to_fail:
            raise exception
        calls["n"] += 1
        return real(*args, **kwargs)

    monkeypatch.setattr(esd_module, "esd_loss", failing)


def test_kill_and_resume_gives_the_same_weights_as_an_uninterrupted_run(ws, monkeypatch):
    whole = unlearn(ws, "esd-x", "esd-whole", base="unused", concepts=[CONCEPT], params=FAST_ESD, seed=7,
                    offline_tiny=True, progress=False)

    with monkeypatch.context() as patch:
        _interrupt_at(patch, 3, KeyboardInterrupt())
        with pytest.raises(KeyboardInterrupt):
            unlearn(ws, "esd-x", "esd-split", base="unused", concepts=[CONCEPT], params=FAST_ESD, seed=7,
                    offline_tiny=True, progress=False, checkpoint_every=2)
    interrupted = get_variant(ws, "esd-split")
    assert interrupted.status == "failed"
    assert (variant_dir(ws.root, "esd-split") / CHECKPOINT_NAME).is_file()

    resumed = unlearn(ws, "esd-x", "esd-split", base="unused", concepts=[CONCEPT], params=FAST_ESD, seed=7,
                      offline_tiny=True, progress=False, checkpoint_every=2, resume=True)
    assert resumed.status == "ready" and resumed.id == interrupted.id
    assert not (variant_dir(ws.root, "esd-split") / CHECKPOINT_NAME).exists()
    first = load_file(str(ws.root / whole.artifact_path))
    second = load_file(str(ws.root / resumed.artifact_path))
    assert sorted(first) == sorted(second)
    for name in first:
        assert torch.equal(first[name], second[name]), name


def test_resume_refuses_a_checkpoint_of_other_settings(ws, monkeypatch):
    with monkeypatch.context() as patch:
        _interrupt_at(patch, 3, KeyboardInterrupt())
        with pytest.raises(KeyboardInterrupt):
            unlearn(ws, "esd-x", "esd-split", base="unused", concepts=[CONCEPT], params=FAST_ESD,
                    offline_tiny=True, progress=False, checkpoint_every=2)
    with pytest.raises(CpdmError, match="other settings"):
        unlearn(ws, "esd-x", "esd-split", base="unused", concepts=[CONCEPT], params={**FAST_ESD, "lr": 1e-4},
                offline_tiny=True, progress=False, checkpoint_every=2, resume=True)


def test_a_nan_loss_stops_the_run_and_marks_the_variant_failed_with_the_step(ws, monkeypatch):
    real = esd_module.esd_loss
    calls = {"n": 0}

    def poisoned(*args, **kwargs):
        calls["n"] += 1
        loss = real(*args, **kwargs)
        return loss * float("nan") if calls["n"] == 2 else loss

    monkeypatch.setattr(esd_module, "esd_loss", poisoned)
    with pytest.raises(CpdmError, match="nan at step 1"):
        unlearn(ws, "esd-x", "esd-nan", base="unused", concepts=[CONCEPT], params=FAST_ESD,
                offline_tiny=True, progress=False)
    variant = get_variant(ws, "esd-nan")
    assert variant.status == "failed" and "step 1" in variant.message
    assert variant.artifact_path is None


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"method_name": "no-such-method"}, "unknown unlearning method 'no-such-method'"),
        ({"concepts": ["   "]}, "tokenises to nothing"),
        ({"concepts": []}, "at least one concept"),
        ({"method_name": "gradient-ascent"}, "gradient-ascent needs images of the concept"),
        ({"method_name": "gradient-ascent", "images_dir": "EMPTY_FOLDER"}, "needs images of the concept"),
        ({"method_name": "gradient-ascent", "images_dir": "NO_FOLDER"}, "no such folder of images"),
        ({"preserve": [""]}, "concept to preserve '' tokenises to nothing"),
        ({"offline_tiny": False, "base": "NOT_A_FOLDER"}, "not a Stable Diffusion folder"),
        ({"device": "cuda"}, "CUDA is not available"),
        ({"params": {"lamb": "abc"}}, "lamb must be a finite number"),
        ({"params": {"lamb": "0"}}, "lamb must be positive"),
    ],
)
def test_bad_requests_are_refused_clearly_with_nothing_registered(ws, tmp_path, kwargs, message):
    if kwargs.get("device") == "cuda" and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    arguments = {"method_name": "uce", "variant_name": "v", "base": "unused", "concepts": [CONCEPT],
                 "offline_tiny": True, "progress": False, **kwargs}
    if arguments["base"] == "NOT_A_FOLDER":
        arguments["base"] = str(tmp_path)
    if arguments.get("images_dir") == "EMPTY_FOLDER":
        arguments["images_dir"] = tmp_path
    if arguments.get("images_dir") == "NO_FOLDER":
        arguments["images_dir"] = tmp_path / "missing"
    with pytest.raises(CpdmError, match=message):
        unlearn(ws, arguments.pop("method_name"), arguments.pop("variant_name"), **arguments)
    assert list_variants(ws) == []
    assert not (ws.root / "unlearning").exists()


def test_a_concept_longer_than_the_text_encoder_reads_is_warned_about_and_recorded(ws, runner):
    long_concept = "in the manner of " + "claude monet " * 6  # the tiny tokenizer spells it: 81 tokens
    result = runner.invoke(cli, ["unlearn", "uce", "--variant-name", "uce-long", "--offline-tiny", "--concept",
                                 long_concept, "--concept", CONCEPT, "--quiet", "-w", str(ws.root)])
    assert result.exit_code == 0, result.output
    assert result.stderr.splitlines() == [
        "note: concept 'in the manner of claude monet claude mo…' has 81 tokens; the text encoder reads the first 77, "
        "the rest is cut (recorded with the variant)"]
    cut = [{"text": long_concept, "role": "concept", "tokens": 81, "kept": 77}]
    variant = get_variant(ws, "uce-long")
    assert variant.params["truncated"] == cut
    assert json.loads(json_path_of(ws.root / variant.artifact_path).read_text())["truncated"] == cut


def test_concepts_the_text_encoder_reads_whole_record_no_truncation(ws):
    variant = unlearn(ws, "sld", "sld-monet", base="unused", concepts=[CONCEPT], offline_tiny=True, progress=False,
                      warn=pytest.fail)
    assert "truncated" not in variant.params


def test_cli_unlearn_then_variants_list_and_show(ws, runner):
    result = runner.invoke(cli, ["unlearn", "uce", "--variant-name", "uce-monet", "--offline-tiny", "--concept",
                                 CONCEPT, "--preserve", "a photo of a dog", "--quiet", "-w", str(ws.root)])
    assert result.exit_code == 0, result.output
    assert "uce-monet (uce) ready" in result.output
    listed = runner.invoke(cli, ["variants", "list", "-w", str(ws.root)])
    assert listed.exit_code == 0 and "uce-monet" in listed.output and "ready" in listed.output
    shown = json.loads(runner.invoke(cli, ["variants", "show", "uce-monet", "-w", str(ws.root)]).output)
    assert shown["artifact"]["preserve"] == ["a photo of a dog"]
    assert shown["artifact"]["hyperparameters"]["lamb"] == 0.5

    refused = runner.invoke(cli, ["unlearn", "nope", "--variant-name", "x", "--offline-tiny", "--concept", CONCEPT,
                                  "-w", str(ws.root)])
    assert refused.exit_code == 1 and "unknown unlearning method" in refused.output
    missing = runner.invoke(cli, ["variants", "show", "nope", "-w", str(ws.root)])
    assert missing.exit_code == 1 and "unknown variant 'nope'" in missing.output


# Two names that reduce to the same characters in [A-Za-z0-9._-]: both were once "unlearning/variant/".
ALIKE = ("莫奈", "梵高")


def test_two_variants_whose_names_sanitise_alike_keep_their_own_artifacts(ws, runner):
    for name, concept in zip(ALIKE, (CONCEPT, "vincent van gogh")):
        result = runner.invoke(cli, ["unlearn", "uce", "--variant-name", name, "--offline-tiny", "--concept", concept,
                                     "--quiet", "-w", str(ws.root)])
        assert result.exit_code == 0, result.output
    first, second = (get_variant(ws, name) for name in ALIKE)
    assert first.artifact_path != second.artifact_path
    assert first.artifact_sha256 != second.artifact_sha256
    for variant in (first, second):  # each file is still the one registered: the second run overwrote nothing
        variant_pipeline(variant, root=ws.root)
        assert json.loads(json_path_of(ws.root / variant.artifact_path).read_text())["concepts"] == list(variant.concepts)


def test_interrupted_runs_of_names_that_sanitise_alike_keep_their_own_checkpoints(ws, monkeypatch):
    for name in ALIKE:
        with monkeypatch.context() as patch:
            _interrupt_at(patch, 3, KeyboardInterrupt())
            with pytest.raises(KeyboardInterrupt):
                unlearn(ws, "esd-x", name, base="unused", concepts=[CONCEPT], params=FAST_ESD,
                        offline_tiny=True, progress=False, checkpoint_every=2)
    folders = {variant_dir(ws.root, name) for name in ALIKE}
    assert len(folders) == 2 and all((folder / CHECKPOINT_NAME).is_file() for folder in folders)


def test_a_folder_another_variant_owns_is_refused_before_anything_is_registered(ws):
    made = unlearn(ws, "uce", "uce-monet", base="unused", concepts=[CONCEPT], offline_tiny=True, progress=False)
    weights = ws.root / made.artifact_path
    kept = weights.read_bytes()
    # A database that no longer knows the variant (restored from an older copy) beside the unlearning folder:
    with ws.transaction() as conn:
        conn.execute("DELETE FROM variants WHERE id = ?", (made.id,))
    with pytest.raises(CpdmError, match=f"holds the files of variant {made.id} 'uce-monet'.*choose another variant name"):
        unlearn(ws, "uce", "uce-monet", base="unused", concepts=[CONCEPT], offline_tiny=True, progress=False)
    assert list_variants(ws) == []
    assert weights.read_bytes() == kept


def test_ablation_images_are_made_once_per_base_model_and_caption_set(ws, monkeypatch):
    """A second run with other training hyperparameters generates nothing; more images or other captions do."""
    from cpdm.unlearning import ablation

    made = []
    real = ablation.generate_images

    def recording(pipe, prompts, seeds, steps, guidance, *args, **kwargs):
        made.append((type(pipe.scheduler).__name__, len(prompts), steps, guidance))
        return real(pipe, prompts, seeds, steps, guidance, *args, **kwargs)

    monkeypatch.setattr(ablation, "generate_images", recording)
    small = {"iterations": 1, "batch_size": 2, "n_images": 3, "caption_count": 2, "anchor_steps": 2}

    def run(name, **changes):
        made.clear()
        variant = unlearn(ws, "ablation", name, base="unused", concepts=[CONCEPT], params={**small, **changes},
                          offline_tiny=True, progress=False)
        return json.loads(json_path_of(ws.root / variant.artifact_path).read_text())["run"]

    first = run("ca-first")
    # The authors' sampler and settings: DPM-Solver++ at 25 steps (2 here), guidance 6.
    assert {(kind, steps, guidance) for kind, _, steps, guidance in made} == {("DPMSolverMultistepScheduler", 2, 6.0)}
    assert sum(count for _, count, _, _ in made) == 3 and first["anchor_images_generated"] == 3
    folder = ws.root / "cache" / first["anchor_image_cache"]
    assert sorted(p.name for p in folder.glob("*.jpg")) == ["00000.jpg", "00001.jpg", "00002.jpg"]

    second = run("ca-other-lr", lr=1e-4, iterations=2, hflip=False)
    assert made == [] and second["anchor_images_generated"] == 0
    assert second["anchor_image_cache"] == first["anchor_image_cache"]

    more = run("ca-more", n_images=4)
    assert sum(count for _, count, _, _ in made) == 1 and more["anchor_image_cache"] == first["anchor_image_cache"]
    other_captions = run("ca-other-captions", caption_count=3)
    assert other_captions["anchor_images_generated"] == 3
    assert other_captions["anchor_image_cache"] != first["anchor_image_cache"]


def test_esd_u_with_the_newer_releases_parameter_set_records_it_and_stores_those_parameters(ws):
    variant = unlearn(ws, "esd-u", "esd-u-2025", base="unused", concepts=[CONCEPT], offline_tiny=True, progress=False,
                      params={"iterations": 1, "ddim_steps": 1, "parameters": "esd-u-2025"})
    assert variant.params["hyperparameters"]["parameters"] == "esd-u-2025"
    record = json.loads(json_path_of(ws.root / variant.artifact_path).read_text())
    assert record["hyperparameters"]["parameters"] == "esd-u-2025"
    stored = load_file(str(ws.root / variant.artifact_path))
    assert "time_embedding.linear_1.weight" in stored and "conv_out.weight" in stored
    assert not any(".norm" in name for name in stored)
