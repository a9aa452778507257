"""clip-interrogator's own modes on cpdm's models: the package's exact prompts, no download, the recorded params."""

from __future__ import annotations

import pytest

from cpdm.curation import interrogate as interrogation
from cpdm.curation.interrogate import (
    DEFAULT_INTERROGATOR_CLIP,
    interrogate_anchors,
    TextImageClip,
    load_interrogator_clip,
    tidy_prompt,
)
from cpdm.curation.prompts import prompt_rows
from clip_interrogator.clip_interrogator import _merge_tables
from cpdm.store.images import load_image
from tests.curation_support import add_anchors, write_banks

# The package's own reference runs warn that torch.cuda.amp.autocast is deprecated (cpdm's runs silence it).
pytestmark = pytest.mark.filterwarnings("ignore:.*autocast")

CAPTION = "a painting of a pond"
LONG_TINY_CLIP = "cpdm-test-tiny-clip-77"


@pytest.fixture(scope="module")
def clip():
    return load_interrogator_clip(DEFAULT_INTERROGATOR_CLIP, offline_tiny=True)


@pytest.fixture(scope="module")
def long_clip(tmp_path_factory):
    """A tiny random CLIP whose text tower reads 77 tokens, as real ones do, so a chain can grow past 8 terms."""
    import json
    from types import SimpleNamespace

    import open_clip
    import torch

    config = {"embed_dim": 16, "quick_gelu": True,
              "vision_cfg": {"image_size": 32, "layers": 2, "width": 32, "head_width": 16, "patch_size": 8},
              "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}}
    folder = tmp_path_factory.mktemp("clip-config")
    (folder / f"{LONG_TINY_CLIP}.json").write_text(json.dumps(config))
    open_clip.add_model_config(folder)
    torch.manual_seed(3)
    model, _, preprocess = open_clip.create_model_and_transforms(LONG_TINY_CLIP, pretrained=None)
    backbone = SimpleNamespace(name=f"{LONG_TINY_CLIP}/none", model=model.eval(), preprocess=preprocess,
                               device=torch.device("cpu"))
    return TextImageClip(key=f"tiny:{LONG_TINY_CLIP}", backbone=backbone,
                         tokenizer=open_clip.get_tokenizer(LONG_TINY_CLIP))


@pytest.fixture
def setup(ws, tmp_path):
    anchors = add_anchors(ws, tmp_path / "anchors", count=1)
    banks = write_banks(tmp_path / "banks")
    (banks / "negative.txt").write_text("".join(f"negative term {j}\n" for j in range(5)))
    return ws, anchors[0], banks


def reference_interrogator(clip, banks, caption: str):
    """The package's own ``Interrogator``, run its own way: it embeds the banks itself.

    It is given the tiny CLIP (so it loads none), no caption model and no
    embedding cache (so it downloads nothing); the package asks
    ``generate_caption`` only for an empty caption, which is answered with
    that empty caption.
    """
    from clip_interrogator import Config, Interrogator

    config = Config(clip_model_name=clip.backbone.name, caption_model_name=None, cache_path=None,
                    download_cache=False, data_path=str(banks), device="cpu", quiet=True)
    config.clip_model, config.clip_preprocess = clip.backbone.model, clip.backbone.preprocess
    interrogator = Interrogator(config)
    interrogator.generate_caption = lambda _image: caption
    return interrogator


def package_prompt(interrogator, image, mode: str, caption: str) -> str:
    """The package's prompt in ``mode``, as cpdm tidies it."""
    run = {"best": lambda: interrogator.interrogate(image, caption=caption),
           "fast": lambda: interrogator.interrogate_fast(image, caption=caption),
           "classic": lambda: interrogator.interrogate_classic(image, caption=caption),
           "negative": lambda: interrogator.interrogate_negative(image)}
    return tidy_prompt(run[mode]())


def flavor_chain(interrogator, image, caption: str) -> str:
    """The best mode's chained candidate, the steps of ``Interrogator.interrogate`` up to the chain."""
    features = interrogator.image_to_features(image)
    merged = _merge_tables([interrogator.artists, interrogator.flavors, interrogator.mediums,
                            interrogator.movements, interrogator.trendings], interrogator)
    terms = merged.rank(features, interrogator.config.flavor_intermediate_count)
    return interrogator.chain(features, terms, caption, interrogator.similarity(features, caption) if caption else 0)


def interrogate_with_caption(ws, anchor, banks, clip, mode, caption, monkeypatch):
    """cpdm's prompt for the anchor in ``mode`` and the interrogator that wrote it; a fixed caption stands in for BLIP."""
    monkeypatch.setattr(interrogation, "_choose_captioner",
                        lambda *args: ((lambda image: caption) if caption else None, "fixed caption"))
    used = []
    build = interrogation.package_interrogator
    monkeypatch.setattr(interrogation, "package_interrogator", lambda *args: used.append(build(*args)) or used[-1])
    report = interrogate_anchors(ws, [anchor], mode=mode, banks_dir=banks, clip=clip, progress=False)
    [prompt] = prompt_rows(ws, prompt_ids=report.added)
    return prompt, used[0]


def anchor_image(ws, anchor):
    return load_image(ws, ws.conn.execute("SELECT image FROM anchors WHERE id = ?", (anchor,)).fetchone()[0])


@pytest.mark.parametrize("caption", [CAPTION, ""])
def test_best_mode_writes_the_packages_exact_prompt_and_chain(setup, long_clip, caption, monkeypatch):
    ws, anchor, banks = setup
    image = anchor_image(ws, anchor)
    prompt, interrogator = interrogate_with_caption(ws, anchor, banks, long_clip, "best", caption, monkeypatch)
    reference = reference_interrogator(long_clip, banks, caption)
    assert prompt.text == package_prompt(reference, image, "best", caption)
    chain = flavor_chain(interrogator, image, caption)
    assert chain == flavor_chain(reference, image, caption)
    assert len(chain.split(", ")) >= 3  # terms were chained (the best prefix of a chain of at least 8)
    assert prompt.params["mode"] == "best" and prompt.params["caption"] == (caption or None)


@pytest.mark.parametrize("mode", ["fast", "classic", "negative"])
def test_the_other_package_modes_write_the_packages_exact_prompts(setup, long_clip, mode, monkeypatch):
    ws, anchor, banks = setup
    image = anchor_image(ws, anchor)
    prompt, _ = interrogate_with_caption(ws, anchor, banks, long_clip, mode, CAPTION, monkeypatch)
    assert prompt.text == package_prompt(reference_interrogator(long_clip, banks, CAPTION), image, mode, CAPTION)
    assert prompt.params["mode"] == mode


def test_the_default_clip_is_recorded_and_a_rerun_skips_only_the_same_mode(setup, clip, monkeypatch):
    import clip_interrogator.clip_interrogator as package
    import open_clip

    def no_loading(*args, **kwargs):
        raise AssertionError("the interrogator tried to download or load a model")

    monkeypatch.setattr(package.requests, "get", no_loading)
    monkeypatch.setattr(open_clip, "create_model_and_transforms", no_loading)
    ws, anchor, banks = setup
    prompt, _ = interrogate_with_caption(ws, anchor, banks, clip, "best", CAPTION, monkeypatch)
    assert prompt.params["clip"] == f"tiny:{DEFAULT_INTERROGATOR_CLIP}" == prompt.author
    assert prompt.params["clip_model"] == DEFAULT_INTERROGATOR_CLIP
    assert interrogate_anchors(ws, banks_dir=banks, clip=clip, progress=False).skipped == [anchor]
    assert len(interrogate_anchors(ws, mode="metadata", banks_dir=banks, clip=clip, progress=False).added) == 1


def test_the_command_takes_a_mode_and_a_clip_and_records_them(setup, runner):
    from cpdm.cli import cli

    ws, anchor, banks = setup
    base = ["prompts", "interrogate", "--workspace", str(ws.root), "--offline-tiny", "--banks", str(banks), "-q"]
    result = runner.invoke(cli, [*base, "--mode", "fast", "--clip", "ViT-B-32/openai"])
    assert result.exit_code == 0, result.output
    assert "interrogated 1 anchors" in result.output and "no caption with --offline-tiny" in result.output
    [prompt] = prompt_rows(ws)
    assert prompt.params["mode"] == "fast" and prompt.params["clip_model"] == "ViT-B-32/openai"
    result = runner.invoke(cli, [*base, "--mode", "sketchy"])
    assert result.exit_code == 2 and "sketchy" in result.output
