"""Shared fixtures."""

from __future__ import annotations

import asyncio
from typing import AsyncIterator

import pytest

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
