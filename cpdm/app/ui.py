"""What every Streamlit page needs before it renders: the workspace and who is signed in.

``app.py`` signs the visitor in through :func:`sign_in`, the app's one auth
gate, and puts the open workspace and the rater in ``st.session_state``;
pages call one of the ``require_*`` guards first. ``.get`` keeps a page opened
without going through ``app.py`` to a polite refusal.

A page's full run starts in ``app.py``, but two kinds of run do not: a
fragment's own rerun (``run_every``) and a widget's callback, which Streamlit
calls before any page code. Both pass the same gate, through
:func:`gated_fragment` and :func:`gated_callback`, so a revoked link stops
working at the next run of anything; a download made on demand
(:func:`on_demand`) checks the same token before it is made.

Images and plots go to the browser inside the page (:func:`show_png`), never
at a ``/media/…`` address, which Streamlit serves to anyone who has it.
"""

from __future__ import annotations

import functools
import re

import streamlit as st

from cpdm.errors import CpdmError
from cpdm.rating import recruit
from cpdm.rating.auth import rater_for_token
from cpdm.store.images import data_uri
from cpdm.store.workspace import open_workspace

WORKSPACE_KEY = "cpdm_ws"
RATER_KEY = "cpdm_rater"
TOKEN_KEY = "cpdm_token"

# Every ASCII punctuation character: CommonMark lets a backslash make any of them
# literal, which also disarms Streamlit's own syntax (:red[…], :material/…:, $…$).
_MARKDOWN_PUNCTUATION = re.compile(r"([!-/:-@\[-`{-~])")
# Streamlit also turns bare http://…, www.… and name@host.tld into links after parsing, escapes
# or not; an invisible word joiner after "http", "www" or "@" keeps them text.
_AUTOLINK_STARTS = re.compile(r"(?i)(https?(?=:)|www(?=\.)|@)")
WORD_JOINER = "\u2060"


def plain(text) -> str:
    """``text`` escaped for any Streamlit element that reads Markdown, so it shows exactly as typed.

    For what people typed (rater names): ``[x](http://…)`` must not become a link,
    nor ``**x**`` bold. Line breaks become spaces (titles and messages are one line);
    a bare address gets an invisible word joiner that keeps it from becoming a link.
    """
    text = _AUTOLINK_STARTS.sub(rf"\1{WORD_JOINER}", " ".join(str(text).split()))
    return _MARKDOWN_PUNCTUATION.sub(r"\\\1", text)


def signed_in():
    """The open workspace and the signed-in rater (None when nobody is signed in)."""
    return st.session_state.get(WORKSPACE_KEY), st.session_state.get(RATER_KEY)


def _session_token() -> str | None:
    """The invite token this session signs in with: the address's, else the one the session kept.

    A recruitment link (``?join=…``) names its own participant, so the
    session's earlier token does not sign it in.
    """
    token = st.query_params.get("token")
    if token is None and recruit.JOIN_PARAM not in st.query_params:
        token = st.session_state.get(TOKEN_KEY)
    return token


def sign_in(ws, token: str | None = None):
    """The auth gate: the active rater this session's invite token belongs to, checked in the database now.

    The token comes from the address (``?token=…``) or, once it worked, from
    the session: moving between pages drops the query string. The result
    replaces the session's rater, so a revoked link leaves nobody signed in.
    Returns None for a missing, unknown, malformed or revoked token.
    ``token`` signs in with that token instead (one a recruitment link just admitted).
    """
    token = token if token is not None else _session_token()
    rater = rater_for_token(ws, token)
    st.session_state[RATER_KEY] = rater
    if rater is not None:
        st.session_state[TOKEN_KEY] = token
    return rater


def still_signed_in() -> bool:
    """Pass the gate again: is the rater this page was drawn for still signed in, in the same role?"""
    ws, drawn_for = signed_in()
    if ws is None or drawn_for is None:
        return False
    rater = sign_in(ws)
    return rater is not None and (rater.id, rater.role) == (drawn_for.id, drawn_for.role)


def gated_fragment(*, run_every=None):
    """``st.fragment`` whose every run passes the auth gate first.

    A fragment's own rerun never goes through ``app.py``. When the gate
    refuses, the whole app runs again instead, and ``app.py`` shows the
    "not valid" page.
    """
    def decorate(body):
        @functools.wraps(body)
        def gated(*args, **kwargs):
            if not still_signed_in():
                st.rerun(scope="app")
            return body(*args, **kwargs)

        return st.fragment(gated, run_every=run_every)

    return decorate


def gated_callback(action):
    """A widget callback that acts only while the visitor is still signed in.

    Streamlit calls callbacks before the app's or the fragment's code runs, so
    they cannot rely on ``app.py``'s check; a refused one does nothing, and the
    run that follows shows the "not valid" page.
    """
    @functools.wraps(action)
    def gated(*args, **kwargs):
        if still_signed_in():
            action(*args, **kwargs)

    return gated


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


def on_demand(make):
    """``make`` as a download button's data: called when the button is pressed, if the link still works.

    Streamlit keeps a download's data at a ``/media/…`` address, open to
    anyone who has it, from the moment the button is drawn; made on demand it
    exists only after a signed-in researcher asks for it. Streamlit calls it
    outside any script run, on a thread of its own, so it checks this
    session's token itself, on a connection of its own (the session's
    belongs to its script thread).
    """
    ws, _ = signed_in()
    token = _session_token()

    def make_for_signed_in():
        with open_workspace(ws.root) as own:
            if rater_for_token(own, token) is None:
                raise CpdmError("the link of this session is no longer valid")
        return make()

    return make_for_signed_in


def show_png(png: bytes) -> None:
    """A PNG (a plot) shown from its bytes inside the page: never at a ``/media/…`` address."""
    st.image(data_uri(png, "image/png"))


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


def pick_campaign(ws, key: str, container=None, *, preselect=None) -> dict:
    """The campaign chosen in a select box; stops the page when there is none.

    Preselected: the campaign whose id ``preselect(ws)`` returns; by default the
    open campaign with the most ratings (``cpdm.rating.campaigns.busiest_campaign_id``).
    Every campaign stays selectable. ``container`` is where the box goes (a
    column, say); the page by default. Returns the campaign's row as
    ``cpdm.rating.campaigns.list_campaigns`` gives it.
    """
    from cpdm.rating.campaigns import busiest_campaign_id, list_campaigns

    campaigns = list_campaigns(ws)
    if not campaigns:
        st.info("No campaigns yet.")
        st.stop()
    names = [c["name"] for c in campaigns]
    preselected = [c["id"] for c in campaigns].index((preselect or busiest_campaign_id)(ws))
    name = (container or st).selectbox("Campaign", names, index=preselected, key=key)
    return campaigns[names.index(name)]
