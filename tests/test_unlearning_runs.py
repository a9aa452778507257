"""Unlearning runs: registration, artifacts that reload exactly, resumption, and clear refusals."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from cpdm.cli import cli
from cpdm.errors import CpdmError
from cpdm.generation.pipeline import tiny_sd_pipeline, variant_pipeline
from cpdm.unlearning import esd as esd_module
from cpdm.unlearning.artifacts import ArtifactError, apply_artifact, json_path_of
from cpdm.store.rows import get_variant, list_variants
from cpdm.unlearning.runner import CHECKPOINT_NAME, unlearn, variant_dir

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


def test_an_artifact_with_a_foreign_or_missing_key_is_refused_and_changes_nothing(ws, tmp_path):
    variant = unlearn(ws, "uce", "uce-monet", base="unused", concepts=[CONCEPT], offline_tiny=True, progress=False)
    path = ws.root / variant.artifact_path
    tensors = load_file(str(path))
    record = json.loads(json_path_of(path).read_text())

    foreign = tmp_path / "foreign.safetensors"
    save_file({**tensors, "down_blocks.9.attn2.to_k.weight": torch.zeros(2, 2)}, str(foreign))
    json_path_of(foreign).write_text(json.dumps(record))
    pipe = tiny_sd_pipeline()
    before = _unet_output(pipe)
    with pytest.raises(ArtifactError, match="unexpected keys.*down_blocks.9"):
        apply_artifact(pipe.unet, foreign)
    assert torch.equal(_unet_output(pipe), before)

    missing = tmp_path / "missing.safetensors"
    dropped = sorted(tensors)[0]
    save_file({k: v for k, v in tensors.items() if k != dropped}, str(missing))
    json_path_of(missing).write_text(json.dumps(record))
    with pytest.raises(ArtifactError, match=f"missing keys: {dropped}"):
        apply_artifact(pipe.unet, missing)
    assert torch.equal(_unet_output(pipe), before)


def test_a_changed_artifact_file_is_refused(ws):
    variant = unlearn(ws, "uce", "uce-monet", base="unused", concepts=[CONCEPT], offline_tiny=True, progress=False)
    path = ws.root / variant.artifact_path
    tensors = load_file(str(path))
    save_file({name: tensor + 1 for name, tensor in tensors.items()}, str(path))
    with pytest.raises(ArtifactError, match="changed since it was registered"):
        variant_pipeline(get_variant(ws, "uce-monet"), root=ws.root)


def test_an_sld_variant_generates_with_safety_guidance(ws):
    from cpdm.unlearning.sld import SLDPipeline

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
        ({"device": "cuda"}, "no CUDA device"),
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


def test_variants_methods_lists_every_method_with_each_default_and_what_it_does(runner):
    from cpdm.cli.unlearn_cmds import METHOD_HELP
    from cpdm.unlearning import METHODS

    result = runner.invoke(cli, ["variants", "methods"])
    assert result.exit_code == 0, result.output
    expected = []
    for method in METHODS.values():
        assert all(method.help.get(key) for key in method.defaults), f"{method.name}: a hyperparameter without help"
        expected.append(f"{method.name}: {method.summary}")
        expected += [f"    {key} = {value!r}    {method.help[key]}" for key, value in method.defaults.items()]
    assert result.output.splitlines() == expected
    assert "    lr = 1e-05    Adam learning rate" in expected  # esd-x's default, the original release's
    # `cpdm unlearn --help` names every method there is, and no other.
    listed = {name for line in METHOD_HELP.splitlines()[2:] if line.strip()
              for name in line.strip().split("  ")[0].split(", ")}  # "esd-x, esd-u   ESD (...)"
    assert listed == set(METHODS)
