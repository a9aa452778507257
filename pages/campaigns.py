"""Researcher page: the campaigns, creating one from filtered pairs and a protocol, setting overlap."""

import pandas as pd
import streamlit as st

from cpdm.analysis.data import neutralise_formulas
from cpdm.analysis.rater_export import approvals_frame, rater_frame
from cpdm.rating import recruit
from cpdm.rating.campaigns import (
    DEFAULT_OVERLAP, format_overlap, list_campaigns, pair_filter_options, select_pairs,
    set_campaign_status, set_overlap,
)
from cpdm.errors import CpdmError
from cpdm.rating.protocol import list_protocol_files, load_protocol_file, parse_protocol
from cpdm.store.time import utc_now
from cpdm.rating.triplets import create_campaign_for_protocol
from cpdm.store.workspace import TRIPLET_DESIGNS, open_workspace
from cpdm.app.ui import plain, require_researcher

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
    design = st.selectbox("Triplets (2afc protocols only)", TRIPLET_DESIGNS, index=TRIPLET_DESIGNS.index("balanced"),
                          help="How a comparative campaign's triplets are chosen: random; balanced (each generation "
                               "about equally often, each anchor the same number); active (a balanced warm-up, then "
                               "the triplets that can still move w). A rating protocol ignores it.")
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
        campaign_id, n_items, items = create_campaign_for_protocol(
            ws, name, protocol_text, design=design, categories=categories, artists=artists, variants=variants,
            overlap={"artist": int(artist_overlap), "lay": int(lay_overlap)}, include_checks=include_checks,
        )
    except UnicodeDecodeError:
        st.error("The uploaded protocol is not UTF-8 text.")
    except CpdmError as exc:
        st.error(str(exc))
    else:
        st.success(f"Campaign {name.strip()!r} created with {n_items} {items}.")
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


# --- Recruitment links (cpdm.rating.recruit): crowd platforms' participants join through one link -----------------
def csv_download(table, campaign_id: int):
    """A download button's deferred contents: ``table(ws, campaign_id)`` as CSV, formulas disarmed.

    Streamlit runs it on another thread when the button is clicked, so it opens the workspace itself.
    """
    def contents() -> str:
        with open_workspace(ws.root) as own:
            return neutralise_formulas(table(own, campaign_id)).to_csv(index=False)

    return contents


if campaigns:
    st.header("Recruitment links")
    st.markdown("One study link for a crowd platform (Prolific, MTurk, a participant pool): every participant "
                "opens it with their platform id, is admitted after consent up to the quota, rates their pairs and "
                "gets the completion code. `cpdm campaign recruit` does the same from a terminal.")
    chosen = by_name[st.selectbox("Campaign", list(by_name), key="recruit_campaign")]
    links = recruit.list_links(ws, chosen["id"])
    if links:
        st.dataframe(pd.DataFrame([recruit.link_row(link) for link in links]), hide_index=True, width="stretch")
        for link in links:
            if link.state(utc_now()) != "closed" and st.button(
                    f"Close link {link.id} ({link.role}) now", key=f"recruit_close_{link.id}",
                    icon=":material/block:", help="No new raters from now on; admitted raters can finish."):
                recruit.close_link(ws, link.id)
                st.rerun()
    with st.form("recruit_link", clear_on_submit=True):
        r1, r2, r3 = st.columns(3)
        role = r1.selectbox("Role", ["lay", "artist"], key="recruit_role")
        quota = r2.number_input("Quota (raters)", 0, 100_000, 100, key="recruit_quota", help="0: no limit")
        per_rater = r3.number_input("Pairs per rater", 0, 10_000, 40, key="recruit_per_rater",
                                    help="Attention checks included; 0: all the campaign has for them")
        r4, r5, r6 = st.columns(3)
        id_param = r4.text_input("Participant id parameter", "PROLIFIC_PID", key="recruit_id_param",
                                 help="The query parameter the platform adds; empty: the app makes one per visitor")
        code = r5.text_input("Completion code", key="recruit_code")
        closes = r6.date_input("Closes at the end of", value=None, key="recruit_closes")
        completion_url = st.text_input("Completion address (redirect)", key="recruit_url",
                                       placeholder="https://app.prolific.com/submissions/complete?cc=…")
        base_url = st.text_input("App address", value=(st.context.url or "http://127.0.0.1:8501").split("?")[0]
                                 .rstrip("/").rsplit("/campaigns", 1)[0], key="recruit_base_url")
        made = st.form_submit_button("Create recruitment link", type="primary")
    if made:
        try:
            link, secret = recruit.create_link(
                ws, chosen["id"], role, quota=int(quota) or None, per_rater=int(per_rater) or None,
                id_param=id_param.strip() or None, completion_code=code.strip() or None,
                completion_url=completion_url.strip() or None,
                closes_at=recruit.parse_closes(closes.isoformat()) if closes else None)
        except CpdmError as exc:
            st.error(plain(exc))
        else:
            st.success(f"Recruitment link {link.id}: {plain(recruit.describe_link(link))}. Copy it now: it is "
                       "shown only once.")
            st.code(recruit.link_url(secret, base_url), language=None)
            if link.id_param:
                st.caption(f"The platform must add &{link.id_param}=<participant id> to it.")
            note = recruit.capacity_note(ws, link)
            if note:
                st.warning(note)
    st.subheader("Who rated")
    st.caption("One row per rater; the identified table and the approvals hold platform ids: keep them with the "
               "study's personal data.")
    d1, d2, d3 = st.columns(3)
    stem = chosen["name"]
    d1.download_button("Raters (CSV, pseudonymised)", csv_download(rater_frame, chosen["id"]), f"{stem}-raters.csv",
                       "text/csv", key="recruit_raters_csv", icon=":material/download:")
    d2.download_button("Raters with platform ids (CSV)",
                       csv_download(lambda own, c: rater_frame(own, c, identified=True), chosen["id"]),
                       f"{stem}-raters-identified.csv", "text/csv", key="recruit_identified_csv",
                       icon=":material/download:")
    d3.download_button("Approvals (CSV)", csv_download(approvals_frame, chosen["id"]), f"{stem}-approvals.csv",
                       "text/csv", key="recruit_approvals_csv", icon=":material/download:")
