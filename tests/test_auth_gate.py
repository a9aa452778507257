"""The app's one auth gate (``cpdm.app.ui``) on the paths that do not start in ``app.py``, through AppTest."""

from __future__ import annotations

import pytest
from streamlit.testing.v1 import AppTest

from cpdm.errors import CpdmError
from cpdm.rating.auth import create_rater, revoke_rater


def page_keeping_a_download():
    """A page that keeps the data callable of a download button made on demand, as Streamlit keeps it."""
    import streamlit as st

    from cpdm.app.ui import on_demand

    st.session_state["make_download"] = on_demand(lambda: b"the plot's bytes")


def test_a_download_made_on_demand_is_refused_once_the_link_is_revoked(ws):
    researcher, token = create_rater(ws, "lead", "researcher")
    at = AppTest.from_function(page_keeping_a_download)
    at.session_state["cpdm_ws"] = ws
    at.session_state["cpdm_rater"] = researcher
    at.session_state["cpdm_token"] = token
    at.run()
    assert not at.exception, at.exception
    make_download = at.session_state["make_download"]
    assert make_download() == b"the plot's bytes"
    revoke_rater(ws, researcher.id)  # the button is still on the researcher's screen
    with pytest.raises(CpdmError, match="no longer valid"):
        make_download()
