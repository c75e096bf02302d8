"""The rules' vocabulary and settings: source and rule names, the precedence, the
defaults, and :class:`RuleConfig` with the parsers of the ``[rules]`` section.
Pure values; rules.py decides with them.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from types import MappingProxyType
from typing import Final, TypeVar

from astpresence.domain.model import (
    DeviceState,
    InvalidInput,
    Presence,
    State,
    parse_device_state,
    parse_presence,
    parse_state,
)


# --- names ---------------------------------------------------------------

SOURCE_MANUAL: Final = "manual"
SOURCE_DEVICE: Final = "device"
SOURCE_AUTO: Final = "auto"
#: ``Decision.source`` when no contribution applies.
SOURCE_DEFAULT: Final = "default"
#: Source names a timed entry may not use.
RESERVED_SOURCES: Final = frozenset({SOURCE_MANUAL, SOURCE_DEVICE, SOURCE_AUTO, SOURCE_DEFAULT})

RULE_MANUAL_PROTECTED: Final = "manual-protected"
RULE_ON_PHONE: Final = "on-the-phone"
RULE_OFFLINE: Final = "offline"
RULE_TIMED_PREFIX: Final = "timed:"
RULE_AUTO: Final = "auto:missed-calls"
RULE_MANUAL: Final = "manual"
RULE_DEFAULT: Final = "default"

#: Rule identifiers in precedence order (``timed:`` stands for every timed source).
PRECEDENCE: Final = (
    RULE_MANUAL_PROTECTED,
    RULE_ON_PHONE,
    RULE_OFFLINE,
    RULE_TIMED_PREFIX,
    RULE_AUTO,
    RULE_MANUAL,
    RULE_DEFAULT,
)

# --- defaults ------------------------------------------------------------

DEFAULT_ON_PHONE: Final = Presence(State.UNAVAILABLE, "on-the-phone")
DEFAULT_OFFLINE: Final = Presence(State.UNAVAILABLE, "offline")
DEFAULT_OFFLINE_AFTER: Final = timedelta(seconds=60)
#: Upper bound for ``offline_after``; keeps ``since + offline_after`` far from
#: ``datetime.max`` and catches a value typed in milliseconds.
MAX_OFFLINE_AFTER: Final = timedelta(days=7)
DEFAULT_CALL_STATES: Final = frozenset(
    {DeviceState.INUSE, DeviceState.BUSY, DeviceState.RINGINUSE, DeviceState.ONHOLD}
)
DEFAULT_OVERRIDABLE_MANUAL: Final = frozenset({State.AVAILABLE, State.CHAT, State.NOT_SET})
DEFAULT_AUTO_PRESENCE: Final = Presence(State.AWAY, "missed-calls")
DEFAULT_PAUSE_STATES: Final = frozenset({State.DND, State.AWAY, State.XA})
DEFAULT_MIRROR_PREFIX: Final = "presence-"
DEFAULT_PAUSE_REASON_PREFIX: Final = "astpresence:"

#: Presence state -> state of the ``Custom:`` mirror device. Anything not
#: listed maps to INVALID: in a hint, devices joined with ``&`` aggregate to the
#: busiest, ``INVALID < UNKNOWN < UNAVAILABLE < NOT_INUSE < ONHOLD < RINGING <
#: INUSE < BUSY < RINGINUSE``, so INVALID is the only value that never changes
#: what the phone's own state shows (NOT_INUSE would make an unplugged phone
#: look idle). Verified on Asterisk: PJSIP/2001 UNAVAILABLE + Custom INVALID ->
#: hint Unavailable; + Custom NOT_INUSE -> Idle.
MIRROR_MAP: Final[Mapping[State, DeviceState]] = MappingProxyType(
    {
        State.DND: DeviceState.BUSY,
        State.UNAVAILABLE: DeviceState.BUSY,
        State.AWAY: DeviceState.ONHOLD,
        State.XA: DeviceState.ONHOLD,
    }
)

_NAME_RE: Final = re.compile(r"[A-Za-z0-9_.-]+")
_REASON_PREFIX_RE: Final = re.compile(r"[A-Za-z0-9_.:-]+")
_MAX_PREFIX_LEN: Final = 40


_T = TypeVar("_T")


def _default_mirror_map() -> Mapping[State, DeviceState]:
    return MIRROR_MAP


@dataclass(frozen=True)
class RuleConfig:
    """The rule set. Defaults are the documented behaviour; see :meth:`from_mapping`."""

    #: Overlay while any device is in a call; None switches it off.
    on_phone: Presence | None = DEFAULT_ON_PHONE
    #: Overlay once all devices are UNAVAILABLE for ``offline_after``; None = off.
    offline: Presence | None = DEFAULT_OFFLINE
    offline_after: timedelta = DEFAULT_OFFLINE_AFTER
    #: Device states that mean "in a call".
    call_states: frozenset[DeviceState] = DEFAULT_CALL_STATES
    #: Manual states that overlays, timed entries and auto may override.
    overridable_manual: frozenset[State] = DEFAULT_OVERRIDABLE_MANUAL
    #: Timed sources by priority, best first; unlisted sources rank after the
    #: listed ones. Within one rank the most recently set entry wins.
    timed_priority: tuple[str, ...] = ()
    #: Consecutive unanswered calls before auto-away; 0 = off.
    missed_calls_away: int = 0
    auto_presence: Presence = DEFAULT_AUTO_PRESENCE
    #: Whether to keep a ``Custom:<prefix><user>`` mirror device for BLF keys.
    mirror: bool = False
    mirror_prefix: str = DEFAULT_MIRROR_PREFIX
    #: How the mirror is written: "ami" (Setvar DEVICE_STATE(Custom:...)) or
    #: "ari" (PUT /deviceStates/Stasis:..., for sites that run ARI).
    mirror_via: str = "ami"
    mirror_map: Mapping[State, DeviceState] = field(default_factory=_default_mirror_map, hash=False)
    #: Whether to pause the user's queue members while in ``pause_states``.
    queue_pause: bool = False
    #: Effective states during which the user's queue members are paused.
    pause_states: frozenset[State] = DEFAULT_PAUSE_STATES
    pause_reason_prefix: str = DEFAULT_PAUSE_REASON_PREFIX

    @classmethod
    def from_mapping(cls, d: Mapping[str, object]) -> RuleConfig:
        """Parse a TOML ``[rules]`` table.

        Raises :class:`~astpresence.domain.model.InvalidInput` naming the key
        (``rules.<key>``) for an unknown key or a bad value. Keys left out keep
        their defaults.
        """
        if not isinstance(d, Mapping):
            raise InvalidInput("rules must be a table")
        for key in d:
            if key not in RULE_KEYS:
                raise InvalidInput(
                    f"rules: unknown key {key!r} (known keys: {', '.join(RULE_KEYS)})"
                )
        base = cls()

        def get(key: str, parse: Callable[[str, object], _T], default: _T) -> _T:
            return parse(key, d[key]) if key in d else default

        return cls(
            on_phone=get("on_phone", _overlay_parser(DEFAULT_ON_PHONE), base.on_phone),
            offline=get("offline", _overlay_parser(DEFAULT_OFFLINE), base.offline),
            offline_after=get("offline_after", _parse_offline_after, base.offline_after),
            call_states=get("call_states", _parse_call_states, base.call_states),
            overridable_manual=get("overridable_manual", _parse_state_set, base.overridable_manual),
            timed_priority=get("timed_priority", _parse_timed_priority, base.timed_priority),
            missed_calls_away=get("missed_calls_away", _parse_count, base.missed_calls_away),
            auto_presence=get("auto_presence", _parse_auto_presence, base.auto_presence),
            mirror=get("mirror", _parse_bool, base.mirror),
            mirror_prefix=get("mirror_prefix", _parse_mirror_prefix, base.mirror_prefix),
            mirror_via=get("mirror_via", _parse_mirror_via, base.mirror_via),
            mirror_map=get("mirror_map", _parse_mirror_map, base.mirror_map),
            queue_pause=get("queue_pause", _parse_bool, base.queue_pause),
            pause_states=get("pause_states", _parse_state_set, base.pause_states),
            pause_reason_prefix=get(
                "pause_reason_prefix", _parse_reason_prefix, base.pause_reason_prefix
            ),
        )


DEFAULT_RULES: Final = RuleConfig()

#: The keys of the TOML ``[rules]`` table.
RULE_KEYS: Final = (
    "on_phone",
    "offline",
    "offline_after",
    "call_states",
    "overridable_manual",
    "timed_priority",
    "missed_calls_away",
    "auto_presence",
    "mirror",
    "mirror_prefix",
    "mirror_via",
    "mirror_map",
    "queue_pause",
    "pause_states",
    "pause_reason_prefix",
)


def _bad(key: str, why: str) -> InvalidInput:
    return InvalidInput(f"rules.{key}: {why}")


def _parse_presence_table(key: str, raw: object) -> Presence:
    if not isinstance(raw, Mapping):
        raise _bad(key, "expected a table {state, subtype, message}")
    for sub in raw:
        if sub not in ("state", "subtype", "message"):
            raise _bad(key, f"unknown key {sub!r} (expected state, subtype, message)")
    if "state" not in raw:
        raise _bad(key, "missing 'state'")
    try:
        presence = parse_presence(raw["state"], raw.get("subtype"), raw.get("message"))
    except InvalidInput as exc:
        raise _bad(key, str(exc)) from None
    if presence.state is State.NOT_SET:
        # Writing not_set clears the presence in Asterisk: it is no overlay.
        raise _bad(key, "state must not be not_set")
    return presence


def _overlay_parser(default: Presence) -> Callable[[str, object], Presence | None]:
    def parse(key: str, raw: object) -> Presence | None:
        if raw is False:
            return None
        if raw is True:
            return default
        if not isinstance(raw, Mapping):
            raise _bad(key, "expected false or a table {state, subtype, message}")
        return _parse_presence_table(key, raw)

    return parse


def _parse_auto_presence(key: str, raw: object) -> Presence:
    return _parse_presence_table(key, raw)


def _parse_offline_after(key: str, raw: object) -> timedelta:
    if isinstance(raw, bool) or not isinstance(raw, (int, float)):
        raise _bad(key, "expected a number of seconds")
    if not math.isfinite(raw) or raw <= 0:
        raise _bad(key, "must be a number of seconds greater than 0")
    if raw > MAX_OFFLINE_AFTER.total_seconds():
        raise _bad(key, f"must be at most {int(MAX_OFFLINE_AFTER.total_seconds())} seconds")
    return timedelta(seconds=raw)


def _list(key: str, raw: object) -> list[object]:
    if not isinstance(raw, (list, tuple)):
        raise _bad(key, "expected a list")
    return list(raw)


def _parse_set(key: str, raw: object, parse: Callable[[object], _T]) -> frozenset[_T]:
    try:
        return frozenset(parse(item) for item in _list(key, raw))
    except InvalidInput as exc:
        raise _bad(key, str(exc)) from None


def _parse_state_set(key: str, raw: object) -> frozenset[State]:
    return _parse_set(key, raw, parse_state)


def _parse_call_states(key: str, raw: object) -> frozenset[DeviceState]:
    out = _parse_set(key, raw, parse_device_state)
    if not out:
        raise _bad(key, "must not be empty (set on_phone = false to switch the overlay off)")
    return out


#: The one grammar of a timed source's name (API, CLI and ``timed_priority``).
SOURCE_NAME: Final = re.compile(r"[a-z][a-z0-9_-]{0,31}")


def check_source_name(name: object) -> str:
    """A timed source's name, or :class:`InvalidInput` saying what a name may be."""
    if not isinstance(name, str) or not SOURCE_NAME.fullmatch(name):
        raise InvalidInput(
            f"invalid source name {name!r}: lowercase letters, digits, '-' and '_', "
            "starting with a letter, at most 32 characters")
    if name in RESERVED_SOURCES:
        raise InvalidInput(f"source name {name!r} is reserved (not a timed source)")
    return name


def _parse_timed_priority(key: str, raw: object) -> tuple[str, ...]:
    out: list[str] = []
    for item in _list(key, raw):
        try:
            name = check_source_name(item)
        except InvalidInput as exc:
            raise _bad(key, str(exc)) from None
        if name in out:
            raise _bad(key, f"source {name!r} is listed twice")
        out.append(name)
    return tuple(out)


def _parse_count(key: str, raw: object) -> int:
    if isinstance(raw, bool) or not isinstance(raw, int):
        raise _bad(key, "expected an integer")
    if raw < 0:
        raise _bad(key, "must be 0 (off) or more")
    return raw


def _parse_bool(key: str, raw: object) -> bool:
    if not isinstance(raw, bool):
        raise _bad(key, "expected true or false")
    return raw


def _parse_mirror_via(key: str, raw: object) -> str:
    if raw not in ("ami", "ari"):
        raise _bad(key, f"expected 'ami' or 'ari', got {raw!r}")
    return str(raw)


def _prefix(pattern: re.Pattern[str], allowed: str) -> Callable[[str, object], str]:
    """A parser of a name prefix: non-empty, short, only ``allowed`` characters."""
    def parse(key: str, raw: object) -> str:
        if not isinstance(raw, str) or not raw:
            raise _bad(key, "expected a non-empty string")
        if len(raw) > _MAX_PREFIX_LEN:
            raise _bad(key, f"longer than {_MAX_PREFIX_LEN} characters")
        if not pattern.fullmatch(raw):
            raise _bad(key, f"{raw!r} may only contain {allowed}")
        return raw
    return parse


# It becomes part of Setvar DEVICE_STATE(Custom:<prefix><user>).
_parse_mirror_prefix = _prefix(_NAME_RE, "letters, digits, _ . -")
# Sent as the QueuePause Reason header: nothing that could end it.
_parse_reason_prefix = _prefix(_REASON_PREFIX_RE, "letters, digits, _ . : -")


def _parse_mirror_map(key: str, raw: object) -> Mapping[State, DeviceState]:
    if not isinstance(raw, Mapping):
        raise _bad(key, "expected a table state = DEVICE_STATE")
    out = dict(MIRROR_MAP)
    for name, value in raw.items():
        try:
            state = parse_state(name)
            device = parse_device_state(value)
        except InvalidInput as exc:
            raise _bad(key, str(exc)) from None
        if device is DeviceState.UNKNOWN:
            # Setvar DEVICE_STATE(Custom:...)=UNKNOWN is refused by Asterisk.
            raise _bad(key, "UNKNOWN cannot be written to a Custom: device")
        out[state] = device
    return MappingProxyType(out)
