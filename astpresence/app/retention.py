"""History retention: old rows, and rows past each user's newest ``keep_rows``, go.

A client that writes in a loop (within its rate limit) must not be able to fill
the disk: ``[history] keep_days`` and ``keep_rows`` bound what is kept, in
SQLite and PostgreSQL alike (``Store.prune_history``). The pass runs at start
and then every :data:`INTERVAL` seconds, on the node that writes (the leader).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from astpresence.store.base import Store, StoreError

logger = logging.getLogger(__name__)

#: Seconds between two passes.
INTERVAL = 600.0


class Retention:
    def __init__(self, store: Store, keep_days: int, keep_rows: int, *,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC),
                 interval: float = INTERVAL) -> None:
        self._store = store
        self.keep = timedelta(days=keep_days)
        self.keep_rows = keep_rows
        self._clock = clock
        self._interval = interval
        self.pruned = 0

    async def prune(self) -> int:
        gone = await self._store.prune_history(self._clock() - self.keep, self.keep_rows)
        self.pruned += gone
        if gone:
            logger.info("history: %d row(s) past the retention (%d days, %d rows a user) "
                        "deleted", gone, self.keep.days, self.keep_rows)
        return gone

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await self.prune()
            except StoreError as exc:
                logger.warning("history retention: %s; trying again later", exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self._interval)
