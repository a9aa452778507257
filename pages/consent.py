"""First visit: the protocol's instructions and a consent confirmation."""

import streamlit as st

from cpdm.app.participant_ui import instructions_and_consent
from cpdm.rating.auth import record_consent
from cpdm.rating.submit import protocol_for_rater
from cpdm.app.ui import plain, require_rater

ws, rater = require_rater()
protocol = protocol_for_rater(ws, rater)

st.title(f"Welcome, {plain(rater.name)}")
agreed = instructions_and_consent(protocol, key="consent_agree")
if st.button("Start rating", type="primary", disabled=not agreed):
    record_consent(ws, rater.id)
    st.rerun()
