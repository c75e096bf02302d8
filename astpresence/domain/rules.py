"""The rules that turn a user's source contributions into one effective presence.

Everything here is a pure function over plain values: no I/O, no asyncio, no
clock reads (``now`` is always a parameter). The daemon gathers the inputs,
calls :func:`decide`, writes the result to Asterisk when it changed, and sets
one timer at :func:`next_change_at`.

Sources of a user's presence:

``manual``
    set by the person or an operator (CLI, API, feature code, Digium phone,
    Asterisk CLI);
``device``
    derived from the user's devices (on-the-phone and offline overlays);
timed sources (``calendar``, ...)
    entries with a window ``[start, end)``;
``auto``
    missed-call away.

Precedence, first match wins (see ``docs/presence-rules.md``):

1. ``manual-protected`` -- a live manual state that is not in
   ``overridable_manual`` (by default dnd, away, xa, unavailable) always wins.
2. ``on-the-phone`` -- any device in a call state (overlay, can be disabled).
3. ``offline`` -- all devices UNAVAILABLE for at least ``offline_after``
   (overlay, can be disabled).
4. ``timed:<source>`` -- the best active timed entry not superseded by a
   manual state set at or after its start.
5. ``auto:missed-calls`` -- the auto-away entry, unless a manual state was set
   at or after it, or the feature is off.
6. ``manual`` -- the live manual state (available, chat, not_set).
7. ``default`` -- ``not_set``.

Overlays are returned as the configured :class:`~astpresence.domain.model.Presence`
values and never touch the inputs, so when the call ends (or a device comes
back) the next :func:`decide` returns exactly what the other contributions
give: same state, subtype and message. No previous value is kept anywhere.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from types import MappingProxyType
from typing import Final, Literal, TypeVar

from astpresence.domain.model import (
    NOT_SET,
    DeviceState,
    InvalidInput,
    Presence,
    State,
    aggregate_devices,
    parse_device_state,
    parse_presence,
    parse_state,
)
from astpresence.domain.records import SourceRecord

__all__ = [
    "DEFAULT_RULES",
    "MIRROR_MAP",
    "PRECEDENCE",
    "RESERVED_SOURCES",
    "RULE_AUTO",
    "RULE_DEFAULT",
    "RULE_KEYS",
    "RULE_MANUAL",
    "RULE_MANUAL_PROTECTED",
    "RULE_OFFLINE",
    "RULE_ON_PHONE",
    "RULE_TIMED_PREFIX",
    "SOURCE_AUTO",
    "SOURCE_DEFAULT",
    "SOURCE_DEVICE",
    "SOURCE_MANUAL",
    "Decision",
    "DeviceView",
    "MissedCallEvent",
    "PauseAction",
    "RuleConfig",
    "active_timed",
    "all_unavailable",
    "auto_contribution",
    "decide",
    "in_call",
    "in_window",
    "is_expired",
    "is_offline",
    "is_our_pause_reason",
    "missed_calls_step",
    "next_change_at",
    "pause_reason",
    "pause_wanted",
    "queue_pause_action",
    "track_unavailable_since",
]

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


def _parse_mirror_prefix(key: str, raw: object) -> str:
    if not isinstance(raw, str) or not raw:
        raise _bad(key, "expected a non-empty string")
    if len(raw) > _MAX_PREFIX_LEN:
        raise _bad(key, f"longer than {_MAX_PREFIX_LEN} characters")
    if not _NAME_RE.fullmatch(raw):
        # It becomes part of Setvar DEVICE_STATE(Custom:<prefix><user>).
        raise _bad(key, f"{raw!r} may only contain letters, digits, _ . -")
    return raw


def _parse_reason_prefix(key: str, raw: object) -> str:
    if not isinstance(raw, str) or not raw:
        raise _bad(key, "expected a non-empty string")
    if len(raw) > _MAX_PREFIX_LEN:
        raise _bad(key, f"longer than {_MAX_PREFIX_LEN} characters")
    if not _REASON_PREFIX_RE.fullmatch(raw):
        # Sent as the QueuePause Reason header: nothing that could end it.
        raise _bad(key, f"{raw!r} may only contain letters, digits, _ . : -")
    return raw


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


# --- inputs and outputs ----------------------------------------------------


@dataclass(frozen=True)
class DeviceView:
    """What the rules need to know about one user's devices.

    ``states`` are the user's own devices (never the ``Custom:`` mirror device,
    which is derived from the result). ``unavailable_since`` is when all of
    them became UNAVAILABLE (see :func:`track_unavailable_since`), else None.
    """

    states: tuple[DeviceState, ...] = ()
    unavailable_since: datetime | None = None

    @property
    def aggregate(self) -> DeviceState:
        """What Asterisk would show for a hint joining these devices with ``&``."""
        return aggregate_devices(self.states)


@dataclass(frozen=True)
class Decision:
    """The effective presence, the source it came from and the rule that chose it."""

    presence: Presence
    source: str
    rule: str


# --- windows -------------------------------------------------------------


def _window(record: SourceRecord) -> tuple[datetime, datetime | None]:
    # An entry without an explicit start (a TTL entry) starts when it was set.
    start = record.start if record.start is not None else record.since
    return start, record.end


def in_window(record: SourceRecord, now: datetime) -> bool:
    """True if ``now`` is inside the record's window ``[start, end)``.

    ``start`` defaults to ``since``; no ``end`` means open-ended.
    """
    start, end = _window(record)
    return start <= now and (end is None or now < end)


def is_expired(record: SourceRecord, now: datetime) -> bool:
    """True once the record's end has passed: the daemon may delete it."""
    return record.end is not None and record.end <= now


def _live(record: SourceRecord | None, now: datetime) -> SourceRecord | None:
    return record if record is not None and in_window(record, now) else None


# --- devices -------------------------------------------------------------


def all_unavailable(states: Sequence[DeviceState]) -> bool:
    """True if the user has devices and, aggregated, they are UNAVAILABLE.

    Aggregated the way a hint is: INVALID and UNKNOWN rank below UNAVAILABLE,
    so a device that does not exist does not keep the user online.
    """
    return bool(states) and aggregate_devices(states) is DeviceState.UNAVAILABLE


def track_unavailable_since(
    previous: datetime | None, states: Sequence[DeviceState], now: datetime
) -> datetime | None:
    """The new ``DeviceView.unavailable_since`` after the devices became ``states``."""
    if not all_unavailable(states):
        return None
    return previous if previous is not None else now


def in_call(devices: DeviceView, config: RuleConfig = DEFAULT_RULES) -> bool:
    """True if any device is in a call state.

    Any device, not the aggregate: the aggregate ranks RINGING above ONHOLD, so
    a held call plus a second phone ringing would not look like a call.
    """
    return any(state in config.call_states for state in devices.states)


def is_offline(devices: DeviceView, now: datetime, config: RuleConfig = DEFAULT_RULES) -> bool:
    """True if all devices have been UNAVAILABLE for ``offline_after`` or longer."""
    since = devices.unavailable_since
    if since is None or not all_unavailable(devices.states):
        return False
    # Subtract rather than add: now - since cannot overflow.
    return now - since >= config.offline_after


# --- timed and auto ------------------------------------------------------


def _check_timed(timed: Sequence[SourceRecord]) -> None:
    for record in timed:
        if record.source in RESERVED_SOURCES:
            raise ValueError(f"source {record.source!r} is not a timed source")


def _superseded(entry: SourceRecord, manual: SourceRecord | None) -> bool:
    # A manual state set at or after the entry's start means the person has
    # spoken since the entry began; a tie goes to the person.
    return manual is not None and manual.since >= _window(entry)[0]


def _timed_key(
    record: SourceRecord, config: RuleConfig
) -> tuple[int, datetime, datetime, str, str, str, str]:
    priority = config.timed_priority
    rank = priority.index(record.source) if record.source in priority else len(priority)
    p = record.presence
    # Everything after the rank only makes the order total, so the result does
    # not depend on the order of the input sequence.
    return (
        -rank,
        record.since,
        _window(record)[0],
        record.source,
        p.state.value,
        p.subtype,
        p.message,
    )


def active_timed(
    manual: SourceRecord | None,
    timed: Sequence[SourceRecord],
    now: datetime,
    config: RuleConfig = DEFAULT_RULES,
) -> tuple[SourceRecord, ...]:
    """The timed entries that apply at ``now``, best first.

    An entry applies inside its window ``[start, end)`` unless a live manual
    state was set at or after its start. Order: ``config.timed_priority``,
    then most recently set.
    """
    _check_timed(timed)
    live_manual = _live(manual, now)
    active = [r for r in timed if in_window(r, now) and not _superseded(r, live_manual)]
    return tuple(sorted(active, key=lambda r: _timed_key(r, config), reverse=True))


def _live_auto(
    auto: SourceRecord | None,
    live_manual: SourceRecord | None,
    now: datetime,
    config: RuleConfig,
) -> SourceRecord | None:
    if config.missed_calls_away <= 0:
        # Feature off: a record left over from before is stale, not a state.
        return None
    live = _live(auto, now)
    if live is None:
        return None
    if live_manual is not None and live_manual.since >= live.since:
        # "Cleared by any manual change."
        return None
    return live


# --- the decision --------------------------------------------------------


def decide(
    manual: SourceRecord | None,
    timed: Sequence[SourceRecord],
    devices: DeviceView,
    auto: SourceRecord | None,
    now: datetime,
    config: RuleConfig = DEFAULT_RULES,
) -> Decision:
    """The effective presence at ``now``; first matching rule wins.

    1. manual-protected: live manual state not in ``overridable_manual``;
    2. on-the-phone: any device in ``call_states`` (if ``on_phone``);
    3. offline: all devices UNAVAILABLE for ``offline_after`` (if ``offline``);
    4. timed:<source>: best entry of :func:`active_timed`;
    5. auto:missed-calls: live auto entry newer than the manual state;
    6. manual: the live manual state;
    7. default: not_set.

    Records count only inside their window (``start``/``since`` inclusive,
    ``end`` exclusive), so an expired record is the same as a missing one.
    """
    _check_timed(timed)
    live_manual = _live(manual, now)
    if live_manual is not None and live_manual.presence.state not in config.overridable_manual:
        return Decision(live_manual.presence, SOURCE_MANUAL, RULE_MANUAL_PROTECTED)
    if config.on_phone is not None and in_call(devices, config):
        return Decision(config.on_phone, SOURCE_DEVICE, RULE_ON_PHONE)
    if config.offline is not None and is_offline(devices, now, config):
        return Decision(config.offline, SOURCE_DEVICE, RULE_OFFLINE)
    best = active_timed(manual, timed, now, config)
    if best:
        entry = best[0]
        return Decision(entry.presence, entry.source, RULE_TIMED_PREFIX + entry.source)
    live_auto = _live_auto(auto, live_manual, now, config)
    if live_auto is not None:
        return Decision(live_auto.presence, SOURCE_AUTO, RULE_AUTO)
    if live_manual is not None:
        return Decision(live_manual.presence, SOURCE_MANUAL, RULE_MANUAL)
    return Decision(NOT_SET, SOURCE_DEFAULT, RULE_DEFAULT)


def next_change_at(
    manual: SourceRecord | None,
    timed: Sequence[SourceRecord],
    devices: DeviceView,
    auto: SourceRecord | None,
    now: datetime,
    config: RuleConfig = DEFAULT_RULES,
) -> datetime | None:
    """The earliest instant after ``now`` at which :func:`decide` changes by itself.

    "By itself" means with the same inputs, only time moving: a window starts
    or ends, or the offline threshold is reached. None if the decision stays
    the same forever. Instants that would not change the decision (an entry
    ending under a protected manual state) are skipped.
    """
    instants: set[datetime] = set()
    for record in (manual, auto, *timed):
        if record is None:
            continue
        start, end = _window(record)
        instants.add(start)
        if end is not None:
            instants.add(end)
    since = devices.unavailable_since
    if since is not None and config.offline is not None and all_unavailable(devices.states):
        try:
            instants.add(since + config.offline_after)
        except OverflowError:
            pass  # beyond datetime.max: never
    # decide() is constant between consecutive instants, so the first instant
    # where it differs from now is the next change.
    current = decide(manual, timed, devices, auto, now, config)
    for instant in sorted(t for t in instants if t > now):
        if decide(manual, timed, devices, auto, instant, config) != current:
            return instant
    return None


# --- missed calls --------------------------------------------------------

MissedCallEvent = Literal["missed", "answered", "manual"]


def missed_calls_step(
    count: int, event: MissedCallEvent, config: RuleConfig = DEFAULT_RULES
) -> tuple[int, bool]:
    """Reducer for auto-away: (consecutive missed calls, auto-away active).

    ``missed``: a call rang the user's devices and nobody answered;
    ``answered``: a call was answered on one of them; ``manual``: the manual
    presence changed. With ``missed_calls_away = 0`` it always gives (0, False).
    """
    limit = config.missed_calls_away
    if count < 0:
        raise ValueError(f"missed-call count must be >= 0, got {count}")
    if event not in ("missed", "answered", "manual"):
        raise ValueError(f"unknown missed-call event {event!r}")
    if limit <= 0 or event != "missed":
        return 0, False
    new = min(count + 1, limit)  # saturate: more misses change nothing
    return new, new >= limit


def auto_contribution(user: str, now: datetime, config: RuleConfig = DEFAULT_RULES) -> SourceRecord:
    """The ``auto`` record to store when :func:`missed_calls_step` turns auto-away on."""
    return SourceRecord(user, SOURCE_AUTO, config.auto_presence, now, SOURCE_AUTO)


# --- BLF mirror ----------------------------------------------------------


# --- queue pause ---------------------------------------------------------

PauseAction = Literal["pause", "unpause"]


def pause_wanted(state: State, config: RuleConfig = DEFAULT_RULES) -> bool:
    """True if members should be paused while the effective state is ``state``."""
    return state in config.pause_states


def pause_reason(state: State, config: RuleConfig = DEFAULT_RULES) -> str:
    """The QueuePause ``Reason`` we send: ``<prefix><state>``."""
    return f"{config.pause_reason_prefix}{state.value}"


def is_our_pause_reason(reason: str | None, config: RuleConfig = DEFAULT_RULES) -> bool:
    """True if a member's ``PausedReason`` is one astpresence wrote."""
    if not reason or not reason.startswith(config.pause_reason_prefix):
        return False
    return reason[len(config.pause_reason_prefix) :] in {s.value for s in State}


def queue_pause_action(
    state: State,
    paused: bool,
    reason: str | None,
    config: RuleConfig = DEFAULT_RULES,
) -> PauseAction | None:
    """What to do with one queue member given the user's effective ``state``.

    Pause when the state enters ``pause_states`` (or refresh our reason when it
    moves between them); unpause only a member paused with our reason. A
    member someone else paused is left alone either way.
    """
    if pause_wanted(state, config):
        if not paused:
            return "pause"
        if is_our_pause_reason(reason, config) and reason != pause_reason(state, config):
            return "pause"
        return None
    if paused and is_our_pause_reason(reason, config):
        return "unpause"
    return None
