"""The rules' settings: :class:`RuleConfig` with the parsers of the ``[rules]``
section, over the names and defaults of rule_names.py.
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
from astpresence.domain.statuses import parse_duration
from astpresence.domain.rule_names import (
    RESERVED_SOURCES,
    PROJECTIONS,
    DEFAULT_ON_PHONE,
    LEGACY_ON_PHONE,
    DEFAULT_REGISTERED,
    DEFAULT_OFFLINE,
    DEFAULT_OFFLINE_AFTER,
    MAX_OFFLINE_AFTER,
    DEFAULT_CALL_STATES,
    DEFAULT_OVERRIDABLE_MANUAL,
    DEFAULT_AUTO_PRESENCE,
    DEFAULT_PAUSE_STATES,
    DEFAULT_MIRROR_PREFIX,
    DEFAULT_PAUSE_REASON_PREFIX,
    MIRROR_MAP,
    LEGACY_MIRROR_MAP,
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

    #: "standard" or "legacy" (:data:`PROJECTIONS`).
    projection: str = "standard"
    #: Overlay while any device is in a call; None switches it off.
    on_phone: Presence | None = DEFAULT_ON_PHONE
    #: The call overlay keeps the chosen message when its own is empty.
    call_keeps_message: bool = True
    #: With nothing chosen and a registered device; None: not_set.
    registered: Presence | None = DEFAULT_REGISTERED
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
    #: A manual state chosen without an end lasts this long (by state; none: forever).
    expire_after: Mapping[State, timedelta] = field(default_factory=dict, hash=False)

    @classmethod
    def legacy(cls) -> RuleConfig:
        """The projection before 0.2, for sites that want it (``projection = "legacy"``)."""
        return cls(projection="legacy", on_phone=LEGACY_ON_PHONE, call_keeps_message=False,
                   registered=None, mirror_map=LEGACY_MIRROR_MAP)

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
        base = cls.legacy() if d.get("projection") == "legacy" else cls()

        def get(key: str, parse: Callable[[str, object], _T], default: _T) -> _T:
            return parse(key, d[key]) if key in d else default

        return cls(
            projection=get("projection", _parse_projection, base.projection),
            on_phone=get("on_phone", _overlay_parser(base.on_phone or DEFAULT_ON_PHONE),
                         base.on_phone),
            call_keeps_message=get("call_keeps_message", _parse_bool, base.call_keeps_message),
            registered=get("registered", _overlay_parser(DEFAULT_REGISTERED), base.registered),
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
            mirror_map=get("mirror_map", _mirror_map_over(base.mirror_map), base.mirror_map),
            queue_pause=get("queue_pause", _parse_bool, base.queue_pause),
            pause_states=get("pause_states", _parse_state_set, base.pause_states),
            pause_reason_prefix=get(
                "pause_reason_prefix", _parse_reason_prefix, base.pause_reason_prefix
            ),
            expire_after=get("expire_after", _parse_expire_after, base.expire_after),
        )


DEFAULT_RULES: Final = RuleConfig()

#: The keys of the TOML ``[rules]`` table.
RULE_KEYS: Final = (
    "projection",
    "on_phone",
    "call_keeps_message",
    "registered",
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
    "expire_after",
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


def _parse_expire_after(key: str, raw: object) -> Mapping[State, timedelta]:
    """``{ dnd = "1d", away = "8h" }``: seconds or a duration, by state."""
    if not isinstance(raw, Mapping):
        raise _bad(key, "expected a table state = duration, e.g. { dnd = \"1d\" }")
    out: dict[State, timedelta] = {}
    for name, value in raw.items():
        try:
            out[parse_state(name)] = parse_duration(value, f"rules.{key}.{name}")
        except InvalidInput as exc:
            raise _bad(key, str(exc)) from None
    return MappingProxyType(out)


def _parse_projection(key: str, raw: object) -> str:
    if raw not in PROJECTIONS:
        raise _bad(key, f"expected one of {', '.join(PROJECTIONS)}, got {raw!r}")
    return str(raw)


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


def _mirror_map_over(base: Mapping[State, DeviceState]
                     ) -> Callable[[str, object], Mapping[State, DeviceState]]:
    """``mirror_map``: the states it lists, over the projection's own map."""
    return lambda key, raw: _parse_mirror_map(key, raw, base)


def _parse_mirror_map(key: str, raw: object,
                      base: Mapping[State, DeviceState] = MIRROR_MAP
                      ) -> Mapping[State, DeviceState]:
    if not isinstance(raw, Mapping):
        raise _bad(key, "expected a table state = DEVICE_STATE")
    out = dict(base)
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
