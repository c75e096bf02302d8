"""Local HTTP/WebSocket API (aiohttp): JSON in, JSON out, JSON errors."""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from aiohttp import WSMsgType, web

from . import __version__, rules
from .model import STATE_NAMES, InvalidInput, parse_presence, parse_state
from .service import PresenceService, UnknownSource, UnknownUser
from .store.base import SourceRecord

logger = logging.getLogger(__name__)

MAX_BODY = 16 * 1024
HISTORY_MAX = 1000
SERVICE_KEY = web.AppKey("service", PresenceService)
StatusFn = Callable[[], dict[str, Any]]
STATUS_KEY: web.AppKey[StatusFn] = web.AppKey("status")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message, "status": status}, status=status)


@web.middleware
async def errors_as_json(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except InvalidInput as exc:
        logger.info("%s %s refused: %s", request.method, request.path, exc)
        return _error(400, str(exc))
    except (UnknownUser, UnknownSource) as exc:
        return _error(404, str(exc))
    except web.HTTPRequestEntityTooLarge:
        return _error(413, f"request body is larger than {MAX_BODY} bytes")
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return _error(exc.status, exc.reason)
    except Exception:
        logger.exception("%s %s failed", request.method, request.path)
        return _error(500, "internal error; see the daemon log")


def _actor(request: web.Request) -> str:
    return "cli" if request.headers.get("User-Agent", "").startswith("astpresence-cli") else "api"


async def _json_body(request: web.Request, allowed: set[str]) -> dict[str, Any]:
    raw = await request.read()
    if not raw:
        raise InvalidInput("request body must be a JSON object")
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidInput(f"request body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise InvalidInput("request body must be a JSON object")
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise InvalidInput(
            f"unknown field(s) {', '.join(unknown)}; allowed: {', '.join(sorted(allowed))}"
        )
    return body


async def list_presence(request: web.Request) -> web.Response:
    service = request.app[SERVICE_KEY]
    views = service.views()
    state = request.query.get("state")
    if state is not None:
        wanted = parse_state(state)
        views = [v for v in views if v.presence.state == wanted]
    return web.json_response({"presence": [v.to_json() for v in views]})


async def get_presence(request: web.Request) -> web.Response:
    service = request.app[SERVICE_KEY]
    return web.json_response(service.view(request.match_info["user"]).to_json())


async def put_presence(request: web.Request) -> web.Response:
    service = request.app[SERVICE_KEY]
    uid = request.match_info["user"]
    service.require_user(uid)  # 404 before looking at the body
    body = await _json_body(request, {"state", "subtype", "message"})
    if "state" not in body:
        raise InvalidInput(f"missing field 'state' (one of {', '.join(STATE_NAMES)})")
    presence = parse_presence(body["state"], body.get("subtype"), body.get("message"))
    view = await service.set_manual(uid, presence, _actor(request))
    return web.json_response(view.to_json())


async def delete_presence(request: web.Request) -> web.Response:
    service = request.app[SERVICE_KEY]
    view = await service.clear_manual(request.match_info["user"], _actor(request))
    return web.json_response(view.to_json())


async def get_history(request: web.Request) -> web.Response:
    service = request.app[SERVICE_KEY]
    raw = request.query.get("limit", "50")
    try:
        limit = int(raw)
    except ValueError:
        raise InvalidInput(f"limit must be an integer 1-{HISTORY_MAX}, got {raw!r}") from None
    if not 1 <= limit <= HISTORY_MAX:
        raise InvalidInput(f"limit must be between 1 and {HISTORY_MAX}, got {limit}")
    rows = await service.history(request.match_info["user"], limit)
    return web.json_response(
        {
            "user": request.match_info["user"],
            "history": [
                {
                    "id": h.id,
                    "at": h.at.isoformat(),
                    "old": h.old.as_dict() if h.old is not None else None,
                    "new": h.new.as_dict(),
                    "source": h.source,
                    "actor": h.actor,
                    "reason": h.reason,
                }
                for h in rows
            ],
        }
    )


SOURCE_NAME = re.compile(r"[a-z][a-z0-9_-]{0,31}")
MAX_TTL = timedelta(days=366)


def _parse_time(field: str, raw: object) -> datetime:
    if not isinstance(raw, str):
        raise InvalidInput(f"{field} must be an ISO 8601 date-time string")
    try:
        value = datetime.fromisoformat(raw)
    except ValueError:
        raise InvalidInput(
            f"{field} {raw!r} is not an ISO 8601 date-time (e.g. 2026-11-21T15:00:00+01:00)"
        ) from None
    if value.tzinfo is None:
        raise InvalidInput(f"{field} {raw!r} needs a time zone (e.g. +01:00 or Z)")
    return value.astimezone(UTC)


def parse_source_body(
    uid: str, name: str, body: dict[str, Any], actor: str, now: datetime
) -> SourceRecord:
    """Validate a timed contribution: name, presence, window or TTL."""
    if not SOURCE_NAME.fullmatch(name):
        raise InvalidInput(
            f"invalid source name {name!r}: lowercase letters, digits, '-' and '_', "
            "starting with a letter, at most 32 characters"
        )
    if name in rules.RESERVED_SOURCES:
        raise InvalidInput(
            f"source name {name!r} is reserved; use PUT /v1/presence/{{user}} for manual"
        )
    if "state" not in body:
        raise InvalidInput(f"missing field 'state' (one of {', '.join(STATE_NAMES)})")
    presence = parse_presence(body["state"], body.get("subtype"), body.get("message"))
    start = _parse_time("start", body["start"]) if body.get("start") is not None else None
    end = _parse_time("end", body["end"]) if body.get("end") is not None else None
    if body.get("ttl") is not None:
        ttl = body["ttl"]
        if end is not None:
            raise InvalidInput("give either 'end' or 'ttl', not both")
        if isinstance(ttl, bool) or not isinstance(ttl, (int, float)) or ttl <= 0:
            raise InvalidInput("ttl must be a positive number of seconds")
        if timedelta(seconds=ttl) > MAX_TTL:
            raise InvalidInput(f"ttl must be at most {int(MAX_TTL.total_seconds())} seconds")
        end = (start or now) + timedelta(seconds=ttl)
    if start is not None and end is not None and end <= start:
        raise InvalidInput("end must be after start")
    if end is not None and end <= now:
        raise InvalidInput("the window is already over (end is in the past)")
    return SourceRecord(uid, name, presence, now, actor, start, end)


def _source_json(rec: SourceRecord) -> dict[str, Any]:
    return {
        "source": rec.source,
        **rec.presence.as_dict(),
        "since": rec.since.isoformat(),
        "actor": rec.actor,
        "start": rec.start.isoformat() if rec.start else None,
        "end": rec.end.isoformat() if rec.end else None,
    }


async def list_sources(request: web.Request) -> web.Response:
    service = request.app[SERVICE_KEY]
    uid = request.match_info["user"]
    records = service.sources(uid)
    devices = service.device_view(uid)
    return web.json_response(
        {
            "user": uid,
            "effective": service.view(uid).to_json(),
            "sources": [_source_json(r) for r in records],
            "devices": {
                "states": [s.value for s in devices.states],
                "aggregate": devices.aggregate.value,
                "unavailable_since": devices.unavailable_since.isoformat()
                if devices.unavailable_since else None,
            },
        }
    )


async def put_source(request: web.Request) -> web.Response:
    service = request.app[SERVICE_KEY]
    uid = request.match_info["user"]
    service.require_user(uid)
    body = await _json_body(request, {"state", "subtype", "message", "start", "end", "ttl"})
    record = parse_source_body(uid, request.match_info["name"], body, _actor(request),
                               datetime.now(UTC))
    view = await service.set_source(record)
    return web.json_response({"source": _source_json(record), "effective": view.to_json()})


async def delete_source(request: web.Request) -> web.Response:
    service = request.app[SERVICE_KEY]
    view = await service.delete_source(request.match_info["user"], request.match_info["name"],
                                       _actor(request))
    return web.json_response({"effective": view.to_json()})


async def list_users(request: web.Request) -> web.Response:
    service = request.app[SERVICE_KEY]
    cfg = service.rules
    return web.json_response(
        {
            "users": [
                {
                    "id": u.id,
                    "name": u.name,
                    "extension": u.extension,
                    "context": u.context,
                    "devices": list(u.devices),
                    "origin": u.origin,
                    "mirror_device": rules.mirror_device(u.id, cfg),
                }
                for u in service.users.all()
            ]
        }
    )


async def get_status(request: web.Request) -> web.Response:
    service = request.app[SERVICE_KEY]
    return web.json_response(
        {
            "version": __version__,
            "ami": request.app[STATUS_KEY](),
            "synced": service.synced,
            "last_sync": service.last_sync.isoformat() if service.last_sync else None,
            "users": len(service.users.ids()),
            "pending_writes": len(service.pending_users()),
            "websocket_clients": service.subscribers,
            "features": {
                "mirror": service.rules.mirror,
                "mirror_prefix": service.rules.mirror_prefix,
                "queue_pause": service.rules.queue_pause,
                "missed_calls_away": service.rules.missed_calls_away,
            },
        }
    )


async def events(request: web.Request) -> web.WebSocketResponse:
    """One JSON message per change: ``{seq, user, presence, changed}``."""
    service = request.app[SERVICE_KEY]
    ws = web.WebSocketResponse(heartbeat=30.0, max_msg_size=MAX_BODY)
    await ws.prepare(request)
    sub = service.subscribe()

    async def reader() -> None:
        async for msg in ws:
            if msg.type == WSMsgType.ERROR:
                break  # nothing to read from clients yet; ignore their text

    read_task = asyncio.create_task(reader())
    try:
        while not ws.closed:
            get = asyncio.create_task(sub.queue.get())
            done, _ = await asyncio.wait({get, read_task}, return_when=asyncio.FIRST_COMPLETED)
            if get not in done:
                get.cancel()
                break
            await ws.send_json(get.result())
            if sub.overflowed and sub.queue.empty():
                await ws.close(code=1011, message=b"client too slow; reconnect")
                break
    except (ConnectionResetError, asyncio.CancelledError):
        pass
    finally:
        service.unsubscribe(sub)
        read_task.cancel()
        await asyncio.gather(read_task, return_exceptions=True)
        if not ws.closed:
            await ws.close()
    return ws


def create_app(service: PresenceService, status: Callable[[], dict[str, Any]]) -> web.Application:
    app = web.Application(middlewares=[errors_as_json], client_max_size=MAX_BODY)
    app[SERVICE_KEY] = service
    app[STATUS_KEY] = status
    app.router.add_get("/v1/presence", list_presence)
    app.router.add_get("/v1/presence/{user}", get_presence)
    app.router.add_put("/v1/presence/{user}", put_presence)
    app.router.add_delete("/v1/presence/{user}", delete_presence)
    app.router.add_get("/v1/presence/{user}/history", get_history)
    app.router.add_get("/v1/presence/{user}/sources", list_sources)
    app.router.add_put("/v1/presence/{user}/sources/{name}", put_source)
    app.router.add_delete("/v1/presence/{user}/sources/{name}", delete_source)
    app.router.add_get("/v1/users", list_users)
    app.router.add_get("/v1/status", get_status)
    app.router.add_get("/v1/events", events)
    return app
