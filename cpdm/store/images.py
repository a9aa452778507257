"""Safe image ingest: check the format, bound the size, hash, store once.

Every image in a workspace is stored once, under ``images/<aa>/<sha256>.<ext>``
where ``<aa>`` is the first two hex digits of the file's sha256. Files are
checked before anything is written: the bytes must decode fully as PNG, JPEG
or WebP, and the pixel count must stay under ``MAX_PIXELS`` (a decompression
bomb is refused before it is decoded).
"""

from __future__ import annotations

import base64
import hashlib
import io
import os
import re
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageOps

from cpdm.errors import CpdmError

# 64 megapixels: far above any anchor or Stable Diffusion output (512-1024 px
# a side), far below what would exhaust memory when decoded.
MAX_PIXELS = 64_000_000
MAX_BYTES = 100 * 1024 * 1024
ALLOWED_FORMATS = {"PNG": "png", "JPEG": "jpg", "WEBP": "webp"}
# Pillow reads phone and camera JPEGs that carry a second (preview) picture as
# "MPO"; they are JPEG files, stored and reported as such.
FORMAT_ALIASES = {"MPO": "JPEG"}
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp"}


class ImageError(CpdmError):
    """A file that is not an acceptable image; the message names the file."""


@dataclass(frozen=True)
class ImageInfo:
    """What we know about a checked image, before or after it is stored."""

    sha256: str
    width: int
    height: int
    format: str  # PNG, JPEG or WEBP
    bytes: int

    @property
    def suffix(self) -> str:
        return ALLOWED_FORMATS[self.format]


def check_image_bytes(data: bytes, name: str = "image") -> ImageInfo:
    """Validate raw image bytes and describe them, or raise ImageError naming ``name``.

    Refuses: empty files, files over MAX_BYTES, formats other than PNG/JPEG/
    WebP, images over MAX_PIXELS (checked from the header, before decoding)
    and truncated or corrupt files (the whole image is decoded).
    """
    if len(data) == 0:
        raise ImageError(f"{name}: empty file (0 bytes)")
    if len(data) > MAX_BYTES:
        raise ImageError(f"{name}: file is {len(data) / 2**20:.0f} MiB, above the {MAX_BYTES // 2**20} MiB limit")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as img:
                fmt = FORMAT_ALIASES.get(img.format, img.format)
                width, height = _upright_size(img)
                if fmt not in ALLOWED_FORMATS:
                    raise ImageError(f"{name}: unsupported image format {fmt} (use PNG, JPEG or WebP)")
                if width * height > MAX_PIXELS:
                    raise ImageError(_too_many_pixels(name, f"{width}x{height} pixels"))
                img.load()  # decodes every byte: catches truncation and corruption
            if fmt == "PNG":
                # Decoding stops once the pixels are read; verify() also checks
                # every chunk's CRC and that the file reaches its IEND chunk.
                with Image.open(io.BytesIO(data)) as img:
                    img.verify()
    except ImageError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        # Pillow refuses before decoding; its message carries the claimed pixel count.
        claimed = re.search(r"\((\d+) pixels\)", str(exc))
        size = f"{int(claimed.group(1)):,} pixels" if claimed else "image size"
        raise ImageError(_too_many_pixels(name, size)) from exc
    except Image.UnidentifiedImageError as exc:
        raise ImageError(f"{name}: not an image (or a format cpdm does not read)") from exc
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise ImageError(f"{name}: corrupt or truncated image ({exc})") from exc
    return ImageInfo(hashlib.sha256(data).hexdigest(), width, height, fmt, len(data))


# EXIF orientations 5-8 rotate the picture by 90 degrees: width and height swap.
_QUARTER_TURN_ORIENTATIONS = {5, 6, 7, 8}
_EXIF_ORIENTATION_TAG = 0x0112


def _upright_size(img: Image.Image) -> tuple[int, int]:
    """(width, height) as the picture is meant to be seen, after its EXIF orientation."""
    width, height = img.size
    try:
        orientation = img.getexif().get(_EXIF_ORIENTATION_TAG, 1)
    except Exception:  # a broken EXIF block does not make the pixels unusable
        orientation = 1
    return (height, width) if orientation in _QUARTER_TURN_ORIENTATIONS else (width, height)


def read_image_file(path: str | os.PathLike, name: str | None = None) -> tuple[bytes, ImageInfo]:
    """Read and check an image file; its size is checked before it is read into memory.

    ``name`` is how errors refer to the file (default: the path as given).
    """
    path = Path(path)
    name = name or str(path)
    try:
        size = path.stat().st_size
        if size > MAX_BYTES:
            raise ImageError(f"{name}: file is {size / 2**20:.0f} MiB, above the {MAX_BYTES // 2**20} MiB limit")
        data = path.read_bytes()
    except IsADirectoryError as exc:
        raise ImageError(f"{name}: is a folder, not an image file") from exc
    except FileNotFoundError as exc:
        raise ImageError(f"{name}: no such file") from exc
    except OSError as exc:
        raise ImageError(f"{name}: cannot read ({exc.strerror or exc})") from exc
    return data, check_image_bytes(data, name)


def _too_many_pixels(name: str, size: str) -> str:
    return f"{name}: {size} is above the limit of {MAX_PIXELS:,} pixels (possible decompression bomb)"


def relative_image_path(info: ImageInfo) -> str:
    """Where an image lives inside the workspace (content-addressed)."""
    return f"images/{info.sha256[:2]}/{info.sha256}.{info.suffix}"


def write_image_file(root: Path, info: ImageInfo, data: bytes) -> Path:
    """Write the bytes to their content-addressed place atomically (no-op if present)."""
    target = Path(root) / relative_image_path(info)
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".incoming-")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target


def insert_image_row(conn, info: ImageInfo) -> bool:
    """Record an image in the ``images`` table; returns False if it was already there."""
    cursor = conn.execute(
        "INSERT INTO images (sha256, path, width, height, format, bytes) VALUES (?, ?, ?, ?, ?, ?) "
        "ON CONFLICT(sha256) DO NOTHING",
        (info.sha256, relative_image_path(info), info.width, info.height, info.format, info.bytes),
    )
    return cursor.rowcount == 1


def remove_unrecorded(ws, files: list[Path]) -> None:
    """Delete those of ``files`` (in the image store) that no ``images`` row points at: after a failed import."""
    for path in files:
        if ws.conn.execute("SELECT 1 FROM images WHERE sha256 = ?", (Path(path).stem,)).fetchone() is None:
            Path(path).unlink(missing_ok=True)


def encode_png(image: Image.Image) -> bytes:
    """PNG bytes of a PIL image (deterministic for the same pixels)."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=False)
    return buffer.getvalue()


def store_image_bytes(ws, data: bytes, name: str = "image") -> ImageInfo:
    """Check, write and record one image in an open workspace.

    The file is written before the row, so a row never points at a missing
    file; the caller decides the transaction (a file without a row is
    harmless and is reused by the next store of the same bytes). The row
    joins the caller's open transaction, if any, else commits at once.
    """
    info = check_image_bytes(data, name)
    write_image_file(ws.root, info, data)
    with ws.transaction() as conn:
        insert_image_row(conn, info)
    return info


def store_pil_image(ws, image: Image.Image, name: str = "image") -> ImageInfo:
    """Store a PIL image as PNG in the workspace (used by the demo and generation)."""
    return store_image_bytes(ws, encode_png(image.convert("RGB")), name)


def open_image(path: str | Path, missing: str | None = None) -> Image.Image:
    """Open an image file as upright RGB: the one way cpdm decodes images (import, scoring, the app).

    Photos from phones and cameras are often stored sideways with an EXIF
    orientation tag; they are turned upright here, as every viewer shows them
    and as import measured their size. ``missing`` words the error for an
    absent file.
    """
    path = Path(path)
    if not path.exists():
        raise ImageError(missing or f"{path}: no such image file")
    return _upright_rgb(path, str(path))


def open_image_bytes(data: bytes, name: str = "image") -> Image.Image:
    """:func:`open_image` for an image's bytes (sent from another machine): the same decoding, the same pixels."""
    return _upright_rgb(io.BytesIO(data), name)


def _upright_rgb(source, name: str) -> Image.Image:
    """Decode a file or buffer as upright RGB (EXIF orientation applied)."""
    try:
        with Image.open(source) as img:
            return ImageOps.exif_transpose(img).convert("RGB")
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageError(f"{name}: unreadable image ({exc})") from exc


def _missing_from_store(path: Path, sha256: str) -> str:
    return f"{path}: image file is missing from the workspace (image {sha256[:12]})"


def open_stored_image(path: Path, sha256: str) -> Image.Image:
    """:func:`open_image` for a file of the workspace's image store (safe to call from worker threads)."""
    return open_image(path, missing=_missing_from_store(path, sha256))


def read_stored_image(path: Path, sha256: str) -> bytes:
    """A stored image's file bytes (to send to a machine without the workspace), or the same error as opening it."""
    try:
        return Path(path).read_bytes()
    except FileNotFoundError:
        raise ImageError(_missing_from_store(path, sha256)) from None


def load_image(ws, sha256: str) -> Image.Image:
    """Open a stored image as upright RGB, with a clear error if its file is gone or unreadable."""
    return open_stored_image(ws.image_path(sha256), sha256)


def thumbnail(image: Image.Image, size: int = 256) -> Image.Image:
    """A copy no larger than ``size`` on its longer side."""
    copy = image.copy()
    copy.thumbnail((size, size))
    return copy


def data_uri(data: bytes, mimetype: str) -> str:
    """``data`` as a ``data:`` URI: the exact bytes, carried inside the page that shows them.

    The researchers' pages show plots this way rather than at an address of
    their own (Streamlit's ``/media/…`` serves anyone who has the address,
    signed in or not). The rating panel, whose images are larger, gets raw
    bytes instead (``cpdm.app.answer_panel.model.panel_message``).
    """
    return f"data:{mimetype};base64,{base64.b64encode(data).decode('ascii')}"
