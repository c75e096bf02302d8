"""HTTP/WebSocket API (aiohttp): JSON in, JSON out, JSON errors, bearer tokens.

Every ``/v1/*`` route needs ``Authorization: Bearer <token>`` except
``/v1/openapi.json``; the board (``/``, ``/static/*``) and ``/metrics`` are
public. What a token may read follows each user's presence level
(:class:`~astpresence.web.auth.Privacy`), the same for REST reads and events.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import math
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from importlib import resources
from typing import Any

from aiohttp import WSMsgType, web
from aiohttp.http_exceptions import HttpProcessingError
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from astpresence import __version__
from astpresence.domain import mirror, rules
from astpresence.sources.calendars.feeds import CalendarFeeds
from astpresence.web.auth import (
    AuthError,
    Forbidden,
    Principal,
    Privacy,
    authenticate,
    check_token,
    new_token,
    parse_role,
    project,
)
from astpresence.web.limits import RateLimit, RateLimited
from astpresence.domain.logsafe import clip
from astpresence.engine.metrics import Metrics
from astpresence.domain.model import (
    STATE_NAMES,
    InvalidInput,
    check_label,
    parse_presence,
    parse_state,
    validate_user_id,
)
from astpresence.web.openapi import HISTORY_MAX, MAX_TTL_SECONDS, openapi_document
from astpresence.engine.events import Event, LinkEvent
from astpresence.domain.records import PresenceView
from astpresence.engine.service import PresenceService, UnknownSource, UnknownUser
from astpresence.domain.records import SourceRecord
from astpresence.asterisk.retry import Failures
from astpresence.store.base import Store, StoreError

logger = logging.getLogger(__name__)

MAX_BODY = 16 * 1024
MAX_SUBSCRIPTIONS = 1000  # explicit user ids per WebSocket; "*" counts as one
WS_AUTH_TIMEOUT = 10.0
#: WebSockets accepted but not yet authenticated, at most (also <= max_websockets).
MAX_PENDING_WEBSOCKETS = 256
#: How often open streams are checked against tokens revoked in the database.
REVOCATION_CHECK = 0.5
MAX_TTL = timedelta(seconds=MAX_TTL_SECONDS)
#: RFC 6455 5.5: a control frame carries at most 125 bytes, 2 of them the code.
MAX_CLOSE_REASON = 123
PUBLIC_PATHS = {"/v1/openapi.json"}
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; "
                               "frame-ancestors 'none'; form-action 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}

#: Each Asterisk server's link status, in the config's order.
StatusFn = Callable[[], list[dict[str, Any]]]
SERVICE_KEY = web.AppKey("service", PresenceService)
STATUS_KEY: web.AppKey[StatusFn] = web.AppKey("status")
STORE_KEY: web.AppKey[Store] = web.AppKey("store")
PRIVACY_KEY = web.AppKey("privacy", Privacy)
METRICS_KEY = web.AppKey("metrics", Metrics)
CONFIG_KEY: web.AppKey[Callable[[], dict[str, Any]]] = web.AppKey("config")
PRINCIPAL_KEY = web.RequestKey("principal", Principal)
STREAMS_KEY: web.AppKey[Streams] = web.AppKey("streams")
CALENDARS_KEY = web.AppKey("calendars", CalendarFeeds)
HA_KEY: web.AppKey[Callable[[], dict[str, Any]] | None] = web.AppKey("ha")
WRITES_KEY = web.AppKey("writes", RateLimit)
REFRESH_KEY = web.AppKey("refresh", RateLimit)
#: Methods that change something: rate-limited per token ([api] writes_per_second).
WRITE_METHODS = frozenset({"PUT", "POST", "DELETE", "PATCH"})
#: A user's calendars may be refreshed this often on demand (one at once, then one
#: every 10 s): each refresh is a fetch of every feed of the user.
REFRESH_RATE, REFRESH_BURST = 0.1, 2
#: What a follower of an HA group answers while it is not in step with the leader.
NOT_IN_STEP_PATHS = {"/v1/status", "/metrics", "/v1/openapi.json"}

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class NotFound(LookupError):
    """404 with a message that may quote client text (it travels in the JSON body,
    never in the status line, where a CR or LF would break the response)."""


def close_reason(text: str) -> bytes:
    """A WebSocket close reason: UTF-8, cut at a character boundary to fit the frame."""
    raw = text.encode("utf-8")
    if len(raw) <= MAX_CLOSE_REASON:
        return raw
    return raw[:MAX_CLOSE_REASON].decode("utf-8", "ignore").encode("utf-8")


def _error(request: web.Request, status: int, message: str) -> web.Response:
    if METRICS_KEY in request.app:
        request.app[METRICS_KEY].api_refused.labels(str(status)).inc()
    return web.json_response({"error": message, "status": status}, status=status)


@web.middleware
async def follower_guard(request: web.Request, handler: Handler) -> web.StreamResponse:
    """A follower of an HA group serves the API once it is in step with the leader
    (relay.py); until then it answers its status, nothing else."""
    ha = request.app[HA_KEY]
    if ha is None or request.path in NOT_IN_STEP_PATHS:
        return await handler(request)
    status = ha()
    if status["role"] == "leader" or status.get("following"):
        return await handler(request)
    leader = status.get("leader") or {}
    where = f"the leader is {leader.get('node')} at {leader.get('api')}" if leader else \
        "no leader yet"
    return web.json_response({"error": f"this node is a follower not yet in step with the "
                                       f"leader; {where}", "status": 503,
                              "leader": leader or None}, status=503,
                             headers={"Retry-After": "1"})


@web.middleware
async def errors_as_json(request: web.Request, handler: Handler) -> web.StreamResponse:
    # Paths and messages may hold client text: logged through clip() only.
    where = clip(request.path)
    try:
        return await handler(request)
    except InvalidInput as exc:
        logger.info("%s %s refused: %s", request.method, where, clip(str(exc)))
        return _error(request, 400, str(exc))
    except AuthError as exc:
        logger.info("%s %s: 401 %s", request.method, where, exc)
        resp = _error(request, 401, str(exc))
        resp.headers["WWW-Authenticate"] = 'Bearer realm="astpresence"'
        return resp
    except Forbidden as exc:
        logger.info("%s %s: 403 %s", request.method, where, clip(str(exc)))
        return _error(request, 403, str(exc))
    except (UnknownUser, UnknownSource, NotFound) as exc:
        return _error(request, 404, str(exc))
    except RateLimited as exc:
        logger.info("%s %s: 429 %s", request.method, where, exc)
        resp = _error(request, 429, str(exc))
        resp.headers["Retry-After"] = str(max(1, math.ceil(exc.retry_after)))
        return resp
    except StoreError as exc:
        # The database is unavailable (PostgreSQL down, disk full): nothing is
        # acknowledged that is not stored; the client may try again.
        logger.error("%s %s: database unavailable: %s", request.method, where, exc)
        return _error(request, 503, f"the database is unavailable, try again: {exc}")
    except web.HTTPRequestEntityTooLarge:
        logger.info("%s %s: body over %d bytes", request.method, where, MAX_BODY)
        return _error(request, 413, f"request body is larger than {MAX_BODY} bytes")
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        resp = _error(request, exc.status, exc.reason)
        if "Allow" in exc.headers:  # 405 must say what is allowed (RFC 9110 15.5.6)
            resp.headers["Allow"] = exc.headers["Allow"]
        return resp
    except ConnectionResetError:
        # The client went away mid-request (a reset while its body was read):
        # nobody is left to answer, and it is not our fault.
        logger.debug("%s %s: the client went away", request.method, where)
        return web.Response(status=400)  # written nowhere: the connection is closed
    except Exception:
        logger.exception("%s %s failed", request.method, where)
        return _error(request, 500, "internal error; see the daemon log")


@web.middleware
async def require_token(request: web.Request, handler: Handler) -> web.StreamResponse:
    path = request.path
    if not path.startswith("/v1/") or path in PUBLIC_PATHS or path == "/v1/events":
        return await handler(request)  # /v1/events authenticates in its first message
    who = request[PRINCIPAL_KEY] = await authenticate(request.app[STORE_KEY],
                                                    request.headers.get("Authorization"))
    if request.method in WRITE_METHODS:
        request.app[WRITES_KEY].take(who.token_id)  # one client cannot slow everyone
    return await handler(request)


def principal(request: web.Request) -> Principal:
    return request[PRINCIPAL_KEY]


def _actor(request: web.Request) -> str:
    p = principal(request)
    kind = "cli" if request.headers.get("User-Agent", "").startswith("astpresence-cli") else "api"
    return f"{kind}:{p.user or p.role.value}"


async def _json_body(request: web.Request, allowed: set[str]) -> dict[str, Any]:
    raw = await request.read()
    if not raw:
        raise InvalidInput("request body must be a JSON object")
    try:
        body = json.loads(raw, parse_constant=_no_constant)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidInput(f"request body is not valid JSON: {exc}") from None
    except RecursionError:
        raise InvalidInput("request body is nested too deeply") from None
    if not isinstance(body, dict):
        raise InvalidInput("request body must be a JSON object")
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise InvalidInput(
            f"unknown field(s) {', '.join(unknown)}; allowed: {', '.join(sorted(allowed))}"
        )
    return body


def _no_constant(name: str) -> Any:
    raise InvalidInput(f"{name} is not a number JSON allows")


def presence_json(view: PresenceView) -> dict[str, Any]:
    """A presence object as the API and the event stream show it."""
    return {
        "user": view.user,
        "state": view.presence.state.value,
        "subtype": view.presence.subtype,
        "message": view.presence.message,
        "source": view.source,
        "actor": view.actor,
        "since": view.since.isoformat() if view.since else None,
        "pending": view.pending,
        "rule": view.rule,
        "name": view.name,
        "voicemail": view.voicemail,
    }


def _visible(request: web.Request, presence: dict[str, Any]) -> dict[str, Any]:
    mode = request.app[PRIVACY_KEY].view_mode(principal(request), presence["user"])
    return project(presence, mode)


def _require_details(request: web.Request, uid: str) -> None:
    """History and sources show text: only for viewers who see it in full."""
    service = request.app[SERVICE_KEY]
    service.require_user(uid)
    if request.app[PRIVACY_KEY].view_mode(principal(request), uid) != "full":
        raise Forbidden(f"the presence details of {uid!r} are not visible to this token")


# -- presence ----------------------------------------------------------------


async def list_presence(request: web.Request) -> web.Response:
    service = request.app[SERVICE_KEY]
    objs = [_visible(request, presence_json(v)) for v in service.views()]
    state = request.query.get("state")
    if state is not None:
        wanted = parse_state(state).value
        objs = [o for o in objs if o["state"] == wanted]
    return web.json_response({"presence": objs})


async def get_presence(request: web.Request) -> web.Response:
    service = request.app[SERVICE_KEY]
    view = service.view(request.match_info["user"])
    return web.json_response(_visible(request, presence_json(view)))


async def put_presence(request: web.Request) -> web.Response:
    service = request.app[SERVICE_KEY]
    uid = request.match_info["user"]
    service.require_user(uid)  # 404 before looking at the body
    principal(request).require_change(uid)
    body = await _json_body(request, {"state", "subtype", "message"})
    if "state" not in body:
        raise InvalidInput(f"missing field 'state' (one of {', '.join(STATE_NAMES)})")
    presence = parse_presence(body["state"], body.get("subtype"), body.get("message"))
    view = await service.set_manual(uid, presence, _actor(request))
    return web.json_response(presence_json(view))


async def delete_presence(request: web.Request) -> web.Response:
    service = request.app[SERVICE_KEY]
    uid = request.match_info["user"]
    service.require_user(uid)
    principal(request).require_change(uid)
    view = await service.clear_manual(uid, _actor(request))
    return web.json_response(presence_json(view))


async def get_history(request: web.Request) -> web.Response:
    service = request.app[SERVICE_KEY]
    uid = request.match_info["user"]
    raw = request.query.get("limit", "50")
    try:
        limit = int(raw)
    except ValueError:
        raise InvalidInput(f"limit must be an integer 1-{HISTORY_MAX}, got {raw!r}") from None
    if not 1 <= limit <= HISTORY_MAX:
        raise InvalidInput(f"limit must be between 1 and {HISTORY_MAX}, got {limit}")
    _require_details(request, uid)
    rows = await service.history(uid, limit)
    return web.json_response(
        {
            "user": uid,
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


# -- the caller's own presence -------------------------------------------------


def _own_user(request: web.Request) -> str:
    uid = principal(request).user
    if uid is None:
        raise Forbidden("this token is not tied to a user; use /v1/presence/{user}")
    request.app[SERVICE_KEY].require_user(uid)
    return uid


async def get_me(request: web.Request) -> web.Response:
    p = principal(request)
    service = request.app[SERVICE_KEY]
    user = service.users.get(p.user) if p.user else None
    return web.json_response(
        {
            "token": p.to_json(),
            "user": asdict(user) if user is not None else None,
            "presence": presence_json(service.view(user.id)) if user is not None else None,
        }
    )


def _seconds(field: str, raw: object) -> timedelta:
    """A positive, finite number of seconds up to :data:`MAX_TTL`."""
    if (isinstance(raw, bool) or not isinstance(raw, (int, float))
            or not 0 < raw <= MAX_TTL_SECONDS or not math.isfinite(raw)):
        raise InvalidInput(f"{field} must be a number of seconds, more than 0 and at most "
                           f"{MAX_TTL_SECONDS} (366 days)")
    return timedelta(seconds=raw)


def _parse_expires(raw: object, now: datetime) -> datetime:
    if isinstance(raw, (bool, int, float)):
        return now + _seconds("expires", raw)
    if not isinstance(raw, str):
        raise InvalidInput("expires must be an ISO 8601 date-time or a number of seconds")
    when = _parse_time("expires", raw, now)
    if when <= now:
        raise InvalidInput("expires is in the past")
    return when


async def put_me(request: web.Request) -> web.Response:
    """Self-publish; with ``expires`` the presence reverts by itself at that time."""
    service = request.app[SERVICE_KEY]
    uid = _own_user(request)
    body = await _json_body(request, {"state", "subtype", "message", "expires"})
    if "state" not in body:
        raise InvalidInput(f"missing field 'state' (one of {', '.join(STATE_NAMES)})")
    presence = parse_presence(body["state"], body.get("subtype"), body.get("message"))
    now = datetime.now(UTC)
    end = _parse_expires(body["expires"], now) if body.get("expires") is not None else None
    view = await service.set_manual(uid, presence, _actor(request), end=end)
    return web.json_response(presence_json(view))


async def delete_me(request: web.Request) -> web.Response:
    service = request.app[SERVICE_KEY]
    view = await service.clear_manual(_own_user(request), _actor(request))
    return web.json_response(presence_json(view))


# -- timed sources ------------------------------------------------------------


def _parse_time(field: str, raw: object, now: datetime) -> datetime:
    """An ISO 8601 date-time with a zone, at most :data:`MAX_TTL` after ``now``."""
    if not isinstance(raw, str):
        raise InvalidInput(f"{field} must be an ISO 8601 date-time string")
    shown = clip(raw, 40)
    try:
        value = datetime.fromisoformat(raw)
        if value.tzinfo is None:
            raise InvalidInput(f"{field} {shown} needs a time zone (e.g. +01:00 or Z)")
        value = value.astimezone(UTC)  # year 1 or 9999 with an offset overflows here
    except OverflowError:
        raise InvalidInput(f"{field} {shown} is out of range") from None
    except ValueError as exc:
        if isinstance(exc, InvalidInput):
            raise
        raise InvalidInput(
            f"{field} {shown} is not an ISO 8601 date-time (e.g. 2026-11-21T15:00:00+01:00)"
        ) from None
    if value - now > MAX_TTL:
        raise InvalidInput(f"{field} {shown} is more than 366 days ahead")
    return value


def parse_source_body(
    uid: str, name: str, body: dict[str, Any], actor: str, now: datetime
) -> SourceRecord:
    """Validate a timed contribution: name, presence, window or TTL."""
    rules.check_source_name(name)
    if "state" not in body:
        raise InvalidInput(f"missing field 'state' (one of {', '.join(STATE_NAMES)})")
    presence = parse_presence(body["state"], body.get("subtype"), body.get("message"))
    start = _parse_time("start", body["start"], now) if body.get("start") is not None else None
    end = _parse_time("end", body["end"], now) if body.get("end") is not None else None
    if body.get("ttl") is not None:
        if end is not None:
            raise InvalidInput("give either 'end' or 'ttl', not both")
        end = (start or now) + _seconds("ttl", body["ttl"])
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
    _require_details(request, uid)
    devices = await service.current_devices(uid)
    return web.json_response(
        {
            "user": uid,
            "effective": presence_json(service.view(uid)),
            "sources": [_source_json(r) for r in await service.current_sources(uid)],
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
    principal(request).require_change(uid)
    body = await _json_body(request, {"state", "subtype", "message", "start", "end", "ttl"})
    record = parse_source_body(uid, request.match_info["name"], body, _actor(request),
                               datetime.now(UTC))
    view = await service.set_source(record)
    return web.json_response({"source": _source_json(record),
                              "effective": presence_json(view)})


async def delete_source(request: web.Request) -> web.Response:
    service = request.app[SERVICE_KEY]
    uid = request.match_info["user"]
    service.require_user(uid)
    principal(request).require_change(uid)
    view = await service.delete_source(uid, request.match_info["name"], _actor(request))
    return web.json_response({"effective": presence_json(view)})


# -- users, status, config, tokens --------------------------------------------


async def list_users(request: web.Request) -> web.Response:
    service = request.app[SERVICE_KEY]
    cfg = service.rules
    return web.json_response(
        {
            "users": [
                {
                    "id": u.id,
                    "name": service.cards.name(u.id),
                    "extension": u.extension,
                    "context": u.context,
                    "devices": list(u.devices),
                    "origin": u.origin,
                    "mirror_device": mirror.mirror_device(u.id, cfg),
                }
                for u in service.users.all()
            ]
        }
    )


async def get_status(request: web.Request) -> web.Response:
    service = request.app[SERVICE_KEY]
    links = request.app[STATUS_KEY]()
    ha = _ha_status(request)
    return web.json_response(
        {
            "version": __version__,
            "ami": links[0],  # the first (or only) server, as before [[asterisk]]
            "asterisk": links,
            "synced": service.synced,
            "last_sync": service.last_sync.isoformat() if service.last_sync else None,
            "users": len(service.users.ids()),
            "pending_writes": len(service.pending_users()),
            "write_failures": _failure_counts(service),
            "failing_writes": _failing(service),
            "websocket_clients": service.events.subscribers,
            "calendars": request.app[CALENDARS_KEY].status_json(),
            "ha": ha,
            # This node's part in its HA group: "leader" or "follower" (null: no group).
            "role": ha["role"] if ha is not None else None,
            "features": {
                "mirror": service.rules.mirror,
                "mirror_prefix": service.rules.mirror_prefix,
                "queue_pause": service.rules.queue_pause,
                "missed_calls_away": service.rules.missed_calls_away,
            },
        }
    )


def _ha_status(request: web.Request) -> dict[str, Any] | None:
    ha = request.app[HA_KEY]
    return ha() if ha is not None else None


# -- calendars ----------------------------------------------------------------


async def _calendars(request: web.Request, uid: str | None,
                     refresh: bool = False) -> dict[str, Any]:
    """The calendars as the node that fetches them knows them: this one, or on an HA
    follower the leader (relay.py)."""
    remote = request.app[SERVICE_KEY].remote
    if remote is not None:
        return await remote.calendars(uid, refresh)
    feeds = request.app[CALENDARS_KEY]
    if uid is None:
        return {"calendars": [f.json() for f in feeds.feeds]}
    if refresh:
        await feeds.refresh_user(uid)
    return feeds.user_json(uid)


def _calendar_user(request: web.Request) -> str:
    uid = request.match_info["user"]
    _require_details(request, uid)
    if not request.app[CALENDARS_KEY].of(uid):
        raise NotFound(f"user {uid!r} has no calendar feed")
    return uid


async def list_calendars(request: web.Request) -> web.Response:
    who = principal(request)
    feeds = [f for f in (await _calendars(request, None))["calendars"]
             if who.privileged or who.user == f["user"]]
    return web.json_response({"calendars": feeds})


async def get_calendar(request: web.Request) -> web.Response:
    return web.json_response(await _calendars(request, _calendar_user(request)))


async def refresh_calendar(request: web.Request) -> web.Response:
    uid = _calendar_user(request)
    principal(request).require_change(uid)
    request.app[REFRESH_KEY].take(uid)
    return web.json_response(await _calendars(request, uid, refresh=True))


#: Refused writes listed in /v1/status, at most (the counts are complete).
FAILING_SHOWN = 20


def _failure_counts(service: PresenceService) -> dict[str, int]:
    counts: dict[str, int] = {}
    for node in service.nodes.values():
        for failures in node.outbox.failures():
            counts[failures.kind] = counts.get(failures.kind, 0) + len(failures)
    return counts


def _failing(service: PresenceService) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for name, node in service.nodes.items():
        out += _failing_on(name, node.outbox.failures(), FAILING_SHOWN - len(out))
    return out


def _failing_on(node: str, kinds: Iterable[Failures[Any]], room: int) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for failures in kinds:
        now = failures.now()
        for key, f in failures.items():
            if len(out) >= room:
                return out
            out.append({
                "node": node,
                "kind": failures.kind,
                "key": key if isinstance(key, str) else "/".join(key),
                "error": f.error,
                "attempts": f.attempts,
                "retry_in_seconds": round(max(0.0, f.retry_at - now), 1)
                if f.retry_at != float("inf") else None,
            })
    return out


async def get_config(request: web.Request) -> web.Response:
    principal(request).require_admin()
    return web.json_response(request.app[CONFIG_KEY]())


def _token_json(rec: Any) -> dict[str, Any]:
    return {
        "id": rec.id,
        "role": rec.role,
        "user": rec.user,
        "label": rec.label,
        "created_at": rec.created_at.isoformat(),
        "revoked_at": rec.revoked_at.isoformat() if rec.revoked_at else None,
    }


async def list_tokens(request: web.Request) -> web.Response:
    principal(request).require_admin()
    tokens = await request.app[STORE_KEY].list_tokens()
    return web.json_response({"tokens": [_token_json(t) for t in tokens]})


async def create_token(request: web.Request) -> web.Response:
    principal(request).require_admin()
    body = await _json_body(request, {"role", "user", "label"})
    role = parse_role(body.get("role", "user"))
    user = body.get("user")
    if user is not None:
        user = validate_user_id(user)
    label = check_label(body.get("label", ""))
    token, record = new_token(role, user, label, datetime.now(UTC))
    await request.app[STORE_KEY].add_token(record)
    logger.info("token %s created (%s, user %s) by %s", record.id, role.value, clip(user),
                principal(request).token_id)
    return web.json_response({**_token_json(record), "token": token}, status=201)


async def revoke_token(request: web.Request) -> web.Response:
    principal(request).require_admin()
    token_id = request.match_info["id"]
    if not await request.app[STORE_KEY].revoke_token(token_id, datetime.now(UTC)):
        raise NotFound(f"no active token {token_id!r}")
    closed = request.app[STREAMS_KEY].revoked([token_id])
    logger.info("token %s revoked by %s; %d event stream(s) closed", token_id,
                principal(request).token_id, closed)
    return web.json_response({"id": token_id, "revoked": True})


# -- events ---------------------------------------------------------------------

CHANGED_FIELDS = ("state", "subtype", "message", "source", "name", "voicemail")


def link_json(event: LinkEvent | None) -> dict[str, Any]:
    """``{"type": "link", "state": "down" | "synced", ...}``; None: never synced yet."""
    if event is None:
        return {"type": "link", "state": "down", "since": None, "asterisk": None,
                "reason": "not synced with Asterisk yet", "node": None}
    return {"type": "link", "state": event.state, "since": event.since.isoformat(),
            "asterisk": event.asterisk, "reason": event.reason, "node": event.node}


@functools.lru_cache(maxsize=256)
def _projected(view: PresenceView, mode: str) -> dict[str, Any]:
    """Rendered once per view and visibility, not once per client (fan-out)."""
    return project(presence_json(view), mode)


class _Viewer:
    """One WebSocket client's subscription and visibility."""

    def __init__(self, who: Principal, privacy: Privacy, users: set[str] | None) -> None:
        self.who = who
        self.privacy = privacy
        self.users = users  # None = everyone

    def render(self, event: Event) -> dict[str, Any] | None:
        if isinstance(event, LinkEvent):
            return link_json(event)
        if self.users is not None and event.user not in self.users:
            return None
        mode = self.privacy.view_mode(self.who, event.user)
        old, new = _projected(event.old, mode), _projected(event.new, mode)
        changed = [f for f in CHANGED_FIELDS if old[f] != new[f]]
        if not changed:
            return None  # nothing this viewer may see changed
        return {"type": "presence", "seq": event.seq, "user": event.user, "presence": new,
                "changed": changed}


def _parse_subscribe(raw: object, service: PresenceService) -> set[str] | None:
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
            revoked = {t.id for t in await store.list_tokens() if t.revoked_at is not None}
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


async def _hello(ws: web.WebSocketResponse, request: web.Request,
                 service: PresenceService) -> tuple[Principal, _Viewer, int | None] | str:
    """Read and check the first message: (who, viewer, resume), or why it was refused."""
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
        unknown = set(hello) - {"token", "subscribe", "resume"}
        if unknown:
            raise InvalidInput(f"unknown field(s) {', '.join(sorted(unknown))}")
        token = hello.get("token")
        if not isinstance(token, str):
            raise AuthError("missing token")
        who = await check_token(request.app[STORE_KEY], token)
        viewer = _Viewer(who, request.app[PRIVACY_KEY],
                         _parse_subscribe(hello.get("subscribe"), service))
        resume = hello.get("resume")
        if resume is not None and (isinstance(resume, bool) or not isinstance(resume, int)
                                   or resume < 0):
            raise InvalidInput("resume must be a non-negative integer (the last seq seen)")
    except (ValueError, RecursionError, InvalidInput, AuthError, UnknownUser) as exc:
        return str(exc) if not isinstance(exc, RecursionError) else "message nested too deeply"
    return who, viewer, resume


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
    service = request.app[SERVICE_KEY]
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
        streams.sockets.discard(ws)
        if not checked:
            logger.info("WebSocket client %s left before its first message", request.remote)
        else:
            logger.info("WebSocket client %s refused: %s", request.remote, clip(checked))
            with contextlib.suppress(ConnectionError, RuntimeError):
                await ws.send_json({"type": "error", "error": checked})
        await ws.close(code=1008, message=close_reason(checked))
        return ws
    who, viewer, resume = checked

    sub = service.events.subscribe()  # before reading the backlog: nothing falls in between
    metrics.websockets.inc()
    ended = streams.bind(who.token_id)
    try:
        await ws.send_json({"type": "hello", "seq": service.events.seq,
                            "token": who.to_json(), "link": link_json(service.events.link),
                            "links": [link_json(e) for e in service.events.links.values()]})
        if resume is not None:
            backlog = service.events.events_since(resume)
            if backlog is None:
                await ws.send_json({
                    "type": "snapshot", "stale": True, "seq": service.events.seq,
                    "presence": [project(presence_json(v), viewer.privacy.view_mode(who, v.user))
                                 for v in service.views()
                                 if viewer.users is None or v.user in viewer.users],
                })
            else:
                for event in backlog:
                    out = viewer.render(event)
                    if out is not None:
                        await ws.send_json(out)
        close_code, reason = await _pump(ws, sub, viewer, service, ended)
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
    if not ws.closed:
        if close_code != 1000:
            logger.info("WebSocket client %s dropped: %s", request.remote, clip(reason))
        await ws.close(code=close_code, message=close_reason(reason))
    return ws


async def _pump(ws: web.WebSocketResponse, sub: Any, viewer: _Viewer,
                service: PresenceService, ended: StreamEnd) -> tuple[int, str]:
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
                await ws.send_json(out)
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
            refused = _client_message(reader.result(), viewer, service)
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


async def _flush_and_end(ws: web.WebSocketResponse, sub: Any, viewer: _Viewer,
                         ended: StreamEnd) -> tuple[int, str]:
    """The stream was ended on our side (a revoked token, shutdown): what may still
    go out goes, then the notice."""
    while ended.flush and not sub.queue.empty():
        out = viewer.render(sub.queue.get_nowait())
        if out is not None:
            await ws.send_json(out)
    if ended.notice is not None:
        await ws.send_json(ended.notice)
    return ended.code, ended.reason


def _client_message(msg: Any, viewer: _Viewer,
                    service: PresenceService) -> tuple[int, str] | None:
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


# -- board, metrics, openapi -----------------------------------------------------


def _static(name: str) -> bytes:
    return resources.files("astpresence.web").joinpath("static", name).read_bytes()


async def board(request: web.Request) -> web.Response:
    try:
        body = _static("index.html")
    except FileNotFoundError:
        raise web.HTTPNotFound(reason="the board is not installed") from None
    return web.Response(body=body, content_type="text/html", charset="utf-8",
                        headers=SECURITY_HEADERS)


async def static_file(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    types = {".js": "text/javascript", ".css": "text/css", ".png": "image/png",
             ".svg": "image/svg+xml"}
    suffix = name[name.rfind("."):] if "." in name else ""
    if suffix not in types or "/" in name or name.startswith("."):
        raise NotFound(f"no such file: {name!r}")
    try:
        body = _static(name)
    except (FileNotFoundError, IsADirectoryError):
        raise NotFound(f"no such file: {name!r}") from None
    return web.Response(body=body, content_type=types[suffix], headers=SECURITY_HEADERS)


async def metrics_endpoint(request: web.Request) -> web.Response:
    body = generate_latest(request.app[METRICS_KEY].registry)
    resp = web.Response(body=body)
    resp.headers["Content-Type"] = CONTENT_TYPE_LATEST
    return resp


async def get_openapi(request: web.Request) -> web.Response:
    return web.json_response(openapi_document(__version__))


async def _close_sockets(app: web.Application) -> None:
    """On shutdown: every stream says ``{"type": "shutdown"}`` and closes (1001), so
    clients know it was no crash; sockets still waiting for a hello just close."""
    streams = app[STREAMS_KEY]
    sockets = list(streams.sockets)
    if sockets:
        logger.info("closing %d WebSocket client(s)", len(sockets))
    streams.shutdown()  # each stream's own task sends the notice and closes
    # Sockets still waiting for their hello have no stream yet: close them here.
    await asyncio.gather(*(ws.close(code=1001, message=b"server shutting down")
                           for ws in list(streams.waiting)), return_exceptions=True)


class HttpServerLog(logging.LoggerAdapter):  # type: ignore[type-arg]
    """aiohttp's protocol logger: a malformed request is one info line, no traceback.

    aiohttp logs every unparsable request (garbage, a TLS hello on the plain
    port, a bad header) with a full traceback; anyone who can connect could
    fill the log that way. Errors that are not the client's keep theirs.
    """

    def __init__(self) -> None:
        super().__init__(logging.getLogger(__name__ + ".http"), {})

    def log(self, level: int, msg: object, *args: Any, exc_info: Any = None,
            **kwargs: Any) -> None:
        exc = exc_info if isinstance(exc_info, BaseException) else None
        if isinstance(exc, HttpProcessingError):
            detail = " ".join(str(exc.message).split())
            super().log(logging.INFO, "malformed HTTP request from %s: %s",
                        clip(args[0] if args else "?"), clip(detail), **kwargs)
            return
        super().log(level, msg, *args, exc_info=exc_info, **kwargs)


def create_app(
    service: PresenceService,
    status: StatusFn,
    store: Store,
    *,
    privacy: Privacy | None = None,
    metrics: Metrics | None = None,
    config: Callable[[], dict[str, Any]] | None = None,
    max_websockets: int = 2000,
    calendars: CalendarFeeds | None = None,
    ha: Callable[[], dict[str, Any]] | None = None,
    writes: tuple[float, int] = (20.0, 40),
) -> web.Application:
    app = web.Application(middlewares=[errors_as_json, follower_guard, require_token],
                          client_max_size=MAX_BODY)
    app[HA_KEY] = ha
    app[WRITES_KEY] = RateLimit(*writes, what="too many changes from this token")
    app[REFRESH_KEY] = RateLimit(REFRESH_RATE, REFRESH_BURST,
                                 what="this user's calendars were just refreshed")
    app[SERVICE_KEY] = service
    app[STATUS_KEY] = status
    app[STORE_KEY] = store
    app[PRIVACY_KEY] = privacy or Privacy()
    app[METRICS_KEY] = metrics or Metrics()
    app[CONFIG_KEY] = config or (lambda: {})
    app[STREAMS_KEY] = Streams(max_websockets)
    app[CALENDARS_KEY] = calendars if calendars is not None else CalendarFeeds((), service)
    app.on_shutdown.append(_close_sockets)
    app.cleanup_ctx.append(_start_revocation_watch)
    add = app.router
    add.add_get("/", board)
    add.add_get("/static/{name}", static_file)
    add.add_get("/metrics", metrics_endpoint)
    add.add_get("/v1/openapi.json", get_openapi)
    add.add_get("/v1/calendars", list_calendars)
    add.add_get("/v1/calendars/{user}", get_calendar)
    add.add_post("/v1/calendars/{user}/refresh", refresh_calendar)
    add.add_get("/v1/presence", list_presence)
    add.add_get("/v1/presence/{user}", get_presence)
    add.add_put("/v1/presence/{user}", put_presence)
    add.add_delete("/v1/presence/{user}", delete_presence)
    add.add_get("/v1/presence/{user}/history", get_history)
    add.add_get("/v1/presence/{user}/sources", list_sources)
    add.add_put("/v1/presence/{user}/sources/{name}", put_source)
    add.add_delete("/v1/presence/{user}/sources/{name}", delete_source)
    add.add_get("/v1/me", get_me)
    add.add_put("/v1/me/presence", put_me)
    add.add_delete("/v1/me/presence", delete_me)
    add.add_get("/v1/users", list_users)
    add.add_get("/v1/status", get_status)
    add.add_get("/v1/config", get_config)
    add.add_get("/v1/tokens", list_tokens)
    add.add_post("/v1/tokens", create_token)
    add.add_delete("/v1/tokens/{id}", revoke_token)
    add.add_get("/v1/events", events)
    return app

