"""What client sessions say about a person (sources/sessions/model.py), with fake time."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from astpresence.domain.model import InvalidInput
from astpresence.sources.sessions.model import (
    AWAY_FROM_DESK,
    IDLE_AWAY,
    OFFLINE,
    Activity,
    Kind,
    Session,
    SessionRules,
    next_change,
    parse_activity,
    parse_idle_seconds,
    parse_kind,
    presence_from,
)

T0 = datetime(2026, 12, 7, 10, 0, tzinfo=UTC)
RULES = SessionRules()


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def session(activity: Activity = Activity.ACTIVE, *, reported: float = 0,
            idle_since: float | None = None, sid: str = "s") -> Session:
    return Session(sid, "2000", "agent", Kind.DESKTOP, T0, at(reported), activity,
                   None if idle_since is None else at(idle_since), at(reported))


@pytest.mark.parametrize(("sessions", "now", "phone", "expected"), [
    ([], 0, False, None),  # never had a session: nothing to say
    ([session()], 0.5, False, None),  # active
    ([session(Activity.IDLE, reported=4.5, idle_since=0)], 4.9, False, None),  # not yet 5 min
    ([session(Activity.IDLE, reported=4.5, idle_since=0)], 5, False, (IDLE_AWAY, 0)),
    ([session(Activity.IDLE, reported=29.5, idle_since=0)], 30, False, (AWAY_FROM_DESK, 0)),
    ([session(Activity.LOCKED, idle_since=0)], 0.1, False, (AWAY_FROM_DESK, 0)),
    # one session active: idle ends at once, whatever the others say
    ([session(Activity.IDLE, reported=9.5, idle_since=0, sid="a"),
      session(reported=9.5, sid="b")], 10, False, None),
    # idle and locked: idle since the most recent input of any of them
    ([session(Activity.IDLE, reported=9.5, idle_since=2, sid="a"),
      session(Activity.LOCKED, reported=9.5, idle_since=4, sid="b")], 10, False,
     (IDLE_AWAY, 4)),
    # every session silent past expire_after (1 min): offline, unless a phone is there
    ([session(reported=0)], 1.01, False, (OFFLINE, 1)),
    ([session(reported=0)], 1.01, True, None),
    # an expired session counts for nothing beside a live one
    ([session(reported=0, sid="old"), session(Activity.IDLE, reported=5.5, idle_since=0,
                                              sid="new")], 6, False, (IDLE_AWAY, 0)),
])
def test_what_sessions_give(sessions: list[Session], now: float, phone: bool,
                            expected: tuple[object, float] | None) -> None:
    got = presence_from(sessions, at(now), RULES, phone)
    assert got == (None if expected is None else (expected[0], at(expected[1])))


def test_reports_move_idle_since_and_last_active() -> None:
    s = session()
    idle = s.reported(Activity.IDLE, 120, at(3))
    assert (idle.idle_since, idle.last_active, idle.last_report) == (at(1), at(1), at(3))
    locked = idle.reported(Activity.LOCKED, 0, at(4))
    assert locked.idle_since == at(4) and locked.last_active == at(1)
    still = locked.reported(Activity.LOCKED, 0, at(5))  # the heartbeat of a locked desk
    assert still.idle_since == at(4) and still.last_report == at(5)
    back = still.reported(Activity.ACTIVE, 0, at(6))
    assert (back.idle_since, back.last_active) == (None, at(6))
    future = s.reported(Activity.IDLE, -0.0, at(1))
    assert future.idle_since == at(1)


def test_the_timer_wakes_at_each_threshold_and_expiry() -> None:
    idle = session(Activity.IDLE, reported=0.5, idle_since=0)
    assert next_change([idle], at(0.5), RULES) == at(1.5)  # expires first
    fresh = session(Activity.IDLE, reported=4.5, idle_since=0)
    assert next_change([fresh], at(4.5), RULES) == at(5)  # away at 5 min
    assert next_change([session(reported=4.5)], at(4.5), RULES) == at(5.5)
    assert next_change([session(reported=0)], at(2), RULES) is None  # all ended


@pytest.mark.parametrize(("parse", "raw"), [
    (parse_kind, "laptop"), (parse_kind, 3), (parse_activity, "asleep"),
    (parse_activity, None), (parse_idle_seconds, -1), (parse_idle_seconds, True),
    (parse_idle_seconds, "60"), (parse_idle_seconds, 10 ** 9),
])
def test_bad_reports_are_refused(parse: object, raw: object) -> None:
    with pytest.raises(InvalidInput):
        parse(raw)  # type: ignore[operator]


_SESSIONS = st.lists(st.tuples(
    st.sampled_from(list(Activity)), st.floats(0, 40), st.floats(0, 40)), max_size=5)


@settings(max_examples=300, deadline=None)
@given(_SESSIONS, st.floats(0, 45), st.booleans())
def test_properties(raw: list[tuple[Activity, float, float]], now: float, phone: bool) -> None:
    sessions = [session(a, reported=min(r, now), idle_since=None if a is Activity.ACTIVE
                        else min(i, r, now), sid=str(n)) for n, (a, r, i) in enumerate(raw)]
    got = presence_from(sessions, at(now), RULES, phone)
    live = [s for s in sessions if s.alive(at(now), RULES)]
    if any(s.activity is Activity.ACTIVE for s in live):
        assert got is None  # activity anywhere ends idle at once
    if got is not None:
        presence, since = got
        assert since <= at(now)  # a contribution never starts in the future
        if presence == OFFLINE:
            assert not live and not phone
        else:
            assert live and all(s.activity is not Activity.ACTIVE for s in live)
    due = next_change(sessions, at(now), RULES)
    assert due is None or due > at(now) or not live


def test_due_times_keep_the_earliest_and_stay_bounded() -> None:
    from astpresence.sources.sessions.source import DueTimes

    due = DueTimes()
    assert due.set("a", at(5)) and not due.set("b", at(7)) and due.set("c", at(1))
    assert due.next() == at(1)
    for i in range(10_000):  # a flood of reports moving one person's time
        due.set("a", at(5 + i / 1000))
    assert len(due._heap) <= 2 * 3 + 1024
    assert due.pop_due(at(6)) == ["c"] and due.next() == at(7)
    due.drop("b")
    assert due.pop_due(at(100)) == ["a"] and due.next() is None
