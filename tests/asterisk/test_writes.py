"""WriteTracker, the one mechanism behind presence, mirror and queue-pause writes."""

from __future__ import annotations

from typing import Any

import pytest

from astpresence.asterisk.writes import MAX_IN_FLIGHT, WriteTracker


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


# Each step: (operation, argument, expected return, expected current(), expected in_flight())
CASES: dict[str, list[tuple[str, Any, Any, str, bool]]] = {
    "write then echo": [
        ("take", "a", True, "a", True),
        ("take", "a", False, "a", True),         # in flight already: not sent twice
        ("seen", "a", True, "a", False),         # our echo
        ("take", "a", False, "a", False),        # Asterisk holds it
    ],
    "change elsewhere": [
        ("seen", "x", False, "x", False),        # not ours: the caller adopts it
        ("take", "x", False, "x", False),
    ],
    "two quick writes, echoes in order": [
        ("take", "a", True, "a", True),
        ("take", "b", True, "b", True),
        ("seen", "a", True, "b", True),          # b still in flight
        ("seen", "b", True, "b", False),
    ],
    "a later echo takes the older ones with it": [
        ("take", "a", True, "a", True),
        ("take", "b", True, "b", True),
        ("seen", "b", True, "b", False),         # Asterisk applied a, then b
    ],
    "change elsewhere while ours is in flight": [
        ("take", "a", True, "a", True),
        ("seen", "x", False, "a", True),         # x confirmed, a will still land
        ("seen", "a", True, "a", False),
    ],
    "refused, retried after the delay": [
        ("take", "a", True, "a", True),
        ("refused", "a", None, "", False),
        ("take", "a", False, "", False),         # waits for its retry
        ("advance", 1.0, None, "", False),
        ("take", "a", True, "a", True),          # due: sent again
        ("take", "a", False, "a", True),         # not due again while in flight
        ("refused", "a", None, "", False),       # second refusal: 2 s now
        ("advance", 1.5, None, "", False),
        ("take", "a", False, "", False),
        ("advance", 0.5, None, "", False),
        ("take", "a", True, "a", True),
        ("seen", "a", True, "a", False),         # through: the failure is forgotten
    ],
    "refused, another value goes at once": [
        ("take", "a", True, "a", True),
        ("refused", "a", None, "", False),
        ("take", "b", True, "b", True),
    ],
    "link lost: flight empties, confirmed stays": [
        ("seen", "x", False, "x", False),
        ("take", "a", True, "a", True),
        ("link_lost", None, None, "x", False),
        ("take", "a", True, "a", True),          # written again after the next login
    ],
    "reset after login: confirmed replaced, failures forgotten": [
        ("take", "a", True, "a", True),
        ("refused", "a", None, "", False),
        ("reset", {"k": "y"}, None, "y", False),
        ("take", "a", True, "a", True),
    ],
    "forget: a member removed": [
        ("seen", "x", False, "x", False),
        ("take", "a", True, "a", True),
        ("forget", None, None, "", False),
    ],
}


@pytest.mark.parametrize("name", CASES)
def test_rules(name: str) -> None:
    clock = Clock()
    tracker: WriteTracker[str, str] = WriteTracker("presence", "", clock=clock)
    for step, (op, arg, returns, current, in_flight) in enumerate(CASES[name]):
        where = f"{name}, step {step} ({op} {arg!r})"
        if op == "take":
            assert tracker.take("k", arg) is returns, where
        elif op == "seen":
            assert tracker.seen("k", arg) is returns, where
        elif op == "refused":
            tracker.refused("k", arg, "no")
        elif op == "advance":
            clock.now += arg
        elif op == "link_lost":
            tracker.link_lost()
        elif op == "reset":
            tracker.reset(arg)
        elif op == "forget":
            tracker.forget("k")
        assert tracker.current("k") == current, where
        assert tracker.in_flight("k") is in_flight, where


def test_in_flight_is_bounded() -> None:
    tracker: WriteTracker[str, int] = WriteTracker("presence", -1)
    for value in range(MAX_IN_FLIGHT * 3):
        assert tracker.take("k", value)
    assert len(tracker._in_flight["k"]) == MAX_IN_FLIGHT
    assert tracker.seen("k", MAX_IN_FLIGHT * 3 - 1) and not tracker.in_flight("k")


# -- the table of write kinds, as the outbox runs it -------------------------------

def test_the_outbox_runs_every_kind_from_the_table() -> None:
    """Each row of write_kinds.KINDS gets a tracker, its writes, its refusals (with a
    retry) and its share of a lost link, with nothing in the outbox naming it."""
    from dataclasses import replace

    from astpresence.asterisk.outbox import Outbox
    from astpresence.asterisk.queues import QueueMembers
    from astpresence.asterisk.write_kinds import KIND_BY_NAME, KINDS
    from astpresence.domain.model import Presence, State
    from astpresence.domain.records import UserRecord
    from astpresence.domain.rules import DEFAULT_RULES
    from astpresence.engine.devices import Devices
    from astpresence.engine.users import UserDirectory

    from astpresence.domain.call_settings import CallSettings
    from astpresence.domain.calls import parse_rules
    from astpresence.engine.calls import CallHandling

    DND = Presence(State.DND)
    clock = Clock()
    rules = replace(DEFAULT_RULES, mirror=True)
    users = UserDirectory([UserRecord("2000", devices=("PJSIP/2000",))])
    calls = CallHandling(CallSettings(True, parse_rules({"rules": [
        {"when": "dnd", "action": "busy"}]}, ())), users, (), mark=lambda uid: None)
    outbox = Outbox(users, rules, QueueMembers(users, Devices(users, rules)), clock=clock,
                    dnd_device=lambda uid: f"Custom:DND{uid}", calls=calls)
    assert {f.kind for f in outbox.failures()} == {k.name for k in KINDS}
    outbox.synced = True
    outbox.mark("2000")
    writes = outbox.take(lambda uid: (DND, DND))
    sent = {name: batch for name, batch in writes.items() if batch}
    # no queue member: no pause; a rule for each kind of caller
    assert set(sent) == {"presence", "mirror", "freepbx_dnd", "call_rule"}
    assert len(sent["call_rule"]) == 2
    for name, batch in sent.items():
        outbox.refused(KIND_BY_NAME[name], batch[0], "refused")
    assert {f.kind: len(f) for f in outbox.failures()} == {
        "presence": 1, "mirror": 1, "freepbx_dnd": 1, "queue_pause": 0, "call_rule": 1}
    assert not any(outbox.take(lambda uid: (DND, DND)).values())  # waiting for the retry
    clock.now += 2
    assert {n for n, b in outbox.take(lambda uid: (DND, DND)).items() if b} == set(sent)  # retried
    outbox.link_lost()  # nothing in flight survives; nothing is sent until a login
    outbox.mark("2000")
    assert not any(outbox.take(lambda uid: (DND, DND)).values())
    for kind in KINDS:  # the login (sync.py): Asterisk read again, every value tried again
        outbox.tracker(kind.name).reset()
    outbox.synced = True
    outbox.mark("2000")
    assert {n for n, b in outbox.take(lambda uid: (DND, DND)).items() if b} == set(sent)
