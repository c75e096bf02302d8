"""Teams' routes (web layer).

- ``POST /v1/hooks/teams``: Microsoft Graph's change and lifecycle notifications
  (the ``notification_url``). Graph carries no token: the route is public and
  every notification must carry the subscription's ``clientState`` (checked by
  the leader). A ``?validationToken=`` is answered with the token as plain
  text, as Graph's handshake asks (within 10 s). The body is read to 1 MB at
  most and handed to the leader of an HA group (the ``teams`` command); past
  200 requests a second (in all) the hook answers 429, which Graph retries.
- ``GET /v1/teams``: the link to Graph and the mapping, for operators and admins.
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from astpresence.domain.model import InvalidInput
from astpresence.web.auth import Forbidden
from astpresence.web.http import SERVING_KEY, principal
from astpresence.web.limits import RateLimit
from astpresence.web.openapi import STR, obj, op, ref

#: A notification body, at most (Graph batches notifications).
MAX_NOTIFICATION_BYTES = 1024 * 1024
MAX_VALIDATION_TOKEN = 1024


#: Notification requests a second the hook takes, in all (Graph batches; a flood of
#: forged ones gets 429 and never reaches the leader's command table).
HOOK_RATE, HOOK_BURST = 200.0, 400
HOOK_KEY = web.AppKey("teams_hook", RateLimit)


def setup(app: web.Application) -> None:
    app[HOOK_KEY] = RateLimit(HOOK_RATE, HOOK_BURST, what="too many notifications")
    app.router.add_post("/v1/hooks/teams", notifications)
    app.router.add_get("/v1/teams", teams_status)


async def notifications(request: web.Request) -> web.Response:
    request.app[HOOK_KEY].take("all")
    token = request.query.get("validationToken")
    if token is not None:
        if len(token) > MAX_VALIDATION_TOKEN or not token.isprintable():
            raise InvalidInput("validationToken: too long or not printable")
        return web.Response(text=token, content_type="text/plain")
    raw = await request.content.read(MAX_NOTIFICATION_BYTES + 1)
    if len(raw) > MAX_NOTIFICATION_BYTES:
        raise web.HTTPRequestEntityTooLarge(max_size=MAX_NOTIFICATION_BYTES,
                                            actual_size=len(raw))
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise InvalidInput("a notification body is a JSON object") from None
    items = body.get("value") if isinstance(body, dict) else None
    if not isinstance(items, list):
        raise InvalidInput("a notification body has a 'value' list")
    await request.app[SERVING_KEY].call("teams", {"op": "notify", "value": items})
    return web.Response(status=202)


async def teams_status(request: web.Request) -> web.Response:
    if not principal(request).privileged:
        raise Forbidden("the Teams link is shown to operators and admins")
    answer: dict[str, Any] = await request.app[SERVING_KEY].call("teams", {"op": "map"})
    return web.json_response(answer)


STATUS = obj({"enabled": {"type": "boolean"}}, {"token": STR,
              "users_mapped": {"type": "integer"}, "users_resolved": {"type": "integer"},
              "polling": {"type": "boolean"}, "subscriptions": {"type": "integer"},
              "last_notification": {"type": ["string", "null"]},
              "missing_permissions": {"type": "array", "items": STR}, "last_error": STR})
SCHEMAS: dict[str, Any] = {
    "TeamsLink": obj({"status": ref("TeamsStatus"),
                      "map": {"type": "array", "items": obj({
                          "user": STR, "teams": STR, "object_id": {"type": ["string", "null"]},
                          "error": STR, "availability": {"type": ["string", "null"]},
                          "activity": {"type": ["string", "null"]}})}}),
    "TeamsStatus": STATUS,
}
PATHS: dict[str, Any] = {
    "/v1/hooks/teams": {"post": op("Microsoft Graph's change and lifecycle notifications "
                                   "(no token: each carries its subscription's clientState; "
                                   "?validationToken= is echoed as text/plain)",
                                   status="202", public=True)},
    "/v1/teams": {"get": op("The link to Microsoft Graph and who is mapped (operators, "
                            "admins)", ok="TeamsLink")},
}
