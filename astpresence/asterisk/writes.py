"""What astpresence keeps in Asterisk, and how it knows its own writes: one mechanism.

Presence (``PRESENCE_STATE``), the BLF mirror (``DEVICE_STATE``) and queue
pauses (``QueuePause``) are each a value per key (a user, a queue member) that
astpresence wants Asterisk to hold. A :class:`WriteTracker` keeps, per key:

- *confirmed*: the value last seen in Asterisk (an event, a list after login,
  the success of a write);
- *in flight*: values sent and not yet seen back, oldest first;
- *failures*: values Asterisk refused, with their retry time
  (:class:`~astpresence.asterisk.retry.Failures`).

Its rules, all of them:

1. A key needs a write when what Asterisk will hold once the writes in
   flight land (the newest in flight, else the confirmed value) differs from
   what is wanted, and that value is not waiting for a retry.
2. A value seen in Asterisk becomes the confirmed one. If it is in flight it
   is our own echo: it and every older value leave flight (Asterisk applies
   one session's writes in the order sent, so the older ones were
   overwritten), and a failure of the key is forgotten. Anything else was
   changed elsewhere: the caller decides what to do with it.
3. A refused value leaves flight and waits for its retry.
4. When the link is lost nothing in flight will be confirmed: flight empties.
5. After a login (:meth:`WriteTracker.reset`) the confirmed values are what
   Asterisk lists now, flight is empty and every refused value is tried again.
"""

from __future__ import annotations

import collections
import time
from collections.abc import Callable, Hashable, Iterable, Mapping
from typing import Generic, NamedTuple, TypeVar

from astpresence.domain.model import Presence
from astpresence.asterisk.retry import Failure, Failures

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

#: Values in flight per key, at most: a key whose echoes never come back (a
#: module not loaded) must not grow a queue.
MAX_IN_FLIGHT = 32


class WriteTracker(Generic[K, V]):
    """Confirmed, in-flight and refused values of one kind, by key (rules above)."""

    def __init__(self, kind: str, default: V, *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.kind = kind
        self._default = default
        self._confirmed: dict[K, V] = {}
        self._in_flight: dict[K, collections.deque[V]] = {}
        self.failures: Failures[K] = Failures(kind, clock)

    # -- what Asterisk holds ------------------------------------------------

    def confirmed(self, key: K) -> V:
        return self._confirmed.get(key, self._default)

    def knows(self, key: K) -> bool:
        return key in self._confirmed

    def current(self, key: K) -> V:
        """What Asterisk will hold once the writes in flight have landed."""
        queue = self._in_flight.get(key)
        return queue[-1] if queue else self.confirmed(key)

    def in_flight(self, key: K) -> bool:
        return bool(self._in_flight.get(key))

    def confirm(self, key: K, value: V) -> None:
        """Asterisk holds ``value`` (a list after login, a write that succeeded)."""
        self._confirmed[key] = value

    def seen(self, key: K, value: V) -> bool:
        """A value seen in Asterisk (rule 2); True when it was our own echo."""
        self._confirmed[key] = value
        queue = self._in_flight.get(key)
        if not queue or value not in queue:
            return False
        while queue.popleft() != value:
            pass
        self.failures.clear(key)
        return True

    def forget(self, key: K) -> None:
        """The key is gone from Asterisk (a queue member removed)."""
        self._confirmed.pop(key, None)
        self._in_flight.pop(key, None)
        self.failures.clear(key)

    # -- writes -------------------------------------------------------------

    def needs(self, key: K, want: V) -> bool:
        """Does Asterisk lack ``want``, counting what is in flight? (Rule 1, without retries.)"""
        return self.current(key) != want

    def take(self, key: K, want: V) -> bool:
        """True when ``want`` must be written now; it is then in flight (rule 1)."""
        if not self.needs(key, want):
            if not self.in_flight(key):
                self.failures.clear(key)  # Asterisk holds what is wanted
            return False
        if self.failures.blocks(key, want):
            return False
        queue = self._in_flight.setdefault(key, collections.deque(maxlen=MAX_IN_FLIGHT))
        queue.append(want)
        self.failures.retrying(key)
        return True

    def refused(self, key: K, value: V, error: str) -> Failure:
        """Asterisk refused ``value`` (rule 3)."""
        queue = self._in_flight.get(key)
        if queue and value in queue:
            queue.remove(value)
        return self.failures.failed(key, value, error)

    def due(self) -> list[K]:
        """Keys whose refused value may be tried again now."""
        return self.failures.due()

    # -- the link -----------------------------------------------------------

    def link_lost(self) -> None:
        """Rule 4."""
        self._in_flight.clear()

    def reset(self, confirmed: Mapping[K, V] | None = None) -> None:
        """Rule 5: after a login. ``confirmed`` (when given) replaces every confirmed value."""
        self._in_flight.clear()
        self.failures.reset()
        if confirmed is not None:
            self._confirmed = dict(confirmed)

    def load(self, confirmed: Iterable[tuple[K, V]]) -> None:
        """Confirmed values kept from an earlier run (presence is stored)."""
        self._confirmed.update(confirmed)


# -- the writes themselves, as the bridge sends them ---------------------------


class PresenceWrite(NamedTuple):
    user: str
    presence: Presence


class MirrorWrite(NamedTuple):
    user: str
    device: str
    state: str


class PauseWrite(NamedTuple):
    queue: str
    interface: str
    paused: bool
    reason: str
    user: str


class DndWrite(NamedTuple):
    """FreePBX DND switched the way FreePBX's own codes do it."""

    user: str
    device: str  # Custom:DND<user>
    on: bool


class CallRuleWrite(NamedTuple):
    """A person's call handling for one kind of caller, as astdb keeps it ("" = no key)."""

    user: str
    callers: str  # internal | external
    value: str
