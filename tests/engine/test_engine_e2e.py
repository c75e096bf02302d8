"""The presence engine against the fake Asterisk: device-driven presence, timed
sources, offline, missed calls, BLF mirror and queue pause (with restarts)."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from astpresence.asterisk.ami.frames import Message
from astpresence.asterisk.codec import decode_presence_value
from astpresence.domain.model import Presence, State
from astpresence.domain.rules import RuleConfig
from tests.support.e2e import RunningDaemon, barrier, cli, make_config, seed, until
from tests.conftest import Starter
from tests.support.fakeami import FakeAsterisk, QueueMember

#: A day within the 366-day limit for windows, whenever the tests run.
SOON = (datetime.now(timezone.utc) + timedelta(days=30)).date().isoformat()


def setvars(fake: FakeAsterisk, user: str) -> list[Presence]:
    return [decode_presence_value(m.get("Value") or "")
            for m in fake.setvars(f"PRESENCE_STATE(CustomPresence:{user})")]


def mirror_writes(fake: FakeAsterisk, user: str) -> list[str]:
    return [m.get("Value") or "" for m in fake.setvars(f"DEVICE_STATE(Custom:presence-{user})")]


def pauses(fake: FakeAsterisk) -> list[Message]:
    return [m for m in fake.actions if m.get("Action") == "QueuePause"]


def fake_value(fake: FakeAsterisk, user: str) -> Presence:
    state, subtype, message = fake.presences.get(user, ("not_set", "", ""))
    return Presence(State(state), subtype, message)


async def start(daemons: Starter, fake: FakeAsterisk, tmp_path: Path,
                **rules: Any) -> RunningDaemon:
    """The daemon on ``[rules]`` as given; a registered idle phone's "available"
    (rule registered) is off unless asked for: these tests count writes."""
    rules.setdefault("registered", False)
    return await daemons(make_config(fake, tmp_path / "p.db",
                                          rules=RuleConfig.from_mapping(rules)))


@pytest.fixture
async def fake(fake_ami: FakeAsterisk) -> FakeAsterisk:
    seed(fake_ami)
    fake_ami.devices.update({"PJSIP/2000": "NOT_INUSE", "PJSIP/2001": "NOT_INUSE"})
    return fake_ami


async def test_on_the_phone_and_back_exactly(
        fake: FakeAsterisk, tmp_path: Path, daemons: Starter) -> None:
    d = await start(daemons, fake, tmp_path)
    before = Presence(State.AVAILABLE, "desk", "Ask me, anything: «ok»")
    await d.service.set_manual("2000", before, "api")
    await until(lambda: fake_value(fake, "2000") == before)
    await fake.external_device_change("PJSIP/2000", "INUSE")
    # Busy, not gone: dnd / on-the-phone, the chosen message kept.
    on_phone = Presence(State.DND, "on-the-phone", before.message)
    await until(lambda: fake_value(fake, "2000") == on_phone, what="on-the-phone")
    view = d.service.view("2000")
    assert (view.source, view.rule) == ("device", "on-the-phone")
    assert (view.chosen, view.activity) == (before, "on-the-phone")
    await fake.external_device_change("PJSIP/2000", "NOT_INUSE")
    await until(lambda: fake_value(fake, "2000") == before, what="previous presence")
    assert setvars(fake, "2000") == [before, on_phone, before]  # each written once
    assert d.service.nodes["asterisk"].adopted == 0
    assert (d.service.view("2000").chosen, d.service.view("2000").activity) == (before, "")
    hist = await d.service.history("2000", 10)
    assert [h.reason.split(":")[0] for h in hist] == ["manual", "on-the-phone", "manual"]
    assert hist[1].source == "device" and "PJSIP/2000 INUSE" in hist[1].reason
    assert [h.activity for h in hist] == ["", "on-the-phone", ""]


async def test_chosen_dnd_is_never_overridden_by_a_call(
        fake: FakeAsterisk, tmp_path: Path, daemons: Starter) -> None:
    d = await start(daemons, fake, tmp_path)
    await fake.external_presence_change("2000", "dnd", "", "focus")  # phone feature code
    await until(lambda: d.service.view("2000").presence.state == State.DND)
    await fake.external_device_change("PJSIP/2000", "RINGING")
    await fake.external_device_change("PJSIP/2000", "INUSE")
    await barrier(d, fake)
    assert setvars(fake, "2000") == []
    assert d.service.view("2000").rule == "manual-protected"


async def test_offline_after_devices_unavailable(
        fake: FakeAsterisk, tmp_path: Path, daemons: Starter) -> None:
    d = await start(daemons, fake, tmp_path, offline_after=0.3)
    await fake.external_device_change("PJSIP/2001", "UNAVAILABLE")
    await barrier(d, fake)
    assert setvars(fake, "2001") == []  # not yet: the threshold is 0.3 s
    offline = Presence(State.UNAVAILABLE, "offline")
    await until(lambda: fake_value(fake, "2001") == offline, what="offline overlay")
    await fake.external_device_change("PJSIP/2001", "NOT_INUSE")
    await until(lambda: fake_value(fake, "2001").state == State.NOT_SET)
    assert setvars(fake, "2001")[-1].state == State.NOT_SET


async def test_timed_source_through_cli_applies_then_expires(
        fake: FakeAsterisk, tmp_path: Path, daemons: Starter) -> None:
    d = await start(daemons, fake, tmp_path)
    await d.service.set_manual("2001", Presence(State.AVAILABLE, "", "here"), "api")
    await until(lambda: fake_value(fake, "2001").state == State.AVAILABLE)
    res = await cli(d.url, "source", "set", "2001", "calendar", "away",
                    "--message", "Weekly sync", "--ttl", "4s")
    assert res.code == 0, res.err
    assert "effective presence away (timed:calendar)" in res.out
    meeting = Presence(State.AWAY, "", "Weekly sync")
    await until(lambda: fake_value(fake, "2001") == meeting)
    listed = json.loads((await cli(d.url, "source", "list", "2001", "--json")).out)
    assert [s["source"] for s in listed["sources"]] == ["calendar", "manual"]
    # It disappears by itself at its end, and the manual presence returns. (4 s:
    # each CLI call is a new Python process, over a second on a slow machine.)
    await until(lambda: fake_value(fake, "2001") == Presence(State.AVAILABLE, "", "here"),
                timeout=10, what="expiry")
    assert d.service.sources("2001")[0].source == "manual"
    assert len(d.service.sources("2001")) == 1  # nothing stale remains


async def test_manual_after_start_beats_timed_entry(
        fake: FakeAsterisk, tmp_path: Path, daemons: Starter) -> None:
    d = await start(daemons, fake, tmp_path)
    async with aiohttp.ClientSession(headers=d.auth) as http:
        start_at = (datetime.now(timezone.utc) - timedelta(minutes=5)).isoformat()
        end_at = (datetime.now(timezone.utc) + timedelta(hours=1)).isoformat()
        async with http.put(d.url + "/v1/presence/2000/sources/calendar",
                            json={"state": "away", "start": start_at, "end": end_at}) as r:
            assert r.status == 200, await r.text()
        assert d.service.view("2000").rule == "timed:calendar"
        await d.service.set_manual("2000", Presence(State.CHAT), "api")
        assert d.service.view("2000").presence.state == State.CHAT
        async with http.delete(d.url + "/v1/presence/2000/sources/calendar") as r:
            assert r.status == 200
        async with http.delete(d.url + "/v1/presence/2000/sources/calendar") as r:
            assert r.status == 404 and "no source 'calendar'" in (await r.json())["error"]


@pytest.mark.parametrize(
    ("name", "body", "message"),
    [
        ("calendar", {"state": "away", "start": f"{SOON}T10:00:00+00:00",
                      "end": f"{SOON}T09:00:00+00:00"}, "end must be after start"),
        ("calendar", {"state": "away", "end": "2020-01-01T09:00:00+00:00"}, "already over"),
        ("calendar", {"state": "away", "end": f"{SOON}T09:00:00"}, "needs a time zone"),
        ("calendar", {"state": "away", "end": "tomorrow"}, "not an ISO 8601"),
        ("calendar", {"state": "away", "ttl": -5}, "ttl must be a number of seconds"),
        ("calendar", {"state": "away", "ttl": 5, "end": f"{SOON}T09:00:00Z"}, "not both"),
        # Far ends: refused like a ttl over 366 days, never a 500.
        ("calendar", {"state": "away", "end": "9999-12-31T23:59:59-01:00"}, "out of range"),
        ("calendar", {"state": "away", "end": "9999-12-31T00:00:00+01:00"}, "366 days ahead"),
        ("calendar", {"state": "away", "start": "0001-01-01T00:00:00+01:00"}, "out of range"),
        ("calendar", {"state": "away", "ttl": 1e308}, "at most 31622400"),
        ("calendar", {"state": "away", "ttl": 10**400}, "at most 31622400"),
        ("calendar", {"state": "meeting"}, "invalid state 'meeting'"),
        ("calendar", {"state": "away", "colour": 1}, "unknown field(s) colour"),
        ("manual", {"state": "away"}, "is reserved"),
        ("Bad Name", {"state": "away"}, "invalid source name"),
    ],
)
async def test_source_bad_input(fake: FakeAsterisk, tmp_path: Path, name: str,
                                body: dict[str, Any], message: str, daemons: Starter) -> None:
    d = await start(daemons, fake, tmp_path)
    async with aiohttp.ClientSession(headers=d.auth) as http:
        async with http.put(f"{d.url}/v1/presence/2000/sources/{name}", json=body) as r:
            assert r.status == 400
            assert message in (await r.json())["error"]
        async with http.put(f"{d.url}/v1/presence/nobody/sources/calendar",
                            json={"state": "away"}) as r:
            assert r.status == 404
    assert d.service.sources("2000") == []
    assert setvars(fake, "2000") == []


async def test_cli_source_errors(fake: FakeAsterisk, tmp_path: Path, daemons: Starter) -> None:
    d = await start(daemons, fake, tmp_path)
    res = await cli(d.url, "source", "set", "2000", "calendar", "away", "--ttl", "soon")
    assert res.code == 1 and "invalid duration 'soon'" in res.err
    res = await cli(d.url, "source", "set", "2000", "calendar", "away", "--until", "25:99")
    assert res.code == 1 and "invalid time" in res.err
    res = await cli(d.url, "source", "clear", "2000", "calendar")
    assert res.code == 1 and "no source 'calendar'" in res.err


async def test_missed_calls_auto_away_and_cleared_by_answer(
        fake: FakeAsterisk, tmp_path: Path, daemons: Starter) -> None:
    d = await start(daemons, fake, tmp_path, missed_calls_away=2, on_phone=False)
    for _ in range(2):
        await fake.external_device_change("PJSIP/2000", "RINGING")
        await fake.external_device_change("PJSIP/2000", "NOT_INUSE")
    auto = Presence(State.AWAY, "missed-calls")
    await until(lambda: fake_value(fake, "2000") == auto, what="auto-away")
    assert d.service.view("2000").rule == "auto:missed-calls"
    # An answered call clears it.
    for state in ("RINGING", "INUSE", "NOT_INUSE"):
        await fake.external_device_change("PJSIP/2000", state)
    await until(lambda: fake_value(fake, "2000").state == State.NOT_SET, what="cleared")
    # One miss is not enough again.
    await fake.external_device_change("PJSIP/2000", "RINGING")
    await fake.external_device_change("PJSIP/2000", "NOT_INUSE")
    await barrier(d, fake)
    assert d.service.view("2000").rule != "auto:missed-calls"


async def test_blf_mirror_device(fake: FakeAsterisk, tmp_path: Path, daemons: Starter) -> None:
    d = await start(daemons, fake, tmp_path, mirror=True)
    # After sync every user's mirror is set to the neutral INVALID (2000 had none).
    await until(lambda: mirror_writes(fake, "2000") == ["INVALID"], what="initial mirror")
    assert mirror_writes(fake, "2001") == []  # already INVALID in Asterisk
    # An unavailable (offline) person never lights a key busy.
    expected = {"dnd": "BUSY", "unavailable": "UNAVAILABLE", "away": "ONHOLD", "xa": "ONHOLD",
                "available": "INVALID", "chat": "INVALID", "not_set": "INVALID"}
    for state, device_state in expected.items():
        await d.service.set_manual("2001", Presence(State(state)), "api")
        await until(lambda: fake.devices.get("Custom:presence-2001") == device_state,
                    what=f"mirror of {state}")
    # The mirror's own DeviceStateChange is never an input: BUSY is not a call.
    await d.service.set_manual("2001", Presence(State.DND), "api")
    await until(lambda: fake.devices.get("Custom:presence-2001") == "BUSY")
    await d.service.set_manual("2001", Presence(State.AVAILABLE), "api")
    await until(lambda: fake.devices.get("Custom:presence-2001") == "INVALID")
    await barrier(d, fake)
    assert d.service.view("2001").presence == Presence(State.AVAILABLE)
    # A call adds nothing to the mirror (the phone's own device shows it); what the
    # person chose still does.
    await fake.external_device_change("PJSIP/2001", "INUSE")
    await until(lambda: d.service.view("2001").activity == "on-the-phone", what="the call")
    await d.service.set_manual("2001", Presence(State.AWAY), "api")
    await until(lambda: fake.devices.get("Custom:presence-2001") == "ONHOLD", what="away")
    await d.service.set_manual("2001", Presence(State.AVAILABLE), "api")
    await barrier(d, fake)
    assert fake.devices.get("Custom:presence-2001") == "INVALID"
    assert fake_value(fake, "2001").subtype == "on-the-phone"  # the presence shows the call
    await fake.external_device_change("PJSIP/2001", "NOT_INUSE")
    res = await cli(d.url, "dialplan", "hints")
    assert res.code == 0
    assert "exten => 2000,hint,PJSIP/2000&Custom:presence-2000,CustomPresence:2000" in res.out
    assert ("exten => 2001,hint,PJSIP/2001&Custom:presence-2001,CustomPresence:2001"
            in res.out)


def alice(fake: FakeAsterisk, **kw: Any) -> QueueMember:
    member = QueueMember("support", "Alice", "PJSIP/2000",
                         state_interface="hint:2000@internal", **kw)
    fake.queue_members[:] = [member]
    return member


async def test_queue_pause_follows_presence(
        fake: FakeAsterisk, tmp_path: Path, daemons: Starter) -> None:
    member = alice(fake)
    d = await start(daemons, fake, tmp_path, queue_pause=True)
    await d.service.set_manual("2000", Presence(State.DND), "api")
    await until(lambda: member.paused, what="pause")
    assert member.paused_reason == "astpresence:dnd"
    await d.service.set_manual("2000", Presence(State.AWAY), "api")
    await until(lambda: member.paused_reason == "astpresence:away", what="reason refresh")
    await d.service.set_manual("2000", Presence(State.AVAILABLE), "api")
    await until(lambda: not member.paused, what="unpause")
    sent = [(m.get("Paused"), m.get("Reason")) for m in pauses(fake)]
    assert sent == [("true", "astpresence:dnd"), ("true", "astpresence:away"),
                    ("false", None)]


async def test_queue_member_paused_by_someone_else_is_left_alone(
    fake: FakeAsterisk, tmp_path: Path
, daemons: Starter) -> None:
    member = alice(fake, paused=True, paused_reason="lunch")
    d = await start(daemons, fake, tmp_path, queue_pause=True)
    await d.service.set_manual("2000", Presence(State.DND), "api")
    await d.service.set_manual("2000", Presence(State.AVAILABLE), "api")
    await until(lambda: fake_value(fake, "2000").state == State.AVAILABLE)
    await barrier(d, fake)
    assert pauses(fake) == []
    assert (member.paused, member.paused_reason) == (True, "lunch")


async def test_queue_reconciled_after_daemon_was_down(fake: FakeAsterisk, tmp_path: Path,
                                                      daemons: Starter) -> None:
    """Paused for dnd, daemon stops, the phone sets available: resumed on restart."""
    member = alice(fake)
    cfg = make_config(fake, tmp_path / "p.db", rules=RuleConfig(queue_pause=True))
    first = await daemons(cfg)
    await first.service.set_manual("2000", Presence(State.DND), "api")
    await until(lambda: member.paused)
    await first.stop()
    await fake.external_presence_change("2000", "available")
    assert member.paused  # nobody told the queue
    second = await daemons(cfg)
    await until(lambda: not member.paused, what="unpause after restart")
    assert second.service.view("2000").presence.state == State.AVAILABLE


async def test_fake_asterisk_restart_in_the_middle(
        fake: FakeAsterisk, tmp_path: Path, daemons: Starter) -> None:
    """Asterisk restarts while changes are pending: presence, mirror and queue converge."""
    member = alice(fake)
    d = await start(daemons, fake, tmp_path, queue_pause=True, mirror=True)
    await until(lambda: fake.devices.get("Custom:presence-2000") == "INVALID")
    await fake.stop()
    await until(lambda: d.daemon.bridge.status.state == "disconnected")
    await d.service.set_manual("2000", Presence(State.XA, "", "gone fishing"), "api")
    await fake.start()
    await d.wait_synced(timeout=10)
    await until(lambda: fake_value(fake, "2000") == Presence(State.XA, "", "gone fishing"))
    await until(lambda: fake.devices.get("Custom:presence-2000") == "ONHOLD")
    await until(lambda: member.paused and member.paused_reason == "astpresence:xa")
    await fake.restart()  # a second time, mid-stream
    await d.wait_synced(timeout=10)
    await d.service.set_manual("2000", Presence(State.AVAILABLE), "api")
    await until(lambda: not member.paused and
                fake.devices.get("Custom:presence-2000") == "INVALID")
    assert len([p for p in setvars(fake, "2000") if p.state == State.XA]) == 1


async def test_failed_queue_pause_does_not_block_presence(
        fake: FakeAsterisk, tmp_path: Path, daemons: Starter) -> None:
    # A member whose interface Asterisk no longer knows: QueuePause fails.
    fake.queue_members[:] = [QueueMember("support", "Ghost", "PJSIP/2000",
                                         state_interface="hint:2000@internal")]
    d = await start(daemons, fake, tmp_path, queue_pause=True)
    fake.queue_members.clear()  # gone in Asterisk, still in our view
    await d.service.set_manual("2000", Presence(State.DND), "api")
    await until(lambda: fake_value(fake, "2000").state == State.DND)
    await until(lambda: len(pauses(fake)) == 1)
    await d.service.set_manual("2000", Presence(State.AWAY), "api")
    await until(lambda: fake_value(fake, "2000").state == State.AWAY)
    # A new value is tried at once; a refused one again after 1 s, 2 s...
    await until(lambda: len(pauses(fake)) == 2)
    failures = d.service.nodes["asterisk"].outbox.tracker("queue_pause").failures
    key = ("support", "PJSIP/2000")
    await until(lambda: key in failures
                and failures.get(key).attempts == 1)  # type: ignore[union-attr]
    status = await cli(d.url, "status", "--json")
    failing = json.loads(status.out)["write_failures"]
    assert failing["queue_pause"] == 1 and failing["presence"] == 0
    await until(lambda: len(pauses(fake)) == 3, timeout=3, what="the retry")
    await until(lambda: failures.get(key).attempts == 2)  # type: ignore[union-attr]
    # Back in Asterisk: the next retry goes through and the failure is gone.
    fake.queue_members[:] = [QueueMember("support", "Ghost", "PJSIP/2000",
                                         state_interface="hint:2000@internal")]
    await until(lambda: key not in failures, timeout=5,
                what="the retry after 2 s")
    assert len(pauses(fake)) == 4


async def test_text_astpresence_cannot_write_does_not_stick_after_a_call(
        fake: FakeAsterisk, tmp_path: Path, daemons: Starter) -> None:
    d = await start(daemons, fake, tmp_path)
    # Another AMI client stores what astpresence would refuse to write.
    await fake.external_presence_change("2000", "available", "desk\t", "back\r\nsoon " + "x" * 300)
    await until(lambda: d.service.view("2000").presence.state == State.AVAILABLE)
    adopted = d.service.view("2000").presence
    assert adopted.subtype == "desk" and adopted.message.startswith("backsoon x")
    assert len(adopted.message.encode()) == 255
    # The clean value replaces the raw one in Asterisk.
    await until(lambda: fake_value(fake, "2000") == adopted, what="normalised write")
    # A call overlays it; when the call ends the person's presence comes back.
    await fake.external_device_change("PJSIP/2000", "INUSE")
    await until(lambda: fake_value(fake, "2000").subtype == "on-the-phone")
    await fake.external_device_change("PJSIP/2000", "NOT_INUSE")
    await until(lambda: fake_value(fake, "2000") == adopted, what="presence back after call")
    assert not d.service.view("2000").pending
    assert len(d.service.nodes["asterisk"].outbox.presence.failures) == 0
    hist = await d.service.history("2000", 10)
    assert any("normalised" in h.reason for h in hist)
