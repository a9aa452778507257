"""Prompt refinement: the deterministic template, and the OpenAI-compatible refiner against a real local HTTP server."""

from __future__ import annotations

import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from cpdm.curation.prompts import add_manual_prompt, prompt_rows
from cpdm.curation.refine import (
    CAPTION_REQUEST,
    CAPTION_SYSTEM,
    INSTRUCTION,
    OpenAIRefiner,
    RefinerError,
    TemplateRefiner,
    make_refiner,
    refine_prompts,
    template_captions,
    template_refinement,
)
from tests.curation_support import add_anchors


class FakeChatServer:
    """A chat-completions endpoint on 127.0.0.1 that answers from a script of responses.

    Each entry is ``(status, body, headers)``, or ``"sleep"`` to answer too
    late; the last entry repeats. Requests are recorded.
    """

    def __init__(self, script):
        self.script = list(script)
        self.requests: list[dict] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 (http.server's naming)
                length = int(self.headers.get("content-length", 0))
                server.requests.append({"path": self.path, "auth": self.headers.get("authorization"),
                                        "body": json.loads(self.rfile.read(length))})
                entry = server.script.pop(0) if len(server.script) > 1 else server.script[0]
                if entry == "sleep":
                    time.sleep(1.0)
                    entry = (200, _completion("late"), {})
                status, body, headers = entry
                data = body.encode() if isinstance(body, str) else json.dumps(body).encode()
                try:
                    self.send_response(status)
                    for key, value in headers.items():
                        self.send_header(key, value)
                    self.send_header("content-length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (the timeout test)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


def _completion(text: str) -> dict:
    return {"choices": [{"message": {"role": "assistant", "content": text}}]}


def _refiner(server, tmp_path, **kwargs) -> OpenAIRefiner:
    sleeps = []
    refiner = OpenAIRefiner(model="test-model", base_url=server.url, api_key="sk-test", cache_dir=tmp_path / "cache",
                            timeout_s=kwargs.pop("timeout_s", 5.0), backoff_s=0.01, sleep=sleeps.append, **kwargs)
    refiner.sleeps = sleeps
    return refiner


def test_the_template_refiner_is_deterministic_and_uses_the_anchor_metadata():
    first = template_refinement("water lilies, oil painting", "Water Lilies", "Claude Monet")
    assert first == template_refinement("water lilies, oil painting", "Water Lilies", "Claude Monet")
    assert first == ("water lilies, oil painting, a faithful reproduction of Water Lilies by Claude Monet, "
                     "same composition, same colour palette, same brushwork, in the exact style of Claude Monet")
    assert "by" not in template_refinement("a pond", None, None)


def test_the_openai_refiner_sends_a_chat_request_and_returns_the_answer(tmp_path):
    with FakeChatServer([(200, _completion('  "a faithful copy of water lilies"  '), {})]) as server:
        refiner = _refiner(server, tmp_path)
        assert refiner.refine("water lilies") == "a faithful copy of water lilies"
    [request] = server.requests
    assert request["path"] == "/v1/chat/completions" and request["auth"] == "Bearer sk-test"
    assert request["body"]["model"] == "test-model"
    assert request["body"]["messages"] == [{"role": "system", "content": INSTRUCTION},
                                           {"role": "user", "content": "water lilies"}]


def test_a_429_is_retried_after_the_servers_retry_after(tmp_path):
    script = [(429, {"error": "slow down"}, {"Retry-After": "0.05"}), (200, _completion("refined"), {})]
    with FakeChatServer(script) as server:
        refiner = _refiner(server, tmp_path)
        assert refiner.refine("water lilies") == "refined"
    assert len(server.requests) == 2
    assert refiner.sleeps == [0.05]


def test_server_errors_back_off_exponentially_then_fail_clearly(tmp_path):
    with FakeChatServer([(503, "busy", {})]) as server:
        refiner = _refiner(server, tmp_path, max_retries=3)
        with pytest.raises(RefinerError, match="HTTP 503 after 4 attempts"):
            refiner.refine("water lilies")
    assert refiner.sleeps == [0.01, 0.02, 0.04]
    assert len(server.requests) == 4


def test_a_timeout_is_a_clear_error(tmp_path):
    with FakeChatServer(["sleep"]) as server:
        refiner = _refiner(server, tmp_path, timeout_s=0.2, max_retries=1)
        with pytest.raises(RefinerError, match=r"no answer within 0.2 s after 2 attempts"):
            refiner.refine("water lilies")


@pytest.mark.parametrize("body, why", [
    ("this is not json", "not JSON"),
    ({"choices": []}, "no choices"),
    ({"choices": [{"message": {"content": "   "}}]}, "an empty prompt"),
])
def test_a_malformed_answer_is_a_clear_error_and_is_not_cached(tmp_path, body, why):
    with FakeChatServer([(200, body, {})]) as server:
        refiner = _refiner(server, tmp_path)
        with pytest.raises(RefinerError, match=f"malformed answer from .*{why}"):
            refiner.refine("water lilies")
    assert not (tmp_path / "cache").exists() or not list((tmp_path / "cache").iterdir())


def test_a_refused_request_is_not_retried(tmp_path):
    with FakeChatServer([(401, "bad key", {})]) as server:
        with pytest.raises(RefinerError, match="HTTP 401: bad key"):
            _refiner(server, tmp_path).refine("water lilies")
    assert len(server.requests) == 1


def test_an_unreachable_endpoint_is_a_clear_error(tmp_path):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    refiner = OpenAIRefiner(model="m", base_url=f"http://127.0.0.1:{port}/v1", max_retries=1, backoff_s=0,
                            sleep=lambda s: None)
    with pytest.raises(RefinerError, match="cannot connect .* after 2 attempts"):
        refiner.refine("water lilies")


def test_a_cached_answer_makes_no_request(tmp_path):
    with FakeChatServer([(200, _completion("refined once"), {})]) as server:
        _refiner(server, tmp_path).refine("water lilies")
        again = _refiner(server, tmp_path)
        assert again.refine("water lilies") == "refined once"
        assert len(server.requests) == 1 and again.requests_made == 0
        other_model = _refiner(server, tmp_path)
        other_model.model = "another-model"
        other_model.refine("water lilies")
        other_instruction = _refiner(server, tmp_path, instruction="Say it shorter.")
        other_instruction.refine("water lilies")
    assert len(server.requests) == 3


def test_the_environment_configures_the_refiner(monkeypatch, tmp_path):
    for name in ("CPDM_LLM_BASE_URL", "OPENAI_BASE_URL", "CPDM_LLM_MODEL", "OPENAI_MODEL", "CPDM_LLM_API_KEY",
                 "OPENAI_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(RefinerError, match="needs a model"):
        make_refiner("openai")
    monkeypatch.setenv("CPDM_LLM_MODEL", "gpt-x")
    with pytest.raises(RefinerError, match="needs an API key"):
        make_refiner("openai")
    monkeypatch.setenv("CPDM_LLM_BASE_URL", "http://127.0.0.1:9/v1/")
    refiner = make_refiner("openai")
    assert (refiner.base_url, refiner.model, refiner.api_key) == ("http://127.0.0.1:9/v1", "gpt-x", None)
    assert make_refiner("openai", model="local-llm").model == "local-llm"
    with pytest.raises(RefinerError, match="template refiner has no model"):
        make_refiner("template", model="gpt-x")


def test_refined_prompts_record_parent_and_author_and_reruns_add_nothing(ws, tmp_path):
    anchors = add_anchors(ws, tmp_path / "anchors", count=2)
    sources = [add_manual_prompt(ws, anchor, f"prompt of {anchor}") for anchor in anchors]
    report = refine_prompts(ws, TemplateRefiner(), progress=False)
    refined = prompt_rows(ws, prompt_ids=report.added)
    assert [(p.parent, p.author, p.origin) for p in refined] == [(s, "template", "template") for s in sources]
    assert refined[0].text.startswith("prompt of 1, a faithful reproduction of Work 0 by Artist 0")
    assert refine_prompts(ws, TemplateRefiner(), progress=False).added == []
    with FakeChatServer([(200, _completion("llm rewrite"), {})]) as server:
        refiner = _refiner(server, tmp_path)
        llm = prompt_rows(ws, prompt_ids=refine_prompts(ws, refiner, progress=False).added)
    assert [(p.parent, p.author, p.origin, p.text) for p in llm] == [(s, "test-model", "llm", "llm rewrite")
                                                                     for s in sources]


def test_a_failing_endpoint_writes_nothing_and_never_falls_back_to_the_template(ws, tmp_path):
    anchors = add_anchors(ws, tmp_path / "anchors", count=1)
    add_manual_prompt(ws, anchors[0], "a prompt")
    with FakeChatServer([(200, "not json", {})]) as server:
        with pytest.raises(RefinerError):
            refine_prompts(ws, _refiner(server, tmp_path), progress=False)
    assert [p.origin for p in prompt_rows(ws)] == ["manual"]


def test_the_refine_command_uses_a_local_server_from_the_environment(ws, tmp_path, runner, monkeypatch):
    from cpdm.cli import cli

    anchors = add_anchors(ws, tmp_path / "anchors", count=1)
    add_manual_prompt(ws, anchors[0], "a prompt")
    with FakeChatServer([(200, _completion("from the local model"), {})]) as server:
        monkeypatch.setenv("CPDM_LLM_BASE_URL", server.url)
        result = runner.invoke(cli, ["prompts", "refine", "--workspace", str(ws.root), "--refiner", "openai",
                                     "--model", "local", "-q"])
        assert result.exit_code == 0, result.output
        assert "refined 1 prompts" in result.output
        result = runner.invoke(cli, ["prompts", "refine", "--workspace", str(ws.root), "--refiner", "openai",
                                     "--model", "local", "-q"])
        assert "refined 0 prompts, skipped 1" in result.output
    assert len(server.requests) == 1
    assert (ws.root / "cache" / "refiner").is_dir()


# --- captions of a concept (Concept Ablation's anchor captions) ------------------------------------

def test_the_template_writes_distinct_captions_of_a_style_medium_or_of_an_object():
    paintings = template_captions("painting", 200, "style")
    assert len(set(paintings)) == 200 and paintings[0] == "a painting of a house by a river"
    assert all(c.startswith("a painting of ") for c in paintings)
    objects = template_captions("umbrella", 200, "object")
    assert len(set(objects)) == 200 and objects[0] == "a photo of an umbrella in a garden"
    assert all(" an umbrella " in c and " of an umbrella of " not in c for c in objects)
    assert template_captions("dog", 3, "object") == ["a photo of a dog in a garden", "a photo of a dog on a beach",
                                                     "a photo of a dog in a living room"]
    with pytest.raises(RefinerError, match="writes 1 to 200 object captions, 201 were asked"):
        template_captions("dog", 201, "object")


def test_the_openai_writer_asks_as_the_authors_then_for_the_missing_ones_and_caches_the_list(tmp_path):
    first = "Here are 3 captions of images containing a dog:\n1. A dog on a sofa.\n2. \"A dog in the snow.\"\n3. A cat."
    script = [(200, _completion(first), {}), (200, _completion("1. A dog by a lake.\n2. A dog on a sofa."), {})]
    with FakeChatServer(script) as server:
        writer = _refiner(server, tmp_path)
        captions = writer.write_captions("dog", 3, "object")
        assert captions == ["A dog on a sofa.", "A dog in the snow.", "A dog by a lake."]
        again = _refiner(server, tmp_path)
        assert again.write_captions("dog", 3, "object") == captions and again.requests_made == 0
    first_request, second_request = (r["body"] for r in server.requests)
    assert first_request["messages"] == [{"role": "system", "content": CAPTION_SYSTEM},
                                         {"role": "user", "content": CAPTION_REQUEST.format(count=3, anchor="dog")}]
    assert (first_request["temperature"], first_request["top_p"]) == (0.6, 0.9)
    assert second_request["messages"][2:] == [{"role": "assistant", "content": first},
                                              {"role": "user", "content": "Generate 1 more captions"}]


def test_an_openai_writer_that_names_nothing_is_a_clear_error(tmp_path):
    with FakeChatServer([(200, _completion("1. A cat.\n2. A bird."), {})]) as server:
        with pytest.raises(RefinerError, match="wrote no caption naming 'dog' in 11 answers"):
            _refiner(server, tmp_path).write_captions("dog", 2, "object")
    assert len(server.requests) == 11


def test_several_openai_rewrites_are_sampled_with_recorded_seeds_and_cached_apart(ws, tmp_path):
    anchors = add_anchors(ws, tmp_path / "anchors", count=1)
    source = add_manual_prompt(ws, anchors[0], "a prompt")
    script = [(200, _completion(f"rewrite {k}"), {}) for k in range(2)]
    with FakeChatServer(script) as server:
        refiner = _refiner(server, tmp_path)
        rows = prompt_rows(ws, prompt_ids=refine_prompts(ws, refiner, progress=False, n=2, seed=11).added)
        assert refine_prompts(ws, refiner, progress=False, n=2, seed=11).added == []
    assert [(r.parent, r.text, r.params["rewrite"]) for r in rows] == [(source, f"rewrite {k}", k) for k in range(2)]
    assert [r.params["decoding"]["sampling"]["seed"] for r in rows] == [11, 12]
    assert [(q["body"]["temperature"], q["body"]["seed"]) for q in server.requests] == [(1.0, 11), (1.0, 12)]
