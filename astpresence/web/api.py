"""HTTP/WebSocket API (aiohttp): JSON in, JSON out, JSON errors, bearer tokens.

Every ``/v1/*`` route needs ``Authorization: Bearer <token>`` except
``/v1/openapi.json``; the board (``/``, ``/static/*``) and ``/metrics`` are
public. What a token may read follows each user's presence level
(:class:`~astpresence.web.auth.Privacy`), the same for REST reads and events.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from importlib import resources
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from astpresence import __version__
from astpresence.web.auth import Privacy
from astpresence.web.limits import RateLimit
from astpresence.domain.logsafe import clip
from astpresence.engine.metrics import Metrics
from astpresence.web import calls
from astpresence.web.openapi import openapi_document
from astpresence.cluster.serving import Serving
from astpresence.sources.plugin import RunningSource
from astpresence.web.sources import source_routes
from astpresence.store.base import Store

from astpresence.web.http import (
    CONFIG_KEY,
    HA_KEY,
    MAX_BODY,
    METRICS_KEY,
    NotFound,
    PRIVACY_KEY,
    SECURITY_HEADERS,
    SERVING_KEY,
    SOURCES_KEY,
    STATUS_KEY,
    STORE_KEY,
    StatusFn,
    WRITES_KEY,
)
from astpresence.web.middleware import errors_as_json, follower_guard, require_token
from astpresence.web.presence import (
    delete_me,
    delete_presence,
    delete_source,
    get_history,
    get_me,
    get_presence,
    list_presence,
    list_sources,
    list_statuses,
    put_me,
    put_presence,
    put_source,
)
from astpresence.web.admin import (
    create_token,
    get_config,
    get_status,
    list_tokens,
    list_users,
    revoke_token,
)
from astpresence.web.stream import STREAMS_KEY, Streams, _start_revocation_watch, events

logger = logging.getLogger(__name__)


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
    return web.json_response(openapi_document(__version__, [(calls.PATHS, calls.SCHEMAS)]))


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
    serving: Serving,
    status: StatusFn,
    store: Store,
    *,
    privacy: Privacy | None = None,
    metrics: Metrics | None = None,
    config: Callable[[], dict[str, Any]] | None = None,
    max_websockets: int = 2000,
    sources: Mapping[str, RunningSource] | None = None,
    ha: Callable[[], dict[str, Any]] | None = None,
    writes: tuple[float, int] = (20.0, 40),
) -> web.Application:
    app = web.Application(middlewares=[errors_as_json, follower_guard, require_token],
                          client_max_size=MAX_BODY)
    app[HA_KEY] = ha
    app[WRITES_KEY] = RateLimit(*writes, what="too many changes from this token")
    app[SERVING_KEY] = serving
    app[STATUS_KEY] = status
    app[STORE_KEY] = store
    app[PRIVACY_KEY] = privacy or Privacy()
    app[METRICS_KEY] = metrics or Metrics()
    app[CONFIG_KEY] = config or (lambda: {})
    app[STREAMS_KEY] = Streams(max_websockets)
    app[SOURCES_KEY] = sources or {}
    app.on_shutdown.append(_close_sockets)
    app.cleanup_ctx.append(_start_revocation_watch)
    add = app.router
    add.add_get("/", board)
    add.add_get("/static/{name}", static_file)
    add.add_get("/metrics", metrics_endpoint)
    add.add_get("/v1/openapi.json", get_openapi)
    add.add_get("/v1/presence", list_presence)
    add.add_get("/v1/presence/{user}", get_presence)
    add.add_put("/v1/presence/{user}", put_presence)
    add.add_delete("/v1/presence/{user}", delete_presence)
    add.add_get("/v1/presence/{user}/history", get_history)
    add.add_get("/v1/presence/{user}/sources", list_sources)
    add.add_put("/v1/presence/{user}/sources/{name}", put_source)
    add.add_delete("/v1/presence/{user}/sources/{name}", delete_source)
    add.add_get("/v1/me", get_me)
    add.add_get("/v1/statuses", list_statuses)
    add.add_put("/v1/me/presence", put_me)
    add.add_delete("/v1/me/presence", delete_me)
    add.add_get("/v1/users", list_users)
    add.add_get("/v1/status", get_status)
    add.add_get("/v1/config", get_config)
    add.add_get("/v1/tokens", list_tokens)
    add.add_post("/v1/tokens", create_token)
    add.add_delete("/v1/tokens/{id}", revoke_token)
    add.add_get("/v1/events", events)
    calls.setup(app)
    for name, routes in source_routes():
        if name in app[SOURCES_KEY]:
            routes.setup(app)
    return app
