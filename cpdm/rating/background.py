"""Who the raters are: a protocol's short background questionnaire, asked once per campaign after consent.

A protocol may declare ``[[background]]`` questions (see the shipped
``default.toml``; what each type takes is in :mod:`cpdm.rating.questionnaire`).
A rater answers one question per step; each step is saved when it is
answered, so a rater who leaves half-way resumes at the first unanswered
question. Answers are stored per rater and campaign (``background_answers``)
as JSON; they are exported only in the researcher-only rater export and
never shown to other raters. The analysis can split raters by an answer
(``cpdm calibrate --by``, :mod:`cpdm.analysis.by_answer`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime

import sqlite_utils

from cpdm.errors import CpdmError
from cpdm.rating.questionnaire import DECLINED, BackgroundQuestion, check_answer
from cpdm.store.time import format_time, utc_now


@dataclass(frozen=True)
class Step:
    """One screen of the questionnaire: a question, asked once or once per artist (``subjects``)."""

    question: BackgroundQuestion
    subjects: tuple[str, ...]  # ("",) for a question asked once


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


def questionnaire_steps(conn, campaign_id: int) -> list[Step]:
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
    steps = questionnaire_steps(conn, campaign_id)
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
    step = next((s for s in questionnaire_steps(ws.conn, campaign_id) if s.question.id == question_id), None)
    if step is None:
        raise CpdmError(f"the campaign's questionnaire has no question {question_id!r}")
    checked = {}
    for subject in step.subjects:
        try:
            checked[subject] = check_answer(step.question, values.get(subject))
        except CpdmError as exc:
            raise CpdmError(f"{subject}: {exc}" if subject else str(exc)) from None
    now_text = format_time(now or utc_now())
    with ws.transaction() as conn:
        sqlite_utils.Database(conn)["background_answers"].upsert_all(
            ({"campaign": campaign_id, "rater": rater_id, "question": question_id, "subject": subject,
              "value": json.dumps(value), "answered_at": now_text} for subject, value in checked.items()),
            pk=("campaign", "rater", "question", "subject"),
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
            for step in questionnaire_steps(conn, campaign_id) for subject in step.subjects]


def answers_fingerprint(conn, campaign_id: int) -> tuple:
    """Changes whenever a rater answers in the campaign (a cache key for pages)."""
    return tuple(conn.execute("SELECT COUNT(*), MAX(answered_at) FROM background_answers WHERE campaign = ?",
                              (campaign_id,)).fetchone())
