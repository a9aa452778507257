"""Prompts of the workspace: reading them with their author and parent, adding manual ones."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from cpdm.errors import CpdmError
from cpdm.store.rows import add_prompt
from cpdm.store.workspace import PROMPT_ORIGINS


@dataclass(frozen=True)
class PromptRow:
    """A stored prompt: its anchor, text, origin, who wrote it and the prompt it was refined from."""

    id: int
    anchor: int
    text: str
    origin: str
    author: str | None
    parent: int | None
    params: dict = field(default_factory=dict)


def prompt_rows(ws, *, anchor_id: int | None = None, origin: str | None = None,
                prompt_ids: list[int] | None = None) -> list[PromptRow]:
    """Prompts in id order, optionally of one anchor, of one origin, or exactly these ids."""
    if origin is not None and origin not in PROMPT_ORIGINS:
        raise CpdmError(f"prompt origin {origin!r} is not one of {', '.join(PROMPT_ORIGINS)}")
    query, args = "SELECT id, anchor, text, origin, author, parent, params FROM prompts WHERE 1 = 1", []
    if anchor_id is not None:
        query, args = query + " AND anchor = ?", [*args, anchor_id]
    if origin is not None:
        query, args = query + " AND origin = ?", [*args, origin]
    rows = []
    for pid, anchor, text, row_origin, author, parent, params in ws.conn.execute(query + " ORDER BY id", args):
        rows.append(PromptRow(pid, anchor, text, row_origin, author, parent, json.loads(params or "{}")))
    if prompt_ids:
        unknown = sorted(set(prompt_ids) - {row.id for row in rows})
        if unknown:
            raise CpdmError(f"no prompt {', '.join(map(str, unknown))} in the workspace")
        rows = [row for row in rows if row.id in set(prompt_ids)]
    return rows


def add_manual_prompt(ws, anchor_id: int, text: str) -> int:
    """A prompt typed by a researcher (origin and author ``manual``)."""
    return add_prompt(ws, anchor_id, text, origin="manual", author="manual")


def anchors_without_prompts(ws) -> list[int]:
    """Anchor ids that have no prompt at all."""
    return [row[0] for row in ws.conn.execute(
        "SELECT id FROM anchors WHERE id NOT IN (SELECT anchor FROM prompts) ORDER BY id").fetchall()]
