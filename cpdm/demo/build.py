"""The offline demo workspace: synthetic artists, "unlearned" variants, a campaign.

``build_demo(path, seed)`` makes a complete workspace without a network and
without any model. Anchors are drawn procedurally (numpy + PIL, 256x256 PNG)
by four synthetic artists, each with a recognisable style: a palette, a
stroke texture and a composition.

========================  ==========================================  =====================================
artist                    texture                                     composition
========================  ==========================================  =====================================
Mira Dotwell              pointillism: jittered dots on cream canvas  soft fade to the canvas at the edges
Hal Crossley              ink hatching, angle per region, on paper    wide paper margin
Bea Blockmann             flat colour blocks with heavy outlines      thick dark frame
Wen Ripple                wavy brush strokes, warped contours         dark vignette
========================  ==========================================  =====================================

Style and content are separate in the generator: a *content* (from a
``content_seed``) is a label map of regions (sky, ground, far shapes, a light,
the main subject, accents) for one of four subjects (landscape, harbour, town,
still life); a *style* turns the label map into pixels. ``render(content_seed,
style)`` can therefore draw the same content in another style, or other
content in the same style. That is how the demo's variants are made, each one
standing for what an unlearning method would do to the model:

==========  ============================  ============================  ==========================================
variant     content vs the anchor         style vs the anchor           stands for
==========  ============================  ============================  ==========================================
original    same                          same (shift, noise, jitter)   the model before unlearning: a near-copy
esd         same                          another artist's              style erased, subject kept
uce         other                         same                          content changed, style kept
sld         other                         another artist's              unrelated output: nothing left to copy
==========  ============================  ============================  ==========================================

Every variant generates ``GENERATION_SEEDS`` (two seeds) per anchor from one
template prompt per anchor ("a landscape in the style of Mira Dotwell").
Pairs: one ``normal`` pair per generation, and per anchor two attention
checks: ``check_identical`` (the anchor against itself) and
``check_unrelated`` (against a work by another artist with other content).
A campaign named ``demo`` covers every pair (two ratings per pair per role),
and invite links are made for one researcher, two artists and two lay raters.
A second, closed campaign ``demo-simulated`` over the same pairs is rated by
simulated raters (``raters.simulated = 1``), and every pair is scored with the
tiny random-initialised models, so the analysis pages and ``cpdm analyze`` /
``cpdm calibrate --campaign demo-simulated`` have data on a fresh clone.

Everything is deterministic for a given seed: the same seed gives
byte-identical images and the same rows (with the same numpy and Pillow;
another build of them may round a few pixels differently). Invite tokens are derived from the
seed and the rater's name (so documented links stay valid) and, as for any
rater, only their hashes are stored. That makes demo links guessable by
anyone who knows the seed: a demo workspace is for trying cpdm on your own
machine, never for a real study. For convenience the links are also written,
in clear, to ``WORKSPACE/demo_links.txt`` (demo workspaces only).

The build is a sequence of small steps (``add_anchors``, ``add_generations``,
``add_pairs``, ``add_campaign``, ``add_raters``) run on a workspace being
built in a hidden sibling folder, which replaces the target only once every
step has succeeded.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from cpdm.errors import CpdmError
from cpdm.store.workspace import DB_NAME, open_workspace

SIZE = 256
BASE_MODEL = "demo/procedural"
GENERATION_SEEDS = (23, 24)  # 23 is the paper's seed; a second one shows seed-to-seed spread
WORKS_PER_ARTIST = 5
CAMPAIGN_NAME = "demo"
CAMPAIGN_OVERLAP = {"artist": 2, "lay": 2}
SIMULATED_CAMPAIGN_NAME = "demo-simulated"
SIMULATED_OVERLAP = {"artist": 3, "lay": 3}
LINKS_FILE = "demo_links.txt"
DEFAULT_BASE_URL = "http://127.0.0.1:8501"

# Region ids of a content's label map.
SKY, GROUND, FAR, LIGHT, MAIN, ACCENT = range(6)
SUBJECTS = ("landscape", "harbour", "town", "still life")


# --------------------------------------------------------------------------
# Styles
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class ArtistStyle:
    """A synthetic artist: a palette (one colour per region id), a texture, a composition."""

    name: str
    texture: str  # dots, hatching, blocks, waves
    palette: tuple[tuple[int, int, int], ...]  # indexed by region id: sky, ground, far, light, main, accent
    canvas: tuple[int, int, int]  # the ground colour the texture sits on


ARTISTS: tuple[ArtistStyle, ...] = (
    ArtistStyle(
        "Mira Dotwell",
        "dots",
        ((250, 214, 140), (226, 138, 58), (196, 88, 80), (255, 244, 120), (176, 48, 62), (118, 160, 58)),
        (247, 236, 212),
    ),
    ArtistStyle(
        "Hal Crossley",
        "hatching",
        ((88, 108, 150), (72, 82, 58), (58, 68, 112), (160, 122, 56), (36, 36, 58), (112, 58, 48)),
        (244, 239, 226),
    ),
    ArtistStyle(
        "Bea Blockmann",
        "blocks",
        ((40, 92, 206), (250, 202, 24), (232, 42, 42), (255, 255, 255), (20, 150, 82), (244, 122, 20)),
        (24, 24, 30),
    ),
    ArtistStyle(
        "Wen Ripple",
        "waves",
        ((60, 140, 160), (30, 92, 70), (92, 72, 142), (232, 230, 180), (22, 50, 92), (150, 202, 120)),
        (16, 28, 36),
    ),
)


def artist_by_name(name: str) -> ArtistStyle:
    """The demo artist called ``name``, with a clear error naming the known ones."""
    for artist in ARTISTS:
        if artist.name == name:
            return artist
    raise CpdmError(f"no demo artist named {name!r} (known: {', '.join(a.name for a in ARTISTS)})")


# --------------------------------------------------------------------------
# Deterministic randomness
# --------------------------------------------------------------------------


def derive_int(*parts) -> int:
    """A stable 63-bit integer from any printable parts (same parts, same number, on every machine)."""
    digest = hashlib.sha256("\x1f".join(str(part) for part in parts).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") >> 1


def _rng(*parts) -> np.random.Generator:
    return np.random.default_rng(derive_int(*parts))


# --------------------------------------------------------------------------
# Content: a label map drawn from a content seed
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class Content:
    """What a picture shows: a subject and a (SIZE, SIZE) uint8 map of region ids."""

    seed: int
    subject: str
    labels: np.ndarray


def subject_for(content_seed: int) -> str:
    """The subject a content seed draws (decided before anything else, so it can be chosen for)."""
    return SUBJECTS[_rng("subject", content_seed).integers(len(SUBJECTS))]


def make_content(content_seed: int) -> Content:
    """Draw the label map of a content seed: the subject's shapes, placed by the seed."""
    subject = subject_for(content_seed)
    rng = _rng("layout", content_seed)
    canvas = Image.new("L", (SIZE, SIZE), SKY)
    draw = ImageDraw.Draw(canvas)
    {"landscape": _draw_landscape, "harbour": _draw_harbour, "town": _draw_town, "still life": _draw_still_life}[
        subject
    ](draw, rng)
    return Content(content_seed, subject, np.asarray(canvas, dtype=np.uint8).copy())


def _sun(draw: ImageDraw.ImageDraw, rng: np.random.Generator, top: int, bottom: int) -> None:
    radius = int(rng.integers(14, 30))
    x = int(rng.integers(radius + 8, SIZE - radius - 8))
    y = int(rng.integers(top + radius, max(top + radius + 1, bottom - radius)))
    draw.ellipse((x - radius, y - radius, x + radius, y + radius), fill=LIGHT)


def _tree(draw: ImageDraw.ImageDraw, x: int, base: int, height: int) -> None:
    crown = max(8, height // 3)
    draw.rectangle((x - 3, base - height + crown, x + 3, base), fill=MAIN)
    draw.ellipse((x - crown, base - height, x + crown, base - height + 2 * crown), fill=ACCENT)


def _draw_landscape(draw: ImageDraw.ImageDraw, rng: np.random.Generator) -> None:
    horizon = int(rng.integers(int(SIZE * 0.5), int(SIZE * 0.72)))
    _sun(draw, rng, 10, horizon - 40)
    for _ in range(int(rng.integers(1, 4))):
        peak_x = int(rng.integers(20, SIZE - 20))
        peak_y = int(rng.integers(horizon - 110, horizon - 35))
        half = int(rng.integers(50, 110))
        draw.polygon([(peak_x - half, horizon), (peak_x, peak_y), (peak_x + half, horizon)], fill=FAR)
    draw.rectangle((0, horizon, SIZE, SIZE), fill=GROUND)
    for _ in range(int(rng.integers(2, 5))):
        x = int(rng.integers(15, SIZE - 15))
        base = int(rng.integers(horizon + 20, SIZE - 5))
        _tree(draw, x, base, int(rng.integers(40, 80)))


def _draw_harbour(draw: ImageDraw.ImageDraw, rng: np.random.Generator) -> None:
    horizon = int(rng.integers(int(SIZE * 0.42), int(SIZE * 0.6)))
    _sun(draw, rng, 8, horizon - 30)
    hill_x = int(rng.integers(0, SIZE // 2))
    draw.ellipse((hill_x - 90, horizon - 45, hill_x + 120, horizon + 45), fill=FAR)
    draw.rectangle((0, horizon, SIZE, SIZE), fill=GROUND)  # the sea
    for _ in range(int(rng.integers(1, 4))):
        x = int(rng.integers(30, SIZE - 60))
        waterline = int(rng.integers(horizon + 30, SIZE - 15))
        length = int(rng.integers(40, 80))
        draw.polygon(
            [(x, waterline - 14), (x + length, waterline - 14), (x + length - 10, waterline), (x + 10, waterline)],
            fill=MAIN,
        )
        mast = x + length // 2
        draw.polygon([(mast, waterline - 14), (mast, waterline - 14 - length), (mast + length // 2, waterline - 16)],
                     fill=ACCENT)


def _draw_town(draw: ImageDraw.ImageDraw, rng: np.random.Generator) -> None:
    street = int(rng.integers(int(SIZE * 0.75), int(SIZE * 0.88)))
    _sun(draw, rng, 8, 90)
    x = -int(rng.integers(0, 20))
    while x < SIZE:
        width = int(rng.integers(28, 60))
        top = int(rng.integers(40, street - 50))
        region = FAR if rng.random() < 0.4 else MAIN
        draw.rectangle((x, top, x + width - 3, street), fill=region)
        for wy in range(top + 8, street - 12, 18):
            for wx in range(x + 6, x + width - 12, 14):
                if rng.random() < 0.7:
                    draw.rectangle((wx, wy, wx + 6, wy + 8), fill=ACCENT)
        x += width
    draw.rectangle((0, street, SIZE, SIZE), fill=GROUND)


def _draw_still_life(draw: ImageDraw.ImageDraw, rng: np.random.Generator) -> None:
    table = int(rng.integers(int(SIZE * 0.55), int(SIZE * 0.7)))
    window_x = int(rng.integers(10, SIZE - 90))
    draw.rectangle((window_x, 20, window_x + 80, 20 + int(rng.integers(60, 100))), fill=FAR)
    _sun(draw, rng, 24, 70)  # a lamp or the moon in the window
    draw.rectangle((0, table, SIZE, SIZE), fill=GROUND)
    vase_x = int(rng.integers(50, SIZE - 50))
    vase_w = int(rng.integers(24, 40))
    vase_h = int(rng.integers(60, 110))
    draw.ellipse((vase_x - vase_w, table - vase_h // 2, vase_x + vase_w, table + 10), fill=MAIN)
    draw.rectangle((vase_x - vase_w // 3, table - vase_h, vase_x + vase_w // 3, table - vase_h // 3), fill=MAIN)
    for _ in range(int(rng.integers(2, 6))):
        radius = int(rng.integers(9, 18))
        fx = int(rng.integers(radius, SIZE - radius))
        fy = int(rng.integers(table + radius, SIZE - radius))
        draw.ellipse((fx - radius, fy - radius, fx + radius, fy + radius), fill=ACCENT)


# --------------------------------------------------------------------------
# Rendering: a style turns a label map into pixels
# --------------------------------------------------------------------------

_Y, _X = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32)


def render(content_seed: int, style: ArtistStyle, texture_seed: int = 0) -> Image.Image:
    """Draw the content of ``content_seed`` in ``style`` (texture randomness from ``texture_seed``)."""
    return render_content(make_content(content_seed), style, texture_seed)


def render_content(content: Content, style: ArtistStyle, texture_seed: int = 0) -> Image.Image:
    """Draw an already-made content in a style; returns a SIZE x SIZE RGB image."""
    rng = _rng("texture", style.name, content.seed, texture_seed)
    painter = {"dots": _paint_dots, "hatching": _paint_hatching, "blocks": _paint_blocks, "waves": _paint_waves}
    pixels = painter[style.texture](content.labels, style, rng)
    return Image.fromarray(np.clip(np.rint(pixels), 0, 255).astype(np.uint8), "RGB")


def _palette(style: ArtistStyle) -> np.ndarray:
    return np.asarray(style.palette, dtype=np.float32)


def _boundaries(labels: np.ndarray, width: int = 1) -> np.ndarray:
    """True where a pixel's region differs from a neighbour's within ``width`` pixels."""
    edge = np.zeros(labels.shape, dtype=bool)
    for shift in range(1, width + 1):
        edge[:-shift, :] |= labels[:-shift, :] != labels[shift:, :]
        edge[:, :-shift] |= labels[:, :-shift] != labels[:, shift:]
        edge[shift:, :] |= labels[shift:, :] != labels[:-shift, :]
        edge[:, shift:] |= labels[:, shift:] != labels[:, :-shift]
    return edge


def _edge_distance() -> np.ndarray:
    """Distance of each pixel from the nearest image border, in pixels."""
    return np.minimum(np.minimum(_X, SIZE - 1 - _X), np.minimum(_Y, SIZE - 1 - _Y))


def _paint_dots(labels: np.ndarray, style: ArtistStyle, rng: np.random.Generator) -> np.ndarray:
    """Pointillism: two offset grids of jittered round dots over a cream canvas."""
    palette = _palette(style)
    out = np.empty((SIZE, SIZE, 3), dtype=np.float32)
    out[:] = style.canvas
    spacing = 6
    for offset in (0, spacing // 2):
        cells = SIZE // spacing + 2
        centre_y = (np.arange(cells) * spacing - offset)[:, None] + rng.uniform(-1.5, 1.5, (cells, cells))
        centre_x = (np.arange(cells) * spacing - offset)[None, :] + rng.uniform(-1.5, 1.5, (cells, cells))
        radius = rng.uniform(2.6, 3.6, (cells, cells))
        cy = np.clip(np.rint(centre_y), 0, SIZE - 1).astype(int)
        cx = np.clip(np.rint(centre_x), 0, SIZE - 1).astype(int)
        colour = palette[labels[cy, cx]] + 14 * rng.standard_normal((cells, cells, 3), dtype=np.float32)
        # Each pixel belongs to the dot of its own grid cell (radius < spacing, so no dot reaches past its cell's neighbours).
        iy = np.clip(((_Y + offset) // spacing).astype(int), 0, cells - 1)
        ix = np.clip(((_X + offset) // spacing).astype(int), 0, cells - 1)
        inside = (_Y - centre_y[iy, ix]) ** 2 + (_X - centre_x[iy, ix]) ** 2 <= radius[iy, ix] ** 2
        out[inside] = colour[iy, ix][inside]
    fade = np.clip(_edge_distance() / 20.0, 0, 1)[..., None]  # the dots thin out into the canvas at the edges
    return out * fade + np.asarray(style.canvas, dtype=np.float32) * (1 - fade)


def _paint_hatching(labels: np.ndarray, style: ArtistStyle, rng: np.random.Generator) -> np.ndarray:
    """Ink hatching on paper: parallel lines per region (crossed in dark ones), a light wash, outlines."""
    palette = _palette(style)
    paper = np.asarray(style.canvas, dtype=np.float32)
    angle_of_region = np.deg2rad(np.array([0.0, 45.0, 135.0, 90.0, 45.0, 135.0], dtype=np.float32))
    wobble = (0.09 * rng.standard_normal(SIZE, dtype=np.float32)).cumsum()[:, None]  # a hand-drawn drift along the lines
    angle = angle_of_region[labels]
    phase = (_X * np.cos(angle) + _Y * np.sin(angle) + wobble) % 5.0
    line = phase < 1.8
    dark = np.isin(labels, (FAR, MAIN))
    cross = ((_X * np.cos(angle + np.pi / 2) + _Y * np.sin(angle + np.pi / 2) + wobble) % 6.0) < 1.4
    ink = np.where(line | (dark & cross), 0.85, 0.16)[..., None]
    ink = np.where(_boundaries(labels)[..., None], 0.95, ink)
    out = paper * (1 - ink) + palette[labels] * ink
    out += 3.0 * rng.standard_normal(out.shape, dtype=np.float32)  # paper grain
    margin = _edge_distance() < 14
    out[margin] = paper
    return out


def _paint_blocks(labels: np.ndarray, style: ArtistStyle, rng: np.random.Generator) -> np.ndarray:
    """Flat colour blocks: coarse 8-pixel cells, a tone per cell, heavy outlines, a thick frame."""
    palette = _palette(style)
    block = 8
    coarse = labels[block // 2 :: block, block // 2 :: block]
    blocky = np.repeat(np.repeat(coarse, block, axis=0), block, axis=1)[:SIZE, :SIZE]
    tone = rng.uniform(-10, 10, coarse.shape)
    tone = np.repeat(np.repeat(tone, block, axis=0), block, axis=1)[:SIZE, :SIZE]
    out = palette[blocky] + tone[..., None]
    outline = _boundaries(blocky, width=2)
    out[outline] = style.canvas
    out[_edge_distance() < 10] = style.canvas
    return out


def _paint_waves(labels: np.ndarray, style: ArtistStyle, rng: np.random.Generator) -> np.ndarray:
    """Wavy brush strokes: contours warped by sines, streaked strokes that follow the waves, a dark vignette."""
    palette = _palette(style)
    phase = rng.uniform(0, 2 * np.pi, 4)
    warp_y = _Y + 3.5 * np.sin(2 * np.pi * _X / 53.0 + phase[0])
    warp_x = _X + 3.5 * np.sin(2 * np.pi * _Y / 45.0 + phase[1])
    sampled = labels[np.clip(np.rint(warp_y), 0, SIZE - 1).astype(int), np.clip(np.rint(warp_x), 0, SIZE - 1).astype(int)]
    stroke_line = _Y + 6.0 * np.sin(2 * np.pi * _X / 61.0 + phase[2])
    streak = np.sin(2 * np.pi * stroke_line / 7.0 + rng.normal(0, 0.5, (SIZE, 1)))
    bristle = (0.008 * rng.standard_normal((SIZE, SIZE), dtype=np.float32)).cumsum(axis=1)  # bristle marks along each stroke
    shade = 1.0 + 0.16 * streak + np.clip(bristle, -0.12, 0.12)
    out = palette[sampled] * shade[..., None]
    radius = np.hypot(_X - SIZE / 2, _Y - SIZE / 2) / (SIZE / 2)
    vignette = np.clip(1.25 - 0.55 * radius**2, 0.35, 1.0)[..., None]
    return out * vignette + np.asarray(style.canvas, dtype=np.float32) * (1 - vignette)


def perturb(image: Image.Image, rng: np.random.Generator) -> tuple[Image.Image, dict]:
    """A near-copy: shift by a few pixels (edges repeated), add noise, jitter each colour channel."""
    pixels = np.asarray(image, dtype=np.float32)
    dy, dx = (int(v) for v in rng.integers(-3, 4, 2))
    if dy == 0 and dx == 0:
        dx = 2
    padded = np.pad(pixels, ((4, 4), (4, 4), (0, 0)), mode="edge")
    shifted = padded[4 - dy : 4 - dy + SIZE, 4 - dx : 4 - dx + SIZE]
    gain = rng.uniform(0.94, 1.06, 3)
    noise_sigma = 5.0
    out = shifted * gain.astype(np.float32) + noise_sigma * rng.standard_normal(shifted.shape, dtype=np.float32)
    params = {"shift": [dx, dy], "gain": [round(float(g), 4) for g in gain], "noise_sigma": noise_sigma}
    return Image.fromarray(np.clip(np.rint(out), 0, 255).astype(np.uint8), "RGB"), params


# --------------------------------------------------------------------------
# The variants and what they keep of the anchor
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class VariantRelation:
    """How a demo variant's generations relate to their anchor."""

    name: str
    method: str
    concept: str
    content: str  # "same" or "other"
    style: str  # "same" or "other"
    stands_for: str


VARIANTS: tuple[VariantRelation, ...] = (
    VariantRelation("original", "original", "", "same", "same", "the model before unlearning: a near-copy"),
    VariantRelation("esd", "esd", "each demo artist's style", "same", "other", "style erased, subject kept"),
    VariantRelation("uce", "uce", "each demo artist's subjects", "other", "same", "content changed, style kept"),
    VariantRelation("sld", "sld", "each demo artist", "other", "other", "unrelated output: nothing left to copy"),
)


# --------------------------------------------------------------------------
# What a build returns
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class DemoLink:
    """One invite link of the demo: who it is for, and the URL to open."""

    role: str
    name: str
    url: str
    token: str


@dataclass
class DemoInfo:
    """A summary of a built demo workspace."""

    workspace: Path
    seed: int
    artists: list[str]
    anchors: int
    generations: int
    pairs: dict[str, int]  # kind -> count
    campaign_id: int
    campaign_name: str
    relations: dict[str, VariantRelation]
    links: list[DemoLink] = field(default_factory=list)

    @property
    def researcher_link(self) -> DemoLink:
        return next(link for link in self.links if link.role == "researcher")

    @property
    def rater_links(self) -> list[DemoLink]:
        return [link for link in self.links if link.role != "researcher"]


# The people the demo invites: (role, name), in the order links are listed.
DEMO_PEOPLE: tuple[tuple[str, str], ...] = (
    ("researcher", "Demo researcher"),
    ("artist", "Demo artist 1"),
    ("artist", "Demo artist 2"),
    ("lay", "Demo lay rater 1"),
    ("lay", "Demo lay rater 2"),
)


def demo_token(seed: int, name: str) -> str:
    """The invite token of a demo rater: derived from the seed and name, so links stay the same across rebuilds."""
    digest = hashlib.sha256(f"cpdm-demo-token\x1f{seed}\x1f{name}".encode("utf-8")).digest()
    return base64.urlsafe_b64encode(digest).decode("ascii").rstrip("=")


def demo_links(seed: int, base_url: str = DEFAULT_BASE_URL) -> list[DemoLink]:
    """The demo's invite links for a server at ``base_url`` (recomputed from the seed, nothing read)."""
    from cpdm.rating.auth import invite_url

    links = []
    for role, name in DEMO_PEOPLE:
        token = demo_token(seed, name)
        links.append(DemoLink(role, name, invite_url(token, base_url), token))
    return links


def base_url_for(host: str, port: int) -> str:
    """The URL a browser on this machine uses for a server bound to ``host:port``."""
    if host in ("0.0.0.0", "::", ""):
        host = "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}"


# --------------------------------------------------------------------------
# Build steps
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class DemoAnchor:
    """An anchor as the build knows it: its row id, artist, content and image."""

    id: int
    artist: ArtistStyle
    content_seed: int
    subject: str
    image: str


def _json(value) -> str:
    return json.dumps(value, sort_keys=True)


def add_anchors(ws, seed: int) -> list[DemoAnchor]:
    """Step 1: draw WORKS_PER_ARTIST works for each artist and store them as anchors."""
    anchors = []
    with ws.transaction() as conn:
        for artist_index, artist in enumerate(ARTISTS):
            for work in range(1, WORKS_PER_ARTIST + 1):
                content_seed = derive_int("anchor-content", seed, artist.name, work)
                content = make_content(content_seed)
                image = render_content(content, artist, texture_seed=derive_int("anchor-texture", seed, artist.name, work))
                info = _store(ws, image, f"{artist.name} work {work}")
                anchor_id = conn.execute(
                    "INSERT INTO anchors (image, artist, title, category, source, license) VALUES (?, ?, ?, ?, ?, ?)",
                    (
                        info.sha256,
                        artist.name,
                        f"{content.subject.capitalize()} no. {work}",
                        "style",
                        f"{BASE_MODEL} seed {seed}",
                        "CC0 (synthetic demo image)",
                    ),
                ).lastrowid
                anchors.append(DemoAnchor(anchor_id, artist, content_seed, content.subject, info.sha256))
    return anchors


def _store(ws, image: Image.Image, name: str):
    """Store a demo image as PNG; zlib level 1 because the textured images barely compress further."""
    import io

    from cpdm.store.images import store_image_bytes

    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, format="PNG", compress_level=1)
    return store_image_bytes(ws, buffer.getvalue(), name)


def _other_artist(artist: ArtistStyle, rng: np.random.Generator) -> ArtistStyle:
    others = [a for a in ARTISTS if a.name != artist.name]
    return others[int(rng.integers(len(others)))]


def _other_content_seed(subject: str, *parts) -> int:
    """A content seed whose subject differs from ``subject`` (so "other content" is plainly other)."""
    for attempt in range(100):
        candidate = derive_int("other-content", attempt, *parts)
        if subject_for(candidate) != subject:
            return candidate
    raise AssertionError("no content seed with another subject found in 100 tries")  # 4 subjects: unreachable


def generate_variant_image(
    anchor: DemoAnchor, anchor_image: Image.Image, variant: VariantRelation, demo_seed: int, gen_seed: int
) -> tuple[Image.Image, dict]:
    """What ``variant`` "generates" for ``anchor`` at ``gen_seed``: the image and the params that made it."""
    rng = _rng("generation", demo_seed, anchor.id, variant.name, gen_seed)
    if variant.content == "same" and variant.style == "same":
        # The near-copy perturbs the anchor's own pixels, as a memorising model would reproduce them.
        image, params = perturb(anchor_image, rng)
        return image, {"content_seed": anchor.content_seed, "style": anchor.artist.name, "perturbation": params}
    style = anchor.artist if variant.style == "same" else _other_artist(anchor.artist, rng)
    if variant.content == "same":
        content_seed = anchor.content_seed
    else:
        content_seed = _other_content_seed(anchor.subject, demo_seed, anchor.id, variant.name, gen_seed)
    texture_seed = derive_int("generation-texture", demo_seed, anchor.id, variant.name, gen_seed)
    image = render(content_seed, style, texture_seed)
    return image, {"content_seed": content_seed, "style": style.name, "texture_seed": texture_seed}


def prompt_text(anchor: DemoAnchor) -> str:
    """The template prompt of an anchor: its subject in its artist's style."""
    return f"a {anchor.subject} in the style of {anchor.artist.name}"


def add_variants(ws) -> dict[str, int]:
    """Step 2a: one variants row per demo variant; returns name -> id."""
    ids = {}
    with ws.transaction() as conn:
        for variant in VARIANTS:
            params = {"content": variant.content, "style": variant.style, "stands_for": variant.stands_for}
            ids[variant.name] = conn.execute(
                "INSERT INTO variants (name, base_model, method, concept, params) VALUES (?, ?, ?, ?, ?)",
                (variant.name, BASE_MODEL, variant.method, variant.concept or None, _json(params)),
            ).lastrowid
    return ids


def add_generations(ws, seed: int, anchors: list[DemoAnchor], variant_ids: dict[str, int]) -> list[int]:
    """Step 2b: a template prompt per anchor, and GENERATION_SEEDS generations of it per variant."""
    from cpdm.store.images import load_image

    generation_ids = []
    with ws.transaction() as conn:
        for anchor in anchors:
            prompt_id = conn.execute(
                "INSERT INTO prompts (anchor, text, origin, params) VALUES (?, ?, 'template', ?)",
                (anchor.id, prompt_text(anchor), _json({"template": "a {subject} in the style of {artist}"})),
            ).lastrowid
            anchor_image = load_image(ws, anchor.image)
            for variant in VARIANTS:
                for gen_seed in GENERATION_SEEDS:
                    image, params = generate_variant_image(anchor, anchor_image, variant, seed, gen_seed)
                    info = _store(ws, image, f"{variant.name} generation of anchor {anchor.id}")
                    generation_ids.append(
                        conn.execute(
                            "INSERT INTO generations (prompt, variant, seed, image, params) VALUES (?, ?, ?, ?, ?)",
                            (prompt_id, variant_ids[variant.name], gen_seed, info.sha256, _json(params)),
                        ).lastrowid
                    )
    return generation_ids


def add_pairs(ws, anchors: list[DemoAnchor]) -> list[int]:
    """Step 3: a normal pair per generation, and an identical and an unrelated check per anchor."""
    pair_ids = []
    with ws.transaction() as conn:
        rows = conn.execute(
            "SELECT p.anchor, g.id, g.image FROM generations g JOIN prompts p ON p.id = g.prompt ORDER BY g.id"
        ).fetchall()
        for anchor_id, generation_id, image in rows:
            pair_ids.append(
                conn.execute(
                    "INSERT INTO pairs (anchor, generation, image, kind) VALUES (?, ?, ?, 'normal')",
                    (anchor_id, generation_id, image),
                ).lastrowid
            )
        for anchor in anchors:
            pair_ids.append(
                conn.execute(
                    "INSERT INTO pairs (anchor, generation, image, kind) VALUES (?, NULL, ?, 'check_identical')",
                    (anchor.id, anchor.image),
                ).lastrowid
            )
            unrelated = _unrelated_anchor(anchor, anchors)
            pair_ids.append(
                conn.execute(
                    "INSERT INTO pairs (anchor, generation, image, kind) VALUES (?, NULL, ?, 'check_unrelated')",
                    (anchor.id, unrelated.image),
                ).lastrowid
            )
    return pair_ids


def _unrelated_anchor(anchor: DemoAnchor, anchors: list[DemoAnchor]) -> DemoAnchor:
    """A work by another artist, preferably of another subject, chosen deterministically."""
    others = [a for a in anchors if a.artist.name != anchor.artist.name]
    other_subject = [a for a in others if a.subject != anchor.subject]
    candidates = other_subject or others
    return candidates[derive_int("unrelated", anchor.id) % len(candidates)]


def add_campaign(ws, pair_ids: list[int]) -> int:
    """Step 4: the campaign ``demo`` over every pair, default protocol, two ratings per pair per role."""
    from cpdm.rating.campaigns import create_campaign

    return create_campaign(ws, CAMPAIGN_NAME, pair_ids, overlap=dict(CAMPAIGN_OVERLAP))


def add_simulated_campaign(ws, pair_ids: list[int], seed: int) -> int:
    """Step 6: the closed campaign ``demo-simulated``, fully rated by simulated raters.

    It holds the same pairs as ``demo`` but is closed, so the live demo
    raters never get its pairs and still have the whole ``demo`` campaign to
    rate. Simulated answers follow each variant's known relation to its
    anchor (they are made before any score exists), so the analysis pages
    compare the metric with judgements it did not produce.
    """
    from cpdm.rating.campaigns import create_campaign, set_campaign_status
    from cpdm.demo.simulate import add_simulated_ratings

    campaign_id = create_campaign(ws, SIMULATED_CAMPAIGN_NAME, pair_ids, overlap=dict(SIMULATED_OVERLAP))
    set_campaign_status(ws, campaign_id, "closed")
    add_simulated_ratings(ws, campaign_id, seed=seed, n_artists=SIMULATED_OVERLAP["artist"] + 1,
                          n_lay=SIMULATED_OVERLAP["lay"] + 1)
    return campaign_id


def add_tiny_scores(ws) -> None:
    """Step 7: score every pair with the tiny random-initialised models (``tiny:`` backbones).

    Their numbers only show the pipeline working; real studies score with
    real weights (``cpdm score``).
    """
    from cpdm.scoring.engine import score_pairs

    score_pairs(ws, offline_tiny=True, progress=False, precision="fp32")  # the same scores on every machine


def add_raters(ws, seed: int, base_url: str = DEFAULT_BASE_URL) -> list[DemoLink]:
    """Step 5: invite the demo people (tokens derived from the seed); returns their links."""
    from cpdm.rating.auth import create_rater

    links = demo_links(seed, base_url)
    for link in links:
        create_rater(ws, link.name, link.role, token=link.token)
    return links


def write_links_file(root: Path, seed: int, links: list[DemoLink]) -> Path:
    """Write the demo's links, in clear, to ``root/demo_links.txt`` (tab-separated role, name, URL)."""
    lines = [
        f"# cpdm demo workspace (seed {seed}): invite links. Demo only: these tokens follow from the seed.",
        "# role\tname\turl",
    ]
    lines += [f"{link.role}\t{link.name}\t{link.url}" for link in links]
    path = Path(root) / LINKS_FILE
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


# --------------------------------------------------------------------------
# Building, refusing, replacing
# --------------------------------------------------------------------------

# What a workspace folder holds; --force removes these and nothing else.
_WORKSPACE_ENTRIES = (DB_NAME, f"{DB_NAME}-wal", f"{DB_NAME}-shm", "images", "exports", LINKS_FILE)


def existing_demo_seed(path: Path) -> str | None:
    """The seed of the demo workspace at ``path``, or None if there is nothing there.

    Raises CpdmError when ``path`` holds something the demo must never
    overwrite: a real (non-demo) workspace, or a non-empty folder that is not
    a workspace.
    """
    path = Path(path)
    if not path.exists():
        return None
    if not path.is_dir():
        raise CpdmError(f"{path} is a file, not a folder; choose another --workspace for the demo")
    if not (path / DB_NAME).exists():
        if any(path.iterdir()):
            raise CpdmError(f"{path} is not empty and holds no cpdm workspace; choose an empty or new folder for the demo")
        return None
    with open_workspace(path) as ws:
        if not ws.is_demo:
            raise CpdmError(
                f"{path} holds a real workspace, not a demo; the demo never overwrites one (choose another --workspace)"
            )
        return ws.get_meta("demo_seed", "?")


def _remove_workspace_entries(path: Path) -> None:
    for name in _WORKSPACE_ENTRIES:
        entry = path / name
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        elif entry.exists() or entry.is_symlink():
            entry.unlink()


def build_demo(
    ws_path, seed: int = 0, *, force: bool = False, base_url: str = DEFAULT_BASE_URL, analysis_data: bool = True
) -> DemoInfo:
    """Build the demo workspace at ``ws_path`` (see the module docstring for what it holds).

    ``analysis_data=False`` leaves out the simulated ratings and the
    tiny-model scores (a faster build when only the rating app is wanted).

    An existing demo there is refused unless ``force`` (then it is replaced);
    a real workspace or a non-empty foreign folder is always refused. The
    workspace is built in a hidden sibling folder and moved into place only
    when complete, so a failed build leaves the target as it was.
    """
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise CpdmError(f"demo seed must be a non-negative integer, got {seed!r}")
    target = Path(ws_path).absolute()
    previous_seed = existing_demo_seed(target)
    if previous_seed is not None and not force:
        raise CpdmError(
            f"a demo workspace already exists at {target} (seed {previous_seed}); use --force to rebuild it"
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.building-", dir=target.parent))
    try:
        info = _build_into(staging, seed, base_url, analysis_data)
        _move_into_place(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)  # gone already after a successful move
    info.workspace = target
    return info


def _build_into(root: Path, seed: int, base_url: str, analysis_data: bool = True) -> DemoInfo:
    """Run every build step on a fresh workspace at ``root`` and close it cleanly."""
    ws = open_workspace(root, create=True)
    try:
        ws.set_meta("demo", "1")
        ws.set_meta("demo_seed", str(seed))
        anchors = add_anchors(ws, seed)
        variant_ids = add_variants(ws)
        generation_ids = add_generations(ws, seed, anchors, variant_ids)
        pair_ids = add_pairs(ws, anchors)
        campaign_id = add_campaign(ws, pair_ids)
        links = add_raters(ws, seed, base_url)
        if analysis_data:
            add_simulated_campaign(ws, pair_ids, seed)
            add_tiny_scores(ws)
        pair_counts = dict(ws.conn.execute("SELECT kind, COUNT(*) FROM pairs GROUP BY kind ORDER BY kind").fetchall())
        ws.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # everything in cpdm.db before the folder moves
    finally:
        ws.close()
    write_links_file(root, seed, links)
    return DemoInfo(
        workspace=root,
        seed=seed,
        artists=[artist.name for artist in ARTISTS],
        anchors=len(anchors),
        generations=len(generation_ids),
        pairs=pair_counts,
        campaign_id=campaign_id,
        campaign_name=CAMPAIGN_NAME,
        relations={variant.name: variant for variant in VARIANTS},
        links=links,
    )


def _move_into_place(staging: Path, target: Path) -> None:
    """Replace the target's workspace entries with the staged ones (other files in the folder stay)."""
    if not target.exists():
        os.replace(staging, target)
        return
    _remove_workspace_entries(target)
    for entry in sorted(staging.iterdir()):
        os.replace(entry, target / entry.name)
