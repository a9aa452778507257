"""A protocol's questions about the raters (``[[background]]``): their definitions and what answers they take.

Pure definitions, read by :mod:`cpdm.rating.protocol`; asking them, storing
the answers and finding who still has to answer live in
:mod:`cpdm.rating.background`. A question::

    [[background]]
    id = "familiarity"
    text = "How familiar are you with the work of {artist}?"
    type = "single"                      # single, multiple, number or text
    options = ["I don't know it", "I have seen some of it", "I know it well"]
    per_artist = true                    # asked once for each artist of the campaign's pairs

- ``single``: one of ``options``; ``multiple``: one or more of ``options``;
  ``number``: between ``min`` and ``max`` (whole when ``integer = true``),
  with optional ``levels``, ascending cut points that group answers for the
  analysis (``levels = [1, 5]``: under 1, 1 to under 5, 5 or more); ``text``:
  at most ``max_length`` characters (default 200).
- ``optional = true`` lets the rater decline ("prefer not to answer"),
  stored as a declined answer (JSON null).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from cpdm.errors import CpdmError

BACKGROUND_TYPES = ("single", "multiple", "number", "text")
QUESTION_ID_PATTERN = re.compile(r"^[a-z][a-z0-9_]{0,31}$")
ARTIST_PLACEHOLDER = "{artist}"
DEFAULT_MAX_LENGTH = 200
DECLINED = None  # the stored answer of a rater who preferred not to answer an optional question


@dataclass(frozen=True)
class BackgroundQuestion:
    """One question about the rater (not about a pair)."""

    id: str
    text: str
    type: str
    options: tuple[str, ...] = ()
    min: float | None = None
    max: float | None = None
    integer: bool = False
    levels: tuple[float, ...] = ()
    max_length: int = DEFAULT_MAX_LENGTH
    per_artist: bool = False
    optional: bool = False

    def text_for(self, subject: str) -> str:
        """The question as asked about one subject (an artist, for a question asked per artist)."""
        return self.text.replace(ARTIST_PLACEHOLDER, subject) if self.per_artist else self.text


class BackgroundError(CpdmError):
    """A malformed ``[[background]]`` question; ``parse_protocol`` reports it as a ProtocolError."""


def _error(field: str, message: str) -> BackgroundError:
    return BackgroundError(f"protocol field '{field}' {message}")


def _options(raw: dict, field: str) -> tuple[str, ...]:
    options = raw.get("options")
    if (not isinstance(options, list) or len(options) < 2
            or not all(isinstance(o, str) and o.strip() for o in options)):
        raise _error(f"{field}.options", "must list at least two non-empty strings")
    options = tuple(o.strip() for o in options)
    if len(set(options)) != len(options):
        raise _error(f"{field}.options", "repeats an option")
    return options


def _number_bounds(raw: dict, field: str) -> tuple[float, float, bool, tuple[float, ...]]:
    """(min, max, integer, levels) of a number question, checked."""
    bounds = [raw.get("min"), raw.get("max")]
    if not all(isinstance(b, (int, float)) and not isinstance(b, bool) for b in bounds) or bounds[0] >= bounds[1]:
        raise _error(field, f"needs numbers min < max, got min={bounds[0]!r} max={bounds[1]!r}")
    integer = raw.get("integer", False)
    if not isinstance(integer, bool):
        raise _error(f"{field}.integer", "must be true or false")
    levels = raw.get("levels", [])
    if (not isinstance(levels, list) or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in levels)
            or list(levels) != sorted(set(levels)) or any(not bounds[0] < v <= bounds[1] for v in levels)):
        raise _error(f"{field}.levels", f"must be ascending cut points above min and up to max, got {levels!r}")
    return float(bounds[0]), float(bounds[1]), integer, tuple(float(v) for v in levels)


def _parse_question(raw, index: int) -> BackgroundQuestion:
    field = f"background[{index}]"
    if not isinstance(raw, dict):
        raise _error(field, "must be a table ([[background]])")
    question_id, text, kind = raw.get("id"), raw.get("text"), raw.get("type")
    if not isinstance(question_id, str) or not QUESTION_ID_PATTERN.match(question_id):
        raise _error(f"{field}.id", f"must be lower-case letters, digits and _ (starting with a letter), "
                                    f"got {question_id!r}")
    if not isinstance(text, str) or not text.strip():
        raise _error(f"{field}.text", "must be a non-empty string")
    if kind not in BACKGROUND_TYPES:
        raise _error(f"{field}.type", f"must be one of {', '.join(BACKGROUND_TYPES)}, got {kind!r}")
    flags = {name: raw.get(name, False) for name in ("per_artist", "optional")}
    for name, value in flags.items():
        if not isinstance(value, bool):
            raise _error(f"{field}.{name}", "must be true or false")
    if flags["per_artist"] and ARTIST_PLACEHOLDER not in text:
        raise _error(f"{field}.text", f"of a question asked per artist must name {ARTIST_PLACEHOLDER}")
    details: dict = {}
    if kind in ("single", "multiple"):
        details["options"] = _options(raw, field)
    elif kind == "number":
        details["min"], details["max"], details["integer"], details["levels"] = _number_bounds(raw, field)
    else:
        max_length = raw.get("max_length", DEFAULT_MAX_LENGTH)
        if isinstance(max_length, bool) or not isinstance(max_length, int) or not 1 <= max_length <= 2000:
            raise _error(f"{field}.max_length", f"must be a whole number from 1 to 2000, got {max_length!r}")
        details["max_length"] = max_length
    return BackgroundQuestion(question_id, text.strip(), kind, **details, **flags)


def parse_background(raw) -> tuple[BackgroundQuestion, ...]:
    """The ``[[background]]`` questions of a protocol's TOML data (none when the protocol has none)."""
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise _error("background", "must be an array of tables ([[background]])")
    questions = tuple(_parse_question(entry, index) for index, entry in enumerate(raw))
    ids = [question.id for question in questions]
    for index, question_id in enumerate(ids):
        if question_id in ids[:index]:
            raise _error(f"background[{index}].id", f"repeats {question_id!r}")
    return questions


# --- Answers ----------------------------------------------------------------------------------------------------


def check_answer(question: BackgroundQuestion, value):
    """The answer as stored (see the module docstring), or a CpdmError saying what is wrong with it."""
    if value is DECLINED:
        if question.optional:
            return DECLINED
        raise CpdmError("please answer this question")
    if question.type == "single":
        if value not in question.options:
            raise CpdmError("please choose one of the answers")
        return value
    if question.type == "multiple":
        chosen = list(dict.fromkeys(value)) if isinstance(value, (list, tuple)) else []
        if not chosen or any(choice not in question.options for choice in chosen):
            raise CpdmError("please choose at least one of the answers")
        return [option for option in question.options if option in chosen]  # in the question's order
    if question.type == "number":
        return _checked_number(question, value)
    text = value.strip() if isinstance(value, str) else ""
    if not text:
        raise CpdmError("please write an answer")
    if len(text) > question.max_length:
        raise CpdmError(f"please keep the answer under {question.max_length} characters")
    return text


def _checked_number(question: BackgroundQuestion, value):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise CpdmError("please give a number")
    if not question.min <= value <= question.max:
        raise CpdmError(f"please give a number from {question.min:g} to {question.max:g}")
    if question.integer:
        if value != int(value):
            raise CpdmError("please give a whole number")
        return int(value)
    return float(value)
