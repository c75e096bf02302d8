"""Presence and device-state values: the domain's plain data.

Nothing here knows about sockets, AMI or SQLite. Every value that comes from
outside (API body, CLI argument, AMI event) passes through :func:`parse_presence`
or :func:`parse_device_state`, which raise :class:`InvalidInput` with a message
fit to show a user.
"""

from __future__ import annotations

import enum
import unicodedata
from datetime import UTC, datetime
from collections.abc import Iterable
from dataclasses import dataclass, field

from astpresence.domain.logsafe import clip

#: Asterisk truncates a decoded subtype or message past this many bytes without
#: telling anyone (tests/support/captures/escaping-and-limits.txt, action ``long-1``).
MAX_TEXT_BYTES = 255


class InvalidInput(ValueError):
    """A value from outside broke a rule; the message names the rule."""


class State(enum.StrEnum):
    """The seven presence states of Asterisk's CustomPresence provider."""

    NOT_SET = "not_set"
    UNAVAILABLE = "unavailable"
    AVAILABLE = "available"
    AWAY = "away"
    XA = "xa"
    CHAT = "chat"
    DND = "dnd"


STATE_NAMES: tuple[str, ...] = tuple(s.value for s in State)


def parse_state(raw: object) -> State:
    """Accept a state name the way Asterisk does: case-insensitively."""
    if not isinstance(raw, str):
        raise InvalidInput(f"state must be a string, one of: {', '.join(STATE_NAMES)}")
    try:
        return State(raw.lower())
    except ValueError:
        raise InvalidInput(
            f"invalid state {raw!r}: expected one of {', '.join(STATE_NAMES)}"
        ) from None


def _is_forbidden(ch: str) -> bool:
    # Cc covers C0 (CR, LF, TAB, NUL...), DEL and C1. U+2028/2029 are line
    # breaks to many consumers even if AMI does not split on them.
    return unicodedata.category(ch) in ("Cc", "Cs") or ch in "\u2028\u2029"


def validate_text(field: str, value: object) -> str:
    """Check a subtype or message: a string, <= 255 UTF-8 bytes, no control chars."""
    if value is None:
        return ""
    if not isinstance(value, str):
        raise InvalidInput(f"{field} must be a string")
    if value.isascii() and value.isprintable():
        size = len(value)  # the common case, checked in C: no control character
    else:
        for ch in value:
            if _is_forbidden(ch):
                raise InvalidInput(
                    f"{field} contains control character U+{ord(ch):04X}; "
                    "control characters (CR, LF, TAB...) are not allowed"
                )
        size = len(value.encode("utf-8"))
    if size > MAX_TEXT_BYTES:
        raise InvalidInput(
            f"{field} is {size} bytes of UTF-8; the limit is {MAX_TEXT_BYTES} bytes "
            "(Asterisk would silently truncate it)"
        )
    return value


def normalise_text(text: str) -> str:
    """Text read from Asterisk made writable again: what :func:`validate_text` accepts.

    Other AMI clients and the Asterisk CLI can store control characters and
    longer text (docs/asterisk.md, "Presence"). Control characters are
    dropped and the rest is cut at a UTF-8 character boundary, so the value
    can be written back (after a call, say) instead of being refused forever.
    """
    if text.isascii() and text.isprintable() and len(text) <= MAX_TEXT_BYTES:
        return text
    clean = "".join(ch for ch in text if not _is_forbidden(ch))
    raw = clean.encode("utf-8")
    if len(raw) > MAX_TEXT_BYTES:
        clean = raw[:MAX_TEXT_BYTES].decode("utf-8", "ignore")
    return clean


MAX_LABEL = 80


def check_label(value: object) -> str:
    """A token label: a string of at most 80 characters, none of them a control character."""
    if not isinstance(value, str):
        raise InvalidInput("label must be a string")
    if len(value) > MAX_LABEL:
        raise InvalidInput(f"label is longer than {MAX_LABEL} characters")
    for ch in value:
        if _is_forbidden(ch):
            raise InvalidInput(f"label contains control character U+{ord(ch):04X}")
    return value


@dataclass(frozen=True, slots=True)
class Presence:
    """A presence value as Asterisk stores it: state, subtype, message."""

    state: State
    subtype: str = ""
    message: str = ""

    def as_dict(self) -> dict[str, str]:
        return {"state": self.state.value, "subtype": self.subtype, "message": self.message}

    def normalised(self) -> Presence:
        """This value with subtype and message made writable (see :func:`normalise_text`)."""
        return Presence(self.state, normalise_text(self.subtype), normalise_text(self.message))


NOT_SET = Presence(State.NOT_SET)


def parse_presence(state: object, subtype: object = None, message: object = None) -> Presence:
    """Build a validated :class:`Presence` from untrusted parts."""
    return Presence(
        parse_state(state),
        validate_text("subtype", subtype),
        validate_text("message", message),
    )


class DeviceState(enum.StrEnum):
    """Asterisk device states (``DeviceStateChange`` ``State`` header)."""

    UNKNOWN = "UNKNOWN"
    NOT_INUSE = "NOT_INUSE"
    INUSE = "INUSE"
    BUSY = "BUSY"
    INVALID = "INVALID"
    UNAVAILABLE = "UNAVAILABLE"
    RINGING = "RINGING"
    RINGINUSE = "RINGINUSE"
    ONHOLD = "ONHOLD"


# How Asterisk aggregates the devices of a hint joined with '&': the
# "busiest" wins (see docs/asterisk.md, "Device state").
DEVICE_RANK: dict[DeviceState, int] = {
    state: rank
    for rank, state in enumerate(
        (
            DeviceState.INVALID,
            DeviceState.UNKNOWN,
            DeviceState.UNAVAILABLE,
            DeviceState.NOT_INUSE,
            DeviceState.ONHOLD,
            DeviceState.RINGING,
            DeviceState.INUSE,
            DeviceState.BUSY,
            DeviceState.RINGINUSE,
        )
    )
}


def parse_device_state(raw: object) -> DeviceState:
    if not isinstance(raw, str):
        raise InvalidInput("device state must be a string")
    try:
        return DeviceState(raw.upper())
    except ValueError:
        raise InvalidInput(
            f"invalid device state {raw!r}: expected one of "
            + ", ".join(s.value for s in DeviceState)
        ) from None


def aggregate_devices(states: Iterable[DeviceState]) -> DeviceState:
    """The state Asterisk shows for a hint whose devices have these states.

    As main/devicestate.c ``ast_devstate_aggregate_add``: the busiest wins,
    except that RINGING together with INUSE, ONHOLD or BUSY gives RINGINUSE.
    """
    best = DeviceState.INVALID
    ringing = in_use = False
    for state in states:
        if state is DeviceState.RINGING:
            ringing = True
        elif state in (DeviceState.INUSE, DeviceState.ONHOLD, DeviceState.BUSY):
            in_use = True
        if ringing and in_use:
            best = DeviceState.RINGINUSE
        elif DEVICE_RANK[state] > DEVICE_RANK[best]:
            best = state
    return best


#: The name of the single Asterisk server of the ``[ami]`` form (``[[asterisk]]``
#: entries name their own).
DEFAULT_NODE = "asterisk"

USER_ID_MAX = 80
#: Characters a user id cannot hold: they end the AMI header or the function
#: call it travels in (``PRESENCE_STATE(CustomPresence:<id>)``), split a hint,
#: or cannot be routed as one URL path segment (``/v1/presence/{user}``).
USER_ID_FORBIDDEN = frozenset("(),|&:; /\\{}?#%\"'<>`")


def validate_user_id(raw: object) -> str:
    """A user id is the ``<id>`` of ``CustomPresence:<id>``.

    It travels inside an AMI header (``Variable: PRESENCE_STATE(CustomPresence:<id>)``),
    so it must not contain characters that end the header or the function call.
    """
    if not isinstance(raw, str) or not raw:
        raise InvalidInput("user id must be a non-empty string")
    if len(raw) > USER_ID_MAX:
        raise InvalidInput(f"user id is longer than {USER_ID_MAX} characters")
    for ch in raw:
        if _is_forbidden(ch) or ch in USER_ID_FORBIDDEN:
            raise InvalidInput(f"user id {raw!r} contains a forbidden character {ch!r}")
    if raw in (".", ".."):
        raise InvalidInput(f"user id {raw!r} cannot be routed as a path segment")
    return raw


@dataclass(frozen=True)
class Secret:
    """A string that never shows in logs, reprs or tracebacks."""

    value: str = field(repr=False)

    def __repr__(self) -> str:
        return "Secret('********')" if self.value else "Secret('')"

    __str__ = __repr__


def parse_instant(field: str, raw: object) -> datetime:
    """An ISO 8601 date-time with a zone (from a client, a leader, a stored row), in
    UTC; InvalidInput naming ``field`` otherwise. The one time parser."""
    if not isinstance(raw, str):
        raise InvalidInput(f"{field} must be an ISO 8601 date-time string")
    shown = clip(raw, 40)
    try:
        value = datetime.fromisoformat(raw)
        if value.tzinfo is None:
            raise InvalidInput(f"{field} {shown} needs a time zone (e.g. +01:00 or Z)")
        return value.astimezone(UTC)  # year 1 or 9999 with an offset overflows here
    except OverflowError:
        raise InvalidInput(f"{field} {shown} is out of range") from None
    except ValueError as exc:
        if isinstance(exc, InvalidInput):
            raise
        raise InvalidInput(
            f"{field} {shown} is not an ISO 8601 date-time (e.g. 2026-11-21T15:00:00+01:00)"
        ) from None
