"""A protocol with one background question of every type, and answering a campaign's questionnaire in tests."""

from __future__ import annotations

from cpdm.rating.background import questionnaire_steps, save_step
from tests.rating_fixtures import default_protocol_text

EVERY_TYPE = '''
[[background]]
id = "years"
text = "Years of art practice?"
type = "number"
min = 0
max = 60
integer = true
levels = [2, 10]

[[background]]
id = "pro"
text = "Do you make art professionally?"
type = "single"
options = ["yes", "no"]

[[background]]
id = "known"
text = "Do you know the work of {artist}?"
type = "single"
per_artist = true
options = ["no", "a little", "well"]

[[background]]
id = "media"
text = "What do you make?"
type = "multiple"
options = ["paintings", "photos", "nothing"]

[[background]]
id = "note"
text = "Anything else?"
type = "text"
max_length = 40
optional = true
'''


def every_type_protocol() -> str:
    """The default rating questions with the five background questions above."""
    return default_protocol_text(background=False) + EVERY_TYPE


def first_choices(step) -> dict:
    """An answer to every subject of a step: the first option, the minimum, a word."""
    question = step.question
    value = {"single": (question.options or ("",))[0], "multiple": list(question.options[:1]),
             "number": question.min, "text": "none"}[question.type]
    if question.type == "number" and question.integer:
        value = int(value)
    return {subject: value for subject in step.subjects}


def answer_questionnaire(ws, rater_id: int, campaign_id: int, answers: dict | None = None) -> None:
    """Answer every step of the campaign's questionnaire: ``answers[question id]`` ({subject: value}) or the first
    choices."""
    for step in questionnaire_steps(ws.conn, campaign_id):
        save_step(ws, rater_id, campaign_id, step.question.id, (answers or {}).get(step.question.id)
                  or first_choices(step))
