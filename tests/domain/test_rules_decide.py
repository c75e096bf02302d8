"""The precedence: decide() over a table of cases."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from astpresence.domain.model import NOT_SET, Presence
from astpresence.domain.rules import (
    PRECEDENCE,
    RULE_KEYS,
    Decision,
    DeviceView,
    RuleConfig,
    decide,
)
from astpresence.domain.records import SourceRecord
from tests.support.rules import (
    AVAIL,
    AWAY_MEETING,
    CAL,
    CALL,
    D,
    ELEVEN,
    IDLE,
    LEGACY,
    NINE,
    OFFLINE,
    ON_PHONE,
    S,
    TEN,
    at,
    auto,
    case,
    dev,
    manual,
    timed,
)


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
        config=replace(LEGACY, overridable_manual=frozenset()),
        expected=AVAIL.presence,
        rule="manual-protected",
    ),
    case(
        "overridable-with-dnd-lets-call-through",
        m=manual(S.DND),
        d=CALL,
        config=replace(LEGACY, overridable_manual=frozenset({S.DND})),
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
        config=replace(LEGACY, on_phone=None),
        expected=AVAIL.presence,
        rule="manual",
    ),
    case(
        "on-phone-disabled-calendar-shows",
        m=AVAIL,
        t=(CAL,),
        d=CALL,
        config=replace(LEGACY, on_phone=None),
        expected=AWAY_MEETING,
        rule="timed:calendar",
    ),
    case(
        "on-phone-custom-presence",
        m=AVAIL,
        d=CALL,
        config=replace(LEGACY, on_phone=Presence(S.DND, "call", "On a call")),
        expected=Presence(S.DND, "call", "On a call"),
        rule="on-the-phone",
    ),
    case(
        "on-phone-custom-call-states",
        m=AVAIL,
        d=dev(D.RINGING),
        config=replace(LEGACY, call_states=frozenset({D.RINGING})),
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
        config=replace(LEGACY, offline=None),
        expected=AVAIL.presence,
        rule="manual",
    ),
    case(
        "offline-after-300-not-yet",
        m=AVAIL,
        d=dev(D.UNAVAILABLE, since=at(10, 25, 1)),
        config=replace(LEGACY, offline_after=timedelta(seconds=300)),
        expected=AVAIL.presence,
        rule="manual",
    ),
    case(
        "offline-after-300-reached",
        m=AVAIL,
        d=dev(D.UNAVAILABLE, since=at(10, 25)),
        config=replace(LEGACY, offline_after=timedelta(seconds=300)),
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
        config=replace(LEGACY, timed_priority=("calendar",)),
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
        config=replace(LEGACY, timed_priority=("travel", "calendar")),
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
        config=replace(LEGACY, timed_priority=("calendar",)),
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
        config=LEGACY,
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
    got = decide(m, t, d, a, now, config)
    assert (got.presence, got.source, got.rule) == (expected.presence, expected.source,
                                                    expected.rule)


def test_precedence_constant_matches_docs() -> None:
    assert PRECEDENCE == (
        "manual-protected",
        "on-the-phone",
        "offline",
        "timed:",
        "auto:missed-calls",
        "manual",
        "registered",
        "default",
    )
    docs = (Path(__file__).resolve().parents[2] / "docs" / "presence-rules.md").read_text("utf-8")
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
    assert before == after == Decision(m.presence, "manual", "manual", m.presence)
    assert m.presence == Presence(S.CHAT, "lunch-ish", "ping me, maybe")


def test_reserved_source_as_timed_is_a_bug() -> None:
    with pytest.raises(ValueError, match="manual"):
        decide(None, (timed(source="manual"),), IDLE, None, TEN)


