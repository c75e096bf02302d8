"""Several Asterisk servers ([[asterisk]]): one daemon, one AMI link per server.

Three fake Asterisk servers, each a real TCP server with its own dialplan,
devices, presence and queues. What one server says is adopted and written to
the others; a server that is down holds up none of them and is brought up to
date when it returns.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from astpresence.app.settings import AUTO_ANSWERS_MS, AUTO_BATCH_MS
from astpresence.asterisk.codec import decode_presence_value
from astpresence.domain.model import Presence, State
from astpresence.domain.rules import RuleConfig
from tests.conftest import Starter
from tests.support.api import Stream
from tests.support.e2e import RunningDaemon, barrier_all, cli, nodes_config, until
from tests.support.fakeami import FakeAsterisk, Hint, QueueMember

NAMES = ("a", "b", "c")


def hint(user: str, *devices: str) -> Hint:
    return Hint(user, "internal", list(devices) or [f"PJSIP/{user}"], f"CustomPresence:{user}")


@pytest.fixture
async def fakes() -> AsyncIterator[dict[str, FakeAsterisk]]:
    """Three servers: 2000 has a phone on a, 2001 on b; c has hints for both."""
    servers = {name: FakeAsterisk() for name in NAMES}
    servers["a"].hints[:] = [hint("2000")]
    servers["a"].devices.update({"PJSIP/2000": "NOT_INUSE"})
    servers["b"].hints[:] = [hint("2001"), hint("2000", "PJSIP/2000b")]
    servers["b"].devices.update({"PJSIP/2001": "NOT_INUSE", "PJSIP/2000b": "UNAVAILABLE"})
    servers["c"].hints[:] = [hint("2000"), hint("2001")]
    for fake in servers.values():
        await fake.start()
    yield servers
    for fake in servers.values():
        await fake.stop()


async def start(daemons: Starter, fakes: dict[str, FakeAsterisk], tmp_path: Path,
                **rules: Any) -> RunningDaemon:
    rules.setdefault("registered", False)  # these tests count writes
    d = await daemons(nodes_config(fakes, tmp_path / "p.db",
                                   rules=RuleConfig.from_mapping(rules)), wait=False)
    # every link synced, its contact cards read too (its "synced" link event sent)
    await until(lambda: d.service.synced and all(
        b.status.state == "synced" for b in d.daemon.bridges), timeout=10,
        what="every server synced")
    return d


def value(fake: FakeAsterisk, user: str) -> Presence:
    state, subtype, message = fake.presences.get(user, ("not_set", "", ""))
    return Presence(State(state), subtype, message)


def setvars(fake: FakeAsterisk, user: str) -> list[Presence]:
    return [decode_presence_value(m.get("Value") or "")
            for m in fake.setvars(f"PRESENCE_STATE(CustomPresence:{user})")]


async def everywhere(fakes: dict[str, FakeAsterisk], user: str, want: Presence,
                     what: str = "") -> None:
    await until(lambda: all(value(f, user) == want for f in fakes.values()),
                what=what or f"{user} = {want.state.value} on every server")


async def test_users_are_the_union_of_every_servers_hints(
        fakes: dict[str, FakeAsterisk], tmp_path: Path, daemons: Starter) -> None:
    d = await start(daemons, fakes, tmp_path)
    assert d.service.users.ids() == ["2000", "2001"]
    # 2000's phones on a and b (and c's PJSIP/2000, the same name as a's) are one user's.
    assert d.service.users.get("2000").devices == ("PJSIP/2000", "PJSIP/2000b")
    status = json.loads((await cli(d.url, "status", "--json")).out)
    assert [(n["name"], n["state"]) for n in status["asterisk"]] == [
        ("a", "synced"), ("b", "synced"), ("c", "synced")]
    assert status["ami"]["name"] == "a" and status["synced"] is True
    human = (await cli(d.url, "status")).out
    for name, fake in fakes.items():
        assert f"AMI link {name}:" in human and f":{fake.port})" in human


async def test_a_change_through_the_api_is_written_to_every_server_once(
        fakes: dict[str, FakeAsterisk], tmp_path: Path, daemons: Starter) -> None:
    d = await start(daemons, fakes, tmp_path)
    dnd = Presence(State.DND, "meeting", "until 3")
    async with aiohttp.ClientSession(headers=d.auth) as http:
        async with http.put(f"{d.url}/v1/presence/2000", json=dnd.as_dict()) as resp:
            assert resp.status == 200, await resp.text()
    await everywhere(fakes, "2000", dnd)
    await barrier_all(d, list(fakes.values()))
    for fake in fakes.values():
        assert setvars(fake, "2000") == [dnd]  # once each, no echo written back
    assert next(iter(d.service.nodes.values())).adopted == 0
    assert not d.service.view("2000").pending


async def test_a_change_made_on_one_server_is_adopted_and_written_to_the_others(
        fakes: dict[str, FakeAsterisk], tmp_path: Path, daemons: Starter) -> None:
    d = await start(daemons, fakes, tmp_path)
    away = Presence(State.AWAY, "lunch", "back at 2")
    await fakes["b"].external_presence_change("2000", "away", "lunch", "back at 2")
    await everywhere(fakes, "2000", away)
    await barrier_all(d, list(fakes.values()))
    assert setvars(fakes["b"], "2000") == []  # b has it already: nothing sent back
    assert setvars(fakes["a"], "2000") == [away] and setvars(fakes["c"], "2000") == [away]
    view = d.service.view("2000")
    assert (view.presence, view.source) == (away, "manual")
    assert d.service.nodes["b"].adopted == 1
    assert d.service.nodes["a"].adopted == d.service.nodes["c"].adopted == 0
    (entry, *_) = await d.service.history("2000", 5)
    assert entry.source == "asterisk" and "changed in Asterisk" in entry.reason
    # several servers: read in batches, the answers to the writes on a and c too
    reads = d.daemon.bridges[0]._reads
    assert reads.answer_hold == AUTO_ANSWERS_MS / 1000
    assert reads.gate is not None and reads.gate.hold == AUTO_BATCH_MS / 1000
    assert all(b._client is not None for b in d.daemon.bridges)
    # each link holds what answers its Setvars (tests/asterisk/ami/test_answer_hold.py)
    assert {b._client._answer_hold for b in d.daemon.bridges  # type: ignore[union-attr]
            } == {AUTO_ANSWERS_MS / 1000}


async def test_with_reads_batched_a_burst_on_one_server_is_adopted_and_written_whole(
        fakes: dict[str, FakeAsterisk], tmp_path: Path, daemons: Starter) -> None:
    """[ami_reads] batch_ms: the links are read in batches; every change still counts."""
    cfg = nodes_config(fakes, tmp_path / "p.db", rules=RuleConfig.from_mapping(
        {"registered": False}))
    d = await daemons(replace(cfg, ami_read_batch_ms=20), wait=False)
    await until(lambda: d.service.synced, timeout=10, what="every server synced")
    states = ["away", "xa", "dnd", "chat", "away", "xa", "dnd", "chat", "away", "xa"]
    for state in states:  # each its own write on b: most arrive while the gate is closed
        await fakes["b"].external_presence_change("2001", state, "", "")
    last = Presence(State(states[-1]))
    await everywhere(fakes, "2001", last)
    await barrier_all(d, list(fakes.values()))
    assert d.service.nodes["b"].adopted == len(states)
    assert setvars(fakes["b"], "2001") == []  # b made them: nothing written back
    assert setvars(fakes["a"], "2001")[-1] == last
    assert d.daemon.bridges[0]._reads.gate is not None
    assert d.daemon.bridges[0]._reads.gate.closes > 0
    assert [h.new.state.value for h in reversed(await d.service.history("2001", 20))] == states


async def test_changes_on_two_servers_at_once_converge(
        fakes: dict[str, FakeAsterisk], tmp_path: Path, daemons: Starter) -> None:
    d = await start(daemons, fakes, tmp_path)
    for round_ in range(5):
        # Both before the daemon reads either: each server's change crosses the
        # other's on the way.
        await fakes["a"].external_presence_change("2001", "xa", f"a{round_}")
        await fakes["b"].external_presence_change("2001", "chat", f"b{round_}")
    await barrier_all(d, list(fakes.values()))
    await barrier_all(d, list(fakes.values()))
    final = d.service.view("2001").presence
    assert final in (Presence(State.XA, "a4"), Presence(State.CHAT, "b4"))
    assert [value(f, "2001") for f in fakes.values()] == [final] * 3
    # Without fighting: each server got each adopted value at most once, plus
    # one re-assertion when our write crossed its own change.
    for fake in fakes.values():
        assert len(setvars(fake, "2001")) <= 11


async def test_a_call_on_any_server_overlays_the_presence_everywhere(
        fakes: dict[str, FakeAsterisk], tmp_path: Path, daemons: Starter) -> None:
    d = await start(daemons, fakes, tmp_path)
    await d.service.set_manual("2000", Presence(State.AVAILABLE), "api")
    await everywhere(fakes, "2000", Presence(State.AVAILABLE))
    # 2000's second phone is registered to b only; c knows PJSIP/2000 as unavailable.
    await fakes["c"].external_device_change("PJSIP/2000", "UNAVAILABLE")
    await fakes["b"].external_device_change("PJSIP/2000b", "INUSE")
    on_phone = Presence(State.DND, "on-the-phone")
    await everywhere(fakes, "2000", on_phone, "the call on b shown everywhere")
    await fakes["b"].external_device_change("PJSIP/2000b", "NOT_INUSE")
    await everywhere(fakes, "2000", Presence(State.AVAILABLE), "back after the call")
    # The same device name on two servers: the busiest counts, as in a hint.
    await fakes["c"].external_device_change("PJSIP/2000", "INUSE")
    await everywhere(fakes, "2000", on_phone, "the call on c")
    await fakes["a"].external_device_change("PJSIP/2000", "NOT_INUSE")
    await barrier_all(d, list(fakes.values()))
    assert d.service.devices.states["PJSIP/2000"].value == "INUSE"
    await fakes["c"].external_device_change("PJSIP/2000", "NOT_INUSE")
    await everywhere(fakes, "2000", Presence(State.AVAILABLE))


async def test_a_server_that_is_down_holds_up_nobody_and_catches_up(
        fakes: dict[str, FakeAsterisk], tmp_path: Path, daemons: Starter) -> None:
    d = await start(daemons, fakes, tmp_path)
    await fakes["c"].stop()
    await until(lambda: d.service.nodes["c"].outbox.synced is False, what="c down")
    xa = Presence(State.XA, "holiday")
    await d.service.set_manual("2001", xa, "api")
    await until(lambda: value(fakes["a"], "2001") == xa and value(fakes["b"], "2001") == xa,
                what="a and b written while c is down")
    assert d.service.view("2001").pending  # c has not got it
    status = json.loads((await cli(d.url, "status", "--json")).out)
    states = {n["name"]: n["state"] for n in status["asterisk"]}
    assert states["a"] == states["b"] == "synced" and states["c"] != "synced"
    assert status["synced"] is False
    async with aiohttp.ClientSession() as http:
        async with http.get(d.url + "/metrics") as resp:
            metrics = await resp.text()
    assert 'astpresence_ami_up{node="a"} 1.0' in metrics
    assert 'astpresence_ami_up{node="c"} 0.0' in metrics
    await fakes["c"].restart()
    await until(lambda: value(fakes["c"], "2001") == xa, timeout=10, what="c caught up")
    await until(lambda: not d.service.view("2001").pending, what="nothing pending")


async def test_event_streams_say_which_server_went_down(
        fakes: dict[str, FakeAsterisk], tmp_path: Path, daemons: Starter) -> None:
    d = await start(daemons, fakes, tmp_path)
    s = await Stream.open(d, {"token": d.token, "subscribe": ["*"]})
    try:
        hello = await s.next()
        assert hello["link"]["state"] == "synced"
        assert sorted((x["node"], x["state"]) for x in hello["links"]) == [
            ("a", "synced"), ("b", "synced"), ("c", "synced")]
        await fakes["b"].stop()
        event = await s.next()
        assert (event["type"], event["node"], event["state"]) == ("link", "b", "down")
        assert event["asterisk"] == f"127.0.0.1:{fakes['b'].port}"
    finally:
        await s.close()
    s = await Stream.open(d, {"token": d.token, "subscribe": ["*"]})
    try:
        hello = await s.next()
        assert (hello["link"]["node"], hello["link"]["state"]) == ("b", "down")
    finally:
        await s.close()


async def test_a_change_made_on_a_server_while_the_daemon_was_down(
        fakes: dict[str, FakeAsterisk], tmp_path: Path, daemons: Starter) -> None:
    d = await start(daemons, fakes, tmp_path)
    await d.service.set_manual("2000", Presence(State.AVAILABLE), "api")
    await everywhere(fakes, "2000", Presence(State.AVAILABLE))
    await barrier_all(d, list(fakes.values()))
    await d.stop()
    # A feature code dialled on c while astpresence is away.
    await fakes["c"].external_presence_change("2000", "dnd")
    d = await start(daemons, fakes, tmp_path)
    await everywhere(fakes, "2000", Presence(State.DND), "c's change adopted and spread")
    assert d.service.view("2000").presence == Presence(State.DND)


async def test_the_mirror_goes_where_a_hint_has_it_and_pauses_where_the_member_is(
        fakes: dict[str, FakeAsterisk], tmp_path: Path, daemons: Starter) -> None:
    fakes["a"].hints[:] = [hint("2000", "PJSIP/2000", "Custom:presence-2000")]
    fakes["b"].hints[:] = [hint("2001")]
    member = QueueMember("support", "Bob", "PJSIP/2001",
                         state_interface="hint:2001@internal")
    fakes["b"].queue_members[:] = [member]
    d = await start(daemons, fakes, tmp_path, mirror=True, queue_pause=True)
    await d.service.set_manual("2000", Presence(State.DND), "api")
    await d.service.set_manual("2001", Presence(State.DND), "api")
    await until(lambda: fakes["a"].devices.get("Custom:presence-2000") == "BUSY",
                what="2000's mirror on a")
    await until(lambda: member.paused, what="2001 paused on b")
    await barrier_all(d, list(fakes.values()))
    for name in ("b", "c"):
        assert fakes[name].setvars("DEVICE_STATE(Custom:presence-2000)") == []
    # No hint anywhere has 2001's mirror: it is written everywhere.
    for fake in fakes.values():
        assert fake.devices.get("Custom:presence-2001") == "BUSY"
    for name in ("a", "c"):
        assert not [m for m in fakes[name].actions if m.get("Action") == "QueuePause"]


def test_several_servers_config(tmp_path: Path) -> None:
    from astpresence.app.config import load_config
    from astpresence.app.settings import ConfigError
    path = tmp_path / "c.toml"

    def load(text: str, env: dict[str, str] | None = None) -> Any:
        path.write_text(text)
        return load_config(path, env=env or {})

    cfg = load('[[asterisk]]\nname = "a"\nhost = "10.0.0.1"\n'
               '[[asterisk]]\nname = "b-2"\nhost = "10.0.0.2"\nport = 5039\nsecret = "x"\n',
               {"ASTPRESENCE_AMI_SECRET_A": "from-env"})
    assert [(n.name, n.host, n.port, n.secret.value) for n in cfg.asterisk_servers] == [
        ("a", "10.0.0.1", 5038, "from-env"), ("b-2", "10.0.0.2", 5039, "x")]
    bad = {
        '[ami]\nhost = "h"\n[[asterisk]]\nname = "a"\nhost = "h"\n': "both set",
        '[[asterisk]]\nhost = "h"\n': "missing 'name'",
        '[[asterisk]]\nname = "a b"\nhost = "h"\n': "letters, digits",
        '[[asterisk]]\nname = "a"\nhost = "h"\n[[asterisk]]\nname = "a"\nhost = "i"\n':
            "used twice",
        '[[asterisk]]\nname = "a"\nhost = "h"\n[[asterisk]]\nname = "b"\nhost = "h"\n':
            "h:5038 is also 'a'",
        '[[asterisk]]\nname = "a"\nhost = "h"\nsecrett = "x"\n': "unknown setting(s) secrett",
        'asterisk = []\n': "non-empty array",
    }
    for text, message in bad.items():
        with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
            load(text)
    with pytest.raises(ConfigError, match="ASTPRESENCE_AMI_HOST sets the single"):
        load('[[asterisk]]\nname = "a"\nhost = "h"\n', {"ASTPRESENCE_AMI_HOST": "x"})
    assert replace(cfg, nodes=()).asterisk_servers == (cfg.ami,)
