"""The OpenAPI 3.1 description of the HTTP API (a test checks it against the routes)."""

from __future__ import annotations

from typing import Any

STATES = ["not_set", "unavailable", "available", "away", "xa", "chat", "dnd"]

_TEXT = {"type": "string", "maxLength": 255,
         "description": "At most 255 bytes of UTF-8, no control characters"}

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
        },
    },
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
                                  {"type": "number", "exclusiveMinimum": 0}],
                        "description": "When the presence reverts: a date-time with zone "
                                       "or seconds from now"},
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
            "start": {"type": "string", "format": "date-time"},
            "end": {"type": "string", "format": "date-time"},
            "ttl": {"type": "number", "exclusiveMinimum": 0},
        },
    },
    "TokenInput": {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "role": {"type": "string", "enum": ["user", "operator", "admin"]},
            "user": {"type": "string"},
            "label": {"type": "string", "maxLength": 80},
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
        "/v1/presence": {"get": {**_op("Every user's presence, as visible to the token"),
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
                                  "schema": {"type": "integer", "minimum": 1, "maximum": 1000}}],
            "get": _op("History, newest first"),
        },
        "/v1/presence/{user}/sources": {"parameters": [USER],
                                        "get": _op("Contributions, devices and the result")},
        "/v1/presence/{user}/sources/{name}": {
            "parameters": [USER, NAME],
            "put": _op("Add or replace a timed source", body="SourceInput"),
            "delete": _op("Remove a timed source"),
        },
        "/v1/me": {"get": _op("The token and its user")},
        "/v1/me/presence": {
            "put": _op("Publish your own presence", body="MyPresenceInput", ok="Presence"),
            "delete": _op("Clear your own presence", ok="Presence"),
        },
        "/v1/users": {"get": _op("Users with their devices and mirror device")},
        "/v1/status": {"get": _op("AMI link, sync state, counts")},
        "/v1/config": {"get": _op("Effective configuration without secrets (admin)")},
        "/v1/tokens": {
            "get": _op("API tokens (admin)"),
            "post": _op("Create a token, shown once (admin)", body="TokenInput", status="201"),
        },
        "/v1/tokens/{id}": {
            "parameters": [{"name": "id", "in": "path", "required": True,
                            "schema": {"type": "string"}}],
            "delete": _op("Revoke a token (admin)"),
        },
        "/v1/events": {"get": {
            **_op("WebSocket: presence changes", public=True),
            "description": (
                "Upgrade to a WebSocket. First client message: {\"token\": \"...\", "
                "\"subscribe\": [\"*\"] or [user ids], \"resume\": last seq (optional)}. "
                "Server: {\"type\":\"hello\",\"seq\"}, then missed events or "
                "{\"type\":\"snapshot\",\"stale\":true,\"presence\":[...]} when the gap is "
                "too old, then {\"type\":\"presence\",\"seq\",\"user\",\"presence\","
                "\"changed\":[...]}. Errors: {\"type\":\"error\",\"error\"} then close."),
        }},
    }
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
