"""FrameParser and the encoders: captures split at every byte, properties, limits."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from astpresence.asterisk.ami.frames import (
    DEFAULT_MAX_FRAME,
    DEFAULT_MAX_LINE,
    MAX_ACTION_LINE,
    ActionEncodeError,
    Banner,
    FrameError,
    FrameParser,
    Item,
    Message,
    encode_action,
)
from tests.support.wire import encode_message
from tests.support.fakeami import CAPTURE_DIR, captured_server_bytes

CAPTURES = sorted(CAPTURE_DIR.glob("*.txt"))


def feed_chunks(
    data: bytes,
    cuts: list[int],
    *,
    expect_banner: bool = True,
    max_line: int = DEFAULT_MAX_LINE,
    max_frame: int = DEFAULT_MAX_FRAME,
) -> list[Item]:
    parser = FrameParser(expect_banner=expect_banner, max_line=max_line, max_frame=max_frame)
    out: list[Item] = []
    last = 0
    for cut in sorted(cuts):
        out += parser.feed(data[last:cut])
        last = cut
    out += parser.feed(data[last:])
    return out


def messages(items: list[Item]) -> list[Message]:
    return [item for item in items if isinstance(item, Message)]


# -- the captures ------------------------------------------------------------------


@pytest.mark.parametrize("capture", CAPTURES, ids=lambda p: p.stem)
def test_capture_split_anywhere_gives_same_items(capture: Path) -> None:
    data = captured_server_bytes(capture)
    whole = FrameParser().feed(data)
    assert isinstance(whole[0], Banner) and whole[0].is_asterisk
    for i in range(len(data) + 1):
        parser = FrameParser()
        assert parser.feed(data[:i]) + parser.feed(data[i:]) == whole, f"split at {i}"
    parser = FrameParser()
    one_by_one = [item for i in range(len(data)) for item in parser.feed(data[i : i + 1])]
    assert one_by_one == whole
    assert parser.buffered == 0


def test_capture_content_survives() -> None:
    items = FrameParser().feed(captured_server_bytes(CAPTURE_DIR / "presence-set-list-query.txt"))
    ps1 = next(m for m in messages(items) if m.action_id == "ps-1")
    assert ps1.get("Subtype") == "été à Paris, note with, commas"
    # Two "Message" headers: get() gives the first, PresenceMessage the presence.
    assert ps1.get_all("Message") == ["Presence State", "Returning Monday: àéîô"]
    assert ps1.get("PresenceMessage") == "Returning Monday: àéîô"


def test_forged_frames_from_capture_are_refused_not_fatal() -> None:
    # inj-1 / ps-inj: Asterisk writes CR/LF raw, so "x" arrives as a frame.
    items = FrameParser().feed(captured_server_bytes(CAPTURE_DIR / "escaping-and-limits.txt"))
    errors = [item for item in items if isinstance(item, FrameError)]
    assert len(errors) == 3
    assert all("malformed header line 'x'" in e.reason for e in errors)
    status = next(m for m in messages(items) if m.event == "PresenceStatus" and
                  m.get("Message") == "l1")
    # The forged "Event: Forged" line is only a second Event header.
    assert status.event == "PresenceStatus"
    assert status.get_all("Event") == ["PresenceStatus", "Forged"]
    # What follows is still parsed.
    assert messages(items)[-1].event == "DeviceStateChange"


# -- properties --------------------------------------------------------------------

keys = st.text(
    alphabet=st.characters(categories=("Lu", "Ll", "Nd"), max_codepoint=127)
    | st.sampled_from("-_"),
    min_size=1,
    max_size=20,
)
values = st.text(
    alphabet=st.characters(exclude_categories=["Cs"], exclude_characters="\r\n"),
    max_size=60,
)
frames = st.lists(st.tuples(keys, values), min_size=1, max_size=6)


@settings(max_examples=300, deadline=None)
@given(st.lists(frames, min_size=1, max_size=4), st.data())
def test_encode_message_round_trips_any_chunking(
    frame_list: list[list[tuple[str, str]]], data: st.DataObject
) -> None:
    wire = b"".join(encode_message(headers) for headers in frame_list)
    cuts = data.draw(st.lists(st.integers(0, len(wire)), max_size=8))
    items = feed_chunks(wire, cuts, expect_banner=False)
    assert [m.headers for m in messages(items)] == frame_list
    assert items == messages(items)


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 8), st.data())
def test_frame_at_size_limit_accepted_whatever_the_chunking(
    slack: int, data: st.DataObject
) -> None:
    limit = 64
    body = f"Key: {'v' * (limit - 5 - slack)}".encode()  # len(body) == limit - slack
    wire = body + b"\r\n\r\n" + b"Next: 1\r\n\r\n"
    cuts = data.draw(st.lists(st.integers(0, len(wire)), max_size=4))
    items = feed_chunks(wire, cuts, expect_banner=False, max_frame=limit)
    assert [m.headers for m in messages(items)] == [
        [("Key", "v" * (limit - 5 - slack))],
        [("Next", "1")],
    ]
    assert items == messages(items)


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 200), st.data())
def test_over_long_frame_refused_once_whatever_the_chunking(
    extra: int, data: st.DataObject
) -> None:
    limit = 64
    wire = (
        b"A: 1\r\n\r\n"
        + b"Big: " + b"v" * (limit - 5 + extra) + b"\r\n\r\n"
        + b"B: 2\r\n\r\n"
    )
    cuts = data.draw(st.lists(st.integers(0, len(wire)), max_size=6))
    items = feed_chunks(wire, cuts, expect_banner=False, max_frame=limit)
    assert [type(i).__name__ for i in items] == ["Message", "FrameError", "Message"]
    assert [m.headers for m in messages(items)] == [[("A", "1")], [("B", "2")]]
    error = items[1]
    assert isinstance(error, FrameError) and error.reason == "frame too long"


@settings(max_examples=100, deadline=None)
@given(st.data())
def test_banner_at_line_limit_accepted_whatever_the_chunking(data: st.DataObject) -> None:
    limit = 40
    banner = "Asterisk Call Manager/" + "9" * (limit - 22)
    wire = banner.encode() + b"\r\nA: 1\r\n\r\n"
    cuts = data.draw(st.lists(st.integers(0, len(wire)), max_size=4))
    items = feed_chunks(wire, cuts, max_line=limit)
    assert items == [Banner(banner), Message([("A", "1")])]


# -- limits and malformed input --------------------------------------------------------


def test_over_long_line_refused_next_frame_parses() -> None:
    parser = FrameParser(expect_banner=False, max_line=50)
    items = parser.feed(b"Event: X\r\nLong: " + b"z" * 60 + b"\r\n\r\nEvent: Y\r\n\r\n")
    assert isinstance(items[0], FrameError) and items[0].reason == "line too long"
    assert items[1:] == [Message([("Event", "Y")])]


@pytest.mark.parametrize(
    "line",
    [b"no colon here", b": empty key", b" Key: leading space", b"Key : space before colon"],
)
def test_malformed_line_refused_next_frame_parses(line: bytes) -> None:
    parser = FrameParser(expect_banner=False)
    items = parser.feed(b"Event: X\r\n" + line + b"\r\n\r\nEvent: Y\r\n\r\n")
    assert isinstance(items[0], FrameError) and items[0].reason.startswith("malformed header line")
    assert items[1:] == [Message([("Event", "Y")])]


def test_over_long_banner_is_an_error() -> None:
    items = FrameParser(max_line=20).feed(b"x" * 40)
    assert len(items) == 1 and isinstance(items[0], FrameError)


def test_non_asterisk_banner_is_reported_as_such() -> None:
    (banner,) = FrameParser().feed(b"SSH-2.0-OpenSSH_9.6\r\n")
    assert isinstance(banner, Banner) and not banner.is_asterisk


def test_value_keeps_all_but_one_leading_space() -> None:
    (message,) = FrameParser(expect_banner=False).feed(b"Output:     -= x =-\r\nEmpty: \r\n\r\n")
    assert isinstance(message, Message)
    assert message.headers == [("Output", "    -= x =-"), ("Empty", "")]


def test_invalid_utf8_is_replaced_not_fatal() -> None:
    (message,) = FrameParser(expect_banner=False).feed(b"Message: caf\xc3\r\n\r\n")
    assert isinstance(message, Message) and message.get("Message") == "caf\ufffd"


# -- encode_action ---------------------------------------------------------------------


def test_encode_action_format() -> None:
    assert encode_action("Ping", {"ActionID": "p-1"}) == b"Action: Ping\r\nActionID: p-1\r\n\r\n"


@pytest.mark.parametrize("bad", ["a\rb", "a\nb", "a\r\nEvent: Forged", "nul\0"])
def test_encode_action_refuses_control_characters(bad: str) -> None:
    with pytest.raises(ActionEncodeError, match="CR, LF or NUL"):
        encode_action("Setvar", [("Value", bad)])


@pytest.mark.parametrize("key", ["", "Bad Key", "Colon:", "Line\nBreak", "Ümlaut"])
def test_encode_action_refuses_bad_header_names(key: str) -> None:
    with pytest.raises(ActionEncodeError, match="invalid AMI header name"):
        encode_action("Setvar", [(key, "x")])


def test_encode_action_line_limit() -> None:
    prefix = len("Value: ")
    fits = "x" * (MAX_ACTION_LINE - prefix)
    assert encode_action("Setvar", [("Value", fits)]).count(b"x") == len(fits)
    with pytest.raises(ActionEncodeError, match=str(MAX_ACTION_LINE)):
        encode_action("Setvar", [("Value", fits + "x")])
    # The limit counts bytes: a two-byte character can tip it over.
    with pytest.raises(ActionEncodeError):
        encode_action("Setvar", [("Value", fits[:-1] + "é")])


def test_lone_surrogate_is_an_encode_error() -> None:
    with pytest.raises(ActionEncodeError, match="not valid Unicode"):
        encode_action("Setvar", {"Value": "a\ud800b"})


def test_feeding_one_byte_at_a_time_stays_linear() -> None:
    frame = b"Event: Big\r\nValue: " + b"z" * 100_000 + b"\r\n\r\n"
    data = b"Asterisk Call Manager/13.0.0\r\n" + frame * 2
    parser = FrameParser(max_line=200_000)
    items = []
    for i in range(len(data)):
        items += parser.feed(data[i:i + 1])
    assert [m.event for m in items if isinstance(m, Message)] == ["Big", "Big"]
    # Each byte is looked at a bounded number of times (a quadratic parser
    # searched the whole buffer again per byte: about 10^10 here).
    assert parser.searched <= 4 * len(data)


@given(st.integers(0, 400), st.lists(st.integers(1, 600), max_size=8),
       st.sampled_from([50, 100, 200]), st.sampled_from([20, 60, 1000]))
@settings(max_examples=300, deadline=None)
def test_the_frame_after_an_over_long_one_is_kept(long_len: int, cuts: list[int],
                                                  max_frame: int, max_line: int) -> None:
    good = b"Event: Next\r\nA: b\r\n\r\n"
    long = b"Event: Long\r\nX: " + b"y" * long_len + b"\r\n\r\n"
    data = b"Asterisk Call Manager/13.0.0\r\n" + long + good + good
    parser = FrameParser(max_frame=max_frame, max_line=max_line)
    items = []
    prev = 0
    for cut in sorted({c for c in cuts if c < len(data)}) + [len(data)]:
        items += parser.feed(data[prev:cut])
        prev = cut
    assert [m.event for m in items if isinstance(m, Message)].count("Next") == 2


@pytest.mark.parametrize("split", [10, 30, 45, 46, 47])
def test_the_frame_after_an_over_long_banner_is_kept(split: int) -> None:
    data = b"Asterisk Call Manager/" + b"9" * 40 + b"\r\nResponse: Success\r\n\r\n"
    parser = FrameParser(max_line=20)
    items = parser.feed(data[:split]) + parser.feed(data[split:])
    assert isinstance(items[0], FrameError) and "banner" in items[0].reason
    assert [m.response for m in items if isinstance(m, Message)] == ["Success"]
