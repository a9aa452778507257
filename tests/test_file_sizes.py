"""No module of cpdm/ is over 450 lines unless its docstring says why one job needs more."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LIMIT = 450
NOTE = "Why one file of this length:"
# Being split, or written, by other work now; remove from here when it lands.
PENDING: set[str] = set()


def test_long_modules_say_why_they_are_long():
    unexplained = []
    for path in sorted((ROOT / "cpdm").rglob("*.py")):
        name = path.relative_to(ROOT).as_posix()
        text = path.read_text(encoding="utf-8")
        if name in PENDING or text.count("\n") <= LIMIT:
            continue
        if NOTE not in (ast.get_docstring(ast.parse(text)) or ""):
            unexplained.append(f"{name} ({text.count(chr(10))} lines)")
    assert unexplained == [], f"over {LIMIT} lines with no '{NOTE}' paragraph in the module docstring"
