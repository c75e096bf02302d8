"""The sessions' routes (web layer).

- ``POST /v1/me/sessions`` ``{"client": "...", "kind": "desktop|board|api"}``: a
  session of the token's user; answers ``{"session": {"id", ...}, "expire_after"}``.
- ``PUT /v1/me/sessions/{id}`` ``{"state": "active|idle|locked", "idle_seconds": N}``:
  a report, and the heartbeat; 404 when the session is gone (expired, closed, or
  the leader restarted): open a new one.
- ``DELETE /v1/me/sessions/{id}``: closed (logout, shutdown).
- ``GET /v1/me/sessions`` and ``GET /v1/users/{user}/sessions``: every session,
  in full to the person, operators and admins; to others who may see the person,
  only ``last_active_ago`` to the minute.

The sessions live on the leader of an HA group: every request is its command
``sessions`` (plugin.py), run here or forwarded.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from astpresence.web.auth import Forbidden
from astpresence.web.http import (
    PRIVACY_KEY,
    SERVING_KEY,
    NotFound,
    _json_body,
    own_user,
    presence_api,
    principal,
)
from astpresence.web.openapi import OPT_TIME, STR, TIME, USER, list_of, obj, op, ref


def setup(app: web.Application) -> None:
    app.router.add_get("/v1/me/sessions", list_mine)
    app.router.add_post("/v1/me/sessions", open_session)
    app.router.add_put("/v1/me/sessions/{id}", report)
    app.router.add_delete("/v1/me/sessions/{id}", close)
    app.router.add_get("/v1/users/{user}/sessions", list_theirs)


def _own(request: web.Request) -> str:
    return own_user(request, "a user's token: sessions belong to a user")


async def _ask(request: web.Request, body: dict[str, Any]) -> dict[str, Any]:
    answer = await request.app[SERVING_KEY].call("sessions", body)
    if answer.get("unknown_session"):
        raise NotFound("no such session (expired, closed, or the server restarted): "
                       "open a new one with POST /v1/me/sessions")
    return answer


async def open_session(request: web.Request) -> web.Response:
    uid = _own(request)
    body = await _json_body(request, {"client", "kind"})
    answer = await _ask(request, {"op": "open", "user": uid, **body})
    return web.json_response(answer, status=201)


async def report(request: web.Request) -> web.Response:
    uid = _own(request)
    body = await _json_body(request, {"state", "idle_seconds"})
    answer = await _ask(request, {"op": "report", "user": uid,
                                  "id": request.match_info["id"], **body})
    return web.json_response(answer)


async def close(request: web.Request) -> web.Response:
    uid = _own(request)
    return web.json_response(await _ask(request, {"op": "close", "user": uid,
                                                  "id": request.match_info["id"]}))


async def list_mine(request: web.Request) -> web.Response:
    uid = _own(request)
    answer = await _ask(request, {"op": "list", "user": uid})
    return web.json_response({"user": uid, **answer})


async def list_theirs(request: web.Request) -> web.Response:
    uid = request.match_info["user"]
    presence_api(request).require_user(uid)
    who = principal(request)
    mode = request.app[PRIVACY_KEY].view_mode(who, uid)
    if mode == "hidden":
        raise Forbidden(f"the presence of {uid!r} is not visible to this token")
    answer = await _ask(request, {"op": "list", "user": uid})
    sessions = answer["sessions"]
    if not (who.privileged or who.user == uid):
        sessions = [{"last_active_ago": None if s["last_active_ago"] is None
                     else s["last_active_ago"] // 60 * 60} for s in sessions]
    return web.json_response({"user": uid, "sessions": sessions})


# -- OpenAPI ------------------------------------------------------------------------

#: Its part of /v1/status.
STATUS = obj({"sessions": {"type": "integer"}, "users": {"type": "integer"},
              "active": {"type": "integer"}, "idle": {"type": "integer"},
              "locked": {"type": "integer"}})

_SESSION = obj({"last_active_ago": {"type": ["integer", "null"]}},
               {"id": STR, "client": STR, "kind": {"type": "string",
                                                     "enum": ["desktop", "board", "api"]},
                "state": {"type": "string", "enum": ["active", "idle", "locked"]},
                "opened": TIME, "last_report": TIME, "last_active": OPT_TIME})

SCHEMAS: dict[str, Any] = {
    "Session": _SESSION,
    "SessionInput": obj({}, {"client": {"type": "string", "maxLength": 80},
                             "kind": {"type": "string", "enum": ["desktop", "board", "api"]}}),
    "SessionReport": obj({"state": {"type": "string", "enum": ["active", "idle", "locked"]}},
                         {"idle_seconds": {"type": "number", "minimum": 0}}),
    "SessionOpened": obj({"session": ref("Session"), "expire_after": {"type": "number"}}),
    "SessionClosed": obj({"closed": {"type": "boolean"}}),
    "Sessions": list_of("sessions", ref("Session"), user=STR),
}

PATHS: dict[str, Any] = {
    "/v1/me/sessions": {
        "get": op("Your sessions", ok="Sessions"),
        "post": op("Open a session (a desktop agent, a board tab, a desk client)",
                   body="SessionInput", ok="SessionOpened", status="201"),
    },
    "/v1/me/sessions/{id}": {
        "parameters": [{"name": "id", "in": "path", "required": True,
                        "schema": {"type": "string"}}],
        "put": op("Report active, idle or locked (also the heartbeat)", body="SessionReport",
                  ok="SessionOpened"),
        "delete": op("Close the session", ok="SessionClosed"),
    },
    "/v1/users/{user}/sessions": {
        "parameters": [USER],
        "get": op("A person's sessions (others see last_active_ago only)", ok="Sessions"),
    },
}
