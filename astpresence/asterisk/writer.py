"""The writer of one AMI link: sends what the server's outbox holds and reports
each outcome back (split out of the bridge, which starts it after each sync).

Many writes are in flight at once, in order per user: Asterisk runs one
session's actions in the order received.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
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
    def __init__(self, sync: AsteriskSync, ari: AriClient | None, metrics: Metrics,
                 log: logging.LoggerAdapter) -> None:  # type: ignore[type-arg]
        self._sync = sync
        self._ari = ari
        self._metrics = metrics
        self._log = log

    async def run(self, client: AMIClient) -> None:
        """Send what the outbox holds; many in flight at once, in order per user.

        Asterisk runs one session's actions in the order received, so
        pipelining keeps each user's writes in order.
        """
        outbox = self._sync.outbox
        link = Link(client, self._ari, self._metrics, self._sync.per_device_dnd, self._log)
        sem = asyncio.Semaphore(MAX_CONCURRENT_WRITES)
        tasks: set[asyncio.Task[None]] = set()
        try:
            while True:
                # Wake for new work, or when a refused write is due again.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(outbox.wakeup.wait(), outbox.next_retry_in())
                for name, batch in self._sync.take_all().items():
                    kind = KIND_BY_NAME[name]
                    for write in batch:
                        await sem.acquire()
                        self._start(link, kind, write, sem, tasks)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    def _start(self, link: Link, kind: WriteKind[Any, Any, Any], write: Any,
               sem: asyncio.Semaphore, tasks: set[asyncio.Task[None]]) -> None:
        """Send one write. A send function that puts a single action in flight returns
        its future: no task then (the hot path); one that needs several awaits gets a
        task. Either way ``sem`` is released when the write is settled."""
        try:
            job = kind.send(link, write)
        except Exception as exc:  # a plain function refused before anything was sent
            sem.release()
            self._settle(kind, write, exc)
            return
        if isinstance(job, asyncio.Future):
            job.add_done_callback(functools.partial(self._settled, kind, write, sem))
            return
        task = asyncio.create_task(self._awaited(kind, write, job, sem))
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    async def _awaited(self, kind: WriteKind[Any, Any, Any], write: Any, job: Awaitable[Any],
                       sem: asyncio.Semaphore) -> None:
        error: Exception | None = None
        try:
            await job
        except (*REFUSALS, AMIError) as exc:
            error = exc
        finally:
            sem.release()
        self._settle(kind, write, error)

    def _settled(self, kind: WriteKind[Any, Any, Any], write: Any, sem: asyncio.Semaphore,
                 future: asyncio.Future[Any]) -> None:
        sem.release()
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

