"""An HA group of daemons on one PostgreSQL ([ha] enabled): real processes, one
fake Asterisk, failover by ``kill -9`` and by cutting the leader's database
connection. Exactly one node writes to Asterisk at any time."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest

from tests.support.e2e import seed, until
from tests.support.fakeami import FakeAsterisk
from tests.support.processes import free_port, wait_up
from tests.support.processes import clean_env, run

pytestmark = pytest.mark.timeout(90)


async def eventually(check: Callable[[], Awaitable[bool]], what: str,
                     timeout: float = 10) -> None:
    """Poll ``check`` (an API round trip) until it holds."""
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, f"timed out after {timeout} s waiting for {what}"
        await asyncio.sleep(0.05)


class Node:
    def __init__(self, name: str, env: dict[str, str], tmp: Path) -> None:
        self.name = name
        self.env = {**env, "ASTPRESENCE_HA_NODE": name}
        self.url = f"http://127.0.0.1:{free_port()}"
        self.log = tmp / f"{name}.log"
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        with open(self.log, "ab") as log:
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "astpresence", "serve", "--listen",
                self.url.removeprefix("http://"), env=self.env, stdout=log, stderr=log,
                stdin=asyncio.subprocess.DEVNULL)
        await wait_up(self.url)

    async def call(self, method: str, path: str, token: str,
                   body: Any = None) -> tuple[int, Any]:
        async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {token}"}) as http:
            async with http.request(method, self.url + path, json=body) as resp:
                return resp.status, await resp.json()

    async def status(self, token: str) -> dict[str, Any]:
        code, body = await self.call("GET", "/v1/status", token)
        assert code == 200, body
        result: dict[str, Any] = body
        return result

    async def wait_following(self, token: str, timeout: float = 10) -> dict[str, Any]:
        """Until the node follows a leader it knows (its API serves everything)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            st = await self.status(token)
            if st["ha"]["following"] and st["ha"]["leader"] is not None:
                return st
            await asyncio.sleep(0.05)
        raise AssertionError(f"{self.name} did not follow within {timeout} s:\n"
                             f"{self.log.read_text()[-2000:]}")

    async def wait_links(self, token: str, names: list[str], timeout: float = 10) -> None:
        """Until every Asterisk server's link is synced (contact cards and queues too)."""
        async def synced() -> bool:
            links = (await self.status(token))["asterisk"]
            return [(n["name"], n["state"]) for n in links] == [(n, "synced") for n in names]
        await eventually(synced, f"{self.name} to sync {names}", timeout)

    async def wait_leading(self, token: str, timeout: float = 10) -> float:
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            st = await self.status(token)
            if st["ha"]["role"] == "leader" and st["synced"]:
                return time.monotonic() - started
            await asyncio.sleep(0.05)
        raise AssertionError(f"{self.name} did not lead within {timeout} s:\n"
                             f"{self.log.read_text()[-2000:]}")


@pytest.fixture
async def group(fake_ami: FakeAsterisk, postgres_url: str,
                tmp_path: Path) -> AsyncIterator[tuple[Node, Node, str]]:
    async with started_group(fake_ami, postgres_url, tmp_path) as nodes:
        yield nodes


@contextlib.asynccontextmanager
async def started_group(fake_ami: FakeAsterisk, postgres_url: str, tmp_path: Path,
                        config: str = "") -> AsyncIterator[tuple[Node, Node, str]]:
    """Node a leading, node b started (following soon); both stopped at the end and
    must exit cleanly. ``config``: a TOML file both read ("@A_URL@", "@B_URL@": the
    nodes' API addresses)."""
    seed(fake_ami)
    fake_ami.astdb[("AMPUSER", "2001/cidname")] = "Bea Müller"  # a card only the leader reads
    env = clean_env(ASTPRESENCE_AMI_PORT=str(fake_ami.port),
                    ASTPRESENCE_AMI_SECRET=fake_ami.secret, ASTPRESENCE_DB_URL=postgres_url,
                    ASTPRESENCE_HA="1", ASTPRESENCE_DB=str(tmp_path / "unused.db"))
    if config:
        env["ASTPRESENCE_CONFIG"] = str(tmp_path / "group.toml")
    a, b = Node("node-a", env, tmp_path), Node("node-b", env, tmp_path)
    if config:  # "@A_URL@" and "@B_URL@" stand for the nodes' API addresses
        text = config.replace("@A_URL@", a.url).replace("@B_URL@", b.url)
        (tmp_path / "group.toml").write_text(text, encoding="utf-8")
    code, out, err = await run("token", "create", "--role", "admin", "--json", env=env)
    assert code == 0, err
    token = json.loads(out)["token"]
    await a.start()
    await a.wait_leading(token)
    await b.start()
    try:
        yield a, b, token
    finally:
        codes = {}
        for node in (a, b):
            if node.proc is not None and node.proc.returncode is None:
                node.proc.send_signal(signal.SIGTERM)
                codes[node.name] = await asyncio.wait_for(node.proc.wait(), 20)
        # Leader or follower, a node stops cleanly.
        assert all(code == 0 for code in codes.values()), (
            codes, a.log.read_text()[-1500:], b.log.read_text()[-1500:])


def setvars(fake: FakeAsterisk, uid: str) -> list[str]:
    return [m.get("Value") or "" for m in fake.setvars(f"PRESENCE_STATE(CustomPresence:{uid})")]


async def test_a_follower_takes_over_after_kill_9(group: tuple[Node, Node, str],
                                               fake_ami: FakeAsterisk) -> None:
    a, b, token = group
    # The follower says who leads (once it has looked: its API is up first).
    st = await b.wait_following(token)
    assert st["ha"]["role"] == "follower" and st["ha"]["leader"]["node"] == "node-a"
    assert {n["node"] for n in st["ha"]["group"]} == {"node-a", "node-b"}
    # Only the leader is logged in to Asterisk.
    assert fake_ami.logins == 1

    code, _ = await a.call("PUT", "/v1/presence/2000", token, {"state": "dnd", "message": "x"})
    assert code == 200  # acknowledged: stored in PostgreSQL
    await until(lambda: len(setvars(fake_ami, "2000")) == 1)

    assert a.proc is not None
    a.proc.send_signal(signal.SIGKILL)
    await a.proc.wait()
    took = await b.wait_leading(token)
    assert took < 5, f"takeover took {took:.1f} s"
    # Nothing was lost, and what Asterisk already had is not written again.
    code, body = await b.call("GET", "/v1/presence/2000", token)
    assert (code, body["state"], body["message"]) == (200, "dnd", "x")
    assert len(setvars(fake_ami, "2000")) == 1
    code, _ = await b.call("PUT", "/v1/presence/2001", token, {"state": "away"})
    assert code == 200
    await until(lambda: len(setvars(fake_ami, "2001")) == 1, what="the new leader writes")
    st = await b.status(token)
    assert st["ha"]["takeovers"] == 1 and st["ha"]["leader"]["node"] == "node-b"
    async with aiohttp.ClientSession() as http, http.get(b.url + "/metrics") as resp:
        assert "astpresence_ha_leader 1.0" in await resp.text()


async def test_leader_that_loses_the_database_stops_writing(
        group: tuple[Node, Node, str], fake_ami: FakeAsterisk, postgres_url: str) -> None:
    a, b, token = group
    assert a.proc is not None
    # Cut the leader's lock connection (as a network cut or a DBA would).
    conn = await asyncpg.connect(postgres_url)
    try:
        cut = await conn.fetch(
            "SELECT pg_terminate_backend(l.pid) FROM pg_locks l JOIN pg_stat_activity s "
            "ON s.pid = l.pid WHERE l.locktype = 'advisory' AND l.granted "
            "AND s.application_name = 'astpresence-ha'")
    finally:
        await conn.close()
    assert [r[0] for r in cut] == [True]  # exactly one node held the lock
    # The old leader stops at once (exit 1: a supervisor restarts it as a follower).
    assert await asyncio.wait_for(a.proc.wait(), 10) == 1
    log = a.log.read_text()
    assert "no longer the leader; AMI writes stopped" in log
    await b.wait_leading(token)
    code, _ = await b.call("PUT", "/v1/presence/2001", token, {"state": "xa"})
    assert code == 200
    await until(lambda: len(setvars(fake_ami, "2001")) == 1)
    # Restarted, the old leader follows.
    await a.start()
    st = await a.status(token)
    assert st["ha"]["role"] == "follower"


class Events:
    """A WebSocket client of one node's /v1/events."""

    def __init__(self, http: aiohttp.ClientSession, ws: aiohttp.ClientWebSocketResponse):
        self.http, self.ws = http, ws

    @classmethod
    async def open(cls, node: Node, token: str, resume: int | None = None) -> Events:
        http = aiohttp.ClientSession()
        ws = await http.ws_connect(node.url + "/v1/events")
        hello: dict[str, Any] = {"token": token, "subscribe": ["*"]}
        if resume is not None:
            hello["resume"] = resume
        await ws.send_json(hello)
        return cls(http, ws)

    async def next(self, kind: str = "presence") -> dict[str, Any]:
        while True:
            msg: dict[str, Any] = await asyncio.wait_for(self.ws.receive_json(), 10)
            if msg["type"] in (kind, "hello") and (kind == "hello") == (msg["type"] == "hello"):
                return msg

    async def close(self) -> None:
        await self.ws.close()
        await self.http.close()


async def test_a_follower_serves_the_whole_api(group: tuple[Node, Node, str],
                                               fake_ami: FakeAsterisk) -> None:
    a, b, token = group
    st = await b.wait_following(token)
    # b talks to no Asterisk; it shows the leader's link (stored before b started).
    assert (st["ami"]["state"], st["ami"]["leader_link"], st["synced"]) == (
        "follower", "synced", True)
    assert st["role"] == "follower" and (await a.status(token))["role"] == "leader"
    code, out, err = await run("status", env={**b.env, "ASTPRESENCE_API": b.url,
                                              "ASTPRESENCE_TOKEN": token})
    assert code == 0, err
    assert (f"AMI link:        none here: this node follows the leader, whose link to "
            f"127.0.0.1:{fake_ami.port} is synced") in out
    assert "HA:              follower in step (node-b); leader node-a at " + a.url in out
    on_a, on_b = await Events.open(a, token), await Events.open(b, token)
    try:
        hello_a, hello_b = await on_a.next("hello"), await on_b.next("hello")
        assert hello_a["seq"] == hello_b["seq"]  # one numbering for the group
        assert hello_b["link"]["state"] == "synced" and hello_b["link"]["node"] == "asterisk"
        # A write on the follower: run by the leader, answered once stored,
        # and the follower has it at once (read your writes).
        code, body = await b.call("PUT", "/v1/presence/2000", token,
                                  {"state": "dnd", "message": "by b"})
        assert (code, body["state"], body["message"]) == (200, "dnd", "by b")
        code, body = await b.call("GET", "/v1/presence/2000", token)
        assert (code, body["state"], body["message"]) == (200, "dnd", "by b")
        code, body = await a.call("GET", "/v1/presence/2000", token)
        assert (code, body["state"], body["message"]) == (200, "dnd", "by b")
        await until(lambda: len(setvars(fake_ami, "2000")) == 1, what="the leader's write")
        assert fake_ami.logins == 1  # only the leader talks to Asterisk
        # Both streams tell it, with the same number.
        ev_a, ev_b = await on_a.next(), await on_b.next()
        assert ev_a == ev_b and ev_a["seq"] == hello_a["seq"] + 1
        assert ev_b["presence"]["pending"] is True  # not yet written to Asterisk
        # Once the leader's write has landed, the follower knows it too.
        async def written() -> bool:
            return not (await b.call("GET", "/v1/presence/2000", token))[1]["pending"]
        await eventually(written, "the follower to see the write landed")
        # b started after a read the contact cards from Asterisk: it asked a.
        code, body = await b.call("GET", "/v1/presence/2001", token)
        assert (code, body["name"]) == (200, "Bea Müller")
        assert ev_b["presence"]["message"] == "by b" and "state" in ev_b["changed"]
        # A change made on the leader reaches the follower's readers and stream.
        code, _ = await a.call("PUT", "/v1/presence/2001", token, {"state": "away"})
        assert code == 200
        ev_b = await on_b.next()
        assert (ev_b["user"], ev_b["seq"]) == ("2001", hello_a["seq"] + 2)
        code, body = await b.call("GET", "/v1/presence", token)
        assert {p["user"]: p["state"] for p in body["presence"]}["2001"] == "away"
        # Sources and history, written through the follower, read back there.
        code, _ = await b.call("PUT", "/v1/presence/2001/sources/crm", token,
                               {"state": "xa", "message": "visit"})
        assert code == 200
        code, body = await b.call("GET", "/v1/presence/2001/sources", token)
        assert code == 200 and "crm" in {s["source"] for s in body["sources"]}
        # The devices only the leader follows: b asks it.
        _, on_leader = await a.call("GET", "/v1/presence/2001/sources", token)
        assert body["devices"] == on_leader["devices"]
        assert body["devices"]["states"] == ["UNAVAILABLE"]
        code, body = await b.call("GET", "/v1/presence/2000/history", token)
        assert code == 200 and body["history"][0]["new"]["message"] == "by b"
        # Errors come back as the leader decided them; bad input never leaves b.
        code, body = await b.call("DELETE", "/v1/presence/2001/sources/nope", token)
        assert code == 404, body
        code, body = await b.call("PUT", "/v1/presence/2000", token, {"state": "sleepy"})
        assert code == 400, body
        # Clearing through the follower: the other sources decide again.
        code, body = await b.call("DELETE", "/v1/presence/2001", token)
        assert (code, body["state"], body["source"]) == (200, "xa", "crm"), body
        st = await a.status(token)
        # the cards, dnd, crm, the devices, the unknown source and the clear (a seventh
        # was once an orphaned "cards" row: test_a_command_cancelled_while_stored_...)
        assert st["ha"]["commands_run"] == 6
        # A client resumes on the other node with the number it had.
        resumed = await Events.open(a, token, resume=hello_b["seq"])
        try:
            hello = await resumed.next("hello")
            backlog = [await resumed.next() for _ in range(2)]
            assert [e["seq"] for e in backlog] == [hello_b["seq"] + 1, hello_b["seq"] + 2]
            assert hello["seq"] >= hello_b["seq"] + 2
        finally:
            await resumed.close()
    finally:
        await on_a.close()
        await on_b.close()


async def test_event_numbers_go_on_across_a_takeover(group: tuple[Node, Node, str],
                                                     fake_ami: FakeAsterisk) -> None:
    a, b, token = group
    await b.wait_following(token)
    code, _ = await a.call("PUT", "/v1/presence/2000", token, {"state": "away"})
    assert code == 200
    on_b = await Events.open(b, token)
    try:
        hello = await on_b.next("hello")
        assert a.proc is not None
        a.proc.send_signal(signal.SIGKILL)
        await a.proc.wait()
        await b.wait_leading(token)
        code, _ = await b.call("PUT", "/v1/presence/2000", token, {"state": "chat"})
        assert code == 200
        event = await on_b.next()
        while event["presence"]["state"] != "chat":
            event = await on_b.next()
        # Numbered after the old leader's last event: a client that saw it
        # resumes with no gap and no snapshot.
        resumed = await Events.open(b, token, resume=hello["seq"])
        try:
            await resumed.next("hello")
            first = await asyncio.wait_for(resumed.ws.receive_json(), 10)
            assert first["type"] == "presence" and first["seq"] == hello["seq"] + 1
        finally:
            await resumed.close()
    finally:
        await on_b.close()


async def test_a_follower_that_loses_its_database_link_reloads(
        group: tuple[Node, Node, str], fake_ami: FakeAsterisk, postgres_url: str) -> None:
    a, b, token = group
    await b.wait_following(token)
    conn = await asyncpg.connect(postgres_url)
    try:
        cut = await conn.fetch("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                               "WHERE application_name = 'astpresence-follower'")
        assert [r[0] for r in cut] == [True]
        # Changed while b is not listening: b reloads the state, nothing assumed.
        code, _ = await a.call("PUT", "/v1/presence/2001", token, {"state": "xa"})
        assert code == 200
        async def reloaded() -> bool:
            code, body = await b.call("GET", "/v1/presence/2001", token)
            return code == 200 and body["state"] == "xa"
        await eventually(reloaded, "the follower to reload and follow again")
        log = b.log.read_text()
        assert "the database link failed" in log
        assert log.count("following the leader: state loaded") == 2
    finally:
        await conn.close()


async def test_a_write_sent_while_no_node_leads_is_run_by_the_next_leader(
        group: tuple[Node, Node, str], fake_ami: FakeAsterisk, postgres_url: str) -> None:
    from astpresence.cluster.ha import LEADER_LOCK

    a, b, token = group
    await b.wait_following(token)
    assert a.proc is not None
    # The test takes the leader's lock the moment a dies, so b cannot lead yet.
    blocker = await asyncpg.connect(postgres_url)
    try:
        locking = asyncio.ensure_future(blocker.execute("SELECT pg_advisory_lock($1)",
                                                        LEADER_LOCK))
        a.proc.send_signal(signal.SIGKILL)
        await a.proc.wait()
        await asyncio.wait_for(locking, 10)
        # b still follows: its write waits in the database for a leader.
        put = asyncio.ensure_future(b.call("PUT", "/v1/presence/2000", token,
                                           {"state": "xa"}))
        check = await asyncpg.connect(postgres_url)
        try:
            for _ in range(200):
                if await check.fetchval("SELECT count(*) FROM commands WHERE status = 'new'"):
                    break
                await asyncio.sleep(0.02)
            else:
                raise AssertionError("the follower's command never reached the database")
        finally:
            await check.close()
        assert not put.done()
        await blocker.execute("SELECT pg_advisory_unlock($1)", LEADER_LOCK)
        code, body = await asyncio.wait_for(put, 15)
        assert (code, body["state"]) == (200, "xa"), body
    finally:
        await blocker.close()
    await b.wait_leading(token)
    await until(lambda: [v.split(",")[0] for v in setvars(fake_ami, "2000")] == ["xa"],
                what="written once, by the new leader")


async def test_a_group_on_two_asterisk_servers(postgres_url: str, tmp_path: Path) -> None:
    """[ha] and [[asterisk]] together: after a takeover the new leader follows both
    servers, and a change made on one is still written to the other, once."""
    from tests.support.fakeami import Hint

    fakes = {name: FakeAsterisk() for name in ("east", "west")}
    for fake in fakes.values():
        fake.hints[:] = [Hint("2000", "internal", ["PJSIP/2000"], "CustomPresence:2000")]
        fake.devices["PJSIP/2000"] = "NOT_INUSE"
        await fake.start()
    config = tmp_path / "astpresence.toml"
    config.write_text("[rules]\nregistered = false  # the writes are counted below\n\n" + "".join(
        f'[[asterisk]]\nname = "{name}"\nhost = "127.0.0.1"\nport = {fake.port}\n'
        f'secret = "{fake.secret}"\n\n' for name, fake in fakes.items()))
    env = clean_env(ASTPRESENCE_CONFIG=str(config), ASTPRESENCE_DB_URL=postgres_url,
                    ASTPRESENCE_HA="1", ASTPRESENCE_DB=str(tmp_path / "unused.db"))
    code, out, err = await run("token", "create", "--role", "admin", "--json", env=env)
    assert code == 0, err
    token = json.loads(out)["token"]
    a, b = Node("node-a", env, tmp_path), Node("node-b", env, tmp_path)
    try:
        await a.start()
        await a.wait_leading(token)
        await b.start()
        await b.wait_following(token)
        await a.wait_links(token, ["east", "west"])
        await fakes["west"].external_presence_change("2000", "away", "lunch")
        await until(lambda: fakes["east"].presences.get("2000") == ("away", "lunch", ""),
                    what="west's change on east")
        assert a.proc is not None
        a.proc.send_signal(signal.SIGKILL)
        await a.proc.wait()
        await b.wait_leading(token)
        await b.wait_links(token, ["east", "west"])
        await fakes["east"].external_presence_change("2000", "dnd")
        await until(lambda: fakes["west"].presences.get("2000") == ("dnd", "", ""),
                    what="east's change on west, by the new leader")
        code, body = await b.call("GET", "/v1/presence/2000", token)
        assert (code, body["state"]) == (200, "dnd")
        # A last change through the API, written to both: a barrier (one link's
        # writes go in order), then each server got each value once, no fight.
        code, _ = await b.call("PUT", "/v1/presence/2000", token, {"state": "chat"})
        assert code == 200
        await until(lambda: all(f.presences.get("2000") == ("chat", "", "")
                                for f in fakes.values()), what="the last change everywhere")
        assert [v.split(",")[0] for v in setvars(fakes["east"], "2000")] == ["away", "chat"]
        assert [v.split(",")[0] for v in setvars(fakes["west"], "2000")] == ["dnd", "chat"]
    finally:
        for node in (a, b):
            if node.proc is not None and node.proc.returncode is None:
                node.proc.send_signal(signal.SIGTERM)
                await asyncio.wait_for(node.proc.wait(), 20)
        for fake in fakes.values():
            await fake.stop()


async def test_the_lock_connection_has_short_keepalives(postgres_url: str) -> None:
    """A leader cut off by the network must lose its lock in seconds: PostgreSQL
    probes its socket (3 s idle, then 2 probes 1 s apart; unacknowledged data
    for 5 s ends it too) instead of after hours, and never before the leader has
    stopped writing (test_ha_partition.py)."""
    from astpresence.cluster.ha import Leadership
    from astpresence.store.postgres import PostgresStore

    store = PostgresStore(postgres_url)  # the schema (the group's rows are in meta)
    await store.open()
    await store.close()
    leadership = Leadership(postgres_url, "probe")
    stop = asyncio.Event()
    assert await leadership.acquire(stop)
    try:
        conn = leadership._conn
        assert conn is not None
        settings = [await conn.fetchval(f"SHOW {name}") for name in (
            "tcp_keepalives_idle", "tcp_keepalives_interval", "tcp_keepalives_count",
            "tcp_user_timeout")]
        assert settings == ["3", "1", "2", "5000"]  # milliseconds
    finally:
        await leadership.release()


async def test_a_calendar_refresh_asked_of_a_follower(
        fake_ami: FakeAsterisk, postgres_url: str, tmp_path: Path) -> None:
    """The follower fetches the feed itself and hands the result to the leader, which
    writes it to Asterisk; both show the new entry."""
    from datetime import UTC, datetime, timedelta

    from tests.support.calendar_servers import FeedServer
    from tests.support.calendar_servers import ics_event

    seed(fake_ami)
    feeds = FeedServer()
    await feeds.start()
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    feeds.put("alice.ics", ics_event("e1", now - timedelta(minutes=5), now + timedelta(hours=1)))
    config = tmp_path / "astpresence.toml"
    config.write_text(f'[[calendars]]\nuser = "2000"\nkind = "ics"\n'
                      f'url = "{feeds.url}/alice.ics"\nrefresh = 3600\ntimezone = "UTC"\n')
    env = clean_env(ASTPRESENCE_AMI_PORT=str(fake_ami.port),
                    ASTPRESENCE_AMI_SECRET=fake_ami.secret, ASTPRESENCE_DB_URL=postgres_url,
                    ASTPRESENCE_HA="1", ASTPRESENCE_CONFIG=str(config),
                    ASTPRESENCE_DB=str(tmp_path / "unused.db"))
    code, out, err = await run("token", "create", "--role", "admin", "--json", env=env)
    assert code == 0, err
    token = json.loads(out)["token"]
    a, b = Node("node-a", env, tmp_path), Node("node-b", env, tmp_path)
    try:
        await a.start()
        await a.wait_leading(token)
        await until(lambda: fake_ami.presences.get("2000", ("",))[0] == "away",
                    what="the meeting, from the leader's fetch")
        await b.start()
        await b.wait_following(token)
        later = now + timedelta(hours=2)
        feeds.put("alice.ics", ics_event("e1", now - timedelta(minutes=5), later))
        code, body = await b.call("POST", "/v1/calendars/2000/refresh", token)
        assert code == 200, body
        assert body["entries"][0]["end"] == later.isoformat()
        # The leader stored and wrote it: the message names the new end.
        await until(lambda: fake_ami.presences["2000"][2].endswith(f"{later:%H:%M}"),
                    what="the new end in Asterisk")
        for node in (a, b):
            code, body = await node.call("GET", "/v1/presence/2000/sources", token)
            (calendar,) = [s for s in body["sources"] if s["source"] == "calendar"]
            assert calendar["end"] == later.isoformat(), node.name
            # The feed's state is the leader's (it fetches), on every node.
            code, body = await node.call("GET", "/v1/calendars", token)
            (feed,) = body["calendars"]
            assert (code, feed["state"], feed["fetches"]) == (200, "ok", 2), node.name
    finally:
        for node in (a, b):
            if node.proc is not None and node.proc.returncode is None:
                node.proc.send_signal(signal.SIGTERM)
                await asyncio.wait_for(node.proc.wait(), 20)
        await feeds.stop()


async def test_a_command_cancelled_while_stored_leaves_no_row(postgres_url: str) -> None:
    """Why test_a_follower_serves_the_whole_api once counted a seventh command: the
    first node of a group follows for a moment before it takes the lock, and asks
    the (absent) leader for its contact cards. Cancelled just as the row was stored,
    that "cards" row stayed, and the node, now leading, ran it. The row must go."""
    from astpresence.cluster.relay import Follower
    from astpresence.store.postgres import PostgresStore

    stored, release = asyncio.Event(), asyncio.Event()

    class SlowStore(PostgresStore):
        async def add_command(self, node: str, kind: str, body: str) -> int:
            command = await super().add_command(node, kind, body)
            stored.set()
            await release.wait()  # cancelled here: after the commit, before the answer
            return command

    store = SlowStore(postgres_url)
    await store.open()
    try:
        async def nothing(*args: Any) -> int:
            return 0

        follower = Follower(postgres_url, "node-a", store, nothing, nothing)
        follower.ready.set()
        call = asyncio.create_task(follower.call("cards", {}))
        await asyncio.wait_for(stored.wait(), 10)
        call.cancel()
        await asyncio.sleep(0)  # the cancellation lands in the call
        release.set()  # the store answers, as it would a moment later
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(call, 10)
        assert await store.claim_commands() == []  # nothing left for a leader to run
    finally:
        release.set()
        await store.close()


async def test_call_handling_asked_of_a_follower(fake_ami: FakeAsterisk, postgres_url: str,
                                                 tmp_path: Path) -> None:
    """The rules are the leader's: a follower forwards the read and the write; the
    leader stores them and writes astdb; after a takeover the new leader has them."""
    rules = {"rules": [{"when": "away", "action": "voicemail"}]}
    async with started_group(fake_ami, postgres_url, tmp_path, "[calls]\n") as (a, b, token):
        await b.wait_following(token)
        code, body = await b.call("PUT", "/v1/users/2000/call-handling", token, rules)
        assert code == 200 and body["rules"] == rules["rules"], body
        code, body = await b.call("PUT", "/v1/users/2000/call-handling", token,
                                  {"rules": [{"when": "away", "action": "forward",
                                              "to": "0900123456"}]})
        assert code == 400 and "not allowed" in body["error"], body
        code, body = await b.call("GET", "/v1/users/2000/call-handling", token)
        assert code == 200 and body["rules"] == rules["rules"]
        code, _ = await b.call("PUT", "/v1/presence/2000", token, {"state": "away"})
        assert code == 200
        await until(lambda: fake_ami.astdb.get(("astpresence-calls", "2000/internal"))
                    == "v1|voicemail,u|||", what="the leader's astdb write")
        assert fake_ami.logins == 1  # only the leader talks to Asterisk
        a.proc.kill()  # type: ignore[union-attr]
        await a.proc.wait()  # type: ignore[union-attr]
        await b.wait_leading(token, timeout=20)
        code, body = await b.call("GET", "/v1/users/2000/call-handling", token)
        assert code == 200 and body["rules"] == rules["rules"]
        assert body["now"]["internal"]["summary"] == "calls go to voicemail"


async def test_sessions_through_a_follower_and_a_takeover(fake_ami: FakeAsterisk,
                                                          postgres_url: str,
                                                          tmp_path: Path) -> None:
    """A session opened on a follower lives on the leader; after a takeover the client
    is told its session is unknown (404), opens a new one and goes on."""
    async with started_group(fake_ami, postgres_url, tmp_path) as (a, b, admin):
        await b.wait_following(admin)
        code, out, err = await run("token", "create", "--role", "user", "--user", "2000",
                                   "--json", env=b.env)
        assert code == 0, err
        alice = json.loads(out)["token"]
        code, body = await b.call("POST", "/v1/me/sessions", alice, {"kind": "desktop"})
        assert code == 201, body
        sid = body["session"]["id"]
        code, body = await b.call("PUT", f"/v1/me/sessions/{sid}", alice,
                                  {"state": "idle", "idle_seconds": 400})
        assert code == 200, body

        async def away(node: Node) -> bool:
            _, view = await node.call("GET", "/v1/presence/2000", admin)
            return bool(view["chosen"] == {"state": "away", "subtype": "idle", "message": ""})
        await eventually(lambda: away(a), "the leader to have the idle session")
        await eventually(lambda: away(b), "the follower to show it")
        code, body = await a.call("GET", "/v1/users/2000/sessions", admin)
        assert [s["id"] for s in body["sessions"]] == [sid]
        a.proc.kill()  # type: ignore[union-attr]
        await a.proc.wait()  # type: ignore[union-attr]
        await b.wait_leading(admin, timeout=20)
        code, _ = await b.call("PUT", f"/v1/me/sessions/{sid}", alice, {"state": "active"})
        assert code == 404  # the new leader never had it: open a new one
        code, body = await b.call("POST", "/v1/me/sessions", alice, {"kind": "desktop"})
        assert code == 201
        code, _ = await b.call("PUT", f"/v1/me/sessions/{body['session']['id']}", alice,
                               {"state": "locked"})
        assert code == 200

        async def away_from_desk() -> bool:
            _, view = await b.call("GET", "/v1/presence/2000", admin)
            return bool(view["chosen"]["subtype"] == "away-from-desk")
        await eventually(away_from_desk, "the new leader to take the locked session")
