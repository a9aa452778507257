"""CLIP interrogation: a first prompt for each anchor, from term banks ranked by CLIP.

The CPDM release made its prompts with clip-interrogator 0.6.0
(pharmapsychotic/clip-interrogator, MIT licence) in its ``best`` mode with
ViT-H-14/laion2b_s32b_b79k, the CLIP model recommended for Stable Diffusion
2.x. ``mode`` chooses the algorithm:

``best`` (the default)
    a caption, then a chain of terms from the merged banks (artists,
    flavours, mediums, movements, "trending on" sites): at least 8 and at
    most 32 terms, each added while it raises the prompt's similarity to the
    image; then the best of the caption, the classic, the fast and the
    chained prompt by similarity.
``fast``
    the caption and the 32 best-ranked terms of the merged banks.
``classic``
    ``{caption}, {medium} {artist}, {trending}, {movement}, {3 flavours}``.
``negative``
    a chain of the terms *least* like the image (flavours and the
    ``negative`` bank), to use as a negative prompt.
``metadata``
    cpdm's own recipe, ``{title}, by {artist}, {caption}, {medium},
    {movement}, {flavours}``, which keeps the title and artist of the
    anchor's metadata (the best-ranked artist term stands in when the artist
    is unknown).

The first four run the package's own code (its ``Interrogator`` and
``LabelTable``) on cpdm's loaded CLIP model, tokenizer and preprocessing and
on label tables made from the bank embeddings cpdm caches, so nothing is
downloaded: see :func:`package_interrogator`. The caption comes from a BLIP
caption model (``caption_max_length`` 32 new tokens, as the package) when its
weights are on this machine; without it the caption is empty, a note says
so, and the modes run on the empty caption (``best`` then starts its chain
from the best-ranked term).

The term banks are the lists shipped with the package, read from its data
folder; ``banks_dir`` points at another folder holding ``mediums.txt``,
``movements.txt``, ``artists.txt`` and ``flavors.txt`` (and ``negative.txt``
for the negative mode), one term a line. Each table's text embeddings are
computed once per CLIP model and cached in the workspace
(``cache/termbanks/``): the flavour bank holds about 100,000 terms.

Why one file of this length: it is one algorithm, clip-interrogator's modes
run on cpdm's models, with the term banks and the cache of their embeddings
that only it reads.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable


from cpdm.curation.prompts import prompt_rows
from cpdm.errors import CpdmError, MissingWeightsError
from cpdm.progress import track
from cpdm.store.rows import add_prompt

BANKS = ("mediums", "movements", "artists", "flavors")
# How the metadata recipe puts each bank's terms to CLIP (the artists read "by NAME").
BANK_TEMPLATES = {"mediums": "{}", "movements": "{}", "artists": "by {}", "flavors": "{}"}
TOP_FLAVORS = 3
TEXT_BATCH = 256
DEFAULT_CAPTION_MODEL = "Salesforce/blip-image-captioning-large"
CAPTION_MAX_LENGTH = 32  # new tokens in a caption, clip-interrogator 0.6.0's ``caption_max_length``
INTERROGATOR_SOURCE = "clip-interrogator 0.6.0 (github.com/pharmapsychotic/clip-interrogator, MIT licence)"
# The model the CPDM release's demo interrogates with (recommended for SD 2.x); the metric's
# semantic backbone (cpdm.backbones.DEFAULT_SEMANTIC, ViT-L-14/openai) is a different role.
DEFAULT_INTERROGATOR_CLIP = "ViT-H-14/laion2b_s32b_b79k"
PACKAGE_MODES = ("best", "fast", "classic", "negative")
MODES = (*PACKAGE_MODES, "metadata")
DEFAULT_MODE = "best"
MIN_CHAIN_TERMS = 8  # best: the flavour chain's length bounds (the package's defaults)
MAX_CHAIN_TERMS = 32
# Image-sharing sites, and how clip-interrogator's "trendings" table words them.
TRENDING_SITES = ("Artstation", "behance", "cg society", "cgsociety", "deviantart", "dribble", "flickr", "instagram",
                  "pexels", "pinterest", "pixabay", "pixiv", "polycount", "reddit", "shutterstock", "tumblr",
                  "unsplash", "zbrush central")
TRENDING_PHRASINGS = ("{}", "trending on {}", "featured on {}", "{} contest winner")


class InterrogationError(CpdmError):
    """Term banks or a caption model that cannot be used."""


def clip_interrogator_banks_dir() -> Path:
    """The data folder of the installed ``clip-interrogator`` package (found without importing it)."""
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


def load_interrogator_clip(name: str = DEFAULT_INTERROGATOR_CLIP, offline_tiny: bool = False, device="cpu") -> TextImageClip:
    """The CLIP model ``name`` (MODEL/TAG) with its tokenizer; real weights, or the tiny random model."""
    import open_clip

    from cpdm.backbones import load_semantic
    from cpdm.backbones.clip import TINY_CLIP_NAME, split_name

    backbone = load_semantic(name, mode="tiny" if offline_tiny else "real", device=device)
    tokenizer = open_clip.get_tokenizer(TINY_CLIP_NAME if offline_tiny else split_name(name)[0])
    return TextImageClip(key=backbone.key, backbone=backbone, tokenizer=tokenizer)


def bank_cache_path(ws, clip_key: str, table: str, texts: list[str]) -> Path:
    """Where a table's text embeddings under one CLIP model are cached; the name holds a hash of the texts."""
    digest = hashlib.sha256("\n".join(texts).encode("utf-8")).hexdigest()[:16]
    safe_key = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in clip_key)
    return ws.root / "cache" / "termbanks" / safe_key / f"{table}-{digest}.pt"


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


def bank_embeddings(ws, clip: TextImageClip, table: str, texts: list[str], progress: bool = True):
    """The texts' CLIP embeddings (len(texts), D): from the workspace cache, else computed and cached."""
    import torch

    path = bank_cache_path(ws, clip.key, table, texts)
    if path.is_file():
        cached = torch.load(path, map_location="cpu", weights_only=True)
        if cached.ndim == 2 and cached.shape[0] == len(texts):
            return cached
    chunks = []
    batches = range(0, len(texts), TEXT_BATCH)
    for start in track(batches, f"embedding {table}", unit="batch", enabled=progress and len(batches) >= 2):
        chunks.append(clip.embed_texts(texts[start : start + TEXT_BATCH]))
    embeddings = torch.cat(chunks)
    save_bank_embeddings(path, embeddings)
    return embeddings


def metadata_bank_texts(banks: dict[str, list[str]]) -> dict[str, list[str]]:
    """Each bank's terms as the metadata recipe puts them to CLIP."""
    return {bank: [BANK_TEMPLATES[bank].format(term) for term in terms] for bank, terms in banks.items()}


# --- clip-interrogator's own algorithms on cpdm's models ----------------------------------------------

def interrogator_tables(folder: str | os.PathLike | None = None, with_negative: bool = False) -> dict[str, list[str]]:
    """The label tables of clip-interrogator 0.6.0: table name -> the texts put to CLIP.

    The bank files are read with the package's own ``load_list`` (it keeps
    every line, repeats included, so a table's order and chunks are the
    package's). Artists appear as "by NAME" and "inspired by NAME"; the
    "trendings" table words each image-sharing site four ways.
    """
    from clip_interrogator.clip_interrogator import load_list

    folder = Path(folder) if folder is not None else clip_interrogator_banks_dir()
    wanted = [*BANKS, "negative"] if with_negative else list(BANKS)
    for name in wanted:
        if not (folder / f"{name}.txt").is_file():
            raise InterrogationError(f"term bank {folder / (name + '.txt')} is missing")
    artists = load_list(str(folder), "artists.txt")
    tables = {
        "artists": [f"by {name}" for name in artists] + [f"inspired by {name}" for name in artists],
        "flavors": load_list(str(folder), "flavors.txt"),
        "mediums": load_list(str(folder), "mediums.txt"),
        "movements": load_list(str(folder), "movements.txt"),
        "trendings": [phrasing.format(site) for phrasing in TRENDING_PHRASINGS for site in TRENDING_SITES],
    }
    if with_negative:
        tables["negative"] = load_list(str(folder), "negative.txt")
    return tables


def package_interrogator(clip: TextImageClip, tables: dict[str, list[str]], embeddings: dict) -> object:
    """A ``clip_interrogator.Interrogator`` holding cpdm's CLIP and label tables, built without loading anything.

    ``Interrogator.__init__`` would load BLIP and CLIP by name and
    ``LabelTable`` would fetch precomputed embeddings from the Hugging Face
    hub, so the instance is made with ``object.__new__`` and given what its
    methods use: the config, the device, cpdm's open_clip model, tokenizer
    and preprocessing, and one :func:`package_label_table` per table. No
    caption model is attached: the caption is cpdm's (see
    :func:`run_package_mode`).
    """
    from clip_interrogator import Config, Interrogator

    device = str(clip.backbone.device)
    config = Config(clip_model_name=clip.backbone.name, caption_model_name=None, cache_path=None,
                    download_cache=False, device=device, quiet=True)
    interrogator = object.__new__(Interrogator)
    interrogator.config = config
    interrogator.device = device
    interrogator.dtype = next(clip.backbone.model.parameters()).dtype
    interrogator.caption_model, interrogator.caption_processor = None, None
    interrogator.caption_offloaded, interrogator.clip_offloaded = True, False  # CLIP is already on its device
    interrogator.clip_model = clip.backbone.model
    interrogator.clip_preprocess = clip.backbone.preprocess
    interrogator.tokenize = clip.tokenizer
    for name, texts in tables.items():
        setattr(interrogator, name, package_label_table(interrogator, texts, embeddings[name]))
    return interrogator


def package_label_table(interrogator, texts: list[str], embeddings) -> object:
    """A ``clip_interrogator.LabelTable`` of ``texts`` holding cpdm's cached embeddings.

    The package keeps its table embeddings in float16 (widened to float32 on
    the CPU); the cached float32 embeddings are rounded the same way, so its
    rankings are the ones the package computes.
    """
    import numpy as np
    from clip_interrogator.clip_interrogator import LabelTable

    table = object.__new__(LabelTable)
    table.config = interrogator.config
    table.chunk_size = interrogator.config.chunk_size
    table.device = interrogator.config.device
    table.tokenize = interrogator.tokenize
    table.labels = list(texts)
    rows = embeddings.half().numpy()
    if table.device == "cpu":
        rows = rows.astype(np.float32)
    table.embeds = list(rows)
    return table


def run_package_mode(interrogator, mode: str, image, caption: str) -> str:
    """The prompt clip-interrogator's ``mode`` writes for ``image`` (``caption`` may be empty).

    The package asks its ``generate_caption`` for a caption whenever the one
    passed is empty; it is pointed at the caption cpdm already made, so an
    empty caption stays empty instead of needing a BLIP model here. The
    package's warnings about ``torch.cuda.amp.autocast`` (deprecated, and off
    without CUDA) are silenced: they concern its code, not the run.
    """
    interrogator.generate_caption = lambda _image: caption
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*autocast", category=FutureWarning)
        warnings.filterwarnings("ignore", message=r"CUDA is not available.*autocast", category=UserWarning)
        if mode == "best":
            return interrogator.interrogate(image, min_flavors=MIN_CHAIN_TERMS, max_flavors=MAX_CHAIN_TERMS,
                                            caption=caption)
        if mode == "fast":
            return interrogator.interrogate_fast(image, caption=caption)
        if mode == "classic":
            return interrogator.interrogate_classic(image, caption=caption)
        if mode == "negative":
            return interrogator.interrogate_negative(image)
    raise InterrogationError(f"unknown interrogation mode {mode!r} (one of {', '.join(MODES)})")


def tidy_prompt(text: str) -> str:
    """The prompt without the separator the package puts before an empty caption (", medium, ...")."""
    return text.strip().removeprefix(",").strip()


def rank_terms(image_embedding, bank_embedding, terms: list[str], top: int = 1) -> list[tuple[str, float]]:
    """The ``top`` terms most similar to the image (cosine), best first, with their similarity."""
    import torch

    similarity = bank_embedding @ image_embedding.reshape(-1)
    values, indices = torch.topk(similarity, k=min(top, len(terms)))
    return [(terms[i], float(v)) for v, i in zip(values.tolist(), indices.tolist())]


def build_recipe(title: str | None, artist: str | None, caption: str | None, medium: str | None,
                 movement: str | None, flavors: list[str]) -> str:
    """The metadata mode's prompt: ``{title}, by {artist}, {caption}, {medium}, {movement}, {flavours}``; empty parts dropped."""
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
            tokens = blip.generate(**inputs, max_new_tokens=CAPTION_MAX_LENGTH)
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

    from cpdm.hf_cache import hf_hub_cache

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


def _interrogated(ws, anchor_id: int, author: str, mode: str) -> bool:
    """True when the anchor has a prompt from this CLIP model in this mode (prompts before modes were metadata)."""
    return any(p.author == author and p.params.get("mode", "metadata") == mode
               for p in prompt_rows(ws, anchor_id=anchor_id, origin="interrogator"))


def interrogate_anchors(
    ws,
    anchor_ids: list[int] | None = None,
    *,
    mode: str = DEFAULT_MODE,
    model: str = DEFAULT_INTERROGATOR_CLIP,
    offline_tiny: bool = False,
    device="cpu",
    caption_model: str | None = None,
    banks_dir: str | os.PathLike | None = None,
    top_flavors: int = TOP_FLAVORS,
    progress: bool = True,
    clip: TextImageClip | None = None,
) -> InterrogationReport:
    """Write an interrogator prompt for each anchor not yet interrogated with this CLIP model in this mode.

    ``mode`` is one of :data:`MODES` (see the module's docstring);
    ``top_flavors`` is the metadata recipe's flavour count.
    ``caption_model`` given: BLIP weights must be present (else
    :class:`MissingWeightsError`). Not given: the default BLIP is used when
    its weights are in the cache, and a note says they are missing otherwise
    (never with ``offline_tiny``). The negative mode needs no caption.
    """
    from cpdm.store.images import load_image

    if mode not in MODES:
        raise InterrogationError(f"unknown interrogation mode {mode!r} (one of {', '.join(MODES)})")
    report = InterrogationReport()
    anchors = _anchors(ws, anchor_ids)
    banks = load_banks(banks_dir) if mode == "metadata" else None
    tables = metadata_bank_texts(banks) if banks else interrogator_tables(banks_dir, with_negative=mode == "negative")
    clip = clip or load_interrogator_clip(model, offline_tiny=offline_tiny, device=device)
    todo = [row for row in anchors if not _interrogated(ws, row[0], clip.key, mode)]
    report.skipped = [row[0] for row in anchors if row not in todo]
    if not todo:
        return report
    captioner, caption_name = (None, None) if mode == "negative" else _choose_captioner(
        caption_model, offline_tiny, device, report)
    embeddings = {table: bank_embeddings(ws, clip, table, texts, progress) for table, texts in tables.items()}
    write = _metadata_writer(clip, banks, embeddings, top_flavors) if mode == "metadata" \
        else _package_writer(clip, mode, tables, embeddings)
    for anchor_id, image_sha, title, artist in track(todo, "interrogating", unit="anchor", enabled=progress):
        image = load_image(ws, image_sha)
        caption = captioner(image) if captioner else ""
        text, details = write(image, caption, title, artist)
        if not text:
            report.notes.append(f"anchor {anchor_id}: the {mode} mode chose the empty caption; no prompt written")
            continue
        params = {
            "mode": mode, "clip": clip.key, "clip_model": clip.backbone.name, "caption_model": caption_name,
            "caption": caption or None, "banks": str(banks_dir) if banks_dir else INTERROGATOR_SOURCE, **details,
        }
        report.added.append(add_prompt(ws, anchor_id, text, origin="interrogator", author=clip.key, params=params))
    return report


def _package_writer(clip: TextImageClip, mode: str, tables: dict, embeddings: dict) -> Callable:
    """(image, caption, title, artist) -> (prompt, extra params), by clip-interrogator's ``mode``."""
    interrogator = package_interrogator(clip, tables, embeddings)

    def write(image, caption, title, artist):
        return tidy_prompt(run_package_mode(interrogator, mode, image, caption)), {"algorithm": INTERROGATOR_SOURCE}

    return write


def _metadata_writer(clip: TextImageClip, banks: dict, embeddings: dict, top_flavors: int) -> Callable:
    """(image, caption, title, artist) -> (prompt, extra params), by the metadata recipe."""

    def write(image, caption, title, artist):
        image_embedding = clip.embed_images([image])[0]
        best = {bank: rank_terms(image_embedding, embeddings[bank], banks[bank],
                                 top=top_flavors if bank == "flavors" else 1) for bank in BANKS}
        text = build_recipe(title, artist or best["artists"][0][0], caption, best["mediums"][0][0],
                            best["movements"][0][0], [term for term, _ in best["flavors"]])
        return text, {"terms": {bank: [term for term, _ in ranked] for bank, ranked in best.items()}}

    return write


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
