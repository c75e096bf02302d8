"""The desktop agent on Linux against a private dbus-daemon with a logind stand-in
(tests/support/logind.py): lock/unlock, idle/active and logout reach the daemon as
presence; the command itself closes its session on SIGTERM."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from astpresence.agent.client import Agent
from astpresence.agent.readers import LogindReader, ReaderError, hid_idle_seconds
from astpresence.sources.sessions.model import SessionRules
from astpresence.web.auth import Role
from tests.conftest import Starter
from tests.support.e2e import RunningDaemon, make_config, until
from tests.support.fakeami import FakeAsterisk, Hint
from tests.support.logind import LogindStandIn

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
async def logind(tmp_path: Path) -> AsyncIterator[LogindStandIn]:
    async with LogindStandIn(tmp_path) as stand_in:
        yield stand_in


async def daemon(daemons: Starter, fake: FakeAsterisk, tmp_path: Path) -> RunningDaemon:
    fake.hints[:] = [Hint("2000", "default", ["PJSIP/2000"], "CustomPresence:2000")]
    fake.devices["PJSIP/2000"] = "UNAVAILABLE"  # no phone registered
    rules = SessionRules(expire_after=timedelta(seconds=30))
    return await daemons(replace(make_config(fake, tmp_path / "p.db"),
                                 sources={"sessions": rules}))


def presence(d: RunningDaemon) -> tuple[str, str]:
    p = d.service.view("2000").presence
    return p.state.value, p.subtype


async def test_lock_idle_and_logout_reach_the_daemon(
        fake_ami: FakeAsterisk, tmp_path: Path, daemons: Starter,
        logind: LogindStandIn) -> None:
    d = await daemon(daemons, fake_ami, tmp_path)
    token = await d.make_token(Role.USER, "2000")
    reader = LogindReader(logind.address)
    await reader.open()
    agent = Agent(d.url, token, reader, client="test agent", interval=5)
    stop = asyncio.Event()
    task = asyncio.create_task(agent.run(stop))
    try:
        source = d.daemon.sources["sessions"]
        await until(lambda: bool(source.of("2000")), what="the session open")  # type: ignore[attr-defined]
        before = presence(d)
        logind.session.set_locked(True)  # the screen locks
        await until(lambda: presence(d) == ("xa", "away-from-desk"), what="locked -> xa")
        logind.session.set_locked(False)
        await until(lambda: presence(d) == before, what="unlocked")
        logind.session.set_idle(True, seconds_ago=400)  # no input for 400 s
        await until(lambda: presence(d) == ("away", "idle"), what="idle -> away")
        logind.session.set_idle(False)
        await until(lambda: presence(d) == before, what="active again")
        logind.remove_session()  # logout
        await asyncio.wait_for(task, 10)  # the agent closes its session and ends
        await until(lambda: presence(d) == ("unavailable", "offline"), what="offline")
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)
        await reader.close()
    assert agent.counters.states == ["active", "locked", "active", "idle", "active"]
    assert agent.counters.opened == 1 and agent.counters.failures == 0


async def test_the_command_closes_its_session_on_sigterm(
        fake_ami: FakeAsterisk, tmp_path: Path, daemons: Starter,
        logind: LogindStandIn) -> None:
    d = await daemon(daemons, fake_ami, tmp_path)
    token = await d.make_token(Role.USER, "2000")
    token_file = tmp_path / "token"
    token_file.write_text(token + "\n", encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith("ASTPRESENCE_")}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "astpresence", "--api", d.url, "agent", "--token-file",
        str(token_file), "--bus", logind.address, "--reader", "logind", env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        stdin=asyncio.subprocess.DEVNULL)
    source: Any = d.daemon.sources["sessions"]
    try:
        await until(lambda: bool(source.of("2000")), timeout=15, what="the agent's session")
        assert source.of("2000")[0].client.startswith("astpresence agent on ")
    finally:
        proc.send_signal(signal.SIGTERM)
        _out, err = await asyncio.wait_for(proc.communicate(), 15)
    assert proc.returncode == 0, err.decode()
    assert "session closed" in err.decode()
    assert presence(d) == ("unavailable", "offline")  # closed, no phone registered


async def test_without_a_logind_session_the_agent_says_why(tmp_path: Path) -> None:
    reader = LogindReader(f"unix:path={tmp_path / 'nobus'}")
    with pytest.raises(ReaderError, match="no logind session over D-Bus"):
        await reader.open()


def test_macos_idle_time_from_ioreg() -> None:
    sample = ('  | |   "HIDIdleTime" = 123456789000\n'
              '  | |   "HIDParameters" = {"HIDKeyboardModifierMappingPairs"=()}\n')
    assert hid_idle_seconds(sample) == pytest.approx(123.456789)
    assert hid_idle_seconds("no such key") is None


async def test_the_screensaver_when_logind_cannot_tell(
        fake_ami: FakeAsterisk, tmp_path: Path, daemons: Starter,
        logind: LogindStandIn) -> None:
    from astpresence.agent.readers import FallbackReader, ScreenSaverReader

    saver = await logind.serve_screensaver()
    d = await daemon(daemons, fake_ami, tmp_path)
    token = await d.make_token(Role.USER, "2000")
    # logind is asked on a bus where it is not: the screensaver on the session bus
    reader = FallbackReader(LogindReader(f"unix:path={tmp_path / 'nobus'}"),
                            ScreenSaverReader(logind.address))
    await reader.open()
    agent = Agent(d.url, token, reader, interval=0.5)
    stop = asyncio.Event()
    task = asyncio.create_task(agent.run(stop))
    try:
        source: Any = d.daemon.sources["sessions"]
        await until(lambda: bool(source.of("2000")), what="the session open")
        saver.lock(True)  # the screen locks: ActiveChanged
        await until(lambda: presence(d) == ("xa", "away-from-desk"), what="locked")
        saver.lock(False)
        saver.idle_seconds = 400  # asked at the next report (every 0.5 s here)
        await until(lambda: presence(d) == ("away", "idle"), what="idle")
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)
        await reader.close()
    assert agent.counters.states[:3] == ["active", "locked", "idle"] or \
        agent.counters.states[:4] == ["active", "locked", "active", "idle"]
