"""Two real Asterisk servers: one daemon following both, and an HA pair on PostgreSQL."""

from __future__ import annotations

import asyncio
import subprocess
import time
from typing import Any

import pytest

from astpresence.domain.model import Presence, State
from tests.support.postgres import PostgresServer

from .asterisk import presence_in_asterisk, set_device_state, set_in_asterisk, wait_presence
from .asterisk import wait_view
from .conftest import (IT_CONFIG, IT_DEVICE, Server, asterisk_cli, connect, eventually,
                       synced_on_every_server)

pytestmark = pytest.mark.timeout(180)

ON_THE_PHONE = Presence(State.DND, "on-the-phone")  # a call reads as busy


@pytest.fixture
async def both(it: Server, it_b: Server, ami: Any, ami_b: Any) -> tuple[Any, Any]:
    """User 2000 available on both servers, its test phone idle on both."""
    for client in (ami, ami_b):
        await set_in_asterisk(client, "2000", Presence(State.AVAILABLE))
        await set_device_state(client, IT_DEVICE, "NOT_INUSE")
    yield ami, ami_b
    for client in (ami, ami_b):
        if client.connected:
            await set_device_state(client, IT_DEVICE, "NOT_INUSE")


async def test_a_change_on_one_server_reaches_the_other(it: Server, it_b: Server, both: Any,
                                                        daemon_factory: Any) -> None:
    ami, ami_b = both
    daemon = daemon_factory(servers=[it, it_b])
    await daemon.wait_ready()
    wanted = Presence(State.AWAY, "lunch", "Zurück um 14 Uhr")
    await set_in_asterisk(ami_b, "2000", wanted)  # as a phone on server B would
    await wait_view(daemon, "2000", state="away", source="manual")
    await wait_presence(ami, "2000", wanted, "server A to get B's change")
    # and a change through the daemon goes to both
    assert (await daemon.cli("set", "2000", "dnd")).returncode == 0
    for client in (ami, ami_b):
        await wait_presence(client, "2000", Presence(State.DND))


async def test_a_call_on_server_b_overlays_on_both(it: Server, it_b: Server, both: Any,
                                                   daemon_factory: Any) -> None:
    ami, ami_b = both
    daemon = daemon_factory(servers=[it, it_b])
    await daemon.wait_ready()
    await set_device_state(ami_b, IT_DEVICE, "INUSE")
    for client in (ami, ami_b):
        await wait_presence(client, "2000", ON_THE_PHONE)
    await set_device_state(ami_b, IT_DEVICE, "NOT_INUSE")
    for client in (ami, ami_b):
        await wait_presence(client, "2000", Presence(State.AVAILABLE))


def link(status: dict[str, Any], name: str) -> dict[str, Any]:
    found: dict[str, Any] = next(n for n in status["asterisk"] if n["name"] == name)
    return found


async def test_a_stopped_server_is_caught_up(it: Server, it_b: Server, both: Any,
                                             daemon_factory: Any) -> None:
    if not it_b.start:
        pytest.skip("set ASTPRESENCE_IT_B_START to a command that starts server B again "
                    "(the test stops it with 'core stop now')")
    ami, ami_b = both
    daemon = daemon_factory(servers=[it, it_b])
    await daemon.wait_ready()
    await ami_b.close()
    await asterisk_cli(it_b, "core stop now")

    async def b_down() -> bool:
        st = await daemon.status()
        return bool(st) and not link(st, it_b.name)["connected"]

    await eventually(b_down, "the daemon to see server B down")
    wanted = Presence(State.XA, "holiday", "Back on Monday")
    res = await daemon.cli("set", "2000", "xa", "--subtype", wanted.subtype,
                           "--message", wanted.message)
    assert res.returncode == 0, res.stderr
    await wait_presence(ami, "2000", wanted)  # server A is not held up by B
    started = await asyncio.to_thread(subprocess.run, list(it_b.start), capture_output=True,
                                      text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert started.returncode == 0, started.stderr
    await daemon.wait_ready(timeout=60)  # reconnect backoff: up to a few seconds
    client = await connect(it_b)
    try:
        await wait_presence(client, "2000", wanted, "server B to be caught up after its restart")
    finally:
        await client.close()


async def test_an_ha_pair_takes_over_on_both_servers(it: Server, it_b: Server, both: Any,
                                                     daemon_factory: Any,
                                                     postgres_server: PostgresServer) -> None:
    """kill -9 of the leader: the follower leads and writes to both servers within 5 s."""
    ami, ami_b = both
    url = postgres_server.create_database()
    ha = "\n[ha]\nenabled = true\nnode = \"{}\"\n"
    leader = daemon_factory(IT_CONFIG + ha.format("n1"), servers=[it, it_b], db_url=url)
    await leader.wait_ready()
    follower = daemon_factory(IT_CONFIG + ha.format("n2"), servers=[it, it_b], db_url=url,
                              token=leader.token)

    def following(st: dict[str, Any]) -> bool:
        return bool(st["ha"]["following"]) and st["ha"]["leader"] is not None

    st = await follower.wait_ready(ready=following)
    assert st["role"] == "follower"
    assert (await follower.cli("set", "2000", "away")).returncode == 0  # run by the leader
    for client in (ami, ami_b):
        await wait_presence(client, "2000", Presence(State.AWAY))

    killed = time.monotonic()
    leader.kill()

    def leading(st: dict[str, Any]) -> bool:
        return st.get("role") == "leader" and synced_on_every_server(st)

    await follower.wait_ready(ready=leading, timeout=10)
    res = await follower.cli("set", "2000", "dnd")
    assert res.returncode == 0, res.stderr
    for client in (ami, ami_b):
        await wait_presence(client, "2000", Presence(State.DND))
    took = time.monotonic() - killed
    print(f"kill -9 of the leader to dnd written on both servers: {took:.2f} s")
    assert took < 5.0, f"the takeover and write took {took:.2f} s"
    assert await presence_in_asterisk(ami_b, "2000") == Presence(State.DND)
