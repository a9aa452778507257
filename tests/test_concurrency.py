"""Many raters submitting at once against one workspace: no lost rating, no duplicate, overlap kept."""

from __future__ import annotations

import threading
import uuid
from collections import Counter

from cpdm.rating.assignment import next_item
from cpdm.rating.auth import create_rater
from cpdm.store.workspace import open_workspace
from tests.rating_fixtures import make_world

N_RATERS = 20


def resend(root, rater, item, answers, nonce, out):
    from cpdm.rating.submit import submit

    with open_workspace(root) as ws:
        out["status"] = submit(ws, rater, item.campaign, item.pair, answers, nonce=nonce).status


def rater_worker(root, rater, barrier, record, errors):
    """One rater in its own connection: claim, submit twice at once (a resent request), repeat."""
    from cpdm.rating.submit import submit

    ws = open_workspace(root)
    try:
        barrier.wait()
        while (item := next_item(ws, rater)) is not None:
            answers = {"content": 1 + item.pair % 5, "style": 1 + rater.id % 5, "copy": 3}
            nonce = uuid.uuid4().hex
            # A resent request arrives on another connection while the first is being saved.
            resent = {}
            twin = threading.Thread(target=resend, args=(root, rater, item, answers, nonce, resent))
            twin.start()
            first = submit(ws, rater, item.campaign, item.pair, answers, nonce=nonce)
            twin.join()
            statuses = sorted([first.status, resent["status"]])
            record.append((rater.id, item.pair, statuses[1], statuses[0], tuple(sorted(answers.items()))))
    except Exception as exc:  # surfaced by the test below
        errors.append(repr(exc))
    finally:
        ws.close()


def test_twenty_raters_at_once_lose_nothing_and_duplicate_nothing(ws):
    world = make_world(ws, 6, 5, overlap={"artist": 3, "lay": 2})
    raters = [create_rater(ws, f"r{i}", "artist" if i % 2 else "lay")[0] for i in range(N_RATERS)]
    barrier = threading.Barrier(N_RATERS)
    record, errors = [], []
    threads = [threading.Thread(target=rater_worker, args=(ws.root, r, barrier, record, errors)) for r in raters]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert errors == []
    assert all(not t.is_alive() for t in threads)

    assert {(first, again) for *_, first, again, _ in record} == {("saved", "duplicate")}
    saved = {(rater, pair): dict(answers) for rater, pair, _, _, answers in record}
    assert len(saved) == len(record)  # no rater was handed the same pair twice
    rows = ws.conn.execute("SELECT rater, pair, question, value FROM ratings").fetchall()
    assert len(rows) == 3 * len(record)  # nothing lost, nothing doubled
    for rater, pair, question, value in rows:
        assert saved[(rater, pair)][question] == value

    role = {r.id: r.role for r in raters}
    per_role = Counter((role[rater], pair) for rater, pair in saved)
    for pair in world.pairs:  # every pair got exactly the overlap, no more
        assert per_role[("artist", pair)] == 3 and per_role[("lay", pair)] == 2
    open_rows = ws.conn.execute("SELECT COUNT(*) FROM assignments WHERE status = 'assigned'").fetchone()[0]
    assert open_rows == 0
