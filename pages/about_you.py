"""After consent: the campaign's short questionnaire about the rater, one question per screen, saved as answered."""

import streamlit as st

from cpdm.errors import CpdmError
from cpdm.app.participant_ui import background_input
from cpdm.rating.background import background_due, next_step, save_step, stored_answers
from cpdm.app.ui import require_rater

ws, rater = require_rater()
campaign = background_due(ws, rater)
position = next_step(ws.conn, rater.id, campaign) if campaign is not None else None
if position is None:  # answered in another tab meanwhile
    st.success("Thank you: that was the last question.")
    st.button("Go on to the pairs", type="primary", key="background_done")
    st.stop()

index, steps = position
step, earlier = steps[index], stored_answers(ws.conn, rater.id, campaign)
st.title("About you")
st.caption(f"Question {index + 1} of {len(steps)}. Only the study team sees your answers.")
with st.form(f"background_{step.question.id}"):
    values = {subject: background_input(step.question, subject, earlier.get((step.question.id, subject)),
                                        key=f"background_{step.question.id}_{number}")
              for number, subject in enumerate(step.subjects)}
    submitted = st.form_submit_button("Next", type="primary")
if submitted:
    try:
        save_step(ws, rater.id, campaign, step.question.id, values)
    except CpdmError as exc:
        st.error(str(exc))
    else:
        st.rerun()
