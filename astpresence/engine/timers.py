"""Deadlines: when each user's presence may change by time alone (windows, offline);
and the one backoff every reconnect loop uses."""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import logging
import random
from collections.abc import Awaitable, Callable
from datetime import datetime

logger = logging.getLogger(__name__)

#: Reconnect delays in seconds; the last one repeats (STYLE.md, Lifecycle).
BACKOFF = (1.0, 2.0, 4.0, 8.0, 16.0, 32.0)

#: Longest single wait: a clock that jumps is noticed within this many seconds.
MAX_WAIT = 3600.0


class Deadlines:
    """One task waits for the earliest deadline and hands the users due to ``on_due``."""

    def __init__(self, clock: Callable[[], datetime],
                 on_due: Callable[[list[str], datetime], Awaitable[None]]) -> None:
        self._clock = clock
        self._on_due = on_due
        self._at: dict[str, datetime] = {}
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def set(self, uid: str, when: datetime | None) -> None:
        """The next time ``uid`` must be decided again (None: only on input)."""
        old = self._at.get(uid)
        if when is None:
            self._at.pop(uid, None)
        else:
            self._at[uid] = when
            if old is None or when < old:
                self._wakeup.set()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="presence-timer")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def _run(self) -> None:
        while True:
            self._wakeup.clear()
            if not self._at:
                await self._wakeup.wait()
                continue
            delay = (min(self._at.values()) - self._clock()).total_seconds()
            if delay > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wakeup.wait(), min(delay, MAX_WAIT))
                continue
            now = self._clock()
            due = [uid for uid, at in self._at.items() if at <= now]
            for uid in due:
                del self._at[uid]
            try:
                await self._on_due(due, now)
            except Exception:
                logger.exception("could not apply timed changes")


def backoff_delay(attempt: int, steps: tuple[float, ...] = BACKOFF,
                  rng: random.Random | None = None) -> float:
    """Delay before retry ``attempt`` (1-based) after ``steps``, with +-20% jitter so
    that many clients cut off at once do not come back at once."""
    base = steps[max(1, min(attempt, len(steps))) - 1]
    return base * (rng or random).uniform(0.8, 1.2)


async def woken_within(wake: asyncio.Event, stop: asyncio.Event, delay: float) -> None:
    """Wait until ``wake`` or ``stop`` is set, or ``delay`` seconds (at least 10 ms) have
    passed; ``wake`` is cleared first (a timer loop's "something changed")."""
    wake.clear()
    await woken_or(wake, stop, delay)


async def woken_or(wake: asyncio.Event, stop: asyncio.Event, delay: float) -> None:
    """:func:`woken_within` without clearing ``wake`` first (the caller cleared it before
    its work, so a wake during the work is not lost)."""
    waiters = {asyncio.ensure_future(wake.wait()), asyncio.ensure_future(stop.wait())}
    try:
        await asyncio.wait(waiters, timeout=max(delay, 0.01),
                           return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()


async def stopped_within(stop: asyncio.Event, delay: float) -> bool:
    """Wait ``delay`` seconds or until ``stop``; True when stopped."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), delay)
    return stop.is_set()


class DueTimes:
    """When to look at each person again, earliest first: a heap, with entries made
    stale by a newer time skipped when they come up, and rebuilt once stale ones
    outnumber the live ones (so it never holds more than about twice the people)."""

    def __init__(self) -> None:
        self._at: dict[str, datetime] = {}
        self._heap: list[tuple[datetime, str]] = []

    def get(self, uid: str) -> datetime | None:
        return self._at.get(uid)

    def set(self, uid: str, due: datetime) -> bool:
        """True when ``due`` is now the earliest of all."""
        self._at[uid] = due
        heapq.heappush(self._heap, (due, uid))
        if len(self._heap) > 2 * len(self._at) + 1024:
            self._heap = [(t, u) for u, t in self._at.items()]
            heapq.heapify(self._heap)
        return self._heap[0] == (due, uid)

    def drop(self, uid: str) -> None:
        self._at.pop(uid, None)

    def pop_due(self, now: datetime) -> list[str]:
        out = []
        while self._heap and self._heap[0][0] <= now:
            due, uid = heapq.heappop(self._heap)
            if self._at.get(uid) == due:
                del self._at[uid]
                out.append(uid)
        return out

    def next(self) -> datetime | None:
        while self._heap and self._at.get(self._heap[0][1]) != self._heap[0][0]:
            heapq.heappop(self._heap)
        return self._heap[0][0] if self._heap else None
