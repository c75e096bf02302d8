"""The calendars' routes (web layer): ``/v1/calendars``, one user's, and a refresh.

The feeds run on the leader only: every answer comes through the serving
node's command (``calendars``, plugin.py), run here or by the leader.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from astpresence.sources.calendars.feeds import CalendarFeeds
from astpresence.web.http import (
    SERVING_KEY,
    SOURCES_KEY,
    NotFound,
    _require_details,
    principal,
)
from astpresence.web.limits import RateLimit
from astpresence.web.openapi import OPT_TIME, STR, TIME, USER, list_of, obj, op, ref

#: A user's calendars may be refreshed this often on demand (one at once, then one
#: every 10 s): each refresh is a fetch of every feed of the user.
REFRESH_RATE, REFRESH_BURST = 0.1, 2
REFRESH_KEY = web.AppKey("calendar_refresh", RateLimit)


def setup(app: web.Application) -> None:
    app[REFRESH_KEY] = RateLimit(REFRESH_RATE, REFRESH_BURST,
                                 what="this user's calendars were just refreshed")
    app.router.add_get("/v1/calendars", list_calendars)
    app.router.add_get("/v1/calendars/{user}", get_calendar)
    app.router.add_post("/v1/calendars/{user}/refresh", refresh_calendar)


async def _ask(request: web.Request, uid: str | None, refresh: bool = False) -> dict[str, Any]:
    return await request.app[SERVING_KEY].call("calendars", {"user": uid, "refresh": refresh})


def _feeds(request: web.Request) -> CalendarFeeds:
    feeds = request.app[SOURCES_KEY]["calendars"]
    assert isinstance(feeds, CalendarFeeds)
    return feeds


def _calendar_user(request: web.Request) -> str:
    uid = request.match_info["user"]
    _require_details(request, uid)
    if not _feeds(request).of(uid):
        raise NotFound(f"user {uid!r} has no calendar feed")
    return uid


def _calendar(answer: dict[str, Any]) -> dict[str, Any]:
    calendar = answer.get("calendar")
    if not isinstance(calendar, dict):
        raise web.HTTPServiceUnavailable(reason="the leader's answer has no calendar")
    return calendar


async def list_calendars(request: web.Request) -> web.Response:
    who = principal(request)
    feeds = [f for f in (await _ask(request, None))["calendars"]
             if who.privileged or who.user == f["user"]]
    return web.json_response({"calendars": feeds})


async def get_calendar(request: web.Request) -> web.Response:
    return web.json_response(_calendar(await _ask(request, _calendar_user(request))))


async def refresh_calendar(request: web.Request) -> web.Response:
    uid = _calendar_user(request)
    principal(request).require_change(uid)
    request.app[REFRESH_KEY].take(uid)
    return web.json_response(_calendar(await _ask(request, uid, refresh=True)))


# -- OpenAPI ------------------------------------------------------------------------

#: Its part of /v1/status.
STATUS = obj({"feeds": {"type": "integer"}, "ok": {"type": "integer"},
              "stale": {"type": "integer"}, "failing": {"type": "integer"},
              "new": {"type": "integer"}})

SCHEMAS: dict[str, Any] = {
    "CalendarFeed": obj({
        "user": STR, "kind": {"type": "string", "enum": ["ics", "caldav", "m365"]},
        "name": STR, "state": {"type": "string", "enum": ["new", "ok", "stale", "failing"],
                               "description": "stale: the last fetch failed, the last good "
                                              "events are kept until they end"},
        "error": STR, "failures": {"type": "integer"}, "events": {"type": "integer"},
        "fetches": {"type": "integer"}, "not_modified": {"type": "integer"},
        "last_fetch": OPT_TIME, "last_success": OPT_TIME,
        "refresh_seconds": {"type": "number"}, "next_fetch_in": {"type": "number"}}),
    "Calendars": list_of("calendars", ref("CalendarFeed")),
    "Calendar": obj({
        "user": STR, "feeds": {"type": "array", "items": ref("CalendarFeed")},
        "entries": {"type": "array", "items": obj({
            "start": TIME, "end": TIME, "kind": {"type": "string", "enum": ["busy", "oof"]},
            "all_day": {"type": "boolean"}, "presence": ref("PresenceValue")})}}),
}

PATHS: dict[str, Any] = {
    "/v1/calendars": {"get": op("Calendar feeds and their state (a user token: its own)",
                                ok="Calendars")},
    "/v1/calendars/{user}": {
        "parameters": [USER],
        "get": op("A user's feeds, the entries of the next days and the presence each "
                  "gives", ok="Calendar"),
    },
    "/v1/calendars/{user}/refresh": {
        "parameters": [USER],
        "post": op("Fetch the user's feeds now, then as GET", ok="Calendar"),
    },
}
