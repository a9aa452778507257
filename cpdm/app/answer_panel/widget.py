"""The rating panel in a Streamlit page: a ``st.components.v2`` component from ``panel.js`` and ``panel.css``.

The page calls :func:`show_item` with the rater's current item, a pair or a
triplet (one panel shows both; see :mod:`cpdm.app.answer_panel.model`). Images go to
the browser as the stored files' bytes, unchanged, inside the panel's own
message (:func:`cpdm.app.answer_panel.model.panel_message`): never at a
``/media/…`` address, which Streamlit serves to anyone who has it, signed in
or not (and ``st.image`` would re-encode them as JPEG). A submit from the
panel reaches :func:`cpdm.app.answer_panel.model.handle_event` in a callback, so
the same run that saves it draws the next pair.
"""

from __future__ import annotations

import functools
from importlib.resources import files

import streamlit as st

from cpdm.app.answer_panel.model import (
    handle_event, item_images, nonce_for, panel_data, panel_image, panel_message,
)
from cpdm.app.ui import gated_callback

COMPONENT_NAME = "cpdm_answer_panel"
PANEL_KEY = "cpdm_answer_panel"
NOTICE_KEY = "cpdm_answer_panel_notice"
ROUND_KEY = "cpdm_answer_panel_round"
HANDLED_KEY = "cpdm_answer_panel_handled"  # set when a submit was saved before this run of the page
PANEL_HTML = '<div class="cpdm-panel"></div>'
# Streamlit leaves 6rem above the first element; the panel needs that room for the images, and keeps only
# what clears Streamlit's header bar (3.75rem, opaque: with less, it hides the progress line of a study that
# has no demo banner above the panel). On a narrow screen its side padding is trimmed too, so the panel gets
# the width (nothing in the page is wider than it).
PAGE_CSS = (
    "<style>[data-testid='stMainBlockContainer'] {padding-top: 4rem; padding-bottom: 1rem;}"
    "@media (max-width: 700px) {[data-testid='stMainBlockContainer'] {padding-left: 0.6rem; padding-right: 0.6rem;}}"
    "</style>"
)


@functools.cache
def _panel():
    """The registered component (once per process; Streamlit copies it onto each runtime that mounts it)."""
    asset = files(__package__)
    return st.components.v2.component(
        COMPONENT_NAME,
        html=PANEL_HTML,
        css=asset.joinpath("panel.css").read_text(encoding="utf-8"),
        js=asset.joinpath("panel.js").read_text(encoding="utf-8"),
    )


def _save(ws, rater, event) -> None:
    """Save one submit from the panel, and keep what the rater must be told."""
    st.session_state[NOTICE_KEY] = handle_event(ws, rater, event)
    st.session_state[ROUND_KEY] = st.session_state.get(ROUND_KEY, 0) + 1
    st.session_state[HANDLED_KEY] = True


def _on_submit(ws, rater) -> None:
    """Save the panel's submit before the page runs again."""
    event = (st.session_state.get(PANEL_KEY) or {}).get("submit")
    if event is not None:
        _save(ws, rater, event)


def show_item(ws, rater, item) -> None:
    """Draw the rating panel for the rater's current item (an ``Item`` or a ``TripletItem``)."""
    from cpdm.rating.assignment import protocol_for
    from cpdm.rating.submit import rater_overall_progress

    handled = st.session_state.pop(HANDLED_KEY, False)
    images = {slot: panel_image(ws, sha256) for slot, sha256 in item_images(item).items()}
    data = panel_data(
        item, protocol_for(ws, item.campaign), rater_overall_progress(ws, rater), images, nonce_for(item, rater),
        notice=st.session_state.pop(NOTICE_KEY, None), round_=st.session_state.get(ROUND_KEY, 0),
    )
    st.html(PAGE_CSS)
    result = _panel()(key=PANEL_KEY, data=panel_message(data, images),
                      on_submit_change=gated_callback(functools.partial(_on_submit, ws, rater)))
    # Streamlit runs a widget's callback only if an earlier run of the session drew the widget. The
    # first run of a new session has none: after a reconnect to a restarted server (or one that
    # dropped the session while the rater was away), the panel's first submit arrives with that run
    # and would be lost, the panel left waiting. It is still in what the panel returns: save it here
    # (this run passed the app's sign-in gate like every other).
    missed = None if handled else result.get("submit")
    if missed is not None:
        _save(ws, rater, missed)
        st.rerun()  # draw the next pair, as after a submit the callback saved
