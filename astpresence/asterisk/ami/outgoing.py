"""What goes out on one AMI link: actions written together, and their deadlines.

Two costs of the per-change path (bench/README.md, scenario 2) live here:

- **One socket write per loop turn**, not one per action. Actions queued while
  the loop runs other callbacks are joined and handed to the transport once,
  at the end of the turn (``call_soon``): under load that is one ``send()``
  for dozens of actions instead of one each. The order of the bytes is the
  order of the calls, and Asterisk runs one session's actions in the order
  received, so everything that relied on order still holds.
- **One timer for every action with the default timeout**, not one each.
  Their deadlines come in submission order (same timeout, a monotonic clock),
  so a FIFO holds them; one ``call_at`` waits for the oldest. Actions answered
  in time leave the head as they are answered, so the queue holds the actions
  in flight, not every action of the last ``timeout`` seconds.

A write may say that nobody awaits its answer soon (the writer's presence
Setvars: their answers only confirm them). :attr:`Outgoing.after_flush` then
hears, after each socket write, whether everything in it was such a write, so
that the link can leave their answers in the socket for a while (client.py).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from typing import Any


class Outgoing:
    """Coalesced writes to one transport and the deadlines of actions in flight."""

    def __init__(self, writer: asyncio.WriteTransport, timeout: float,
                 on_write_error: Callable[[str], None],
                 on_expired: Callable[[str, float], None]) -> None:
        self._writer = writer
        self.timeout = timeout
        self._on_write_error = on_write_error
        self._on_expired = on_expired
        self._loop = asyncio.get_running_loop()
        self._chunks: list[bytes] = []
        self._flush_due = False
        #: (deadline, action id, future), oldest first.
        self._deadlines: deque[tuple[float, str, asyncio.Future[Any]]] = deque()
        self._timer: asyncio.TimerHandle | None = None
        self._unawaited = True  # every write queued for this flush said so
        #: Called after each socket write: True when no write in it awaits an answer soon.
        self.after_flush: Callable[[bool], None] | None = None

    def write(self, data: bytes, *, unawaited: bool = False) -> None:
        """Queue ``data``; it leaves with everything queued in this loop turn.
        ``unawaited``: nobody waits for its answer soon (see the module's docstring)."""
        self._chunks.append(data)
        if not unawaited:
            self._unawaited = False
        if not self._flush_due:
            self._flush_due = True
            self._loop.call_soon(self.flush)

    def flush(self) -> None:
        self._flush_due = False
        unawaited, self._unawaited = self._unawaited, True
        if not self._chunks:
            return
        data = self._chunks[0] if len(self._chunks) == 1 else b"".join(self._chunks)
        self._chunks.clear()
        if self._writer.is_closing():
            return  # the link ended; its actions have failed already
        try:
            self._writer.write(data)
        except (ConnectionError, OSError) as exc:
            self._on_write_error(f"write failed: {exc}")
            return
        if self.after_flush is not None:
            self.after_flush(unawaited)

    def watch(self, action_id: str, future: asyncio.Future[Any]) -> None:
        """``future`` fails through ``on_expired`` if still pending after ``timeout``."""
        deadlines = self._deadlines
        while deadlines and deadlines[0][2].done():
            deadlines.popleft()
        deadlines.append((self._loop.time() + self.timeout, action_id, future))
        if self._timer is None:
            self._timer = self._loop.call_at(deadlines[0][0], self._expire)

    def _expire(self) -> None:
        self._timer = None
        deadlines = self._deadlines
        now = self._loop.time()
        while deadlines and (deadlines[0][2].done() or deadlines[0][0] <= now):
            _, action_id, future = deadlines.popleft()
            if not future.done():
                self._on_expired(action_id, self.timeout)
        if deadlines:
            self._timer = self._loop.call_at(deadlines[0][0], self._expire)

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._deadlines.clear()
        self._chunks.clear()
