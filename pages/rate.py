"""The rating page: the original and the AI image side by side, the protocol's questions, submit.

Everything a rater has submitted lives in the database; the page is rebuilt
from it on every run, so a refresh or a visit days later resumes at the
same pair. Only the answers chosen for the pair on screen (not yet
submitted) live in the session.
"""

import uuid

import streamlit as st

from cpdm.rating.assignment import next_item, protocol_for
from cpdm.errors import CpdmError
from cpdm.rating.submit import rater_overall_progress, submit
from cpdm.ui import require_rater

ws, rater = require_rater()


def answers_key(item) -> str:
    return f"answers:{item.campaign}:{item.pair}"


def nonce_for(item) -> str:
    """One nonce per pair shown in this session: a double click resends the same one."""
    key = f"nonce:{item.campaign}:{item.pair}"
    if key not in st.session_state:
        st.session_state[key] = uuid.uuid4().hex
    return st.session_state[key]


def choose(key: str, question_id: str, value: int) -> None:
    st.session_state.setdefault(key, {})[question_id] = value


def send(campaign: int, pair: int, nonce: str, skipping: bool = False) -> None:
    """Submit callback: bound to the pair that was on screen when the button was drawn."""
    answers = None if skipping else dict(st.session_state.get(f"answers:{campaign}:{pair}", {}))
    skip_reason = st.session_state.get(f"skip_reason:{campaign}:{pair}", "") if skipping else None
    try:
        result = submit(ws, rater, campaign, pair, answers, nonce=nonce, skip_reason=skip_reason)
    except CpdmError as exc:
        st.session_state["rate_flash"] = ("error", str(exc))
        return
    st.session_state.pop(f"answers:{campaign}:{pair}", None)
    if result.status == "saved":
        st.session_state["rate_flash"] = ("ok", "Skipped." if skipping else "Saved.")
    else:
        st.session_state["rate_flash"] = ("ok", "Already saved: this pair was answered before.")


def thank_you() -> None:
    st.title("Thank you!")
    st.write(
        "Every pair that needs a rating from your group has been rated. You can close this page; "
        "if the study team adds more pairs, this same link will show them."
    )
    done = rater_overall_progress(ws, rater).done
    st.metric("Pairs you rated", done)


item = next_item(ws, rater)
if item is None:
    thank_you()
    st.stop()

protocol = protocol_for(ws, item.campaign)
progress = rater_overall_progress(ws, rater)
st.progress(progress.fraction, text=f"{progress.done} of {progress.total} pairs done")
flash = st.session_state.pop("rate_flash", None)
if flash and flash[0] == "error":
    st.error(flash[1])
elif flash:
    st.toast(flash[1])

# Keep both images as large as the window allows while leaving the questions in view.
st.html(
    "<style>"
    "[data-testid='stImage'] img {max-height: 50vh; object-fit: contain;}"
    "[data-testid='stMainBlockContainer'] {padding-top: 3.5rem;}"
    ".cpdm-scale p {margin: 0;}"
    "</style>"
)
left, right = st.columns(2, gap="large")
with left:
    st.markdown("#### Original")
    st.image(str(ws.image_path(item.anchor_image)), width="stretch")
with right:
    st.markdown("#### AI image")
    st.image(str(ws.image_path(item.shown_image)), width="stretch")

key = answers_key(item)
answers = st.session_state.get(key, {})
unanswered = [q.id for q in protocol.questions if q.id not in answers]
current = unanswered[0] if unanswered else None

for number, question in enumerate(protocol.questions, start=1):
    # One row per question: the question, the low label, one button per value, the high label.
    columns = st.columns([5, 2] + [1] * len(question.values) + [2], vertical_alignment="center")
    marker = "▶ " if question.id == current else ""
    columns[0].markdown(f"**{marker}{number}. {question.text}**")
    columns[1].markdown(f"<div class='cpdm-scale' style='text-align:right'><p>{question.low}</p></div>",
                        unsafe_allow_html=True)
    for column, value in zip(columns[2:-1], question.values):
        column.button(
            str(value),
            key=f"q:{item.campaign}:{item.pair}:{question.id}:{value}",
            type="primary" if answers.get(question.id) == value else "secondary",
            shortcut=str(value) if question.id == current else None,
            on_click=choose,
            args=(key, question.id, value),
            width="stretch",
        )
    columns[-1].markdown(f"<div class='cpdm-scale'><p>{question.high}</p></div>", unsafe_allow_html=True)

complete = not unanswered
st.button(
    "Submit" if complete else f"Submit (answer {len(unanswered)} more)",
    key=f"submit:{item.campaign}:{item.pair}",
    type="primary",
    shortcut="Enter",
    disabled=not complete,
    on_click=send,
    args=(item.campaign, item.pair, nonce_for(item)),
)
with st.expander("Skip: cannot judge"):
    st.text_input("Why can you not judge this pair?", key=f"skip_reason:{item.campaign}:{item.pair}",
                           max_chars=500)
    st.button(
        "Skip this pair",
        key=f"skip:{item.campaign}:{item.pair}",
        on_click=send,
        args=(item.campaign, item.pair, nonce_for(item), True),
    )
