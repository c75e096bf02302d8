"""Helpers and cases shared by the rule tests: a day, its hours, records and device views."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from astpresence.domain.model import DeviceState, Presence, State
from astpresence.domain.rules import DEFAULT_RULES, Decision, DeviceView, RuleConfig
from astpresence.domain.records import SourceRecord

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
#: The case table runs on the legacy projection (before 0.2): it shows that a site
#: that sets projection = "legacy" gets exactly the old behaviour. The standard
#: projection has its own table (tests/domain/test_projection.py).
LEGACY = RuleConfig.from_mapping({"projection": "legacy"})
AUTO_ON = RuleConfig.from_mapping({"projection": "legacy", "missed_calls_away": 3})
ON_PHONE = LEGACY.on_phone
OFFLINE = LEGACY.offline
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
