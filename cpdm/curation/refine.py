"""Prompt refinement: rewrite a prompt so it elicits close imitation of its anchor.

The CPDM paper had ChatGPT refine the interrogator's prompts. Two refiners:

* ``template`` (the default): offline and deterministic; it appends what the
  anchor's metadata says (title, artist) to the prompt in a fixed wording.
* ``openai``: any OpenAI-compatible chat-completions endpoint (OpenAI, or a
  local server such as vLLM or llama.cpp), configured from the environment:
  ``CPDM_LLM_BASE_URL`` (or ``OPENAI_BASE_URL``; default
  ``https://api.openai.com/v1``), ``CPDM_LLM_MODEL`` (or ``OPENAI_MODEL``;
  ``--model`` overrides) and ``CPDM_LLM_API_KEY`` (or ``OPENAI_API_KEY``;
  needed for api.openai.com only). Requests time out, are retried with
  exponential backoff on timeouts, connection errors, 429 (honouring
  ``Retry-After``) and 5xx answers, and are cached in the workspace keyed by
  (prompt, model, instruction), so a rerun asks nothing again. When the
  endpoint cannot be reached or answers something malformed, the command
  stops with a clear error; it never falls back to the template.

Each refined prompt is stored with its parent (the prompt it was refined
from) and its author (``template``, or the LLM model's name).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable


from cpdm.curation.prompts import PromptRow, prompt_rows
from cpdm.store.rows import add_prompt
from cpdm.errors import CpdmError
from cpdm.progress import track

REFINERS = ("template", "openai")
INSTRUCTION = (
    "You rewrite prompts for the text-to-image model Stable Diffusion. Rewrite the prompt you are given so that "
    "the model reproduces the described artwork as closely as possible: keep its title, artist, subject, "
    "composition, medium and style, and add concrete visual details (colours, brushwork, lighting). "
    "Answer with the rewritten prompt only, on one line, in at most 60 words."
)
DEFAULT_BASE_URL = "https://api.openai.com/v1"
DEFAULT_TIMEOUT_S = 60.0
DEFAULT_MAX_RETRIES = 5
DEFAULT_BACKOFF_S = 1.0
MAX_BACKOFF_S = 60.0
# Source prompts refined by default: what interrogation and researchers wrote.
DEFAULT_SOURCE_ORIGINS = ("interrogator", "manual")


class RefinerError(CpdmError):
    """A refiner that cannot run or an endpoint that failed; nothing was written for that prompt."""


def template_refinement(text: str, title: str | None, artist: str | None) -> str:
    """The template refiner's rewrite: the prompt plus a fixed request for a faithful copy."""
    parts = [text.strip().rstrip(",")]
    if title and artist:
        parts.append(f"a faithful reproduction of {title} by {artist}")
    elif title:
        parts.append(f"a faithful reproduction of {title}")
    parts.append("same composition, same colour palette, same brushwork")
    if artist:
        parts.append(f"in the exact style of {artist}")
    return ", ".join(parts)


class TemplateRefiner:
    """Offline, deterministic refinement from the anchor's metadata."""

    origin = "template"
    author = "template"

    def refine(self, text: str, title: str | None = None, artist: str | None = None) -> str:
        return template_refinement(text, title, artist)


def _env(*names: str, default: str | None = None) -> str | None:
    for name in names:
        if os.environ.get(name):
            return os.environ[name]
    return default


@dataclass
class OpenAIRefiner:
    """An OpenAI-compatible chat-completions refiner with timeouts, retries and a cache on disk."""

    model: str
    base_url: str = DEFAULT_BASE_URL
    api_key: str | None = None
    cache_dir: Path | None = None
    instruction: str = INSTRUCTION
    timeout_s: float = DEFAULT_TIMEOUT_S
    max_retries: int = DEFAULT_MAX_RETRIES
    backoff_s: float = DEFAULT_BACKOFF_S
    sleep: Callable[[float], None] = time.sleep
    requests_made: int = field(default=0, init=False)

    origin = "llm"

    @property
    def author(self) -> str:
        return self.model

    @classmethod
    def from_env(cls, model: str | None = None, cache_dir: Path | None = None, **kwargs) -> "OpenAIRefiner":
        """Base URL, model and key from the environment (see the module docstring)."""
        base_url = _env("CPDM_LLM_BASE_URL", "OPENAI_BASE_URL", default=DEFAULT_BASE_URL).rstrip("/")
        model = model or _env("CPDM_LLM_MODEL", "OPENAI_MODEL")
        if not model:
            raise RefinerError("the openai refiner needs a model: pass --model NAME or set CPDM_LLM_MODEL")
        api_key = _env("CPDM_LLM_API_KEY", "OPENAI_API_KEY")
        if not api_key and base_url == DEFAULT_BASE_URL:
            raise RefinerError(
                f"the openai refiner at {base_url} needs an API key: set CPDM_LLM_API_KEY or OPENAI_API_KEY "
                "(or point CPDM_LLM_BASE_URL at a local OpenAI-compatible server)"
            )
        return cls(model=model, base_url=base_url, api_key=api_key, cache_dir=cache_dir, **kwargs)

    def cache_key(self, text: str) -> str:
        return hashlib.sha256(json.dumps([text, self.model, self.instruction]).encode("utf-8")).hexdigest()

    def refine(self, text: str, title: str | None = None, artist: str | None = None) -> str:
        """The model's rewrite of ``text`` (from the cache when this (prompt, model, instruction) was asked before)."""
        cached = self._cached(text)
        if cached is not None:
            return cached
        answer = self._ask(text)
        self._store(text, answer)
        return answer

    def _cache_path(self, text: str) -> Path | None:
        return None if self.cache_dir is None else Path(self.cache_dir) / f"{self.cache_key(text)}.json"

    def _cached(self, text: str) -> str | None:
        path = self._cache_path(text)
        if path is None or not path.is_file():
            return None
        try:
            entry = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            return None  # a damaged entry is asked again and rewritten
        if [entry.get("prompt"), entry.get("model"), entry.get("instruction")] != [text, self.model, self.instruction]:
            return None
        return entry.get("answer")

    def _store(self, text: str, answer: str) -> None:
        path = self._cache_path(text)
        if path is None:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        entry = {"prompt": text, "model": self.model, "instruction": self.instruction, "answer": answer}
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".incoming-")
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(entry, handle)
        os.replace(tmp, path)

    def _ask(self, text: str) -> str:
        """POST to chat/completions, retrying what may pass (timeouts, 429, 5xx) with exponential backoff."""
        import httpx

        url = f"{self.base_url}/chat/completions"
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        body = {
            "model": self.model,
            "temperature": 0,
            "messages": [{"role": "system", "content": self.instruction}, {"role": "user", "content": text}],
        }
        last, retry_after = "", None
        with httpx.Client(timeout=httpx.Timeout(self.timeout_s)) as client:
            for attempt in range(self.max_retries + 1):
                if attempt:
                    self.sleep(self._delay(attempt, retry_after))
                retry_after = None
                try:
                    self.requests_made += 1
                    response = client.post(url, json=body, headers=headers)
                except httpx.TimeoutException:
                    last = f"no answer within {self.timeout_s:g} s"
                    continue
                except httpx.TransportError as exc:
                    last = f"cannot connect ({exc.__class__.__name__}: {exc})"
                    continue
                if response.status_code == 429 or response.status_code >= 500:
                    last = f"HTTP {response.status_code}{' (rate limited)' if response.status_code == 429 else ''}"
                    retry_after = response.headers.get("retry-after")
                    continue
                if response.status_code >= 400:
                    raise RefinerError(f"{url} refused the request: HTTP {response.status_code}: {response.text[:200]}")
                return self._answer_text(url, response)
        raise RefinerError(f"{url}: {last} after {self.max_retries + 1} attempts; nothing was refined for this prompt")

    def _delay(self, attempt: int, retry_after: str | None) -> float:
        """Seconds to wait before ``attempt``: the server's Retry-After when given, else exponential."""
        if retry_after:
            try:
                return min(float(retry_after), MAX_BACKOFF_S)
            except ValueError:
                pass
        return min(self.backoff_s * 2 ** (attempt - 1), MAX_BACKOFF_S)

    @staticmethod
    def _answer_text(url: str, response) -> str:
        """The first choice's message text, or a RefinerError saying what was malformed."""
        try:
            payload = response.json()
        except ValueError:
            raise RefinerError(f"malformed answer from {url}: not JSON ({response.text[:100]!r})") from None
        try:
            content = payload["choices"][0]["message"]["content"]
        except (KeyError, IndexError, TypeError):
            raise RefinerError(f"malformed answer from {url}: no choices[0].message.content in {str(payload)[:200]}") from None
        if not isinstance(content, str) or not content.strip():
            raise RefinerError(f"malformed answer from {url}: an empty prompt")
        return " ".join(content.strip().strip('"').split())


def make_refiner(kind: str, ws=None, model: str | None = None, **kwargs):
    """``template`` or ``openai`` (configured from the environment, cached in the workspace)."""
    if kind == "template":
        if model:
            raise RefinerError("--model is for the openai refiner; the template refiner has no model")
        return TemplateRefiner()
    if kind == "openai":
        cache_dir = ws.root / "cache" / "refiner" if ws is not None else None
        return OpenAIRefiner.from_env(model=model, cache_dir=cache_dir, **kwargs)
    raise RefinerError(f"unknown refiner {kind!r} (use one of: {', '.join(REFINERS)})")


@dataclass
class RefineReport:
    added: list[int] = field(default_factory=list)
    skipped: list[int] = field(default_factory=list)

    def summary(self) -> str:
        return f"refined {len(self.added)} prompts, skipped {len(self.skipped)} already refined by this refiner"


def _already_refined(ws, source: PromptRow, author: str) -> bool:
    return any(p.parent == source.id and p.author == author for p in prompt_rows(ws, anchor_id=source.anchor))


def refine_prompts(ws, refiner, prompt_ids: list[int] | None = None, progress: bool = True) -> RefineReport:
    """Refine the given prompts (default: every interrogator and manual prompt) not yet refined by this refiner."""
    report = RefineReport()
    if prompt_ids:
        sources = prompt_rows(ws, prompt_ids=prompt_ids)
    else:
        sources = [p for p in prompt_rows(ws) if p.origin in DEFAULT_SOURCE_ORIGINS]
    if not sources:
        raise CpdmError("no prompts to refine (run `cpdm prompts interrogate` or `cpdm prompts add` first)")
    meta = {row[0]: row[1:] for row in ws.conn.execute("SELECT id, title, artist FROM anchors").fetchall()}
    for source in track(sources, "refining", unit="prompt", enabled=progress):
        if _already_refined(ws, source, refiner.author):
            report.skipped.append(source.id)
            continue
        title, artist = meta[source.anchor]
        text = refiner.refine(source.text, title=title, artist=artist)
        params = {"refiner": "template" if refiner.origin == "template" else "openai"}
        if refiner.origin == "llm":
            params.update(base_url=refiner.base_url, instruction=refiner.instruction)
        report.added.append(add_prompt(ws, source.anchor, text, origin=refiner.origin, author=refiner.author,
                                       parent=source.id, params=params))
    return report
