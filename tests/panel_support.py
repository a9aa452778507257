"""The rating panel under AppTest: read what the page gave the panel, send what the panel would send.

AppTest has no browser, so the panel's JavaScript never runs; a submit is
delivered the way the browser delivers it, as the component's trigger value
on the next run, so the page's real callback handles it.
"""

from __future__ import annotations

import json

from streamlit.proto.WidgetStates_pb2 import WidgetStates
from streamlit.testing.v1 import AppTest

from cpdm.app.answer_panel import read_panel_message

PANEL_EVENT = "submit"


def panel(at: AppTest) -> dict | None:
    """The data the page gave the rating panel on the last run, images' bytes included (None when no panel is shown)."""
    found = at.get("bidi_component")
    return read_panel_message(found[0].proto.bytes) if found else None


def _add_submit(states: WidgetStates, component_id: str, value: dict) -> WidgetStates:
    """``states`` with ``value`` as the submit trigger of the panel ``component_id``."""
    trigger = states.widgets.add()
    trigger.id = f"$$STREAMLIT_INTERNAL_KEY_{component_id}__events"
    trigger.json_trigger_value = json.dumps([{"event": PANEL_EVENT, "value": value}])
    return states


def panel_id(at: AppTest) -> str:
    """The widget id of the panel the last run drew."""
    return at.get("bidi_component")[0].proto.id


def send_from_panel(at: AppTest, value: dict) -> AppTest:
    """Run the page again with ``value`` as the panel's submit event, as the browser would send it."""
    return at._run(_add_submit(at._tree.get_widget_states(), panel_id(at), value))


def send_with_first_run(fresh: AppTest, shown: AppTest, value: dict) -> AppTest:
    """Run a new session (``fresh``, not run yet) for the first time with a submit from the panel ``shown`` drew.

    That is what a browser still showing the panel sends after it reconnects
    to a new session (the server restarted): the submit reaches a session
    that has not drawn the panel yet, on the page the browser is showing.
    """
    fresh._page_hash = shown._finished_page_script_hash  # the page in the browser's address bar
    return fresh._run(_add_submit(WidgetStates(), panel_id(shown), value))


def answers_event(data: dict, answers: dict) -> dict:
    """The event the panel sends on Submit for the pair in ``data``."""
    return {"campaign": data["campaign"], "pair": data["pair"], "nonce": data["nonce"], "answers": answers}


def skip_event(data: dict, reason: str) -> dict:
    """The event the panel sends on Skip for the pair in ``data``."""
    return {"campaign": data["campaign"], "pair": data["pair"], "nonce": data["nonce"], "skip_reason": reason}
