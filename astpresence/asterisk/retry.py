"""Writes Asterisk refused, retried with backoff: one mechanism for every kind.

Presence (``PRESENCE_STATE``), the BLF mirror (``DEVICE_STATE``) and queue
pauses (``QueuePause``) can each be refused: a module not loaded, a
permission missing, a value Asterisk will not take. A refused write is never
dropped: it stays wanted (clients see ``pending``), is tried again after 1, 2,
4 ... 60 s, and shows in ``status`` and the metrics until it goes through.

The rules, in one place:
- a failure of the value still wanted blocks that value until its retry time;
- a different value is not blocked: it is tried at once (attempts start over);
- a retry that was sent is not due again (:meth:`Failures.retrying`) until
  it fails once more (the next delay is longer) or goes through;
- :meth:`Failures.clear` forgets a key (its write went through, or nothing is
  wanted any more); :meth:`Failures.reset` forgets all (after a new login,
  everything is tried again at once).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Hashable, Iterator
from dataclasses import dataclass
from typing import Generic, TypeVar

#: Seconds before retry number N (1-based); the last one repeats.
RETRY_DELAYS = (1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 60.0)

K = TypeVar("K", bound=Hashable)


@dataclass(frozen=True, slots=True)
class Failure:
    value: object
    error: str
    attempts: int
    retry_at: float  # on the clock of the Failures that holds it


def retry_delay(attempts: int) -> float:
    return RETRY_DELAYS[min(attempts, len(RETRY_DELAYS)) - 1]


class Failures(Generic[K]):
    """The refused writes of one kind, by key (user, queue member...)."""

    def __init__(self, kind: str, clock: Callable[[], float] = time.monotonic) -> None:
        self.kind = kind
        self._clock = clock
        self._by_key: dict[K, Failure] = {}
        self.total = 0  # failures ever recorded, for the metrics

    def failed(self, key: K, value: object, error: str) -> Failure:
        """Record a refusal of ``value``; returns the failure with its retry time."""
        old = self._by_key.get(key)
        attempts = old.attempts + 1 if old is not None and old.value == value else 1
        failure = Failure(value, error, attempts, self._clock() + retry_delay(attempts))
        self._by_key[key] = failure
        self.total += 1
        return failure

    def blocks(self, key: K, value: object) -> bool:
        """True while ``value`` failed for ``key`` and its retry time has not come."""
        failure = self._by_key.get(key)
        return failure is not None and failure.value == value and \
            failure.retry_at > self._clock()

    def retrying(self, key: K) -> None:
        """The retry of ``key`` was sent: not due again until it fails or clears."""
        failure = self._by_key.get(key)
        if failure is not None:
            self._by_key[key] = Failure(failure.value, failure.error, failure.attempts, math.inf)

    def clear(self, key: K) -> None:
        self._by_key.pop(key, None)

    def reset(self) -> None:
        self._by_key.clear()

    def due(self) -> list[K]:
        """Keys whose retry time has come."""
        if not self._by_key:
            return []  # the common case, on every take of the writer
        now = self._clock()
        return [key for key, f in self._by_key.items() if f.retry_at <= now]

    def next_retry_in(self) -> float | None:
        """Seconds until the earliest retry (0 if one is due), None if none is waiting."""
        if not self._by_key:
            return None
        first = min((f.retry_at for f in self._by_key.values()), default=math.inf)
        return None if first == math.inf else max(0.0, first - self._clock())

    def now(self) -> float:
        return self._clock()

    def __len__(self) -> int:
        return len(self._by_key)

    def __contains__(self, key: object) -> bool:
        return key in self._by_key

    def items(self) -> Iterator[tuple[K, Failure]]:
        return iter(list(self._by_key.items()))

    def get(self, key: K) -> Failure | None:
        return self._by_key.get(key)
