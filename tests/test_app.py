"""The Streamlit app, page by page, through AppTest (no browser)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from cpdm.rating.assignment import next_item
from cpdm.rating.auth import create_rater, list_raters, rater_for_token, revoke_rater
from cpdm.rating.campaigns import list_campaigns
from tests.panel_support import answers_event, panel, send_from_panel, send_with_first_run, skip_event
from tests.rating_fixtures import make_world

APP = str(Path(__file__).resolve().parent.parent / "app.py")
ANSWERS = {"content": 4, "style": 2, "copy": 1}


@pytest.fixture
def world(ws, monkeypatch):
    monkeypatch.setenv("CPDM_WORKSPACE", str(ws.root))
    return make_world(ws, 2, 2, overlap={"artist": 2, "lay": 1})


def open_app(token: str | None, *, run: bool = True) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=30)
    if token is not None:
        at.query_params["token"] = token
    return at.run() if run else at


def titles(at) -> list[str]:
    return [t.value for t in at.title]


def all_text(at) -> str:
    parts = [e.value for kind in ("title", "markdown", "caption", "header", "subheader", "info", "error", "success")
             for e in getattr(at, kind)]
    return "\n".join(str(p) for p in parts)


def current_pair(ws, rater) -> int | None:
    row = ws.conn.execute("SELECT pair FROM assignments WHERE rater = ? AND status = 'assigned'", (rater.id,)).fetchone()
    return None if row is None else row[0]


def consent(at) -> AppTest:
    at.checkbox(key="consent_agree").check().run()
    next(b for b in at.button if b.label == "Start rating").click().run()
    return at


def answer_and_submit(at, pair: int, answers=ANSWERS, campaign: int = 1) -> AppTest:
    """Submit a full answer set from the panel, which must be showing ``pair``."""
    data = panel(at)
    assert (data["campaign"], data["pair"]) == (campaign, pair)
    send_from_panel(at, answers_event(data, answers))
    assert not at.exception, at.exception
    return at


def ratings(ws, rater) -> list[tuple]:
    return ws.conn.execute(
        "SELECT pair, question, value FROM ratings WHERE rater = ? ORDER BY pair, question", (rater.id,)
    ).fetchall()


@pytest.mark.parametrize("token_kind", ["none", "wrong", "malformed", "revoked"])
def test_invalid_links_show_only_the_not_valid_page(ws, world, token_kind):
    rater, token = create_rater(ws, "ann", "artist")
    if token_kind == "revoked":
        revoke_rater(ws, rater.id)
    token = {"none": None, "wrong": "x" * 43, "malformed": "<script>", "revoked": token}[token_kind]
    at = open_app(token)
    assert titles(at) == ["This link is not valid"]
    assert not at.button and not at.checkbox and not at.dataframe and not at.get("image") and panel(at) is None
    assert ws.conn.execute("SELECT COUNT(*) FROM assignments").fetchone()[0] == 0


def test_first_visit_asks_consent_then_shows_the_rating_page(ws, world):
    rater, token = create_rater(ws, "ann", "artist")
    at = open_app(token)
    assert titles(at) == ["Welcome, ann"]
    assert "original" in all_text(at)  # the protocol's instructions
    start = next(b for b in at.button if b.label == "Start rating")
    assert start.disabled
    consent(at)
    assert rater_for_token(ws, token).consented_at is not None
    assert current_pair(ws, rater) is not None
    data = panel(at)
    assert [q["id"] for q in data["questions"]] == ["content", "style", "copy"]
    assert all(q["values"] == [1, 2, 3, 4, 5] for q in data["questions"])
    assert [i["label"] for i in data["images"]] == ["Original", "AI image"]
    # The stored bytes, unchanged, inside the panel's own message: no address any other visitor could open.
    item = next_item(ws, rater)  # the pair on screen
    assert [(i["mime"], i["bytes"]) for i in data["images"]] == [
        ("image/png", ws.image_path(sha).read_bytes()) for sha in (item.anchor_image, item.shown_image)]
    # A new session (another day) goes straight to rating.
    assert titles(open_app(token)) == []


def test_rater_completes_pairs_resumes_in_new_session_and_cannot_rate_twice(ws, world):
    rater, token = create_rater(ws, "ann", "artist")
    at = consent(open_app(token))
    done = []
    for _ in range(2):
        pair = current_pair(ws, rater)
        answer_and_submit(at, pair)
        done.append(pair)
        assert current_pair(ws, rater) not in done  # the next pair is shown at once
    assert panel(at)["progress"] == {"done": 2, "total": 4}
    # Resume: a new session shows the same pair, with the same nonce, that the first one left on screen.
    pending = current_pair(ws, rater)
    second = open_app(token)
    assert panel(second)["pair"] == pending and panel(second)["nonce"] == panel(at)["nonce"]
    # Both sessions answer the same pair; the first tab submits last and changes nothing.
    first_tab = panel(at)
    answer_and_submit(second, pending)
    send_from_panel(at, answers_event(first_tab, {"content": 1, "style": 1, "copy": 5}))
    assert panel(at)["notice"] == {"kind": "info", "text": "Already saved: this pair was answered before."}
    assert not at.exception
    assert current_pair(ws, rater) != pending
    saved = ratings(ws, rater)
    assert len(saved) == 9
    assert [v for p, q, v in saved if p == pending] == [4, 1, 2]  # content, copy, style: the second tab's answers
    assert sorted({p for p, _, _ in saved}) == sorted(done + [pending])


def test_a_submit_that_comes_with_a_new_sessions_first_run_is_saved(ws, world, monkeypatch):
    from cpdm.app.serve import APP_ENV, entry_script

    rater, token = create_rater(ws, "ann", "artist")
    at = consent(open_app(token))
    pair, shown = current_pair(ws, rater), panel(at)
    # The browser reconnects to a new session (the server restarted) and the rater presses Enter. The new
    # session runs the app as `cpdm serve` does, from its entry script, on the page the browser shows.
    monkeypatch.setenv(APP_ENV, APP)
    served = AppTest.from_file(str(entry_script()), default_timeout=30)
    served.query_params["token"] = token
    fresh = send_with_first_run(served, at, answers_event(shown, ANSWERS))
    assert not fresh.exception, fresh.exception
    assert ratings(ws, rater) == [(pair, "content", 4), (pair, "copy", 1), (pair, "style", 2)]
    next_pair = current_pair(ws, rater)
    assert next_pair != pair and panel(fresh)["pair"] == next_pair and panel(fresh)["notice"] is None
    # The next submit is saved once, by the callback, with no "Already saved" notice.
    answer_and_submit(fresh, next_pair)
    assert panel(fresh)["notice"] is None and len(ratings(ws, rater)) == 6


def test_an_incomplete_answer_set_is_refused_and_the_pair_stays(ws, world):
    rater, token = create_rater(ws, "ann", "artist")
    at = consent(open_app(token))
    pair = current_pair(ws, rater)
    send_from_panel(at, answers_event(panel(at), {"content": 3}))
    assert panel(at)["notice"] == {"kind": "error", "text": "question 'style' has no answer"}
    assert panel(at)["pair"] == pair and current_pair(ws, rater) == pair
    assert ratings(ws, rater) == []


def test_skip_with_reason_and_thank_you_when_done(ws, world):
    lay, token = create_rater(ws, "lee", "lay")
    at = consent(open_app(token))
    send_from_panel(at, skip_event(panel(at), "   "))
    assert "needs a reason" in panel(at)["notice"]["text"] and ratings(ws, lay) == []
    send_from_panel(at, skip_event(panel(at), "the image is blank"))
    assert ws.conn.execute("SELECT DISTINCT skip_reason FROM ratings").fetchall() == [("the image is blank",)]
    while (pair := current_pair(ws, lay)) is not None:
        answer_and_submit(at, pair)
    # The skipped pair went back to the pool but never back to this rater: lay work ends when others take it.
    assert titles(at) == ["Thank you!"]


def test_rating_page_hides_method_prompt_and_other_answers(ws, world):
    other, other_token = create_rater(ws, "bob", "artist")
    answer_and_submit(consent(open_app(other_token)), current_pair(ws, other))
    rater, token = create_rater(ws, "ann", "artist")
    at = consent(open_app(token))
    shown = panel(at)
    images = [{name: value for name, value in image.items() if name != "bytes"} for image in shown["images"]]
    text = (all_text(at) + json.dumps({**shown, "images": images})).lower()
    for secret in ("esd", "original, esd", "tiny-sd", "a painting", "bob"):
        assert secret not in text
    # Bob's answers appear nowhere on Ann's page: the panel is given questions, never answers.
    assert set(shown) == {"campaign", "mode", "pair", "nonce", "questions", "images", "progress", "notice",
                          "max_skip_reason", "round"}
    assert shown["notice"] is None


def test_demo_workspace_shows_a_banner(ws, world):
    ws.set_meta("demo", "1")
    _, token = create_rater(ws, "ann", "artist")
    assert "Demo workspace" in all_text(open_app(token))
    ws.set_meta("demo", "0")
    assert "Demo workspace" not in all_text(open_app(token))


def test_researcher_creates_a_campaign_and_invites_raters(ws, world):
    _, token = create_rater(ws, "boss", "researcher")
    at = open_app(token)
    assert titles(at) == ["Campaigns"]
    at.text_input[0].input("portraits only")
    at.multiselect[0].select("character")
    at.number_input[1].set_value(2)
    next(b for b in at.button if b.label == "Create campaign").click().run()
    assert not at.exception, at.exception
    created = {c["name"]: c for c in list_campaigns(ws)}["portraits only"]
    assert created["overlap"] == {"artist": 3, "lay": 2}
    normal = ws.conn.execute(
        "SELECT COUNT(*) FROM campaign_pairs cp JOIN pairs p ON p.id = cp.pair JOIN anchors a ON a.id = p.anchor "
        "WHERE cp.campaign = ? AND p.kind = 'normal' AND a.category = 'character'", (created["id"],)
    ).fetchone()[0]
    assert normal == created["pairs"] - ws.conn.execute(
        "SELECT COUNT(*) FROM campaign_pairs cp JOIN pairs p ON p.id = cp.pair WHERE cp.campaign = ? AND p.kind != 'normal'",
        (created["id"],)).fetchone()[0] == 2

    at.switch_page("pages/raters.py").run()
    assert titles(at) == ["Raters"]
    at.text_input[0].input("Dana")
    at.selectbox[0].select("lay")
    next(b for b in at.button if b.label == "Create invite link").click().run()
    link = at.code[0].value
    assert "?token=" in link
    dana = rater_for_token(ws, link.split("?token=")[1])
    assert dana is not None and (dana.name, dana.role) == ("Dana", "lay")
    # Shown once: the next run no longer carries the link.
    at.run()
    assert not at.code
    revoke_target = at.selectbox[-1]
    revoke_target.select(dana).run()
    next(b for b in at.button if b.label == "Revoke link").click().run()
    assert [r.disabled for r in list_raters(ws) if r.name == "Dana"] == [True]

    at.switch_page("pages/progress.py").run()
    assert titles(at) == ["Progress"] and not at.exception
    assert len(at.dataframe) == 1  # per role; nobody has started


def test_progress_page_lists_raters(ws, world):
    rater, token = create_rater(ws, "ann", "artist")
    answer_and_submit(consent(open_app(token)), current_pair(ws, rater))
    _, boss = create_rater(ws, "boss", "researcher")
    at = open_app(boss)
    at.switch_page("pages/progress.py").run()
    per_role, per_rater = (df.value for df in at.dataframe)
    assert per_role.set_index("role").loc["artist", "done"] == 1
    assert per_rater.set_index("name").loc["ann", "done"] == 1


def test_rater_token_cannot_reach_researcher_pages(ws, world):
    rater, token = create_rater(ws, "ann", "artist")
    for page in ("pages/campaigns.py", "pages/raters.py", "pages/progress.py"):
        at = open_app(token, run=False)
        at.switch_page(page)
        at.run()
        assert not {"Campaigns", "Raters", "Progress"} & set(titles(at))
        assert not at.dataframe and not at.code
        # Even run on its own, a researcher page refuses a rater.
        direct = AppTest.from_file(str(Path(APP).parent / page), default_timeout=30)
        direct.session_state["cpdm_ws"] = ws
        direct.session_state["cpdm_rater"] = rater
        direct.run()
        assert [e.value for e in direct.error] == ["This page is for researchers."] and not direct.dataframe


def test_a_pair_whose_image_file_is_gone_is_shown_without_it_and_can_be_skipped(ws, world):
    rater, token = create_rater(ws, "ann", "artist")
    at = consent(open_app(token))
    pair = current_pair(ws, rater)
    anchor_image = ws.conn.execute(
        "SELECT an.image FROM pairs p JOIN anchors an ON an.id = p.anchor WHERE p.id = ?", (pair,)).fetchone()[0]
    ws.image_path(anchor_image).unlink()
    at.run()
    assert not at.exception
    assert [(i["key"], i["bytes"] is None) for i in panel(at)["images"]] == [("original", True), ("generated", False)]
    send_from_panel(at, skip_event(panel(at), "the original does not load"))
    assert ws.conn.execute("SELECT DISTINCT pair, skip_reason FROM ratings").fetchall() == [
        (pair, "the original does not load")]
