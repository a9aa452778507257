"""Shown to a recruitment link's visitor who cannot join: the study is full or closed, the id is missing, …"""

import streamlit as st

visit = st.session_state.get("cpdm_visit")
title, line = (visit.refusal if visit is not None and visit.refusal else
               ("This link is not valid", "Please open the study again from your platform's study page."))
st.title(title)
st.write(line)
