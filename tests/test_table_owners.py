"""Every table has one writing module: the statements that write a table live in the module that owns it.

The scan reads every string in ``cpdm/`` (f-strings with their holes as
``{}``) for ``INSERT INTO``, ``REPLACE INTO``, ``UPDATE … SET`` and
``DELETE FROM``, and every sqlite-utils write (``db["t"].insert``,
``upsert``, ``insert_all``, ``upsert_all``, ``update``, ``delete``,
``delete_where``). The migrations (``cpdm/store/schema.py``) write every
table once, when a workspace is upgraded, and are left out.
"""

from __future__ import annotations

import ast
import re
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "cpdm"
MIGRATIONS = PACKAGE / "store" / "schema.py"

_WRITES = [
    re.compile(r"\bINSERT\s+(?:OR\s+\w+\s+)?INTO\s+([\w{}]+)", re.IGNORECASE),
    re.compile(r"\bREPLACE\s+INTO\s+([\w{}]+)", re.IGNORECASE),
    re.compile(r"\bUPDATE\s+([\w{}]+)\s+SET\b", re.IGNORECASE),
    re.compile(r"\bDELETE\s+FROM\s+([\w{}]+)", re.IGNORECASE),
]
_UPSERT_CLAUSE = re.compile(r"\bDO\s+UPDATE\s+SET\b", re.IGNORECASE)  # part of an INSERT, not a write of its own
_SQLITE_UTILS_WRITES = {"insert", "insert_all", "upsert", "upsert_all", "update", "delete", "delete_where"}

# Tables whose one owner is named (the comparative-judgment tables of schema 9 among them). The assignment
# bookkeeping of both kinds of work item (assignments and load counters of pairs and triplets) is written only by
# cpdm.rating.rules, which holds the claim and submit rules they follow.
OWNERS = {
    "triplets": "cpdm.rating.triplets",
    "campaign_triplets": "cpdm.rating.triplets",
    "assignments": "cpdm.rating.rules",
    "pair_load": "cpdm.rating.rules",
    "triplet_assignments": "cpdm.rating.rules",
    "triplet_load": "cpdm.rating.rules",
    "raters": "cpdm.rating.auth",
    "campaigns": "cpdm.rating.campaigns",
    "campaign_pairs": "cpdm.rating.campaigns",
    "judgments": "cpdm.rating.judgments",
    "scores": "cpdm.scoring.engine",
    "meta": "cpdm.store.workspace",
}

# Tables still written from more than one module, each with the module meant to own it and the others that
# must move their writes into it. Empty: keep it so; a module that writes a table it does not own fails the test.
SHARED: dict[str, tuple[str, set[str]]] = {}
# Modules that name the table they write by an f-string's hole, and the tables the hole stands for. Empty: name
# the table in the statement.
HOLES: dict[str, set[str]] = {}


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _texts(tree: ast.AST):
    """Every string of the module: constants, and f-strings with ``{}`` for each hole."""
    in_fstring = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.JoinedStr):
            in_fstring.update(id(value) for value in node.values)
            yield "".join(value.value if isinstance(value, ast.Constant) else "{}" for value in node.values)
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in in_fstring:
            yield node.value


def tables_written(source: str) -> set[str]:
    """The tables a module's source writes (``{}`` for a table named by a hole in an f-string)."""
    tree = ast.parse(source)
    found = set()
    for text in _texts(tree):
        text = _UPSERT_CLAUSE.sub("", text)
        for pattern in _WRITES:
            found.update(match.group(1) for match in pattern.finditer(text))
    for node in ast.walk(tree):
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                and node.func.attr in _SQLITE_UTILS_WRITES and isinstance(node.func.value, ast.Subscript)
                and isinstance(node.func.value.slice, ast.Constant) and isinstance(node.func.value.slice.value, str)):
            found.add(node.func.value.slice.value)
    return found


def writers_by_table() -> dict[str, set[str]]:
    writers = defaultdict(set)
    for path in sorted(PACKAGE.rglob("*.py")):
        if path == MIGRATIONS:
            continue
        for table in tables_written(path.read_text(encoding="utf-8")):
            writers[table].add(_module_name(path))
    return dict(writers)


def test_every_table_is_written_by_one_module():
    writers = writers_by_table()
    holes = writers.pop("{}", set())
    assert holes <= set(HOLES), f"{sorted(holes - set(HOLES))} write a table named by an f-string's hole: name it"
    for module in holes:
        for table in HOLES[module]:
            writers.setdefault(table, set()).add(module)
    shared = {}
    for table, modules in sorted(writers.items()):
        if table in SHARED:
            owner, others = SHARED[table]
            assert modules <= {owner} | others, f"{table} is written by {sorted(modules - {owner} - others)} too"
            continue
        if len(modules) != 1:
            shared[table] = sorted(modules)
        elif table in OWNERS:
            assert modules == {OWNERS[table]}, f"{table} is written by {sorted(modules)}, not {OWNERS[table]}"
    assert shared == {}, f"tables written from more than one module: {shared}"


def test_the_scan_finds_each_kind_of_write():
    source = '''
conn.execute("INSERT OR IGNORE INTO a (x) VALUES (1)")
conn.execute("INSERT INTO b (x) VALUES (1) ON CONFLICT(x) DO UPDATE SET x = excluded.x")
conn.execute(f"UPDATE c SET x = {value} WHERE id = ?")
conn.execute("DELETE FROM d WHERE x = 1")
conn.execute("REPLACE INTO e VALUES (1)")
conn.execute(f"DELETE FROM {table}")
sqlite_utils.Database(conn)["f"].upsert({"k": 1}, pk="k")
conn.execute("SELECT x FROM g")
'''
    assert tables_written(source) == {"a", "b", "c", "d", "e", "{}", "f"}
    writers = writers_by_table()
    assert writers["scores"] == {"cpdm.scoring.engine"} and writers["meta"] == {"cpdm.store.workspace"}
