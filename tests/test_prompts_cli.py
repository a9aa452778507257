"""`cpdm prompts add`: a researcher's own prompt for an anchor, and its refusals."""

from __future__ import annotations

import json

import pytest

from cpdm.cli import cli
from tests.curation_support import add_anchors


@pytest.fixture
def anchored(ws, tmp_path):
    """A workspace with two anchors; returns it and their ids."""
    return ws, add_anchors(ws, tmp_path / "art", count=2)


def prompts_of(ws) -> list[tuple]:
    return ws.conn.execute("SELECT anchor, text, origin, author, parent FROM prompts ORDER BY id").fetchall()


def test_a_manual_prompt_is_added_and_listed(anchored, runner):
    ws, (first, second) = anchored
    text = "water lilies on a pond at dusk, by Claude Monet, oil on canvas"
    result = runner.invoke(cli, ["prompts", "add", str(second), f"  {text} ", "--workspace", str(ws.root)])
    assert result.exit_code == 0, result.output
    [(prompt_id,)] = ws.conn.execute("SELECT id FROM prompts").fetchall()
    assert result.output == f"added prompt {prompt_id} for anchor {second}\n"
    assert prompts_of(ws) == [(second, text, "manual", "manual", None)]
    listed = json.loads(runner.invoke(cli, ["prompts", "list", "--anchor", str(second), "--format", "json",
                                            "--workspace", str(ws.root)]).output)
    assert [(p["id"], p["text"], p["origin"]) for p in listed] == [(prompt_id, text, "manual")]


@pytest.mark.parametrize("arguments, status, message", [
    (["999", "a prompt"], 1, "error: unknown anchor 999"),
    (["{first}", "   "], 1, "error: a prompt must be non-empty text"),
    (["first", "a prompt"], 2, "'first' is not a valid integer"),
    (["{first}"], 2, "Missing argument 'TEXT'"),
], ids=["unknown anchor", "blank text", "anchor not a number", "no text"])
def test_a_bad_prompt_is_refused_and_nothing_is_added(anchored, runner, arguments, status, message):
    ws, (first, _) = anchored
    arguments = [argument.format(first=first) for argument in arguments]
    result = runner.invoke(cli, ["prompts", "add", *arguments, "--workspace", str(ws.root)])
    assert result.exit_code == status
    assert message in result.output
    assert prompts_of(ws) == []
