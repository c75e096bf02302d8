"""Reading contact cards a few at a time (asterisk/cardreads.py, ``each``)."""

from __future__ import annotations

import asyncio

import pytest

from astpresence.asterisk.cardreads import MAX_CONCURRENT_READS, each


async def test_every_item_is_worked_once_a_few_at_a_time_without_a_task_each() -> None:
    started: list[int] = []
    running = 0
    most = 0
    tasks_seen = 0
    release = asyncio.Event()
    all_started = asyncio.Event()  # the first MAX_CONCURRENT_READS are under way

    async def work(item: int) -> None:
        nonlocal running, most, tasks_seen
        running += 1
        most = max(most, running)
        tasks_seen = max(tasks_seen, len(asyncio.all_tasks()))
        started.append(item)
        if len(started) == MAX_CONCURRENT_READS:
            all_started.set()
        await release.wait()
        running -= 1

    before = len(asyncio.all_tasks())
    job = asyncio.create_task(each(list(range(1000)), work))
    async with asyncio.timeout(5):
        await all_started.wait()
    assert running == MAX_CONCURRENT_READS  # and no more start while they wait
    release.set()
    await job
    assert sorted(started) == list(range(1000)) and started[:3] == [0, 1, 2]
    assert most == MAX_CONCURRENT_READS
    # one task per worker (and the job), not one per item
    assert tasks_seen <= before + 1 + MAX_CONCURRENT_READS


async def test_fewer_items_than_workers_and_none() -> None:
    seen: list[str] = []

    async def work(item: str) -> None:
        seen.append(item)

    await each(["a", "b"], work)
    await each([], work)
    assert seen == ["a", "b"]


async def test_a_failure_is_raised_to_the_caller() -> None:
    async def work(item: int) -> None:
        if item == 3:
            raise ConnectionError("link lost")

    with pytest.raises(ConnectionError, match="link lost"):
        await each(list(range(10)), work, limit=2)
