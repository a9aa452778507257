"""What the rating panel is given and what it sends back, without Streamlit.

The panel shows one item of either kind of campaign (the same panel, the
same contract, a ``mode`` in its data):

- ``rating``: a pair, the original beside one AI image, each question
  answered on its scale (a whole number);
- ``2afc``: a triplet, the original and two AI images labelled 1 (left) and
  2 (right), each question answered ``left``, ``right`` or ``cant_tell``
  (:data:`CHOICES`); which pair is on which side was drawn when the triplet
  was assigned (``TripletItem.left_pair``).

The panel (``panel.js``) is given one message of bytes (:func:`panel_message`):
the item and its questions as JSON, then its images' bytes exactly as stored.
The page makes each image a ``blob:`` URL, which exists only inside that
page: no image of the study is ever at an address another visitor could
open (Streamlit's ``/media/…`` serves anyone who has the address). Raw bytes
rather than base64 ``data:`` URIs keep a pair of full-size images as fast as
files fetched over HTTP.

The panel holds the rater's answers in the browser; on Submit it sends
one event::

    {"campaign": 1, "pair": 7, "nonce": "…", "answers": {"content": 4, …}}
    {"campaign": 1, "pair": 7, "nonce": "…", "skip_reason": "the image is blank"}
    {"campaign": 2, "triplet": 5, "nonce": "…", "answers": {"copy": "left", "style": "cant_tell"}}

:func:`handle_event` turns that event into one :func:`cpdm.rating.submit.submit`
(a pair) or :func:`cpdm.rating.judgments.submit_judgment` (a triplet) call for
the item the event names (not whatever item the server shows now), so a late
or repeated event records nothing for the wrong item, and its nonce makes a
resend harmless.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

from cpdm.errors import CpdmError
from cpdm.rating.submit import MAX_SKIP_REASON, submit

MIME_TYPES = {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp"}
# Each image's slot, label and the key that opens it full-window: "o"riginal and "g"enerated for a pair;
# for a triplet, "l"eft and "r"ight (1 and 2 answer, so they cannot enlarge).
IMAGE_SLOTS = (("original", "Original", "o"), ("generated", "AI image", "g"))
TRIPLET_IMAGE_SLOTS = (("original", "Original", "o"), ("left", "AI image 1", "l"), ("right", "AI image 2", "r"))
# A 2AFC question's answers, in the order their buttons stand (left, can't tell, right), and their labels.
CHOICES = (("left", "AI image 1"), ("cant_tell", "Can't tell"), ("right", "AI image 2"))
ALREADY_SAVED = "Already saved: this pair was answered before."
ALREADY_JUDGED = "Already saved: this set was answered before."
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
    """A submit from the panel, checked: answers for every question, or a skip with its reason.

    ``kind`` is ``pair`` or ``triplet``, ``item`` that pair's or triplet's id;
    answers are whole numbers for a pair, ``left``/``right``/``cant_tell`` for a triplet.
    """

    campaign: int
    item: int
    nonce: str
    answers: dict[str, int] | dict[str, str] | None
    skip_reason: str | None
    kind: str = "pair"

    @property
    def pair(self) -> int | None:
        return self.item if self.kind == "pair" else None

    @property
    def triplet(self) -> int | None:
        return self.item if self.kind == "triplet" else None


def is_triplet(item) -> bool:
    """Whether ``item`` is a triplet (``cpdm.rating.judgments.TripletItem``) rather than a pair (``Item``)."""
    return hasattr(item, "triplet")


def nonce_for(item, rater) -> str:
    """The nonce of one item shown to one rater: the same on every run, tab and refresh for that assignment."""
    if is_triplet(item):
        parts = ("cpdm-judgment", item.campaign, item.triplet, rater.id, item.assigned_at)
    else:
        parts = ("cpdm-submit", item.campaign, item.pair, rater.id, item.assigned_at)
    return hashlib.sha256("\x1f".join(map(str, parts)).encode("utf-8")).hexdigest()[:32]


def item_images(item) -> dict[str, str]:
    """The sha256 of each image the panel shows for ``item``, by slot, in the panel's order."""
    if is_triplet(item):
        return {"original": item.anchor_image, "left": item.left_image, "right": item.right_image}
    return {"original": item.anchor_image, "generated": item.shown_image}


def _whole_number(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise CpdmError(f"the panel sent {name} {value!r}, not a whole number")
    return value


def _choice(value, question) -> str:
    if value not in {choice for choice, _ in CHOICES}:
        raise CpdmError(f"the panel sent answer {question!r} = {value!r}, not one of "
                        f"{', '.join(choice for choice, _ in CHOICES)}")
    return value


def parse_event(value) -> PanelEvent:
    """Check the shape of what the panel sent; raise CpdmError naming what is wrong.

    The event names a pair or a triplet, never both. Values on a pair's
    scales are checked later, by ``submit``; a triplet's answers must be
    :data:`CHOICES` (``submit_judgment`` checks the questions). A skip
    reason longer than ``MAX_SKIP_REASON`` is refused, never cut.
    """
    if not isinstance(value, dict):
        raise CpdmError("the panel sent no answers")
    campaign = _whole_number(value.get("campaign"), "campaign")
    if ("pair" in value) == ("triplet" in value):
        raise CpdmError("the panel must name either a pair or a triplet")
    kind = "pair" if "pair" in value else "triplet"
    item = _whole_number(value.get(kind), kind)
    nonce = value.get("nonce")
    if not isinstance(nonce, str):
        raise CpdmError("the panel sent no nonce")
    answers, reason = value.get("answers"), value.get("skip_reason")
    if (answers is None) == (reason is None):
        raise CpdmError("the panel must send either answers or a skip reason")
    if answers is not None:
        if not isinstance(answers, dict):
            raise CpdmError("the panel sent answers that are not one value per question")
        if kind == "pair":
            answers = {str(q): _whole_number(v, f"answer {q!r} =") for q, v in answers.items()}
        else:
            answers = {str(q): _choice(v, q) for q, v in answers.items()}
        return PanelEvent(campaign, item, nonce, answers, None, kind)
    if not isinstance(reason, str) or not reason.strip():
        raise CpdmError("a skipped pair needs a reason")
    if len(reason) > MAX_SKIP_REASON:
        raise CpdmError(
            f"The reason is {len(reason)} characters; the limit is {MAX_SKIP_REASON}. "
            "Shorten it and press Skip again (nothing was saved)."
        )
    return PanelEvent(campaign, item, nonce, None, reason, kind)


def handle_event(ws, rater, value) -> Notice | None:
    """Save what the panel sent, for the pair or triplet it names; what the rater should be told (None: saved)."""
    try:
        event = parse_event(value)
        if event.kind == "triplet":
            from cpdm.rating.judgments import submit_judgment

            result = submit_judgment(ws, rater, event.campaign, event.item, event.answers,
                                     nonce=event.nonce, skip_reason=event.skip_reason)
        else:
            result = submit(ws, rater, event.campaign, event.item, event.answers,
                            nonce=event.nonce, skip_reason=event.skip_reason)
    except CpdmError as exc:
        return Notice("error", str(exc))
    if result.status == "duplicate":
        return Notice("info", ALREADY_JUDGED if event.kind == "triplet" else ALREADY_SAVED)
    return None


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
    """Everything the panel shows for one item but the images' bytes, as JSON-ready data.

    ``images`` maps each slot of the item (:func:`item_images`: "original"
    and "generated" for a pair; "original", "left" and "right" for a
    triplet) to its image (None for one that cannot be read); the data gives
    each one's MIME type and length in bytes, None for a missing one.
    ``round_`` counts the submits handled in this session, so a second
    refusal with the same notice still reaches the panel.
    """
    triplet = is_triplet(item)
    if triplet:
        target = {"mode": "2afc", "triplet": item.triplet}
        questions = [{"id": q.id, "text": q.text,
                      "choices": [{"value": value, "label": label} for value, label in CHOICES]}
                     for q in protocol.questions]
    else:
        target = {"mode": "rating", "pair": item.pair}
        questions = [{"id": q.id, "text": q.text, "low": q.low, "high": q.high, "values": q.values}
                     for q in protocol.questions]
    return {
        "campaign": item.campaign,
        **target,
        "nonce": nonce,
        "questions": questions,
        "images": [
            {"key": key, "label": label, "shortcut": shortcut,
             "mime": None if images[key] is None else images[key].mimetype,
             "length": None if images[key] is None else len(images[key].data)}
            for key, label, shortcut in (TRIPLET_IMAGE_SLOTS if triplet else IMAGE_SLOTS)
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
