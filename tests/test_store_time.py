"""One time stamp format: what Python writes, what SQL defaults write, and what older workspaces hold."""

from datetime import datetime, timedelta, timezone

import pytest

from cpdm.rating.auth import create_rater, record_consent
from cpdm.store.time import format_time, parse_time, utc_now


def test_python_and_sql_write_the_same_shape_and_it_reads_back(ws):
    rater, _ = create_rater(ws, "ann", "artist")
    consented = record_consent(ws, rater.id).consented_at
    created = ws.conn.execute("SELECT created_at FROM raters WHERE id = ?", (rater.id,)).fetchone()[0]
    now = format_time(utc_now())
    assert len(consented) == len(created) == len(now) == 27
    assert consented.endswith("Z") and created.endswith("Z")
    assert abs(parse_time(created) - utc_now()) < timedelta(minutes=5)


def test_a_moment_survives_formatting_exactly():
    moment = datetime(2026, 1, 5, 9, 0, 1, 234567, tzinfo=timezone.utc)
    assert parse_time(format_time(moment)) == moment
    assert format_time(moment) == "2026-01-05T09:00:01.234567Z"


@pytest.mark.parametrize("older, expected", [
    ("2026-01-05T09:00:01.234Z", datetime(2026, 1, 5, 9, 0, 1, 234000, tzinfo=timezone.utc)),  # SQL defaults, simulator
    ("2026-01-05T09:00:01Z", datetime(2026, 1, 5, 9, 0, 1, tzinfo=timezone.utc)),  # exported weights
])
def test_stamps_older_workspaces_hold_still_parse(older, expected):
    assert parse_time(older) == expected


@pytest.mark.parametrize("bad", ["", "yesterday", "2026-01-05 09:00:01", "2026-01-05T09:00:01+01:00",
                                 "2026-01-05T09:00:01.234567+0000Z", "2026-13-05T09:00:01.234567Z"])
def test_anything_else_is_a_clear_error(bad):
    with pytest.raises(ValueError):
        parse_time(bad)

