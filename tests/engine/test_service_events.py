"""Service events: clients can tell when presence may be stale (link down, shutdown)."""

from __future__ import annotations

import asyncio
import json
import os
import sys

import aiohttp

from tests.support.api import Stream
from tests.support.e2e import RunningDaemon, until
from tests.support.fakeami import FakeAsterisk


async def test_link_down_and_synced_reach_every_stream(daemon: RunningDaemon,
                                                       fake_ami: FakeAsterisk) -> None:
    s = await Stream.open(daemon, {"token": daemon.token, "subscribe": ["2000"]})
    try:
        hello = await s.next()
        assert hello["link"]["state"] == "synced"
        assert hello["link"]["asterisk"] == f"{fake_ami.host}:{fake_ami.port}"
        await fake_ami.drop_clients()
        down = await s.next()
        assert (down["type"], down["state"]) == ("link", "down")
        assert down["since"] and "link lost" in down["reason"]
        synced = await s.next(timeout=10)  # the reconnect waits 1 s +-20%
        assert (synced["type"], synced["state"]) == ("link", "synced")
        assert synced["since"] >= down["since"]
    finally:
        await s.close()


async def test_a_stream_opened_while_down_is_told_in_its_hello(daemon: RunningDaemon,
                                                               fake_ami: FakeAsterisk) -> None:
    await fake_ami.stop()
    await until(lambda: not daemon.service.synced, what="link down")
    s = await Stream.open(daemon, {"token": daemon.token, "subscribe": ["*"]})
    try:
        link = (await s.next())["link"]
        assert link["state"] == "down" and link["reason"]
    finally:
        await s.close()
        await fake_ami.start()


async def test_shutdown_is_said_before_the_stream_closes(daemon: RunningDaemon) -> None:
    s = await Stream.open(daemon, {"token": daemon.token, "subscribe": ["*"]})
    try:
        await s.next()
        stopping = asyncio.create_task(daemon.stop())
        messages = []
        while True:
            msg = await asyncio.wait_for(s.ws.receive(), 10)
            if msg.type != aiohttp.WSMsgType.TEXT:
                break
            messages.append(json.loads(msg.data))
        assert messages[-1] == {"type": "shutdown"}
        assert s.ws.close_code == 1001
        await stopping
    finally:
        await s.close()


async def test_watch_prints_service_events(daemon: RunningDaemon,
                                           fake_ami: FakeAsterisk) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ASTPRESENCE_")}
    env["ASTPRESENCE_TOKEN"] = daemon.token
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "astpresence", "--api", daemon.url, "watch", "--json",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
        stdin=asyncio.subprocess.DEVNULL, env=env)
    assert proc.stdout is not None
    try:
        await until(lambda: daemon.service.events.subscribers == 1, what="watch connected")
        await fake_ami.drop_clients()
        await until(lambda: daemon.daemon.bridge.status.reconnects >= 1, timeout=10,
                    what="the reconnect")
        await daemon.wait_synced(timeout=10)
        await daemon.stop()
        events = []
        while not events or events[-1]["type"] != "shutdown":
            line = await asyncio.wait_for(proc.stdout.readline(), 10)
            assert line, "watch ended before printing the shutdown"
            events.append(json.loads(line))
        kinds = [(e["type"], e.get("state")) for e in events]
        assert kinds[:2] == [("link", "down"), ("link", "synced")]
        assert kinds[-1] == ("shutdown", None)
        # The link may be seen closing first, as the daemon stops.
        assert all(e["reason"] == "astpresence is stopping" for e in events[2:-1])
    finally:
        proc.kill()
        await proc.wait()
