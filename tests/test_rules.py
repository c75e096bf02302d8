"""Tests for the pure presence rules: tables of cases, then properties."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from astpresence.model import NOT_SET, DeviceState, InvalidInput, Presence, State
from astpresence.rules import (
    DEFAULT_RULES,
    MIRROR_MAP,
    PRECEDENCE,
    RULE_KEYS,
    Decision,
    DeviceView,
    MissedCallEvent,
    RuleConfig,
    active_timed,
    all_unavailable,
    auto_contribution,
    decide,
    in_window,
    is_expired,
    is_our_pause_reason,
    missed_calls_step,
    next_change_at,
    pause_reason,
    pause_wanted,
    queue_pause_action,
    track_unavailable_since,
)
from astpresence.mirror import is_mirror_device, mirror_device, mirror_state
from astpresence.records import SourceRecord

D = DeviceState
S = State

DAY = datetime(2026, 11, 2, tzinfo=UTC)


def at(hour: int, minute: int = 0, second: int = 0, micro: int = 0) -> datetime:
    return DAY.replace(hour=hour, minute=minute, second=second, microsecond=micro)


NINE = at(9)
TEN = at(10)
ELEVEN = at(11)
EIGHT = at(8)
HALF_PAST_TEN = at(10, 30)


def manual(
    state: State,
    subtype: str = "",
    message: str = "",
    since: datetime = NINE,
    end: datetime | None = None,
) -> SourceRecord:
    return SourceRecord("2000", "manual", Presence(state, subtype, message), since, "api", end=end)


def timed(
    state: State = S.AWAY,
    message: str = "Meeting",
    start: datetime | None = TEN,
    end: datetime | None = ELEVEN,
    source: str = "calendar",
    since: datetime = EIGHT,
) -> SourceRecord:
    return SourceRecord(
        "2000", source, Presence(state, "", message), since, "calendar", start=start, end=end
    )


def auto(since: datetime = TEN, end: datetime | None = None) -> SourceRecord:
    return SourceRecord("2000", "auto", DEFAULT_RULES.auto_presence, since, "auto", end=end)


def dev(*states: DeviceState, since: datetime | None = None) -> DeviceView:
    return DeviceView(tuple(states), since)


IDLE = dev(D.NOT_INUSE)
CALL = dev(D.INUSE)
AVAIL = manual(S.AVAILABLE, "", "at desk")
CAL = timed()
AUTO_ON = RuleConfig(missed_calls_away=3)
ON_PHONE = DEFAULT_RULES.on_phone
OFFLINE = DEFAULT_RULES.offline
AWAY_MEETING = Presence(S.AWAY, "", "Meeting")
assert ON_PHONE is not None and OFFLINE is not None


def case(
    id: str,
    *,
    expected: Presence,
    rule: str,
    source: str | None = None,
    m: SourceRecord | None = None,
    t: tuple[SourceRecord, ...] = (),
    d: DeviceView = IDLE,
    a: SourceRecord | None = None,
    now: datetime = HALF_PAST_TEN,
    config: RuleConfig = AUTO_ON,
) -> Any:
    if source is None:
        source = {
            "manual": "manual",
            "manual-protected": "manual",
            "on-the-phone": "device",
            "offline": "device",
            "auto:missed-calls": "auto",
            "default": "default",
        }.get(rule, rule.removeprefix("timed:"))
    return pytest.param(m, t, d, a, now, config, Decision(expected, source, rule), id=id)


DECIDE_CASES = [
    # --- default and plain manual
    case("nothing-at-all", expected=NOT_SET, rule="default", d=dev()),
    case("idle-device-only", expected=NOT_SET, rule="default"),
    case("manual-available", m=AVAIL, expected=AVAIL.presence, rule="manual"),
    case(
        "manual-chat",
        m=manual(S.CHAT, "x", "y"),
        expected=Presence(S.CHAT, "x", "y"),
        rule="manual",
    ),
    case(
        "manual-not-set-with-message",
        m=manual(S.NOT_SET, "", "back soon"),
        expected=Presence(S.NOT_SET, "", "back soon"),
        rule="manual",
    ),
    # --- rule 1: protected manual beats everything
    *[
        case(
            f"protected-{state.value}-beats-call-calendar-auto",
            m=manual(state, "sub", "msg"),
            t=(CAL,),
            d=CALL,
            a=auto(),
            expected=Presence(state, "sub", "msg"),
            rule="manual-protected",
        )
        for state in (S.DND, S.AWAY, S.XA, S.UNAVAILABLE)
    ],
    case(
        "protected-beats-offline",
        m=manual(S.DND),
        d=dev(D.UNAVAILABLE, since=NINE),
        expected=Presence(S.DND),
        rule="manual-protected",
    ),
    case(
        "protected-set-before-calendar-start",
        m=manual(S.XA, since=at(9, 59)),
        t=(CAL,),
        expected=Presence(S.XA),
        rule="manual-protected",
    ),
    case(
        "overridable-empty-protects-available",
        m=AVAIL,
        d=CALL,
        config=RuleConfig(overridable_manual=frozenset()),
        expected=AVAIL.presence,
        rule="manual-protected",
    ),
    case(
        "overridable-with-dnd-lets-call-through",
        m=manual(S.DND),
        d=CALL,
        config=RuleConfig(overridable_manual=frozenset({S.DND})),
        expected=ON_PHONE,
        rule="on-the-phone",
    ),
    # --- rule 2: on the phone
    *[
        case(f"on-phone-{s.value}", m=AVAIL, d=dev(s), expected=ON_PHONE, rule="on-the-phone")
        for s in (D.INUSE, D.BUSY, D.RINGINUSE, D.ONHOLD)
    ],
    case("on-phone-without-manual", d=CALL, expected=ON_PHONE, rule="on-the-phone"),
    case("on-phone-over-chat", m=manual(S.CHAT), d=CALL, expected=ON_PHONE, rule="on-the-phone"),
    case(
        "on-phone-over-not-set", m=manual(S.NOT_SET), d=CALL, expected=ON_PHONE, rule="on-the-phone"
    ),
    case(
        "ringing-is-not-a-call", m=AVAIL, d=dev(D.RINGING), expected=AVAIL.presence, rule="manual"
    ),
    case(
        "mixed-onhold-and-ringing-is-a-call",
        m=AVAIL,
        d=dev(D.ONHOLD, D.RINGING),
        expected=ON_PHONE,
        rule="on-the-phone",
    ),
    case(
        "mixed-idle-and-inuse-is-a-call",
        m=AVAIL,
        d=dev(D.NOT_INUSE, D.INUSE),
        expected=ON_PHONE,
        rule="on-the-phone",
    ),
    case(
        "mixed-unavailable-and-inuse-is-a-call",
        m=AVAIL,
        d=dev(D.UNAVAILABLE, D.INUSE),
        expected=ON_PHONE,
        rule="on-the-phone",
    ),
    case(
        "call-ended-restores-manual-exactly",
        m=AVAIL,
        d=dev(D.NOT_INUSE, D.NOT_INUSE),
        expected=AVAIL.presence,
        rule="manual",
    ),
    case(
        "on-phone-disabled",
        m=AVAIL,
        d=CALL,
        config=RuleConfig(on_phone=None),
        expected=AVAIL.presence,
        rule="manual",
    ),
    case(
        "on-phone-disabled-calendar-shows",
        m=AVAIL,
        t=(CAL,),
        d=CALL,
        config=RuleConfig(on_phone=None),
        expected=AWAY_MEETING,
        rule="timed:calendar",
    ),
    case(
        "on-phone-custom-presence",
        m=AVAIL,
        d=CALL,
        config=RuleConfig(on_phone=Presence(S.DND, "call", "On a call")),
        expected=Presence(S.DND, "call", "On a call"),
        rule="on-the-phone",
    ),
    case(
        "on-phone-custom-call-states",
        m=AVAIL,
        d=dev(D.RINGING),
        config=RuleConfig(call_states=frozenset({D.RINGING})),
        expected=ON_PHONE,
        rule="on-the-phone",
    ),
    case(
        "on-phone-beats-calendar", m=AVAIL, t=(CAL,), d=CALL, expected=ON_PHONE, rule="on-the-phone"
    ),
    case("on-phone-beats-auto", m=AVAIL, d=CALL, a=auto(), expected=ON_PHONE, rule="on-the-phone"),
    # --- rule 3: offline
    case(
        "offline-exactly-at-offline-after",
        m=manual(S.NOT_SET),
        d=dev(D.UNAVAILABLE, since=at(9, 59)),
        now=TEN,
        expected=OFFLINE,
        rule="offline",
    ),
    case(
        "not-offline-one-microsecond-before",
        m=manual(S.NOT_SET),
        d=dev(D.UNAVAILABLE, since=at(9, 59)),
        now=at(9, 59, 59, 999999),
        expected=NOT_SET,
        rule="manual",
    ),
    case(
        "offline-without-manual",
        d=dev(D.UNAVAILABLE, D.UNAVAILABLE, since=NINE),
        expected=OFFLINE,
        rule="offline",
    ),
    case(
        "offline-over-available",
        m=AVAIL,
        d=dev(D.UNAVAILABLE, since=NINE),
        expected=OFFLINE,
        rule="offline",
    ),
    case(
        "offline-over-chat",
        m=manual(S.CHAT),
        d=dev(D.UNAVAILABLE, since=NINE),
        expected=OFFLINE,
        rule="offline",
    ),
    case(
        "mixed-unavailable-and-idle-not-offline",
        m=AVAIL,
        d=dev(D.UNAVAILABLE, D.NOT_INUSE, since=NINE),
        expected=AVAIL.presence,
        rule="manual",
    ),
    case(
        "unavailable-plus-invalid-is-offline",
        m=AVAIL,
        d=dev(D.UNAVAILABLE, D.INVALID, since=NINE),
        expected=OFFLINE,
        rule="offline",
    ),
    case(
        "no-devices-never-offline",
        m=AVAIL,
        d=dev(since=NINE),
        expected=AVAIL.presence,
        rule="manual",
    ),
    case(
        "unavailable-without-since-not-offline",
        m=AVAIL,
        d=dev(D.UNAVAILABLE),
        expected=AVAIL.presence,
        rule="manual",
    ),
    case(
        "offline-disabled",
        m=AVAIL,
        d=dev(D.UNAVAILABLE, since=NINE),
        config=RuleConfig(offline=None),
        expected=AVAIL.presence,
        rule="manual",
    ),
    case(
        "offline-after-300-not-yet",
        m=AVAIL,
        d=dev(D.UNAVAILABLE, since=at(10, 25, 1)),
        config=RuleConfig(offline_after=timedelta(seconds=300)),
        expected=AVAIL.presence,
        rule="manual",
    ),
    case(
        "offline-after-300-reached",
        m=AVAIL,
        d=dev(D.UNAVAILABLE, since=at(10, 25)),
        config=RuleConfig(offline_after=timedelta(seconds=300)),
        expected=OFFLINE,
        rule="offline",
    ),
    case(
        "offline-beats-calendar",
        m=AVAIL,
        t=(CAL,),
        d=dev(D.UNAVAILABLE, since=NINE),
        expected=OFFLINE,
        rule="offline",
    ),
    case(
        "offline-beats-auto",
        d=dev(D.UNAVAILABLE, since=NINE),
        a=auto(),
        expected=OFFLINE,
        rule="offline",
    ),
    # --- rule 4: timed entries
    case(
        "calendar-at-start-inclusive",
        m=AVAIL,
        t=(CAL,),
        now=TEN,
        expected=AWAY_MEETING,
        rule="timed:calendar",
    ),
    case(
        "calendar-before-start",
        m=AVAIL,
        t=(CAL,),
        now=at(9, 59, 59, 999999),
        expected=AVAIL.presence,
        rule="manual",
    ),
    case("calendar-inside", m=AVAIL, t=(CAL,), expected=AWAY_MEETING, rule="timed:calendar"),
    case(
        "calendar-just-before-end",
        m=AVAIL,
        t=(CAL,),
        now=at(10, 59, 59, 999999),
        expected=AWAY_MEETING,
        rule="timed:calendar",
    ),
    case(
        "calendar-at-end-exclusive",
        m=AVAIL,
        t=(CAL,),
        now=ELEVEN,
        expected=AVAIL.presence,
        rule="manual",
    ),
    case("calendar-without-manual", t=(CAL,), expected=AWAY_MEETING, rule="timed:calendar"),
    case("calendar-after-end-no-manual", t=(CAL,), now=at(12), expected=NOT_SET, rule="default"),
    case(
        "manual-set-after-start-suppresses",
        m=manual(S.AVAILABLE, since=at(10, 15)),
        t=(CAL,),
        expected=Presence(S.AVAILABLE),
        rule="manual",
    ),
    case(
        "manual-set-at-start-suppresses",
        m=manual(S.AVAILABLE, since=TEN),
        t=(CAL,),
        expected=Presence(S.AVAILABLE),
        rule="manual",
    ),
    case(
        "manual-not-set-after-start-suppresses",
        m=manual(S.NOT_SET, since=at(10, 15)),
        t=(CAL,),
        expected=NOT_SET,
        rule="manual",
    ),
    case(
        "manual-set-before-start-does-not",
        m=manual(S.AVAILABLE, since=at(9, 59)),
        t=(CAL,),
        expected=AWAY_MEETING,
        rule="timed:calendar",
    ),
    case(
        "expired-manual-does-not-suppress",
        m=manual(S.AVAILABLE, since=at(10, 15), end=at(10, 20)),
        t=(CAL,),
        expected=AWAY_MEETING,
        rule="timed:calendar",
    ),
    case(
        "ttl-entry-starts-at-since",
        m=AVAIL,
        t=(timed(start=None, since=at(10, 10), end=at(10, 40)),),
        expected=AWAY_MEETING,
        rule="timed:calendar",
    ),
    case(
        "ttl-entry-not-before-since",
        m=AVAIL,
        t=(timed(start=None, since=at(10, 40), end=ELEVEN),),
        expected=AVAIL.presence,
        rule="manual",
    ),
    case(
        "open-ended-entry",
        m=AVAIL,
        t=(timed(end=None),),
        now=at(23),
        expected=AWAY_MEETING,
        rule="timed:calendar",
    ),
    case(
        "empty-window-never-applies",
        m=AVAIL,
        t=(timed(start=TEN, end=TEN),),
        now=TEN,
        expected=AVAIL.presence,
        rule="manual",
    ),
    case(
        "most-recently-set-wins",
        m=AVAIL,
        t=(
            timed(S.AWAY, "old", since=at(8)),
            timed(S.XA, "new", since=at(8, 30), source="travel"),
        ),
        expected=Presence(S.XA, "", "new"),
        rule="timed:travel",
    ),
    case(
        "timed-priority-beats-recency",
        m=AVAIL,
        t=(
            timed(S.AWAY, "cal", since=at(8)),
            timed(S.XA, "travel", since=at(8, 30), source="travel"),
        ),
        config=RuleConfig(timed_priority=("calendar",)),
        expected=Presence(S.AWAY, "", "cal"),
        rule="timed:calendar",
    ),
    case(
        "timed-priority-order",
        m=AVAIL,
        t=(
            timed(S.AWAY, "cal", since=at(8, 30)),
            timed(S.XA, "travel", since=at(8), source="travel"),
        ),
        config=RuleConfig(timed_priority=("travel", "calendar")),
        expected=Presence(S.XA, "", "travel"),
        rule="timed:travel",
    ),
    case(
        "suppressed-entry-falls-to-later-one",
        m=manual(S.AVAILABLE, since=at(10, 15)),
        t=(
            timed(S.AWAY, "cal", since=at(10, 30)),
            timed(S.XA, "later", start=at(10, 20), source="travel", since=at(8)),
        ),
        expected=Presence(S.XA, "", "later"),
        rule="timed:travel",
    ),
    case(
        "inactive-priority-source-ignored",
        m=AVAIL,
        t=(
            timed(S.AWAY, "cal", start=at(12), end=at(13)),
            timed(S.XA, "travel", source="travel"),
        ),
        config=RuleConfig(timed_priority=("calendar",)),
        expected=Presence(S.XA, "", "travel"),
        rule="timed:travel",
    ),
    case(
        "timed-beats-auto",
        m=AVAIL,
        t=(CAL,),
        a=auto(),
        expected=AWAY_MEETING,
        rule="timed:calendar",
    ),
    # --- auto
    case(
        "auto-over-available",
        m=AVAIL,
        a=auto(),
        expected=Presence(S.AWAY, "missed-calls"),
        rule="auto:missed-calls",
    ),
    case(
        "auto-without-manual",
        a=auto(),
        expected=Presence(S.AWAY, "missed-calls"),
        rule="auto:missed-calls",
    ),
    case(
        "auto-feature-off-ignored",
        m=AVAIL,
        a=auto(),
        config=DEFAULT_RULES,
        expected=AVAIL.presence,
        rule="manual",
    ),
    case(
        "auto-cleared-by-later-manual",
        m=manual(S.AVAILABLE, since=at(10, 20)),
        a=auto(),
        expected=Presence(S.AVAILABLE),
        rule="manual",
    ),
    case(
        "auto-cleared-by-manual-at-same-instant",
        m=manual(S.AVAILABLE, since=TEN),
        a=auto(),
        expected=Presence(S.AVAILABLE),
        rule="manual",
    ),
    case("auto-expired", m=AVAIL, a=auto(end=at(10, 30)), expected=AVAIL.presence, rule="manual"),
    case(
        "auto-before-since", m=AVAIL, a=auto(since=ELEVEN), expected=AVAIL.presence, rule="manual"
    ),
    # --- expiring manual
    case(
        "manual-expired-gives-default", m=manual(S.CHAT, end=TEN), expected=NOT_SET, rule="default"
    ),
    case(
        "protected-manual-expired-lets-call-through",
        m=manual(S.DND, end=TEN),
        d=CALL,
        expected=ON_PHONE,
        rule="on-the-phone",
    ),
]


@pytest.mark.parametrize(("m", "t", "d", "a", "now", "config", "expected"), DECIDE_CASES)
def test_decide(
    m: SourceRecord | None,
    t: tuple[SourceRecord, ...],
    d: DeviceView,
    a: SourceRecord | None,
    now: datetime,
    config: RuleConfig,
    expected: Decision,
) -> None:
    assert decide(m, t, d, a, now, config) == expected


def test_precedence_constant_matches_docs() -> None:
    assert PRECEDENCE == (
        "manual-protected",
        "on-the-phone",
        "offline",
        "timed:",
        "auto:missed-calls",
        "manual",
        "default",
    )
    docs = (Path(__file__).parent.parent / "docs" / "presence-rules.md").read_text("utf-8")
    marks = [f"**`{n}" if n.endswith(":") else f"**`{n}`**" for n in PRECEDENCE]
    positions = [docs.index(mark) for mark in marks]
    assert positions == sorted(positions)
    for key in RULE_KEYS:
        assert f"\n{key} = " in docs, key


def test_call_end_restores_exactly_the_same_objects_value() -> None:
    m = manual(S.CHAT, "lunch-ish", "ping me, maybe")
    before = decide(m, (), IDLE, None, TEN)
    during = decide(m, (), dev(D.INUSE, D.NOT_INUSE), None, TEN)
    after = decide(m, (), IDLE, None, at(10, 5))
    assert during.rule == "on-the-phone"
    assert before == after == Decision(m.presence, "manual", "manual")
    assert m.presence == Presence(S.CHAT, "lunch-ish", "ping me, maybe")


def test_reserved_source_as_timed_is_a_bug() -> None:
    with pytest.raises(ValueError, match="manual"):
        decide(None, (timed(source="manual"),), IDLE, None, TEN)


# --- windows and helpers ---------------------------------------------------


@pytest.mark.parametrize(
    ("record", "now", "inside", "expired"),
    [
        pytest.param(CAL, at(9, 59), False, False, id="before"),
        pytest.param(CAL, TEN, True, False, id="start-inclusive"),
        pytest.param(CAL, at(10, 59), True, False, id="inside"),
        pytest.param(CAL, ELEVEN, False, True, id="end-exclusive"),
        pytest.param(timed(start=None, since=TEN), TEN, True, False, id="ttl-from-since"),
        pytest.param(timed(end=None), at(23), True, False, id="open-ended"),
    ],
)
def test_in_window(record: SourceRecord, now: datetime, inside: bool, expired: bool) -> None:
    assert in_window(record, now) is inside
    assert is_expired(record, now) is expired


def test_active_timed_best_first_and_filters() -> None:
    a = timed(S.AWAY, "a", since=at(8))
    b = timed(S.XA, "b", since=at(9), source="travel")
    c = timed(S.DND, "c", start=at(12), end=at(13), source="focus")
    assert active_timed(None, (a, b, c), at(10, 30)) == (b, a)
    cfg = RuleConfig(timed_priority=("calendar",))
    assert active_timed(None, (b, a, c), at(10, 30), cfg) == (a, b)
    assert active_timed(manual(S.AVAILABLE, since=at(10, 1)), (a, b), at(10, 30)) == ()


@pytest.mark.parametrize(
    ("previous", "states", "expected"),
    [
        pytest.param(None, (D.UNAVAILABLE,), TEN, id="becomes-unavailable"),
        pytest.param(NINE, (D.UNAVAILABLE, D.UNAVAILABLE), NINE, id="stays-unavailable"),
        pytest.param(NINE, (D.UNAVAILABLE, D.NOT_INUSE), None, id="one-back"),
        pytest.param(NINE, (D.UNAVAILABLE, D.INVALID), NINE, id="invalid-is-neutral"),
        pytest.param(NINE, (), None, id="no-devices"),
        pytest.param(None, (D.INUSE,), None, id="in-call"),
    ],
)
def test_track_unavailable_since(
    previous: datetime | None, states: tuple[DeviceState, ...], expected: datetime | None
) -> None:
    assert track_unavailable_since(previous, states, TEN) == expected


# --- next_change_at -------------------------------------------------------


@pytest.mark.parametrize(
    ("m", "t", "d", "a", "now", "config", "expected"),
    [
        pytest.param(None, (), IDLE, None, TEN, DEFAULT_RULES, None, id="nothing"),
        pytest.param(AVAIL, (CAL,), IDLE, None, NINE, DEFAULT_RULES, TEN, id="calendar-start"),
        pytest.param(AVAIL, (CAL,), IDLE, None, TEN, DEFAULT_RULES, ELEVEN, id="calendar-end"),
        pytest.param(
            None, (CAL,), IDLE, None, at(10, 30), DEFAULT_RULES, ELEVEN, id="calendar-end-no-manual"
        ),
        pytest.param(AVAIL, (CAL,), IDLE, None, ELEVEN, DEFAULT_RULES, None, id="calendar-over"),
        pytest.param(
            manual(S.DND),
            (CAL,),
            IDLE,
            None,
            NINE,
            DEFAULT_RULES,
            None,
            id="protected-hides-calendar",
        ),
        pytest.param(
            manual(S.AVAILABLE, since=at(10, 15)),
            (CAL,),
            IDLE,
            None,
            at(10, 30),
            DEFAULT_RULES,
            None,
            id="suppressed-calendar-end-changes-nothing",
        ),
        pytest.param(
            AVAIL, (CAL,), CALL, None, NINE, DEFAULT_RULES, None, id="call-hides-calendar"
        ),
        pytest.param(
            AVAIL,
            (),
            dev(D.UNAVAILABLE, since=at(9, 59, 50)),
            None,
            TEN,
            DEFAULT_RULES,
            at(10, 0, 50),
            id="offline-threshold",
        ),
        pytest.param(
            AVAIL,
            (),
            dev(D.UNAVAILABLE, since=NINE),
            None,
            TEN,
            DEFAULT_RULES,
            None,
            id="already-offline",
        ),
        pytest.param(
            AVAIL,
            (),
            dev(D.UNAVAILABLE, since=at(9, 59, 50)),
            None,
            TEN,
            RuleConfig(offline=None),
            None,
            id="offline-disabled",
        ),
        pytest.param(
            AVAIL,
            (),
            dev(D.UNAVAILABLE, D.NOT_INUSE, since=at(9, 59, 50)),
            None,
            TEN,
            DEFAULT_RULES,
            None,
            id="mixed-devices-never-offline",
        ),
        pytest.param(
            AVAIL, (), IDLE, auto(end=at(10, 45)), at(10, 30), AUTO_ON, at(10, 45), id="auto-ttl"
        ),
        pytest.param(
            AVAIL, (), IDLE, auto(end=at(10, 45)), at(10, 30), DEFAULT_RULES, None, id="auto-off"
        ),
        pytest.param(
            manual(S.DND, end=ELEVEN), (), IDLE, None, TEN, DEFAULT_RULES, ELEVEN, id="manual-end"
        ),
        pytest.param(
            AVAIL,
            (timed(start=at(12), end=at(13)), timed(source="travel")),
            IDLE,
            None,
            NINE,
            DEFAULT_RULES,
            TEN,
            id="earliest-of-several",
        ),
        pytest.param(
            AVAIL,
            (timed(end=at(10, 30)), timed(start=at(10, 30), since=at(8, 1))),
            IDLE,
            None,
            TEN,
            DEFAULT_RULES,
            ELEVEN,
            id="back-to-back-identical-entries-skip-join",
        ),
    ],
)
def test_next_change_at(
    m: SourceRecord | None,
    t: tuple[SourceRecord, ...],
    d: DeviceView,
    a: SourceRecord | None,
    now: datetime,
    config: RuleConfig,
    expected: datetime | None,
) -> None:
    assert next_change_at(m, t, d, a, now, config) == expected


def test_next_change_at_near_datetime_max() -> None:
    since = datetime.max.replace(tzinfo=UTC) - timedelta(seconds=10)
    d = dev(D.UNAVAILABLE, since=since)
    assert next_change_at(None, (), d, None, since, DEFAULT_RULES) is None


# --- missed calls ----------------------------------------------------------


@pytest.mark.parametrize(
    ("limit", "count", "event", "expected"),
    [
        pytest.param(0, 0, "missed", (0, False), id="off"),
        pytest.param(0, 5, "missed", (0, False), id="off-resets"),
        pytest.param(3, 0, "missed", (1, False), id="first-miss"),
        pytest.param(3, 1, "missed", (2, False), id="second-miss"),
        pytest.param(3, 2, "missed", (3, True), id="third-miss-turns-on"),
        pytest.param(3, 3, "missed", (3, True), id="saturates"),
        pytest.param(1, 0, "missed", (1, True), id="limit-one"),
        pytest.param(3, 2, "answered", (0, False), id="answered-resets"),
        pytest.param(3, 3, "answered", (0, False), id="answered-clears"),
        pytest.param(3, 3, "manual", (0, False), id="manual-clears"),
    ],
)
def test_missed_calls_step(
    limit: int, count: int, event: MissedCallEvent, expected: tuple[int, bool]
) -> None:
    assert missed_calls_step(count, event, RuleConfig(missed_calls_away=limit)) == expected


def test_missed_calls_step_rejects_bad_input() -> None:
    with pytest.raises(ValueError):
        missed_calls_step(-1, "missed", AUTO_ON)
    with pytest.raises(ValueError):
        missed_calls_step(0, "bogus", AUTO_ON)  # type: ignore[arg-type]


def test_auto_contribution() -> None:
    record = auto_contribution("2000", TEN, AUTO_ON)
    assert record == SourceRecord("2000", "auto", Presence(S.AWAY, "missed-calls"), TEN, "auto")
    assert decide(None, (), IDLE, record, TEN, AUTO_ON).rule == "auto:missed-calls"


# --- BLF mirror ------------------------------------------------------------


@pytest.mark.parametrize(
    ("state", "expected"),
    [
        pytest.param(S.DND, "BUSY", id="dnd"),
        pytest.param(S.UNAVAILABLE, "BUSY", id="unavailable"),
        pytest.param(S.AWAY, "ONHOLD", id="away"),
        pytest.param(S.XA, "ONHOLD", id="xa"),
        pytest.param(S.AVAILABLE, "INVALID", id="available"),
        pytest.param(S.CHAT, "INVALID", id="chat"),
        pytest.param(S.NOT_SET, "INVALID", id="not_set"),
    ],
)
def test_mirror_state(state: State, expected: str) -> None:
    assert mirror_state(state) == expected


def test_mirror_map_from_config_merges() -> None:
    cfg = RuleConfig.from_mapping({"mirror_map": {"away": "invalid", "chat": "NOT_INUSE"}})
    assert mirror_state(S.AWAY, cfg) == "INVALID"
    assert mirror_state(S.CHAT, cfg) == "NOT_INUSE"
    assert mirror_state(S.DND, cfg) == "BUSY"
    assert MIRROR_MAP[S.AWAY] is D.ONHOLD  # default untouched


def test_mirror_device() -> None:
    assert mirror_device("2000") == "Custom:presence-2000"
    assert mirror_device("alice", RuleConfig(mirror_prefix="blf.")) == "Custom:blf.alice"
    with pytest.raises(InvalidInput):
        mirror_device("20&00")
    assert is_mirror_device("Custom:presence-2000")
    assert not is_mirror_device("PJSIP/2000")
    assert not is_mirror_device("Custom:other-2000")


# --- queue pause -----------------------------------------------------------


@pytest.mark.parametrize(
    ("state", "wanted"),
    [pytest.param(s, s in (S.DND, S.AWAY, S.XA), id=s.value) for s in State],
)
def test_pause_wanted(state: State, wanted: bool) -> None:
    assert pause_wanted(state) is wanted
    assert pause_wanted(state, RuleConfig(pause_states=frozenset())) is False


def test_pause_reason() -> None:
    assert pause_reason(S.DND) == "astpresence:dnd"
    assert pause_reason(S.XA, RuleConfig(pause_reason_prefix="ap-")) == "ap-xa"


@pytest.mark.parametrize(
    ("reason", "ours"),
    [
        pytest.param("astpresence:dnd", True, id="ours-dnd"),
        pytest.param("astpresence:away", True, id="ours-away"),
        pytest.param(None, False, id="none"),
        pytest.param("", False, id="empty"),
        pytest.param("lunch", False, id="someone-else"),
        pytest.param("astpresence:", False, id="prefix-only"),
        pytest.param("astpresence:coffee", False, id="prefix-unknown-state"),
        pytest.param("ASTPRESENCE:dnd", False, id="other-case"),
        pytest.param("x-astpresence:dnd", False, id="prefix-inside"),
    ],
)
def test_is_our_pause_reason(reason: str | None, ours: bool) -> None:
    assert is_our_pause_reason(reason) is ours


@pytest.mark.parametrize(
    ("state", "paused", "reason", "action"),
    [
        pytest.param(S.DND, False, None, "pause", id="enter-set-pause"),
        pytest.param(S.DND, True, "astpresence:dnd", None, id="already-paused-by-us"),
        pytest.param(S.AWAY, True, "astpresence:dnd", "pause", id="refresh-reason"),
        pytest.param(S.DND, True, "supervisor", None, id="paused-by-other-left-alone"),
        pytest.param(S.AVAILABLE, True, "astpresence:dnd", "unpause", id="leave-set-unpause"),
        pytest.param(S.AVAILABLE, True, "supervisor", None, id="never-unpause-others"),
        pytest.param(S.AVAILABLE, True, "", None, id="never-unpause-no-reason"),
        pytest.param(S.AVAILABLE, False, None, None, id="nothing-to-do"),
        pytest.param(S.UNAVAILABLE, True, "astpresence:xa", "unpause", id="unavailable-not-in-set"),
    ],
)
def test_queue_pause_action(
    state: State, paused: bool, reason: str | None, action: str | None
) -> None:
    assert queue_pause_action(state, paused, reason) == action


# --- configuration ---------------------------------------------------------


def test_default_config() -> None:
    c = RuleConfig()
    assert c.on_phone == Presence(S.UNAVAILABLE, "on-the-phone")
    assert c.offline == Presence(S.UNAVAILABLE, "offline")
    assert c.offline_after == timedelta(seconds=60)
    assert c.call_states == {D.INUSE, D.BUSY, D.RINGINUSE, D.ONHOLD}
    assert c.overridable_manual == {S.AVAILABLE, S.CHAT, S.NOT_SET}
    assert c.timed_priority == ()
    assert c.missed_calls_away == 0
    assert c.auto_presence == Presence(S.AWAY, "missed-calls")
    assert c.mirror is False
    assert c.mirror_prefix == "presence-"
    assert dict(c.mirror_map) == {
        S.DND: D.BUSY,
        S.UNAVAILABLE: D.BUSY,
        S.AWAY: D.ONHOLD,
        S.XA: D.ONHOLD,
    }
    assert c.pause_states == {S.DND, S.AWAY, S.XA}
    assert c.pause_reason_prefix == "astpresence:"
    assert RuleConfig.from_mapping({}) == c == DEFAULT_RULES
    hash(c)


def test_from_mapping_full() -> None:
    c = RuleConfig.from_mapping(
        {
            "on_phone": {"state": "DND", "subtype": "call", "message": "On a call"},
            "offline": False,
            "offline_after": 90.5,
            "call_states": ["inuse", "BUSY"],
            "overridable_manual": ["available"],
            "timed_priority": ["calendar", "travel"],
            "missed_calls_away": 3,
            "auto_presence": {"state": "xa"},
            "mirror": True,
            "mirror_prefix": "blf_",
            "mirror_map": {"chat": "NOT_INUSE"},
            "pause_states": [],
            "pause_reason_prefix": "ap:",
        }
    )
    assert c.on_phone == Presence(S.DND, "call", "On a call")
    assert c.offline is None
    assert c.offline_after == timedelta(seconds=90.5)
    assert c.call_states == {D.INUSE, D.BUSY}
    assert c.overridable_manual == {S.AVAILABLE}
    assert c.timed_priority == ("calendar", "travel")
    assert c.missed_calls_away == 3
    assert c.auto_presence == Presence(S.XA)
    assert c.mirror is True
    assert c.mirror_prefix == "blf_"
    assert c.mirror_map[S.CHAT] is D.NOT_INUSE
    assert c.pause_states == frozenset()
    assert c.pause_reason_prefix == "ap:"


def test_from_mapping_true_overlay_means_default() -> None:
    c = RuleConfig.from_mapping({"on_phone": True, "offline": True})
    assert c.on_phone == DEFAULT_RULES.on_phone and c.offline == DEFAULT_RULES.offline


BAD_VALUES = [
    ("on_phone", "yes"),
    ("on_phone", {"subtype": "x"}),
    ("on_phone", {"state": "busy"}),
    ("on_phone", {"state": "not_set"}),
    ("on_phone", {"state": "dnd", "colour": "red"}),
    ("on_phone", {"state": "dnd", "message": "a\r\nb"}),
    ("on_phone", {"state": "dnd", "subtype": "x" * 256}),
    ("offline", 0),
    ("offline", {"state": 3}),
    ("offline_after", 0),
    ("offline_after", -5),
    ("offline_after", "60"),
    ("offline_after", True),
    ("offline_after", float("nan")),
    ("offline_after", float("inf")),
    ("offline_after", 10**9),
    ("call_states", []),
    ("call_states", "INUSE"),
    ("call_states", ["ON_THE_PHONE"]),
    ("overridable_manual", "available"),
    ("overridable_manual", ["available", "lunch"]),
    ("overridable_manual", [1]),
    ("timed_priority", "calendar"),
    ("timed_priority", ["calendar", "calendar"]),
    ("timed_priority", ["manual"]),
    ("timed_priority", ["auto"]),
    ("timed_priority", [""]),
    ("timed_priority", ["cal endar"]),
    ("missed_calls_away", -1),
    ("missed_calls_away", 1.5),
    ("missed_calls_away", True),
    ("missed_calls_away", "3"),
    ("auto_presence", False),
    ("auto_presence", {"state": "nope"}),
    ("mirror", "yes"),
    ("mirror_via", "sip"),
    ("queue_pause", "on"),
    ("mirror", 1),
    ("mirror_prefix", ""),
    ("mirror_prefix", 5),
    ("mirror_prefix", "pres ence-"),
    ("mirror_prefix", "presence:"),
    ("mirror_prefix", "a&b"),
    ("mirror_prefix", "x" * 41),
    ("mirror_map", ["dnd", "BUSY"]),
    ("mirror_map", {"dnd": "UNKNOWN"}),
    ("mirror_map", {"dnd": "OCCUPIED"}),
    ("mirror_map", {"lunch": "BUSY"}),
    ("pause_states", "dnd"),
    ("pause_states", ["dnd", "coffee"]),
    ("pause_reason_prefix", ""),
    ("pause_reason_prefix", "ast presence:"),
    ("pause_reason_prefix", "a\r\nEvent: x"),
    ("pause_reason_prefix", None),
]


@pytest.mark.parametrize(
    ("key", "value"),
    [pytest.param(k, v, id=f"{k}={v!r}"[:60]) for k, v in BAD_VALUES],
)
def test_from_mapping_bad_value_names_key(key: str, value: object) -> None:
    with pytest.raises(InvalidInput, match=rf"^rules\.{key}: "):
        RuleConfig.from_mapping({key: value})


def test_every_key_has_a_bad_value_case() -> None:
    assert {k for k, _ in BAD_VALUES} == set(RULE_KEYS)


@pytest.mark.parametrize("key", ["offline_afer", "on-phone", "rules", ""])
def test_from_mapping_unknown_key(key: str) -> None:
    with pytest.raises(InvalidInput, match="unknown key") as info:
        RuleConfig.from_mapping({"offline_after": 30, key: 1})
    assert repr(key) in str(info.value)


def test_from_mapping_not_a_table() -> None:
    with pytest.raises(InvalidInput, match="rules"):
        RuleConfig.from_mapping(["on_phone"])  # type: ignore[arg-type]


# --- properties ------------------------------------------------------------

FAST = settings(max_examples=200, deadline=None)
BASE = at(10)

# Ten-second steps over a short span, so boundaries coincide often.
times = st.integers(min_value=-30, max_value=30).map(lambda k: BASE + timedelta(seconds=10 * k))
maybe_times = st.none() | times
presences = st.builds(
    Presence,
    st.sampled_from(list(State)),
    st.sampled_from(["", "meeting", "lunch"]),
    st.sampled_from(["", "back at 3"]),
)
manuals = st.builds(
    lambda p, since, end: SourceRecord("2000", "manual", p, since, "api", end=end),
    presences,
    times,
    st.none() | st.none() | times,
)
timed_entries = st.builds(
    lambda src, p, since, start, end: SourceRecord(
        "2000", src, p, since, "cal", start=start, end=end
    ),
    st.sampled_from(["calendar", "travel", "focus"]),
    presences,
    times,
    maybe_times,
    maybe_times,
)
timed_lists = st.lists(timed_entries, max_size=4).map(tuple)
autos = st.builds(
    lambda p, since, end: SourceRecord("2000", "auto", p, since, "auto", end=end),
    presences,
    times,
    maybe_times,
)
device_states = st.lists(st.sampled_from(list(DeviceState)), max_size=3).map(tuple)
devices = st.builds(DeviceView, device_states, maybe_times)
call_states = st.sampled_from([D.INUSE, D.BUSY, D.RINGINUSE, D.ONHOLD])
configs = st.builds(
    RuleConfig,
    on_phone=st.sampled_from([ON_PHONE, None, Presence(S.DND, "call")]),
    offline=st.sampled_from([OFFLINE, None]),
    offline_after=st.sampled_from(
        [timedelta(seconds=60), timedelta(seconds=5), timedelta(seconds=95)]
    ),
    timed_priority=st.sampled_from([(), ("calendar",), ("focus", "travel")]),
    missed_calls_away=st.sampled_from([0, 2]),
)
PROTECTED = [S.DND, S.AWAY, S.XA, S.UNAVAILABLE]


def _without_calls(view: DeviceView) -> DeviceView:
    return replace(
        view,
        states=tuple(D.NOT_INUSE if s in DEFAULT_RULES.call_states else s for s in view.states),
    )


@FAST
@given(
    p=presences.filter(lambda p: p.state in PROTECTED),
    since=times,
    t=timed_lists,
    d=devices,
    a=st.none() | autos,
    now=times,
    config=configs,
)
def test_prop_rule1_protected_manual_is_never_overridden(
    p: Presence,
    since: datetime,
    t: tuple[SourceRecord, ...],
    d: DeviceView,
    a: SourceRecord | None,
    now: datetime,
    config: RuleConfig,
) -> None:
    assume(since <= now)
    m = SourceRecord("2000", "manual", p, since, "api")
    decision = decide(m, t, d, a, now, config)
    assert decision == Decision(p, "manual", "manual-protected")
    assert decision.presence is p


@FAST
@given(
    m=st.none() | manuals,
    t=timed_lists,
    d=devices,
    call=call_states,
    a=st.none() | autos,
    now=times,
    config=configs,
)
def test_prop_rule2_call_overlay_then_exact_return(
    m: SourceRecord | None,
    t: tuple[SourceRecord, ...],
    d: DeviceView,
    call: DeviceState,
    a: SourceRecord | None,
    now: datetime,
    config: RuleConfig,
) -> None:
    assume(m is None or not in_window(m, now) or m.presence.state in config.overridable_manual)
    in_call = replace(d, states=(*d.states, call))
    during = decide(m, t, in_call, a, now, config)
    if config.on_phone is None:
        assert during.rule != "on-the-phone"
    else:
        assert during == Decision(config.on_phone, "device", "on-the-phone")
    # With the overlay off, or the call over, the result is what the other
    # contributions give: the overlay hid it without altering it.
    hidden = decide(m, t, in_call, a, now, replace(config, on_phone=None))
    ended = decide(m, t, _without_calls(in_call), a, now, config)
    assert hidden == ended


@FAST
@given(
    m=st.none() | manuals,
    t=timed_lists,
    n=st.integers(min_value=1, max_value=3),
    extra_invalid=st.booleans(),
    since=times,
    a=st.none() | autos,
    now=times,
    config=configs,
)
def test_prop_rule3_offline_overlay(
    m: SourceRecord | None,
    t: tuple[SourceRecord, ...],
    n: int,
    extra_invalid: bool,
    since: datetime,
    a: SourceRecord | None,
    now: datetime,
    config: RuleConfig,
) -> None:
    assume(m is None or not in_window(m, now) or m.presence.state in config.overridable_manual)
    states = (D.UNAVAILABLE,) * n + ((D.INVALID,) if extra_invalid else ())
    d = DeviceView(states, since)
    decision = decide(m, t, d, a, now, config)
    if config.offline is not None and now - since >= config.offline_after:
        assert decision == Decision(config.offline, "device", "offline")
    else:
        assert decision == decide(m, t, d, a, now, replace(config, offline=None))
        assert decision.rule != "offline"


@FAST
@given(
    m=st.none() | manuals,
    t=timed_lists,
    d=devices,
    a=st.none() | autos,
    now=times,
    config=configs,
)
def test_prop_rule4_timed_only_inside_window_and_not_superseded(
    m: SourceRecord | None,
    t: tuple[SourceRecord, ...],
    d: DeviceView,
    a: SourceRecord | None,
    now: datetime,
    config: RuleConfig,
) -> None:
    decision = decide(m, t, d, a, now, config)
    live_m = m if m is not None and in_window(m, now) else None
    if decision.rule.startswith("timed:"):
        assert decision.rule == "timed:" + decision.source
        assert any(
            e.source == decision.source
            and e.presence == decision.presence
            and in_window(e, now)
            and not (live_m is not None and live_m.since >= (e.start or e.since))
            for e in t
        )
    # Entries outside their window can be dropped without changing anything.
    inside = tuple(e for e in t if in_window(e, now))
    assert decide(m, inside, d, a, now, config) == decision
    # The order of the entries does not matter.
    assert decide(m, tuple(reversed(t)), d, a, now, config) == decision


@FAST
@given(
    m=st.none() | manuals,
    t=timed_lists,
    d=devices,
    a=st.none() | autos,
    now=times,
    config=configs,
    stale=st.lists(timed_entries, max_size=2),
    stale_auto=st.booleans(),
    stale_manual=st.booleans(),
)
def test_prop_rule5_expired_contributions_leave_nothing(
    m: SourceRecord | None,
    t: tuple[SourceRecord, ...],
    d: DeviceView,
    a: SourceRecord | None,
    now: datetime,
    config: RuleConfig,
    stale: list[SourceRecord],
    stale_auto: bool,
    stale_manual: bool,
) -> None:
    expected = decide(m, t, d, a, now, config)
    expired_end = now - timedelta(seconds=1)
    expired = tuple(replace(e, end=min(e.end or expired_end, expired_end)) for e in stale)
    assert decide(m, (*t, *expired), d, a, now, config) == expected
    if a is None and stale_auto:
        gone = SourceRecord(
            "2000", "auto", config.auto_presence, now - timedelta(hours=1), "auto", end=now
        )
        assert decide(m, t, d, gone, now, config) == expected
    if m is None and stale_manual:
        gone_m = SourceRecord(
            "2000", "manual", Presence(S.DND), now - timedelta(hours=1), "api", end=now
        )
        assert decide(gone_m, t, d, a, now, config) == expected


@FAST
@given(
    m=st.none() | manuals,
    t=timed_lists,
    d=devices,
    a=st.none() | autos,
    now=times,
    config=configs,
)
def test_prop_source_matches_rule(
    m: SourceRecord | None,
    t: tuple[SourceRecord, ...],
    d: DeviceView,
    a: SourceRecord | None,
    now: datetime,
    config: RuleConfig,
) -> None:
    decision = decide(m, t, d, a, now, config)
    expected_source = {
        "manual-protected": "manual",
        "manual": "manual",
        "on-the-phone": "device",
        "offline": "device",
        "auto:missed-calls": "auto",
        "default": "default",
    }.get(decision.rule, decision.rule.removeprefix("timed:"))
    assert decision.source == expected_source
    if decision.rule == "auto:missed-calls":
        assert a is not None and decision.presence == a.presence and config.missed_calls_away > 0
    if decision.rule in ("manual", "manual-protected"):
        assert m is not None and decision.presence == m.presence


@FAST
@given(
    m=st.none() | manuals,
    t=timed_lists,
    d=devices,
    a=st.none() | autos,
    now=times,
    config=configs,
    probes=st.lists(st.integers(min_value=1, max_value=700), max_size=6),
)
def test_prop_next_change_at_is_the_next_change(
    m: SourceRecord | None,
    t: tuple[SourceRecord, ...],
    d: DeviceView,
    a: SourceRecord | None,
    now: datetime,
    config: RuleConfig,
    probes: list[int],
) -> None:
    current = decide(m, t, d, a, now, config)
    nxt = next_change_at(m, t, d, a, now, config)
    # Every record boundary and the offline threshold, plus random probes.
    points = {now + timedelta(seconds=s) for s in probes}
    for r in (m, a, *t):
        if r is not None:
            points |= {x for x in (r.start, r.since, r.end) if x is not None}
    if d.unavailable_since is not None:
        points.add(d.unavailable_since + config.offline_after)
    points = {p for p in points if p > now}
    if nxt is None:
        for p in points:
            assert decide(m, t, d, a, p, config) == current
    else:
        assert nxt > now
        assert decide(m, t, d, a, nxt, config) != current
        for p in points:
            if p < nxt:
                assert decide(m, t, d, a, p, config) == current
        just_before = nxt - timedelta(microseconds=1)
        if just_before > now:
            assert decide(m, t, d, a, just_before, config) == current


@FAST
@given(
    limit=st.integers(min_value=0, max_value=4),
    events=st.lists(st.sampled_from(["missed", "answered", "manual"]), max_size=12),
)
def test_prop_missed_calls_counts_trailing_misses(
    limit: int, events: list[MissedCallEvent]
) -> None:
    cfg = RuleConfig(missed_calls_away=limit)
    count, active = 0, False
    for event in events:
        count, active = missed_calls_step(count, event, cfg)
    trailing = 0
    for event in reversed(events):
        if event != "missed":
            break
        trailing += 1
    assert active is (limit > 0 and trailing >= limit)
    assert count == (min(trailing, limit) if limit > 0 else 0)


@FAST
@given(
    state=st.sampled_from(list(State)),
    paused=st.booleans(),
    reason=st.none()
    | st.text(max_size=20)
    | st.sampled_from([f"astpresence:{s.value}" for s in State]),
)
def test_prop_never_touch_someone_elses_pause(
    state: State, paused: bool, reason: str | None
) -> None:
    action = queue_pause_action(state, paused, reason)
    if paused and not is_our_pause_reason(reason):
        assert action is None
    if action == "unpause":
        assert not pause_wanted(state) and paused
    if action == "pause":
        assert pause_wanted(state)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=6,
)


@FAST
@given(
    st.dictionaries(
        st.sampled_from([*RULE_KEYS, "bogus"]) | st.text(max_size=6),
        json_values
        | st.sampled_from(
            [["dnd"], ["INUSE"], {"state": "away"}, 30, "presence-", {"dnd": "BUSY"}, False]
        ),
        max_size=4,
    )
)
def test_prop_from_mapping_only_raises_invalid_input(d: dict[str, object]) -> None:
    try:
        cfg = RuleConfig.from_mapping(d)
    except InvalidInput as exc:
        assert str(exc).startswith("rules")
    else:
        assert isinstance(cfg, RuleConfig)
        assert set(d) <= set(RULE_KEYS)


def test_all_unavailable() -> None:
    assert all_unavailable((D.UNAVAILABLE,))
    assert all_unavailable((D.UNAVAILABLE, D.UNKNOWN, D.INVALID))
    assert not all_unavailable(())
    assert not all_unavailable((D.INVALID,))
    assert not all_unavailable((D.UNAVAILABLE, D.NOT_INUSE))
