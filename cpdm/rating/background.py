"""Who the raters are: a protocol's short background questionnaire, asked once per campaign after consent.

A protocol may declare ``[[background]]`` questions (see the shipped
``default.toml``)::

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

A rater answers one question per step; each step is saved when it is
answered, so a rater who leaves half-way resumes at the first unanswered
question. Answers are stored per rater and campaign (``background_answers``)
as JSON; they are exported only in the researcher-only rater export and
never shown to other raters. The analysis can split raters by an answer
(``cpdm calibrate --by``, :mod:`cpdm.analysis.by_answer`).
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from datetime import datetime

from cpdm.errors import CpdmError
from cpdm.store.time import format_time, utc_now
from cpdm.store.writer import write_transaction

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


@dataclass(frozen=True)
class Step:
    """One screen of the questionnaire: a question, asked once or once per artist (``subjects``)."""

    question: BackgroundQuestion
    subjects: tuple[str, ...]  # ("",) for a question asked once


def _error(field: str, message: str) -> CpdmError:
    from cpdm.rating.protocol import ProtocolError

    return ProtocolError(f"protocol field '{field}' {message}")


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


def campaign_protocol(conn, campaign_id: int):
    """The campaign's frozen protocol (parsed once per protocol text)."""
    from cpdm.rating.assignment import campaign_settings

    return campaign_settings(conn, campaign_id)[1]


def campaign_artists(conn, campaign_id: int) -> tuple[str, ...]:
    """The artists of the campaign's normal pairs, by name: the subjects of questions asked per artist."""
    rows = conn.execute(
        "SELECT DISTINCT a.artist FROM campaign_pairs cp JOIN pairs p ON p.id = cp.pair AND p.kind = 'normal' "
        "JOIN anchors a ON a.id = p.anchor WHERE cp.campaign = ? AND a.artist IS NOT NULL AND a.artist != '' "
        "ORDER BY a.artist", (campaign_id,),
    ).fetchall()
    return tuple(row[0] for row in rows)


def questionnaire(conn, campaign_id: int) -> list[Step]:
    """The campaign's questionnaire, step by step (a question asked per artist is one step for all of them)."""
    steps = []
    for question in campaign_protocol(conn, campaign_id).background:
        subjects = campaign_artists(conn, campaign_id) if question.per_artist else ("",)
        if subjects:  # a question per artist of a campaign without artists' names is not asked
            steps.append(Step(question, subjects))
    return steps


def stored_answers(conn, rater_id: int, campaign_id: int) -> dict[tuple[str, str], object]:
    """The rater's answers in the campaign: {(question id, subject): value} (subject "" unless per artist)."""
    rows = conn.execute("SELECT question, subject, value FROM background_answers WHERE rater = ? AND campaign = ?",
                        (rater_id, campaign_id)).fetchall()
    return {(question, subject): json.loads(value) for question, subject, value in rows}


def next_step(conn, rater_id: int, campaign_id: int) -> tuple[int, list[Step]] | None:
    """(index of the first step not fully answered, all steps); None when the questionnaire is complete."""
    steps = questionnaire(conn, campaign_id)
    answered = set(stored_answers(conn, rater_id, campaign_id))
    for index, step in enumerate(steps):
        if any((step.question.id, subject) not in answered for subject in step.subjects):
            return index, steps
    return None


def save_step(ws, rater_id: int, campaign_id: int, question_id: str, values: dict[str, object],
              now: datetime | None = None) -> None:
    """Save one step's answers ({subject: value}, subject "" unless per artist), all or none.

    Every subject of the step needs a valid answer; a CpdmError names the
    first problem (prefixed by the artist for a question asked per artist).
    Answering again replaces the earlier answer.
    """
    step = next((s for s in questionnaire(ws.conn, campaign_id) if s.question.id == question_id), None)
    if step is None:
        raise CpdmError(f"the campaign's questionnaire has no question {question_id!r}")
    checked = {}
    for subject in step.subjects:
        try:
            checked[subject] = check_answer(step.question, values.get(subject))
        except CpdmError as exc:
            raise CpdmError(f"{subject}: {exc}" if subject else str(exc)) from None
    now_text = format_time(now or utc_now())
    with write_transaction(ws) as conn:
        conn.executemany(
            "INSERT INTO background_answers (campaign, rater, question, subject, value, answered_at) "
            "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (campaign, rater, question, subject) DO UPDATE SET "
            "value = excluded.value, answered_at = excluded.answered_at",
            [(campaign_id, rater_id, question_id, subject, json.dumps(value), now_text)
             for subject, value in checked.items()],
        )


def background_due(ws, rater) -> int | None:
    """The campaign whose questionnaire the rater must answer before rating, if any.

    A rater recruited through a link answers their link's campaign's; an
    invited rater the first open campaign (oldest first) that asks their role
    for ratings and has a questionnaire they have not finished.
    """
    from cpdm.rating.recruit import recruitment_of

    if rater.role not in ("artist", "lay"):
        return None
    recruitment = recruitment_of(ws.conn, rater.id)
    if recruitment is not None:
        candidates = [recruitment.campaign]
    else:
        candidates = [row[0] for row in ws.conn.execute(
            "SELECT id FROM campaigns WHERE status = 'open' AND COALESCE(json_extract(overlap, '$.' || ?), 0) > 0 "
            "ORDER BY id", (rater.role,))]
    for campaign_id in candidates:
        if campaign_protocol(ws.conn, campaign_id).background and next_step(ws.conn, rater.id, campaign_id):
            return campaign_id
    return None


def answers_table(conn, campaign_id: int) -> dict[int, dict[str, object]]:
    """Every rater's answers in the campaign, as export cells: {rater id: {column: value}}.

    Columns are question ids, ``id[artist]`` for questions asked per artist;
    several choices are joined by "; ", a declined answer reads
    "prefer not to answer".
    """
    table: dict[int, dict[str, object]] = {}
    rows = conn.execute("SELECT rater, question, subject, value FROM background_answers WHERE campaign = ? "
                        "ORDER BY rater, rowid", (campaign_id,)).fetchall()
    for rater_id, question, subject, value in rows:
        column = f"{question}[{subject}]" if subject else question
        table.setdefault(rater_id, {})[column] = export_cell(json.loads(value))
    return table


def export_cell(value):
    """A stored answer as one export cell."""
    if value is DECLINED:
        return "prefer not to answer"
    if isinstance(value, list):
        return "; ".join(value)
    return value


def background_columns(conn, campaign_id: int) -> list[str]:
    """The export columns of the campaign's questionnaire, in the order it asks them."""
    return [f"{step.question.id}[{subject}]" if subject else step.question.id
            for step in questionnaire(conn, campaign_id) for subject in step.subjects]


def answers_fingerprint(conn, campaign_id: int) -> tuple:
    """Changes whenever a rater answers in the campaign (a cache key for pages)."""
    return tuple(conn.execute("SELECT COUNT(*), MAX(answered_at) FROM background_answers WHERE campaign = ?",
                              (campaign_id,)).fetchone())
