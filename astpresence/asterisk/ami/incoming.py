"""What comes in on one AMI link: bytes parsed where the loop reads them, events
handed on in wire order.

The reading is a :class:`asyncio.BufferedProtocol`, not a stream and a reader
task: the loop reads at most :data:`READ_CHUNK` bytes into one buffer and
calls :meth:`Incoming.buffer_updated`, which feeds the parser and hands the
frames on in the same callback. With a stream, each socket read woke a
reader task, which woke the dispatcher task through a queue: two task steps
and two futures per read. At a steady 1,000 changes a second over three
servers every frame comes in a read of its own (about five reads per
change), so those steps were much of the per-change cost (bench/README.md,
scenario 7).

:class:`EventQueue` hands events to the handler in wire order. An event that
finds nothing queued and no handler under way is handled right there (up to
:data:`INLINE_MAX` of one read); the others wait in a queue of at most
:data:`MAX_QUEUED_EVENTS` for the dispatcher task, which lets other tasks run
every :data:`DISPATCH_SLICE`. When the queue is full the transport stops
reading until there is room (TCP holds Asterisk back), and the rest of the
read that filled it waits beside the queue: one read's frames at most.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Union, cast

from astpresence.asterisk.ami.actions import AMIConnectionError
from astpresence.asterisk.ami.frames import Banner, FrameError, FrameParser, Message
from astpresence.asterisk.ami.gate import ReadGate

#: The client's logger: what a handler raised is the client's to report.
logger = logging.getLogger("astpresence.asterisk.ami.client")

#: Bytes asked of the socket per read; the parser bounds what it buffers.
READ_CHUNK = 64 * 1024
#: Events read but not yet handled, at most. When handlers fall this far
#: behind, the transport stops reading the socket until they catch up: TCP then
#: holds Asterisk back instead of memory growing here.
MAX_QUEUED_EVENTS = 10_000
#: The event dispatcher lets other tasks run at least this often (seconds).
DISPATCH_SLICE = 0.005
#: Events of one read handled in the read's own callback, at most; the rest go
#: through the dispatcher (which yields every DISPATCH_SLICE).
INLINE_MAX = 16

EventHandler = Callable[[Message], Awaitable[None] | None]
Item = Union[Banner, Message, FrameError]

#: Sentinel queued when the link ends.
_STOP = None
#: An event, or an event whose handler returned an awaitable in the read's callback.
_Queued = Union[Message, tuple[Message, Awaitable[None]], None]


class Incoming(asyncio.BufferedProtocol):
    """The read side of one AMI link: bounded reads, parsed at once.

    :meth:`banner` waits for Asterisk's banner; frames after it are kept until
    :meth:`deliver_to`, from when each read's frames go to the sink as parsed.
    """

    def __init__(self, parser: FrameParser, host: str, port: int,
                 gate: ReadGate | None = None) -> None:
        self._parser = parser
        self._gate = gate
        self._holds: set[str] = set()  # why reading is paused ("backlog", "gate", "answers")
        self._hold_timers: dict[str, asyncio.TimerHandle] = {}  # holds that end by themselves
        self._where = f"{host}:{port}"
        self._buffer = memoryview(bytearray(READ_CHUNK))
        self.transport: asyncio.Transport | None = None
        loop = asyncio.get_running_loop()
        self._banner: asyncio.Future[str] = loop.create_future()
        self._banner_text: str | None = None
        self._early: list[Item] = []  # read after the banner, before deliver_to()
        self._sink: Callable[[list[Item]], None] | None = None
        self._on_end: Callable[[str], None] | None = None
        self.closed: asyncio.Future[None] = loop.create_future()

    async def banner(self) -> str:
        """Asterisk's banner line. AMIConnectionError when the peer is not an
        Asterisk AMI server or the link ends first."""
        return await self._banner

    def deliver_to(self, sink: Callable[[list[Item]], None],
                   on_end: Callable[[str], None]) -> None:
        """From now on, each read's frames go to ``sink``; the end of the link to
        ``on_end`` (with its reason)."""
        self._sink, self._on_end = sink, on_end
        early, self._early = self._early, []
        if early:
            sink(early)
        if self.closed.done():
            on_end("server closed the connection")

    # -- protocol callbacks ------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's TCP transport has a Transport's methods but is not a subclass.
        self.transport = cast(asyncio.Transport, transport)
        if self._gate is not None:
            self._gate.join(self)

    def get_buffer(self, sizehint: int) -> memoryview:
        return self._buffer

    def buffer_updated(self, nbytes: int) -> None:
        if self._gate is not None:
            self._gate.after_read()
        items = self._parser.feed(bytes(self._buffer[:nbytes]))
        if self._sink is not None:
            self._sink(items)
        else:
            self._before_banner(items)

    def eof_received(self) -> bool:
        self._lost("server closed the connection")
        return False  # the transport closes itself

    def connection_lost(self, exc: Exception | None) -> None:
        if self._gate is not None:
            self._gate.leave(self)
        for timer in self._hold_timers.values():
            timer.cancel()
        self._hold_timers.clear()
        self._lost("server closed the connection" if exc is None else f"read failed: {exc}")
        if not self.closed.done():
            self.closed.set_result(None)

    def hold(self, why: str) -> None:
        """Stop reading the socket until :meth:`release` of every reason held."""
        if not self._holds and self.transport is not None and not self.transport.is_closing():
            self.transport.pause_reading()
        self._holds.add(why)

    def hold_for(self, why: str, seconds: float) -> bool:
        """:meth:`hold` for ``seconds`` at most; True if it held. Already held for
        ``why``, nothing changes (the first hold's end stands: no event waits longer
        than ``seconds``)."""
        if why in self._holds or self.transport is None or self.transport.is_closing():
            return False
        self.hold(why)
        self._hold_timers[why] = asyncio.get_running_loop().call_later(
            seconds, self.release, why)
        return True

    def release(self, why: str) -> None:
        timer = self._hold_timers.pop(why, None)
        if timer is not None:
            timer.cancel()
        if why not in self._holds:
            return
        self._holds.discard(why)
        if not self._holds and self.transport is not None and not self.transport.is_closing():
            self.transport.resume_reading()

    # -- inside ------------------------------------------------------------

    def _before_banner(self, items: list[Item]) -> None:
        if self._banner.done() and self._banner_text is None:
            return  # refused: the transport is closing
        for item in items:
            if self._banner_text is not None:
                self._early.append(item)  # for deliver_to()
            elif isinstance(item, Banner) and item.is_asterisk:
                self._banner_text = item.text
            elif isinstance(item, Banner):
                self._refuse(f"{self._where} is not an Asterisk AMI server "
                             f"(banner {item.text[:80]!r})")
                return
            else:  # FrameError for a banner line that never ended
                self._refuse(f"{self._where} is not an Asterisk AMI server ({item})")
                return
        if self._banner_text is not None and not self._banner.done():
            self._banner.set_result(self._banner_text)

    def _refuse(self, reason: str) -> None:
        self._banner.set_exception(AMIConnectionError(reason))
        if self.transport is not None:
            self.transport.close()

    def _lost(self, reason: str) -> None:
        if not self._banner.done():
            self._banner.set_exception(AMIConnectionError(
                f"{self._where} closed the connection before sending a banner"
                if reason == "server closed the connection"
                else f"link lost while reading the banner: {reason}"))
        if self._on_end is not None:
            self._on_end(reason)


class EventQueue:
    """Events to ``handler`` in wire order: inline when nothing waits, else queued."""

    def __init__(self, handler: EventHandler | None, pause: Callable[[], None],
                 resume: Callable[[], None]) -> None:
        self._handler = handler
        self._pause, self._resume = pause, resume
        self._queue: asyncio.Queue[_Queued] = asyncio.Queue(MAX_QUEUED_EVENTS)
        #: The rest of the read that found the queue full (reading is paused).
        self._held: collections.deque[_Queued] = collections.deque()
        self._paused = False
        self._busy = False  # the dispatcher is inside a handler (awaiting it)

    def deliver(self, events: list[Message]) -> None:
        """The events of one read, in order."""
        queue, held = self._queue, self._held
        inline = INLINE_MAX
        for i, event in enumerate(events):
            if held:
                held.extend(events[i:])
                return
            if inline and not self._busy and queue.empty():
                inline -= 1
                self._call(event)
            elif queue.full():
                held.extend(events[i:])
                if not self._paused:
                    self._paused = True
                    self._pause()
                return
            else:
                queue.put_nowait(event)

    def end(self) -> None:
        """No more events: the dispatcher returns after those read so far."""
        if self._held or self._queue.full():
            self._held.append(_STOP)
        else:
            self._queue.put_nowait(_STOP)

    def held_back(self) -> int | None:
        """Events waiting while reading is paused (None: it is not)."""
        return self._queue.qsize() + len(self._held) if self._paused else None

    def qsize(self) -> int:
        return self._queue.qsize()

    async def run(self) -> None:
        """The dispatcher: queued events, one at a time."""
        loop = asyncio.get_running_loop()
        queue = self._queue
        turn = loop.time()
        try:
            while True:
                # Queue.get() does not yield while events wait, nor does a handler that
                # never suspends: under a flood the dispatcher would keep the loop for
                # the whole backlog (seconds), and the API, pings and timers with it.
                if loop.time() - turn > DISPATCH_SLICE:
                    await asyncio.sleep(0)
                    turn = loop.time()
                try:
                    item = queue.get_nowait()  # no coroutine per event while they wait
                except asyncio.QueueEmpty:
                    item = await queue.get()
                self._refill()
                if item is _STOP:
                    return
                self._busy = True
                try:
                    await self._handle(item)
                finally:
                    self._busy = False
        finally:
            self._discard()

    # -- inside ------------------------------------------------------------

    def _call(self, event: Message) -> None:
        """Handle one event now; an awaitable result is queued, so whatever comes
        after it waits for it."""
        if self._handler is None:
            return
        try:
            result = self._handler(event)
        except Exception:
            logger.exception("AMI event handler failed for event %s", event.event)
            return
        if result is not None:
            self._queue.put_nowait((event, result))  # the queue was empty

    async def _handle(self, item: Message | tuple[Message, Awaitable[None]]) -> None:
        event, result = item if isinstance(item, tuple) else (item, None)
        try:
            if result is None and self._handler is not None:
                result = self._handler(event)
            if result is not None:
                await result
        except Exception:
            logger.exception("AMI event handler failed for event %s", event.event)

    def _refill(self) -> None:
        queue, held = self._queue, self._held
        while held and not queue.full():
            queue.put_nowait(held.popleft())
        if self._paused and not held:
            self._paused = False
            self._resume()

    def _discard(self) -> None:
        """A cancelled dispatcher: close the handlers' coroutines it will never await."""
        for item in [*self._held, *_drained(self._queue)]:
            close = getattr(item[1], "close", None) if isinstance(item, tuple) else None
            if close is not None:
                close()
        self._held.clear()


def _drained(queue: asyncio.Queue[Any]) -> list[Any]:
    items = []
    while not queue.empty():
        items.append(queue.get_nowait())
    return items
