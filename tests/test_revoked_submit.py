"""A rater whose link was revoked cannot save answers, even from a page drawn before the revocation."""

from __future__ import annotations

import pytest

from cpdm.rating.assignment import next_item
from cpdm.rating.auth import create_rater, revoke_rater
from cpdm.errors import CpdmError
from cpdm.rating.submit import submit
from tests.rating_fixtures import ANSWERS, make_world


def _ratings(ws) -> int:
    return ws.conn.execute("SELECT COUNT(*) FROM ratings").fetchone()[0]


@pytest.mark.parametrize("answers, reason", [(ANSWERS, None), (None, "cannot see the image")])
def test_submit_of_a_revoked_rater_is_refused_and_nothing_is_stored(ws, answers, reason):
    make_world(ws, 2, 2, overlap={"artist": 2, "lay": 1})
    rater, _ = create_rater(ws, "ann", "artist")
    item = next_item(ws, rater)  # the page was drawn while the link still worked
    revoke_rater(ws, rater.id)  # `rater` is the object loaded before the revocation, as a page callback holds it
    with pytest.raises(CpdmError, match="revoked"):
        submit(ws, rater, item.campaign, item.pair, answers, nonce="nonce-revoked-1", skip_reason=reason)
    assert _ratings(ws) == 0
    status = ws.conn.execute(
        "SELECT status FROM assignments WHERE campaign = ? AND pair = ? AND rater = ?", (item.campaign, item.pair, rater.id)
    ).fetchone()[0]
    assert status == "assigned"
