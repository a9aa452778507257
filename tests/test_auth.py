"""Invite tokens: only hashes stored; wrong, malformed and revoked tokens give no rater."""

from __future__ import annotations

import pytest

from cpdm.rating.auth import (
    create_rater, hash_token, invite_url, list_raters, rater_by_name_or_id, rater_for_token, record_consent,
    revoke_rater,
)
from cpdm.errors import CpdmError


def test_token_names_the_rater_and_role_and_is_stored_only_as_a_hash(ws):
    rater, token = create_rater(ws, "Ann", "artist")
    assert rater_for_token(ws, token) == rater and rater.role == "artist"
    stored = ws.conn.execute("SELECT token_hash FROM raters").fetchone()[0]
    assert stored == hash_token(token) and token not in stored
    dump = "\n".join(ws.conn.iterdump())
    assert token not in dump


@pytest.mark.parametrize("bad", [None, "", "short", "x" * 65, "has spaces in it and more text", "ü" * 30, "A" * 43])
def test_missing_malformed_or_unknown_tokens_give_no_rater(ws, bad):
    create_rater(ws, "Ann", "artist")
    assert rater_for_token(ws, bad) is None


def test_revoked_token_stops_working_and_ratings_stay(ws):
    rater, token = create_rater(ws, "Ann", "lay")
    other, other_token = create_rater(ws, "Bo", "lay")
    revoke_rater(ws, rater.id)
    assert rater_for_token(ws, token) is None
    assert rater_for_token(ws, other_token) == other
    assert [r.disabled for r in list_raters(ws)] == [True, False]
    with pytest.raises(CpdmError, match="no rater with id 99"):
        revoke_rater(ws, 99)


def test_bad_role_or_name_is_refused(ws):
    with pytest.raises(CpdmError, match="unknown role 'admin'"):
        create_rater(ws, "x", "admin")
    with pytest.raises(CpdmError, match="non-empty name"):
        create_rater(ws, "  ", "lay")
    assert list_raters(ws) == []


def test_consent_is_recorded_once(ws):
    rater, _ = create_rater(ws, "Ann", "artist")
    assert rater.consented_at is None
    first = record_consent(ws, rater.id).consented_at
    assert first is not None
    assert record_consent(ws, rater.id).consented_at == first
    revoke_rater(ws, rater.id)
    with pytest.raises(CpdmError, match="no active rater"):
        record_consent(ws, rater.id)


def test_lookup_by_name_or_id_and_invite_url(ws):
    ann, token = create_rater(ws, "Ann", "artist")
    create_rater(ws, "Twin", "lay")
    create_rater(ws, "Twin", "lay")
    assert rater_by_name_or_id(ws, "Ann") == ann == rater_by_name_or_id(ws, str(ann.id))
    with pytest.raises(CpdmError, match="2 raters are named 'Twin'"):
        rater_by_name_or_id(ws, "Twin")
    with pytest.raises(CpdmError, match="no rater named 'Zed'"):
        rater_by_name_or_id(ws, "Zed")
    assert invite_url(token, "http://host:8501/") == f"http://host:8501/?token={token}"


# --- the `cpdm raters` commands ----------------------------------------------------------------


def invoke(runner, ws, *args):
    from cpdm.cli import cli

    return runner.invoke(cli, [*args, "--workspace", str(ws.root)])


def test_cli_invite_prints_a_working_link_once(ws, runner):
    result = invoke(runner, ws, "raters", "invite", "--name", "Ada", "--role", "artist", "--base-url", "http://h:9/")
    assert result.exit_code == 0, result.output
    link = result.output.strip().splitlines()[-1]
    assert link.startswith("http://h:9/?token=")
    rater = rater_for_token(ws, link.split("=", 1)[1])
    assert (rater.name, rater.role) == ("Ada", "artist")
    listing = invoke(runner, ws, "raters", "list").output
    assert "Ada" in listing and link.split("=", 1)[1] not in listing
    assert invoke(runner, ws, "raters", "revoke", "Ada").exit_code == 0
    assert rater_for_token(ws, link.split("=", 1)[1]) is None
    row = invoke(runner, ws, "raters", "list").output.splitlines()[1].split()
    assert row == ["1", "Ada", "artist", "no", "no", "yes", "no"]


def test_cli_rater_errors(ws, runner):
    bad_role = invoke(runner, ws, "raters", "invite", "--name", "x", "--role", "boss")
    assert bad_role.exit_code == 2 and "'boss' is not one of" in bad_role.output
    empty = invoke(runner, ws, "raters", "invite", "--name", " ", "--role", "lay")
    assert empty.exit_code == 1 and empty.output.strip() == "error: a rater needs a non-empty name"
    missing = invoke(runner, ws, "raters", "revoke", "7")
    assert missing.exit_code == 1 and missing.output.strip() == "error: no rater with id 7"
    assert list_raters(ws) == []
