"""Researcher page: a campaign's progress per role and per rater, as tables and a chart."""

import pandas as pd
import streamlit as st

from cpdm.rating.submit import campaign_status
from cpdm.app.ui import pick_campaign, require_researcher

ws, rater = require_researcher()

st.title("Progress")
status = campaign_status(ws, pick_campaign(ws, key="progress_campaign")["id"])
answers, items = ("judgments", "sets") if status["kind"] == "2afc" else ("ratings", "pairs")

st.subheader("Per role")
roles = pd.DataFrame(status["per_role"])
st.dataframe(roles, hide_index=True, width="stretch")
for row in status["per_role"]:
    if row["needed"]:
        st.progress(min(row["percent"] / 100, 1.0), text=f"{row['role']}: {row['done']} of {row['needed']} {answers}")

st.subheader("Per rater")
per_rater = pd.DataFrame(status["per_rater"])
if per_rater.empty:
    st.info("No raters have started yet.")
else:
    st.dataframe(per_rater, hide_index=True, width="stretch")
    st.bar_chart(per_rater, x="name", y="done", color="role", x_label="rater", y_label=f"{items} done")
