"""The rating panel: one pair (or, in a 2AFC campaign, one triplet), its questions and Submit, answered in the
browser and sent once.

``model`` holds what is testable without Streamlit (the data the panel is
given, the check and saving of what it sends); ``widget`` mounts it in a
page (``panel.js`` and ``panel.css`` are its browser side).
"""

from cpdm.app.answer_panel.model import (
    CHOICES,
    Notice,
    PanelEvent,
    PanelImage,
    handle_event,
    is_triplet,
    item_images,
    nonce_for,
    panel_data,
    panel_message,
    parse_event,
    read_panel_message,
)

__all__ = ["CHOICES", "Notice", "PanelEvent", "PanelImage", "handle_event", "is_triplet", "item_images", "nonce_for",
           "panel_data", "panel_message", "parse_event", "read_panel_message"]
