"""CLIP interrogation: term ranking, the cached bank embeddings, the metadata recipe, resumable runs."""

from __future__ import annotations

import pytest
import torch

from cpdm.curation import interrogate as interrogation
from cpdm.curation.interrogate import (
    BANKS,
    InterrogationError,
    bank_cache_path,
    build_recipe,
    clip_interrogator_banks_dir,
    interrogate_anchors,
    load_banks,
    load_interrogator_clip,
    metadata_bank_texts,
    rank_terms,
    save_bank_embeddings,
)
from cpdm.curation.prompts import prompt_rows
from cpdm.errors import MissingWeightsError
from cpdm.store.images import load_image
from tests.curation_support import add_anchors, write_banks

MODEL = "ViT-B-32/openai"


@pytest.fixture(scope="module")
def clip():
    return load_interrogator_clip(MODEL, offline_tiny=True)


@pytest.fixture
def setup(ws, tmp_path):
    anchors = add_anchors(ws, tmp_path / "anchors")
    return ws, anchors, write_banks(tmp_path / "banks")


def test_the_clip_interrogator_banks_are_read_from_the_installed_package():
    banks = load_banks(clip_interrogator_banks_dir())
    assert set(banks) == set(BANKS)
    assert "impressionism" in banks["movements"]
    assert "Claude Monet" in banks["artists"]
    assert len(banks["flavors"]) > 50_000
    assert all(len(set(terms)) == len(terms) and all(t == t.strip() and t for t in terms) for terms in banks.values())


def test_a_bank_folder_missing_a_file_is_refused_by_name(tmp_path):
    folder = write_banks(tmp_path / "banks")
    (folder / "movements.txt").unlink()
    with pytest.raises(InterrogationError, match="movements.txt is missing"):
        load_banks(folder)
    (folder / "movements.txt").write_text("\n\n")
    with pytest.raises(InterrogationError, match="holds no terms"):
        load_banks(folder)


def test_rank_terms_puts_the_most_similar_first():
    terms = ["far", "closest", "middle"]
    image = torch.nn.functional.normalize(torch.tensor([1.0, 0.2, 0.0]), dim=0)
    bank = torch.nn.functional.normalize(torch.tensor([[0.0, 0.0, 1.0], [1.0, 0.2, 0.0], [1.0, 1.0, 0.0]]), dim=1)
    ranked = rank_terms(image, bank, terms, top=2)
    assert [term for term, _ in ranked] == ["closest", "middle"]
    assert ranked[0][1] == pytest.approx(1.0)


def test_the_metadata_recipe_drops_empty_parts():
    assert build_recipe("Water Lilies", "Claude Monet", "a pond", "an oil painting", "impressionism", ["soft", "blue"]) \
        == "Water Lilies, by Claude Monet, a pond, an oil painting, impressionism, soft, blue"
    assert build_recipe(None, None, None, "a sketch", "", []) == "a sketch"


def test_a_term_planted_closest_to_the_image_ranks_first_and_lands_in_the_prompt(setup, clip):
    ws, anchors, banks_dir = setup
    banks = load_banks(banks_dir)
    image_sha = ws.conn.execute("SELECT image FROM anchors WHERE id = ?", (anchors[0],)).fetchone()[0]
    image_embedding = clip.embed_images([load_image(ws, image_sha)])[0]
    for bank in BANKS:  # every term orthogonal to the image except the planted one
        terms = banks[bank]
        embedding = torch.zeros(len(terms), image_embedding.shape[0])
        other = torch.linalg.svd(image_embedding.reshape(1, -1)).Vh[1]
        embedding[:] = other
        planted = terms.index(f"{bank} term 3")
        embedding[planted] = image_embedding
        save_bank_embeddings(bank_cache_path(ws, clip.key, bank, metadata_bank_texts(banks)[bank]), embedding)
    report = interrogate_anchors(ws, [anchors[0]], mode="metadata", banks_dir=banks_dir, clip=clip, top_flavors=1,
                                 progress=False)
    [prompt] = prompt_rows(ws, prompt_ids=report.added)
    assert prompt.text == "Work 0, by Artist 0, mediums term 3, movements term 3, flavors term 3"
    assert prompt.origin == "interrogator" and prompt.author == clip.key == f"tiny:{MODEL}"
    assert prompt.params["terms"]["mediums"] == ["mediums term 3"]


def test_bank_embeddings_are_computed_once_per_model_and_reused(setup, clip, monkeypatch):
    ws, anchors, banks_dir = setup
    calls = []
    real = type(clip).embed_texts
    monkeypatch.setattr(type(clip), "embed_texts", lambda self, texts: calls.append(len(texts)) or real(self, texts))
    interrogate_anchors(ws, [anchors[0]], mode="metadata", banks_dir=banks_dir, clip=clip, progress=False)
    assert sum(calls) == 4 * 6
    for bank, texts in metadata_bank_texts(load_banks(banks_dir)).items():
        assert bank_cache_path(ws, clip.key, bank, texts).is_file()
    calls.clear()
    interrogate_anchors(ws, anchors, mode="metadata", banks_dir=banks_dir, clip=clip, progress=False)
    assert calls == []


def test_interrogation_is_resumable_and_the_artist_term_stands_in_for_an_unknown_artist(setup, clip):
    ws, anchors, banks_dir = setup
    ws.conn.execute("UPDATE anchors SET artist = NULL, title = NULL WHERE id = ?", (anchors[1],))
    first = interrogate_anchors(ws, mode="metadata", banks_dir=banks_dir, clip=clip, progress=False)
    assert len(first.added) == 3
    again = interrogate_anchors(ws, mode="metadata", banks_dir=banks_dir, clip=clip, progress=False)
    assert again.added == [] and again.skipped == anchors
    [unknown] = prompt_rows(ws, anchor_id=anchors[1])
    assert unknown.text.startswith("by artists term ")
    assert len(prompt_rows(ws)) == 3


def test_unknown_anchors_and_an_empty_workspace_are_clear_errors(ws, tmp_path, clip):
    banks = write_banks(tmp_path / "banks")
    with pytest.raises(Exception, match="no anchors"):
        interrogate_anchors(ws, banks_dir=banks, clip=clip)
    add_anchors(ws, tmp_path / "anchors", count=1)
    with pytest.raises(Exception, match="no anchor 99"):
        interrogate_anchors(ws, [99], banks_dir=banks, clip=clip)


def test_a_caption_model_that_is_not_here_names_the_missing_weights(setup, clip):
    ws, anchors, banks_dir = setup
    with pytest.raises(MissingWeightsError, match="BLIP caption weights .*no-such-blip"):
        interrogate_anchors(ws, banks_dir=banks_dir, clip=clip, caption_model=str(ws.root / "no-such-blip"))
    assert prompt_rows(ws) == []


def test_without_cached_blip_weights_the_run_says_captions_are_left_out(setup, clip, monkeypatch):
    ws, anchors, banks_dir = setup
    monkeypatch.setattr(interrogation, "caption_weights_present", lambda model: False)
    report = interrogate_anchors(ws, [anchors[0]], banks_dir=banks_dir, clip=clip, progress=False)
    assert any("captions left out" in note and "blip-image-captioning-large" in note for note in report.notes)
    assert len(report.added) == 1


def test_the_command_interrogates_with_the_tiny_model(setup, runner):
    from cpdm.cli import cli

    ws, anchors, banks_dir = setup
    args = ["prompts", "interrogate", "--workspace", str(ws.root), "--offline-tiny", "--banks", str(banks_dir),
            "--model", MODEL, "-q"]
    result = runner.invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert "interrogated 3 anchors" in result.output
    assert "no caption with --offline-tiny" in result.output
    result = runner.invoke(cli, args)
    assert "interrogated 0 anchors, skipped 3" in result.output


def _write_tiny_blip(folder):
    """A random-initialised BLIP captioner with a 45-word vocabulary, saved like a downloaded one."""
    from transformers import BertTokenizer, BlipConfig, BlipForConditionalGeneration, BlipImageProcessor, BlipProcessor

    folder.mkdir(parents=True)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [f"w{i}" for i in range(40)]
    (folder / "vocab.txt").write_text("\n".join(vocab))
    tokenizer = BertTokenizer(str(folder / "vocab.txt"))
    tokenizer.bos_token = "[CLS]"
    processor = BlipProcessor(image_processor=BlipImageProcessor(size={"height": 32, "width": 32}), tokenizer=tokenizer)
    config = BlipConfig(
        text_config=dict(vocab_size=len(vocab), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, max_position_embeddings=32, encoder_hidden_size=16, bos_token_id=2,
                         sep_token_id=3, pad_token_id=0),
        vision_config=dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                           image_size=32, patch_size=8),
        projection_dim=16,
    )
    BlipForConditionalGeneration(config).save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


@pytest.mark.slow  # transformers' BLIP classes take a minute to import and build on 2 shared cores
def test_a_local_blip_caption_lands_in_the_prompt(setup, clip):
    ws, anchors, banks_dir = setup
    blip = _write_tiny_blip(ws.root.parent / "blip")
    report = interrogate_anchors(ws, [anchors[0]], mode="metadata", banks_dir=banks_dir, clip=clip,
                                 caption_model=str(blip), progress=False)
    [prompt] = prompt_rows(ws, prompt_ids=report.added)
    caption = prompt.params["caption"]
    assert caption and caption.split()[0].startswith("w")
    assert prompt.text.startswith(f"Work 0, by Artist 0, {caption}, mediums term ")
    assert prompt.params["caption_model"] == str(blip)
