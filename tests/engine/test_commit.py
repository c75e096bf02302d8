"""The group commit: who waits, who lingers, and what shares a transaction."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest

from astpresence.engine.commit import GroupCommitter
from astpresence.store.base import Batch
from tests.support.memory_store import MemoryStore


class CountingStore(MemoryStore):
    def __init__(self) -> None:
        super().__init__()
        self.commits: list[int] = []  # meta keys per transaction

    async def commit(self, batch: Batch) -> list[int]:
        self.commits.append(len(batch.meta))
        return await super().commit(batch)


def meta(key: str) -> Batch:
    return Batch(meta={key: "x"})


@contextlib.asynccontextmanager
async def running(store: CountingStore, **options: Any) -> AsyncIterator[GroupCommitter]:
    """A started committer on ``store`` (opened here), stopped afterwards."""
    await store.open()
    committer = GroupCommitter(store, **options)
    committer.start()
    try:
        yield committer
    finally:
        await committer.stop()


async def test_changes_nobody_waits_for_share_one_transaction() -> None:
    store = CountingStore()
    async with running(store, linger=60) as committer:
        for i in range(3):
            committer.enqueue(meta(f"k{i}"))
            await asyncio.sleep(0)  # the writer runs in between: it lingers
        await committer.drain()  # a waiter: the linger ends at once
        assert store.commits == [3]


async def test_a_waited_for_change_does_not_linger() -> None:
    store = CountingStore()
    async with running(store, linger=60) as committer:
        committer.enqueue(meta("from-asterisk"))
        await asyncio.sleep(0)
        # With a 60 s linger this would time out if submit() had to wait it out.
        await asyncio.wait_for(committer.submit(meta("from-a-client")), 5)
        assert store.commits == [2]
        assert await store.get_meta("from-asterisk") == "x"


class FailingStore(CountingStore):
    async def commit(self, batch: Batch) -> list[int]:
        self.commits.append(len(batch.meta))
        raise RuntimeError("disk full")


async def test_a_transaction_holds_at_most_max_batches() -> None:
    store = CountingStore()
    async with running(store, max_batches=2, linger=60) as committer:
        for i in range(5):
            committer.enqueue(meta(f"k{i}"))
        await committer.drain()
        assert store.commits == [2, 2, 1]
        assert [await store.get_meta(f"k{i}") for i in range(5)] == ["x"] * 5


class HeldStore(CountingStore):
    """Holds each commit until released, and says when one has begun (a barrier)."""

    def __init__(self) -> None:
        super().__init__()
        self.begun = asyncio.Event()
        self.release = asyncio.Event()

    async def commit(self, batch: Batch) -> list[int]:
        self.begun.set()
        await self.release.wait()
        return await super().commit(batch)


async def test_a_cancelled_waiter_does_not_cancel_the_others() -> None:
    store = HeldStore()
    async with running(store, linger=60) as committer:
        first = asyncio.ensure_future(committer.submit(meta("a")))
        second = asyncio.ensure_future(committer.submit(meta("b")))
        await asyncio.wait_for(store.begun.wait(), 5)  # both are in the commit under way
        first.cancel()
        store.release.set()
        await asyncio.wait_for(second, 5)  # still told, not cancelled
        assert await store.get_meta("a") == "x"  # the cancelled one's change was kept
        assert store.commits == [2]


async def test_a_failed_commit_is_logged_once_and_every_waiter_learns(
        caplog: pytest.LogCaptureFixture) -> None:
    store = FailingStore()
    async with running(store, linger=60) as committer:
        for i in range(3):
            committer.enqueue(meta(f"k{i}"))  # from Asterisk: nobody waits
        with pytest.raises(RuntimeError, match="disk full"):
            await asyncio.wait_for(committer.submit(meta("api")), 5)
        failures = [r for r in caplog.records if "store write failed" in r.getMessage()]
        assert len(failures) == 1
        assert "4 change(s) not stored" in failures[0].getMessage()
