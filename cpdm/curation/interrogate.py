"""CLIP interrogation: a first prompt for each anchor, from term banks ranked by CLIP.

The CPDM paper made its prompts with the CLIP Interrogator (ViT-L-14/openai):
the anchor image is compared with the text embeddings of four term banks
(mediums, art movements, artists, "flavours"), and the best terms are joined
into a prompt. The recipe used here is the paper's::

    {title}, by {artist}, {caption}, {best medium}, {best movement}, {top flavours}

``title`` and ``artist`` come from the anchor's metadata (the best-ranked
artist term stands in when the artist is unknown); ``caption`` comes from a
BLIP caption model when its weights are on this machine. Empty parts are
left out.

The term banks are the lists shipped with the ``clip-interrogator`` package
(pharmapsychotic/clip-interrogator 0.6.0, MIT licence), read from its data
folder without importing its code; ``banks_dir`` points at another folder
holding ``mediums.txt``, ``movements.txt``, ``artists.txt`` and
``flavors.txt`` (one term a line). Each bank's text embeddings are computed
once per CLIP model and cached in the workspace (``cache/termbanks/``): the
flavour bank holds about 100,000 terms.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable


from cpdm.backbones import DEFAULT_SEMANTIC
from cpdm.curation.prompts import prompt_rows
from cpdm.errors import CpdmError, MissingWeightsError
from cpdm.progress import track
from cpdm.store.rows import add_prompt

BANKS = ("mediums", "movements", "artists", "flavors")
# How each bank's terms are put to CLIP (the artists read "by NAME", as clip-interrogator does).
BANK_TEMPLATES = {"mediums": "{}", "movements": "{}", "artists": "by {}", "flavors": "{}"}
TOP_FLAVORS = 3
TEXT_BATCH = 256
DEFAULT_CAPTION_MODEL = "Salesforce/blip-image-captioning-large"
INTERROGATOR_SOURCE = "clip-interrogator 0.6.0 (github.com/pharmapsychotic/clip-interrogator, MIT licence)"


class InterrogationError(CpdmError):
    """Term banks or a caption model that cannot be used."""


def clip_interrogator_banks_dir() -> Path:
    """The data folder of the installed ``clip-interrogator`` package (its code is not imported)."""
    spec = importlib.util.find_spec("clip_interrogator")
    if spec is None or not spec.submodule_search_locations:
        raise InterrogationError(
            "the term banks come from the clip-interrogator package, which is not installed "
            "(pip install clip-interrogator==0.6.0), or pass --banks DIR with mediums.txt, movements.txt, "
            "artists.txt and flavors.txt"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "data"


def load_banks(folder: str | os.PathLike | None = None) -> dict[str, list[str]]:
    """The four term banks: bank name -> terms (blank lines and repeats dropped, order kept)."""
    folder = Path(folder) if folder is not None else clip_interrogator_banks_dir()
    banks = {}
    for bank in BANKS:
        path = folder / f"{bank}.txt"
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except FileNotFoundError as exc:
            raise InterrogationError(f"term bank {path} is missing (a bank folder holds {', '.join(BANKS)} .txt)") from exc
        except (OSError, UnicodeDecodeError) as exc:
            raise InterrogationError(f"term bank {path} cannot be read as UTF-8 text ({exc})") from exc
        terms = list(dict.fromkeys(line.strip() for line in lines if line.strip()))
        if not terms:
            raise InterrogationError(f"term bank {path} holds no terms")
        banks[bank] = terms
    return banks


@dataclass
class TextImageClip:
    """A CLIP model with both towers: L2-normalised image and text embeddings."""

    key: str  # the backbone key (``tiny:`` prefixed for the tiny model), also the prompts' author
    backbone: object  # cpdm.backbones.clip.ClipBackbone
    tokenizer: Callable

    def embed_images(self, images) -> "torch.Tensor":
        return self.backbone.embed(images)

    def embed_texts(self, texts: list[str]) -> "torch.Tensor":
        import torch

        with torch.inference_mode():
            tokens = self.tokenizer(texts).to(self.backbone.device)
            features = self.backbone.model.encode_text(tokens).float()
        return torch.nn.functional.normalize(features, dim=-1).cpu()


def load_interrogator_clip(name: str = DEFAULT_SEMANTIC, offline_tiny: bool = False, device="cpu") -> TextImageClip:
    """The CLIP model ``name`` (MODEL/TAG) with its tokenizer; real weights, or the tiny random model."""
    import open_clip

    from cpdm.backbones import load_semantic
    from cpdm.backbones.clip import TINY_CLIP_NAME, split_name

    backbone = load_semantic(name, mode="tiny" if offline_tiny else "real", device=device)
    tokenizer = open_clip.get_tokenizer(TINY_CLIP_NAME if offline_tiny else split_name(name)[0])
    return TextImageClip(key=backbone.key, backbone=backbone, tokenizer=tokenizer)


def bank_cache_path(ws, clip_key: str, bank: str, terms: list[str]) -> Path:
    """Where a bank's embeddings under one CLIP model are cached; the name holds a hash of the terms."""
    digest = hashlib.sha256("\n".join([BANK_TEMPLATES[bank], *terms]).encode("utf-8")).hexdigest()[:16]
    safe_key = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in clip_key)
    return ws.root / "cache" / "termbanks" / safe_key / f"{bank}-{digest}.pt"


def save_bank_embeddings(path: Path, embeddings) -> None:
    """Write a bank's embeddings atomically (a killed run never leaves half a file)."""
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix="incoming-", suffix=".tmp")
    os.close(fd)
    try:
        torch.save(embeddings.contiguous(), tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def bank_embeddings(ws, clip: TextImageClip, bank: str, terms: list[str], progress: bool = True):
    """The bank's text embeddings (len(terms), D): from the workspace cache, else computed and cached."""
    import torch

    path = bank_cache_path(ws, clip.key, bank, terms)
    if path.is_file():
        cached = torch.load(path, map_location="cpu", weights_only=True)
        if cached.ndim == 2 and cached.shape[0] == len(terms):
            return cached
    texts = [BANK_TEMPLATES[bank].format(term) for term in terms]
    chunks = []
    batches = range(0, len(texts), TEXT_BATCH)
    for start in track(batches, f"embedding {bank}", unit="batch", enabled=progress and len(batches) >= 2):
        chunks.append(clip.embed_texts(texts[start : start + TEXT_BATCH]))
    embeddings = torch.cat(chunks)
    save_bank_embeddings(path, embeddings)
    return embeddings


def rank_terms(image_embedding, bank_embedding, terms: list[str], top: int = 1) -> list[tuple[str, float]]:
    """The ``top`` terms most similar to the image (cosine), best first, with their similarity."""
    import torch

    similarity = bank_embedding @ image_embedding.reshape(-1)
    values, indices = torch.topk(similarity, k=min(top, len(terms)))
    return [(terms[i], float(v)) for v, i in zip(values.tolist(), indices.tolist())]


def build_recipe(title: str | None, artist: str | None, caption: str | None, medium: str | None,
                 movement: str | None, flavors: list[str]) -> str:
    """The paper's prompt: ``{title}, by {artist}, {caption}, {medium}, {movement}, {flavours}``; empty parts dropped."""
    parts = [title, f"by {artist}" if artist else None, caption, medium, movement, *flavors]
    return ", ".join(part.strip() for part in parts if part and part.strip())


def load_captioner(model: str, device="cpu") -> Callable:
    """A BLIP captioner (PIL image -> text) from a local folder or the Hugging Face cache; never downloads."""
    import torch
    from transformers import BlipForConditionalGeneration, BlipProcessor

    try:
        processor = BlipProcessor.from_pretrained(model, local_files_only=True)
        blip = BlipForConditionalGeneration.from_pretrained(model, local_files_only=True).to(device).eval()
    except (OSError, ValueError) as exc:
        raise MissingWeightsError(missing_caption_message(model)) from exc

    def caption(image) -> str:
        inputs = processor(images=image.convert("RGB"), return_tensors="pt").to(device)
        with torch.inference_mode():
            tokens = blip.generate(**inputs, max_new_tokens=30)
        return processor.decode(tokens[0], skip_special_tokens=True).strip()

    return caption


def missing_caption_message(model: str) -> str:
    return (
        f"BLIP caption weights {model!r} are not on this machine (a folder saved by transformers, or a model id "
        f"in the Hugging Face cache). On a machine with a network run `hf download {DEFAULT_CAPTION_MODEL}` and "
        "copy the cache here, or pass --caption-model PATH"
    )


def caption_weights_present(model: str) -> bool:
    """True when BLIP weights for ``model`` are in a local folder or the Hugging Face cache."""
    if Path(model).expanduser().is_dir():
        return (Path(model).expanduser() / "config.json").is_file()
    from huggingface_hub import try_to_load_from_cache

    from cpdm.backbones.clip import hf_hub_cache

    found = try_to_load_from_cache(model, "config.json", cache_dir=hf_hub_cache())
    return isinstance(found, str)


@dataclass
class InterrogationReport:
    """Prompts written, anchors skipped (already interrogated by this model), notes for the user."""

    added: list[int] = field(default_factory=list)
    skipped: list[int] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def summary(self) -> str:
        return f"interrogated {len(self.added)} anchors, skipped {len(self.skipped)} already done"


def _anchors(ws, anchor_ids) -> list[tuple]:
    rows = ws.conn.execute("SELECT id, image, title, artist FROM anchors ORDER BY id").fetchall()
    if not rows:
        raise CpdmError("the workspace has no anchors (cpdm anchors import FOLDER first)")
    if anchor_ids:
        known = {row[0] for row in rows}
        unknown = sorted(set(anchor_ids) - known)
        if unknown:
            raise CpdmError(f"no anchor {', '.join(map(str, unknown))} in the workspace")
        rows = [row for row in rows if row[0] in set(anchor_ids)]
    return rows


def _interrogated(ws, anchor_id: int, author: str) -> bool:
    return any(p.author == author for p in prompt_rows(ws, anchor_id=anchor_id, origin="interrogator"))


def interrogate_anchors(
    ws,
    anchor_ids: list[int] | None = None,
    *,
    model: str = DEFAULT_SEMANTIC,
    offline_tiny: bool = False,
    device="cpu",
    caption_model: str | None = None,
    banks_dir: str | os.PathLike | None = None,
    top_flavors: int = TOP_FLAVORS,
    progress: bool = True,
    clip: TextImageClip | None = None,
) -> InterrogationReport:
    """Write an interrogator prompt for each anchor not yet interrogated with this CLIP model.

    ``caption_model`` given: BLIP weights must be present (else
    :class:`MissingWeightsError`). Not given: the default BLIP is used when
    its weights are in the cache, and a note says they are missing otherwise
    (never with ``offline_tiny``).
    """
    from cpdm.store.images import load_image

    report = InterrogationReport()
    anchors = _anchors(ws, anchor_ids)
    banks = load_banks(banks_dir)
    clip = clip or load_interrogator_clip(model, offline_tiny=offline_tiny, device=device)
    todo = [row for row in anchors if not _interrogated(ws, row[0], clip.key)]
    report.skipped = [row[0] for row in anchors if row not in todo]
    if not todo:
        return report
    captioner, caption_name = _choose_captioner(caption_model, offline_tiny, device, report)
    embeddings = {bank: bank_embeddings(ws, clip, bank, terms, progress) for bank, terms in banks.items()}
    for anchor_id, image_sha, title, artist in track(todo, "interrogating", unit="anchor", enabled=progress):
        image = load_image(ws, image_sha)
        image_embedding = clip.embed_images([image])[0]
        best = {bank: rank_terms(image_embedding, embeddings[bank], banks[bank],
                                 top=top_flavors if bank == "flavors" else 1) for bank in BANKS}
        caption = captioner(image) if captioner else None
        text = build_recipe(title, artist or best["artists"][0][0], caption, best["mediums"][0][0],
                            best["movements"][0][0], [term for term, _ in best["flavors"]])
        params = {
            "clip": clip.key, "caption_model": caption_name, "caption": caption,
            "terms": {bank: [term for term, _ in ranked] for bank, ranked in best.items()},
            "banks": str(banks_dir) if banks_dir else INTERROGATOR_SOURCE,
        }
        report.added.append(add_prompt(ws, anchor_id, text, origin="interrogator", author=clip.key, params=params))
    return report


def _choose_captioner(caption_model, offline_tiny, device, report) -> tuple[Callable | None, str | None]:
    """The BLIP captioner to use, or None with a note saying which weights are missing."""
    if caption_model:
        return load_captioner(caption_model, device), caption_model
    if offline_tiny:
        report.notes.append("no caption with --offline-tiny (pass --caption-model PATH to caption anyway)")
        return None, None
    if caption_weights_present(DEFAULT_CAPTION_MODEL):
        return load_captioner(DEFAULT_CAPTION_MODEL, device), DEFAULT_CAPTION_MODEL
    report.notes.append(f"captions left out: {missing_caption_message(DEFAULT_CAPTION_MODEL)}")
    return None, None
