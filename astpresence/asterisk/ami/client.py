"""A small asyncio AMI client: one TCP link, actions with timeouts, ordered events.

Why not panoramisk: it decodes each TCP chunk on its own, runs handlers as
fire-and-forget tasks, and has no action timeout or ping supervision.

Design:

- Reads are a protocol's callbacks, not a task (incoming.py): each bounded read
  feeds the sans-IO :class:`~astpresence.asterisk.ami.frames.FrameParser` and
  every frame is routed at once: responses resolve the pending action with
  their ``ActionID``, events that carry the ``ActionID`` of a pending list
  action go to that list, everything else goes to ``on_event`` in wire order.
  An event that finds none waiting is handled in the read's callback; the
  others queue for one *dispatcher* task. Reading never awaits a handler, so a
  slow handler cannot delay the answer to a Ping. A failing handler is logged
  and the next event is handled.
- One *pinger* task sends ``Ping`` every ``ping_interval`` and declares the
  link lost when no answer comes within ``ping_interval``: a server that keeps
  the socket open but stops answering is detected within two intervals (pinger.py).
- Actions leave through :class:`~astpresence.asterisk.ami.outgoing.Outgoing`: one
  socket write per loop turn, one timer for all those with the default timeout.
- With ``answer_hold`` set, a socket write that held only actions nobody awaits
  soon (:meth:`AMIClient.submit` with ``unawaited``: the writer's Setvars) holds
  the link's reading for that long, so that their answers (response, echo,
  ExtensionStatus) are read together, not each in a loop turn of its own; any
  other action ends the hold at once. Events on that link wait that long at
  most. With several servers each change is written to every other one and
  answered by each: these answers are most of the reads (bench/README.md,
  scenario 7).
- An awaited action written (a Ping, a list, a card read) lets its link be read
  at once, whatever holds it: its answer is not left behind the answer hold nor
  the read gate (gate.py).

How actions meet their answers, and the Asterisk facts that relies on: actions.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import secrets
from collections.abc import Coroutine, Iterable, Mapping
from typing import Any, Union

from astpresence.asterisk.ami.actions import (
    ActionError,
    ActionTimeout,
    Actions,
    AMIConnectionError,
    AMIError,
    AuthenticationError,
)
from astpresence.asterisk.ami.frames import (
    DEFAULT_MAX_FRAME,
    DEFAULT_MAX_LINE,
    FrameError,
    FrameParser,
    Message,
    encode_action,
)
from astpresence.asterisk.ami.incoming import EventHandler, EventQueue, Incoming, Item
from astpresence.asterisk.ami.gate import HELD as GATE_HELD, ReadGate
from astpresence.asterisk.ami.outgoing import Outgoing
from astpresence.asterisk.ami.pinger import keep_alive

logger = logging.getLogger(__name__)

__all__ = ["AMIClient", "AMIConnectionError", "AMIError", "ActionError",
           "ActionTimeout", "AuthenticationError", "EventHandler"]

#: Why a link's reading is held after a write of actions nobody awaits soon.
ANSWERS = "answers"

Headers = Union[Mapping[str, str], Iterable[tuple[str, str]]]


class AMIClient:
    """One AMI session. Create, :meth:`connect`, use, :meth:`close`.

    A client is used for one connection; reconnecting means a new client
    (after a login, state has to be rebuilt from Asterisk anyway).
    """

    def __init__(self, host: str, port: int, username: str, secret: str, *,
                 on_event: EventHandler | None = None, ping_interval: float = 10.0,
                 action_timeout: float = 10.0, connect_timeout: float = 10.0,
                 max_line: int = DEFAULT_MAX_LINE, max_frame: int = DEFAULT_MAX_FRAME,
                 read_gate: ReadGate | None = None, answer_hold: float = 0.0) -> None:
        if ping_interval <= 0 or action_timeout <= 0 or connect_timeout <= 0:
            raise ValueError("ping_interval, action_timeout and connect_timeout must be > 0")
        self.host = host
        self.port = port
        self.username = username
        self._secret = secret
        self._on_event = on_event
        self.ping_interval = ping_interval
        self.action_timeout = action_timeout
        self.connect_timeout = connect_timeout
        self._parser = FrameParser(max_line=max_line, max_frame=max_frame)
        self._gate = read_gate  # gate.py: read in batches while busy (None: at once)
        self._answer_hold = answer_hold  # seconds; 0: answers are read as they come
        self.answer_holds = 0  # times a write's answers were left in the socket (tests)
        self.banner: str | None = None

        self._link: Incoming | None = None
        self._out: Outgoing | None = None
        self._actions = Actions()
        self._events = EventQueue(on_event, self._pause_reading, self._resume_reading)
        self._tasks: set[asyncio.Task[None]] = set()
        self._pinger_task: asyncio.Task[None] | None = None
        self._closed = asyncio.Event()
        self._close_error: AMIConnectionError | None = None
        self._logged_in = False
        self._started = False
        self._ids = itertools.count(1)
        self._id_prefix = f"astp-{secrets.token_hex(3)}"

    # -- public API -------------------------------------------------------

    @property
    def connected(self) -> bool:
        """True between a successful login and the end of the link."""
        return self._logged_in and not self._closed.is_set()

    async def connect(self) -> None:
        """Open the link, check the banner, log in, start the tasks.

        Raises :class:`AuthenticationError` if Asterisk refuses the login and
        :class:`AMIConnectionError` for anything else that goes wrong. The
        whole sequence is bounded by ``connect_timeout``.
        """
        if self._started:
            raise AMIError("AMIClient.connect() may be called only once")
        self._started = True
        try:
            async with asyncio.timeout(self.connect_timeout):
                link = await self._open()
                link.deliver_to(self._on_items, self._end)
                self._start_task(self._events.run(), "dispatcher")
                await self._login()
        except (TimeoutError, ActionTimeout):
            await self._abort()
            raise AMIConnectionError(
                f"could not log in to {self.host}:{self.port} within "
                f"{min(self.connect_timeout, self.action_timeout):g} s"
            ) from None
        except BaseException:
            await self._abort()
            raise
        self._logged_in = True
        self._pinger_task = self._start_task(keep_alive(
            self.ping_interval, self._closed,
            lambda: self.send_action("Ping", timeout=self.ping_interval), self._busy, self._end),
            "pinger")
        logger.info("AMI connected to %s:%d as user %s", self.host, self.port, self.username)

    async def send_action(
        self, action: str, headers: Headers = (), *, timeout: float | None = None
    ) -> Message:
        """Send one action and return its response.

        Raises :class:`ActionError` on ``Response: Error``,
        :class:`ActionTimeout` when no response comes within ``timeout``
        (default ``action_timeout``) and :class:`AMIConnectionError` if the
        link is or gets lost.
        """
        if timeout is None:
            return await self.submit(action, headers)
        result = await self._request(action, headers, timeout, is_list=False)
        assert isinstance(result, Message)
        return result

    def submit(self, action: str, headers: Headers = (), *,
               unawaited: bool = False) -> asyncio.Future[Message]:
        """Send one action without waiting (no task, no timer of its own); the future
        resolves as :meth:`send_action` returns or raises (default timeout). Actions
        submitted in one loop turn leave in one socket write (outgoing.py).
        ``unawaited``: nobody needs the answer soon; it may wait ``answer_hold``."""
        action_id, data = self._encode(action, headers)
        out = self._out
        if self._closed.is_set() or out is None:
            raise AMIConnectionError(str(self._close_error or "link lost: not connected"))
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._actions.add(action_id, action, future, False)
        out.write(data, unawaited=unawaited)
        out.watch(action_id, future)
        return future

    async def send_list_action(
        self, action: str, headers: Headers = (), *, timeout: float | None = None
    ) -> list[Message]:
        """Send a list action and return its item events.

        Collects the events carrying this action's ActionID until the one
        whose ``EventList`` is ``Complete`` (e.g. ``PresenceStateListComplete``).
        Neither the start response nor the Complete event is returned. The
        timeout covers the whole list.
        """
        result = await self._request(action, headers, timeout, is_list=True)
        assert isinstance(result, list)
        return result

    async def wait_closed(self) -> None:
        """Wait for the end of the link.

        Returns if it ended through :meth:`close`; raises
        :class:`AMIConnectionError` ("link lost: ...") if the server closed
        it, stopped answering pings, or the connection failed.
        """
        await self._closed.wait()
        if self._close_error is not None:
            raise AMIConnectionError(str(self._close_error))

    async def close(self) -> None:
        """End the session; idempotent. Pending actions fail with AMIConnectionError."""
        if not self._closed.is_set() and self._out is not None and self._logged_in:
            # Polite but not waited for: a stalled server must not delay close.
            with contextlib.suppress(Exception):
                self._out.write(encode_action("Logoff", [("ActionID", self._next_id())]))
                self._out.flush()
        self._end(None)
        await self._cancel_tasks()
        if self._link is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.shield(self._link.closed), 1.0)

    # -- connection setup ---------------------------------------------------

    async def _open(self) -> Incoming:
        loop = asyncio.get_running_loop()
        try:
            transport, link = await loop.create_connection(
                lambda: Incoming(self._parser, self.host, self.port, self._gate),
                self.host, self.port)
        except OSError as exc:
            raise AMIConnectionError(
                f"cannot connect to AMI at {self.host}:{self.port}: {exc}"
            ) from None
        self._link = link
        self._out = Outgoing(transport, self.action_timeout, self._end, self._actions.expire)
        if self._answer_hold > 0 or self._gate is not None:
            self._out.after_flush = self._after_flush
        self.banner = await link.banner()
        logger.debug("AMI banner from %s:%d: %s", self.host, self.port, self.banner)
        return link

    async def _login(self) -> None:
        # Never log the secret; Asterisk's own log shows only the user too.
        logger.info("Login as user %s on %s:%d", self.username, self.host, self.port)
        try:
            await self._request(
                "Login",
                [("Username", self.username), ("Secret", self._secret), ("Events", "on")],
                None,
                is_list=False,
            )
        except ActionError:
            raise AuthenticationError(self.username) from None

    async def _abort(self) -> None:
        self._end("connect failed")
        await self._cancel_tasks()

    # -- actions ----------------------------------------------------------

    def _next_id(self) -> str:
        return f"{self._id_prefix}-{next(self._ids)}"

    async def _request(
        self, action: str, headers: Headers, timeout: float | None, *, is_list: bool
    ) -> Message | list[Message]:
        action_id, data = self._encode(action, headers)
        out = self._out
        if self._closed.is_set() or out is None:
            raise AMIConnectionError(str(self._close_error or "link lost: not connected"))
        wait = self.action_timeout if timeout is None else timeout
        loop = asyncio.get_running_loop()
        pending = self._actions.add(action_id, action, loop.create_future(), is_list)
        try:
            async with asyncio.timeout(wait):
                out.write(data)
                return await pending.future
        except TimeoutError:
            if is_list:
                self._actions.abandon(action_id)
            raise ActionTimeout(action, wait) from None
        finally:
            self._actions.done(action_id)

    def _encode(self, action: str, headers: Headers) -> tuple[str, bytes]:
        pairs = list(headers.items()) if isinstance(headers, Mapping) else list(headers)
        if any(key.lower() == "actionid" for key, _ in pairs):
            raise ValueError("ActionID is set by AMIClient; do not pass one")
        action_id = self._next_id()
        return action_id, encode_action(action, [*pairs, ("ActionID", action_id)])

    # -- tasks ------------------------------------------------------------

    def _start_task(self, coro: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        task = asyncio.create_task(coro, name=f"ami-{name}-{self.host}:{self.port}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _cancel_tasks(self) -> None:
        current = asyncio.current_task()
        tasks = [t for t in self._tasks if t is not current]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    def _on_items(self, items: list[Item]) -> None:
        """One read's frames (the link's callback): answers to their actions,
        events on to the handler."""
        events = []
        for item in items:
            event = self._route(item)
            if event is not None:
                events.append(event)
        if events:
            self._events.deliver(events)

    def _after_flush(self, unawaited: bool) -> None:
        """A socket write left: its answers may wait (unawaited), or are awaited now;
        then neither this link's answer hold nor the read gate holds it back (a
        resync's or card reads' round trips go at the link's pace, not the gate's)."""
        link = self._link
        if link is None or not self._logged_in:
            return
        if not unawaited:
            link.release(ANSWERS)
            link.release(GATE_HELD)
        elif self._answer_hold > 0:
            self.answer_holds += link.hold_for(ANSWERS, self._answer_hold)

    def _pause_reading(self) -> None:
        if self._link is not None:
            self._link.hold("backlog")

    def _resume_reading(self) -> None:
        if self._link is not None:
            self._link.release("backlog")

    def _route(self, item: Item) -> Message | None:
        if isinstance(item, FrameError):
            # E.g. the rest of a frame forged by an unescaped CR/LF in a
            # PresenceStatus message (tests/support/captures/escaping-and-limits.txt, inj-1).
            logger.warning("Refused an AMI frame from %s:%d: %s: %r",
                           self.host, self.port, item.reason, item.sample)
            return None
        return self._actions.route(item)

    def _busy(self) -> int | None:
        """Events waiting while reading is held back (None: it is not)."""
        return self._events.held_back()

    # -- end of link --------------------------------------------------------

    def _end(self, reason: str | None) -> None:
        """Mark the link as ended; ``reason`` None means closed by us."""
        if self._closed.is_set():
            return
        if reason is not None:
            self._close_error = AMIConnectionError(f"link lost: {reason}")
            if self._logged_in:
                logger.warning("AMI link to %s:%d lost: %s", self.host, self.port, reason)
        else:
            logger.info("AMI link to %s:%d closed", self.host, self.port)
        self._closed.set()
        error = self._close_error or AMIConnectionError("link lost: closed by client")
        self._actions.fail_all(error)
        if self._out is not None:
            self._out.close()
        if self._link is not None and self._link.transport is not None:
            self._link.transport.close()
        # Events already read are still handed out, then the dispatcher ends.
        self._events.end()
        task = self._pinger_task
        if task is not None and task is not asyncio.current_task():
            task.cancel()
