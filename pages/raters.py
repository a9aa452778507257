"""Researcher page: invite raters (one link each, shown once) and revoke links."""

import pandas as pd
import streamlit as st

from cpdm.rating.auth import create_rater, invite_url, list_raters, revoke_rater
from cpdm.errors import CpdmError
from cpdm.app.ui import plain, require_researcher

ws, rater = require_researcher()


def default_base_url() -> str:
    """The address this app was opened at, without path or query."""
    url = st.context.url or "http://127.0.0.1:8501"
    return url.split("?")[0].rstrip("/").rsplit("/raters", 1)[0]


st.title("Raters")
st.header("Invite a rater")
with st.form("invite", clear_on_submit=True):
    c1, c2 = st.columns(2)
    name = c1.text_input("Name or pseudonym")
    role = c2.selectbox("Role", ["artist", "lay", "researcher"])
    base_url = st.text_input("App address", value=default_base_url())
    invited = st.form_submit_button("Create invite link", type="primary")
if invited:
    try:
        new_rater, token = create_rater(ws, name, role)
    except CpdmError as exc:
        st.error(str(exc))
    else:
        st.success(f"Invite link for {plain(new_rater.name)} ({new_rater.role}). Copy it now: it is shown only once.")
        st.code(invite_url(token, base_url), language=None)

raters = list_raters(ws)
st.header("All raters")
if raters:
    st.dataframe(
        pd.DataFrame([{
            "id": r.id, "name": r.name, "role": r.role, "consented": bool(r.consented_at),
            "flagged": r.flagged, "revoked": r.disabled, "simulated": r.simulated,
        } for r in raters]),
        hide_index=True, width="stretch",
    )
    active = [r for r in raters if not r.disabled and r.id != rater.id]
    if active:
        st.subheader("Revoke a link")
        target = st.selectbox("Rater", active, format_func=lambda r: f"{r.id}: {r.name} ({r.role})")
        if st.button("Revoke link"):
            revoke_rater(ws, target.id)
            st.rerun()
else:
    st.info("No raters yet.")
