"""The writer of one AMI link: sends what the server's outbox holds and reports
each outcome back (split out of the bridge, which starts it after each sync).

Many writes are in flight at once, in order per user: Asterisk runs one
session's actions in the order received.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections import deque
from collections.abc import Awaitable
from typing import Any

from astpresence.asterisk.ami.client import AMIClient, AMIError
from astpresence.asterisk.ari import AriClient
from astpresence.asterisk.sync import AsteriskSync
from astpresence.asterisk.write_kinds import KIND_BY_NAME, REFUSALS, Link, WriteKind
from astpresence.engine.metrics import Metrics

#: Writes in flight at once on one link. Asterisk answers a session's actions in
#: order, so more in flight costs no ordering; 64 made the writer stop and resume
#: once per answer during a burst (scenario 2: 0.41 -> 0.59 of the raw client).
MAX_CONCURRENT_WRITES = 1024


class Writer:
    """Sends what one link's outbox holds, driven by callbacks: the outbox tells the
    writer when there may be work (:meth:`Outbox.listen`), the writer takes it one
    loop turn later (so a handler that marks many users is one take) and sends.
    No task or event wakes per change: a change goes out two loop turns after the
    event that caused it (the take, then the socket write of that turn)."""

    def __init__(self, sync: AsteriskSync, ari: AriClient | None, metrics: Metrics,
                 log: logging.LoggerAdapter) -> None:  # type: ignore[type-arg]
        self._sync = sync
        self._ari = ari
        self._metrics = metrics
        self._log = log
        #: Taken but not sent yet: more than MAX_CONCURRENT_WRITES were in flight.
        self._queued: deque[tuple[WriteKind[Any, Any, Any], Any]] = deque()
        self._in_flight = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self._take_due = False
        self._retry: asyncio.TimerHandle | None = None

    async def run(self, client: AMIClient) -> None:
        """Send what the outbox holds until cancelled; many in flight at once, in
        order per user: Asterisk runs one session's actions in the order received.

        Raises what taking the writes raised (a bug): the bridge ends the link."""
        loop = asyncio.get_running_loop()
        self._loop = loop
        self._link = Link(client, self._ari, self._metrics, self._sync.per_device_dnd, self._log)
        self._failed: asyncio.Future[None] = loop.create_future()
        outbox = self._sync.outbox
        outbox.listen(self._wake)
        try:
            self._wake()  # a sync just marked every user (and due retries are taken)
            await self._failed
        finally:
            outbox.listen(None)
            if self._retry is not None:
                self._retry.cancel()
            self._queued.clear()
            for task in self._tasks:
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)

    def _wake(self) -> None:
        if not self._take_due and not self._failed.done():
            self._take_due = True
            self._loop.call_soon(self._take)

    def _take(self) -> None:
        self._take_due = False
        if self._failed.done():
            return
        try:
            for name, batch in self._sync.take_all().items():
                kind = KIND_BY_NAME[name]
                self._queued.extend((kind, write) for write in batch)
            self._send_queued()
            self._arm_retry(self._sync.outbox.next_retry_in())
        except Exception as exc:  # noqa: BLE001 - handed to run(), which raises it
            self._failed.set_exception(exc)

    def _arm_retry(self, delay: float | None) -> None:
        """Take again when a refused write is due (one timer, replaced each take)."""
        if self._retry is not None:
            self._retry.cancel()
            self._retry = None
        if delay is not None:
            self._retry = self._loop.call_later(delay, self._wake)

    def _send_queued(self) -> None:
        queued = self._queued
        while queued and self._in_flight < MAX_CONCURRENT_WRITES:
            kind, write = queued.popleft()
            self._in_flight += 1
            self._start(kind, write)

    def _done(self) -> None:
        """One write settled: its slot goes to the next queued one."""
        self._in_flight -= 1
        if self._queued and not self._failed.done():
            self._send_queued()

    def _start(self, kind: WriteKind[Any, Any, Any], write: Any) -> None:
        """Send one write. A send function that puts a single action in flight returns
        its future: no task then (the hot path); one that needs several awaits gets a
        task. Either way the slot is freed when the write is settled."""
        try:
            job = kind.send(self._link, write)
        except Exception as exc:  # a plain function refused before anything was sent
            self._done()
            self._settle(kind, write, exc)
            return
        if isinstance(job, asyncio.Future):
            job.add_done_callback(functools.partial(self._settled, kind, write))
            return
        task = asyncio.create_task(self._awaited(kind, write, job))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _awaited(self, kind: WriteKind[Any, Any, Any], write: Any,
                       job: Awaitable[Any]) -> None:
        error: Exception | None = None
        try:
            await job
        except (*REFUSALS, AMIError) as exc:
            error = exc
        finally:
            self._done()
        self._settle(kind, write, error)

    def _settled(self, kind: WriteKind[Any, Any, Any], write: Any,
                 future: asyncio.Future[Any]) -> None:
        self._done()
        if not future.cancelled():
            self._settle(kind, write, future.exception())

    def _settle(self, kind: WriteKind[Any, Any, Any], write: Any,
                error: BaseException | None) -> None:
        if error is None:
            self._sync.outbox.written(kind, write)
        elif isinstance(error, REFUSALS):
            self._sync.outbox.refused(kind, write, str(error))
        elif isinstance(error, AMIError):
            # Link lost: the resync after the next login decides what to write.
            self._log.debug("%s not confirmed: %s", kind.what(write), error)
        else:
            self._log.error("%s failed: %r", kind.what(write), error)

