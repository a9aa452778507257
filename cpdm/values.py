"""Values given as text (command-line options, form fields, job parameters) read as what they mean."""

from __future__ import annotations

TRUE_WORDS = ("1", "true", "yes", "on")
FALSE_WORDS = ("0", "false", "no", "off")


def parse_bool(value) -> bool:
    """A bool, or its text (true/false, yes/no, on/off, 1/0, any case); ValueError for anything else."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in TRUE_WORDS:
        return True
    if text in FALSE_WORDS:
        return False
    raise ValueError(f"not true or false: {value!r}")
