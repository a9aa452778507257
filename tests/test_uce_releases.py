"""UCE follows one author release at a time, exactly; the preserve set reaches the closed form.

The references below are written from the two release scripts of
rohitgandikota/unified-concept-editing, in float64, without any of
``cpdm.unlearning.uce``: they collect the layers, tokenize, pick the rows and
build each layer's ``mat1 @ inverse(mat2)`` as the scripts do.

* ``train-scripts/train_erase.py`` at f7222e6 (release 2023, the default);
* ``trainscripts/uce_sd_erase.py`` at ea9644f (release 2024).
"""

from __future__ import annotations

import json

import pytest
import torch

from cpdm.cli import cli
from cpdm.demo import build as demo
from cpdm.diffusion.tiny import tiny_sd_pipeline
from cpdm.store.rows import get_variant
from cpdm.unlearning import get_method
from cpdm.unlearning.base import TrainingOptions, UnlearnRequest
from cpdm.unlearning.runner import unlearn

CONCEPTS = ("claude monet", "the starry night")
PRESERVE = ("mira dotwell", "hal crossley", "a photo of a dog")
TOLERANCE = 1e-6


# --- the releases, as their scripts compute them -------------------------------------------------------

def _embed(pipe, texts):
    """The scripts' encoding: padded to 77 tokens, input ids only; float64 rows and the attention masks."""
    tokens = pipe.tokenizer(list(texts), padding="max_length", max_length=pipe.tokenizer.model_max_length,
                            truncation=True, return_tensors="pt")
    with torch.no_grad():
        hidden = pipe.text_encoder(tokens.input_ids)[0]
    return hidden.to(torch.float64), tokens.attention_mask


def _release_2023_layers(unet):
    """train_erase.py's edit_model: attn2 of every transformer block of the down, up and mid blocks; to_v, then to_k."""
    attentions = []
    for name, net in unet.named_children():
        if "up" in name or "down" in name:
            for block in net:
                if "Cross" in block.__class__.__name__:
                    for attention in block.attentions:
                        attentions += [transformer.attn2 for transformer in attention.transformer_blocks]
        if "mid" in name:
            for attention in net.attentions:
                attentions += [transformer.attn2 for transformer in attention.transformer_blocks]
    return [a.to_v for a in attentions] + [a.to_k for a in attentions]


def reference_2023(pipe, concepts, guide, preserve, lamb=0.5, erase_scale=1.0, preserve_scale=None):
    """train_erase.py with technique "replace": the new weight of each edited layer, by module."""
    new_texts = [guide if guide != "" else " " for _ in concepts]  # its empty guide becomes " "
    retain_texts = [""] + list(preserve)
    if preserve_scale is None:
        preserve_scale = max(0.1, 1 / len(retain_texts))
    edited = {}
    for layer in _release_2023_layers(pipe.unet):
        weight = layer.weight.detach().to(torch.float64)
        mat1 = lamb * weight
        mat2 = lamb * torch.eye(weight.shape[1], dtype=torch.float64)
        for old_text, new_text in zip(concepts, new_texts):
            embeddings, mask = _embed(pipe, [old_text, new_text])
            final_token_idx = int(mask[0].sum()) - 2
            final_token_idx_new = int(mask[1].sum()) - 2
            farthest = max(final_token_idx_new, final_token_idx)
            old_emb = embeddings[0][final_token_idx: len(embeddings[0]) - max(0, farthest - final_token_idx)]
            new_emb = embeddings[1][final_token_idx_new: len(embeddings[1]) - max(0, farthest - final_token_idx_new)]
            values = new_emb @ weight.T  # layer(new_emb): the original layer, no bias
            for token in range(old_emb.shape[0]):
                mat1 += erase_scale * torch.outer(values[token], old_emb[token])
                mat2 += erase_scale * torch.outer(old_emb[token], old_emb[token])
        for text in retain_texts:
            embeddings, _ = _embed(pipe, [text, text])
            context, values = embeddings[0], embeddings[1] @ weight.T
            for token in range(context.shape[0]):  # all 77 tokens
                mat1 += preserve_scale * torch.outer(values[token], context[token])
                mat2 += preserve_scale * torch.outer(context[token], context[token])
        edited[layer] = mat1 @ torch.inverse(mat2)
    return edited


def reference_2024(pipe, concepts, guide, preserve, lamb=0.5, erase_scale=1.0, preserve_scale=1.0):
    """uce_sd_erase.py: one row per prompt, its last real token; the new weight of each edited layer, by module."""
    def last_token(text):
        embeddings, mask = _embed(pipe, [text])
        return embeddings[0, int(mask[0].sum()) - 2]

    guides = [guide] * len(concepts)
    rows = {text: last_token(text) for text in [*concepts, *guides, *preserve]}
    edited = {}
    for name, module in pipe.unet.named_modules():
        if "attn2" in name and (name.endswith("to_v") or name.endswith("to_k")):
            w_old = module.weight.detach().to(torch.float64)
            mat1 = lamb * w_old
            mat2 = lamb * torch.eye(w_old.shape[1], dtype=torch.float64)
            for erase_concept, guide_concept in zip(concepts, guides):
                c_i = rows[erase_concept].reshape(-1, 1)
                v_i_star = (w_old @ rows[guide_concept]).reshape(-1, 1)
                mat1 += erase_scale * (v_i_star @ c_i.T)
                mat2 += erase_scale * (c_i @ c_i.T)
            for preserve_concept in preserve:
                c_i = rows[preserve_concept].reshape(-1, 1)
                v_i_star = (w_old @ c_i)
                mat1 += preserve_scale * (v_i_star @ c_i.T)
                mat2 += preserve_scale * (c_i @ c_i.T)
            edited[module] = mat1 @ torch.inverse(mat2)
    return edited


# --- cpdm's UCE against them ---------------------------------------------------------------------------

def _cpdm_uce(params, concepts=CONCEPTS, preserve=PRESERVE):
    """cpdm's UCE on a fresh tiny pipeline: (pipeline before the edit, the edited UNet's modules by name, record)."""
    pipe = tiny_sd_pipeline(seed=0)
    original = tiny_sd_pipeline(seed=0)
    method = get_method("uce")
    resolved = method.resolve_params(params)
    request = UnlearnRequest(concepts=tuple(concepts), preserve=tuple(preserve), params=resolved)
    method.run(pipe, request, resolved, TrainingOptions(progress=False))
    return original, dict(pipe.unet.named_modules()), request.record


def _max_difference(original, edited_modules, reference) -> float:
    names = {module: name for name, module in original.unet.named_modules()}
    assert len(reference) == 8  # the tiny UNet's four cross-attentions, K and V each
    worst = 0.0
    for module, expected in reference.items():
        got = edited_modules[names[module]].weight.detach().to(torch.float64)
        assert not torch.allclose(expected, module.weight.detach().to(torch.float64), atol=1e-3)  # a real edit
        worst = max(worst, float((got - expected).abs().max()))
    return worst


@pytest.mark.parametrize("concept_type, guide", [("style", "art"), ("object", "")])
def test_release_2023_is_the_default_and_equals_train_erase(concept_type, guide):
    original, edited, record = _cpdm_uce({"concept_type": concept_type})
    reference = reference_2023(original, CONCEPTS, guide, PRESERVE)
    difference = _max_difference(original, edited, reference)
    print(f"release 2023 {concept_type}: max |W_cpdm - W_ref| = {difference:.3g}")
    assert difference < TOLERANCE
    assert record == {"release": "2023", "guide": guide, "preserve_scale": 0.25, "preserved_prompts": 4}


@pytest.mark.parametrize("concept_type, guide", [("style", "art"), ("object", "")])
def test_release_2024_equals_uce_sd_erase(concept_type, guide):
    original, edited, record = _cpdm_uce({"release": "2024", "concept_type": concept_type})
    reference = reference_2024(original, CONCEPTS, guide, PRESERVE)
    difference = _max_difference(original, edited, reference)
    print(f"release 2024 {concept_type}: max |W_cpdm - W_ref| = {difference:.3g}")
    assert difference < TOLERANCE
    assert record == {"release": "2024", "guide": guide, "preserve_scale": 1.0, "preserved_prompts": 3}


def test_the_two_releases_differ_by_more_than_the_edit_itself():
    original, edited_2023, _ = _cpdm_uce({})
    _, edited_2024, _ = _cpdm_uce({"release": "2024"})
    for name, module in original.unet.named_modules():
        if name.endswith(("attn2.to_k", "attn2.to_v")):
            w0 = module.weight.detach()
            edit = (edited_2023[name].weight - w0).norm()
            assert (edited_2023[name].weight - edited_2024[name].weight).norm() > edit, name


def test_given_scales_override_the_releases_defaults():
    original, edited, record = _cpdm_uce({"preserve_scale": "0.7", "lamb": 0.3, "erase_scale": 2.0})
    reference = reference_2023(original, CONCEPTS, "art", PRESERVE, lamb=0.3, erase_scale=2.0, preserve_scale=0.7)
    assert _max_difference(original, edited, reference) < TOLERANCE
    assert record["preserve_scale"] == 0.7


# --- the preserve set --------------------------------------------------------------------------------

def _projection_shift(pipe_before, variant_modules, text) -> float:
    """How far the edit moves the projections of ``text`` (all 77 rows, every edited layer), summed."""
    rows, _ = _embed(pipe_before, [text])
    total = 0.0
    for name, module in pipe_before.unet.named_modules():
        if name.endswith(("attn2.to_k", "attn2.to_v")):
            w0 = module.weight.detach().to(torch.float64)
            w = variant_modules[name].weight.detach().to(torch.float64)
            total += float((rows[0] @ (w - w0).T).norm())
    return total


def _variant_modules(ws, name):
    from cpdm.diffusion.pipeline import variant_pipeline

    return dict(variant_pipeline(get_variant(ws, name), root=ws.root).unet.named_modules())


def test_a_style_erasure_preserves_the_studys_other_artists_and_records_them(ws):
    anchors = demo.add_anchors(ws, seed=0)
    artists = sorted({anchor.artist.name for anchor in anchors})
    erased, others = artists[0], artists[1:]
    with_artists = unlearn(ws, "uce", "with", base="unused", concepts=[erased], offline_tiny=True, progress=False)
    without = unlearn(ws, "uce", "without", base="unused", concepts=[erased], params={"preserve_artists": "false"},
                      offline_tiny=True, progress=False)
    assert with_artists.params["preserve"] == others
    assert without.params["preserve"] == []

    base = tiny_sd_pipeline()
    kept, free = _variant_modules(ws, "with"), _variant_modules(ws, "without")
    for artist in others:  # each preserved artist's projections move less than without the preserve set
        assert _projection_shift(base, kept, artist) < _projection_shift(base, free, artist), artist


def test_the_study_artists_left_out_are_those_the_report_takes_as_the_concepts(ws):
    """"Ma" leaves out the artist "MA " and no other: "Manet" is preserved, as the report keeps it as retained."""
    from cpdm.analysis.unlearning import TargetRule, split_prompts
    from cpdm.store.images import store_pil_image
    from cpdm.store.rows import add_anchor, add_prompt
    from cpdm.unlearning.runner import study_artists
    from tests.rating_fixtures import tiny_image

    for number, artist in enumerate(["Ma", "Manet", "Edouard Manet", "MA ", "Ana"]):
        anchor = add_anchor(ws, store_pil_image(ws, tiny_image(number)).sha256, artist=artist, title=f"Work {number}")
        add_prompt(ws, anchor, f"a work by {artist}", origin="manual")
    assert study_artists(ws, ["ma"]) == ("Ana", "Edouard Manet", "Manet")
    split = split_prompts(ws, TargetRule(concepts=("ma",)))
    retained = {row[0] for row in ws.conn.execute(
        "SELECT TRIM(a.artist) FROM anchors a JOIN prompts p ON p.anchor = a.id WHERE p.id IN (%s)"
        % ",".join(str(prompt) for prompt, _, _ in split["retain"]))}
    assert retained == set(study_artists(ws, ["ma"]))


def test_the_preserve_file_joins_the_preserve_set_without_the_erased_concept(ws, runner, tmp_path):
    anchors = demo.add_anchors(ws, seed=0)
    artists = sorted({anchor.artist.name for anchor in anchors})
    listing = tmp_path / "artists.txt"
    listing.write_text(f"Ada Lovelace\n\n  {artists[0].upper()}  \nGrace Hopper\n{artists[1]}\n", encoding="utf-8")
    result = runner.invoke(cli, ["unlearn", "uce", "--variant-name", "uce-a", "--offline-tiny", "--concept", artists[0],
                                 "--preserve", "a photo of a dog", "--preserve-file", str(listing), "--quiet",
                                 "-w", str(ws.root)])
    assert result.exit_code == 0, result.output
    variant = get_variant(ws, "uce-a")
    assert variant.params["preserve"] == ["a photo of a dog", "Ada Lovelace", "Grace Hopper", *artists[1:]]
    assert variant.params["preserve_file"]["path"] == str(listing) and variant.params["preserve_file"]["concepts"] == 4
    shown = json.loads(runner.invoke(cli, ["variants", "show", "uce-a", "-w", str(ws.root)]).output)
    assert shown["artifact"]["preserve"] == variant.params["preserve"]
    assert shown["artifact"]["run"]["preserved_prompts"] == len(variant.params["preserve"]) + 1

    missing = runner.invoke(cli, ["unlearn", "uce", "--variant-name", "uce-b", "--offline-tiny", "--concept",
                                  artists[0], "--preserve-file", str(tmp_path / "nope.txt"), "-w", str(ws.root)])
    assert missing.exit_code == 1 and "nope.txt: no such preserve file" in missing.output


def test_an_unlearn_job_takes_a_preserve_file(ws, tmp_path):
    from cpdm.errors import CpdmError
    from cpdm.jobs.registry import get_kind

    listing = tmp_path / "keep.txt"
    listing.write_text("Ada Lovelace\n", encoding="utf-8")
    kind = get_kind("unlearn")
    checked = kind.check_params({"method": "uce", "variant_name": "v", "concepts": ["A"],
                                 "preserve_file": str(listing)})
    assert checked["preserve_file"] == str(listing.resolve())
    empty = tmp_path / "empty.txt"
    empty.write_text("\n  \n", encoding="utf-8")
    with pytest.raises(CpdmError, match="unlearn job: .*empty.txt: the preserve file lists no concepts"):
        kind.check_params({"method": "uce", "variant_name": "v", "concepts": ["A"], "preserve_file": str(empty)})
