"""Group commit: one writer, many changes per transaction, each caller told when durable."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging

from astpresence.store.base import Batch, Store

logger = logging.getLogger(__name__)


#: How long a batch nobody waits for (a change that came from Asterisk) may wait
#: for others to share its transaction. At a steady 1,000 events/s, committing
#: each alone cost a thread hop and an fsync per event, most of a core with
#: three Asterisk servers (bench/README.md, scenario 7); 5 ms still meant 200
#: commits a second, 20 ms is 50 (4% less CPU per change). What it risks is
#: small: a crash loses at most this much of what Asterisk told (Asterisk still
#: holds it and is read again at the next start), and an HA follower, which
#: sees committed changes, sees these up to this much later.
LINGER = 0.02


class _Group:
    """Batches that will share one transaction, merged as they come, and the one
    future that tells every one of them (no future, queue item or callback per
    change: bench/README.md, "The per-change path")."""

    __slots__ = ("batch", "count", "future")

    def __init__(self, future: asyncio.Future[None]) -> None:
        self.batch = Batch()
        self.count = 0
        self.future = future


class GroupCommitter:
    """One writer: queues batches and commits whatever queued up in one go.

    Each caller of :meth:`submit` waits for the commit that contains its
    batch, so an acknowledged change is durable, and a burst costs one
    transaction (at most ``max_batches`` batches each). A batch queued with
    :meth:`enqueue` (nobody waits) lingers up to :data:`LINGER` for company,
    unless a waited-for batch comes. A failed commit is logged here, once.
    """

    def __init__(self, store: Store, max_batches: int = 2000, linger: float = LINGER) -> None:
        self._store = store
        self._linger = linger
        self._waited = asyncio.Event()  # a caller waits for a queued batch
        self._queued = asyncio.Event()  # a group waits to be committed
        self._groups: collections.deque[_Group] = collections.deque()  # oldest first
        self._max = max_batches
        self._task: asyncio.Task[None] | None = None
        self._last: asyncio.Future[None] | None = None
        self._idle = asyncio.Event()  # nothing queued, nothing being committed
        self._idle.set()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="store-writer")

    async def stop(self) -> None:
        if self._task is None:
            return
        if self._groups:
            self._waited.set()
        await self._idle.wait()
        self._task.cancel()
        try:
            await self._task
        except asyncio.CancelledError:
            pass
        self._task = None

    def enqueue(self, batch: Batch) -> asyncio.Future[None] | None:
        """Queue a batch without waiting; the future is done once it is committed
        (shared with the batches committed with it: do not cancel it)."""
        if not batch:
            return None
        groups = self._groups
        group = groups[-1] if groups and groups[-1].count < self._max else None
        if group is None:
            group = _Group(asyncio.get_running_loop().create_future())
            groups.append(group)  # unbounded, like the changes that fill it
            self._queued.set()
            self._idle.clear()
        group.batch.extend(batch)
        group.count += 1
        self._last = group.future
        return group.future

    async def submit(self, batch: Batch) -> None:
        """Queue a batch and wait until it is committed (durable)."""
        fut = self.enqueue(batch)
        if fut is not None:
            self._waited.set()
            await asyncio.shield(fut)  # a cancelled caller leaves the others' future be

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
            await self._queued.wait()
            # Linger only for a group still filling: a full one gets no company.
            if len(self._groups) == 1 and not self._waited.is_set() and self._linger > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._waited.wait(), self._linger)
            group = self._groups.popleft()
            if not self._groups:  # whoever waits, waits for this group
                self._queued.clear()
                self._waited.clear()
            try:
                await self._store.commit(group.batch)
                if not group.future.done():
                    group.future.set_result(None)
            except Exception as exc:  # every waiter must learn about it
                logger.error("store write failed (%d change(s) not stored): %s",
                             group.count, exc)
                if not group.future.done():
                    group.future.set_exception(exc)
                    group.future.exception()  # logged above: retrieved, whoever waits
            finally:
                if not self._groups:
                    self._idle.set()
