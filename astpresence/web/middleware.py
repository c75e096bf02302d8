"""The middlewares every request goes through: errors as JSON (never a
traceback), a follower not yet in step, the bearer token and its rate limit.
"""

from __future__ import annotations

import logging
import math

from aiohttp import web

from astpresence.web.auth import AuthError, Forbidden, authenticate
from astpresence.web.limits import RateLimited
from astpresence.domain.logsafe import clip
from astpresence.domain.model import InvalidInput
from astpresence.engine.errors import UnknownSource, UnknownUser
from astpresence.store.base import StoreError

from astpresence.web.http import (
    HA_KEY,
    HOOKS_PREFIX,
    Handler,
    MAX_BODY,
    NOT_IN_STEP_PATHS,
    NotFound,
    PRINCIPAL_KEY,
    PUBLIC_PATHS,
    STORE_KEY,
    WRITES_KEY,
    WRITE_METHODS,
    _error,
)

logger = logging.getLogger(__name__)


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
    if not path.startswith("/v1/") or path in PUBLIC_PATHS or path == "/v1/events" \
            or path.startswith(HOOKS_PREFIX):
        return await handler(request)  # /v1/events authenticates in its first message
    who = request[PRINCIPAL_KEY] = await authenticate(request.app[STORE_KEY],
                                                    request.headers.get("Authorization"))
    if request.method in WRITE_METHODS:
        request.app[WRITES_KEY].take(who.token_id)  # one client cannot slow everyone
    return await handler(request)
