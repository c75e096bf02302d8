"""PresenceService without sockets: own writes, adoption, resync, pending writes."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from astpresence.domain.model import NOT_SET, Presence, State, parse_device_state
from astpresence.engine.errors import UnknownUser
from astpresence.domain.rules import RuleConfig
from astpresence.engine.service import ASTERISK, MANUAL, PresenceService
from astpresence.asterisk.nodes import attach_nodes
from astpresence.domain.records import UserRecord
from tests.support.memory_store import MemoryStore
from astpresence.asterisk.translate import user_from_hint, user_id_from_provider
from astpresence.asterisk.write_kinds import KIND_BY_NAME
from astpresence.asterisk.writes import PresenceWrite

PRESENCE = KIND_BY_NAME["presence"]

DND = Presence(State.DND, "meeting", "until 3")
AWAY = Presence(State.AWAY, "lunch", "back at 2")
XA = Presence(State.XA)
HINTS = [
    ("2000", "internal", "PJSIP/2000,CustomPresence:2000"),
    ("2001", "internal", "PJSIP/2001&Custom:presence-2001,CustomPresence:2001"),
    ("3000", "internal", "PJSIP/3000"),  # no presence provider: not a user
]


#: These tests follow the writes and echoes of what people choose: a registered idle
#: phone's "available" (rule registered) would add a write of its own to each.
QUIET = RuleConfig(registered=None)


def build(store: MemoryStore, *args: Any, **kwargs: Any) -> PresenceService:
    """The engine with its Asterisk side attached, as the daemon wires it."""
    kwargs.setdefault("rules_config", QUIET)
    svc = PresenceService(store, *args, **kwargs)
    attach_nodes(svc, store, retry_clock=kwargs.get("retry_clock", time.monotonic))
    return svc


@pytest.fixture
async def store() -> AsyncIterator[MemoryStore]:
    s = MemoryStore()
    await s.open()
    yield s
    await s.close()


def hint_user(exten: str, context: str, hint: str) -> UserRecord:
    user = user_from_hint(exten, context, hint)
    assert user is not None
    return user


async def resync(svc: PresenceService, presences: dict[str, Presence],
                 hints: list[tuple[str, str, str]], devices: dict[str, str]) -> dict[str, int]:
    """What the bridge hands the engine after reading Asterisk's lists (translate.py)."""
    return await svc.nodes["asterisk"].resync(
        {uid: p for name, p in presences.items()
         if (uid := user_id_from_provider(name)) is not None},
        [u for u in (user_from_hint(*h) for h in hints) if u is not None],
        {device: parse_device_state(state) for device, state in devices.items()})


async def make_service(store: MemoryStore, *, synced: bool = True,
                       presences: dict[str, Presence] | None = None) -> PresenceService:
    svc = build(store, [UserRecord("9000", name="Config Only", origin="config")])
    await svc.start()
    if synced:
        await resync(svc, presences or {}, HINTS, {"PJSIP/2000": "NOT_INUSE"})
        svc.nodes["asterisk"].take_all()["presence"]
    return svc


async def test_users_come_from_hints_and_config(store: MemoryStore) -> None:
    svc = await make_service(store)
    assert svc.users.ids() == ["2000", "2001", "9000"]
    user = svc.require_user("2001")
    assert user.devices == ("PJSIP/2001", "Custom:presence-2001")
    assert (user.extension, user.context) == ("2001", "internal")
    with pytest.raises(UnknownUser, match="unknown user '3000'"):
        svc.require_user("3000")
    # Hint users are remembered for the next start, before any login.
    again = build(store)
    await again.start()
    assert "2000" in again.users
    await again.stop()
    await svc.stop()


async def test_set_then_own_echo_is_not_adopted(store: MemoryStore) -> None:
    svc = await make_service(store)
    view = await svc.set_manual("2000", DND, "api")
    assert (view.presence, view.source, view.actor, view.pending) == (DND, MANUAL, "api", True)
    assert svc.nodes["asterisk"].take_all()["presence"] == [("2000", DND)]
    svc.nodes["asterisk"].on_presence_change("2000", DND)  # the echo
    assert svc.nodes["asterisk"].adopted == 0 and svc.nodes["asterisk"].echoes == 1
    assert svc.view("2000").pending is False
    assert svc.nodes["asterisk"].take_all()["presence"] == []
    hist = await svc.history("2000", 10)
    assert [(h.new, h.source, h.actor) for h in hist] == [(DND, MANUAL, "api")]
    await svc.stop()


async def test_change_made_elsewhere_is_adopted_as_manual(store: MemoryStore) -> None:
    svc = await make_service(store)
    svc.nodes["asterisk"].on_presence_change("2001", AWAY)
    view = svc.view("2001")
    assert (view.presence, view.source, view.actor, view.pending) == (AWAY, MANUAL, ASTERISK, False)
    assert svc.nodes["asterisk"].take_all()["presence"] == []  # nothing to write back: Asterisk has it already
    hist = await svc.history("2001", 10)
    assert [(h.old, h.new, h.source) for h in hist] == [(None, AWAY, ASTERISK)]
    await svc.stop()


async def test_change_for_non_user_is_ignored(store: MemoryStore) -> None:
    svc = await make_service(store)
    svc.nodes["asterisk"].on_presence_change("nobody", AWAY)
    svc.nodes["asterisk"].on_presence_change("Other:2000", AWAY)
    assert svc.nodes["asterisk"].adopted == 0
    assert svc.view("2000").presence == NOT_SET
    await svc.stop()


async def test_race_external_change_lands_before_our_echo(store: MemoryStore) -> None:
    """We write DND; a phone sets AWAY; Asterisk applies AWAY then our DND.

    The phone's change is the newest input the daemon saw: it is adopted, our
    late echo is recognised as ours (not adopted), and AWAY is re-asserted once
    so that Asterisk and the daemon agree.
    """
    svc = await make_service(store)
    await svc.set_manual("2000", DND, "api")
    assert svc.nodes["asterisk"].take_all()["presence"] == [("2000", DND)]
    svc.nodes["asterisk"].on_presence_change("2000", AWAY)  # phone
    svc.nodes["asterisk"].on_presence_change("2000", DND)  # our echo, late
    assert svc.nodes["asterisk"].adopted == 1 and svc.nodes["asterisk"].echoes == 1
    assert svc.view("2000").presence == AWAY
    assert svc.nodes["asterisk"].take_all()["presence"] == [("2000", AWAY)]
    svc.nodes["asterisk"].on_presence_change("2000", AWAY)  # echo of the re-assert
    assert svc.nodes["asterisk"].echoes == 2 and svc.nodes["asterisk"].adopted == 1
    assert svc.nodes["asterisk"].take_all()["presence"] == [] and not svc.view("2000").pending
    await svc.stop()


async def test_race_external_change_after_our_echo(store: MemoryStore) -> None:
    svc = await make_service(store)
    await svc.set_manual("2000", DND, "api")
    svc.nodes["asterisk"].take_all()["presence"]
    svc.nodes["asterisk"].on_presence_change("2000", DND)  # echo
    svc.nodes["asterisk"].on_presence_change("2000", AWAY)  # phone, later
    assert svc.view("2000").presence == AWAY
    assert svc.nodes["asterisk"].take_all()["presence"] == []
    await svc.stop()


async def test_two_quick_writes_stale_echo_does_not_revert(store: MemoryStore) -> None:
    svc = await make_service(store)
    await svc.set_manual("2000", DND, "api")
    assert svc.nodes["asterisk"].take_all()["presence"] == [("2000", DND)]
    await svc.set_manual("2000", AWAY, "api")
    assert svc.nodes["asterisk"].take_all()["presence"] == [("2000", AWAY)]
    svc.nodes["asterisk"].on_presence_change("2000", DND)
    assert svc.view("2000").presence == AWAY and svc.nodes["asterisk"].adopted == 0
    assert svc.nodes["asterisk"].take_all()["presence"] == []  # AWAY is still in flight
    svc.nodes["asterisk"].on_presence_change("2000", AWAY)
    assert svc.nodes["asterisk"].adopted == 0 and not svc.view("2000").pending
    await svc.stop()


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_refused_write_is_retried_with_backoff(store: MemoryStore) -> None:
    clock = Clock()
    svc = build(store, retry_clock=clock)
    await svc.start()
    await resync(svc, {}, HINTS, {"PJSIP/2000": "NOT_INUSE"})
    svc.nodes["asterisk"].take_all()
    await svc.set_manual("2000", DND, "api")
    assert svc.nodes["asterisk"].take_all()["presence"] == [("2000", DND)]
    for attempt, delay in enumerate([1, 2, 4, 8, 16, 32, 60, 60], start=1):
        svc.nodes["asterisk"].outbox.refused(PRESENCE, PresenceWrite("2000", DND), "Variable not set")
        assert svc.view("2000").pending  # never silently dropped
        assert svc.nodes["asterisk"].outbox.next_retry_in() == delay
        svc.nodes["asterisk"].outbox.mark("2000")
        clock.now += delay - 0.01
        assert svc.nodes["asterisk"].take_all()["presence"] == [], f"attempt {attempt} retried early"
        clock.now += 0.01
        assert svc.nodes["asterisk"].take_all()["presence"] == [("2000", DND)], f"attempt {attempt} not retried"
        assert svc.nodes["asterisk"].outbox.next_retry_in() is None  # the retry is out: nothing due
        assert svc.nodes["asterisk"].outbox.presence.failures.get("2000").attempts == attempt  # type: ignore[union-attr]
    # Another value is tried at once; its echo clears the failure.
    svc.nodes["asterisk"].outbox.refused(PRESENCE, PresenceWrite("2000", DND), "Variable not set")
    await svc.set_manual("2000", AWAY, "api")
    assert svc.nodes["asterisk"].take_all()["presence"] == [("2000", AWAY)]
    svc.nodes["asterisk"].on_presence_change("2000", AWAY)
    assert "2000" not in svc.nodes["asterisk"].outbox.presence.failures and not svc.view("2000").pending
    # After a new login everything is tried at once.
    await svc.set_manual("2000", XA, "api")
    svc.nodes["asterisk"].take_all()
    svc.nodes["asterisk"].outbox.refused(PRESENCE, PresenceWrite("2000", XA), "Variable not set")
    svc.nodes["asterisk"].link_lost()
    await resync(svc, {"CustomPresence:2000": AWAY}, HINTS, {})
    assert ("2000", XA) in svc.nodes["asterisk"].take_all()["presence"]
    await svc.stop()


async def test_unwritable_text_from_asterisk_is_normalised(store: MemoryStore) -> None:
    svc = await make_service(store)
    dirty = Presence(State.AWAY, "a\tb", "line1\r\nX-Forged: 1" + "é" * 200)
    svc.nodes["asterisk"].on_presence_change("2000", dirty)
    got = svc.view("2000").presence
    assert got.subtype == "ab" and got.message.startswith("line1X-Forged: 1")
    assert len(got.message.encode()) <= 255 and got.message.endswith("é")
    # Asterisk holds the raw value: the clean one is written back, and can be.
    assert svc.nodes["asterisk"].take_all()["presence"] == [("2000", got)]
    entry = (await svc.history("2000", 1))[0]
    assert "normalised" in entry.reason and entry.source == ASTERISK
    await svc.stop()


async def test_presentities_that_are_not_users_are_not_stored(store: MemoryStore) -> None:
    svc = await make_service(store)
    for i in range(100):
        svc.nodes["asterisk"].on_presence_change(f"ghost{i}", DND)
    await svc.drain()
    assert "ghost1" not in await store.load_asterisk()
    assert "ghost1" not in svc.users
    await svc.stop()


async def test_users_follow_the_dialplan_with_a_cap(store: MemoryStore) -> None:
    svc = build(store, max_users=3)
    await svc.start()
    await resync(svc, {}, HINTS, {})
    assert svc.users.ids() == ["2000", "2001"]
    # A flood of hint events naming new presentities: capped.
    for i in range(50):
        await svc.nodes["asterisk"].on_hint(hint_user(f"9{i}", "x", f"PJSIP/9{i},CustomPresence:flood{i}"))
    assert len(svc.users.ids()) == 3 and svc.users.refused == 49
    # The next sync follows the dialplan: the flood and a removed hint are gone.
    await resync(svc, {}, HINTS[:1], {})
    assert svc.users.ids() == ["2000"]
    assert [u.id for u in await store.load_users()] == ["2000"]
    # An intercom hint for the same presentity is the same user, plain extension shown.
    await resync(svc, {}, [("*802000", "ext-local", "PJSIP/2000,CustomPresence:2000"),
                          ("2000", "ext-local", "PJSIP/2000,CustomPresence:2000")], {})
    assert svc.users.ids() == ["2000"] and svc.require_user("2000").extension == "2000"
    await svc.stop()


async def test_writes_wait_for_sync(store: MemoryStore) -> None:
    svc = await make_service(store, synced=False)
    svc.users.add_hint_user(UserRecord("2000"))
    view = await svc.set_manual("2000", DND, "api")
    assert view.pending
    assert svc.nodes["asterisk"].take_all()["presence"] == []  # link down: kept, not sent
    await resync(svc, {}, HINTS, {})
    assert svc.nodes["asterisk"].take_all()["presence"] == [("2000", DND)]
    await svc.stop()


@pytest.mark.parametrize(
    ("known", "desired", "now", "expect_presence", "expect_write", "expect_history_source"),
    [
        # Asterisk and astpresence agree: nothing happens.
        (DND, DND, DND, DND, False, None),
        # Changed in Asterisk while we were away: adopted.
        (DND, DND, AWAY, AWAY, False, ASTERISK),
        # Cleared in Asterisk while we were away: adopted as not_set.
        (DND, DND, NOT_SET, NOT_SET, False, ASTERISK),
        # Our change never reached Asterisk: written.
        (DND, AWAY, DND, AWAY, True, None),
        # Both changed: ours (acknowledged, timestamped) wins and is written.
        (DND, AWAY, XA, AWAY, True, None),
        # Our write landed before the link died, echo never seen: not written twice.
        (DND, AWAY, AWAY, AWAY, False, None),
    ],
    ids=["agree", "adopt", "adopt-clear", "write-pending", "conflict-ours-wins",
         "landed-not-twice"],
)
async def test_resync_table(
    store: MemoryStore, known: Presence, desired: Presence, now: Presence,
    expect_presence: Presence, expect_write: bool, expect_history_source: str | None,
) -> None:
    svc = await make_service(store, presences={"CustomPresence:2000": known})
    await svc.set_manual("2000", known, "api")
    if desired != known:
        svc.nodes["asterisk"].link_lost()
        await svc.set_manual("2000", desired, "api")
    before = len(await svc.history("2000", 100))
    svc.nodes["asterisk"].link_lost()
    await svc.stop()

    # A fresh service, as after a restart: everything comes from the store.
    svc = build(store)
    await svc.start()
    await resync(svc, {"CustomPresence:2000": now} if now != NOT_SET else {}, HINTS, {})
    assert svc.view("2000").presence == expect_presence
    writes = svc.nodes["asterisk"].take_all()["presence"]
    assert writes == ([("2000", expect_presence)] if expect_write else [])
    hist = await svc.history("2000", 100)
    new_rows = hist[: len(hist) - before]
    if expect_history_source is None:
        assert new_rows == []
    else:
        assert [(h.new, h.source) for h in new_rows] == [(now, expect_history_source)]
    await svc.stop()


async def test_events_published_and_buffered_for_resume(store: MemoryStore) -> None:
    svc = await make_service(store)
    sub = svc.events.subscribe()
    start = svc.events.seq
    await svc.set_manual("2000", DND, "api")
    await svc.set_manual("2000", Presence(State.DND, "meeting", "until 4"), "api")
    await svc.set_manual("2000", Presence(State.DND, "meeting", "until 4"), "api")  # no change
    first, second = sub.queue.get_nowait(), sub.queue.get_nowait()
    assert sub.queue.empty()
    assert (first.seq, second.seq) == (start + 1, start + 2)
    assert (first.old.presence.state, first.new.presence.state) == (State.NOT_SET, State.DND)
    assert (second.old.presence.message, second.new.presence.message) == ("until 3", "until 4")
    assert svc.events.events_since(start) == [first, second]
    assert svc.events.events_since(start + 2) == []
    assert svc.events.events_since(start + 99) is None  # from another run: snapshot needed
    await svc.stop()


@pytest.mark.parametrize(
    ("states", "expected"),
    [
        ((), "INVALID"),
        (("UNAVAILABLE", "INVALID"), "UNAVAILABLE"),
        (("UNAVAILABLE", "NOT_INUSE"), "NOT_INUSE"),  # the README's "helper looks idle"
        (("INUSE", "RINGING"), "RINGINUSE"),  # main/devicestate.c: ringing + in use
        (("RINGING", "ONHOLD"), "RINGINUSE"),
        (("BUSY", "RINGING"), "RINGINUSE"),
        (("RINGING", "NOT_INUSE"), "RINGING"),
        (("ONHOLD", "NOT_INUSE"), "ONHOLD"),
        (("INUSE", "BUSY"), "BUSY"),
    ],
)
def test_device_aggregation_like_asterisk(states: tuple[str, ...], expected: str) -> None:
    from astpresence.domain.model import DeviceState, aggregate_devices

    assert aggregate_devices(DeviceState(s) for s in states).value == expected


async def test_event_numbers_continue_across_restarts(store: MemoryStore) -> None:
    first = await make_service(store)
    await first.set_manual("2000", DND, "api")
    last = first.events.seq
    await first.stop()
    second = build(store)
    await second.start()
    await resync(second, {}, HINTS, {})
    await second.set_manual("2000", AWAY, "api")
    # A number from the earlier run is older than anything this run buffered:
    # the client gets a snapshot, never a silent gap.
    assert second.events.seq > last + 1
    assert second.events.events_since(last) is None
    await second.stop()


async def test_unroutable_presentities_are_not_users(store: MemoryStore) -> None:
    svc = build(store)
    await svc.start()
    await resync(svc, {}, [(f"{i}", "x", f"PJSIP/{i},CustomPresence:{name}")
                          for i, name in enumerate(["{a}", "a/b", "..", "a%b", "ok"])], {})
    assert svc.users.ids() == ["ok"]
    await svc.stop()
