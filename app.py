"""cpdm rating app (Streamlit entry point): login by invite token, pages by role.

Run with ``cpdm serve``; the workspace comes from $CPDM_WORKSPACE (default
annotations/workspace). ``cpdm serve`` runs this file from a main script that
has no ``pages/`` beside it (``streamlit run app.py`` would let Streamlit serve
page files without this sign-in until someone opened ``/``), so page files are
named by absolute paths. Every visitor needs an invite link
``http://HOST:8501/?token=…`` (deep links such as ``/rate?token=…`` work too):

- artists and lay raters see the instructions and consent once, then the
  campaign protocol's questions about them (if it has any), then the rating
  page;
- researchers see the pages in RESEARCHER_PAGES;
- anyone else sees only "this link is not valid".

A crowd platform's participants arrive through a recruitment link instead
(``/?join=SECRET&PROLIFIC_PID=…``, see ``cpdm.rating.recruit``): they see the
consent page, are admitted as raters when they agree (or are told the study
is full or closed), rate their pairs and reach the end page with the
completion code. Once admitted, they sign in like invited raters, by a token
derived from the link's secret and their platform id.

``/`` and any app path that is not one of the visitor's pages (``/rate`` for a
researcher, ``/rate`` before consent) forward to the visitor's first page, so
no link to the app brings up Streamlit's "Page not found" notice.

Pages read the open workspace and the signed-in rater from
``st.session_state["cpdm_ws"]`` and ``st.session_state["cpdm_rater"]``.
"""

from __future__ import annotations

import os
from pathlib import Path

import streamlit as st

from cpdm.rating import recruit
from cpdm.rating.background import background_due
from cpdm.errors import CpdmError
from cpdm.store.workspace import DEFAULT_WORKSPACE, open_workspace
from cpdm.app.ui import TOKEN_KEY, WORKSPACE_KEY, sign_in

st.set_page_config(page_title="cpdm: rate image pairs", page_icon=":material/compare:", layout="wide")

# Page files, by absolute path: Streamlit's main script may live in another folder.
PAGES_DIR = Path(__file__).resolve().parent / "pages"

# Researcher menu: one line per page; the first is the researchers' home.
RESEARCHER_PAGES = [
    st.Page(PAGES_DIR / "campaigns.py", title="Campaigns", icon=":material/folder_open:", url_path="campaigns"),
    st.Page(PAGES_DIR / "raters.py", title="Raters", icon=":material/group:", url_path="raters"),
    st.Page(PAGES_DIR / "progress.py", title="Progress", icon=":material/monitoring:", url_path="progress"),
    st.Page(PAGES_DIR / "analysis.py", title="Analysis", icon=":material/analytics:", url_path="analysis"),
    st.Page(PAGES_DIR / "calibration.py", title="Calibration", icon=":material/tune:", url_path="calibration"),
    st.Page(PAGES_DIR / "jobs.py", title="Jobs", icon=":material/memory:", url_path="jobs"),
]
RATER_PAGE = st.Page(PAGES_DIR / "rate.py", title="Rate", url_path="rate")
CONSENT_PAGE = st.Page(PAGES_DIR / "consent.py", title="Welcome", url_path="welcome")
BACKGROUND_PAGE = st.Page(PAGES_DIR / "about_you.py", title="About you", url_path="about-you")
INVALID_PAGE = st.Page(PAGES_DIR / "invalid.py", title="Link not valid", url_path="invalid")
# Recruitment links (cpdm.rating.recruit): consent before admission, and why a visitor cannot join.
JOIN_PAGE = st.Page(PAGES_DIR / "join.py", title="Welcome", url_path="start")
STUDY_REFUSED_PAGE = st.Page(PAGES_DIR / "study_refused.py", title="Study", url_path="study")
# Every path the app serves to someone. A link to any of them (an old or
# forwarded link, or one for another role) leads to the visitor's own home page.
APP_URL_PATHS = [page.url_path for page in [*RESEARCHER_PAGES, RATER_PAGE, CONSENT_PAGE, BACKGROUND_PAGE,
                                             INVALID_PAGE, JOIN_PAGE, STUDY_REFUSED_PAGE]]
# The internal name of the page at "/" (Streamlit serves its default page at the root whatever its url_path).
ROOT_URL_PATH = "home"


def workspace():
    """This session's open workspace (one SQLite connection per browser session)."""
    path = os.environ.get("CPDM_WORKSPACE") or str(DEFAULT_WORKSPACE)
    ws = st.session_state.get(WORKSPACE_KEY)
    if ws is None or st.session_state.get("cpdm_ws_path") != path:
        ws = open_workspace(path)
        st.session_state[WORKSPACE_KEY], st.session_state["cpdm_ws_path"] = ws, path
    return ws


def pages_for(rater, visit=None) -> tuple[list, str]:
    """The pages a visitor may reach (their home page first), and where the menu goes.

    ``visit`` is a recruitment link's visit (``cpdm.rating.recruit.Visit``) of
    a visitor not signed in yet.
    """
    if rater is None:
        if visit is not None:
            return [JOIN_PAGE if visit.state == "may_join" else STUDY_REFUSED_PAGE], "hidden"
        return [INVALID_PAGE], "hidden"
    if rater.role == "researcher":
        return RESEARCHER_PAGES, "sidebar"
    if rater.consented_at is None:
        return [CONSENT_PAGE], "hidden"
    if background_due(ws, rater) is not None:  # the protocol's questions about the rater, once per campaign
        return [BACKGROUND_PAGE], "hidden"
    return [RATER_PAGE], "hidden"


def forward_to(home, url_path: str, *, root: bool = False):
    """A hidden page at ``url_path`` (or at "/" when ``root``) that sends the visitor on to ``home``.

    Streamlit serves its default page at "/" only: a deep link naming that page's
    own path, or a page this visitor may not see, would otherwise bring up
    Streamlit's "Page not found" notice over the page. Forwarding also puts the
    home page's path in the address bar, so the menu marks it.
    """
    def forward():
        st.switch_page(home, query_params=st.query_params.to_dict())  # keeps the token in the address

    return st.Page(forward, title=home.title, url_path=url_path, visibility="hidden", default=root)


def navigation_for(rater, visit=None) -> tuple[list, str]:
    """The visitor's pages plus forwards from "/" and every other app path to their home page."""
    pages, position = pages_for(rater, visit)
    home, own_paths = pages[0], {page.url_path for page in pages}
    forwards = [forward_to(home, ROOT_URL_PATH, root=True)]
    forwards += [forward_to(home, path) for path in APP_URL_PATHS if path not in own_paths]
    return [*pages, *forwards], position


try:
    ws = workspace()
except CpdmError as exc:
    st.error(f"The rating app cannot open its workspace: {exc}")
    st.stop()

# The token comes from the invite link. Moving between pages drops the URL's
# query string, so the session remembers the token and puts it back in the
# URL (a refresh then still signs in). The gate checks it again on every run
# (and fragments and callbacks pass it too), so a revoked link stops working at once.
rater = sign_in(ws)
visit = None
if rater is None and recruit.JOIN_PARAM in st.query_params:
    # A recruitment link: its secret and the platform id sign in a rater it admitted (cpdm.rating.recruit).
    st.session_state["cpdm_client"] = recruit.client_address(
        st.context.ip_address, st.context.headers.get("X-Forwarded-For"),
        trust_forwarded=os.environ.get("CPDM_TRUST_FORWARDED_FOR") == "1")
    visit = recruit.visit(ws, st.query_params.to_dict(), st.session_state["cpdm_client"])
    if visit.state == "admitted":
        rater, visit = sign_in(ws, visit.token), None
st.session_state["cpdm_visit"] = visit
if rater is not None and st.query_params.get("token") != st.session_state[TOKEN_KEY]:
    st.query_params["token"] = st.session_state[TOKEN_KEY]
if ws.is_demo:
    st.info("**Demo workspace**: tiny offline models and made-up ratings; nothing here is a real study.",
            icon=":material/science:")
pages, position = navigation_for(rater, visit)
st.navigation(pages, position=position).run()
