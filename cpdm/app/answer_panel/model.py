"""What the rating panel is given and what it sends back, without Streamlit.

The panel (``panel.js``) is given one message of bytes (:func:`panel_message`):
the pair and its questions as JSON, then both images' bytes exactly as stored.
The page makes each image a ``blob:`` URL, which exists only inside that
page: no image of the study is ever at an address another visitor could
open (Streamlit's ``/media/…`` serves anyone who has the address). Raw bytes
rather than base64 ``data:`` URIs keep a pair of full-size images as fast as
files fetched over HTTP.

The panel shows one pair and holds the rater's answers in the
browser; on Submit it sends one event::

    {"campaign": 1, "pair": 7, "nonce": "…", "answers": {"content": 4, …}}
    {"campaign": 1, "pair": 7, "nonce": "…", "skip_reason": "the image is blank"}

:func:`handle_event` turns that event into one :func:`cpdm.rating.submit`
call for the pair the event names (not whatever pair the server shows now),
so a late or repeated event records nothing for the wrong pair, and its
nonce makes a resend harmless.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

from cpdm.errors import CpdmError
from cpdm.rating.submit import MAX_SKIP_REASON, submit

MIME_TYPES = {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp"}
# The keys that open each image full-window: "o"riginal and "g"enerated.
IMAGE_SLOTS = (("original", "Original", "o"), ("generated", "AI image", "g"))
ALREADY_SAVED = "Already saved: this pair was answered before."
# A panel message starts with the length of its JSON part, as this many big-endian bytes.
HEADER_SIZE_BYTES = 4


@dataclass(frozen=True)
class Notice:
    """A line the panel shows under the questions: ``kind`` is ``info`` or ``error``."""

    kind: str
    text: str


@dataclass(frozen=True)
class PanelImage:
    """An image for the panel: its bytes exactly as stored, and their MIME type."""

    data: bytes
    mimetype: str


@dataclass(frozen=True)
class PanelEvent:
    """A submit from the panel, checked: answers for every question, or a skip with its reason."""

    campaign: int
    pair: int
    nonce: str
    answers: dict[str, int] | None
    skip_reason: str | None


def nonce_for(item, rater) -> str:
    """The nonce of one pair shown to one rater: the same on every run, tab and refresh for that assignment."""
    parts = ("cpdm-submit", item.campaign, item.pair, rater.id, item.assigned_at)
    return hashlib.sha256("\x1f".join(map(str, parts)).encode("utf-8")).hexdigest()[:32]


def _whole_number(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise CpdmError(f"the panel sent {name} {value!r}, not a whole number")
    return value


def parse_event(value) -> PanelEvent:
    """Check the shape of what the panel sent; raise CpdmError naming what is wrong.

    Values on the protocol's scales are checked later, by ``submit``. A skip
    reason longer than ``MAX_SKIP_REASON`` is refused, never cut.
    """
    if not isinstance(value, dict):
        raise CpdmError("the panel sent no answers")
    campaign = _whole_number(value.get("campaign"), "campaign")
    pair = _whole_number(value.get("pair"), "pair")
    nonce = value.get("nonce")
    if not isinstance(nonce, str):
        raise CpdmError("the panel sent no nonce")
    answers, reason = value.get("answers"), value.get("skip_reason")
    if (answers is None) == (reason is None):
        raise CpdmError("the panel must send either answers or a skip reason")
    if answers is not None:
        if not isinstance(answers, dict):
            raise CpdmError("the panel sent answers that are not one value per question")
        answers = {str(q): _whole_number(v, f"answer {q!r} =") for q, v in answers.items()}
        return PanelEvent(campaign, pair, nonce, answers, None)
    if not isinstance(reason, str) or not reason.strip():
        raise CpdmError("a skipped pair needs a reason")
    if len(reason) > MAX_SKIP_REASON:
        raise CpdmError(
            f"The reason is {len(reason)} characters; the limit is {MAX_SKIP_REASON}. "
            "Shorten it and press Skip again (nothing was saved)."
        )
    return PanelEvent(campaign, pair, nonce, None, reason)


def handle_event(ws, rater, value) -> Notice | None:
    """Save what the panel sent, for the pair it names; return what the rater should be told (None: saved)."""
    try:
        event = parse_event(value)
        result = submit(ws, rater, event.campaign, event.pair, event.answers,
                        nonce=event.nonce, skip_reason=event.skip_reason)
    except CpdmError as exc:
        return Notice("error", str(exc))
    return Notice("info", ALREADY_SAVED) if result.status == "duplicate" else None


def stored_image(ws, sha256: str) -> tuple[bytes, str]:
    """A stored image's bytes, exactly as stored, and their MIME type."""
    row = ws.conn.execute("SELECT format FROM images WHERE sha256 = ?", (sha256,)).fetchone()
    if row is None:
        raise CpdmError(f"image {sha256[:12]} is not in the workspace")
    path = ws.image_path(sha256)
    try:
        return path.read_bytes(), MIME_TYPES[row[0]]
    except OSError as exc:
        raise CpdmError(f"image {sha256[:12]} cannot be read from {path}: {exc.strerror or exc}") from exc


def panel_image(ws, sha256: str) -> PanelImage | None:
    """A stored image for the panel, or None when its file cannot be read (the panel says so; the pair can be skipped)."""
    try:
        return PanelImage(*stored_image(ws, sha256))
    except CpdmError:
        return None


def panel_data(item, protocol, progress, images: dict[str, PanelImage | None], nonce: str,
               notice: Notice | None = None, round_: int = 0) -> dict:
    """Everything the panel shows for one pair but the images' bytes, as JSON-ready data.

    ``images`` maps "original" and "generated" to the images (None for one
    that cannot be read); the data gives each one's MIME type and length in
    bytes, None for a missing one. ``round_`` counts the submits handled in
    this session, so a second refusal with the same notice still reaches the panel.
    """
    return {
        "campaign": item.campaign,
        "pair": item.pair,
        "nonce": nonce,
        "questions": [
            {"id": q.id, "text": q.text, "low": q.low, "high": q.high, "values": q.values}
            for q in protocol.questions
        ],
        "images": [
            {"key": key, "label": label, "shortcut": shortcut,
             "mime": None if images[key] is None else images[key].mimetype,
             "length": None if images[key] is None else len(images[key].data)}
            for key, label, shortcut in IMAGE_SLOTS
        ],
        "progress": {"done": progress.done, "total": progress.total},
        "notice": None if notice is None else {"kind": notice.kind, "text": notice.text},
        "max_skip_reason": MAX_SKIP_REASON,
        "round": round_,
    }


def panel_message(data: dict, images: dict[str, PanelImage | None]) -> bytes:
    """The bytes the panel is given: the length of ``data``'s JSON, the JSON, then each image's bytes in its order.

    ``panel.js`` reads it back the way :func:`read_panel_message` does.
    """
    header = json.dumps(data, separators=(",", ":")).encode("utf-8")
    shown = [images[slot["key"]].data for slot in data["images"] if slot["length"] is not None]
    return b"".join([len(header).to_bytes(HEADER_SIZE_BYTES, "big"), header, *shown])


def read_panel_message(message: bytes) -> dict:
    """:func:`panel_message` read back: the data, each image's bytes under ``"bytes"`` (None for a missing one)."""
    size = int.from_bytes(message[:HEADER_SIZE_BYTES], "big")
    data = json.loads(message[HEADER_SIZE_BYTES:HEADER_SIZE_BYTES + size])
    offset = HEADER_SIZE_BYTES + size
    for slot in data["images"]:
        if slot["length"] is None:
            slot["bytes"] = None
            continue
        slot["bytes"] = message[offset:offset + slot["length"]]
        offset += slot["length"]
    if offset != len(message):
        raise CpdmError(f"the panel message has {len(message) - offset} bytes past its images")
    return data
