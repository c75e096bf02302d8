"""The OpenAPI 3.1 description of the HTTP API (a test checks it against the routes)."""

from __future__ import annotations

from typing import Any

from astpresence.domain.model import MAX_LABEL, MAX_TEXT_BYTES, STATE_NAMES

#: Limits of the API, documented here and enforced by api.py.
MAX_TTL_SECONDS = 366 * 24 * 3600  # expires, ttl, end: at most 366 days ahead
HISTORY_MAX = 1000  # entries per history request

STATES = list(STATE_NAMES)

_TEXT = {"type": ["string", "null"], "maxLength": MAX_TEXT_BYTES,
         "description": f"At most {MAX_TEXT_BYTES} bytes of UTF-8, no control characters; "
                        "null or absent is the same as empty"}
_STR = {"type": "string"}
_TIME = {"type": "string", "format": "date-time"}
_OPT_TIME = {"type": ["string", "null"], "format": "date-time"}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _obj(required: dict[str, Any], optional: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"type": "object", "required": sorted(required),
            "properties": {**required, **(optional or {})}}


def _list_of(key: str, item: dict[str, Any], **more: Any) -> dict[str, Any]:
    return _obj({key: {"type": "array", "items": item}, **more})

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
        },
        "description": "A viewer who may see the state only gets empty subtype, message, "
                       "source, rule and actor, and no voicemail count",
    },
    "PresenceValue": _obj({"state": _ref("State"), "subtype": _STR, "message": _STR}),
    "PresenceList": _list_of("presence", _ref("Presence")),
    "History": _list_of("history", _obj({
        "id": {"type": "integer"}, "at": _TIME,
        "old": {"oneOf": [_ref("PresenceValue"), {"type": "null"}]},
        "new": _ref("PresenceValue"), "source": _STR, "actor": _STR, "reason": _STR,
    }), user=_STR),
    "Source": _obj({"source": _STR, "state": _ref("State"), "subtype": _STR, "message": _STR,
                    "since": _TIME, "actor": _STR, "start": _OPT_TIME, "end": _OPT_TIME}),
    "Sources": _obj({
        "user": _STR, "effective": _ref("Presence"),
        "sources": {"type": "array", "items": _ref("Source")},
        "devices": _obj({"states": {"type": "array", "items": _STR}, "aggregate": _STR,
                         "unavailable_since": _OPT_TIME}),
    }),
    "SourceSet": _obj({"source": _ref("Source"), "effective": _ref("Presence")}),
    "Effective": _obj({"effective": _ref("Presence")}),
    "TokenRef": _obj({"id": _STR, "role": _STR, "user": {"type": ["string", "null"]}}),
    "Me": _obj({"token": _ref("TokenRef"), "user": {"type": ["object", "null"]},
                "presence": {"oneOf": [_ref("Presence"), {"type": "null"}]}}),
    "Users": _list_of("users", _obj({
        "id": _STR, "name": _STR, "extension": _STR, "context": _STR,
        "devices": {"type": "array", "items": _STR}, "origin": _STR, "mirror_device": _STR})),
    "Status": _obj({
        "version": _STR,
        "ami": {"type": "object", "description": "The first (or only) Asterisk server's "
                                                 "link: name, host, port, state..."},
        "asterisk": {"type": "array", "items": {"type": "object"},
                     "description": "Every Asterisk server's link, as \"ami\", in the "
                                    "config's order ([[asterisk]])"},
        "synced": {"type": "boolean",
                   "description": "Every Asterisk server has been read since its link came up"},
        "last_sync": _OPT_TIME, "users": {"type": "integer"},
        "pending_writes": {"type": "integer"},
        "write_failures": {"type": "object",
                           "description": "Writes Asterisk refused, waiting for a retry, "
                                          "by kind (presence, mirror, queue_pause)",
                           "additionalProperties": {"type": "integer"}},
        "failing_writes": {"type": "array", "items": _obj({
            "node": _STR, "kind": _STR, "key": _STR, "error": _STR,
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
        "calendars": _obj({"feeds": {"type": "integer"}, "ok": {"type": "integer"},
                           "stale": {"type": "integer"}, "failing": {"type": "integer"},
                           "new": {"type": "integer"}}),
    }),
    "Config": {"type": "object"},
    "CalendarFeed": _obj({
        "user": _STR, "kind": {"type": "string", "enum": ["ics", "caldav", "m365"]},
        "name": _STR, "state": {"type": "string", "enum": ["new", "ok", "stale", "failing"],
                                "description": "stale: the last fetch failed, the last good "
                                               "events are kept until they end"},
        "error": _STR, "failures": {"type": "integer"}, "events": {"type": "integer"},
        "fetches": {"type": "integer"}, "not_modified": {"type": "integer"},
        "last_fetch": _OPT_TIME, "last_success": _OPT_TIME,
        "refresh_seconds": {"type": "number"}, "next_fetch_in": {"type": "number"}}),
    "Calendars": _list_of("calendars", _ref("CalendarFeed")),
    "Calendar": _obj({
        "user": _STR, "feeds": {"type": "array", "items": _ref("CalendarFeed")},
        "entries": {"type": "array", "items": _obj({
            "start": _TIME, "end": _TIME, "kind": {"type": "string", "enum": ["busy", "oof"]},
            "all_day": {"type": "boolean"}, "presence": _ref("PresenceValue")})}}),
    "Token": _obj({"id": _STR, "role": {"type": "string", "enum": ["user", "operator", "admin"]},
                   "user": {"type": ["string", "null"]}, "label": _STR,
                   "created_at": _TIME, "revoked_at": _OPT_TIME}),
    "TokenList": _list_of("tokens", _ref("Token")),
    "TokenCreated": {"allOf": [_ref("Token"), _obj({"token": _STR})]},
    "Revoked": _obj({"id": _STR, "revoked": {"type": "boolean"}}),
    "PresenceInput": {
        "type": "object",
        "additionalProperties": False,
        "required": ["state"],
        "properties": {"state": {"$ref": "#/components/schemas/State"},
                       "subtype": _TEXT, "message": _TEXT},
    },
    "MyPresenceInput": {
        "type": "object",
        "additionalProperties": False,
        "required": ["state"],
        "properties": {
            "state": {"$ref": "#/components/schemas/State"},
            "subtype": _TEXT,
            "message": _TEXT,
            "expires": {"oneOf": [{"type": "string", "format": "date-time"},
                                  {"type": "number", "exclusiveMinimum": 0,
                                   "maximum": MAX_TTL_SECONDS},
                                  {"type": "null"}],
                        "description": "When the presence reverts: a date-time with zone "
                                       "at most 366 days ahead, or seconds from now; "
                                       "null or absent: never"},
        },
    },
    "SourceInput": {
        "type": "object",
        "additionalProperties": False,
        "required": ["state"],
        "properties": {
            "state": {"$ref": "#/components/schemas/State"},
            "subtype": _TEXT,
            "message": _TEXT,
            "start": {"type": ["string", "null"], "format": "date-time"},
            "end": {"type": ["string", "null"], "format": "date-time",
                    "description": "At most 366 days ahead"},
            "ttl": {"type": ["number", "null"], "exclusiveMinimum": 0, "maximum": MAX_TTL_SECONDS,
                    "description": "Instead of end: seconds from start (or now)"},
        },
    },
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


def _op(summary: str, *, body: str | None = None, ok: str | None = None,
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


def openapi_document(version: str) -> dict[str, Any]:
    paths: dict[str, Any] = {
        "/": {"get": _op("The live presence board (HTML)", public=True)},
        "/static/{name}": {"get": {**_op("Board assets", public=True), "parameters": [NAME]}},
        "/metrics": {"get": _op("Prometheus metrics", public=True)},
        "/v1/openapi.json": {"get": _op("This document", public=True)},
        "/v1/presence": {"get": {**_op("Every user's presence, as visible to the token", ok="PresenceList"),
                                 "parameters": [{"name": "state", "in": "query",
                                                 "schema": {"$ref": "#/components/schemas/State"}}]}},
        "/v1/presence/{user}": {
            "parameters": [USER],
            "get": _op("One user's presence", ok="Presence"),
            "put": _op("Set the manual presence", body="PresenceInput", ok="Presence"),
            "delete": _op("Clear the manual presence", ok="Presence"),
        },
        "/v1/presence/{user}/history": {
            "parameters": [USER, {"name": "limit", "in": "query",
                                  "schema": {"type": "integer", "minimum": 1,
                                             "maximum": HISTORY_MAX}}],
            "get": _op("History, newest first", ok="History"),
        },
        "/v1/presence/{user}/sources": {"parameters": [USER],
                                        "get": _op("Contributions, devices and the result",
                                                   ok="Sources")},
        "/v1/presence/{user}/sources/{name}": {
            "parameters": [USER, NAME],
            "put": _op("Add or replace a timed source", body="SourceInput", ok="SourceSet"),
            "delete": _op("Remove a timed source", ok="Effective"),
        },
        "/v1/calendars": {"get": _op("Calendar feeds and their state (a user token: its own)",
                                     ok="Calendars")},
        "/v1/calendars/{user}": {
            "parameters": [USER],
            "get": _op("A user's feeds, the entries of the next days and the presence each "
                       "gives", ok="Calendar"),
        },
        "/v1/calendars/{user}/refresh": {
            "parameters": [USER],
            "post": _op("Fetch the user's feeds now, then as GET", ok="Calendar"),
        },
        "/v1/me": {"get": _op("The token and its user", ok="Me")},
        "/v1/me/presence": {
            "put": _op("Publish your own presence", body="MyPresenceInput", ok="Presence"),
            "delete": _op("Clear your own presence", ok="Presence"),
        },
        "/v1/users": {"get": _op("Users with their devices and mirror device", ok="Users")},
        "/v1/status": {"get": _op("AMI link, sync state, counts, refused writes",
                                  ok="Status")},
        "/v1/config": {"get": _op("Effective configuration without secrets (admin)",
                                  ok="Config")},
        "/v1/tokens": {
            "get": _op("API tokens (admin)", ok="TokenList"),
            "post": _op("Create a token, shown once (admin)", body="TokenInput", status="201",
                        ok="TokenCreated"),
        },
        "/v1/tokens/{id}": {
            "parameters": [{"name": "id", "in": "path", "required": True,
                            "schema": {"type": "string"}}],
            "delete": _op("Revoke a token (admin); its event streams are closed (1008)",
                          ok="Revoked"),
        },
        "/v1/events": {"get": {
            **_op("WebSocket: presence changes", public=True, errors=(503,)),
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
                "the stream (1001). Errors: {\"type\":\"error\",\"error\"} then close."),
        }},
    }
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
            "schemas": SCHEMAS,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"bearer": []}],
        "paths": paths,
    }
