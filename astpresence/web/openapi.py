"""The OpenAPI 3.1 description of the HTTP API (a test checks it against the routes)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from astpresence.domain.model import MAX_LABEL, MAX_TEXT_BYTES, STATE_NAMES
from astpresence.web.sources import source_routes

#: Limits of the API, documented here and enforced by api.py.
MAX_TTL_SECONDS = 366 * 24 * 3600  # expires, ttl, end: at most 366 days ahead
HISTORY_MAX = 1000  # entries per history request

STATES = list(STATE_NAMES)

_TEXT = {"type": ["string", "null"], "maxLength": MAX_TEXT_BYTES,
         "description": f"At most {MAX_TEXT_BYTES} bytes of UTF-8, no control characters; "
                        "null or absent is the same as empty"}
STR = {"type": "string"}
TIME = {"type": "string", "format": "date-time"}
OPT_TIME = {"type": ["string", "null"], "format": "date-time"}


def ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def obj(required: dict[str, Any], optional: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"type": "object", "required": sorted(required),
            "properties": {**required, **(optional or {})}}


def list_of(key: str, item: dict[str, Any], **more: Any) -> dict[str, Any]:
    return obj({key: {"type": "array", "items": item}, **more})

def presence_input(*, required: tuple[str, ...] = ("state",), **more: Any) -> dict[str, Any]:
    """A request body holding a presence (state, subtype, message) and ``more``."""
    return {"type": "object", "additionalProperties": False, "required": list(required),
            "properties": {"state": ref("State"), "subtype": _TEXT, "message": _TEXT,
                           **more}}


_WHEN = {"oneOf": [{"type": "string", "format": "date-time"},
                   {"type": "number", "exclusiveMinimum": 0, "maximum": MAX_TTL_SECONDS},
                   {"type": "null"}]}
#: A chosen presence's extras: its end, its message's end, or a named status.
_CHOICE: dict[str, Any] = {
    "required": (),
    "expires": {**_WHEN, "description": "When the presence reverts: a date-time with zone at "
                                        "most 366 days ahead, or seconds from now; null or "
                                        "absent: the status's duration, else [rules] "
                                        "expire_after for the state, else never"},
    "message_expires": {**_WHEN, "description": "When the message alone lapses (the state "
                                                "stays): as expires"},
    "status": {"type": "string", "description": "a named status (GET /v1/statuses): its "
                                                "state, subtype, message and duration, "
                                                "unless given here; state is then optional"},
}


SCHEMAS: dict[str, Any] = {
    "Error": {
        "type": "object",
        "required": ["error", "status"],
        "properties": {"error": {"type": "string"}, "status": {"type": "integer"}},
    },
    "State": {"type": "string", "enum": STATES},
    "Presence": {
        "type": "object",
        "required": ["user", "state", "subtype", "message", "source", "since"],
        "properties": {
            "user": {"type": "string"},
            "state": {"$ref": "#/components/schemas/State"},
            "subtype": {"type": "string"},
            "message": {"type": "string"},
            "source": {"type": "string", "description": "manual, device, auto, default or a "
                                                        "timed source such as calendar"},
            "rule": {"type": "string"},
            "actor": {"type": "string"},
            "since": {"type": ["string", "null"], "format": "date-time"},
            "pending": {"type": "boolean",
                        "description": "true while Asterisk has not received it"},
            "name": {"type": "string",
                     "description": "display name: the config, else FreePBX's AMPUSER "
                                    "cidname, else the phone's caller ID; may be empty"},
            "voicemail": {"type": ["integer", "null"], "minimum": 0,
                          "description": "new voicemail messages waiting; null when the "
                                         "user has no known mailbox or the viewer may not "
                                         "see it"},
            "chosen": {"$ref": "#/components/schemas/PresenceValue",
                       "description": "what the person chose (or a source decided), apart "
                                      "from a call or offline overlay; state, subtype and "
                                      "message above are the effective presence written "
                                      "to Asterisk"},
            "activity": {"type": "string",
                         "description": "what is going on now: on-the-phone, ringing, "
                                        "on-hold, offline, a calendar entry's subtype "
                                        "(meeting, out-of-office), or empty"},
            "forwarding": {
                "oneOf": [{"type": "null"}, obj({
                    "on": {"type": "array", "items": {"type": "string", "enum": [
                        "unconditional", "busy", "unavailable", "followme"]}},
                    "unconditional": STR, "busy": STR, "unavailable": STR,
                    "followme": {"type": "array", "items": STR}})],
                "description": "call forwarding FreePBX applies (*72 and the like, "
                               "follow-me); null when none"},
            "calls": {"type": "string",
                      "description": "what happens to a call now by the person's "
                                    "call-handling rules, or empty"},
        },
        "description": "A viewer who may see the state only gets empty subtype, message, "
                       "source, rule, actor and calls, no voicemail count, and forwarding "
                       "without its destinations",
    },
    "PresenceValue": obj({"state": ref("State"), "subtype": STR, "message": STR}),
    "PresenceList": list_of("presence", ref("Presence")),
    "History": list_of("history", obj({
        "id": {"type": "integer"}, "at": TIME,
        "old": {"oneOf": [ref("PresenceValue"), {"type": "null"}]},
        "new": ref("PresenceValue"), "source": STR, "actor": STR, "reason": STR,
        "activity": STR,
    }), user=STR),
    "StatusCatalogue": list_of("statuses", obj({
        "id": STR, "label": STR, "state": ref("State"), "subtype": STR, "message": STR,
        "duration": {"type": ["number", "null"], "description": "seconds it lasts once "
                                                                 "chosen; null: until changed"},
        "digit": {"type": ["integer", "null"], "description": "N of the *37N feature code"},
    })),
    "Source": obj({"source": STR, "state": ref("State"), "subtype": STR, "message": STR,
                    "since": TIME, "actor": STR, "start": OPT_TIME, "end": OPT_TIME}),
    "Sources": obj({
        "user": STR, "effective": ref("Presence"),
        "sources": {"type": "array", "items": ref("Source")},
        "devices": obj({"states": {"type": "array", "items": STR}, "aggregate": STR,
                         "unavailable_since": OPT_TIME}),
    }),
    "SourceSet": obj({"source": ref("Source"), "effective": ref("Presence")}),
    "Effective": obj({"effective": ref("Presence")}),
    "TokenRef": obj({"id": STR, "role": STR, "user": {"type": ["string", "null"]}}),
    "Me": obj({"token": ref("TokenRef"), "user": {"type": ["object", "null"]},
                "presence": {"oneOf": [ref("Presence"), {"type": "null"}]}}),
    "Users": list_of("users", obj({
        "id": STR, "name": STR, "extension": STR, "context": STR,
        "devices": {"type": "array", "items": STR}, "origin": STR, "mirror_device": STR})),
    "Status": obj({
        "version": STR,
        "ami": {"type": "object", "description": "The first (or only) Asterisk server's "
                                                 "link: name, host, port, state..."},
        "asterisk": {"type": "array", "items": {"type": "object"},
                     "description": "Every Asterisk server's link, as \"ami\", in the "
                                    "config's order ([[asterisk]])"},
        "synced": {"type": "boolean",
                   "description": "Every Asterisk server has been read since its link came up"},
        "last_sync": OPT_TIME, "users": {"type": "integer"},
        "pending_writes": {"type": "integer"},
        "write_failures": {"type": "object",
                           "description": "Writes Asterisk refused, waiting for a retry, "
                                          "by kind (presence, mirror, queue_pause)",
                           "additionalProperties": {"type": "integer"}},
        "failing_writes": {"type": "array", "items": obj({
            "node": STR, "kind": STR, "key": STR, "error": STR,
            "attempts": {"type": "integer"},
            "retry_in_seconds": {"type": ["number", "null"]}})},
        "websocket_clients": {"type": "integer"}, "features": {"type": "object"},
        "ha": {"type": ["object", "null"],
               "description": "[ha] enabled: role (leader or follower), node, since, leader "
                              "{node, api, role, since, seen}, group (the nodes seen in the "
                              "last 30 s), takeovers, following (a follower in step with the "
                              "leader serves the whole API), commands_run (followers' writes "
                              "this leader ran); null when off. A follower not yet in step "
                              "answers other requests 503 with the leader in the body"},
        "role": {"type": ["string", "null"], "enum": ["leader", "follower", None],
                 "description": "This node's part in its HA group (null: [ha] off)"},
    }),
    "Config": {"type": "object"},
    "Token": obj({"id": STR, "role": {"type": "string", "enum": ["user", "operator", "admin"]},
                   "user": {"type": ["string", "null"]}, "label": STR,
                   "created_at": TIME, "revoked_at": OPT_TIME}),
    "TokenList": list_of("tokens", ref("Token")),
    "TokenCreated": {"allOf": [ref("Token"), obj({"token": STR})]},
    "Revoked": obj({"id": STR, "revoked": {"type": "boolean"}}),
    "PresenceInput": presence_input(**_CHOICE),
    "MyPresenceInput": presence_input(**_CHOICE),
    "SourceInput": presence_input(
        start={"type": ["string", "null"], "format": "date-time"},
        end={"type": ["string", "null"], "format": "date-time",
             "description": "At most 366 days ahead"},
        ttl={"type": ["number", "null"], "exclusiveMinimum": 0, "maximum": MAX_TTL_SECONDS,
             "description": "Instead of end: seconds from start (or now)"}),
    "TokenInput": {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "role": {"type": "string", "enum": ["user", "operator", "admin"],
                     "default": "user"},
            "user": {"type": ["string", "null"],
                     "description": "The user the token acts for; required for role user"},
            "label": {"type": "string", "maxLength": MAX_LABEL,
                      "description": "No control characters"},
        },
    },
}


def _json(ref: str) -> dict[str, Any]:
    return {"application/json": {"schema": {"$ref": f"#/components/schemas/{ref}"}}}


def op(summary: str, *, body: str | None = None, ok: str | None = None,
        status: str = "200", public: bool = False, errors: tuple[int, ...] = ()) -> dict[str, Any]:
    responses: dict[str, Any] = {status: {"description": "OK"}}
    if ok:
        responses[status]["content"] = _json(ok)
    for code in (400, 401, 403, 404, 413, *errors):
        if public and code in (401, 403):
            continue
        responses[str(code)] = {"description": "Error", "content": _json("Error")}
    op: dict[str, Any] = {"summary": summary, "responses": responses}
    if body:
        op["requestBody"] = {"required": True, "content": _json(body)}
    if public:
        op["security"] = []
    return op


USER = {"name": "user", "in": "path", "required": True, "schema": {"type": "string"}}
NAME = {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}


def openapi_document(version: str, more: Sequence[tuple[dict[str, Any], dict[str, Any]]] = ()
                     ) -> dict[str, Any]:
    """The OpenAPI document; ``more``: (paths, schemas) of other route modules."""
    paths: dict[str, Any] = {
        "/": {"get": op("The live presence board (HTML)", public=True)},
        "/static/{name}": {"get": {**op("Board assets", public=True), "parameters": [NAME]}},
        "/metrics": {"get": op("Prometheus metrics", public=True)},
        "/v1/openapi.json": {"get": op("This document", public=True)},
        "/v1/presence": {"get": {**op("Every user's presence, as visible to the token", ok="PresenceList"),
                                 "parameters": [{"name": "state", "in": "query",
                                                 "schema": {"$ref": "#/components/schemas/State"}}]}},
        "/v1/presence/{user}": {
            "parameters": [USER],
            "get": op("One user's presence", ok="Presence"),
            "put": op("Set the manual presence", body="PresenceInput", ok="Presence"),
            "delete": op("Clear the manual presence", ok="Presence"),
        },
        "/v1/presence/{user}/history": {
            "parameters": [USER, {"name": "limit", "in": "query",
                                  "schema": {"type": "integer", "minimum": 1,
                                             "maximum": HISTORY_MAX}}],
            "get": op("History, newest first", ok="History"),
        },
        "/v1/presence/{user}/sources": {"parameters": [USER],
                                        "get": op("Contributions, devices and the result",
                                                   ok="Sources")},
        "/v1/presence/{user}/sources/{name}": {
            "parameters": [USER, NAME],
            "put": op("Add or replace a timed source", body="SourceInput", ok="SourceSet"),
            "delete": op("Remove a timed source", ok="Effective"),
        },
        "/v1/me": {"get": op("The token and its user", ok="Me")},
        "/v1/statuses": {"get": op("The named statuses ([[statuses]] in the config)",
                                   ok="StatusCatalogue")},
        "/v1/me/presence": {
            "put": op("Publish your own presence", body="MyPresenceInput", ok="Presence"),
            "delete": op("Clear your own presence", ok="Presence"),
        },
        "/v1/users": {"get": op("Users with their devices and mirror device", ok="Users")},
        "/v1/status": {"get": op("AMI link, sync state, counts, refused writes",
                                  ok="Status")},
        "/v1/config": {"get": op("Effective configuration without secrets (admin)",
                                  ok="Config")},
        "/v1/tokens": {
            "get": op("API tokens (admin)", ok="TokenList"),
            "post": op("Create a token, shown once (admin)", body="TokenInput", status="201",
                        ok="TokenCreated"),
        },
        "/v1/tokens/{id}": {
            "parameters": [{"name": "id", "in": "path", "required": True,
                            "schema": {"type": "string"}}],
            "delete": op("Revoke a token (admin); its event streams are closed (1008)",
                          ok="Revoked"),
        },
        "/v1/events": {"get": {
            **op("WebSocket: presence changes", public=True, errors=(503,)),
            "description": (
                "Upgrade to a WebSocket. First client message: {\"token\": \"...\", "
                "\"subscribe\": [\"*\"] or [user ids], \"resume\": last seq (optional)}. "
                "Server: {\"type\":\"hello\",\"seq\"}, then missed events or "
                "{\"type\":\"snapshot\",\"stale\":true,\"presence\":[...]} when the gap is "
                "too old, then {\"type\":\"presence\",\"seq\",\"user\",\"presence\","
                "\"changed\":[...]}. Service events, not numbered: {\"type\":\"link\",\"state\":"
                "\"down\"|\"synced\",\"since\",\"asterisk\",\"reason\",\"node\"} when an "
                "Asterisk server's link goes down (presence may be stale) or is synced again "
                "(the hello carries the current one as \"link\", the oldest down one when "
                "there are several servers, and each server's as \"links\"), and "
                "{\"type\":\"shutdown\"} before the daemon closes "
                "the stream (1001). Errors: {\"type\":\"error\",\"error\"} then close. "
                "A user's stream may carry a client session: \"session\": {\"client\", "
                "\"kind\"} in the first message opens one (the hello has it), "
                "{\"session\": {\"state\", \"idle_seconds\"}} reports, the open socket "
                "is its heartbeat and closing it closes the session."),
        }},
    }
    schemas = dict(SCHEMAS)
    status = dict(SCHEMAS["Status"])
    status["properties"] = dict(status["properties"])
    for name, routes in source_routes():  # each source's routes and its part of the status
        paths.update(routes.PATHS)
        schemas.update(routes.SCHEMAS)
        status["properties"][name] = routes.STATUS
        status["required"] = sorted({*status["required"], name})
    schemas["Status"] = status
    for more_paths, more_schemas in more:
        paths.update(more_paths)
        schemas.update(more_schemas)
    for item in paths.values():  # writes are rate-limited per token ([api] writes_per_second)
        for method in ("put", "post", "delete"):
            if method in item:
                item[method]["responses"]["429"] = {
                    "description": "Too many changes from this token: try again after "
                                   "the Retry-After header's seconds",
                    "content": _json("Error")}
    return {
        "openapi": "3.1.0",
        "info": {"title": "astpresence", "version": version,
                 "description": "Presence server for Asterisk"},
        "components": {
            "schemas": schemas,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"bearer": []}],
        "paths": paths,
    }
