"""The local refiner on a tiny random Llama built here, several rewrites per prompt, and the instruction shown."""

from __future__ import annotations

import pytest

from cpdm.curation.prompts import add_manual_prompt, prompt_rows
from cpdm.curation.refine import (
    INSTRUCTION,
    TEMPLATE_WORDINGS,
    LocalRefiner,
    RefinerError,
    TemplateRefiner,
    make_refiner,
    refine_prompts,
)
from tests.curation_support import add_anchors

WORDS = ["water", "lilies", "pond", "oil", "painting", "by", "monet", "faithful", "copy", "blue", "green", "light",
         "brushwork", "canvas", "style", "exact", "rewrite", "prompt", "stable", "diffusion", "system", "user",
         "assistant", ":"]
CHAT_TEMPLATE = ("{% for message in messages %}{{ message['role'] }} : {{ message['content'] }} {% endfor %}"
                 "{% if add_generation_prompt %}assistant : {% endif %}")


def build_tiny_chat_model(folder):
    """A random-init Llama with a word-level tokenizer that has a chat template, saved to ``folder``."""
    import torch
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from tokenizers.pre_tokenizers import WhitespaceSplit
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    specials = ["<unk>", "<s>", "</s>", "<pad>"]
    vocab = {token: index for index, token in enumerate(specials + WORDS)}
    backend = Tokenizer(WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="<unk>", bos_token="<s>",
                                        eos_token="</s>", pad_token="<pad>")
    tokenizer.chat_template = CHAT_TEMPLATE
    tokenizer.save_pretrained(folder)
    config = LlamaConfig(vocab_size=len(vocab), hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=512,
                         bos_token_id=1, eos_token_id=2, pad_token_id=3)
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def tiny_chat_model(tmp_path_factory):
    return build_tiny_chat_model(tmp_path_factory.mktemp("models") / "tiny-chat-llama")


def _sources(ws, tmp_path, count=1):
    return [add_manual_prompt(ws, anchor, "water lilies oil painting")
            for anchor in add_anchors(ws, tmp_path / "anchors", count=count)]


def test_the_local_refiner_records_parent_and_author_and_a_rerun_uses_the_cache(ws, tmp_path, tiny_chat_model):
    [source] = _sources(ws, tmp_path)
    refiner = make_refiner("local", ws, model=str(tiny_chat_model), max_new_tokens=8)
    [added] = refine_prompts(ws, refiner, progress=False).added
    [row] = prompt_rows(ws, prompt_ids=[added])
    assert (row.parent, row.author, row.origin) == (source, "tiny-chat-llama", "llm")
    assert row.text and row.params["refiner"] == "local" and row.params["decoding"] == "greedy"
    assert row.params["instruction"] == INSTRUCTION and row.params["model"] == str(tiny_chat_model.resolve())
    assert refiner.generations_made == 1

    fresh = make_refiner("local", ws, model=str(tiny_chat_model), max_new_tokens=8)
    assert fresh.refine("water lilies oil painting") == row.text
    assert fresh.generations_made == 0 and fresh._loaded is None  # answered from the cache, weights never loaded
    assert refine_prompts(ws, fresh, progress=False).added == []


def test_greedy_decoding_is_deterministic_and_sampling_follows_its_seed(tmp_path, tiny_chat_model):
    from cpdm.curation.refine import Sampling

    def answer(sampling=None):
        return LocalRefiner(model=str(tiny_chat_model), max_new_tokens=8).refine("pond light", sampling=sampling)

    assert answer() == answer()
    assert answer(Sampling(seed=5)) == answer(Sampling(seed=5))
    assert len({answer(Sampling(seed=seed)) for seed in range(4)}) > 1


def test_k_sampled_rewrites_per_prompt_record_their_seeds_and_a_larger_k_adds_only_the_missing(
        ws, tmp_path, tiny_chat_model):
    [source] = _sources(ws, tmp_path)
    refiner = LocalRefiner(model=str(tiny_chat_model), cache_dir=ws.root / "cache" / "refiner", max_new_tokens=8)
    first = prompt_rows(ws, prompt_ids=refine_prompts(ws, refiner, progress=False, n=2, seed=7).added)
    assert [(p.parent, p.params["rewrite"], p.params["decoding"]) for p in first] == [
        (source, k, {"sampling": {"seed": 7 + k, "temperature": 1.0}}) for k in range(2)]
    more = prompt_rows(ws, prompt_ids=refine_prompts(ws, refiner, progress=False, n=3, seed=7).added)
    assert [p.params["rewrite"] for p in more] == [2]


def test_a_missing_model_folder_or_uncached_model_is_refused_with_how_to_get_it(tmp_path):
    with pytest.raises(RefinerError, match="no model folder at .*nowhere"):
        make_refiner("local", model=str(tmp_path / "nowhere"))
    with pytest.raises(RefinerError, match="not in the local Hugging Face cache: run `huggingface-cli download"):
        LocalRefiner(model="someone/never-downloaded-instruct")
    with pytest.raises(RefinerError, match="needs --model"):
        make_refiner("local")


def test_the_template_gives_k_distinct_wordings_and_refuses_more_than_it_has(ws, tmp_path):
    [source] = _sources(ws, tmp_path)
    rows = prompt_rows(ws, prompt_ids=refine_prompts(ws, TemplateRefiner(), progress=False, n=3).added)
    assert len({p.text for p in rows}) == 3 and all(p.parent == source for p in rows)
    with pytest.raises(RefinerError, match=f"has {len(TEMPLATE_WORDINGS)} distinct wordings"):
        refine_prompts(ws, TemplateRefiner(), progress=False, n=len(TEMPLATE_WORDINGS) + 1)


def test_the_refine_command_runs_the_local_model_and_shows_its_instruction(ws, tmp_path, runner, tiny_chat_model):
    from cpdm.cli import cli

    shown = runner.invoke(cli, ["prompts", "refine", "--show-instruction"])
    assert shown.exit_code == 0 and shown.output.strip() == INSTRUCTION
    _sources(ws, tmp_path)
    args = ["prompts", "refine", "--workspace", str(ws.root), "--refiner", "local", "--model", str(tiny_chat_model),
            "--n", "2", "-q"]
    result = runner.invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert "refined 2 prompts" in result.output
    missing = runner.invoke(cli, args[:-5] + ["--model", str(tmp_path / "gone"), "-q"])
    assert missing.exit_code == 1 and "no model folder at" in missing.output
