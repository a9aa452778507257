"""Which kind of device a visitor rates on, and whether a campaign's protocol lets them rate on it.

A protocol may ask for desktop only (``devices = ["desktop"]``): judging fine
detail on a phone's small screen is not the same task as on a monitor. The
device is read from the browser's User-Agent header, checked on the server
before any pair is assigned (:func:`cpdm.rating.recruit.device_refused`), so a phone visitor to such a campaign is told
so and holds nothing. The rule is the one browsers themselves follow for
"mobile" sites: "Mobile" (iPhone, Android phones, and iPads that announce
themselves so), "Android" (phones and tablets) or "iPhone" in the header.
"""

from __future__ import annotations

KNOWN_DEVICES = ("desktop", "phone")
ALL_DEVICES = KNOWN_DEVICES
_PHONE_MARKERS = ("mobile", "android", "iphone")


def device_of(user_agent: str | None) -> str:
    """``"phone"`` for a phone's or a touch tablet's browser, ``"desktop"`` otherwise (also with no header)."""
    text = (user_agent or "").lower()
    return "phone" if any(marker in text for marker in _PHONE_MARKERS) else "desktop"


def parse_devices(value, field: str = "devices") -> tuple[str, ...]:
    """A protocol's ``devices`` list, validated; every device when absent. Raises ValueError naming the problem."""
    if value is None:
        return ALL_DEVICES
    if not isinstance(value, list) or not value or not all(isinstance(item, str) for item in value):
        raise ValueError(f"protocol field '{field}' must be a non-empty list of device names "
                         f"({', '.join(KNOWN_DEVICES)})")
    unknown = [item for item in value if item not in KNOWN_DEVICES]
    if unknown:
        raise ValueError(f"protocol field '{field}' has unknown device {unknown[0]!r}; "
                         f"known: {', '.join(KNOWN_DEVICES)}")
    return tuple(device for device in KNOWN_DEVICES if device in value)


def allows(devices: tuple[str, ...], device: str) -> bool:
    """Whether a protocol with these ``devices`` may be rated on ``device``."""
    return device in devices
