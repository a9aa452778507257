"""What raters' pages show besides the items they judge: instructions and consent, the background questions, a
study's end page.

The background questions come from the campaign's protocol
(``cpdm.rating.background``); the end page is for raters recruited through a
link (``cpdm.rating.recruit``).
Crowd platforms expect every participant who finishes to come back with a
completion code, or through a completion address, whatever they answered
(failed attention checks included). Streamlit has no redirect: a
``st.components.v2`` component runs in the app page itself (no iframe, so no
sandbox in the way) and moves the whole tab on after a pause; the page also
shows a button to the same address.
"""

from __future__ import annotations

import functools

import streamlit as st

COMPONENT_NAME = "cpdm_redirect"
REDIRECT_SECONDS = 5
# The address arrives as data, never as markup: it is only ever assigned to location.
REDIRECT_JS = """
export default function (component) {
  const { data } = component;
  const timer = setTimeout(() => window.location.assign(data.url), data.delay_ms);
  return () => clearTimeout(timer);
}
"""


@functools.cache
def _redirect_component():
    return st.components.v2.component(COMPONENT_NAME, js=REDIRECT_JS)


def redirect_after(url: str, seconds: float = REDIRECT_SECONDS) -> None:
    """Move this browser tab to ``url`` after ``seconds`` (the page should also show a link to it)."""
    _redirect_component()(key=COMPONENT_NAME, data={"url": url, "delay_ms": int(seconds * 1000)})


# How the rating page is worked from a keyboard, by the kind of campaign (the protocol's ``kind``).
KEYBOARD_HELP = {
    "rating": "**Keyboard:** press a digit to answer the highlighted question, **Enter** to submit the pair.",
    "2afc": "**Keyboard:** for the highlighted question press **1** or **←** for AI image 1, **2** or **→** for "
            "AI image 2, **0** if you can't tell; **Enter** submits the set.",
}


def instructions_and_consent(protocol, key: str) -> bool:
    """The protocol's instructions and consent text, and its agreement box; whether the box is ticked."""
    st.subheader("How this works")
    st.markdown(protocol.instructions)
    st.markdown(KEYBOARD_HELP[getattr(protocol, "kind", "rating")])
    st.subheader("Consent")
    st.markdown(protocol.consent)
    return st.checkbox("I have read the above and agree", key=key)


def background_input(question, subject: str, previous, key: str):
    """The widget for one background question (about one artist, for a question asked per artist); its value.

    Shows the rater's earlier answer when they come back to the step.
    Returns the answer as ``cpdm.rating.background.check_answer`` takes it:
    None while nothing is chosen, or when the rater declines an optional question.
    """
    from cpdm.app.ui import plain

    label = question.text_for(plain(subject))  # the protocol's Markdown, with an artist's name as typed
    if question.type == "single":
        index = question.options.index(previous) if previous in question.options else None
        value = st.radio(label, question.options, index=index, key=key)
    elif question.type == "multiple":
        st.markdown(label)
        value = [option for index, option in enumerate(question.options)
                 if st.checkbox(option, value=option in (previous or ()), key=f"{key}_{index}")]
    elif question.type == "number":
        bounds = (int(question.min), int(question.max)) if question.integer else (question.min, question.max)
        value = st.number_input(label, *bounds, value=previous, step=1 if question.integer else None, key=key)
    else:
        value = st.text_input(label, value=previous or "", max_chars=question.max_length, key=key)
    declined = question.optional and st.checkbox("Prefer not to answer", key=f"{key}_declined")
    return None if declined else value


def show_study_end(recruitment, done: int, kind: str = "rating") -> None:
    """The end page for a rater who finished their link's study (``cpdm.rating.recruit.Recruitment``).

    ``done`` counts what they answered: pairs rated, or sets of images compared in a 2afc campaign (``kind``).
    """
    st.title("Thank you!")
    st.write(f"You have finished the study: {done} {'sets of images compared' if kind == '2afc' else 'pairs rated'}.")
    if recruitment.completion_code:
        st.markdown("Your completion code (enter it on your platform):")
        st.code(recruitment.completion_code, language=None)
    if recruitment.completion_url:
        st.link_button("Back to your platform to complete the study", recruitment.completion_url, type="primary")
        st.caption(f"You will be taken there in {REDIRECT_SECONDS} seconds.")
        redirect_after(recruitment.completion_url)
    elif not recruitment.completion_code:
        st.write("You can close this page.")
