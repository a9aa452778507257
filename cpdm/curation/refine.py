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

The same two backends also write *captions of a concept* (``write_captions``):
the anchor captions Concept Ablation trains on (:mod:`cpdm.unlearning.ablation`).
The template writer composes them from fixed subject and scene lists,
offline; the openai writer asks the endpoint for them as Concept Ablation's
authors ask their LLM, and keeps the list it got in its cache.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
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


# --- captions of a concept (Concept Ablation's anchor captions) --------------------------------------

CAPTION_KINDS = ("style", "object")
# What paintings (or any other medium named as the anchor of a style) show: "a painting of <subject><scene>".
STYLE_SUBJECTS = (
    "a house by a river", "a lighthouse on a cliff", "boats in a harbour", "a bridge over water",
    "a woman reading a letter", "a man in a hat", "a bowl of fruit", "a vase of flowers", "a village street",
    "a church in a village", "a field of wheat", "a forest path", "mountains above a lake", "a garden with a pond",
    "a farmhouse", "a windmill", "a railway station", "a market square", "a sailing ship at sea", "an old tree",
    "a horse in a meadow", "a cat on a windowsill", "children playing on a beach", "a couple dancing",
    "a musician playing a violin", "a city skyline", "a country road", "a snowy village", "a waterfall",
    "cows grazing by a stream", "an old woman by a fire", "a young man at a desk", "a table set for dinner",
    "a bedroom with a bed and a chair", "a cafe terrace", "poppies in a field", "a cathedral", "a fishing village",
    "a rowing boat on a river", "people walking in a park",
)
STYLE_SCENES = ("", " at sunset", " in winter", " on a rainy day", " at night")
# Where a photo (or drawing) of an object shows it: "<framing> a <object> <place>".
OBJECT_FRAMINGS = ("a photo of", "a close-up photo of", "a drawing of", "a watercolor painting of",
                   "a black and white photo of")
OBJECT_PLACES = (
    "in a garden", "on a beach", "in a living room", "on a city street", "in the snow", "next to a window",
    "in a forest", "on a wooden table", "in a park", "by a lake", "on a sofa", "in a field of flowers",
    "under a tree", "in a kitchen", "on a mountain trail", "at a market", "in the rain", "on a boat",
    "in front of a house", "on a bed", "in a library", "on a rooftop", "under street lights at night",
    "in a desert", "next to a bicycle", "on a stone wall", "in a car", "on the beach at sunset", "in tall grass",
    "near a river", "in a classroom", "on a porch", "with a child", "in an autumn forest", "on a snowy mountain",
    "in a shop window", "at a train station", "on a green lawn", "next to a cup of coffee",
    "in a studio with a white background",
)


# The openai caption writer's conversation: Concept Ablation's request to its default LLM
# (nupurkmr9/concept-ablation, diffusers/utils.py, getanchorprompts, meta-llama), its sampling, at most
# 11 rounds of "more", each sent with the last 10 messages.
CAPTION_SYSTEM = ("You can describe any image via text and provide captions for wide variety of images that is "
                  "possible to generate.")
CAPTION_REQUEST = (
    'Generate {count} caption for images containing a {anchor}. The caption should also contain the word '
    '"{anchor}". DO NOT add any unnecessary adjectives or emotion words in the caption. Please keep the caption '
    'factual and terse but complete. DO NOT add any unnecessary speculation about the things that are not part of '
    'the image such as "the image is inspiring to viewers" or "seeing this makes you feel joy". DO NOT add things '
    'such as "creates a unique and entertaining visual", as these descriptions are interpretations and not a part '
    'of the image itself. The description should be purely factual, with no subjective speculation.\n\n'
    'Example captions for the category "cat" are:\n'
    '1. A photo of a siamese cat playing in a garden.\n'
    '2. A cat is sitting beside a book in a library.\n'
    '4. Watercolor style painting of a cat. '
)
CAPTION_MORE = "Generate {count} more captions"
CAPTION_SAMPLING = {"temperature": 0.6, "top_p": 0.9, "max_tokens": 2048}
CAPTION_ROUNDS = 11
CAPTION_HISTORY = 10
LIST_MARKER = re.compile(r"^\s*(?:[-*\u2022]|\d+\s*[.)]|\.+)\s*")


def caption_lines(answer: str, anchor: str) -> list[str]:
    """The captions in an LLM's answer: one per line, list markers and quotes removed, naming ``anchor``.

    A line that ends with a colon introduces the list and is not a caption.
    """
    found = []
    for line in answer.splitlines():
        caption = LIST_MARKER.sub("", line).replace('"', "").strip()
        if caption and not caption.endswith(":") and anchor.lower() in caption.lower():
            found.append(caption)
    return found


def _article(noun: str) -> str:
    return "an" if noun[:1].lower() in "aeiou" else "a"


def template_captions(anchor: str, count: int, kind: str = "style") -> list[str]:
    """``count`` distinct captions that name ``anchor``, in a fixed order that varies the subject first.

    ``style``: captions of works in the anchor's medium ("a painting of a
    house by a river at sunset"); ``object``: captions of images that show
    the anchor ("a photo of a dog in a garden"). Each list offers 200 captions.
    """
    anchor = anchor.strip()
    if not anchor:
        raise RefinerError("captions of a concept need the concept's name")
    if kind not in CAPTION_KINDS:
        raise RefinerError(f"unknown caption kind {kind!r} (one of {', '.join(CAPTION_KINDS)})")
    if kind == "style":
        captions = [f"{_article(anchor)} {anchor} of {subject}{scene}"
                    for scene in STYLE_SCENES for subject in STYLE_SUBJECTS]
    else:
        captions = [f"{framing} {_article(anchor)} {anchor} {place}"
                    for framing in OBJECT_FRAMINGS for place in OBJECT_PLACES]
    if not 1 <= count <= len(captions):
        raise RefinerError(f"the template writes 1 to {len(captions)} {kind} captions, {count} were asked for "
                           "(the openai caption writer writes more)")
    return captions[:count]


class TemplateRefiner:
    """Offline, deterministic refinement from the anchor's metadata, and captions of a concept from fixed lists."""

    origin = "template"
    author = "template"

    def refine(self, text: str, title: str | None = None, artist: str | None = None) -> str:
        return template_refinement(text, title, artist)

    def write_captions(self, anchor: str, count: int, kind: str = "style") -> list[str]:
        return template_captions(anchor, count, kind)


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

    def write_captions(self, anchor: str, count: int, kind: str = "style") -> list[str]:
        """Up to ``count`` distinct captions that name ``anchor``, asked as Concept Ablation's authors ask.

        The model is asked for ``count`` captions of images containing the
        anchor, then for as many more as are missing, for at most
        :data:`CAPTION_ROUNDS` rounds (fewer captions than asked are returned
        then, at least one). ``kind`` does not change the request: the
        authors ask the same for every anchor. The list is cached under
        (anchor, count, model, endpoint, request), so a rerun asks nothing.
        """
        anchor = anchor.strip()
        if kind not in CAPTION_KINDS:
            raise RefinerError(f"unknown caption kind {kind!r} (one of {', '.join(CAPTION_KINDS)})")
        request = CAPTION_REQUEST.format(count=count, anchor=anchor)
        key = hashlib.sha256(json.dumps([anchor, count, self.model, self.base_url, CAPTION_SYSTEM, request,
                                         CAPTION_SAMPLING]).encode("utf-8")).hexdigest()
        path = None if self.cache_dir is None else Path(self.cache_dir) / f"captions-{key}.json"
        if path is not None and path.is_file():
            try:
                return json.loads(path.read_text(encoding="utf-8"))["captions"]
            except (OSError, ValueError, KeyError):
                pass  # a damaged entry is asked again and rewritten
        messages = [{"role": "system", "content": CAPTION_SYSTEM}, {"role": "user", "content": request}]
        captions: list[str] = []
        for _ in range(CAPTION_ROUNDS):
            answer = self._chat(messages, **CAPTION_SAMPLING)
            captions += [c for c in caption_lines(answer, anchor) if c not in captions]
            if len(captions) >= count:
                break
            messages += [{"role": "assistant", "content": answer},
                         {"role": "user", "content": CAPTION_MORE.format(count=count - len(captions))}]
            messages = messages[-CAPTION_HISTORY:]
        if not captions:
            raise RefinerError(f"{self.base_url}: {self.model} wrote no caption naming {anchor!r} "
                               f"in {CAPTION_ROUNDS} answers")
        captions = captions[:count]
        if path is not None:
            self._write_json(path, {"anchor": anchor, "model": self.model, "base_url": self.base_url,
                                    "request": request, "captions": captions})
        return captions

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
        self._write_json(path, {"prompt": text, "model": self.model, "instruction": self.instruction,
                                "answer": answer})

    @staticmethod
    def _write_json(path: Path, entry: dict) -> None:
        """Write a cache entry whole or not at all (a temporary file, then a rename)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".incoming-")
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(entry, handle)
        os.replace(tmp, path)

    def _ask(self, text: str) -> str:
        """The model's answer to ``text`` under the refinement instruction, at temperature 0, on one line."""
        answer = self._chat([{"role": "system", "content": self.instruction}, {"role": "user", "content": text}],
                            temperature=0)
        return " ".join(answer.strip().strip('"').split())

    def _chat(self, messages: list[dict], **sampling) -> str:
        """POST to chat/completions, retrying what may pass (timeouts, 429, 5xx) with exponential backoff."""
        import httpx

        url = f"{self.base_url}/chat/completions"
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        body = {"model": self.model, **sampling, "messages": messages}
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
        """The first choice's message text as sent, or a RefinerError saying what was malformed."""
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
        return content


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
