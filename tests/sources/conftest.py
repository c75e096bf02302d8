"""Fixtures of the calendar tests: a feed server, an HTTP session, the parser workers."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest

from astpresence.sources.calendars.worker import ParserPool
from tests.support.calendar_servers import FeedServer


@pytest.fixture
async def feeds() -> AsyncIterator[FeedServer]:
    server = FeedServer()
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
async def parser() -> AsyncIterator[ParserPool]:
    """The calendar worker processes, as CalendarFeeds has them."""
    pool = ParserPool(timeout=20)
    yield pool
    await pool.close()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        yield session
