"""The rating page: the rater's next item, its questions, submit.

The item is a pair (the original beside one AI image, questions on scales) or,
in a 2AFC campaign, a triplet (the original and two AI images, "which is more
of a copy?"); whichever ``next_item`` gives, the answer panel shows it.

Everything a rater has submitted lives in the database; the page is rebuilt
from it on every run, so a refresh or a visit days later resumes at the
same pair. The answers to the pair on screen live in the browser until
they are submitted, all at once (see ``cpdm.app.answer_panel``).
"""

import streamlit as st

from cpdm.app.answer_panel.widget import show_item
from cpdm.rating.device_gate import device_refused
from cpdm.rating.devices import device_of
from cpdm.rating.recruit import finished_recruitment, next_item_for
from cpdm.rating.rules import campaign_kind
from cpdm.rating.submit import rater_overall_progress
from cpdm.app.participant_ui import show_study_end
from cpdm.app.ui import require_rater

ws, rater = require_rater()


def thank_you() -> None:
    st.title("Thank you!")
    st.write(
        "Everything that needs an answer from your group has been answered. You can close this page; "
        "if the study team adds more images, this same link will show them."
    )
    done = rater_overall_progress(ws, rater).done
    st.metric("Pairs and sets you answered", done)


def desktop_only() -> None:
    st.title("Please rate on a computer")
    st.write(
        "This study asks for its images to be judged on a computer screen, not on a phone or tablet. "
        "No pair is given to you on this device. Open this same link later on a computer to rate:"
    )
    link = f"{st.context.url or ''}?token={st.query_params.get('token', '')}"
    st.code(link, language=None, wrap_lines=True)


# Which device the rater uses is read before a pair is assigned: a protocol may ask for desktop only.
device = device_of(st.context.headers.get("User-Agent"))
if device_refused(ws, rater, device):
    desktop_only()
    st.stop()
item = next_item_for(ws, rater, device=device)  # a rater from a recruitment link: their link's campaign and pairs only
if item is None:
    recruitment = finished_recruitment(ws, rater)
    if recruitment is not None:  # the study's end page: completion code, redirect to the platform
        done = rater_overall_progress(ws, rater).done
        show_study_end(recruitment, done, campaign_kind(ws.conn, recruitment.campaign))
    else:
        thank_you()
    st.stop()
show_item(ws, rater, item)  # a pair or a triplet: the panel shows either
