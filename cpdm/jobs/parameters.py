"""What a job kind's parameters are: names, types, defaults and help, and how given values are checked.

A :class:`Parameter` says what a form shows and what ``check_against`` turns a
user's value into (ids from "1,2", a path that must exist, a number in its
range), so errors show when a job is enqueued, not when a worker claims it.
No torch is loaded here: an unlearn job's hyperparameters come from the
unlearning methods' table (:data:`cpdm.unlearning.REGISTRY`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cpdm.errors import CpdmError
from cpdm.unlearning import lookup
from cpdm.values import parse_bool

# Parameter types: what a value is converted to.
TYPES = ("str", "int", "float", "bool", "ids", "strings", "mapping", "path")
HYPERPARAMETERS = "hyperparameters"  # the unlearn parameter holding the method's hyperparameters


@dataclass(frozen=True)
class Parameter:
    """One parameter of a kind, as a form shows it: name, type, default and help.

    ``type`` is one of :data:`TYPES` (``ids``: a list of integer ids,
    ``strings``: a list of texts, ``path``: a file or folder, stored
    absolute). ``section`` names the dict parameter the value belongs in
    (``hyperparameters`` for an unlearning method's own parameters).
    """

    name: str
    type: str
    default: Any = None
    help: str = ""
    choices: tuple = ()
    required: bool = False
    minimum: float | None = None
    maximum: float | None = None
    section: str = ""



def _as_number(value, integer: bool):
    """An int or a finite float from a number or its text; ValueError otherwise (never from a bool)."""
    if isinstance(value, bool):
        raise ValueError
    if integer and isinstance(value, int):
        return value  # exactly, however large (a float keeps only 53 bits: seeds are 63)
    if integer and isinstance(value, str) and value.strip().lstrip("+-").isdigit():
        return int(value)
    number = float(value)
    if not math.isfinite(number):
        raise ValueError
    if integer:
        if not number.is_integer():
            raise ValueError
        return int(number)
    return number


def _as_list(value) -> list:
    """A list from a list or tuple, from text separated by commas, or from one number (a list of one)."""
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    if isinstance(value, (list, tuple)):
        return list(value)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return [value]  # `cpdm jobs add ... -p prompt_ids=1` reads the 1 as JSON: one id
    raise ValueError


_DESCRIBED = {"int": "an integer", "float": "a finite number", "bool": "true or false",
              "ids": "a list of integer ids", "strings": "a list of texts", "mapping": "a mapping of names to values",
              "str": "a text", "path": "a path"}


def _convert_value(parameter: Parameter, value):
    """``value`` as the parameter's type; ValueError when it is not one."""
    kind = parameter.type
    if kind in ("int", "float"):
        return _as_number(value, integer=kind == "int")
    if kind == "bool":
        return parse_bool(value)
    if kind == "ids":
        return [_as_number(item, integer=True) for item in _as_list(value)]
    if kind == "strings":
        return [str(item) for item in _as_list(value)]
    if kind == "mapping":
        if not isinstance(value, dict):
            raise ValueError
        return dict(value)
    if kind == "path":
        return str(Path(str(value)).expanduser().resolve())
    if not isinstance(value, (str, int, float)) or isinstance(value, bool):
        raise ValueError
    return str(value)


def _fresh(default):
    """A default as a new object: a job never shares a default's list or dict."""
    return type(default)(default) if isinstance(default, (list, dict)) else default


def convert(parameter: Parameter, value, kind_name: str):
    """The checked value of one parameter (None stays None for an optional one)."""
    label = f"{kind_name} job: {parameter.name}"
    if value is None or isinstance(value, str) and not value.strip():  # an empty form field: not given
        if parameter.required:
            raise CpdmError(f"{label} is required ({parameter.help})")
        return _fresh(parameter.default)
    try:
        converted = _convert_value(parameter, value)
    except (TypeError, ValueError):
        raise CpdmError(f"{label} must be {_DESCRIBED[parameter.type]}, got {value!r}") from None
    if parameter.required and converted in ("", []):
        raise CpdmError(f"{label} is required ({parameter.help})")
    if parameter.choices and converted not in parameter.choices:
        raise CpdmError(f"{label} must be one of {', '.join(map(str, parameter.choices))}, got {value!r}")
    items = converted if isinstance(converted, list) else [converted]
    for item in items:
        if isinstance(item, (int, float)) and not isinstance(item, bool):
            if parameter.minimum is not None and item < parameter.minimum:
                raise CpdmError(f"{label} must be at least {parameter.minimum:g}, got {item!r}")
            if parameter.maximum is not None and item > parameter.maximum:
                raise CpdmError(f"{label} must be at most {parameter.maximum:g}, got {item!r}")
    return converted


def check_against(kind_name: str, parameters: list[Parameter], given: dict | None) -> dict:
    """Complete parameters: unknown names refused, each value converted, defaults filled in."""
    if given is not None and not isinstance(given, dict):
        raise CpdmError(f"{kind_name} job: parameters must be a mapping, got {type(given).__name__}")
    given = dict(given or {})
    known = {parameter.name for parameter in parameters if not parameter.section}
    unknown = sorted(set(given) - known)
    if unknown:
        raise CpdmError(f"{kind_name} job has no parameter {', '.join(map(repr, unknown))} "
                        f"(known: {', '.join(sorted(known))})")
    checked = {}
    for parameter in parameters:
        if parameter.section:
            continue
        checked[parameter.name] = convert(parameter, given.get(parameter.name), kind_name)
    return checked


# Every kind that loads models takes this one.
OFFLINE_TINY = Parameter("offline_tiny", "bool", False,
                         "use tiny random-initialised models instead of real weights (tests, demos)")


def method_parameters(method_name: str) -> list[Parameter]:
    """An unlearning method's hyperparameters as parameters, with the type, default and help of the methods' table."""
    return [Parameter(hp.name, hp.type, hp.default, hp.help, section=HYPERPARAMETERS)
            for hp in lookup(method_name).hyperparameters]
