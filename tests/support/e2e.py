"""Helpers for end-to-end tests: a daemon in-process, the CLI as a subprocess."""

from __future__ import annotations

import asyncio
import itertools
import os
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Awaitable, Callable

from datetime import UTC, datetime

from astpresence.web.auth import Role, issue_token
from astpresence.app.settings import Config
from astpresence.asterisk.settings import AMIConfig
from astpresence.domain.model import Secret
from astpresence.app.daemon import Daemon
from astpresence.domain.rules import RuleConfig
from astpresence.domain.records import UserRecord
from tests.support.fakeami import FakeAsterisk, Hint

HINT_2000 = Hint("2000", "internal", ["PJSIP/2000"], "CustomPresence:2000")
HINT_2001 = Hint("2001", "internal", ["PJSIP/2001", "Custom:presence-2001"], "CustomPresence:2001")


def seed(fake: FakeAsterisk) -> None:
    """The PBX of the captures: two hinted users, their phones unplugged."""
    fake.hints[:] = [HINT_2000, HINT_2001]
    fake.devices.update({"PJSIP/2000": "UNAVAILABLE", "PJSIP/2001": "UNAVAILABLE",
                         "Custom:presence-2001": "INVALID"})


#: The rules most end-to-end tests run on: the defaults but for the registered rule
#: (a registered idle phone reads "available"), whose writes at start-up would add
#: to every count of writes and history rows. tests/engine/test_projection_e2e.py
#: runs the defaults as they are.
QUIET_RULES = RuleConfig(registered=None)


def make_config(fake: FakeAsterisk, db: Path, *, ping: float = 0.5,
                users: tuple[UserRecord, ...] = (),
                rules: RuleConfig = QUIET_RULES) -> Config:
    return Config(
        ami=AMIConfig(host=fake.host, port=fake.port, username=fake.username,
                      secret=Secret(fake.secret), ping_interval=ping, action_timeout=2.0,
                      connect_timeout=2.0),
        db=str(db),
        listen_host="127.0.0.1",
        listen_port=0,
        users=users,
        rules=rules,
    )


def nodes_config(fakes: dict[str, FakeAsterisk], db: Path, *, ping: float = 0.5,
                 rules: RuleConfig = QUIET_RULES) -> Config:
    """Several Asterisk servers (``[[asterisk]]``), one per fake, named by the keys."""
    return replace(make_config(next(iter(fakes.values())), db, ping=ping, rules=rules),
                   nodes=tuple(AMIConfig(name=name, host=f.host, port=f.port,
                                         username=f.username, secret=Secret(f.secret),
                                         ping_interval=ping, action_timeout=2.0,
                                         connect_timeout=2.0)
                               for name, f in fakes.items()))


_barriers = itertools.count()


async def barrier(running: RunningDaemon, fake: FakeAsterisk) -> None:
    """Wait until the daemon has done everything the fake's events so far asked for.

    To show that something did NOT happen, call this and then assert: every
    event the fake sent before is handled (a marker event, dispatched in wire
    order after them, has arrived), every write those events caused has
    reached the fake (a Ping on the same link is answered after them), and the
    store is drained. No fixed sleep: it waits exactly as long as that takes.
    """
    await barrier_all(running, [fake])


async def barrier_all(running: RunningDaemon, fakes: list[FakeAsterisk],
                      *, skip: tuple[str, ...] = ()) -> None:
    """:func:`barrier` over several Asterisk servers (the daemon's bridges, in order;
    those named in ``skip``, down, are left out)."""
    for fake in fakes:
        marker = f"Custom:barrier-{next(_barriers)}"
        await fake.external_device_change(marker, "INUSE")
        await until(lambda: marker in running.service.devices.states,
                    what="the barrier event")
    for node in running.service.nodes.values():
        if node.node not in skip:
            outbox = node.outbox
            await until(lambda: not outbox.pending, what="the writer to take its work")
    await asyncio.sleep(0)  # the writes it took start (each sends before its first await)
    for bridge in running.daemon.bridges:
        if bridge.name not in skip:
            await bridge.ping()
    await running.service.drain()


async def until(pred: Callable[[], bool], timeout: float = 5.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.01)


#: Admin token of each daemon the tests started, by URL; :func:`cli` uses it.
TOKENS: dict[str, str] = {}


@dataclass
class RunningDaemon:
    daemon: Daemon
    task: asyncio.Task[None]
    token: str = ""

    @property
    def auth(self) -> dict[str, str]:
        """Headers for an aiohttp client acting as admin."""
        return {"Authorization": f"Bearer {self.token}"}

    async def make_token(self, role: Role, user: str | None = None) -> str:
        secret, _ = await issue_token(self.daemon.store, role, user, "tests", datetime.now(UTC))
        return secret

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.daemon.port}"

    @property
    def service(self) -> Any:
        return self.daemon.service

    async def wait_synced(self, timeout: float = 5.0) -> None:
        await until(lambda: self.daemon.bridge.status.state == "synced", timeout, "sync")

    async def stop(self) -> None:
        self.daemon.stop_event.set()
        await asyncio.wait_for(self.task, 15)


async def start_daemon(config: Config, *, wait: bool = True) -> RunningDaemon:
    """``Daemon.run()`` as the CLI runs it, until it says it has started."""
    daemon = Daemon(config)
    task = asyncio.create_task(daemon.run())
    started = asyncio.create_task(daemon.started.wait())
    done, _ = await asyncio.wait({task, started}, timeout=10,
                                 return_when=asyncio.FIRST_COMPLETED)
    if task in done:
        started.cancel()
        task.result()  # start-up failed: raise why
    if started not in done:
        raise AssertionError("the daemon did not start within 10 s")
    running = RunningDaemon(daemon, task)
    running.token = await running.make_token(Role.ADMIN)
    TOKENS[running.url] = running.token
    if wait:
        await running.wait_synced()
    return running


@dataclass
class CliResult:
    code: int
    out: str
    err: str


async def cli(url: str, *args: str, timeout: float = 20.0, token: str | None = None,
              env_extra: dict[str, str] | None = None) -> CliResult:
    """Run ``python -m astpresence --api URL ARGS`` as a real subprocess.

    The token is the admin token of the daemon at ``url`` unless one is given.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("ASTPRESENCE_")}
    token = token if token is not None else TOKENS.get(url)
    if token:
        env["ASTPRESENCE_TOKEN"] = token
    env.update(env_extra or {})
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "astpresence", "--api", url, *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        stdin=asyncio.subprocess.DEVNULL, env=env,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout)
    assert proc.returncode is not None
    return CliResult(proc.returncode, out.decode(), err.decode())


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = 5.0,
                     what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.02)
