"""Shared fixtures."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from pathlib import Path
from collections.abc import Awaitable, Iterator
from typing import AsyncIterator, Protocol

import pytest

from astpresence.app.settings import Config
from astpresence.domain.records import UserRecord
from tests.support.api import PRIVACY
from tests.support.e2e import RunningDaemon, make_config, seed, start_daemon
from tests.support.fakeami import FakeAsterisk
from tests.support.postgres import PostgresServer


@pytest.fixture
async def fake_ami() -> AsyncIterator[FakeAsterisk]:
    """A started :class:`~tests.support.fakeami.FakeAsterisk` on 127.0.0.1, stopped after the test."""
    fake = FakeAsterisk()
    await asyncio.wait_for(fake.start(), 5.0)
    try:
        yield fake
    finally:
        await asyncio.wait_for(fake.stop(), 5.0)


@pytest.fixture
async def daemon(fake_ami: FakeAsterisk, tmp_path: Path) -> AsyncIterator[RunningDaemon]:
    """The daemon on the seeded fake, with presence levels (users 2000-2002), started
    through ``Daemon.run()``; stopped after the test."""
    seed(fake_ami)
    cfg = replace(make_config(fake_ami, tmp_path / "p.db",
                              users=(UserRecord("2002", name="Carol", origin="config"),)),
                  privacy=PRIVACY, writes_per_second=10_000.0, write_burst=10_000)
    running = await start_daemon(cfg)
    yield running
    await running.stop()


class Starter(Protocol):
    def __call__(self, config: Config, *, wait: bool = True) -> Awaitable[RunningDaemon]: ...


@pytest.fixture
async def daemons() -> AsyncIterator[Starter]:
    """Start daemons with ``await daemons(config)``; those still running are stopped
    after the test (a test may stop and restart them itself)."""
    started: list[RunningDaemon] = []

    async def start(config: Config, *, wait: bool = True) -> RunningDaemon:
        running = await start_daemon(config, wait=wait)
        started.append(running)
        return running

    yield start
    for running in started:
        if not running.task.done():
            await running.stop()


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """One throwaway PostgreSQL for the session (tests/support/postgres.py); each test
    takes a database of its own from :func:`postgres_url`."""
    server = PostgresServer()
    server.start()
    try:
        yield server
    finally:
        server.cleanup()


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> str:
    """A new, empty database on the session's server."""
    return postgres_server.create_database()
