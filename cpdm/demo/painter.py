"""Procedural paintings for the demo: synthetic artists' styles applied to drawn contents.

Style and content are separate: a *content* (from a ``content_seed``) is a
label map of regions (sky, ground, far shapes, a light, the main subject,
accents) for one of four subjects; a *style* (:class:`ArtistStyle`) turns the
label map into pixels. ``render(content_seed, style)`` can therefore draw the
same content in another style, or other content in the same style. Everything
is deterministic for given seeds. See :mod:`cpdm.demo.build` for the artists
and how the demo's variants use this.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from cpdm.errors import CpdmError

SIZE = 256

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


def seeded_rng(*parts) -> np.random.Generator:
    """A numpy generator seeded by :func:`derive_int` of the parts."""
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
    return SUBJECTS[seeded_rng("subject", content_seed).integers(len(SUBJECTS))]


def make_content(content_seed: int) -> Content:
    """Draw the label map of a content seed: the subject's shapes, placed by the seed."""
    subject = subject_for(content_seed)
    rng = seeded_rng("layout", content_seed)
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
    rng = seeded_rng("texture", style.name, content.seed, texture_seed)
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
