"""Events for clients: numbered presence changes with a buffer to resume from, service
events (the Asterisk link), bounded fan-out.

The engine publishes one :class:`ChangeEvent` per change of a user's
effective presence; listeners (the WebSocket streams) each get a bounded
queue. A listener that falls too far behind is dropped at once instead of
holding anyone up (its stream closes with 1011 and the client resumes).
"""

from __future__ import annotations

import asyncio
import collections
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Union

from astpresence.domain.model import DEFAULT_NODE
from astpresence.domain.records import PresenceView

#: How many recent events a reconnecting client can resume from.
EVENT_BUFFER = 10_000
#: Events queued for one listener, at most.
SUBSCRIPTION_QUEUE = 1000


@dataclass(frozen=True, slots=True)
class ChangeEvent:
    """One change of a user's effective presence, numbered for resuming."""

    seq: int
    user: str
    old: PresenceView
    new: PresenceView


@dataclass(frozen=True, slots=True)
class LinkEvent:
    """The Asterisk link went down (presence may be stale) or is synced again."""

    state: str  # "down" or "synced"
    since: datetime
    asterisk: str  # host:port
    reason: str | None = None
    node: str = DEFAULT_NODE  # the server's name


ServiceEvent = LinkEvent  # the daemon's shutdown is said by the API as it closes streams
Event = Union[ChangeEvent, ServiceEvent]


@dataclass(slots=True, eq=False)
class Subscription:
    """A listener's bounded queue of events."""

    queue: asyncio.Queue[Event] = field(
        default_factory=lambda: asyncio.Queue(maxsize=SUBSCRIPTION_QUEUE))
    overflowed: bool = False


class EventHub:
    """Numbers events, keeps the recent ones, and hands them to every listener."""

    def __init__(self, first_seq: int | None = None) -> None:
        # Event numbers continue across restarts (they start at the start time
        # in microseconds), so a number from an earlier run is never mistaken
        # for one of this run: resuming from it gets a snapshot.
        self._seq = int(time.time() * 1_000_000) if first_seq is None else first_seq
        self._recent: collections.deque[ChangeEvent] = collections.deque(maxlen=EVENT_BUFFER)
        self._subs: set[Subscription] = set()
        #: Each Asterisk server's latest link event, for new streams.
        self.links: dict[str, LinkEvent] = {}

    @property
    def link(self) -> LinkEvent | None:
        """The link as one value: the oldest "down" of a server, else the newest
        "synced" (None: no server synced yet)."""
        down = [e for e in self.links.values() if e.state != "synced"]
        if down:
            return min(down, key=lambda e: e.since)
        return max(self.links.values(), key=lambda e: e.since, default=None)

    @property
    def seq(self) -> int:
        return self._seq

    @property
    def subscribers(self) -> int:
        return len(self._subs)

    def subscribe(self) -> Subscription:
        sub = Subscription()
        self._subs.add(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        self._subs.discard(sub)

    def close(self) -> None:
        self._subs.clear()

    def events_since(self, seq: int) -> list[ChangeEvent] | None:
        """Events after ``seq``, or None when they are no longer all buffered."""
        if seq > self._seq:
            return None  # a number from an earlier run of the daemon
        if seq == self._seq:
            return []
        if not self._recent or self._recent[0].seq > seq + 1:
            return None
        return [e for e in self._recent if e.seq > seq]

    def publish(self, old: PresenceView, new: PresenceView) -> ChangeEvent:
        self._seq += 1
        event = ChangeEvent(self._seq, new.user, old, new)
        self._recent.append(event)
        self._fan_out(event)
        return event

    # -- an HA group: one numbering for every node (relay.py) -------------------

    def relay(self, seq: int, old: PresenceView, new: PresenceView) -> ChangeEvent:
        """A follower: the leader's event ``seq``. After a gap (a notice lost) the
        events kept before it cannot be resumed from: a client gets a snapshot."""
        if seq != self._seq + 1:
            self._recent.clear()
        self._seq = seq
        event = ChangeEvent(seq, new.user, old, new)
        self._recent.append(event)
        self._fan_out(event)
        return event

    def renumber(self, seq: int) -> None:
        """A follower (re)loaded the state at the leader's event ``seq``."""
        if seq != self._seq:
            self._recent.clear()
            self._seq = seq

    def continue_after(self, seq: int) -> None:
        """A new leader: its events are numbered after the last one stored."""
        if seq > self._seq:
            self._recent.clear()
            self._seq = seq

    def publish_service(self, event: ServiceEvent) -> None:
        """A service event for every listener now (not numbered, not kept for resuming:
        the hello of a new stream carries the link state instead)."""
        if isinstance(event, LinkEvent):
            self.links[event.node] = event
        self._fan_out(event)

    def _fan_out(self, event: Event) -> None:
        """To every listener; one that cannot take more is dropped, holding up nobody."""
        for sub in list(self._subs):
            try:
                sub.queue.put_nowait(event)
            except asyncio.QueueFull:
                sub.overflowed = True
                self._subs.discard(sub)
