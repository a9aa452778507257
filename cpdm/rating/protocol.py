"""Rating protocols: questions, scales, instructions, attention checks (TOML).

A protocol is a TOML file; the ones cpdm ships lie in ``cpdm/rating/protocols/``. It is parsed and
validated into a :class:`Protocol`; every problem is reported as one
:class:`~cpdm.errors.CpdmError` naming the field (``questions[2].scale``,
``timing.min_seconds``, ...). A campaign stores the protocol's text, frozen
when the campaign is created.

Its ``kind`` says what a rater judges (``cpdm.store.workspace.CAMPAIGN_KINDS``):

- ``rating`` (the default): one pair at a time, each question answered on
  its integer ``scale`` (``low`` and ``high`` label the ends);
- ``2afc``: a triplet, the original with two AI images of it, each question
  answered ``left``, ``right`` or ``cant_tell`` (``JUDGMENT_ANSWERS``).
  Questions then have ``id`` and ``text`` only; the first is the copy
  question ("Which AI image is more of a copy of the original?"), and the
  attention checks (the anchor itself against an unrelated image) are judged
  on it unless ``attention_checks.question`` names another: choosing the
  anchor's side passes, anything else fails. ``identical_min`` and
  ``unrelated_max`` belong to rating protocols only.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from pathlib import Path

from cpdm.errors import CpdmError
from cpdm.rating.devices import ALL_DEVICES, parse_devices
from cpdm.rating.questionnaire import BackgroundError, parse_background
from cpdm.store.workspace import CAMPAIGN_KINDS, JUDGMENT_ANSWERS

QUESTION_ID_PATTERN = re.compile(r"^[a-z][a-z0-9_]{0,31}$")
# Digits 1-9 choose answers from the keyboard, so a scale has at most 9 points.
MAX_SCALE_POINTS = 9
# The protocols that ship with cpdm (package data); `cpdm campaign create --protocol FILE` takes any other.
PROTOCOLS_DIR = Path(__file__).resolve().parent / "protocols"


class ProtocolError(CpdmError):
    """A malformed protocol; the message names the offending field."""


@dataclass(frozen=True)
class Question:
    """One question asked on every item: on an integer scale (rating), or left / right / can't tell (2afc)."""

    id: str
    text: str
    scale: tuple[int, int] | None  # None for a 2afc question
    low: str = ""
    high: str = ""

    @property
    def values(self) -> list:
        """The answers it takes: the scale's points, or JUDGMENT_ANSWERS for a 2afc question."""
        if self.scale is None:
            return list(JUDGMENT_ANSWERS)
        return list(range(self.scale[0], self.scale[1] + 1))


@dataclass(frozen=True)
class AttentionChecks:
    """How attention-check pairs are mixed in and judged."""

    rate: float
    question: str
    identical_min: int | None  # rating protocols only (None for 2afc)
    unrelated_max: int | None
    max_failures: int


@dataclass(frozen=True)
class Timing:
    min_seconds: float
    assignment_timeout_minutes: float


@dataclass(frozen=True)
class Protocol:
    name: str
    version: int
    instructions: str
    consent: str
    questions: tuple[Question, ...]
    attention_checks: AttentionChecks
    timing: Timing
    # Questions about the rater, asked once per campaign after consent (cpdm.rating.questionnaire).
    background: tuple = ()
    # The devices it may be rated on (cpdm.rating.devices); every one unless the protocol names some.
    devices: tuple[str, ...] = ALL_DEVICES
    # What a rater judges: "rating" (pairs on scales) or "2afc" (triplets: which image is more of a copy).
    kind: str = "rating"

    @property
    def comparative(self) -> bool:
        """Whether raters judge triplets (a 2afc protocol) rather than rate pairs."""
        return self.kind == "2afc"

    def question(self, question_id: str) -> Question:
        for question in self.questions:
            if question.id == question_id:
                return question
        raise ProtocolError(f"protocol {self.name!r} has no question {question_id!r}")

    @property
    def question_ids(self) -> list[str]:
        return [question.id for question in self.questions]


DEFAULT_ATTENTION_CHECKS = {"rate": 0.1, "identical_min": 4, "unrelated_max": 2, "max_failures": 1}
DEFAULT_TIMING = {"min_seconds": 2.0, "assignment_timeout_minutes": 30}

# The fields a protocol may have, table by table; any other is refused (a misspelt one would change nothing).
TOP_LEVEL_FIELDS = ("name", "version", "instructions", "consent", "questions", "attention_checks", "timing",
                    "background", "devices", "kind")
QUESTION_FIELDS = ("id", "text", "scale", "low", "high")
ATTENTION_CHECK_FIELDS = ("rate", "question", "identical_min", "unrelated_max", "max_failures")
# The fields a rating protocol has that a 2afc one must not (its answers are sides, not points on a scale).
SCALE_FIELDS = ("scale", "low", "high")
SCALE_CHECK_FIELDS = ("identical_min", "unrelated_max")
TIMING_FIELDS = ("min_seconds", "assignment_timeout_minutes")


def _text(table: dict, key: str, field: str, *, required: bool = True, default: str = "") -> str:
    value = table.get(key, None)
    if value is None:
        if required:
            raise ProtocolError(f"protocol field '{field}' is missing")
        return default
    if not isinstance(value, str) or (required and not value.strip()):
        raise ProtocolError(f"protocol field '{field}' must be a non-empty string")
    return value.strip()


def _number(table: dict, key: str, field: str, default, *, integer: bool = False, low=None, high=None):
    value = table.get(key, default)
    # bool is an int subclass in Python; `true` is never a valid number here.
    allowed = (int,) if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, allowed):
        kind = "an integer" if integer else "a number"
        raise ProtocolError(f"protocol field '{field}' must be {kind}, got {value!r}")
    if (low is not None and value < low) or (high is not None and value > high):
        raise ProtocolError(f"protocol field '{field}' must be between {low} and {high}, got {value!r}")
    return value


def _parse_question(raw, index: int, kind: str = "rating") -> Question:
    field = f"questions[{index}]"
    if not isinstance(raw, dict):
        raise ProtocolError(f"protocol field '{field}' must be a table ([[questions]])")
    question_id = _text(raw, "id", f"{field}.id")
    if not QUESTION_ID_PATTERN.match(question_id):
        raise ProtocolError(
            f"protocol field '{field}.id' must be lower-case letters, digits and _ (starting with a letter), "
            f"got {question_id!r}"
        )
    if kind == "2afc":
        for key in SCALE_FIELDS:
            if key in raw:
                raise ProtocolError(
                    f"protocol field '{field}.{key}' is not used by a 2afc protocol (its questions are answered "
                    "left, right or can't tell); remove it"
                )
        return Question(id=question_id, text=_text(raw, "text", f"{field}.text"), scale=None)
    scale = raw.get("scale")
    if (
        not isinstance(scale, list)
        or len(scale) != 2
        or not all(isinstance(v, int) and not isinstance(v, bool) for v in scale)
    ):
        raise ProtocolError(f"protocol field '{field}.scale' must be two integers [low, high], got {scale!r}")
    low, high = scale
    if not 0 <= low < high or high - low + 1 > MAX_SCALE_POINTS:
        raise ProtocolError(
            f"protocol field '{field}.scale' must satisfy 0 <= low < high with at most "
            f"{MAX_SCALE_POINTS} points, got {scale!r}"
        )
    return Question(
        id=question_id,
        text=_text(raw, "text", f"{field}.text"),
        scale=(low, high),
        low=_text(raw, "low", f"{field}.low"),
        high=_text(raw, "high", f"{field}.high"),
    )


def _parse_kind(data: dict) -> str:
    """The protocol's kind: what a rater judges (``rating`` unless it says ``2afc``)."""
    kind = data.get("kind", "rating")
    if kind not in CAMPAIGN_KINDS:
        raise ProtocolError(f"protocol field 'kind' must be one of {', '.join(CAMPAIGN_KINDS)}, got {kind!r}")
    return kind


def _parse_questions(data: dict, kind: str = "rating") -> tuple[Question, ...]:
    raw_questions = data.get("questions")
    if not raw_questions:
        raise ProtocolError("protocol field 'questions' is missing or empty")
    if not isinstance(raw_questions, list):
        raise ProtocolError("protocol field 'questions' must be an array of tables ([[questions]])")
    questions = tuple(_parse_question(raw, i, kind) for i, raw in enumerate(raw_questions))
    seen: set[str] = set()
    for i, question in enumerate(questions):
        if question.id in seen:
            raise ProtocolError(f"protocol field 'questions[{i}].id' repeats {question.id!r}")
        seen.add(question.id)
    return questions


def _parse_attention_checks(data: dict, questions: tuple[Question, ...], kind: str = "rating") -> AttentionChecks:
    raw = data.get("attention_checks", {})
    if not isinstance(raw, dict):
        raise ProtocolError("protocol field 'attention_checks' must be a table")
    f = "attention_checks."
    # A rating protocol judges checks on its last question, a 2afc protocol on its first (the copy question).
    question_id = raw.get("question", questions[0].id if kind == "2afc" else questions[-1].id)
    by_id = {q.id: q for q in questions}
    if question_id not in by_id:
        raise ProtocolError(
            f"protocol field '{f}question' must name a question ({', '.join(by_id)}), got {question_id!r}"
        )
    d = DEFAULT_ATTENTION_CHECKS
    if kind == "2afc":
        for key in SCALE_CHECK_FIELDS:
            if key in raw:
                raise ProtocolError(
                    f"protocol field '{f}{key}' is not used by a 2afc protocol (a check passes when the rater "
                    "chooses the anchor's own image); remove it"
                )
        return AttentionChecks(
            rate=float(_number(raw, "rate", f + "rate", d["rate"], low=0, high=0.5)),
            question=question_id, identical_min=None, unrelated_max=None,
            max_failures=_number(raw, "max_failures", f + "max_failures", d["max_failures"], integer=True, low=0),
        )
    low, high = by_id[question_id].scale
    return AttentionChecks(
        rate=float(_number(raw, "rate", f + "rate", d["rate"], low=0, high=0.5)),
        question=question_id,
        identical_min=_number(raw, "identical_min", f + "identical_min", min(d["identical_min"], high),
                              integer=True, low=low, high=high),
        unrelated_max=_number(raw, "unrelated_max", f + "unrelated_max", max(d["unrelated_max"], low),
                              integer=True, low=low, high=high),
        max_failures=_number(raw, "max_failures", f + "max_failures", d["max_failures"], integer=True, low=0),
    )


def _parse_timing(data: dict) -> Timing:
    raw = data.get("timing", {})
    if not isinstance(raw, dict):
        raise ProtocolError("protocol field 'timing' must be a table")
    d = DEFAULT_TIMING
    return Timing(
        min_seconds=float(_number(raw, "min_seconds", "timing.min_seconds", d["min_seconds"], low=0, high=3600)),
        assignment_timeout_minutes=float(
            _number(raw, "assignment_timeout_minutes", "timing.assignment_timeout_minutes",
                    d["assignment_timeout_minutes"], low=0.1, high=7 * 24 * 60)
        ),
    )


def _refuse_unknown(table: dict, known: tuple[str, ...], prefix: str = "") -> None:
    """Refuse the first key of ``table`` not in ``known`` (``prefix``: where the table sits, for the message)."""
    unknown = [key for key in table if key not in known]
    if unknown:
        where = f" in '{prefix.rstrip('.')}'" if prefix else ""
        raise ProtocolError(f"protocol field '{prefix}{unknown[0]}' is unknown (the fields{where} are: "
                            f"{', '.join(known)})")


def _refuse_unknown_fields(data: dict) -> None:
    """Refuse a field the protocol format does not have, naming it (its tables are known to be tables by now)."""
    _refuse_unknown(data, TOP_LEVEL_FIELDS)
    for index, question in enumerate(data["questions"]):
        _refuse_unknown(question, QUESTION_FIELDS, f"questions[{index}].")
    _refuse_unknown(data.get("attention_checks", {}), ATTENTION_CHECK_FIELDS, "attention_checks.")
    _refuse_unknown(data.get("timing", {}), TIMING_FIELDS, "timing.")


def parse_protocol(text: str, *, frozen: bool = False) -> Protocol:
    """Parse and validate protocol TOML; raise ProtocolError naming the bad field.

    ``frozen``: the text is a campaign's, accepted when the campaign was made.
    Fields unknown to this format are then passed over, as they were before
    cpdm refused them, so a running campaign keeps working.
    """
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ProtocolError(f"protocol is not valid TOML: {exc}") from exc
    kind = _parse_kind(data)
    questions = _parse_questions(data, kind)
    version = _number(data, "version", "version", 1, integer=True, low=1)
    protocol = Protocol(
        name=_text(data, "name", "name"),
        version=version,
        instructions=_text(data, "instructions", "instructions"),
        consent=_text(data, "consent", "consent"),
        questions=questions,
        attention_checks=_parse_attention_checks(data, questions, kind),
        timing=_parse_timing(data),
        background=_parse_background(data),
        devices=_parse_devices(data),
        kind=kind,
    )
    if not frozen:
        _refuse_unknown_fields(data)
    return protocol


def _parse_devices(data: dict) -> tuple[str, ...]:
    """The devices the protocol may be rated on, refusals as ProtocolError."""
    try:
        return parse_devices(data.get("devices"))
    except ValueError as exc:
        raise ProtocolError(str(exc)) from None


def _parse_background(data: dict) -> tuple:
    """The protocol's questions about the raters (cpdm.rating.questionnaire), refusals as ProtocolError."""
    try:
        return parse_background(data.get("background"))
    except BackgroundError as exc:
        raise ProtocolError(str(exc)) from None


def load_protocol_file(path: str | Path) -> tuple[str, Protocol]:
    """Read and validate a protocol file; return its text and the parsed protocol.

    Errors name the file as well as the field.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ProtocolError(f"cannot read protocol {path}: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise ProtocolError(f"protocol {path} is not UTF-8 text") from exc
    try:
        return text, parse_protocol(text)
    except ProtocolError as exc:
        raise ProtocolError(f"{path}: {exc}") from exc


def default_protocol_path(kind: str = "rating") -> Path:
    """The default protocol of a campaign kind, shipped inside the package.

    ``cpdm/rating/protocols/default.toml`` for rating campaigns, ``2afc.toml`` for 2afc ones.
    """
    if kind not in CAMPAIGN_KINDS:
        raise ProtocolError(f"campaign kind must be one of {', '.join(CAMPAIGN_KINDS)}, got {kind!r}")
    return PROTOCOLS_DIR / ("2afc.toml" if kind == "2afc" else "default.toml")


def list_protocol_files(directory: str | Path | None = None) -> list[Path]:
    """The protocol files in ``directory``, by default those shipped in ``cpdm/rating/protocols/``.

    ``default.toml`` comes first (menus preselect it), then the others by name.
    """
    if directory is None:
        directory = PROTOCOLS_DIR
    directory = Path(directory)
    if not directory.is_dir():
        return []
    return sorted(directory.glob("*.toml"), key=lambda path: (path.name != "default.toml", path.name))
