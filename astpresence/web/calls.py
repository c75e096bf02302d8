"""Call handling's routes: ``/v1/me/call-handling`` (the caller's own rules) and
``/v1/users/{user}/call-handling`` (the person themself, operators and admins).

The rules hold forward numbers: only someone who may change a person's
presence sees or edits them. Every answer comes from the leader of an HA group
(the commands ``call_rules``/``set_call_rules``, cluster/commands.py).
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from astpresence.domain.calls import MAX_RULES, MAX_SECONDS
from astpresence.web.http import (SERVING_KEY, _actor, _json_body, own_user, presence_api,
                                  principal)
from astpresence.web.openapi import STR, USER, obj, op, ref


def setup(app: web.Application) -> None:
    app.router.add_get("/v1/me/call-handling", get_mine)
    app.router.add_put("/v1/me/call-handling", put_mine)
    app.router.add_get("/v1/users/{user}/call-handling", get_user)
    app.router.add_put("/v1/users/{user}/call-handling", put_user)


def _own(request: web.Request) -> str:
    return own_user(request, "/v1/users/{user}/call-handling")


def _theirs(request: web.Request) -> str:
    uid = request.match_info["user"]
    presence_api(request).require_user(uid)  # 404 before 403: ids are not secret
    principal(request).require_change(uid)
    return uid


async def _show(request: web.Request, uid: str) -> web.Response:
    answer = await request.app[SERVING_KEY].call("call_rules", {"user": uid})
    return web.json_response(answer)


async def _replace(request: web.Request, uid: str) -> web.Response:
    body = await _json_body(request, {"rules", "show_presence"})
    answer = await request.app[SERVING_KEY].call(
        "set_call_rules", {"user": uid, "rules": body, "actor": _actor(request)})
    return web.json_response(answer)


async def get_mine(request: web.Request) -> web.Response:
    return await _show(request, _own(request))


async def put_mine(request: web.Request) -> web.Response:
    return await _replace(request, _own(request))


async def get_user(request: web.Request) -> web.Response:
    return await _show(request, _theirs(request))


async def put_user(request: web.Request) -> web.Response:
    return await _replace(request, _theirs(request))


# -- OpenAPI ------------------------------------------------------------------------

_SECONDS = {"type": "integer", "minimum": 0, "maximum": MAX_SECONDS}
_RULE = {
    "type": "object", "additionalProperties": False, "required": ["when", "action"],
    "properties": {
        "when": {"type": "string", "description": "any, a presence state or a status id"},
        "callers": {"type": "string", "enum": ["any", "internal", "external"]},
        "on": {"type": "string", "enum": ["call", "busy", "no_answer", "unregistered"],
               "description": "call: when the call arrives; the others: after ringing"},
        "action": {"type": "string",
                   "enum": ["ring", "forward", "voicemail", "busy", "unavailable"]},
        "to": {"type": "string", "description": "forward: an extension, a user or a "
                                                "number the site's policy allows"},
        "after": {**_SECONDS, "description": "forward: seconds of ringing first"},
        "both": {"type": "boolean", "description": "forward: ring the phone too"},
        "timeout": {**_SECONDS, "minimum": 1, "description": "ring: seconds"},
        "greeting": {"type": "string", "enum": ["busy", "unavailable"]},
    },
}
_NOW = obj({"summary": STR, "rules": {"type": "object", "additionalProperties": _RULE}})

SCHEMAS: dict[str, Any] = {
    "CallRule": _RULE,
    "CallRulesInput": obj({"rules": {"type": "array", "maxItems": MAX_RULES,
                                     "items": ref("CallRule")}},
                          {"show_presence": {"type": ["boolean", "null"],
                                             "description": "callers see this person's "
                                             "presence on their display; null or absent: "
                                             "the site's [calls] show_presence"}}),
    "CallHandling": obj({
        "user": STR, "enabled": {"type": "boolean"},
        "rules": {"type": "array", "items": ref("CallRule")},
        "defaults": {"type": "array", "items": ref("CallRule")},
        "updated_by": {"type": ["string", "null"]},
        "updated_at": {"type": ["string", "null"], "format": "date-time"},
        "show_presence": {"type": ["boolean", "null"]},
        "shown_to_callers": {"type": ["string", "null"],
                             "description": "the name callers see with the presence, "
                                            "or null when it is not shown"},
        "now": obj({"internal": _NOW, "external": _NOW})}),
}

PATHS: dict[str, Any] = {
    "/v1/me/call-handling": {
        "get": op("Your call-handling rules and what happens to a call now",
                  ok="CallHandling"),
        "put": op("Replace your call-handling rules", body="CallRulesInput",
                  ok="CallHandling"),
    },
    "/v1/users/{user}/call-handling": {
        "parameters": [USER],
        "get": op("A person's call-handling rules (themself, operators, admins)",
                  ok="CallHandling"),
        "put": op("Replace a person's call-handling rules", body="CallRulesInput",
                  ok="CallHandling"),
    },
}
