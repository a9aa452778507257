"""A recruitment link's first visit: the study's instructions and consent; agreeing admits the visitor as a rater."""

from urllib.parse import urlencode

import streamlit as st

from cpdm.app.participant_ui import instructions_and_consent
from cpdm.rating.campaigns import get_campaign
from cpdm.rating.devices import device_of
from cpdm.rating.recruit import admit

ws, visit = st.session_state.get("cpdm_ws"), st.session_state.get("cpdm_visit")
if ws is None or visit is None or visit.state != "may_join":
    st.error("This link is not valid.")
    st.stop()
protocol = get_campaign(ws, visit.link.campaign).protocol

# A study for computers only turns a phone away before admission, which would take a place of its quota.
if device_of(st.context.headers.get("User-Agent")) not in protocol.devices:
    st.title("Please take part on a computer")
    st.write("This study asks for its images to be judged on a computer screen, not on a phone or tablet. "
             "You have not joined yet. Open this same link later on a computer to take part:")
    st.code(f"{st.context.url or ''}?{urlencode(st.query_params.to_dict())}", language=None, wrap_lines=True)
    st.stop()

st.title("Welcome")
agreed = instructions_and_consent(protocol, key="join_agree")
if st.button("Start", type="primary", disabled=not agreed, key="join_start"):
    admission = admit(ws, st.query_params.to_dict(), st.session_state["cpdm_client"])
    if admission.token is not None:
        st.session_state["cpdm_token"] = admission.token
        st.query_params["token"] = admission.token  # a refresh, or the link kept from here, signs them in
    st.rerun()  # admitted: the rating page; refused meanwhile (the study filled up): why
