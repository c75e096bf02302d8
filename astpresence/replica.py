"""An HA group's follower: its copy of what the leader shows (relay.py brings it).

The follower loads the stored state like any daemon (:class:`Following`);
on top of it :class:`Replica` keeps what only the leader knows and tells:
each user's presence as the leader last showed it (with its ``pending``
flag, cleared when the leader's write landed), and the contact cards
(names, voicemail counts) the leader read from Asterisk. The engine asks it
first, on a follower.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from dataclasses import replace
from typing import TYPE_CHECKING

from .cards import Card
from .events import LinkEvent
from .model import InvalidInput
from .records import PresenceView
from .relay import Change, Notice, Written, parse_notice
from .store.base import Store

if TYPE_CHECKING:
    from .service import PresenceService


class Replica:
    def __init__(self) -> None:
        self._views: dict[str, PresenceView] = {}
        self._cards: dict[str, Card] = {}

    def clear(self) -> None:
        self._views.clear()
        self._cards.clear()

    def view(self, uid: str) -> PresenceView | None:
        """The user as the leader last showed them (None: not told since loading)."""
        return self._views.get(uid)

    def card(self, uid: str) -> Card:
        return self._cards.get(uid, ("", None))

    def changed(self, view: PresenceView) -> None:
        self._views[view.user] = view
        self._cards[view.user] = (view.name, view.voicemail)

    def written(self, uid: str) -> None:
        """The leader's write of the user's presence landed on every Asterisk server."""
        view = self._views.get(uid)
        if view is not None and view.pending:
            self._views[uid] = replace(view, pending=False)

    def pending_users(self) -> list[str]:
        return [uid for uid, view in self._views.items() if view.pending]

    def cards_read(self, cards: Mapping[str, Card]) -> None:
        """Every card as the leader has it (asked once the follower is in step)."""
        self._cards.update(cards)
        for uid, (name, voicemail) in cards.items():
            view = self._views.get(uid)
            if view is not None:
                self._views[uid] = replace(view, name=name, voicemail=voicemail)


class Following:
    """The engine's side of following a leader: (re)load, then apply its notices."""

    def __init__(self, engine: PresenceService, store: Store) -> None:
        self._engine = engine
        self._store = store

    async def load(self) -> int:
        """The state as the leader stored it; returns the number of its last event."""
        engine = self._engine
        last_event = await engine.load_stored()
        engine.replica.clear()
        links = engine.events.links
        links.clear()
        for node in engine.nodes:
            stored = await self._store.get_meta(f"link:{node}")
            if stored is not None:
                with contextlib.suppress(InvalidInput):
                    link = parse_notice(stored)
                    if isinstance(link, LinkEvent):
                        links[node] = link
        engine.events.renumber(last_event)
        return last_event

    async def apply(self, notice: Notice, loaded_at: int) -> None:
        """One of the leader's notices (``loaded_at``: the event number the state was
        loaded at; older change events are in it already)."""
        engine = self._engine
        if isinstance(notice, Change):
            view = notice.view
            if view.user not in engine.users:
                return
            old = engine.view(view.user)
            engine.replica.changed(view)
            if notice.seq > loaded_at:
                engine.events.relay(notice.seq, old, view)
        elif isinstance(notice, LinkEvent):
            if notice.node in engine.nodes:  # a server of this config: bounded
                engine.events.publish_service(notice)
        elif isinstance(notice, Written):
            engine.replica.written(notice.user)
        else:
            engine.users.replace_stored(await self._store.load_users())
            engine.users_changed()

    async def read_leaders_cards(self) -> None:
        """In step: the contact cards the leader read from Asterisk."""
        if self._engine.remote is not None:
            self._engine.replica.cards_read(await self._engine.remote.cards())
