"""The rating panel: one pair, its questions and Submit, answered in the browser and sent once.

``model`` holds what is testable without Streamlit (the data the panel is
given, the check and saving of what it sends); ``widget`` mounts it in a
page (``panel.js`` and ``panel.css`` are its browser side).
"""

from cpdm.app.answer_panel.model import (
    Notice,
    PanelEvent,
    PanelImage,
    handle_event,
    nonce_for,
    panel_data,
    panel_message,
    parse_event,
    read_panel_message,
)

__all__ = ["Notice", "PanelEvent", "PanelImage", "handle_event", "nonce_for", "panel_data", "panel_message",
           "parse_event", "read_panel_message"]
