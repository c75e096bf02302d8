"""The standard projection, as a table: every mix of sources -> what the person chose,
the activity, the effective presence written to CustomPresence, and the BLF mirror
state (docs/presence-rules.md, "What each reader shows")."""

from __future__ import annotations

import pytest

from astpresence.domain.mirror import mirror_state
from astpresence.domain.model import NOT_SET, DeviceState, Presence, State
from astpresence.domain.records import SourceRecord
from astpresence.domain.rules import (
    DEFAULT_RULES,
    DeviceView,
    RuleConfig,
    decide,
    next_change_at,
)
from tests.support.rules import CAL, HALF_PAST_TEN, NINE, TEN, at, auto, dev, manual

D, S = DeviceState, State
AVAILABLE = Presence(S.AVAILABLE)
BACK_AT_3 = manual(S.AVAILABLE, "", "back at 3")
DND_FOCUS = manual(S.DND, "focus", "heads down")
UNPLUGGED = dev(D.UNAVAILABLE, since=at(10, 28))  # 2 minutes before HALF_PAST_TEN
MIRRORED = RuleConfig(mirror=True, missed_calls_away=3)

# (id, manual, timed, devices, auto) -> (chosen, activity, effective, rule, mirror)
CASES = [
    ("registered-idle", None, (), dev(D.NOT_INUSE), None,
     AVAILABLE, "", AVAILABLE, "registered", "INVALID"),
    ("no-devices-known", None, (), dev(), None,
     NOT_SET, "", NOT_SET, "default", "INVALID"),
    ("cleared-by-hand-registered", manual(S.NOT_SET), (), dev(D.NOT_INUSE), None,
     AVAILABLE, "", AVAILABLE, "registered", "INVALID"),
    ("call-on-available-keeps-message", BACK_AT_3, (), dev(D.INUSE), None,
     BACK_AT_3.presence, "on-the-phone", Presence(S.DND, "on-the-phone", "back at 3"),
     "on-the-phone", "INVALID"),
    ("call-registered-only", None, (), dev(D.INUSE), None,
     AVAILABLE, "on-the-phone", Presence(S.DND, "on-the-phone"), "on-the-phone", "INVALID"),
    ("ringing-is-activity-only", BACK_AT_3, (), dev(D.RINGING), None,
     BACK_AT_3.presence, "ringing", BACK_AT_3.presence, "manual", "INVALID"),
    ("on-hold", BACK_AT_3, (), dev(D.ONHOLD), None,
     BACK_AT_3.presence, "on-hold", Presence(S.DND, "on-the-phone", "back at 3"),
     "on-the-phone", "INVALID"),
    ("chosen-dnd-wins-call-shows", DND_FOCUS, (), dev(D.INUSE), None,
     DND_FOCUS.presence, "on-the-phone", DND_FOCUS.presence, "manual-protected", "BUSY"),
    ("offline", None, (), UNPLUGGED, None,
     NOT_SET, "offline", Presence(S.UNAVAILABLE, "offline"), "offline", "INVALID"),
    ("offline-chose-available", BACK_AT_3, (), UNPLUGGED, None,
     BACK_AT_3.presence, "offline", Presence(S.UNAVAILABLE, "offline"), "offline",
     "INVALID"),
    ("chose-unavailable-mirror-unavailable", manual(S.UNAVAILABLE), (), dev(D.NOT_INUSE), None,
     Presence(S.UNAVAILABLE), "", Presence(S.UNAVAILABLE), "manual-protected", "UNAVAILABLE"),
    ("meeting", BACK_AT_3, (CAL,), dev(D.NOT_INUSE), None,
     CAL.presence, "calendar", CAL.presence, "timed:calendar", "ONHOLD"),
    ("meeting-and-a-call", BACK_AT_3, (CAL,), dev(D.INUSE), None,
     CAL.presence, "on-the-phone", Presence(S.DND, "on-the-phone", "Meeting"),
     "on-the-phone", "ONHOLD"),
    ("missed-calls-away", None, (), dev(D.NOT_INUSE), auto(),
     DEFAULT_RULES.auto_presence, "", DEFAULT_RULES.auto_presence, "auto:missed-calls",
     "ONHOLD"),
]


@pytest.mark.parametrize(
    ("m", "t", "d", "a", "chosen", "activity", "effective", "rule", "mirror"),
    [pytest.param(*c[1:], id=c[0]) for c in CASES])
def test_projection(m: SourceRecord | None, t: tuple[SourceRecord, ...], d: DeviceView,
                    a: SourceRecord | None, chosen: Presence, activity: str,
                    effective: Presence, rule: str, mirror: str) -> None:
    got = decide(m, t, d, a, HALF_PAST_TEN, MIRRORED)
    assert (got.chosen, got.activity, got.presence, got.rule) == (chosen, activity, effective,
                                                                  rule)
    assert mirror_state(got.chosen.state, MIRRORED) == mirror


def test_the_legacy_projection_reads_a_call_as_unavailable() -> None:
    legacy = RuleConfig.from_mapping({"projection": "legacy"})
    got = decide(BACK_AT_3, (), dev(D.INUSE), None, TEN, legacy)
    assert got.presence == Presence(S.UNAVAILABLE, "on-the-phone")  # the message hidden
    assert decide(None, (), dev(D.NOT_INUSE), None, TEN, legacy).presence == NOT_SET
    assert mirror_state(S.UNAVAILABLE, legacy) == "BUSY"


def test_a_message_can_lapse_before_its_state() -> None:
    chose = SourceRecord("2000", "manual", Presence(S.AWAY, "lunch", "back at 1"), NINE, "api",
                         end=at(14), message_end=TEN)
    assert decide(chose, (), dev(D.NOT_INUSE), None, at(9, 59)).presence.message == "back at 1"
    after = decide(chose, (), dev(D.NOT_INUSE), None, TEN)
    assert after.presence == Presence(S.AWAY, "lunch") == after.chosen
    assert decide(chose, (), dev(D.NOT_INUSE), None, at(14)).rule == "registered"
    assert next_change_at(chose, (), dev(D.NOT_INUSE), None, NINE) == TEN
    assert next_change_at(chose, (), dev(D.NOT_INUSE), None, TEN) == at(14)
