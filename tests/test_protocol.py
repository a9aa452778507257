"""Protocol parsing: the shipped default, and a clear error naming the field for each malformed one."""

from __future__ import annotations

import pytest

from cpdm.rating.protocol import default_protocol_path
from cpdm.rating.protocol import ProtocolError, list_protocol_files, load_protocol_file, parse_protocol

DEFAULT_TEXT = default_protocol_path().read_text(encoding="utf-8")


def test_default_protocol_parses_with_its_values():
    protocol = parse_protocol(DEFAULT_TEXT)
    assert protocol.name == "default"
    assert protocol.question_ids == ["content", "style", "copy"]
    copy = protocol.question("copy")
    assert copy.scale == (1, 5) and copy.values == [1, 2, 3, 4, 5]
    assert copy.low == "certainly not" and copy.high == "certainly a copy"
    assert protocol.attention_checks.rate == pytest.approx(0.1)
    assert protocol.attention_checks.question == "copy"
    assert (protocol.attention_checks.identical_min, protocol.attention_checks.unrelated_max) == (4, 2)
    assert protocol.timing.min_seconds == pytest.approx(2.0)
    assert protocol.timing.assignment_timeout_minutes == pytest.approx(30)
    assert "original" in protocol.instructions and protocol.consent


def test_default_ships_in_protocols_folder():
    assert default_protocol_path() in list_protocol_files()


MINIMAL = """
name = "mini"
instructions = "Look."
consent = "I agree."
[[questions]]
id = "copy"
text = "A copy?"
scale = [1, 3]
low = "no"
high = "yes"
"""


def test_minimal_protocol_gets_defaults_clamped_to_its_scale():
    protocol = parse_protocol(MINIMAL)
    assert protocol.attention_checks.question == "copy"
    assert protocol.attention_checks.identical_min == 3  # default 4 clamped to the 1-3 scale
    assert protocol.attention_checks.unrelated_max == 2
    assert protocol.timing.min_seconds == 2.0


@pytest.mark.parametrize(
    "edit, field",
    [
        (lambda t: t.replace('name = "default"', ""), "'name'"),
        (lambda t: t.replace("version = 1", "version = 0"), "'version'"),
        (lambda t: t.replace('id = "style"', 'id = "Style!"'), "'questions[1].id'"),
        (lambda t: t.replace('id = "style"', 'id = "content"'), "'questions[1].id'"),
        (lambda t: t.replace("scale = [1, 5]", "scale = [5, 1]", 1), "'questions[0].scale'"),
        (lambda t: t.replace("scale = [1, 5]", "scale = [1, 12]", 1), "'questions[0].scale'"),
        (lambda t: t.replace("scale = [1, 5]", 'scale = ["a", "b"]', 1), "'questions[0].scale'"),
        (lambda t: t.replace('low = "completely different"', "", 1), "'questions[0].low'"),
        (lambda t: t.replace('text = "How similar is the content', 'text = 7 #', 1), "'questions[0].text'"),
        (lambda t: t.replace("rate = 0.1", "rate = 0.9"), "'attention_checks.rate'"),
        (lambda t: t.replace("rate = 0.1", 'rate = "often"'), "'attention_checks.rate'"),
        (lambda t: t.replace('question = "copy"', 'question = "nope"'), "'attention_checks.question'"),
        (lambda t: t.replace("identical_min = 4", "identical_min = 9"), "'attention_checks.identical_min'"),
        (lambda t: t.replace("max_failures = 1", "max_failures = true"), "'attention_checks.max_failures'"),
        (lambda t: t.replace("min_seconds = 2.0", "min_seconds = -1"), "'timing.min_seconds'"),
        (lambda t: t.replace("assignment_timeout_minutes = 30", "assignment_timeout_minutes = 0"),
         "'timing.assignment_timeout_minutes'"),
    ],
)
def test_malformed_protocol_names_the_field(edit, field):
    text = edit(DEFAULT_TEXT)
    assert text != DEFAULT_TEXT
    with pytest.raises(ProtocolError) as err:
        parse_protocol(text)
    assert field in str(err.value)


@pytest.mark.parametrize("edit, message", [
    (lambda t: t.replace("version = 1", "version = 1\nversoin = 2"),
     "protocol field 'versoin' is unknown (the fields are: name, version, instructions"),
    (lambda t: t.replace("[timing]", "[timimg]"), "protocol field 'timimg' is unknown"),
    (lambda t: t.replace('high = "the same"', 'high = "the same"\nhihg = "identical"', 1),
     "protocol field 'questions[0].hihg' is unknown"),
    (lambda t: t.replace("rate = 0.1", "rates = 0.3"),
     "protocol field 'attention_checks.rates' is unknown (the fields in 'attention_checks' are: rate, question"),
    (lambda t: t.replace("min_seconds = 2.0", "min_second = 5.0"), "protocol field 'timing.min_second' is unknown"),
])
def test_an_unknown_field_is_refused_by_name(edit, message):
    text = edit(DEFAULT_TEXT)
    assert text != DEFAULT_TEXT
    with pytest.raises(ProtocolError) as err:
        parse_protocol(text)
    assert message in str(err.value)


def test_a_campaigns_frozen_protocol_with_an_unknown_field_still_reads(ws):
    from cpdm.rating.campaigns import get_campaign
    from tests.rating_fixtures import make_world

    make_world(ws, 2, 1)
    frozen = DEFAULT_TEXT.replace("version = 1", "version = 1\nnotes = 'made before cpdm refused unknown fields'")
    ws.conn.execute("UPDATE campaigns SET protocol = ?", (frozen,))  # a campaign created by an older cpdm
    assert get_campaign(ws, 1).protocol.question_ids == ["content", "style", "copy"]
    with pytest.raises(ProtocolError, match="'notes' is unknown"):
        parse_protocol(frozen)


def test_missing_questions_and_bad_toml():
    with pytest.raises(ProtocolError, match="'questions' is missing"):
        parse_protocol('name = "x"\ninstructions = "a"\nconsent = "b"\n')
    with pytest.raises(ProtocolError, match="not valid TOML"):
        parse_protocol("name = ")
    with pytest.raises(ProtocolError, match="'questions' must be an array"):
        parse_protocol(MINIMAL.split("[[questions]]")[0] + 'questions = "all"\n')


def test_load_protocol_file_names_the_file(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text(DEFAULT_TEXT.replace("min_seconds = 2.0", "min_seconds = 'x'"), encoding="utf-8")
    with pytest.raises(ProtocolError, match=r"bad\.toml.*'timing\.min_seconds'"):
        load_protocol_file(bad)
    with pytest.raises(ProtocolError, match="cannot read protocol"):
        load_protocol_file(tmp_path / "missing.toml")
    good = tmp_path / "good.toml"
    good.write_text(MINIMAL, encoding="utf-8")
    text, protocol = load_protocol_file(good)
    assert text == MINIMAL and protocol.name == "mini"
