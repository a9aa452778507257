"""What raters' pages show besides pairs: the protocol's instructions and consent, and a study's end page.

The end page is for raters recruited through a link (``cpdm.rating.recruit``).
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


def instructions_and_consent(protocol, key: str) -> bool:
    """The protocol's instructions and consent text, and its agreement box; whether the box is ticked."""
    st.subheader("How this works")
    st.markdown(protocol.instructions)
    st.markdown("**Keyboard:** press a digit to answer the highlighted question, **Enter** to submit the pair.")
    st.subheader("Consent")
    st.markdown(protocol.consent)
    return st.checkbox("I have read the above and agree", key=key)


def show_study_end(recruitment, pairs_done: int) -> None:
    """The end page for a rater who finished their link's study (``cpdm.rating.recruit.Recruitment``)."""
    st.title("Thank you!")
    st.write(f"You have finished the study: {pairs_done} pairs rated.")
    if recruitment.completion_code:
        st.markdown("Your completion code (enter it on your platform):")
        st.code(recruitment.completion_code, language=None)
    if recruitment.completion_url:
        st.link_button("Back to your platform to complete the study", recruitment.completion_url, type="primary")
        st.caption(f"You will be taken there in {REDIRECT_SECONDS} seconds.")
        redirect_after(recruitment.completion_url)
    elif not recruitment.completion_code:
        st.write("You can close this page.")
