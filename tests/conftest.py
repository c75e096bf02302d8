"""Shared fixtures."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from pathlib import Path
from typing import AsyncIterator

import pytest

from astpresence.records import UserRecord
from tests.support.api import PRIVACY
from tests.support.e2e import RunningDaemon, make_config, seed, start_daemon
from tests.support.fakeami import FakeAsterisk


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
                  privacy=PRIVACY)
    running = await start_daemon(cfg)
    yield running
    await running.stop()
