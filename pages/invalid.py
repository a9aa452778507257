"""Shown for a missing, wrong, revoked or malformed invite link, and nothing else."""

import streamlit as st

st.title("This link is not valid")
st.write(
    "The link you opened does not belong to an active rater. It may have been "
    "mistyped, shortened by your mail program, or revoked. Please ask the study "
    "team for a new link."
)
