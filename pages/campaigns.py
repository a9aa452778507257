"""Researcher page: the campaigns, creating one from filtered pairs and a protocol, setting overlap."""

import pandas as pd
import streamlit as st

from cpdm.rating.campaigns import (
    DEFAULT_OVERLAP, create_campaign_from_filters, format_overlap, list_campaigns, pair_filter_options, select_pairs,
    set_campaign_status, set_overlap,
)
from cpdm.errors import CpdmError
from cpdm.rating.protocol import list_protocol_files, load_protocol_file, parse_protocol
from cpdm.app.ui import require_researcher

ws, rater = require_researcher()

st.title("Campaigns")
campaigns = list_campaigns(ws)
if campaigns:
    st.dataframe(
        pd.DataFrame([{**c, "overlap": format_overlap(c["overlap"])} for c in campaigns]),
        hide_index=True, width="stretch",
    )
else:
    st.info("No campaigns yet: create one below.")

st.header("Create a campaign")
options = pair_filter_options(ws)
protocol_files = list_protocol_files()
with st.form("create_campaign"):
    name = st.text_input("Name", placeholder="monet-esd-2026")
    c1, c2, c3 = st.columns(3)
    categories = c1.multiselect("Category", options["category"], help="Empty: all categories")
    artists = c2.multiselect("Artist", options["artist"], help="Empty: all artists")
    variants = c3.multiselect("Variant", options["variant"], help="Empty: all model variants")
    protocol_choice = st.selectbox("Protocol", protocol_files, format_func=lambda p: p.name)
    uploaded = st.file_uploader("…or upload a protocol file (TOML)", type=["toml"])
    o1, o2, o3 = st.columns(3)
    artist_overlap = o1.number_input("Ratings per pair from artists", 0, 100, DEFAULT_OVERLAP["artist"])
    lay_overlap = o2.number_input("Ratings per pair from lay raters", 0, 100, DEFAULT_OVERLAP["lay"])
    include_checks = o3.checkbox("Mix in attention checks", value=True)
    created = st.form_submit_button("Create campaign", type="primary")

if created:
    try:
        if uploaded is not None:
            protocol_text = uploaded.getvalue().decode("utf-8")
            parse_protocol(protocol_text)
        elif protocol_choice is not None:
            protocol_text, _ = load_protocol_file(protocol_choice)
        else:
            protocol_text = None
        campaign_id, n_pairs = create_campaign_from_filters(
            ws, name, categories=categories, artists=artists, variants=variants, protocol_text=protocol_text,
            overlap={"artist": int(artist_overlap), "lay": int(lay_overlap)}, include_checks=include_checks,
        )
    except UnicodeDecodeError:
        st.error("The uploaded protocol is not UTF-8 text.")
    except CpdmError as exc:
        st.error(str(exc))
    else:
        st.success(f"Campaign {name.strip()!r} created with {n_pairs} pairs.")
        st.rerun()
else:
    st.caption(f"{len(select_pairs(ws))} pairs in the workspace.")

if campaigns:
    st.header("Change a campaign")
    by_name = {c["name"]: c for c in campaigns}
    chosen = by_name[st.selectbox("Campaign", list(by_name))]
    o1, o2, o3 = st.columns(3)
    new_artist = o1.number_input("Artists per pair", 0, 100, int(chosen["overlap"].get("artist", 0)),
                                 key=f"ov_artist_{chosen['id']}")
    new_lay = o2.number_input("Lay raters per pair", 0, 100, int(chosen["overlap"].get("lay", 0)),
                              key=f"ov_lay_{chosen['id']}")
    if o3.button("Set overlap"):
        try:
            set_overlap(ws, chosen["id"], {"artist": int(new_artist), "lay": int(new_lay)})
            st.rerun()
        except CpdmError as exc:
            st.error(str(exc))
    flip = "closed" if chosen["status"] == "open" else "open"
    if st.button(f"Mark {chosen['name']!r} {flip}"):
        set_campaign_status(ws, chosen["id"], flip)
        st.rerun()
