"""A follower's writes and questions, run by the leader: one table, kind -> handler,
and the follower's side that encodes them (:class:`Remote`, the engine's ``Leader``
port).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any


from astpresence.engine.cards import Card
from astpresence.domain.model import InvalidInput, Presence, parse_device_state, parse_presence
from astpresence.domain.records import PresenceView, SourceRecord
from astpresence.domain.rules import DeviceView
from astpresence.engine.service import PresenceService, UnknownSource, UnknownUser
from astpresence.store.base import StoreError

if TYPE_CHECKING:
    from astpresence.sources.calendars.feeds import CalendarFeeds

from astpresence.cluster.notices import _parse_time, _time, view_from_json, view_json

logger = logging.getLogger(__name__)


# -- commands -----------------------------------------------------------------------


def _source_json(rec: SourceRecord) -> dict[str, Any]:
    return {"user": rec.user, "source": rec.source, "presence": rec.presence.as_dict(),
            "since": _time(rec.since), "actor": rec.actor, "start": _time(rec.start),
            "end": _time(rec.end)}


def _source_from_json(d: dict[str, Any]) -> SourceRecord:
    p = d["presence"]
    since = _parse_time(d["since"])
    assert since is not None
    return SourceRecord(d["user"], d["source"], parse_presence(p["state"], p["subtype"],
                                                               p["message"]),
                        since, d["actor"], _parse_time(d["start"]), _parse_time(d["end"]))


async def _set_manual(service: PresenceService, body: dict[str, Any],
                      calendars: CalendarFeeds | None) -> dict[str, Any]:
    p = body["presence"]
    return _answer(await service.set_manual(
        body["user"], parse_presence(p["state"], p["subtype"], p["message"]), body["actor"],
        end=_parse_time(body.get("end"))))


async def _clear_manual(service: PresenceService, body: dict[str, Any],
                        calendars: CalendarFeeds | None) -> dict[str, Any]:
    return _answer(await service.clear_manual(body["user"], body["actor"]))


async def _set_source(service: PresenceService, body: dict[str, Any],
                      calendars: CalendarFeeds | None) -> dict[str, Any]:
    return _answer(await service.set_source(_source_from_json(body["record"])))


async def _delete_source(service: PresenceService, body: dict[str, Any],
                         calendars: CalendarFeeds | None) -> dict[str, Any]:
    return _answer(await service.delete_source(body["user"], body["name"], body["actor"]))


async def _devices(service: PresenceService, body: dict[str, Any],
                   calendars: CalendarFeeds | None) -> dict[str, Any]:
    service.require_user(body["user"])
    devices = service.device_view(body["user"])
    return {"states": [d.value for d in devices.states],
            "unavailable_since": _time(devices.unavailable_since)}


async def _calendars(service: PresenceService, body: dict[str, Any],
                     calendars: CalendarFeeds | None) -> dict[str, Any]:
    if calendars is None:
        raise InvalidInput("this leader runs no calendar feeds")
    uid = body.get("user")
    if uid is None:
        return {"calendars": [f.json() for f in calendars.feeds]}
    service.require_user(uid)
    if body.get("refresh"):
        await calendars.refresh_user(uid)
    return {"calendar": calendars.user_json(uid)}


async def _cards(service: PresenceService, body: dict[str, Any],
                 calendars: CalendarFeeds | None) -> dict[str, Any]:
    cards = service.cards
    return {"cards": {uid: list(cards.card(uid)) for uid in service.users.ids()
                      if cards.card(uid) != ("", None)}}


def _answer(view: PresenceView) -> dict[str, Any]:
    return {"view": view_json(view)}


CommandHandler = Callable[["PresenceService", dict[str, Any], "CalendarFeeds | None"],
                          Awaitable[dict[str, Any]]]

#: What a follower may ask of the leader: command kind -> handler. Writes go
#: through the engine (durable when answered); the rest are what only the
#: leader knows (devices, contact cards, calendars).
COMMANDS: dict[str, CommandHandler] = {
    "set_manual": _set_manual, "clear_manual": _clear_manual, "set_source": _set_source,
    "delete_source": _delete_source, "devices": _devices, "calendars": _calendars,
    "cards": _cards,
}


async def run_command(service: PresenceService, kind: str, body: dict[str, Any],
                      calendars: CalendarFeeds | None = None) -> dict[str, Any]:
    """On the leader: one follower's command (:data:`COMMANDS`); errors as answers."""
    try:
        handler = COMMANDS.get(kind)
        if handler is None:
            raise InvalidInput(f"unknown command {kind!r}")
        return await handler(service, body, calendars)
    except UnknownUser as exc:
        return {"error": "unknown_user", "user": exc.uid}
    except UnknownSource:
        return {"error": "unknown_source", "user": body["user"], "name": body["name"]}
    except (InvalidInput, KeyError, TypeError, ValueError, AssertionError) as exc:
        return {"error": "invalid", "message": str(exc)}


class Remote:
    """A follower's engine writes, run by the leader (what :class:`PresenceService`
    calls instead of deciding itself)."""

    def __init__(self, call: Callable[[str, dict[str, Any]], Awaitable[dict[str, Any]]]
                 ) -> None:
        self._call = call

    async def set_manual(self, uid: str, presence: Presence, actor: str,
                         end: datetime | None) -> PresenceView:
        return await self._run("set_manual", {"user": uid, "presence": presence.as_dict(),
                                              "actor": actor, "end": _time(end)})

    async def clear_manual(self, uid: str, actor: str) -> PresenceView:
        return await self._run("clear_manual", {"user": uid, "actor": actor})

    async def set_source(self, record: SourceRecord) -> PresenceView:
        return await self._run("set_source", {"record": _source_json(record)})

    async def delete_source(self, uid: str, name: str, actor: str) -> PresenceView:
        return await self._run("delete_source", {"user": uid, "name": name, "actor": actor})

    async def device_view(self, uid: str) -> DeviceView:
        """The user's devices as the leader follows them."""
        result = await self._call("devices", {"user": uid})
        if result.get("error") == "unknown_user":
            raise UnknownUser(uid)
        try:
            return DeviceView(tuple(parse_device_state(d) for d in result["states"]),
                              _parse_time(result.get("unavailable_since")))
        except (KeyError, TypeError) as exc:
            raise InvalidInput(f"the leader's answer: {exc}") from None

    async def calendars(self, uid: str | None, refresh: bool) -> dict[str, Any]:
        """The leader's calendar feeds (``uid`` None: the list), fetched first with
        ``refresh``: only the leader fetches them."""
        result = await self._call("calendars", {"user": uid, "refresh": refresh})
        if result.get("error") == "unknown_user":
            raise UnknownUser(str(uid))
        _raise_error(result)
        answer = result.get("calendar") if uid is not None else result
        if not isinstance(answer, dict):
            raise InvalidInput("the leader's answer has no calendar")
        return answer

    async def cards(self) -> dict[str, Card]:
        """Every contact card the leader read from Asterisk: user -> (name, voicemail)."""
        result = await self._call("cards", {})
        cards: dict[str, Card] = {}
        for uid, card in (result.get("cards") or {}).items():
            if (isinstance(card, list) and len(card) == 2 and isinstance(card[0], str)
                    and (card[1] is None or isinstance(card[1], int))):
                cards[str(uid)] = (card[0], card[1])
        return cards

    async def _run(self, kind: str, body: dict[str, Any]) -> PresenceView:
        result = await self._call(kind, body)
        error = result.get("error")
        if error == "unknown_user":
            raise UnknownUser(str(result.get("user")))
        if error == "unknown_source":
            raise UnknownSource(str(result.get("user")), str(result.get("name")))
        _raise_error(result)
        return view_from_json(result["view"])


def _raise_error(result: dict[str, Any]) -> None:
    """The leader refused (400) or could not run (503) a command."""
    error = result.get("error")
    if error == "failed":
        raise StoreError(str(result.get("message")))
    if error is not None:
        raise InvalidInput(str(result.get("message")))
