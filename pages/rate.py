"""The rating page: the original and the AI image side by side, the protocol's questions, submit.

Everything a rater has submitted lives in the database; the page is rebuilt
from it on every run, so a refresh or a visit days later resumes at the
same pair. The answers to the pair on screen live in the browser until
they are submitted, all at once (see ``cpdm.app.answer_panel``).
"""

import streamlit as st

from cpdm.app.answer_panel.widget import show_pair
from cpdm.rating.assignment import next_item
from cpdm.rating.submit import rater_overall_progress
from cpdm.app.ui import require_rater

ws, rater = require_rater()


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
show_pair(ws, rater, item)
