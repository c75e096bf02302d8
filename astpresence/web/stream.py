"""The WebSocket event stream (``/v1/events``): authentication in the first
message, a hello, events as they happen, resume after a reconnect.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import WSMsgType, web

from astpresence.web.auth import AuthError, Principal, check_token, project
from astpresence.web.messages import Viewer, link_json
from astpresence.web.stream_session import StreamSession
from astpresence.domain.logsafe import clip
from astpresence.domain.model import InvalidInput
from astpresence.domain.records import presence_json
from astpresence.engine.ports import PresenceAPI
from astpresence.engine.errors import UnknownUser

from astpresence.web.http import (
    MAX_BODY,
    METRICS_KEY,
    PRIVACY_KEY,
    SERVING_KEY,
    presence_api,
    STORE_KEY,
    _error,
    _no_constant,
    close_reason,
)

logger = logging.getLogger(__name__)

MAX_SUBSCRIPTIONS = 1000  # explicit user ids per WebSocket; "*" counts as one
WS_AUTH_TIMEOUT = 10.0
#: WebSockets accepted but not yet authenticated, at most (also <= max_websockets).
MAX_PENDING_WEBSOCKETS = 256
#: How often open streams are checked against tokens revoked in the database.
REVOCATION_CHECK = 0.5


def _parse_subscribe(raw: object, service: PresenceAPI) -> set[str] | None:
    if raw is None or raw == ["*"] or raw == "*":
        return None
    if not isinstance(raw, list) or not all(isinstance(u, str) for u in raw):
        raise InvalidInput('subscribe must be ["*"] or a list of user ids')
    if len(raw) > MAX_SUBSCRIPTIONS:
        raise InvalidInput(f"too many subscriptions: {len(raw)} (at most {MAX_SUBSCRIPTIONS})")
    for uid in raw:
        service.require_user(uid)
    return set(raw)


@dataclass(eq=False)
class StreamEnd:
    """Why a stream must stop now: set by another task, acted on by the stream's own."""

    code: int = 1000
    reason: str = ""
    notice: dict[str, Any] | None = None  # a last message for the client
    flush: bool = False  # send what is queued first (shutdown), or not (revocation)
    event: asyncio.Event = field(default_factory=asyncio.Event)

    def set(self, code: int, reason: str, notice: dict[str, Any] | None = None, *,
            flush: bool = False) -> None:
        self.code, self.reason, self.notice, self.flush = code, reason, notice, flush
        self.event.set()


class Streams:
    """Every open WebSocket, and the token each authenticated one runs on.

    The cap counts sockets from the moment they are accepted, so clients that
    never authenticate cannot pile up; those also have :data:`WS_AUTH_TIMEOUT`
    to send their first message and a cap of their own.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.pending_limit = min(limit, MAX_PENDING_WEBSOCKETS)
        self.sockets: set[web.WebSocketResponse] = set()
        self.waiting: set[web.WebSocketResponse] = set()  # accepted, no hello yet
        #: token id -> the end of each open stream of that token
        self.by_token: dict[str, set[StreamEnd]] = {}

    def full(self) -> str | None:
        if len(self.sockets) >= self.limit:
            return "too many WebSocket clients"
        if len(self.waiting) >= self.pending_limit:
            return "too many WebSocket clients waiting to authenticate"
        return None

    def bind(self, token_id: str) -> StreamEnd:
        """A stream of ``token_id`` starts: its end is set when it must stop."""
        ended = StreamEnd()
        self.by_token.setdefault(token_id, set()).add(ended)
        return ended

    def unbind(self, token_id: str, ended: StreamEnd) -> None:
        streams = self.by_token.get(token_id)
        if streams is not None:
            streams.discard(ended)
            if not streams:
                del self.by_token[token_id]

    def revoked(self, token_ids: Iterable[str]) -> int:
        """End every stream of these tokens (each handler closes with 1008 at once,
        before sending anything more); returns how many."""
        doomed = [ended for tid in token_ids for ended in self.by_token.pop(tid, ())]
        for ended in doomed:
            ended.set(1008, "token revoked")
        return len(doomed)

    def shutdown(self) -> int:
        """End every authenticated stream with ``{"type": "shutdown"}`` and 1001."""
        ends = [ended for group in self.by_token.values() for ended in group]
        for ended in ends:
            ended.set(1001, "server shutting down", {"type": "shutdown"}, flush=True)
        return len(ends)


STREAMS_KEY: web.AppKey[Streams] = web.AppKey("streams")


async def _watch_revocations(app: web.Application) -> None:
    """Close streams whose token was revoked elsewhere (``astpresence token revoke``
    writes to the database directly): checked every :data:`REVOCATION_CHECK` s."""
    streams = app[STREAMS_KEY]
    store = app[STORE_KEY]
    while True:
        await asyncio.sleep(REVOCATION_CHECK)
        if not streams.by_token:
            continue
        try:
            revoked = await store.revoked_tokens()  # ids only: no token decoded in Python
        except Exception as exc:  # a store hiccup must not end the watch
            logger.warning("could not check tokens for revocation: %s", exc)
            continue
        doomed = revoked & set(streams.by_token)
        if doomed:
            closed = streams.revoked(doomed)
            logger.info("closed %d event stream(s) of revoked token(s) %s", closed,
                        ", ".join(sorted(doomed)))


async def _start_revocation_watch(app: web.Application) -> AsyncIterator[None]:
    task = asyncio.create_task(_watch_revocations(app), name="revocation-watch")
    yield
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


Hello = tuple[Principal, Viewer, int | None, object]


async def _hello(ws: web.WebSocketResponse, request: web.Request,
                 service: PresenceAPI) -> Hello | str:
    """Read and check the first message: (who, viewer, resume, the session asked for or
    None), or why it was refused."""
    try:
        first = await ws.receive(timeout=WS_AUTH_TIMEOUT)
    except asyncio.TimeoutError:
        return "no hello within 10 s: send {\"token\": ..., \"subscribe\": [...]}"
    if first.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED, WSMsgType.ERROR):
        return ""
    if first.type != WSMsgType.TEXT:
        return "expected a JSON text message first"
    try:
        hello = json.loads(first.data, parse_constant=_no_constant)
        if not isinstance(hello, dict):
            raise InvalidInput("first message must be a JSON object")
        unknown = set(hello) - {"token", "subscribe", "resume", "session"}
        if unknown:
            raise InvalidInput(f"unknown field(s) {', '.join(sorted(unknown))}")
        token = hello.get("token")
        if not isinstance(token, str):
            raise AuthError("missing token")
        who = await check_token(request.app[STORE_KEY], token)
        viewer = Viewer(who, request.app[PRIVACY_KEY],
                         _parse_subscribe(hello.get("subscribe"), service))
        resume = hello.get("resume")
        if resume is not None and (isinstance(resume, bool) or not isinstance(resume, int)
                                   or resume < 0):
            raise InvalidInput("resume must be a non-negative integer (the last seq seen)")
    except (ValueError, RecursionError, InvalidInput, AuthError, UnknownUser) as exc:
        return str(exc) if not isinstance(exc, RecursionError) else "message nested too deeply"
    return who, viewer, resume, hello.get("session")


async def _catch_up(ws: web.WebSocketResponse, service: PresenceAPI, viewer: Viewer,
                    who: Principal, resume: int) -> None:
    """What a resuming client missed: the events since ``resume``, or a snapshot
    (``stale``) when they are no longer kept."""
    backlog = service.events.events_since(resume)
    if backlog is None:
        await ws.send_json({
            "type": "snapshot", "stale": True, "seq": service.events.seq,
            "presence": [project(presence_json(v), viewer.privacy.view_mode(who, v.user))
                         for v in service.views()
                         if viewer.users is None or v.user in viewer.users],
        })
        return
    for event in backlog:
        out = viewer.render(event)
        if out is not None:
            await ws.send_str(out)


async def _refused(ws: web.WebSocketResponse, request: web.Request,
                   reason: str) -> web.WebSocketResponse:
    """The first message did not do (``reason``; "": the client left): say so, close."""
    request.app[STREAMS_KEY].sockets.discard(ws)
    if not reason:
        logger.info("WebSocket client %s left before its first message", request.remote)
    else:
        logger.info("WebSocket client %s refused: %s", request.remote, clip(reason))
        with contextlib.suppress(ConnectionError, RuntimeError):
            await ws.send_json({"type": "error", "error": reason})
    await ws.close(code=1008, message=close_reason(reason))
    return ws


async def events(request: web.Request) -> web.WebSocketResponse:
    """WebSocket: auth + subscribe in the first message, then one message per change.

    Client -> ``{"token", "subscribe": ["*"] | [ids], "resume": seq?}``;
    server -> ``{"type": "hello", "seq"}``, missed events or a ``snapshot``
    (``stale: true`` when the gap is too old), then ``{"type": "presence",
    "seq", "user", "presence", "changed"}``. Later client messages may change
    the subscription (``{"subscribe": ...}``). Errors: ``{"type": "error"}``
    then close. A client that cannot keep up is disconnected (code 1011); a
    stream whose token is revoked is closed (code 1008).
    """
    service = presence_api(request)
    metrics = request.app[METRICS_KEY]
    streams = request.app[STREAMS_KEY]
    refusal = streams.full()
    if refusal is not None:
        return _error(request, 503, refusal)  # type: ignore[return-value]
    ws = web.WebSocketResponse(heartbeat=30.0, max_msg_size=MAX_BODY)
    await ws.prepare(request)
    streams.sockets.add(ws)
    streams.waiting.add(ws)
    try:
        checked = await _hello(ws, request, service)
    finally:
        streams.waiting.discard(ws)
    if isinstance(checked, str):
        return await _refused(ws, request, checked)
    who, viewer, resume, asked = checked
    try:
        session = None if asked is None else await StreamSession.start(
            request.app[SERVING_KEY], who, asked)
    except (InvalidInput, UnknownUser) as exc:
        return await _refused(ws, request, str(exc))

    sub = service.events.subscribe()  # before reading the backlog: nothing falls in between
    metrics.websockets.inc()
    ended = streams.bind(who.token_id)
    try:
        await ws.send_json({"type": "hello", "seq": service.events.seq,
                            "token": who.to_json(), "link": link_json(service.events.link),
                            "links": [link_json(e) for e in service.events.links.values()],
                            **({"session": session.opened} if session else {})})
        if resume is not None:
            await _catch_up(ws, service, viewer, who, resume)
        close_code, reason = await _pump(ws, sub, viewer, service, ended, session)
    except (ConnectionError, RuntimeError, asyncio.CancelledError):
        # RuntimeError: aiohttp refuses to send on a socket closing under us
        # (a revoked token, shutdown).
        close_code, reason = 1000, ""
    finally:
        # Out of the fan-out first: closing waits for the client's answer.
        streams.sockets.discard(ws)
        streams.unbind(who.token_id, ended)
        service.events.unsubscribe(sub)
        metrics.websockets.dec()
        if session is not None:
            await session.close()  # the socket closed: so does its session
    if not ws.closed:
        if close_code != 1000:
            logger.info("WebSocket client %s dropped: %s", request.remote, clip(reason))
        await ws.close(code=close_code, message=close_reason(reason))
    return ws


async def _pump(ws: web.WebSocketResponse, sub: Any, viewer: Viewer,
                service: PresenceAPI, ended: StreamEnd,
                session: StreamSession | None = None) -> tuple[int, str]:
    """Send events until the client leaves or misbehaves: (close code, reason).

    Events go out from a task of their own that just awaits the queue; this
    coroutine reads what the client sends. (A task and an asyncio.wait() per
    event cost as much as the sending itself: with 1,000 clients, tens of
    milliseconds per change; see bench/README.md.)
    """
    outcome = (1000, "")

    async def send() -> None:
        nonlocal outcome
        while not ws.closed:
            event = await sub.queue.get()
            if ended.event.is_set() and not ended.flush:
                return  # never one more event than a revoked token allows
            out = viewer.render(event)
            if out is not None:
                await ws.send_str(out)
            if sub.overflowed and sub.queue.empty():
                outcome = (1011, "client too slow; reconnect and resume")
                return

    sender = asyncio.ensure_future(send())
    ender = asyncio.ensure_future(ended.event.wait())
    reader: asyncio.Future[Any] | None = None
    try:
        while not ws.closed:
            reader = asyncio.ensure_future(ws.receive())
            await asyncio.wait({sender, reader, ender}, return_when=asyncio.FIRST_COMPLETED)
            if ender.done():
                await _stop(sender)
                return await _flush_and_end(ws, sub, viewer, ended)
            if not reader.done():
                sender.result()  # the sender ended: raise what ended it
                return outcome
            refused = await _incoming(reader.result(), viewer, service, session)
            if refused is not None:
                await _stop(sender)
                if refused[0] == 1008:
                    await ws.send_json({"type": "error", "error": refused[1]})
                return refused
        return 1000, ""
    finally:
        await _stop(sender, ender, *([reader] if reader is not None else []))


async def _stop(*tasks: asyncio.Future[Any]) -> None:
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def _flush_and_end(ws: web.WebSocketResponse, sub: Any, viewer: Viewer,
                         ended: StreamEnd) -> tuple[int, str]:
    """The stream was ended on our side (a revoked token, shutdown): what may still
    go out goes, then the notice."""
    while ended.flush and not sub.queue.empty():
        out = viewer.render(sub.queue.get_nowait())
        if out is not None:
            await ws.send_str(out)
    if ended.notice is not None:
        await ws.send_json(ended.notice)
    return ended.code, ended.reason


async def _incoming(msg: Any, viewer: Viewer, service: PresenceAPI,
                    session: StreamSession | None) -> tuple[int, str] | None:
    """A client message: a session report when the stream carries a session, else a
    new subscription. None: go on; else why the stream ends."""
    report = session.message(msg) if session is not None else None
    if session is None or report is None:
        return _client_message(msg, viewer, service)
    return await session.report(report)


def _client_message(msg: Any, viewer: Viewer,
                    service: PresenceAPI) -> tuple[int, str] | None:
    """A client's message: a new subscription (None: go on), or why the stream ends."""
    if msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED, WSMsgType.ERROR):
        return 1000, ""
    try:
        data = json.loads(msg.data) if msg.type == WSMsgType.TEXT else None
        if not isinstance(data, dict) or set(data) != {"subscribe"}:
            raise InvalidInput('expected {"subscribe": [...]}')
        viewer.users = _parse_subscribe(data["subscribe"], service)
    except (ValueError, RecursionError, InvalidInput, UnknownUser) as exc:
        return 1008, str(exc)
    return None
