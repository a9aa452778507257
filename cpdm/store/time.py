"""Time stamps: one text format for every moment the workspace stores.

Every stored time is ISO-8601 UTC with microseconds and a ``Z``
(``2026-01-05T09:00:00.000000Z``, :data:`TIME_FORMAT`). Such strings sort in
time order, so SQL compares them as text. SQL defaults write the same shape
(:data:`SQL_NOW`); older workspaces hold milliseconds or whole seconds, which
:func:`parse_time` still reads.
"""

from __future__ import annotations

from datetime import datetime, timezone

TIME_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"
# The same shape from SQLite: its %f is seconds with milliseconds, padded here to microseconds.
SQL_NOW = "strftime('%Y-%m-%dT%H:%M:%f000Z', 'now')"


def utc_now() -> datetime:
    """The current moment, timezone-aware in UTC."""
    return datetime.now(timezone.utc)


def format_time(moment: datetime) -> str:
    """ISO-8601 UTC with microseconds (``TIME_FORMAT``); such strings sort in time order.

    Formatted by hand: strftime costs more than the rest of a claim's Python.
    """
    t = moment.astimezone(timezone.utc)
    return "%04d-%02d-%02dT%02d:%02d:%02d.%06dZ" % (t.year, t.month, t.day, t.hour, t.minute, t.second, t.microsecond)


def parse_time(text: str) -> datetime:
    """The UTC moment a stored time stamp names.

    Reads :data:`TIME_FORMAT` and the shapes older workspaces hold
    (milliseconds or whole seconds, with ``Z``); anything else is a
    ``ValueError``. strptime is slow; fromisoformat reads these texts.
    """
    if not (isinstance(text, str) and text.endswith("Z") and text[10:11] == "T" and len(text) in (20, 24, 27)):
        raise ValueError(f"not a cpdm time stamp (want {TIME_FORMAT}): {text!r}")
    moment = datetime.fromisoformat(text[:-1])
    if moment.tzinfo is not None:
        raise ValueError(f"not a cpdm time stamp (want {TIME_FORMAT}): {text!r}")
    return moment.replace(tzinfo=timezone.utc)
