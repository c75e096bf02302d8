"""The AMI client's tests (this folder) run on both event loops the daemon may run on.

The daemon runs on uvloop's loop when it is installed (astpresence/app/loop.py)
and on asyncio's otherwise. Their transports differ (uvloop's TCP transport is
not an ``asyncio.Transport`` subclass, its reads come in other sizes), and the
client reads through a protocol of its own (ami/incoming.py): so each of its
tests runs on both. uvloop is one of the test extras.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

import pytest
import uvloop  # a test extra: its absence is an error, not a skip

from astpresence.asterisk.ami.client import AMIClient


def pytest_asyncio_loop_factories(
        config: pytest.Config, item: Any) -> Mapping[str, Callable[[], asyncio.AbstractEventLoop]]:
    return {"asyncio": asyncio.new_event_loop, "uvloop": uvloop.new_event_loop}


@pytest.fixture
async def clients() -> AsyncIterator[list[AMIClient]]:
    """Clients a test connects; each is closed after it."""
    made: list[AMIClient] = []
    yield made
    for client in made:
        await client.close()
