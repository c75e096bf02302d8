"""Windows, expiry and when a decision changes by time alone."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from astpresence.domain.model import DeviceState
from astpresence.domain.rules import (
    DEFAULT_RULES,
    DeviceView,
    RuleConfig,
    active_timed,
    in_window,
    is_expired,
    next_change_at,
    track_unavailable_since,
)
from astpresence.domain.records import SourceRecord
from tests.support.rules import (
    AUTO_ON,
    AVAIL,
    CAL,
    CALL,
    D,
    ELEVEN,
    IDLE,
    NINE,
    S,
    TEN,
    at,
    auto,
    dev,
    manual,
    timed,
)


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
            # The call still hides the meeting from Asterisk, but what the person
            # "chose" (the calendar decides) changes when it starts.
            AVAIL, (CAL,), CALL, None, NINE, DEFAULT_RULES, TEN, id="call-over-calendar-start"
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
            # Without the overlay the presence stays, but the activity turns offline.
            AVAIL,
            (),
            dev(D.UNAVAILABLE, since=at(9, 59, 50)),
            None,
            TEN,
            RuleConfig(offline=None),
            at(10, 0, 50),
            id="offline-overlay-off-activity-still-offline",
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


