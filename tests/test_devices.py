"""A protocol may ask for desktop only: the field, telling a phone from a computer, and no pair assigned on a phone."""

from __future__ import annotations

import pytest

from cpdm.rating.auth import create_rater
from cpdm.rating.device_gate import device_refused
from cpdm.rating.devices import device_of
from cpdm.rating.protocol import ProtocolError, parse_protocol
from cpdm.rating.recruit import next_item_for
from tests.rating_fixtures import default_protocol_text, make_world

IPHONE = ("Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
          "Version/18.1 Mobile/15E148 Safari/604.1")
ANDROID_PHONE = ("Mozilla/5.0 (Linux; Android 15; Pixel 9) AppleWebKit/537.36 (KHTML, like Gecko) "
                 "Chrome/131.0.0.0 Mobile Safari/537.36")
ANDROID_TABLET = ("Mozilla/5.0 (Linux; Android 14; SM-X710) AppleWebKit/537.36 (KHTML, like Gecko) "
                  "Chrome/131.0.0.0 Safari/537.36")
WINDOWS = ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
           "Chrome/131.0.0.0 Safari/537.36")
MAC = ("Mozilla/5.0 (Macintosh; Intel Mac OS X 14_7) AppleWebKit/605.1.15 (KHTML, like Gecko) "
       "Version/18.1 Safari/605.1.15")


def desktop_only_protocol() -> str:
    return 'devices = ["desktop"]\n' + default_protocol_text(background=False)


@pytest.mark.parametrize("agent, device", [(IPHONE, "phone"), (ANDROID_PHONE, "phone"), (ANDROID_TABLET, "phone"),
                                           (WINDOWS, "desktop"), (MAC, "desktop"), ("", "desktop"), (None, "desktop")])
def test_device_of_reads_the_user_agent(agent, device):
    assert device_of(agent) == device


def test_devices_is_a_protocol_field_every_device_by_default():
    assert parse_protocol(default_protocol_text(background=False)).devices == ("desktop", "phone")
    assert parse_protocol(desktop_only_protocol()).devices == ("desktop",)


@pytest.mark.parametrize("value, message", [('"desktop"', "must be a non-empty list"),
                                            ("[]", "must be a non-empty list"),
                                            ('["desktop", "watch"]', "unknown device 'watch'")])
def test_a_bad_devices_field_is_refused_by_name(value, message):
    with pytest.raises(ProtocolError, match=message):
        parse_protocol(f"devices = {value}\n" + default_protocol_text(background=False))


def test_on_a_phone_a_desktop_only_study_assigns_nothing(ws):
    make_world(ws, 2, 1, overlap={"artist": 1, "lay": 1}, protocol_text=desktop_only_protocol())
    rater, _ = create_rater(ws, "Ada", "artist")
    assert device_refused(ws, rater, "phone")
    assert next_item_for(ws, rater, device="phone") is None
    assert ws.conn.execute("SELECT COUNT(*) FROM assignments").fetchone()[0] == 0
    assert not device_refused(ws, rater, "desktop")
    item = next_item_for(ws, rater, device="desktop")
    assert item is not None
    # The pair now held on the computer is not shown on the phone, and no other is claimed there.
    assert device_refused(ws, rater, "phone") and next_item_for(ws, rater, device="phone") is None
    assert ws.conn.execute("SELECT COUNT(*) FROM assignments").fetchone()[0] == 1


def test_on_a_phone_only_the_campaigns_that_allow_it_assign(ws):
    desktop = make_world(ws, 2, 1, overlap={"artist": 1, "lay": 1}, protocol_text=desktop_only_protocol(),
                         name="desktop study")
    anywhere = make_world(ws, 2, 1, overlap={"artist": 1, "lay": 1}, name="any device study")
    rater, _ = create_rater(ws, "Ada", "artist")
    assert not device_refused(ws, rater, "phone")
    item = next_item_for(ws, rater, device="phone")
    assert item.campaign == anywhere.campaign != desktop.campaign
