"""Prompt refinement: rewrite a prompt so it elicits close imitation of its anchor.

The CPDM paper had ChatGPT refine the interrogator's prompts. Three refiners:

* ``template`` (the default): offline and deterministic; it appends what the
  anchor's metadata says (title, artist) to the prompt in a fixed wording
  (one of ``len(TEMPLATE_WORDINGS)`` wordings when several rewrites are asked).
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
* ``local``: an instruction-tuned model run in this process by transformers
  (its chat template, then ``generate``), from a folder or the local Hugging
  Face cache, never downloaded; on CPU or CUDA. Same cache and the same
  "no fallback" rule as ``openai``.

Both LLM refiners send :data:`INSTRUCTION` as the system message and the
prompt as the user message. One rewrite per prompt is greedy (temperature 0);
``n`` rewrites per prompt are sampled, rewrite k with seed ``seed + k`` and
:data:`SAMPLING_TEMPERATURE`, and the seed is recorded with the prompt.

Each refined prompt is stored with its parent (the prompt it was refined
from), its author (``template``, or the LLM model's name) and, in its params,
its rewrite index k and how it was decoded.

The template and openai backends also write *captions of a concept*
(``write_captions``): the anchor captions Concept Ablation trains on
(:mod:`cpdm.unlearning.ablation`). The template writer composes them from
fixed subject and scene lists, offline; the openai writer asks the endpoint
for them as Concept Ablation's authors ask their LLM, and keeps the list it
got in the same on-disk cache as its rewrites (:class:`AnswerCache`).

Why one file of this length: the three refiners share the instruction, the
answer cache, the retrying client and the rewrite bookkeeping, and the
caption writer is the same two backends (template lists, the OpenAI-compatible
client and its cache) asked for another text; apart, each would import the
other's internals.
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

REFINERS = ("template", "openai", "local")
INSTRUCTION = (
    "You rewrite prompts for the text-to-image model Stable Diffusion. Rewrite the prompt you are given so that "
    "the model reproduces the described artwork as closely as possible: keep its title, artist, subject, "
    "composition, medium and style, and add concrete visual details (colours, brushwork, lighting). "
    "Answer with the rewritten prompt only, on one line, in at most 60 words."
)
# The LLM refiners' temperature when several rewrites per prompt are sampled.
SAMPLING_TEMPERATURE = 1.0
DEFAULT_SAMPLING_SEED = 0
DEFAULT_MAX_NEW_TOKENS = 96
DEFAULT_BASE_URL = "https://api.openai.com/v1"
DEFAULT_TIMEOUT_S = 60.0
DEFAULT_MAX_RETRIES = 5
DEFAULT_BACKOFF_S = 1.0
MAX_BACKOFF_S = 60.0
# Source prompts refined by default: what interrogation and researchers wrote.
DEFAULT_SOURCE_ORIGINS = ("interrogator", "manual")


class RefinerError(CpdmError):
    """A refiner that cannot run or an endpoint that failed; nothing was written for that prompt."""


# The template refiner's wordings: (what the copy is called, what must match, how the artist is named).
TEMPLATE_WORDINGS = (
    ("a faithful reproduction of", "same composition, same colour palette, same brushwork", "in the exact style of {}"),
    ("an exact replica of", "identical layout, identical colours, identical strokes", "painted exactly as {} painted"),
    ("a precise copy of", "matching every shape, colour and texture of the original", "in the signature manner of {}"),
)


def template_refinement(text: str, title: str | None, artist: str | None, wording: int = 0) -> str:
    """The template refiner's rewrite: the prompt plus a fixed request for a faithful copy (wording 0, 1 or 2)."""
    copy_of, what_matches, artist_style = TEMPLATE_WORDINGS[wording]
    parts = [text.strip().rstrip(",")]
    if title and artist:
        parts.append(f"{copy_of} {title} by {artist}")
    elif title:
        parts.append(f"{copy_of} {title}")
    parts.append(what_matches)
    if artist:
        parts.append(artist_style.format(artist))
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
    max_rewrites = len(TEMPLATE_WORDINGS)

    def refine(self, text: str, title: str | None = None, artist: str | None = None, wording: int = 0) -> str:
        return template_refinement(text, title, artist, wording)

    def write_captions(self, anchor: str, count: int, kind: str = "style") -> list[str]:
        return template_captions(anchor, count, kind)


@dataclass(frozen=True)
class Sampling:
    """How an LLM rewrite was sampled; ``None`` in its place means greedy decoding."""

    seed: int
    temperature: float = SAMPLING_TEMPERATURE

    def as_params(self) -> dict:
        return {"seed": self.seed, "temperature": self.temperature}


class AnswerCache:
    """LLM answers on disk, one JSON file per question, keyed by everything that shapes the answer.

    A question is the prompt, the model, the instruction and, for sampled
    rewrites, the sampling; greedy questions keep the key and the file format
    of the one-rewrite cache, so earlier caches still answer.
    Any further field (a caption list's endpoint) is part of the key too.
    """

    def __init__(self, directory: Path | None):
        self.directory = None if directory is None else Path(directory)

    @staticmethod
    def key(question: dict) -> str:
        fields = [question["prompt"], question["model"], question["instruction"]]
        if "sampling" in question:
            fields.append(question["sampling"])
        for name in sorted(set(question) - {"prompt", "model", "instruction", "sampling"}):
            fields.append([name, question[name]])  # e.g. the endpoint of a caption list
        return hashlib.sha256(json.dumps(fields).encode("utf-8")).hexdigest()

    def get(self, question: dict) -> str | None:
        """The cached answer to exactly this question, or None."""
        if self.directory is None:
            return None
        path = self.directory / f"{self.key(question)}.json"
        if not path.is_file():
            return None
        try:
            entry = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            return None  # a damaged entry is asked again and rewritten
        if {name: entry.get(name) for name in question} != question:
            return None
        return entry.get("answer")

    def put(self, question: dict, answer: str) -> None:
        if self.directory is None:
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.directory, prefix=".incoming-")
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump({**question, "answer": answer}, handle)
        os.replace(tmp, self.directory / f"{self.key(question)}.json")


def _question(text: str, model: str, instruction: str, sampling: Sampling | None) -> dict:
    """What an LLM is asked, as the cache keys it."""
    question = {"prompt": text, "model": model, "instruction": instruction}
    if sampling is not None:
        question["sampling"] = sampling.as_params()
    return question


def _chat(instruction: str, text: str) -> list[dict]:
    """The messages both LLM refiners send: the instruction as system message, the prompt as user message."""
    return [{"role": "system", "content": instruction}, {"role": "user", "content": text}]


def _one_line(answer: str) -> str:
    return " ".join(answer.strip().strip('"').split())


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

    def cache_key(self, text: str, sampling: Sampling | None = None) -> str:
        return AnswerCache.key(_question(text, self.model, self.instruction, sampling))

    def refine(self, text: str, title: str | None = None, artist: str | None = None,
               sampling: Sampling | None = None) -> str:
        """The model's rewrite of ``text`` (from the cache when this exact question was asked before)."""
        cache = AnswerCache(self.cache_dir)
        question = _question(text, self.model, self.instruction, sampling)
        cached = cache.get(question)
        if cached is not None:
            return cached
        answer = self._ask(text, sampling)
        cache.put(question, answer)
        return answer

    def write_captions(self, anchor: str, count: int, kind: str = "style") -> list[str]:
        """Up to ``count`` distinct captions that name ``anchor``, asked as Concept Ablation's authors ask.

        The model is asked for ``count`` captions of images containing the
        anchor, then for as many more as are missing, for at most
        :data:`CAPTION_ROUNDS` rounds (fewer captions than asked are returned
        then, at least one). ``kind`` does not change the request: the
        authors ask the same for every anchor. The list is kept in the
        refiner's :class:`AnswerCache` under (request, which names the anchor
        and the count; model; endpoint; sampling), so a rerun asks nothing.
        """
        anchor = anchor.strip()
        if kind not in CAPTION_KINDS:
            raise RefinerError(f"unknown caption kind {kind!r} (one of {', '.join(CAPTION_KINDS)})")
        request = CAPTION_REQUEST.format(count=count, anchor=anchor)
        cache = AnswerCache(self.cache_dir)
        question = {"prompt": request, "model": self.model, "instruction": CAPTION_SYSTEM,
                    "sampling": {**CAPTION_SAMPLING, "rounds": CAPTION_ROUNDS, "history": CAPTION_HISTORY},
                    "endpoint": self.base_url}
        cached = cache.get(question)
        if cached is not None:
            return cached.split("\n")  # one caption a line (each caption is one line of an answer)
        messages = [{"role": "system", "content": CAPTION_SYSTEM}, {"role": "user", "content": request}]
        captions: list[str] = []
        for _ in range(CAPTION_ROUNDS):
            answer = self._post(messages, **CAPTION_SAMPLING)
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
        cache.put(question, "\n".join(captions))
        return captions

    def _ask(self, text: str, sampling: Sampling | None = None) -> str:
        """The model's rewrite of ``text`` under the instruction, greedy or sampled, on one line."""
        decoding = {"temperature": 0} if sampling is None else {"temperature": sampling.temperature,
                                                                "seed": sampling.seed}
        return _one_line(self._post(_chat(self.instruction, text), **decoding))

    def _post(self, messages: list[dict], **decoding) -> str:
        """POST to chat/completions, retrying what may pass (timeouts, 429, 5xx) with exponential backoff."""
        import httpx

        url = f"{self.base_url}/chat/completions"
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        body = {"model": self.model, **decoding, "messages": messages}
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


def _looks_like_a_path(model: str) -> bool:
    """A folder rather than a model id ("org/name"): absolute, relative to here or home, or deeper than one slash."""
    return model.startswith((".", "/", "~")) or model.count("/") > 1


@dataclass
class LocalRefiner:
    """An instruction-tuned causal LM run here by transformers: chat template, then ``generate``.

    ``model`` is a folder holding the model and its tokenizer, or a model id
    already in the local Hugging Face cache (loaded with ``local_files_only``;
    nothing is downloaded). The weights are loaded on the first prompt that
    the cache cannot answer.
    """

    model: str
    device: str = "cpu"
    cache_dir: Path | None = None
    instruction: str = INSTRUCTION
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS
    generations_made: int = field(default=0, init=False)
    _loaded: tuple | None = field(default=None, init=False, repr=False)

    origin = "llm"

    def __post_init__(self):
        self.weights = self._locate_weights()

    @property
    def author(self) -> str:
        """The model's name: the folder's name for a folder, else the model id."""
        return Path(self.weights).name if Path(self.weights).is_dir() else self.model

    def _locate_weights(self) -> str:
        """The folder (resolved) or cached model id to load, or a RefinerError saying how to get it."""
        folder = Path(self.model).expanduser()
        if folder.is_dir():
            return str(folder.resolve())
        if _looks_like_a_path(self.model):
            raise RefinerError(f"no model folder at {self.model}: pass a folder holding a causal LM and its tokenizer "
                               "(e.g. made by `huggingface-cli download ID --local-dir FOLDER`)")
        from huggingface_hub import try_to_load_from_cache

        if not isinstance(try_to_load_from_cache(self.model, "config.json"), str):
            raise RefinerError(f"the local refiner's model {self.model} is not in the local Hugging Face cache: "
                               f"run `huggingface-cli download {self.model}` on a machine with network, "
                               "or pass --model FOLDER")
        return self.model

    def refine(self, text: str, title: str | None = None, artist: str | None = None,
               sampling: Sampling | None = None) -> str:
        """The model's rewrite of ``text`` (from the cache when this exact question was asked before)."""
        cache = AnswerCache(self.cache_dir)
        question = _question(text, self.weights, self.instruction, sampling)
        cached = cache.get(question)
        if cached is not None:
            return cached
        answer = self._generate(text, sampling)
        cache.put(question, answer)
        return answer

    def _load(self):
        """(tokenizer, model) from the folder or the local cache, on ``device``, in eval mode."""
        if self._loaded is None:
            from transformers import AutoModelForCausalLM, AutoTokenizer

            try:
                tokenizer = AutoTokenizer.from_pretrained(self.weights, local_files_only=True)
                model = AutoModelForCausalLM.from_pretrained(self.weights, local_files_only=True)
            except (OSError, ValueError) as exc:
                raise RefinerError(f"cannot load the local refiner's model from {self.weights}: "
                                   f"{str(exc).splitlines()[0]}") from None
            if not tokenizer.chat_template:
                raise RefinerError(f"the tokenizer in {self.weights} has no chat template; "
                                   "the local refiner needs an instruction-tuned (chat) model")
            self._loaded = (tokenizer, model.to(self.device).eval())
        return self._loaded

    def _generate(self, text: str, sampling: Sampling | None) -> str:
        """One answer: greedy, or sampled from ``sampling.seed`` (torch's global generator, seeded here).

        Sampling is plain sampling at ``sampling.temperature`` over the whole
        vocabulary (no top-k or top-p from the model's generation config), so
        the recorded seed and temperature say all there is.
        """
        import torch

        tokenizer, model = self._load()
        inputs = tokenizer.apply_chat_template(_chat(self.instruction, text), add_generation_prompt=True,
                                               return_tensors="pt", return_dict=True).to(self.device)
        decoding = {"do_sample": False}
        if sampling is not None:
            torch.manual_seed(sampling.seed)
            decoding = {"do_sample": True, "temperature": sampling.temperature, "top_k": 0, "top_p": 1.0}
        pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        with torch.no_grad():
            output = model.generate(**inputs, max_new_tokens=self.max_new_tokens, pad_token_id=pad_id, **decoding)
        self.generations_made += 1
        answer = _one_line(tokenizer.decode(output[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True))
        if not answer:
            raise RefinerError(f"the local refiner {self.author} answered an empty prompt for {text[:60]!r}")
        return answer


def make_refiner(kind: str, ws=None, model: str | None = None, device: str = "cpu", **kwargs):
    """``template``, ``openai`` (configured from the environment) or ``local`` (a model here); LLMs cache in the workspace."""
    cache_dir = ws.root / "cache" / "refiner" if ws is not None else None
    if kind == "template":
        if model:
            raise RefinerError("--model is for the openai refiner and the local refiner; the template refiner has no model")
        return TemplateRefiner()
    if kind == "openai":
        return OpenAIRefiner.from_env(model=model, cache_dir=cache_dir, **kwargs)
    if kind == "local":
        if not model:
            raise RefinerError("the local refiner needs --model FOLDER or a model id in the local Hugging Face cache")
        return LocalRefiner(model=model, device=device, cache_dir=cache_dir, **kwargs)
    raise RefinerError(f"unknown refiner {kind!r} (use one of: {', '.join(REFINERS)})")


@dataclass
class RefineReport:
    added: list[int] = field(default_factory=list)
    skipped: list[int] = field(default_factory=list)

    def summary(self) -> str:
        return (f"refined {len(self.added)} prompts, skipped {len(self.skipped)} source prompts "
                "already refined by this refiner")


def _rewrites_done(ws, source: PromptRow, author: str) -> set[int]:
    """The rewrite indices k that ``author`` already made of ``source`` (rows from before ``n`` count as k = 0)."""
    return {p.params.get("rewrite", 0) for p in prompt_rows(ws, anchor_id=source.anchor)
            if p.parent == source.id and p.author == author}


def _check_rewrite_count(refiner, n: int) -> None:
    limit = getattr(refiner, "max_rewrites", None)
    if n < 1:
        raise RefinerError(f"--n must be at least 1, got {n}")
    if limit is not None and n > limit:
        raise RefinerError(f"the template refiner has {limit} distinct wordings, so at most --n {limit}; "
                           "use an LLM refiner (openai or local) for more rewrites per prompt")


def _rewrite(refiner, source: PromptRow, title, artist, k: int, n: int, seed: int) -> tuple[str, dict]:
    """Rewrite k of ``n`` of ``source``: its text and the params that say how it was made."""
    if refiner.origin == "template":
        return refiner.refine(source.text, title=title, artist=artist, wording=k), {"refiner": "template", "rewrite": k}
    sampling = None if n == 1 else Sampling(seed=seed + k)
    text = refiner.refine(source.text, title=title, artist=artist, sampling=sampling)
    params = {"refiner": "local" if isinstance(refiner, LocalRefiner) else "openai",
              "instruction": refiner.instruction, "rewrite": k,
              "decoding": "greedy" if sampling is None else {"sampling": sampling.as_params()}}
    if isinstance(refiner, LocalRefiner):
        params.update(model=refiner.weights, device=refiner.device, max_new_tokens=refiner.max_new_tokens)
    else:
        params.update(base_url=refiner.base_url)
    return text, params


def refine_prompts(ws, refiner, prompt_ids: list[int] | None = None, progress: bool = True, *,
                   n: int = 1, seed: int = DEFAULT_SAMPLING_SEED) -> RefineReport:
    """Make ``n`` rewrites of each given prompt (default: every interrogator and manual prompt).

    Rewrites this refiner already made (by index k) are skipped, so a rerun,
    or a rerun with a larger ``n``, adds only what is missing. With ``n`` > 1
    LLM rewrites are sampled, rewrite k from seed ``seed + k``; the template
    refiner gives each rewrite its own wording and refuses more rewrites than
    it has wordings.
    """
    _check_rewrite_count(refiner, n)
    report = RefineReport()
    if prompt_ids:
        sources = prompt_rows(ws, prompt_ids=prompt_ids)
    else:
        sources = [p for p in prompt_rows(ws) if p.origin in DEFAULT_SOURCE_ORIGINS]
    if not sources:
        raise CpdmError("no prompts to refine (run `cpdm prompts interrogate` or `cpdm prompts add` first)")
    meta = {row[0]: row[1:] for row in ws.conn.execute("SELECT id, title, artist FROM anchors").fetchall()}
    for source in track(sources, "refining", unit="prompt", enabled=progress):
        missing = [k for k in range(n) if k not in _rewrites_done(ws, source, refiner.author)]
        if not missing:
            report.skipped.append(source.id)
            continue
        title, artist = meta[source.anchor]
        for k in missing:
            text, params = _rewrite(refiner, source, title, artist, k, n, seed)
            report.added.append(add_prompt(ws, source.anchor, text, origin=refiner.origin, author=refiner.author,
                                           parent=source.id, params=params))
    return report
