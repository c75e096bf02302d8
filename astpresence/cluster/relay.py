"""An HA group's followers: the leader's changes in, their writes out, through PostgreSQL.

Every node of a group serves the whole API. The leader alone decides and
writes to Asterisk; the followers follow it:

- **Changes.** Each batch the leader commits carries *notices* (JSON), sent
  with ``pg_notify`` inside the same transaction, so a follower hears of a
  change only once it is stored, in commit order: a presence change with its
  event number and the user's new presence as clients see it, a link event,
  or "the users changed". A follower applies them to its copy of the state
  and hands the change events, with the leader's numbers, to its own event
  streams: a client can resume on any node.
- **Writes.** A follower's write (a presence set, a source...) is a row in
  ``commands`` plus a ``NOTIFY``; the leader runs it through its engine, stores
  the result in the row and notifies; the follower answers its client once
  its own copy has the change (read your writes on the same node).
- **Reconnects.** When its listening connection drops, a follower reloads
  the state from the database (nothing is assumed) and listens again.

The database is the only channel: nodes never talk to each other directly.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg

from astpresence.domain.logsafe import clip
from astpresence.domain.model import InvalidInput
from astpresence.engine.timers import backoff_delay, stopped_within
from astpresence.store.base import StoreError
from astpresence.store.postgres_schema import COMMANDS_CHANNEL, EVENTS_CHANNEL, RESULTS_CHANNEL

from astpresence.cluster.notices import Notice, parse_notice
from astpresence.cluster.commands import CommandTable

logger = logging.getLogger(__name__)

#: How long a follower waits for the leader to run its write (then 503).
CALL_TIMEOUT = 10.0
#: Rows of commands the leader never finished (it died) are removed after this.
STALE_COMMANDS = 300.0
#: A follower checks its command's row this often, in case a notice was missed.
POLL = 0.5
#: A follower's links come back faster than an AMI link: a takeover waits on them.
FOLLOWER_BACKOFF = (0.5, 1.0, 2.0, 4.0)
#: Notices a follower holds before applying them, at most (a slow follower
#: reloads instead of growing a queue).
MAX_PENDING_NOTICES = 100_000


class Follower:
    """A follower's link to the leader: listens for notices and results, sends commands.

    :meth:`run` keeps one listening connection up; after each (re)connect it
    calls ``reload`` (the state from the database, nothing assumed), then
    hands every notice, in order, to ``apply``.
    """

    def __init__(self, url: str, node: str, store: Any,
                 reload: Callable[[], Awaitable[int]],
                 apply: Callable[[Notice, int], Awaitable[None]],
                 in_step: Callable[[], Awaitable[None]] | None = None) -> None:
        self._url = url
        self.node = node
        self._store = store  # PostgresStore: commands go through its pool
        self._reload = reload
        self._apply = apply
        self._in_step = in_step  # run beside, once the state is loaded (asks the leader)
        self._queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        self._waiting: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self.ready = asyncio.Event()  # the state is loaded and notices flow

    async def run(self, stop: asyncio.Event) -> None:
        await _linked(self._url, "astpresence-follower", stop, self._session,
                      "follower: the database link failed (%s); reloading")

    async def _session(self, conn: asyncpg.Connection, stop: asyncio.Event) -> None:
        lost = asyncio.Event()
        conn.add_termination_listener(lambda c: lost.set())
        self._queue = asyncio.Queue()  # notices from before this reload are void
        await conn.add_listener(EVENTS_CHANNEL, self._heard)
        await conn.add_listener(RESULTS_CHANNEL, self._heard)
        extra: asyncio.Task[None] | None = None
        try:
            seq = await self._reload()
            self.ready.set()
            logger.info("following the leader: state loaded (event %d)", seq)
            if self._in_step is not None:
                extra = asyncio.create_task(self._quietly(self._in_step()))
            await self._follow(conn, lost, stop, seq)
        finally:
            self.ready.clear()
            if extra is not None:
                extra.cancel()
                await asyncio.gather(extra, return_exceptions=True)

    @staticmethod
    async def _quietly(work: Awaitable[None]) -> None:
        try:
            await work
        except (StoreError, InvalidInput) as exc:
            logger.info("follower: %s", exc)

    def _heard(self, conn: object, pid: int, channel: str, payload: str) -> None:
        if self._queue.qsize() >= MAX_PENDING_NOTICES:
            logger.warning("follower: more than %d notices waiting; reloading",
                           MAX_PENDING_NOTICES)
            if isinstance(conn, asyncpg.Connection):
                conn.terminate()
            return
        self._queue.put_nowait((channel, payload))

    async def _follow(self, conn: asyncpg.Connection, lost: asyncio.Event,
                      stop: asyncio.Event, seq: int) -> None:
        ended = asyncio.ensure_future(_first(lost.wait(), stop.wait()))
        try:
            while True:
                getter = asyncio.ensure_future(self._queue.get())
                done, _ = await asyncio.wait({getter, ended},
                                             return_when=asyncio.FIRST_COMPLETED)
                if getter not in done:
                    getter.cancel()
                    break
                channel, payload = getter.result()
                if channel == RESULTS_CHANNEL:
                    self._result(payload)
                    continue
                try:
                    notice = parse_notice(payload)
                except InvalidInput as exc:
                    logger.warning("follower: ignoring a notice: %s", exc)
                    continue
                await self._apply(notice, seq)
        finally:
            ended.cancel()
        if lost.is_set():
            raise asyncpg.InterfaceError("the listening connection was closed")

    def _result(self, payload: str) -> None:
        try:
            command = int(payload)
        except ValueError:
            return
        fut = self._waiting.get(command)
        if fut is not None and not fut.done():
            fut.set_result({})  # the row holds the result; every notice before it is applied

    async def call(self, kind: str, body: dict[str, Any]) -> dict[str, Any]:
        """Have the leader run a write; its result once this node has the change too."""
        if not self.ready.is_set():
            raise StoreError("this follower is not in step with the leader yet; try again")
        command = await self._add_command(kind, body)
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiting[command] = fut
        try:
            async with asyncio.timeout(CALL_TIMEOUT):
                while True:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(asyncio.shield(fut), POLL)
                    result = await self._store.command_result(command)
                    if result is not None:
                        if not fut.done():
                            # Missed the result notice (a reconnect): the change
                            # notice came before it, so reload-or-wait covers it.
                            await self._applied_so_far()
                        return dict(json.loads(result))
        except TimeoutError:
            raise StoreError(f"the leader did not answer within {CALL_TIMEOUT:.0f} s; "
                             "try again") from None
        finally:
            self._waiting.pop(command, None)
            with contextlib.suppress(StoreError):
                await self._store.delete_command(command)

    async def _add_command(self, kind: str, body: dict[str, Any]) -> int:
        """The command's row. Cancelled while it is being stored (this node took the
        lock, or stops), the row is removed once stored: otherwise the next leader
        would run a command nobody waits for (claim_commands runs every new row)."""
        adding = asyncio.ensure_future(self._store.add_command(self.node, kind, json.dumps(body)))
        try:
            return int(await asyncio.shield(adding))
        except asyncio.CancelledError:
            with contextlib.suppress(StoreError, asyncio.CancelledError):
                await self._store.delete_command(await adding)
            raise

    async def _applied_so_far(self) -> None:
        while not self._queue.empty() and self.ready.is_set():
            await asyncio.sleep(0.01)


class CommandServer:
    """On the leader: runs the followers' commands, in order, and answers them."""

    def __init__(self, url: str, table: CommandTable, store: Any) -> None:
        self._url = url
        self._table = table
        self._store = store
        self.done = 0

    async def run(self, stop: asyncio.Event) -> None:
        await _linked(self._url, "astpresence-leader", stop, self._serve,
                      "leader: the commands link failed (%s); retrying")

    async def _serve(self, conn: asyncpg.Connection, stop: asyncio.Event) -> None:
        wake = asyncio.Event()
        await conn.add_listener(COMMANDS_CHANNEL, lambda *args: wake.set())
        swept = 0.0
        loop = asyncio.get_running_loop()
        while not stop.is_set():
            wake.clear()
            # Commands left by a leader that died, or sent while none led.
            for command, kind, body in await self._store.claim_commands():
                try:
                    args = json.loads(body)
                    result = await self._table.answer(kind, args) \
                        if isinstance(args, dict) else {"error": "invalid",
                                                        "message": "bad command"}
                except (ValueError, StoreError) as exc:
                    result = {"error": "invalid" if isinstance(exc, ValueError) else "failed",
                              "message": str(exc)}
                except Exception:  # one bad command must not stop the others
                    logger.exception("a follower's %s command failed", clip(kind))
                    result = {"error": "failed", "message": "the leader could not run it"}
                await self._store.finish_command(command, json.dumps(result))
                self.done += 1
            if loop.time() - swept > 60:
                await self._store.sweep_commands(STALE_COMMANDS)
                swept = loop.time()
            if conn.is_closed():
                raise asyncpg.InterfaceError("the commands connection was closed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(_first(wake.wait(), stop.wait()), 1.0)


async def _linked(url: str, name: str, stop: asyncio.Event,
                  session: Callable[[asyncpg.Connection, asyncio.Event], Awaitable[None]],
                  failed: str) -> None:
    """``session`` on a connection of its own until ``stop``; after a failure, again
    on a new connection with backoff."""
    attempt = 0
    while not stop.is_set():
        conn: asyncpg.Connection | None = None
        try:
            conn = await asyncpg.connect(url, timeout=5,
                                         server_settings={"application_name": name})
            attempt = 0
            await session(conn, stop)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, StoreError,
                TimeoutError) as exc:
            logger.warning(failed, exc)
        finally:
            if conn is not None and not conn.is_closed():
                conn.terminate()
        attempt += 1
        if await stopped_within(stop, backoff_delay(attempt, FOLLOWER_BACKOFF)):
            return


async def _first(*waits: Awaitable[Any]) -> None:
    tasks = [asyncio.ensure_future(w) for w in waits]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
