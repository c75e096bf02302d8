"""End to end: CLI -> HTTP API -> daemon -> fake Asterisk (real TCP) and back."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import signal
import sys
from pathlib import Path
from typing import AsyncIterator

import aiohttp
import pytest

from astpresence.asterisk.ami.frames import Message
from tests.support.e2e import RunningDaemon, barrier, cli, make_config, seed, start_daemon, until
from tests.conftest import Starter
from tests.support.processes import free_port, create_token, wait_up
from tests.support.fakeami import FakeAsterisk

SETVAR_2000 = "PRESENCE_STATE(CustomPresence:2000)"


@pytest.fixture
async def fake(fake_ami: FakeAsterisk) -> FakeAsterisk:
    seed(fake_ami)
    return fake_ami


@pytest.fixture
async def daemon(fake: FakeAsterisk, tmp_path: Path) -> AsyncIterator[RunningDaemon]:
    running = await start_daemon(make_config(fake, tmp_path / "p.db"))
    yield running
    await running.stop()


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def presence_setvars(fake: FakeAsterisk, user: str) -> list[Message]:
    return fake.setvars(f"PRESENCE_STATE(CustomPresence:{user})")


async def test_cli_set_reaches_asterisk_and_reads_back(daemon: RunningDaemon,
                                                       fake: FakeAsterisk) -> None:
    text = "Zurück um 15:00, \"really\", C:\\temp"
    res = await cli(daemon.url, "set", "2000", "DND", "--subtype", "meeting", "--message", text)
    assert res.code == 0, res.err
    assert res.out.strip() == "2000: dnd"
    setvar = await fake.wait_for_action(lambda m: m.get("Variable") == SETVAR_2000)
    # Always base64 with the 'e' option: commas, quotes, backslashes, umlauts survive.
    assert setvar.get("Value") == f"dnd,{b64('meeting')},{b64(text)},e"
    assert fake.presences["2000"] == ("dnd", "meeting", text)
    await until(lambda: not daemon.service.view("2000").pending, what="echo")
    res = await cli(daemon.url, "get", "2000", "--json")
    assert res.code == 0, res.err
    got = json.loads(res.out)
    assert {k: got[k] for k in ("user", "state", "subtype", "message", "source", "actor",
                                "pending")} == {
        "user": "2000", "state": "dnd", "subtype": "meeting", "message": text,
        "source": "manual", "actor": "cli:admin", "pending": False}
    # Our own echo was not adopted as a change made elsewhere.
    assert daemon.service.nodes["asterisk"].adopted == 0
    hist = json.loads((await cli(daemon.url, "history", "2000", "--json")).out)
    assert [(h["new"]["state"], h["source"], h["actor"]) for h in hist] == [
        ("dnd", "manual", "cli:admin")]
    assert len(presence_setvars(fake, "2000")) == 1


async def test_clear_and_list(daemon: RunningDaemon, fake: FakeAsterisk) -> None:
    assert (await cli(daemon.url, "set", "2001", "away")).code == 0
    res = await cli(daemon.url, "list", "--state", "away", "--json")
    assert [p["user"] for p in json.loads(res.out)] == ["2001"]
    table = (await cli(daemon.url, "list")).out.splitlines()
    assert table[0].split()[:4] == ["USER", "NAME", "STATE", "ACTIVITY"]
    state_at = table[0].index("STATE")
    assert [(line.split()[0], line[state_at:].split()[0]) for line in table[1:]] == [
        ("2000", "not_set"), ("2001", "away")]
    res = await cli(daemon.url, "clear", "2001")
    assert res.code == 0 and res.out.strip() == "2001: not_set"
    await fake.wait_for_action(
        lambda m: m.get("Variable") == "PRESENCE_STATE(CustomPresence:2001)"
        and (m.get("Value") or "").startswith("not_set"))
    await until(lambda: "2001" not in fake.presences or fake.presences["2001"][0] == "not_set")


async def test_change_made_in_asterisk_is_adopted(daemon: RunningDaemon,
                                                  fake: FakeAsterisk) -> None:
    before = len(fake.actions)
    await fake.external_presence_change("2001", "away", "lunch", 'back at 2, "promise"\\')
    await until(lambda: daemon.service.view("2001").presence.state.value == "away")
    view = daemon.service.view("2001")
    assert (view.presence.subtype, view.presence.message) == ("lunch", 'back at 2, "promise"\\')
    assert (view.source, view.actor, view.pending) == ("manual", "asterisk", False)
    await barrier(daemon, fake)
    # Adopting is not a reason to write anything back.
    assert [m for m in fake.actions[before:] if m.get("Action") == "Setvar"] == []
    hist = json.loads((await cli(daemon.url, "history", "2001", "--json")).out)
    assert [(h["new"]["state"], h["source"]) for h in hist] == [("away", "asterisk")]


async def test_race_between_own_write_and_external_change(daemon: RunningDaemon,
                                                          fake: FakeAsterisk) -> None:
    """Our write and a phone's change land together; both sides converge, no fight."""
    fake.action_delay = 0.05  # our Setvar is answered late, the phone's change is first
    set_task = asyncio.create_task(cli(daemon.url, "set", "2000", "dnd"))
    await fake.wait_for_action(lambda m: m.get("Variable") == SETVAR_2000, timeout=10)
    await fake.external_presence_change("2000", "away", "", "phone")
    assert (await set_task).code == 0
    await until(lambda: not daemon.service.pending_users(), what="convergence")
    await barrier(daemon, fake)
    final = daemon.service.view("2000").presence
    assert (final.state.value, final.message) == (fake.presences["2000"][0],
                                                  fake.presences["2000"][2])
    # At most our write plus one re-assert: no ping-pong.
    assert len(presence_setvars(fake, "2000")) <= 2


async def test_bad_input_changes_nothing(daemon: RunningDaemon, fake: FakeAsterisk) -> None:
    cases = [
        (("set", "2000", "busy"), "invalid state 'busy'"),
        (("set", "2000", "dnd", "--message", "x" * 256), "the limit is 255 bytes"),
        (("set", "2000", "dnd", "--message", "é" * 128), "256 bytes of UTF-8"),
        (("set", "2000", "dnd", "--subtype", "a\r\nEvent: Forged"), "control character"),
        (("set", "9999", "dnd"), "unknown user '9999'"),
        (("get", "9999"), "unknown user '9999'"),
        (("history", "nobody"), "unknown user 'nobody'"),
        (("list", "--state", "sleeping"), "invalid state"),
    ]
    for args, message in cases:
        res = await cli(daemon.url, *args)
        assert res.code == 1, (args, res)
        assert message in res.err and res.err.count("\n") == 1, (args, res.err)
        assert "Traceback" not in res.err
    usage = await cli(daemon.url, "set", "2000")
    assert usage.code == 2
    assert presence_setvars(fake, "2000") == [] and presence_setvars(fake, "9999") == []
    assert await daemon.service.history("2000", 10) == []


async def test_api_bad_input(daemon: RunningDaemon, fake: FakeAsterisk) -> None:
    url = daemon.url + "/v1/presence/2000"
    cases = [
        (b"not json", 400, "not valid JSON"),
        (b"[1,2]", 400, "must be a JSON object"),
        (b'{"state": "dnd", "colour": "red"}', 400, "unknown field(s) colour"),
        (b'{"subtype": "x"}', 400, "missing field 'state'"),
        (b'{"state": 5}', 400, "state must be a string"),
        (b'{"state": "dnd", "message": ["x"]}', 400, "message must be a string"),
        (b'{"state": "dnd", "message": "' + b"x" * 20000 + b'"}', 413, "larger than"),
    ]
    async with aiohttp.ClientSession(headers=daemon.auth) as http:
        for body, status, message in cases:
            async with http.put(url, data=body) as resp:
                data = await resp.json()
                assert resp.status == status, (body[:40], data)
                assert message in data["error"]
        async with http.get(daemon.url + "/v1/presence/2000/history?limit=0") as resp:
            assert resp.status == 400 and "between 1 and 1000" in (await resp.json())["error"]
        async with http.get(daemon.url + "/v1/nothing") as resp:
            assert resp.status == 404 and "error" in await resp.json()
        async with http.put(daemon.url + "/v1/presence/ghost", data=b'{"state":"dnd"}') as resp:
            assert resp.status == 404
    assert presence_setvars(fake, "2000") == []
    assert daemon.service.view("2000").presence.state.value == "not_set"


async def test_websocket_and_watch(daemon: RunningDaemon, fake: FakeAsterisk) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ASTPRESENCE_")}
    env["ASTPRESENCE_TOKEN"] = daemon.token
    watch = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "astpresence", "--api", daemon.url, "watch",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        stdin=asyncio.subprocess.DEVNULL, env=env,
    )
    try:
        await _watch_and_listen(daemon, fake, watch)
    finally:
        if watch.returncode is None:
            watch.kill()
            await watch.wait()


async def _watch_and_listen(daemon: RunningDaemon, fake: FakeAsterisk,
                            watch: asyncio.subprocess.Process) -> None:
    async with aiohttp.ClientSession(headers=daemon.auth) as http, \
            http.ws_connect(daemon.url + "/v1/events") as ws:
        await ws.send_json({"token": daemon.token, "subscribe": ["*"]})
        hello = await asyncio.wait_for(ws.receive_json(), 5)
        assert hello["type"] == "hello" and hello["token"]["role"] == "admin"
        assert watch.stderr is not None and watch.stdout is not None
        line = await asyncio.wait_for(watch.stderr.readline(), 10)
        assert b"watching" in line
        await until(lambda: daemon.service.events.subscribers == 2)
        async with http.put(daemon.url + "/v1/presence/2000",
                            json={"state": "away", "message": "lunch"}) as resp:
            assert resp.status == 200
        event = await asyncio.wait_for(ws.receive_json(), 5)
        assert event["user"] == "2000" and event["presence"]["state"] == "away"
        assert event["changed"] == ["state", "message", "source", "chosen"]
        await fake.external_presence_change("2000", "dnd")
        event2 = await asyncio.wait_for(ws.receive_json(), 5)
        assert event2["seq"] == event["seq"] + 1
        assert event2["presence"]["actor"] == "asterisk"
        out1 = await asyncio.wait_for(watch.stdout.readline(), 5)
        out2 = await asyncio.wait_for(watch.stdout.readline(), 5)
        assert out1.split()[2:5] == [b"2000", b"away", b"lunch"]
        assert out2.split()[2:4] == [b"2000", b"dnd"]
    watch.send_signal(signal.SIGINT)
    assert await asyncio.wait_for(watch.wait(), 5) == 0


async def test_status_command(daemon: RunningDaemon) -> None:
    res = await cli(daemon.url, "status")
    assert res.code == 0
    assert "synced:          yes" in res.out and "users:           2" in res.out
    st = json.loads((await cli(daemon.url, "status", "--json")).out)
    assert st["ami"]["state"] == "synced" and st["ami"]["connected"] is True
    assert st["last_sync"] is not None and st["pending_writes"] == 0


async def test_unreachable_daemon_is_one_line_error() -> None:
    res = await cli("http://127.0.0.1:9", "status")
    assert res.code == 1
    assert "cannot reach the astpresence daemon at http://127.0.0.1:9" in res.err
    assert res.err.count("\n") == 1


async def test_restart_of_asterisk_pending_change_written_once(
    daemon: RunningDaemon, fake: FakeAsterisk
) -> None:
    await fake.stop()  # Asterisk goes away
    await until(lambda: daemon.daemon.bridge.status.state == "disconnected")
    res = await cli(daemon.url, "set", "2000", "xa", "--message", "while down", "--json")
    assert res.code == 0 and json.loads(res.out)["pending"] is True
    st = json.loads((await cli(daemon.url, "status", "--json")).out)
    assert st["pending_writes"] == 1 and st["synced"] is False
    assert st["ami"]["last_error"] and st["ami"]["retry_in_seconds"] is not None
    await fake.start()  # same port, same state (astdb)
    await daemon.wait_synced(timeout=10)
    await until(lambda: fake.presences.get("2000", ("",))[0] == "xa", what="pending write")
    await until(lambda: not daemon.service.pending_users())
    await barrier(daemon, fake)
    assert len(presence_setvars(fake, "2000")) == 1  # nothing written twice
    assert fake.presences["2000"] == ("xa", "", "while down")


async def test_changes_while_daemon_down_are_adopted(
        fake: FakeAsterisk, tmp_path: Path, daemons: Starter) -> None:
    cfg = make_config(fake, tmp_path / "p.db")
    first = await start_daemon(cfg)
    assert (await cli(first.url, "set", "2000", "dnd")).code == 0
    await until(lambda: not first.service.pending_users())
    await first.stop()
    await fake.external_presence_change("2000", "available", "", "back")
    await fake.external_presence_change("2001", "chat")
    second = await daemons(cfg)
    assert second.service.view("2000").presence.message == "back"
    assert second.service.view("2001").presence.state.value == "chat"
    hist = await second.service.history("2000", 10)
    assert [(h.new.state.value, h.source) for h in hist] == [
        ("available", "asterisk"), ("dnd", "manual")]
    assert "away" in hist[0].reason
    n = len(presence_setvars(fake, "2000"))
    await barrier(second, fake)
    assert len(presence_setvars(fake, "2000")) == n  # nothing written back


async def test_silent_asterisk_detected_and_link_reestablished(
        fake: FakeAsterisk, tmp_path: Path, daemons: Starter) -> None:
    running = await daemons(make_config(fake, tmp_path / "p.db", ping=0.2))
    logins = fake.logins
    loop = asyncio.get_running_loop()
    fake.stall(True)
    t0 = loop.time()
    await until(lambda: running.daemon.bridge.status.state == "disconnected", timeout=3)
    assert loop.time() - t0 < 2 * 0.2 + 0.3
    fake.stall(False)
    await running.wait_synced(timeout=10)
    assert fake.logins == logins + 1


async def test_refused_login_is_reported_and_retried(
        fake: FakeAsterisk, tmp_path: Path, daemons: Starter) -> None:
    fake.refuse_logins = True
    running = await daemons(make_config(fake, tmp_path / "p.db"), wait=False)
    await until(lambda: running.daemon.bridge.status.last_error is not None, timeout=5)
    assert running.daemon.bridge.status.last_error == (
        "authentication failed for user astpresence")
    res = await cli(running.url, "status")
    assert "authentication failed for user astpresence" in res.out
    fake.refuse_logins = False
    await running.wait_synced(timeout=10)


async def test_acknowledged_change_survives_kill_9(fake: FakeAsterisk, tmp_path: Path) -> None:
    """The real daemon process, killed with SIGKILL right after acknowledging."""
    db = tmp_path / "p.db"
    env = {k: v for k, v in os.environ.items() if not k.startswith("ASTPRESENCE_")}
    env.update(ASTPRESENCE_AMI_PORT=str(fake.port), ASTPRESENCE_AMI_SECRET=fake.secret,
               ASTPRESENCE_DB=str(db))

    async def spawn(port: int) -> asyncio.subprocess.Process:
        return await asyncio.create_subprocess_exec(
            sys.executable, "-m", "astpresence", "serve", "--listen", f"127.0.0.1:{port}",
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
            stdin=asyncio.subprocess.DEVNULL, env=env)

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = await spawn(port)
    try:
        await wait_up(url)  # the daemon creates the database; then a token goes into it
        token = await create_token(db, env)
        await _wait_http(url, token)
        fake.stall(True)  # Asterisk never confirms: only the store has it
        res = await cli(url, "set", "2001", "dnd", "--message", "kept", token=token)
        assert res.code == 0, res.err
        proc.kill()
        await proc.wait()
        fake.stall(False)
        await fake.drop_clients()
        proc = await spawn(port)
        await _wait_http(url, token)
        got = json.loads((await cli(url, "get", "2001", "--json", token=token)).out)
        assert (got["state"], got["message"]) == ("dnd", "kept")
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            assert await asyncio.wait_for(proc.wait(), 15) == 0


async def _wait_http(url: str, token: str) -> None:
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {token}"}) as http:
        for _ in range(300):
            try:
                async with http.get(url + "/v1/status") as resp:
                    if (await resp.json())["synced"]:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.05)
    raise AssertionError(f"daemon at {url} did not sync")


async def test_pbx_without_hints_still_syncs(fake_ami: FakeAsterisk, tmp_path: Path) -> None:
    """ExtensionStateList answers an error when there are no hints at all."""
    from astpresence.domain.records import UserRecord

    fake_ami.hints.clear()
    running = await start_daemon(make_config(
        fake_ami, tmp_path / "p.db", users=(UserRecord("alice", origin="config"),)))
    try:
        assert running.service.users.ids() == ["alice"]
        assert (await cli(running.url, "set", "alice", "away")).code == 0
        await until(lambda: fake_ami.presences.get("alice", ("",))[0] == "away")
    finally:
        await running.stop()
