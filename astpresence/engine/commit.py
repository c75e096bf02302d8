"""Group commit: one writer, many changes per transaction, each caller told when durable."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from astpresence.store.base import Batch, Store

logger = logging.getLogger(__name__)


#: How long a batch nobody waits for (a change that came from Asterisk) may wait
#: for others to share its transaction. At a steady 1,000 events/s, committing
#: each alone cost a thread hop and an fsync per event, most of a core with
#: three Asterisk servers (bench/README.md, scenario 7).
LINGER = 0.005


class GroupCommitter:
    """One writer: queues batches and commits whatever queued up in one go.

    Each caller of :meth:`submit` waits for the commit that contains its
    batch, so an acknowledged change is durable, and a burst costs one
    transaction. A batch queued with :meth:`enqueue` (nobody waits) lingers
    up to :data:`LINGER` for company, unless a waited-for batch comes.
    """

    def __init__(self, store: Store, max_batches: int = 2000, linger: float = LINGER) -> None:
        self._store = store
        self._linger = linger
        self._waited = asyncio.Event()  # a caller waits for a queued batch
        self._queue: asyncio.Queue[tuple[Batch, asyncio.Future[None]]] = asyncio.Queue()
        self._max = max_batches
        self._task: asyncio.Task[None] | None = None
        self._last: asyncio.Future[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="store-writer")

    async def stop(self) -> None:
        if self._task is None:
            return
        await self._queue.join()
        self._task.cancel()
        try:
            await self._task
        except asyncio.CancelledError:
            pass
        self._task = None

    def enqueue(self, batch: Batch) -> asyncio.Future[None] | None:
        """Queue a batch without waiting; the future is done once it is committed."""
        if not batch:
            return None
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait((batch, fut))  # unbounded
        self._last = fut
        return fut

    async def submit(self, batch: Batch) -> None:
        """Queue a batch and wait until it is committed (durable)."""
        fut = self.enqueue(batch)
        if fut is not None:
            self._waited.set()
            await fut

    async def drain(self) -> None:
        """Wait until every batch queued so far is committed (or has failed).

        Batches are committed in the order queued, so waiting for the last
        one is enough.
        """
        last = self._last
        if last is not None and not last.done():
            self._waited.set()
            await asyncio.wait({last})  # never raises; a cancelled caller leaves it be

    async def _run(self) -> None:
        while True:
            items = [await self._queue.get()]
            if not self._waited.is_set() and self._linger > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._waited.wait(), self._linger)
            self._waited.clear()
            while len(items) < self._max and not self._queue.empty():
                items.append(self._queue.get_nowait())
            merged = Batch()
            for batch, _ in items:
                merged.extend(batch)
            try:
                await self._store.commit(merged)
                for _, fut in items:
                    if not fut.done():
                        fut.set_result(None)
            except Exception as exc:  # every waiter must learn about it
                logger.error("store write failed: %s", exc)
                for _, fut in items:
                    if not fut.done():
                        fut.set_exception(exc)
            finally:
                for _ in items:
                    self._queue.task_done()


def log_store_failure(fut: asyncio.Future[None]) -> None:
    """Done-callback for batches nobody waits for (changes that came from Asterisk)."""
    if not fut.cancelled() and fut.exception() is not None:
        logger.error("a change from Asterisk was not stored: %s", fut.exception())
