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

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime

from astpresence.domain.model import NOT_SET, Presence, State
from astpresence.domain.records import SourceRecord
from astpresence.domain.device_rules import (
    DeviceView,
    all_unavailable,
    device_activity,
    in_call,
    is_offline,
    is_registered,
    track_unavailable_since,
)

from astpresence.domain.rule_names import (
    ACTIVITY_OFFLINE,
    ACTIVITY_ON_HOLD,
    ACTIVITY_ON_PHONE,
    ACTIVITY_RINGING,
    RULE_REGISTERED,
    DEFAULT_AUTO_PRESENCE,
    DEFAULT_CALL_STATES,
    DEFAULT_MIRROR_PREFIX,
    DEFAULT_OFFLINE,
    DEFAULT_OFFLINE_AFTER,
    DEFAULT_ON_PHONE,
    DEFAULT_OVERRIDABLE_MANUAL,
    DEFAULT_PAUSE_REASON_PREFIX,
    DEFAULT_PAUSE_STATES,
    MAX_OFFLINE_AFTER,
    MIRROR_MAP,
    PRECEDENCE,
    RESERVED_SOURCES,
    RULE_AUTO,
    RULE_DEFAULT,
    RULE_MANUAL,
    RULE_MANUAL_PROTECTED,
    RULE_OFFLINE,
    RULE_ON_PHONE,
    RULE_TIMED_PREFIX,
    SOURCE_AUTO,
    SOURCE_DEFAULT,
    SOURCE_DEVICE,
    SOURCE_MANUAL,
)
from astpresence.domain.rule_config import (
    DEFAULT_RULES,
    RULE_KEYS,
    RuleConfig,
    SOURCE_NAME,
    check_source_name,
)

__all__ = [
    "ACTIVITY_OFFLINE", "ACTIVITY_ON_HOLD", "ACTIVITY_ON_PHONE", "ACTIVITY_RINGING",
    "DEFAULT_AUTO_PRESENCE", "DEFAULT_CALL_STATES", "DEFAULT_MIRROR_PREFIX",
    "DEFAULT_OFFLINE", "DEFAULT_OFFLINE_AFTER", "DEFAULT_ON_PHONE",
    "DEFAULT_OVERRIDABLE_MANUAL", "DEFAULT_PAUSE_REASON_PREFIX", "DEFAULT_PAUSE_STATES",
    "DEFAULT_RULES", "Decision", "DeviceView", "MAX_OFFLINE_AFTER", "MIRROR_MAP",
    "PRECEDENCE", "RESERVED_SOURCES", "RULE_AUTO", "RULE_DEFAULT", "RULE_KEYS",
    "RULE_MANUAL", "RULE_MANUAL_PROTECTED", "RULE_OFFLINE", "RULE_ON_PHONE",
    "RULE_REGISTERED", "RULE_TIMED_PREFIX", "RuleConfig", "SOURCE_AUTO",
    "SOURCE_DEFAULT", "SOURCE_DEVICE", "SOURCE_MANUAL", "SOURCE_NAME", "active_timed",
    "all_unavailable", "call_presence", "check_source_name", "decide",
    "device_activity", "in_call", "in_window", "is_expired", "is_offline",
    "is_registered", "next_change_at", "track_unavailable_since",
]

# --- inputs and outputs ----------------------------------------------------


@dataclass(frozen=True)
class Decision:
    """The effective presence (what Asterisk gets), the source it came from and the
    rule that chose it; what the person chose (or a source decided) apart from any
    device overlay; and what is going on now (``activity``: on-the-phone, ringing,
    on-hold, offline, a timed entry's subtype such as meeting, or "")."""

    presence: Presence
    source: str
    rule: str
    chosen: Presence = NOT_SET
    activity: str = ""


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
    6. manual: the live manual state (not_set counts as nothing chosen);
    7. registered: a device is registered (if ``registered``);
    8. default: not_set.

    Rules 2 and 3 are overlays of the projection; ``chosen`` is what the
    others give, and ``activity`` what the devices (or a timed entry) say.
    Records count only inside their window (``start``/``since`` inclusive,
    ``end`` exclusive), so an expired record is the same as a missing one.
    """
    _check_timed(timed)
    live_manual = _message_lapsed(_live(manual, now), now)
    chosen = _chosen(live_manual, manual, timed, devices, auto, now, config)
    activity = device_activity(devices, now, config) or chosen.activity
    if chosen.rule != RULE_MANUAL_PROTECTED:
        if config.on_phone is not None and in_call(devices, config):
            return Decision(call_presence(chosen.presence, config), SOURCE_DEVICE, RULE_ON_PHONE,
                            chosen.presence, activity)
        if config.offline is not None and is_offline(devices, now, config):
            return Decision(config.offline, SOURCE_DEVICE, RULE_OFFLINE, chosen.presence,
                            activity)
    return Decision(chosen.presence, chosen.source, chosen.rule, chosen.presence, activity)


def _chosen(live_manual: SourceRecord | None, manual: SourceRecord | None,
            timed: Sequence[SourceRecord], devices: DeviceView, auto: SourceRecord | None,
            now: datetime, config: RuleConfig) -> Decision:
    """Rules 1 and 4-8: what the person chose or a source decided."""
    if live_manual is not None and live_manual.presence.state not in config.overridable_manual:
        return Decision(live_manual.presence, SOURCE_MANUAL, RULE_MANUAL_PROTECTED)
    best = active_timed(manual, timed, now, config)
    if best:
        entry = best[0]
        return Decision(entry.presence, entry.source, RULE_TIMED_PREFIX + entry.source,
                        activity=entry.presence.subtype or entry.source)
    live_auto = _live_auto(auto, live_manual, now, config)
    if live_auto is not None:
        return Decision(live_auto.presence, SOURCE_AUTO, RULE_AUTO)
    if live_manual is not None and live_manual.presence.state is not State.NOT_SET:
        return Decision(live_manual.presence, SOURCE_MANUAL, RULE_MANUAL)
    if config.registered is not None and is_registered(devices):
        return Decision(config.registered, SOURCE_DEVICE, RULE_REGISTERED)
    if live_manual is not None:
        return Decision(live_manual.presence, SOURCE_MANUAL, RULE_MANUAL)
    return Decision(NOT_SET, SOURCE_DEFAULT, RULE_DEFAULT)


def _message_lapsed(record: SourceRecord | None, now: datetime) -> SourceRecord | None:
    """A manual choice whose message has its own end: the state without it after then."""
    if record is None or record.message_end is None or now < record.message_end:
        return record
    p = record.presence
    return replace(record, presence=Presence(p.state, p.subtype, ""))


def call_presence(chosen: Presence, config: RuleConfig = DEFAULT_RULES) -> Presence:
    """The call overlay's presence: ``on_phone``, with the chosen message where its own
    is empty (``call_keeps_message``), so callers still read "back at 3"."""
    overlay = config.on_phone
    assert overlay is not None
    if config.call_keeps_message and not overlay.message and chosen.message:
        return Presence(overlay.state, overlay.subtype, chosen.message)
    return overlay


def next_change_at(manual: SourceRecord | None, timed: Sequence[SourceRecord],
                   devices: DeviceView, auto: SourceRecord | None, now: datetime,
                   config: RuleConfig = DEFAULT_RULES) -> datetime | None:
    """The earliest instant after ``now`` at which :func:`decide` changes by itself
    (the inputs are :func:`decide`'s).

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
        instants.update(t for t in (start, end, record.message_end) if t is not None)
    since = devices.unavailable_since
    if since is not None and all_unavailable(devices.states):  # the offline activity, too
        try:
            instants.add(since + config.offline_after)
        except OverflowError:
            pass  # beyond datetime.max: never
    # decide() is constant between consecutive instants, so the first instant
    # where it differs from now is the next change.
    ahead = sorted(t for t in instants if t > now)
    if not ahead:
        return None  # most changes: nothing timed at all, and no second decide()
    current = decide(manual, timed, devices, auto, now, config)
    for instant in ahead:
        if decide(manual, timed, devices, auto, instant, config) != current:
            return instant
    return None
