"""A follower's writes and questions, run by the leader.

Each command is one :class:`Command`: its kind, how the follower encodes its
arguments, how the leader runs it, and how the follower reads the answer,
side by side. The sources add theirs (``SourcePlugin.commands``):
:class:`CommandTable` runs both, on the leader for a follower (errors become
answers) and on the leader for itself (errors stay exceptions), so the web
layer asks the same way whoever answers.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, TypeVar

from astpresence.domain.forwarding import forwarding_from_json
from astpresence.domain.model import InvalidInput, Presence, parse_device_state, parse_presence
from astpresence.domain.records import PresenceView, SourceRecord, presence_json, view_from_json
from astpresence.domain.rules import DeviceView
from astpresence.engine.cards import NO_CARD, Card
from astpresence.engine.errors import UnknownSource, UnknownUser
from astpresence.engine.service import PresenceService
from astpresence.sources.plugin import RunningSource, SourcePlugin
from astpresence.store.base import StoreError

from astpresence.cluster.notices import parse_time, time_json

logger = logging.getLogger(__name__)

T = TypeVar("T")
Answer = dict[str, Any]


@dataclass(frozen=True)
class Command(Generic[T]):
    """One thing a follower may ask of the leader."""

    kind: str
    #: The follower's arguments -> the request's body.
    encode: Callable[..., Answer]
    #: On the leader: (engine, body) -> the answer.
    run: Callable[[PresenceService, Answer], Awaitable[Answer]]
    #: On the follower: the leader's answer -> the value.
    decode: Callable[[Answer], T]


def _view_answer(view: PresenceView) -> Answer:
    return {"view": presence_json(view)}


def _view(answer: Answer) -> PresenceView:
    return view_from_json(answer["view"])


def source_json(rec: SourceRecord) -> Answer:
    return {"user": rec.user, "source": rec.source, "presence": rec.presence.as_dict(),
            "since": time_json(rec.since), "actor": rec.actor, "start": time_json(rec.start),
            "end": time_json(rec.end), "message_end": time_json(rec.message_end)}


def source_from_json(d: Answer) -> SourceRecord:
    p = d["presence"]
    since = parse_time(d["since"])
    if since is None:
        raise InvalidInput("a source without 'since'")
    return SourceRecord(d["user"], d["source"],
                        parse_presence(p["state"], p["subtype"], p["message"]),
                        since, d["actor"], parse_time(d["start"]), parse_time(d["end"]),
                        parse_time(d.get("message_end")))


# -- the engine's commands -----------------------------------------------------------


def _encode_set_manual(uid: str, presence: Presence, actor: str, end: datetime | None,
                       message_end: datetime | None) -> Answer:
    return {"user": uid, "presence": presence.as_dict(), "actor": actor, "end": time_json(end),
            "message_end": time_json(message_end)}


async def _set_manual(service: PresenceService, body: Answer) -> Answer:
    p = body["presence"]
    return _view_answer(await service.set_manual(
        body["user"], parse_presence(p["state"], p["subtype"], p["message"]), body["actor"],
        end=parse_time(body.get("end")), message_end=parse_time(body.get("message_end"))))


async def _clear_manual(service: PresenceService, body: Answer) -> Answer:
    return _view_answer(await service.clear_manual(body["user"], body["actor"]))


async def _set_source(service: PresenceService, body: Answer) -> Answer:
    return _view_answer(await service.set_source(source_from_json(body["record"])))


async def _delete_source(service: PresenceService, body: Answer) -> Answer:
    return _view_answer(await service.delete_source(body["user"], body["name"], body["actor"]))


async def _devices(service: PresenceService, body: Answer) -> Answer:
    service.require_user(body["user"])
    devices = service.device_view(body["user"])
    return {"states": [d.value for d in devices.states],
            "unavailable_since": time_json(devices.unavailable_since)}


def _device_view(answer: Answer) -> DeviceView:
    try:
        return DeviceView(tuple(parse_device_state(d) for d in answer["states"]),
                          parse_time(answer.get("unavailable_since")))
    except (KeyError, TypeError) as exc:
        raise InvalidInput(f"the leader's answer: {exc}") from None


async def _cards(service: PresenceService, body: Answer) -> Answer:
    cards = service.cards
    return {"cards": {uid: [name, voicemail, forwarding.json() if forwarding else None]
                      for uid in service.users.ids()
                      if (card := cards.card(uid)) != NO_CARD
                      for name, voicemail, forwarding in [card]}}


def _card_map(answer: Answer) -> dict[str, Card]:
    cards: dict[str, Card] = {}
    for uid, card in (answer.get("cards") or {}).items():
        if (isinstance(card, list) and len(card) == 3 and isinstance(card[0], str)
                and (card[1] is None or isinstance(card[1], int))
                and not isinstance(card[1], bool)):
            cards[str(uid)] = (card[0], card[1], forwarding_from_json(card[2]))
    return cards


async def _call_rules(service: PresenceService, body: Answer) -> Answer:
    return service.call_rules(body["user"])


async def _set_call_rules(service: PresenceService, body: Answer) -> Answer:
    return await service.set_call_rules(body["user"], body["rules"], body["actor"])


SET_MANUAL = Command("set_manual", _encode_set_manual, _set_manual, _view)
CLEAR_MANUAL = Command("clear_manual", lambda uid, actor: {"user": uid, "actor": actor},
                       _clear_manual, _view)
SET_SOURCE = Command("set_source", lambda record: {"record": source_json(record)},
                     _set_source, _view)
DELETE_SOURCE = Command("delete_source",
                        lambda uid, name, actor: {"user": uid, "name": name, "actor": actor},
                        _delete_source, _view)
#: The user's devices as the leader follows them.
DEVICES = Command("devices", lambda uid: {"user": uid}, _devices, _device_view)
#: Every contact card the leader read from Asterisk: user -> (name, voicemail).
CARDS = Command("cards", lambda: {}, _cards, _card_map)

#: A person's call handling (engine/calls.py): read, and replaced.
CALL_RULES = Command("call_rules", lambda uid: {"user": uid}, _call_rules, lambda a: a)
SET_CALL_RULES = Command("set_call_rules",
                         lambda uid, rules, actor: {"user": uid, "rules": rules, "actor": actor},
                         _set_call_rules, lambda a: a)

#: The engine's commands by kind: writes go through the engine (durable when
#: answered); the rest are what only the leader knows (devices, contact cards).
COMMANDS: dict[str, Command[Any]] = {
    c.kind: c for c in (SET_MANUAL, CLEAR_MANUAL, SET_SOURCE, DELETE_SOURCE, DEVICES, CARDS,
                        CALL_RULES, SET_CALL_RULES)}


class CommandTable:
    """The leader's side: the engine's commands and those of each running source."""

    def __init__(self, service: PresenceService, sources: Mapping[str, RunningSource],
                 plugins: tuple[SourcePlugin, ...]) -> None:
        self._service = service
        self._sources: dict[str, tuple[RunningSource, Callable[..., Awaitable[Answer]]]] = {}
        for plugin in plugins:
            for kind, handler in plugin.commands.items():
                if kind in COMMANDS or kind in self._sources:
                    raise ValueError(f"command {kind!r} of source {plugin.name!r} is taken")
                self._sources[kind] = (sources[plugin.name], handler)

    async def run(self, kind: str, body: Answer) -> Answer:
        """Run one command; errors are raised."""
        command = COMMANDS.get(kind)
        if command is not None:
            return await command.run(self._service, body)
        if kind in self._sources:
            source, handler = self._sources[kind]
            return await handler(source, body)
        raise InvalidInput(f"unknown command {kind!r}")

    async def answer(self, kind: str, body: Answer) -> Answer:
        """Run one follower's command; errors as answers (:func:`raise_error` reads them)."""
        try:
            return await self.run(kind, body)
        except UnknownUser as exc:
            return {"error": "unknown_user", "user": exc.uid}
        except UnknownSource as exc:
            return {"error": "unknown_source", "user": exc.uid, "name": exc.name}
        except (InvalidInput, KeyError, TypeError, ValueError) as exc:
            return {"error": "invalid", "message": str(exc)}


def raise_error(result: Answer) -> None:
    """The leader's answer as the exception the leader raised: an unknown user or
    source (404), a refusal (400), or a command it could not run (503)."""
    error = result.get("error")
    if error is None:
        return
    if error == "unknown_user":
        raise UnknownUser(str(result.get("user")))
    if error == "unknown_source":
        raise UnknownSource(str(result.get("user")), str(result.get("name")))
    if error == "failed":
        raise StoreError(str(result.get("message")))
    raise InvalidInput(str(result.get("message")))


class Remote:
    """A follower's side: send a command to the leader, wait, read the answer."""

    def __init__(self, call: Callable[[str, Answer], Awaitable[Answer]]) -> None:
        self._call = call

    async def send(self, command: Command[T], *args: Any) -> T:
        result = await self.call(command.kind, command.encode(*args))
        try:
            return command.decode(result)
        except (KeyError, TypeError, ValueError) as exc:
            raise InvalidInput(f"the leader's answer to {command.kind}: {exc}") from None

    async def call(self, kind: str, body: Answer) -> Answer:
        """A command by kind (a source's): the answer, or the leader's error raised."""
        result = await self._call(kind, body)
        raise_error(result)
        return result
