"""What every resource of the API shares: limits, the application's keys, the
caller's principal, JSON bodies and errors, a presence as JSON.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from datetime import timedelta
from typing import Any

from aiohttp import web

from astpresence.web.auth import Forbidden, Principal, Privacy, project
from astpresence.web.limits import RateLimit
from astpresence.engine.metrics import Metrics
from astpresence.domain.model import InvalidInput
from astpresence.web.openapi import MAX_TTL_SECONDS
from astpresence.cluster.serving import Serving
from astpresence.engine.ports import PresenceAPI
from astpresence.sources.plugin import RunningSource
from astpresence.store.base import Store


logger = logging.getLogger(__name__)


MAX_BODY = 16 * 1024
MAX_TTL = timedelta(seconds=MAX_TTL_SECONDS)
#: RFC 6455 5.5: a control frame carries at most 125 bytes, 2 of them the code.
MAX_CLOSE_REASON = 123
PUBLIC_PATHS = {"/v1/openapi.json"}
#: Webhooks: requests from other services that carry no token of ours; each route
#: checks its caller itself (Graph's clientState, ...).
HOOKS_PREFIX = "/v1/hooks/"
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; "
                               "frame-ancestors 'none'; form-action 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}

#: Each Asterisk server's link status, in the config's order.
StatusFn = Callable[[], list[dict[str, Any]]]
SERVING_KEY = web.AppKey("serving", Serving)
#: Each source at work, by name (sources/registry.py).
SOURCES_KEY: web.AppKey[Mapping[str, RunningSource]] = web.AppKey("sources")
STATUS_KEY: web.AppKey[StatusFn] = web.AppKey("status")
STORE_KEY: web.AppKey[Store] = web.AppKey("store")
PRIVACY_KEY = web.AppKey("privacy", Privacy)
METRICS_KEY = web.AppKey("metrics", Metrics)
CONFIG_KEY: web.AppKey[Callable[[], dict[str, Any]]] = web.AppKey("config")
PRINCIPAL_KEY = web.RequestKey("principal", Principal)
HA_KEY: web.AppKey[Callable[[], dict[str, Any]] | None] = web.AppKey("ha")
WRITES_KEY = web.AppKey("writes", RateLimit)
#: Methods that change something: rate-limited per token ([api] writes_per_second).
WRITE_METHODS = frozenset({"PUT", "POST", "DELETE", "PATCH"})
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


def presence_api(request: web.Request) -> PresenceAPI:
    """Whoever answers the API now: the engine, or a follower's port (cluster/)."""
    return request.app[SERVING_KEY].api


def own_user(request: web.Request, elsewhere: str) -> str:
    """The token's own user (a known one); 403 for a token tied to none, naming
    ``elsewhere``, the path to use instead."""
    uid = principal(request).user
    if uid is None:
        raise Forbidden(f"this token is not tied to a user; use {elsewhere}")
    presence_api(request).require_user(uid)
    return uid


def _visible(request: web.Request, presence: dict[str, Any]) -> dict[str, Any]:
    mode = request.app[PRIVACY_KEY].view_mode(principal(request), presence["user"])
    return project(presence, mode)


def _require_details(request: web.Request, uid: str) -> None:
    """History and sources show text: only for viewers who see it in full."""
    presence_api(request).require_user(uid)
    if request.app[PRIVACY_KEY].view_mode(principal(request), uid) != "full":
        raise Forbidden(f"the presence details of {uid!r} are not visible to this token")
