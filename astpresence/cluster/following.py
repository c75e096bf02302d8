"""An HA group's follower: it loads the stored state like any daemon, then applies
the leader's notices (relay.py) to the engine and its :class:`Replica`
(replica.py), and asks the leader for the contact cards once in step.

:class:`FollowerAPI` is the follower's implementation of the API's port
(engine/ports.py ``PresenceAPI``): it reads the copy and has the leader run
every write (commands.py). The daemon hands it to the web layer while it
follows, and the engine itself once it leads: the engine has no follower mode.
"""

from __future__ import annotations

import contextlib

from collections.abc import Mapping
from datetime import datetime

from astpresence.domain import rules
from astpresence.domain.model import InvalidInput, Presence
from astpresence.domain.records import HistoryEntry, PresenceView, SourceRecord, UserRecord
from astpresence.domain.rules import DeviceView, RuleConfig
from astpresence.domain.statuses import Status
from astpresence.engine.events import EventHub, LinkEvent
from astpresence.engine.ports import AsteriskNode
from astpresence.engine.service import PresenceService
from astpresence.engine.users import UserDirectory
from astpresence.store.base import Store

from astpresence.cluster.commands import (
    CARDS,
    CLEAR_MANUAL,
    DELETE_SOURCE,
    DEVICES,
    SET_MANUAL,
    SET_SOURCE,
    Remote,
)
from astpresence.cluster.notices import Change, Notice, Written, parse_notice
from astpresence.cluster.replica import Replica


class Following:
    """The engine's side of following a leader: (re)load, then apply its notices."""

    def __init__(self, engine: PresenceService, store: Store, leader: Remote) -> None:
        self.engine = engine
        self.store = store
        self.leader = leader
        self.replica = Replica()

    async def load(self) -> int:
        """The state as the leader stored it; returns the number of its last event."""
        engine = self.engine
        last_event = await engine.load_stored()
        self.replica.clear()
        links = engine.events.links
        links.clear()
        for node in engine.nodes:
            stored = await self.store.get_meta(f"link:{node}")
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
        engine = self.engine
        if isinstance(notice, Change):
            view = notice.view
            if view.user not in engine.users:
                return
            old = self.replica.view(view.user) or engine.stored_view(
                view.user, self.replica.card(view.user))
            self.replica.changed(view)
            if notice.seq > loaded_at:
                engine.events.relay(notice.seq, old, view)
        elif isinstance(notice, LinkEvent):
            if notice.node in engine.nodes:  # a server of this config: bounded
                engine.events.publish_service(notice)
        elif isinstance(notice, Written):
            self.replica.written(notice.user)
        else:
            engine.users.replace_stored(await self.store.load_users())
            engine.users_changed()

    async def read_leaders_cards(self) -> None:
        """In step: the contact cards the leader read from Asterisk."""
        self.replica.cards_read(await self.leader.send(CARDS))


class FollowerAPI:
    """The API's port on a follower: its copy for reads, the leader for writes."""

    def __init__(self, following: Following) -> None:
        self._engine = following.engine
        self._store = following.store
        self._leader = following.leader
        self._replica = following.replica

    @property
    def users(self) -> UserDirectory:
        return self._engine.users

    @property
    def rules(self) -> RuleConfig:
        return self._engine.rules

    @property
    def events(self) -> EventHub:
        return self._engine.events

    @property
    def nodes(self) -> Mapping[str, AsteriskNode]:
        return self._engine.nodes

    @property
    def synced(self) -> bool:
        """Every Asterisk server synced, as the leader last said."""
        links = self.events.links
        return all(n in links and links[n].state == "synced" for n in self.nodes)

    @property
    def last_sync(self) -> datetime | None:
        return self._engine.last_sync

    def require_user(self, uid: str) -> UserRecord:
        return self._engine.require_user(uid)

    def view(self, uid: str) -> PresenceView:
        self.require_user(uid)
        relayed = self._replica.view(uid)
        if relayed is not None:
            return relayed
        return self._engine.stored_view(uid, self._replica.card(uid))

    def views(self) -> list[PresenceView]:
        return [self.view(uid) for uid in self.users.ids()]

    def pending_users(self) -> list[str]:
        return self._replica.pending_users()

    async def current_sources(self, uid: str) -> list[SourceRecord]:
        """As the leader stored them."""
        self.require_user(uid)
        return await self._store.load_sources(uid)

    async def current_devices(self, uid: str) -> DeviceView:
        """As the leader follows them."""
        self.require_user(uid)
        return await self._leader.send(DEVICES, uid)

    async def history(self, uid: str, limit: int) -> list[HistoryEntry]:
        return await self._engine.history(uid, limit)

    @property
    def statuses(self) -> tuple[Status, ...]:
        return self._engine.statuses

    async def set_manual(self, uid: str, presence: Presence, actor: str, *,
                         end: datetime | None = None,
                         message_end: datetime | None = None) -> PresenceView:
        self.require_user(uid)
        return await self._leader.send(SET_MANUAL, uid, presence, actor, end, message_end)

    async def clear_manual(self, uid: str, actor: str) -> PresenceView:
        self.require_user(uid)
        return await self._leader.send(CLEAR_MANUAL, uid, actor)

    async def set_source(self, record: SourceRecord) -> PresenceView:
        self.require_user(record.user)
        rules.check_source_name(record.source)
        return await self._leader.send(SET_SOURCE, record)

    async def delete_source(self, uid: str, name: str, actor: str) -> PresenceView:
        self.require_user(uid)
        return await self._leader.send(DELETE_SOURCE, uid, name, actor)
