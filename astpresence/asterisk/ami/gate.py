"""Reading every AMI link in batches while events keep coming (``[ami_reads]
batch_ms``: 3 ms by default with several servers, off with one: app/settings.py).

At a steady rate each AMI frame arrives alone: a change over three servers
costs about four socket reads (the event, then the answers and echoes of its
writes), each a turn of the loop that parses one frame, takes one write and
sends one action, and those turns, not the frames, are most of the CPU a
change costs (bench/README.md, scenario 7: 0.29 ms a change in a burst, 0.75
ms at 1,000 a second). A :class:`ReadGate` holds every link back for ``hold``
seconds after a read, so that what arrives meanwhile on any link is read in
one turn of the loop; a network card's interrupt moderation does the same.

The first read after a quiet spell is taken at once: only the reads that
follow it within ``hold`` wait, so a lone change costs no latency and a burst
costs at most ``hold`` per event. A link on which an awaited action was just
written (a list, a card read, a Ping) is let go at once (client.py): a resync's
round trips do not wait for the gate. Asterisk holds what it sends meanwhile in
the socket (a few events at these rates; TCP flow control beyond).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Protocol


class Gated(Protocol):
    """A link the gate can hold back (``Incoming``: one reason among others)."""

    def hold(self, why: str) -> None: ...

    def release(self, why: str) -> None: ...


#: The reason a link is held, beside the event queue's ("backlog") and the answer
#: hold's ("answers", client.py).
HELD = "gate"


class ReadGate:
    """One per daemon, shared by every AMI link: after a read, no link is read
    again for ``hold`` seconds."""

    def __init__(self, hold: float) -> None:
        if hold <= 0:
            raise ValueError("the read gate's hold must be > 0 s")
        self.hold = hold
        self._links: set[Gated] = set()
        self._closing = False  # a read this turn: close at the end of the turn
        self._timer: asyncio.TimerHandle | None = None
        #: The links' loop, taken when the first joins (not looked up on every read).
        self._loop: asyncio.AbstractEventLoop | None = None
        self.closes = 0  # times the gate held the links (status, tests)

    def join(self, link: Gated) -> None:
        """A link connected (from its protocol's connection_made, on the loop)."""
        self._loop = asyncio.get_running_loop()
        self._links.add(link)
        if self._timer is not None:
            link.hold(HELD)

    def leave(self, link: Gated) -> None:
        self._links.discard(link)

    def after_read(self) -> None:
        """A link was just read. The links are held from the end of this loop turn,
        not at once: the loop may have found several links readable in the same
        poll, and holding them now would leave those unread until the gate opens
        (and, read in the same order every time, starve the last ones)."""
        if self._timer is None and not self._closing and self._loop is not None:
            self._closing = True
            self._loop.call_soon(self._close)

    def _close(self) -> None:
        self._closing = False
        if self._timer is not None or self._loop is None:
            return
        self.closes += 1
        self._timer = self._loop.call_later(self.hold, self._open)
        for link in list(self._links):
            link.hold(HELD)

    def _open(self) -> None:
        self._timer = None
        for link in list(self._links):
            link.release(HELD)


@dataclass(frozen=True)
class Reads:
    """How a daemon's AMI links are read: the gate they share (None: reads at once)
    and how long a link may hold the answers to writes nobody awaits (client.py)."""

    gate: ReadGate | None = None
    answer_hold: float = 0.0  # seconds

    @classmethod
    def of(cls, batch_ms: int, answers_ms: int) -> Reads:
        return cls(ReadGate(batch_ms / 1000) if batch_ms else None, answers_ms / 1000)
