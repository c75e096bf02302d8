"""PRESENCE_STATE values and ast_escape_c, against properties and the captures."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from astpresence.asterisk.ami.frames import FrameParser, Message
from astpresence.asterisk.codec import (
    c_unescape,
    decode_presence_value,
    encode_presence_value,
    presence_from_change_event,
)
from astpresence.domain.model import MAX_TEXT_BYTES, InvalidInput, Presence, State
from tests.support.fakeami import CAPTURE_DIR, captured_server_bytes
from tests.support.wire import c_escape

valid_text = st.text(
    alphabet=st.characters(exclude_categories=("Cc", "Cs"), exclude_characters="\u2028\u2029"),
    max_size=80,
).filter(lambda s: len(s.encode("utf-8")) <= MAX_TEXT_BYTES)


def capture_messages(name: str) -> list[Message]:
    items = FrameParser().feed(captured_server_bytes(CAPTURE_DIR / name))
    return [item for item in items if isinstance(item, Message)]


@settings(max_examples=500)
@given(st.text())
def test_c_unescape_undoes_c_escape(text: str) -> None:
    assert c_unescape(c_escape(text)) == text


@given(st.text())
def test_c_escape_leaves_no_line_breaks(text: str) -> None:
    escaped = c_escape(text)
    assert "\r" not in escaped and "\n" not in escaped


@settings(max_examples=300)
@given(st.sampled_from(list(State)), valid_text, valid_text)
def test_presence_value_round_trips(state: State, subtype: str, message: str) -> None:
    presence = Presence(state, subtype, message)
    value = encode_presence_value(presence)
    # Always base64: exactly three commas, whatever the text holds.
    assert value.count(",") == 3 and value.endswith(",e")
    assert decode_presence_value(value) == presence


def test_set3_value_from_capture_decodes() -> None:
    value = (
        "xa,w6l0w6kgw6AgUGFyaXMsIG5vdGUgd2l0aCwgY29tbWFz,"
        "UmV0dXJuaW5nIE1vbmRheTogw6DDqcOuw7Q=,e"
    )
    assert decode_presence_value(value) == Presence(
        State.XA, "été à Paris, note with, commas", "Returning Monday: àéîô"
    )
    # And Asterisk echoed exactly that text in its events (set-3).
    change = next(
        m for m in capture_messages("presence-set-list-query.txt")
        if m.event == "PresenceStateChange" and m.get("Status") == "xa"
    )
    assert presence_from_change_event(
        change["Status"], change["Subtype"], change["Message"]
    ) == decode_presence_value(value)


def test_esc1_value_and_escaped_event_from_capture() -> None:
    sent = decode_presence_value("away,QzpcdGVtcCAicXVvdGVkIg==,dGFiCWhlcmU=,e")
    assert sent == Presence(State.AWAY, 'C:\\temp "quoted"', "tab\there")
    messages = capture_messages("escaping-and-limits.txt")
    change = next(m for m in messages if m.event == "PresenceStateChange")
    status = next(m for m in messages if m.event == "PresenceStatus")
    # PresenceStateChange is C-escaped, PresenceStatus raw (README).
    assert (change["Subtype"], change["Message"]) == ('C:\\\\temp \\"quoted\\"', "tab\\there")
    assert (status["Subtype"], status["Message"]) == ('C:\\temp "quoted"', "tab\there")
    assert c_escape(status["Subtype"]) == change["Subtype"]
    assert presence_from_change_event(change["Status"], change["Subtype"], change["Message"]) == sent


def test_injected_crlf_is_recovered_from_the_escaped_event() -> None:
    change = [
        m for m in capture_messages("escaping-and-limits.txt")
        if m.event == "PresenceStateChange"
    ][1]
    assert change["Message"] == "l1\\r\\nEvent: Forged\\r\\n\\r\\nx"
    assert c_unescape(change["Message"]) == "l1\r\nEvent: Forged\r\n\r\nx"
    assert decode_presence_value("away,,bDENCkV2ZW50OiBGb3JnZWQNCg0KeA==,e").message == (
        "l1\r\nEvent: Forged\r\n\r\nx"
    )


def test_plain_value_without_e_option() -> None:
    assert decode_presence_value("dnd,,Trying to get work done") == Presence(
        State.DND, "", "Trying to get work done"
    )
    assert decode_presence_value("AVAILABLE") == Presence(State.AVAILABLE)


def test_unknown_backslash_sequences_are_kept() -> None:
    assert c_unescape("a\\qb\\") == "a\\qb\\"


@pytest.mark.parametrize("field", ["subtype", "message"])
def test_over_long_text_names_the_limit(field: str) -> None:
    text = "é" * 128  # 256 bytes
    presence = Presence(State.AWAY, **{field: text})
    with pytest.raises(InvalidInput, match=f"{field} is 256 bytes.*limit is 255 bytes"):
        encode_presence_value(presence)
    # 255 bytes are fine.
    encode_presence_value(Presence(State.AWAY, **{field: "é" * 127 + "x"}))


@pytest.mark.parametrize("char", ["\r", "\n", "\t", "\0", "\x7f", "\u2028"])
def test_control_characters_are_refused_by_name(char: str) -> None:
    with pytest.raises(InvalidInput, match=f"U\\+{ord(char):04X}.*not allowed"):
        encode_presence_value(Presence(State.AWAY, "", f"a{char}b"))


@pytest.mark.parametrize(
    ("value", "error"),
    [
        ("bogus,x,y", "invalid state 'bogus'"),
        ("away,%%%,x,e", "bad base64"),
        ("away,a,b,e,extra", "too many fields"),
    ],
)
def test_decode_refusals(value: str, error: str) -> None:
    with pytest.raises(InvalidInput, match=error):
        decode_presence_value(value)
