"""Rate limits: what one client may ask for, so one client cannot slow everyone.

A token bucket per key (an API token's id, a user whose calendars are refreshed):
``rate`` requests a second on average, ``burst`` at once. The table holds at most
``max_keys`` keys: when it is full, keys whose bucket has filled up again (idle
clients) are forgotten first, so it never grows with what clients send.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass


class RateLimited(Exception):
    """Too many requests: try again after :attr:`retry_after` seconds (HTTP 429)."""

    def __init__(self, what: str, retry_after: float) -> None:
        super().__init__(f"{what}; try again in {max(retry_after, 0.1):.1f} s")
        self.retry_after = retry_after


@dataclass
class _Bucket:
    tokens: float
    at: float


class RateLimit:
    """``take(key)`` or :class:`RateLimited`."""

    def __init__(self, rate: float, burst: int, *, what: str = "too many requests",
                 max_keys: int = 100_000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("a rate limit needs rate > 0 and burst >= 1")
        self.rate, self.burst, self.what = rate, float(burst), what
        self.max_keys = max_keys
        self._clock = clock
        self._buckets: dict[str, _Bucket] = {}
        self.refused = 0

    def take(self, key: str) -> None:
        now = self._clock()
        bucket = self._buckets.get(key)
        if bucket is None:
            if len(self._buckets) >= self.max_keys:
                self._forget_full(now)
            bucket = self._buckets[key] = _Bucket(self.burst, now)
        bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.at) * self.rate)
        bucket.at = now
        if bucket.tokens < 1.0:
            self.refused += 1
            raise RateLimited(self.what, (1.0 - bucket.tokens) / self.rate)
        bucket.tokens -= 1.0

    def _forget_full(self, now: float) -> None:
        full = [k for k, b in self._buckets.items()
                if b.tokens + (now - b.at) * self.rate >= self.burst]
        for key in full:
            del self._buckets[key]
        if len(self._buckets) >= self.max_keys:  # all busy: the oldest goes
            del self._buckets[min(self._buckets, key=lambda k: self._buckets[k].at)]

    def __len__(self) -> int:
        return len(self._buckets)
