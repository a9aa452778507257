"""The one write path: every Workspace.transaction goes through its process's serialised writer of the file."""

from __future__ import annotations

import threading

import pytest

from cpdm.store import writer
from cpdm.store.workspace import open_workspace


def _writer_connection(ws):
    with ws.transaction() as conn:
        return conn


def test_every_workspace_object_of_a_file_writes_through_one_connection_not_its_own(ws):
    other = open_workspace(ws.root)
    try:
        conn = _writer_connection(ws)
        assert conn is _writer_connection(other)
        assert conn is not ws.conn and conn is not other.conn
        with other.transaction() as tx:
            tx.execute("INSERT INTO meta (key, value) VALUES ('a', '1')")
        assert ws.get_meta("a") == "1"  # committed: every reading connection sees it at once
    finally:
        other.close()


def test_a_transaction_rolls_back_on_an_error(ws):
    with pytest.raises(RuntimeError):
        with ws.transaction() as conn:
            conn.execute("INSERT INTO meta (key, value) VALUES ('a', '1')")
            raise RuntimeError("boom")
    assert ws.get_meta("a") is None
    ws.set_meta("b", "2")  # the writer is usable again
    assert ws.get_meta("b") == "2"


def test_a_transaction_inside_another_joins_it_and_an_inner_error_undoes_only_its_own_writes(ws):
    with ws.transaction() as outer:
        outer.execute("INSERT INTO meta (key, value) VALUES ('outer', '1')")
        ws.set_meta("joined", "1")  # an owning module's write inside a larger transaction
        assert ws.get_meta("joined") is None  # not committed yet: the reading connection does not see it
        with pytest.raises(ValueError):
            with ws.transaction() as inner:
                assert inner is outer
                inner.execute("INSERT INTO meta (key, value) VALUES ('inner', '1')")
                raise ValueError("undo the inner block")
    assert (ws.get_meta("outer"), ws.get_meta("joined"), ws.get_meta("inner")) == ("1", "1", None)

    with pytest.raises(RuntimeError):
        with ws.transaction():
            ws.set_meta("lost", "1")
            raise RuntimeError("the outer one fails: the joined write goes with it")
    assert ws.get_meta("lost") is None


def test_ensure_meta_keeps_the_first_value(ws):
    assert ws.ensure_meta("salt", "first") == "first"
    assert ws.ensure_meta("salt", "second") == "first"
    ws.set_meta("salt", "third")
    assert ws.get_meta("salt") == "third"


def test_threads_take_turns_and_lose_no_write(ws):
    ws.set_meta("n", "0")

    def add_one():
        other = open_workspace(ws.root)
        try:
            for _ in range(20):
                with other.transaction() as conn:
                    value = int(conn.execute("SELECT value FROM meta WHERE key = 'n'").fetchone()[0])
                    conn.execute("UPDATE meta SET value = ? WHERE key = 'n'", (str(value + 1),))
        finally:
            other.close()

    threads = [threading.Thread(target=add_one) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert ws.get_meta("n") == "160"


def test_closing_the_last_workspace_of_a_file_closes_its_write_connection(tmp_path):
    first = open_workspace(tmp_path / "ws", create=True)
    second = open_workspace(tmp_path / "ws")
    conn = _writer_connection(first)
    assert _writer_connection(second) is conn
    key = next(key for key, held in writer._WRITERS.items() if held.conn is conn)
    first.close()
    assert writer._WRITERS[key].conn is conn  # the second one still writes through it
    second.set_meta("a", "1")
    second.close()
    assert key not in writer._WRITERS
    with pytest.raises(Exception, match="closed"):
        conn.execute("SELECT 1")
