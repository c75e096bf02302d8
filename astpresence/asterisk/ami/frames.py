"""AMI framing without I/O: bytes in, messages out; actions in, bytes out.

The parser is fed whatever the socket gave, in chunks of any size. It buffers
*bytes* and decodes only complete frames, so a UTF-8 character split across
TCP reads arrives intact (panoramisk 1.4 decodes each chunk on its own and
loses such characters).

Wire format (tests/support/captures/*.txt): a banner line
``Asterisk Call Manager/<version>`` then frames of ``Key: Value`` lines, each
line ending in CRLF, each frame ending in an empty line.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Union

CRLF = b"\r\n"
FRAME_END = b"\r\n\r\n"

#: Asterisk's manager reads request lines into a 1025-byte buffer and answers
#: "Failed to parse message: line too long" past it
#: (tests/support/captures/escaping-and-limits.txt, ``toolong-raw``). We refuse earlier, locally.
MAX_ACTION_LINE = 1000

#: Limits on what we accept from the server. Asterisk's own output lines can
#: be long (hints, command output), but not unbounded.
DEFAULT_MAX_LINE = 16 * 1024
DEFAULT_MAX_FRAME = 512 * 1024

#: Bounds of FrameParser's cache of checked header names.
_KNOWN_KEYS_MAX = 512
_KNOWN_KEY_LEN = 64


@dataclass(slots=True)
class Message:
    """One AMI frame: an ordered list of headers, looked up case-insensitively.

    A header can repeat (``Output:`` in Command responses); :meth:`get`
    returns the first value, :meth:`get_all` every value.
    """

    headers: list[tuple[str, str]]
    _index: dict[str, str] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        index = self._index
        for key, value in self.headers:
            index.setdefault(key.lower(), value)

    @classmethod
    def _parsed(cls, headers: list[tuple[str, str]], index: dict[str, str]) -> Message:
        """For the parser, which builds the index in the pass that splits the lines.

        Skips ``__init__``: one loop and two allocations less per frame.
        """
        msg = object.__new__(cls)
        msg.headers = headers
        msg._index = index
        return msg

    def get(self, name: str, default: str | None = None) -> str | None:
        return self._index.get(name.lower(), default)

    def __getitem__(self, name: str) -> str:
        value = self._index.get(name.lower())
        if value is None:
            raise KeyError(name)
        return value

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._index

    def get_all(self, name: str) -> list[str]:
        lname = name.lower()
        return [v for k, v in self.headers if k.lower() == lname]

    @property
    def event(self) -> str | None:
        return self._index.get("event")

    @property
    def response(self) -> str | None:
        return self._index.get("response")

    @property
    def action_id(self) -> str | None:
        return self._index.get("actionid")

    def as_dict(self) -> dict[str, str]:
        """First value of each header, original case."""
        out: dict[str, str] = {}
        for key, value in self.headers:
            out.setdefault(key, value)
        return out


@dataclass(frozen=True, slots=True)
class Banner:
    """The first line Asterisk sends, e.g. ``Asterisk Call Manager/13.0.0``."""

    text: str

    @property
    def is_asterisk(self) -> bool:
        return self.text.startswith("Asterisk Call Manager/")


@dataclass(frozen=True, slots=True)
class FrameError:
    """A frame that was refused; parsing goes on after it."""

    reason: str
    sample: str  # the first bytes of the offending input, for the log


Item = Union[Banner, Message, FrameError]


class FrameParser:
    """Sans-IO AMI parser: ``feed(bytes) -> list of Banner | Message | FrameError``."""

    def __init__(
        self,
        *,
        expect_banner: bool = True,
        max_line: int = DEFAULT_MAX_LINE,
        max_frame: int = DEFAULT_MAX_FRAME,
    ) -> None:
        self._buf = bytearray()
        self._expect_banner = expect_banner
        self._max_line = max_line
        self._max_frame = max_frame
        self._skipping = False  # discarding an over-long frame until its end
        self._skipping_line = False  # discarding an over-long banner until its CRLF
        #: Bytes searched for a frame end so far: stays proportional to the
        #: bytes fed however they are cut (tests/asterisk/test_frames.py checks it).
        self.searched = 0
        # Header names already checked, with their lowercase form: AMI repeats
        # a few dozen names, so most lines skip the checks and the lower().
        self._known_keys: dict[str, str] = {}

    @property
    def buffered(self) -> int:
        return len(self._buf)

    def feed(self, data: bytes) -> list[Item]:
        out: list[Item] = []
        buf = self._buf
        # What was buffered before holds no complete terminator: only new bytes
        # (and the few before them) are searched, so feeding a frame one byte
        # at a time costs linear time, not quadratic.
        old = len(buf)
        buf += data
        pos = 0
        if self._expect_banner or self._skipping_line:
            pos = self._first_line(old, out)
            if pos < 0:
                return out
            old = pos
        scan = max(pos, old - 3)
        self.searched += len(buf) - scan
        last = buf.rfind(FRAME_END, scan)
        if last >= 0:
            pos = self._frames(pos, last, out)
        del buf[:pos]
        # Without a frame end in the buffer, it may hold a whole frame of
        # max_frame bytes plus the first 3 bytes of its CRLFCRLF.
        if len(buf) > self._max_frame + len(FRAME_END) - 1:
            if not self._skipping:
                out.append(FrameError("frame too long", _sample(buf)))
            self._skipping = True
            # Keep the last 3 bytes: they may be the start of the frame end.
            del buf[:-3]
        return out

    def _first_line(self, old: int, out: list[Item]) -> int:
        """The banner (or the rest of an over-long one): where frames start, -1 if not yet."""
        buf = self._buf
        end = buf.find(CRLF, max(0, old - 1))
        if end < 0:
            # +1: the line may be complete but for the LF after its CR.
            if self._expect_banner and len(buf) > self._max_line + 1:
                self._expect_banner = False
                out.append(FrameError("banner line too long", _sample(buf)))
                self._skipping_line = True
            if self._skipping_line:
                del buf[:-1]  # keep a CR whose LF is still to come
            return -1
        if self._skipping_line:
            self._skipping_line = False
        elif end > self._max_line:
            out.append(FrameError("banner line too long", _sample(buf[:end])))
        else:
            out.append(Banner(buf[:end].decode("utf-8", "replace")))
        self._expect_banner = False
        return end + 2

    def _frames(self, pos: int, last: int, out: list[Item]) -> int:
        """Parse the frames in ``buf[pos:last + 4]``; returns where the rest starts."""
        # One split instead of a find() and a slice per frame. It cuts left to
        # right like successive find()s; up to the last CRLFCRLF found from the
        # right, so the incomplete tail is not copied. When CRLF runs overlap
        # there, the last part is an unfinished frame: kept.
        frames = self._buf[pos:last + 4].split(FRAME_END)
        rest = last + 4 - len(frames.pop())
        max_frame = self._max_frame
        parse = self._parse_frame
        append = out.append
        for frame in frames:
            if self._skipping:
                self._skipping = False  # end of the frame we were discarding
            elif not frame:
                continue
            elif len(frame) > max_frame:
                append(FrameError("frame too long", _sample(frame)))
            else:
                item = parse(frame)
                if not isinstance(item, Message) or item.headers:
                    append(item)
        return rest

    def _parse_frame(self, raw: bytes | bytearray) -> Message | FrameError:
        # A stray blank line between frames leaves a leading CRLF here.
        text = raw.decode("utf-8", "replace").lstrip("\r\n")
        if not text:
            return Message([])
        headers: list[tuple[str, str]] = []
        index: dict[str, str] = {}  # Message's lookup table, built in the same pass
        known = self._known_keys
        max_line = self._max_line
        # No line is longer than the frame: most frames need no check per line.
        check_lines = len(text) > max_line
        for line in text.split("\r\n"):
            if check_lines and len(line) > max_line:
                return FrameError("line too long", _sample(raw))
            key, sep, value = line.partition(":")
            lkey = known.get(key)
            if lkey is None or not sep:
                if not sep or not key or key != key.strip():
                    return FrameError(f"malformed header line {line[:60]!r}", _sample(raw))
                lkey = key.lower()
                if len(known) < _KNOWN_KEYS_MAX and len(key) <= _KNOWN_KEY_LEN:
                    known[key] = lkey
            # Asterisk writes "Key: Value"; drop exactly that one space so that
            # leading spaces in values (command output) are kept.
            value = value.removeprefix(" ")
            headers.append((key, value))
            index.setdefault(lkey, value)
        return Message._parsed(headers, index)


def _sample(data: bytes | bytearray) -> str:
    return bytes(data[:80]).decode("utf-8", "replace")


class ActionEncodeError(ValueError):
    """An action that must not go on the wire (would forge frames or be refused)."""


HeaderInput = Union[Mapping[str, str], Iterable[tuple[str, str]]]


def _pairs(headers: HeaderInput) -> Iterator[tuple[str, str]]:
    if isinstance(headers, Mapping):
        yield from headers.items()
    else:
        yield from headers


def encode_action(action: str, headers: HeaderInput = ()) -> bytes:
    """Serialise an action; refuse CR/LF/NUL anywhere and over-long lines.

    Checking here, at the one place bytes are produced, means no caller can put
    unchecked user text on the wire.
    """
    lines = []
    for key, value in [("Action", action), *_pairs(headers)]:
        if key not in _GOOD_KEYS:
            _check_key(key)
        if not isinstance(value, str):
            raise ActionEncodeError(f"AMI header {key} value must be text")
        if "\r" in value or "\n" in value or "\0" in value:
            raise ActionEncodeError(f"AMI header {key} contains CR, LF or NUL")
        line = f"{key}: {value}"
        # ASCII (nearly every line) is one byte a character; anything else is
        # encoded once here to count it and to refuse what UTF-8 cannot carry.
        size = len(line) if line.isascii() else _utf8_size(key, line)
        if size > MAX_ACTION_LINE:
            raise ActionEncodeError(
                f"AMI header {key} is {size} bytes; Asterisk refuses lines over ~1 KiB "
                f"(limit used: {MAX_ACTION_LINE})"
            )
        lines.append(line)
    lines.append("\r\n")
    return "\r\n".join(lines).encode()


#: Header names already checked (a handful: Action, ActionID, Variable, ...), at most
#: :data:`_MAX_GOOD_KEYS` of them.
_GOOD_KEYS: set[str] = set()
_MAX_GOOD_KEYS = 256


def _check_key(key: str) -> None:
    if not key or any(c in key for c in ":\r\n\0 ") or not key.isascii():
        raise ActionEncodeError(f"invalid AMI header name {key!r}")
    if len(_GOOD_KEYS) < _MAX_GOOD_KEYS:
        _GOOD_KEYS.add(key)


def _utf8_size(key: str, line: str) -> int:
    try:
        return len(line.encode())
    except UnicodeEncodeError:  # a lone surrogate cannot be UTF-8
        raise ActionEncodeError(f"AMI header {key} is not valid Unicode text") from None
