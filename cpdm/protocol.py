"""Rating protocols: questions, scales, instructions, attention checks (TOML).

Placeholder parser; the full validation lives here once the rating app lands.
"""

from __future__ import annotations

import tomllib

from cpdm.errors import CpdmError


def parse_protocol(text: str) -> dict:
    """Parse protocol TOML; raise CpdmError naming the bad field."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise CpdmError(f"protocol is not valid TOML: {exc}") from exc
    if not data.get("questions"):
        raise CpdmError("protocol field 'questions' is missing or empty")
    return data
