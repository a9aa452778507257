"""A burst of first visits beyond a link's quota: exactly the quota admitted, nobody twice, nothing lost.

Admission is one BEGIN IMMEDIATE transaction that counts the quota and
inserts the rater. Threads of one process share its writer (one connection,
a fair lock); separate processes meet only SQLite's own lock, so both are
tried.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections import Counter

from cpdm.rating import recruit
from cpdm.store.workspace import open_workspace
from tests.browser_support import ROOT
from tests.recruit_support import params, recruiting_world

QUOTA = 6
PROCESSES = 3


def admit_all(root, secret: str, visitors: list[tuple[str, str]], start_at: float) -> list[tuple[str, str, int | None]]:
    """Each visitor (platform id, address) in its own thread and connection, all at ``start_at``."""
    results, threads = [], []

    def one(platform_id, address):
        ws = open_workspace(root)
        try:
            time.sleep(max(0.0, start_at - time.time()))
            admission = recruit.admit(ws, params(secret, platform_id), address)
            results.append((platform_id, admission.state, admission.rater.id if admission.rater else None))
        finally:
            ws.close()

    for platform_id, address in visitors:
        threads.append(threading.Thread(target=one, args=(platform_id, address)))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    return results


# Run in each child process: admit its visitors from a common start time, print the outcomes as JSON.
CHILD = """
import json, sys
from tests.test_recruit_concurrency import admit_all
root, secret, visitors, start_at = sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), float(sys.argv[4])
print(json.dumps(admit_all(root, secret, [tuple(v) for v in visitors], start_at)))
"""


def check_outcome(ws, link_id: int, outcomes: list, visitors: int) -> None:
    """Exactly QUOTA raters admitted, each platform id once, every visitor answered and the rest told 'full'."""
    assert len(outcomes) == visitors  # nobody's request was lost
    states = Counter(state for _, state, _ in outcomes)
    stored = ws.conn.execute("SELECT platform_id, rater FROM recruited_raters WHERE link = ?", (link_id,)).fetchall()
    assert len(stored) == QUOTA
    assert len({platform_id for platform_id, _ in stored}) == QUOTA  # nobody admitted twice
    admitted = {(platform_id, rater) for platform_id, state, rater in outcomes if state in ("admitted", "resumed")}
    assert admitted == set(stored)  # everyone told they were in is in, with the rater they were given
    assert set(states) <= {"admitted", "resumed", "full"}
    assert states["admitted"] == QUOTA
    assert ws.conn.execute("SELECT COUNT(*) FROM raters").fetchone()[0] == QUOTA


def test_three_times_the_quota_of_simultaneous_first_visits_in_threads_admit_exactly_the_quota(ws):
    _, link, secret = recruiting_world(ws, quota=QUOTA, per_rater=2)
    # Every id arrives twice at once (a double click, a second tab): still one rater each.
    visitors = [(f"P{i % (3 * QUOTA // 2)}", f"10.0.{i}.1") for i in range(3 * QUOTA)]
    outcomes = admit_all(ws.root, secret, visitors, time.time() + 0.5)
    check_outcome(ws, link.id, outcomes, len(visitors))


def test_three_times_the_quota_of_simultaneous_first_visits_from_several_processes_admit_exactly_the_quota(ws):
    _, link, secret = recruiting_world(ws, quota=QUOTA, per_rater=2)
    visitors = [(f"P{i}", f"10.1.{i}.1") for i in range(3 * QUOTA)]
    shares = [visitors[k::PROCESSES] for k in range(PROCESSES)]
    start_at = time.time() + 8.0  # after every child has started and imported cpdm
    children = [subprocess.Popen([sys.executable, "-c", CHILD, str(ws.root), secret, json.dumps(share),
                                  str(start_at)], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                for share in shares]
    outcomes = []
    for child in children:
        out, err = child.communicate(timeout=120)
        assert child.returncode == 0, err
        outcomes += [tuple(row) for row in json.loads(out)]
    check_outcome(ws, link.id, outcomes, len(visitors))


def test_two_tabs_of_one_rater_racing_for_pairs_get_exactly_their_pairs_each(ws):
    import uuid

    from cpdm.rating.submit import submit
    from tests.rating_fixtures import ANSWERS

    _, _, secret = recruiting_world(ws, n_anchors=6, per_rater=5)
    rater = recruit.admit(ws, params(secret, "P-tabs"), "10.2.0.1").rater
    errors = []

    def tab():
        own = open_workspace(ws.root)
        try:
            while (item := recruit.next_item_for(own, rater)) is not None:
                submit(own, rater, item.campaign, item.pair, ANSWERS, nonce=uuid.uuid4().hex)
        except Exception as exc:  # surfaced below
            errors.append(repr(exc))
        finally:
            own.close()

    tabs = [threading.Thread(target=tab) for _ in range(3)]
    for thread in tabs:
        thread.start()
    for thread in tabs:
        thread.join(timeout=60)
    assert errors == []
    statuses = Counter(row[0] for row in ws.conn.execute("SELECT status FROM assignments WHERE rater = ?",
                                                         (rater.id,)))
    assert statuses == {"done": 5}
    assert recruit.finished_recruitment(ws, rater) is not None
