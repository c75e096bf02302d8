"""What Asterisk (or anything on the AMI link) sends cannot grow the daemon without bound."""

from __future__ import annotations

from pathlib import Path

import aiohttp
import pytest

from tests.conftest import Starter
from tests.support.e2e import make_config, seed, until
from tests.support.fakeami import FakeAsterisk


async def test_made_up_events_and_presentities_grow_nothing(
        fake_ami: FakeAsterisk, tmp_path: Path, daemons: Starter) -> None:
    seed(fake_ami)
    d = await daemons(make_config(fake_ami, tmp_path / "p.db"))
    for i in range(300):
        await fake_ami.broadcast_event([("Event", f"Made-up-{i}"), ("X", "1")])
        await fake_ami.broadcast_event([
            ("Event", "PresenceStatus"), ("Exten", f"9{i}"), ("Context", "x"),
            ("Hint", f"PJSIP/9{i},CustomPresence:flood{i}"), ("Status", "dnd"),
            ("Subtype", ""), ("Message", "")])
        await fake_ami.broadcast_event([
            ("Event", "PresenceStateChange"), ("Presentity", f"CustomPresence:ghost{i}"),
            ("Status", "dnd"), ("Subtype", ""), ("Message", "")])
    # A barrier: one more event after the flood, handled in wire order, then the
    # store drained.
    await fake_ami.broadcast_event([("Event", "PresenceStateChange"),
                                    ("Presentity", "CustomPresence:2000"),
                                    ("Status", "away"), ("Subtype", ""), ("Message", "")])
    await until(lambda: d.service.view("2000").presence.state.value == "away")
    await d.service.drain()
    async with aiohttp.ClientSession() as http:
        async with http.get(d.url + "/metrics") as resp:
            text = await resp.text()
    assert "Made-up" not in text
    other = [ln for ln in text.splitlines()
             if ln.startswith('astpresence_ami_events_total{type="other"}')]
    assert other and float(other[0].split()[-1]) >= 300
    assert "ghost" not in str(await d.daemon.store.load_asterisk())
    # Users named by live hint events (capped by max_users, see test_service) last
    # only until the next sync, which follows the dialplan.
    assert len(d.service.users.ids()) == 302
    await fake_ami.drop_clients()
    await until(lambda: d.service.users.ids() == ["2000", "2001"], timeout=10,
                what="users back to the dialplan's")
    assert [u.id for u in await d.daemon.store.load_users()] == ["2000", "2001"]


async def test_made_up_devices_and_queue_members_are_bounded(
        fake_ami: FakeAsterisk, tmp_path: Path, daemons: Starter,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("astpresence.engine.devices.MAX_DEVICES", 50)
    monkeypatch.setattr("astpresence.asterisk.queues.MAX_MEMBERS", 20)
    seed(fake_ami)
    d = await daemons(make_config(fake_ami, tmp_path / "p.db"))
    for i in range(200):
        await fake_ami.broadcast_event([("Event", "DeviceStateChange"),
                                        ("Device", f"Custom:made-up-{i}"), ("State", "INUSE")])
        await fake_ami.broadcast_event([
            ("Event", "QueueMemberAdded"), ("Queue", f"q{i}"), ("Interface", f"Local/{i}"),
            ("Paused", "0"), ("PausedReason", "")])
    # The users' own devices are still followed once the bound is reached.
    await fake_ami.external_device_change("PJSIP/2000", "INUSE")
    await until(lambda: d.service.view("2000").rule == "on-the-phone", what="still followed")
    assert len(d.service.devices.states) <= 50
    assert len(d.service.nodes["asterisk"].queue_members) <= 20
