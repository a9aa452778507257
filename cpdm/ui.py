"""What every Streamlit page needs before it renders: the workspace and who is signed in.

``app.py`` signs the visitor in and puts the open workspace and the rater in
``st.session_state``; pages call one of these guards first. ``.get`` keeps a
page opened without going through ``app.py`` to a polite refusal.
"""

from __future__ import annotations

import streamlit as st


def signed_in():
    """The open workspace and the signed-in rater (None when nobody is signed in)."""
    return st.session_state.get("cpdm_ws"), st.session_state.get("cpdm_rater")


def require_researcher():
    """The workspace and rater, or stop the page with a refusal unless a researcher is signed in."""
    ws, rater = signed_in()
    if ws is None or rater is None or rater.role != "researcher":
        st.error("This page is for researchers.")
        st.stop()
    return ws, rater


def require_rater():
    """The workspace and rater, or stop the page unless someone with a valid link is signed in."""
    ws, rater = signed_in()
    if ws is None or rater is None:
        st.error("This link is not valid.")
        st.stop()
    return ws, rater


def session_cached(name: str, key, compute):
    """``compute()``, kept in this browser session under ``name`` until ``key`` changes.

    Analyses take seconds; the pages rerun on every click. Only the latest
    result per ``name`` is kept, so memory stays bounded.
    """
    cache = st.session_state.setdefault(name, {})
    if key not in cache:
        value = compute()
        cache.clear()
        cache[key] = value
    return cache[key]


def pick_campaign(ws, key: str, container=None) -> dict:
    """The campaign chosen in a select box (the newest preselected); stops the page when there is none.

    ``container`` is where the box goes (a column, say); the page by default.
    Returns the campaign's row as ``cpdm.rating.campaigns.list_campaigns`` gives it.
    """
    from cpdm.rating.campaigns import list_campaigns

    campaigns = list_campaigns(ws)
    if not campaigns:
        st.info("No campaigns yet.")
        st.stop()
    names = [c["name"] for c in campaigns]
    name = (container or st).selectbox("Campaign", names, index=len(names) - 1, key=key)
    return campaigns[names.index(name)]
