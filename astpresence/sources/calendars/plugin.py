"""The calendars' registration (sources/plugin.py): ``[[calendars]]`` and ``[limits]
calendar_parse_seconds``, the feeds at work, the leader's answer to its followers'
``calendars`` question, the routes in web.py and the ``calendar`` commands in cli.py.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from astpresence.domain.model import InvalidInput
from astpresence.engine.service import PresenceService
from astpresence.sources.calendars.feeds import CalendarFeeds
from astpresence.sources.calendars.fetch import safe_url
from astpresence.sources.calendars.settings import (
    CalendarSettings,
    parse_section,
    with_parse_seconds,
)
from astpresence.sources.plugin import SourcePlugin


def _start(settings: CalendarSettings, service: PresenceService) -> CalendarFeeds:
    return CalendarFeeds(settings.feeds, service, parse_timeout=settings.parse_seconds)


def _show(settings: CalendarSettings) -> dict[str, Any]:
    feeds = []
    for feed in settings.feeds:
        shown = {f.name: getattr(feed, f.name) for f in dataclasses.fields(feed)}
        shown["url"] = safe_url(feed.url) if feed.url else ""
        feeds.append(shown)
    return {"feeds": feeds, "parse_seconds": settings.parse_seconds}


async def answer(feeds: CalendarFeeds, body: dict[str, Any]) -> dict[str, Any]:
    """The calendars as the leader knows them: the list, or one user's (fetched first
    with ``refresh``): only the leader fetches them."""
    uid = body.get("user")
    if uid is None:
        return {"calendars": [f.json() for f in feeds.feeds]}
    if not isinstance(uid, str):
        raise InvalidInput("user: expected a string")
    feeds.service.require_user(uid)
    if body.get("refresh"):
        await feeds.refresh_user(uid)
    return {"calendar": feeds.user_json(uid)}


PLUGIN = SourcePlugin(
    name="calendars",
    default=CalendarSettings(),
    parse=parse_section,
    start=_start,
    limits={"calendar_parse_seconds": with_parse_seconds},
    show=_show,
    commands={"calendars": answer},
    web="astpresence.sources.calendars.web",
    cli="astpresence.sources.calendars.cli",
)
