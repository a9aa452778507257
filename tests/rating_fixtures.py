"""Small rating workspaces for tests: anchors, generations, pairs and a campaign.

Images are tiny generated PNGs with distinct colours, so every anchor and
generation has its own hash.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from cpdm.errors import CpdmError
from cpdm.rating.campaigns import create_campaign
from cpdm.store.images import store_pil_image
from cpdm.store.rows import GenerationRow, add_anchor, add_generations, add_prompt, add_variant, get_variant, make_pairs

ARTISTS = ("Ada Painter", "Bo Etcher", "Cy Drawer")
CATEGORIES = ("style", "character", "portrait")


@dataclass
class RatingWorld:
    anchors: list[int]
    pairs: list[int]  # normal pairs
    campaign: int | None


def tiny_image(seed: int, size: int | tuple[int, int] = 48) -> Image.Image:
    """A small picture (a colour gradient with a few shapes) that depends on the seed; ``size`` is a side
    (square) or (width, height)."""
    width, height = (size, size) if isinstance(size, int) else size
    rng = np.random.default_rng(seed)
    top, bottom = rng.integers(0, 256, size=(2, 3))
    ramp = np.linspace(0, 1, height)[:, None, None]
    pixels = (top * (1 - ramp) + bottom * ramp).repeat(width, axis=1).astype(np.uint8)
    image = Image.fromarray(pixels)
    draw = ImageDraw.Draw(image)
    side = min(width, height)
    for _ in range(3):
        x, y = rng.integers(0, width), rng.integers(0, height)
        r = int(rng.integers(side // 10, side // 4 + 1))
        draw.ellipse((x - r, y - r, x + r, y + r), fill=tuple(int(v) for v in rng.integers(0, 256, size=3)))
    return image


def variant_id(ws, name: str, base_model: str = "tiny-sd") -> int:
    """The id of the variant called ``name``, added (with method ``name``) if missing."""
    try:
        return get_variant(ws, name).id
    except CpdmError:
        return add_variant(ws, name, base_model=base_model, method=name)


def add_pairs(ws, n_anchors: int = 3, gens_per_anchor: int = 2, variants=("original", "esd"),
              image_size: int | tuple[int, int] = 48,
              generation_size: int | tuple[int, int] | None = None) -> tuple[list, list]:
    """Anchors with generations from each variant, and one normal pair per generation (generations are
    ``image_size`` too unless ``generation_size`` is given)."""
    variant_ids = [variant_id(ws, name) for name in variants]
    anchors, pairs = [], []
    seed = 1000 * (1 + ws.conn.execute("SELECT COUNT(*) FROM images").fetchone()[0])
    for a in range(n_anchors):
        anchor_image = store_pil_image(ws, tiny_image(seed := seed + 1, image_size)).sha256
        anchor_id = add_anchor(ws, anchor_image, artist=ARTISTS[a % len(ARTISTS)], title=f"Work {a}",
                               category=CATEGORIES[a % len(CATEGORIES)])
        anchors.append(anchor_id)
        prompt = add_prompt(ws, anchor_id, f"a painting {a}", origin="manual")
        rows = []
        for g in range(gens_per_anchor):
            image = store_pil_image(ws, tiny_image(seed := seed + 1, generation_size or image_size)).sha256
            rows.append(GenerationRow(prompt, variant_ids[g % len(variant_ids)], g, None, None, image))
        pairs += make_pairs(ws, add_generations(ws, rows))
    return anchors, pairs


def rating_only(protocol_text: str) -> str:
    """A protocol's text without its background questionnaire (its ``[[background]]`` tables come last)."""
    return protocol_text.split("[[background]]", 1)[0]


def default_protocol_text(*, background: bool = True) -> str:
    """The shipped default protocol, with or without its background questionnaire."""
    from cpdm.rating.protocol import default_protocol_path

    text = default_protocol_path().read_text(encoding="utf-8")
    return text if background else rating_only(text)


def make_world(ws, n_anchors=3, gens_per_anchor=2, *, overlap=None, include_checks=False,
               protocol_text=None, name="study", image_size=48, generation_size=None) -> RatingWorld:
    """A workspace with pairs and one open campaign over all of them.

    The campaign's protocol is by default the shipped one without its
    background questionnaire, so raters go straight from consent to rating;
    tests of the questionnaire pass ``default_protocol_text()``.
    """
    anchors, pairs = add_pairs(ws, n_anchors, gens_per_anchor, image_size=image_size, generation_size=generation_size)
    if protocol_text is None:
        protocol_text = default_protocol_text(background=False)
    campaign = create_campaign(
        ws, name, pairs, overlap=overlap, include_checks=include_checks, protocol_text=protocol_text
    )
    return RatingWorld(anchors, pairs, campaign)


def protocol_with(**timing_and_checks) -> str:
    """The default protocol (without its background questionnaire) with some [timing] / [attention_checks]
    values replaced."""
    text = default_protocol_text(background=False)
    for key, value in timing_and_checks.items():
        lines = text.splitlines()
        for i, line in enumerate(lines):
            if line.startswith(f"{key} ="):
                lines[i] = f"{key} = {value}"
                break
        else:
            raise KeyError(key)
        text = "\n".join(lines) + "\n"
    return text


ANSWERS = {"content": 3, "style": 4, "copy": 2}
