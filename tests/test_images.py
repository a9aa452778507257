"""Safe image ingest: format checks, size limits, content-addressed storage."""

from __future__ import annotations

import hashlib
import io

import pytest
from PIL import Image

import cpdm.store.images as images_module
from cpdm.store.images import (
    ImageError,
    check_image_bytes,
    encode_png,
    load_image,
    read_image_file,
    relative_image_path,
    store_image_bytes,
    store_pil_image,
    thumbnail,
)
from tests.conftest import png_bytes
from tests.test_anchors import bomb_png, corrupt_png


@pytest.mark.parametrize("fmt, expected", [("PNG", "png"), ("JPEG", "jpg"), ("WEBP", "webp")])
def test_accepted_formats_are_described(fmt, expected):
    data = png_bytes(3, size=(40, 30), fmt=fmt)
    info = check_image_bytes(data, "x")
    assert (info.width, info.height, info.format, info.bytes) == (40, 30, fmt, len(data))
    assert info.sha256 == hashlib.sha256(data).hexdigest()
    assert info.suffix == expected


def test_camera_jpeg_with_a_preview_picture_counts_as_jpeg():
    buffer = io.BytesIO()
    first, second = Image.new("RGB", (32, 24), "red"), Image.new("RGB", (16, 12), "blue")
    first.save(buffer, format="MPO", save_all=True, append_images=[second])
    assert Image.open(io.BytesIO(buffer.getvalue())).format == "MPO"
    info = check_image_bytes(buffer.getvalue(), "phone.jpg")
    assert info.format == "JPEG" and info.suffix == "jpg" and (info.width, info.height) == (32, 24)


def _truncate(data: bytes, drop: int) -> bytes:
    return data[: len(data) - drop]


@pytest.mark.parametrize(
    "data, expected",
    [
        (b"", "art.png: empty file (0 bytes)"),
        (b"GIF89a but not really", "art.png: not an image"),
        (png_bytes(1, fmt="GIF"), "art.png: unsupported image format GIF"),
        (png_bytes(1, fmt="BMP"), "art.png: unsupported image format BMP"),
        (_truncate(png_bytes(1), 12), "art.png: corrupt or truncated image"),  # no IEND chunk
        (_truncate(png_bytes(1), 20), "art.png: corrupt or truncated image"),
        (png_bytes(1)[:200], "art.png: corrupt or truncated image"),
        (corrupt_png(), "art.png: corrupt or truncated image"),
        (_truncate(png_bytes(1, fmt="JPEG"), 2), "art.png: corrupt or truncated image"),  # no EOI marker
        (png_bytes(1, fmt="WEBP")[:60], "art.png: corrupt or truncated image"),
        (bomb_png(9_000, 9_000), "art.png: 9000x9000 pixels is above the limit of 64,000,000 pixels"),
        (bomb_png(100_000, 100_000), "art.png: 10,000,000,000 pixels is above the limit of 64,000,000 pixels"),
    ],
    ids=[
        "empty", "garbage", "gif", "bmp", "png-no-iend", "png-cut-crc", "png-half", "png-flipped",
        "jpeg-no-eoi", "webp-cut", "over-cpdm-limit", "over-pillow-limit",
    ],
)  # fmt: skip
def test_bad_bytes_are_refused_by_name(data, expected):
    with pytest.raises(ImageError) as caught:
        check_image_bytes(data, "art.png")
    assert str(caught.value).startswith(expected)
    assert "\n" not in str(caught.value)


def test_bomb_check_happens_before_decoding(monkeypatch):
    # A header claiming 9000x9000 would need ~243 MB decoded; refusing it must not call load().
    def no_load(self):
        raise AssertionError("decoded a bomb")

    monkeypatch.setattr(Image.Image, "load", no_load)
    with pytest.raises(ImageError, match="above the limit"):
        check_image_bytes(bomb_png(9_000, 9_000), "bomb.png")


def test_byte_limit(monkeypatch, tmp_path):
    monkeypatch.setattr(images_module, "MAX_BYTES", 1000)
    data = png_bytes(1, size=(64, 64))
    assert len(data) > 1000
    with pytest.raises(ImageError, match=r"big.png: file is 0 MiB, above the 0 MiB limit"):
        check_image_bytes(data, "big.png")
    (tmp_path / "big.png").write_bytes(data)
    with pytest.raises(ImageError, match=r"big.png: file is"):
        read_image_file(tmp_path / "big.png")


def test_read_image_file_errors_name_the_path(tmp_path):
    with pytest.raises(ImageError, match=r"missing.png: no such file"):
        read_image_file(tmp_path / "missing.png")
    (tmp_path / "folder.png").mkdir()
    with pytest.raises(ImageError, match=r"folder.png: is a folder"):
        read_image_file(tmp_path / "folder.png")
    (tmp_path / "ok.png").write_bytes(png_bytes(2))
    data, info = read_image_file(tmp_path / "ok.png", name="shown-name")
    assert data == png_bytes(2) and info.sha256 == hashlib.sha256(data).hexdigest()


def test_store_is_content_addressed_and_idempotent(ws):
    data = png_bytes(4)
    info = store_image_bytes(ws, data, "a.png")
    again = store_image_bytes(ws, data, "copy-of-a.png")
    assert info == again
    path = ws.image_path(info.sha256)
    assert path == ws.root / relative_image_path(info)
    assert path.relative_to(ws.root).as_posix() == f"images/{info.sha256[:2]}/{info.sha256}.png"
    assert path.read_bytes() == data
    assert ws.conn.execute("SELECT COUNT(*) FROM images").fetchone()[0] == 1
    assert not list(path.parent.glob(".incoming-*"))  # no temporary files left behind


def test_store_refuses_bad_bytes_without_writing(ws):
    with pytest.raises(ImageError):
        store_image_bytes(ws, b"nope", "bad.png")
    assert ws.conn.execute("SELECT COUNT(*) FROM images").fetchone()[0] == 0
    assert not [p for p in ws.images_dir.rglob("*") if p.is_file()]


def test_pil_round_trip_and_deterministic_png(ws):
    image = Image.frombytes("RGB", (3, 2), bytes(range(18)))
    info = store_pil_image(ws, image)
    assert info.format == "PNG" and (info.width, info.height) == (3, 2)
    assert load_image(ws, info.sha256).tobytes() == image.tobytes()
    assert encode_png(image) == encode_png(image.copy())
    rgba = Image.new("RGBA", (4, 4), (10, 20, 30, 128))
    assert load_image(ws, store_pil_image(ws, rgba).sha256).mode == "RGB"


def test_load_image_reports_missing_or_broken_files(ws):
    info = store_image_bytes(ws, png_bytes(5), "a.png")
    path = ws.image_path(info.sha256)
    path.write_bytes(b"broken")
    with pytest.raises(ImageError, match="unreadable image"):
        load_image(ws, info.sha256)
    path.unlink()
    with pytest.raises(ImageError, match=f"image file is missing from the workspace \\(image {info.sha256[:12]}\\)"):
        load_image(ws, info.sha256)


def test_thumbnail_keeps_aspect_and_never_upscales():
    wide = Image.new("RGB", (1000, 500))
    assert thumbnail(wide, 256).size == (256, 128)
    assert wide.size == (1000, 500)
    small = Image.new("RGB", (50, 40))
    assert thumbnail(small, 256).size == (50, 40)


def test_sideways_camera_photo_is_sized_and_loaded_upright(ws):
    pixels = Image.new("RGB", (40, 20), "white")
    pixels.paste((255, 0, 0), (0, 0, 10, 20))  # a red band on the stored image's left edge
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to view"
    buffer = io.BytesIO()
    pixels.save(buffer, format="JPEG", exif=exif, quality=95)
    info = store_image_bytes(ws, buffer.getvalue(), "phone.jpg")
    assert (info.width, info.height) == (20, 40)
    upright = load_image(ws, info.sha256)
    assert upright.size == (20, 40)
    red, green, _ = upright.getpixel((10, 2))  # the band is now along the top edge
    assert red > 200 and green < 60
