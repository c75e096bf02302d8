"""The engine's reads: a user's view, sources, devices, history, and what is still to
be written to Asterisk. :class:`Reads` is the query half of
:class:`~astpresence.engine.service.PresenceService` (the API's port,
engine/ports.py ``PresenceAPI``), kept apart so each half reads in one sitting.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from astpresence.domain.model import NOT_SET, Presence
from astpresence.domain.records import (
    EffectiveRecord,
    HistoryEntry,
    PresenceView,
    SourceRecord,
    UserRecord,
)
from astpresence.domain.rules import DeviceView
from astpresence.engine.calls import CallHandling
from astpresence.engine.cards import Card, Cards
from astpresence.engine.commit import GroupCommitter
from astpresence.engine.contributions import Contributions
from astpresence.engine.devices import Devices
from astpresence.engine.errors import UnknownUser
from astpresence.engine.ports import AsteriskNode
from astpresence.engine.users import UserDirectory
from astpresence.store.base import Store


class Reads:
    """What the engine holds, as its readers see it (state set up by the service)."""

    users: UserDirectory
    cards: Cards
    calls: CallHandling
    contributions: Contributions
    devices: Devices
    nodes: dict[str, AsteriskNode]
    _effective: dict[str, EffectiveRecord]
    _committer: GroupCommitter
    _store: Store

    @property
    def synced(self) -> bool:
        """Every Asterisk server has been read since its link last came up."""
        return all(n.outbox.synced for n in self.nodes.values())

    @property
    def last_sync(self) -> datetime | None:
        """The oldest of the servers' last syncs (None: one was never read)."""
        syncs = [n.last_sync for n in self.nodes.values()]
        return None if None in syncs else min(s for s in syncs if s is not None)

    def require_user(self, uid: str) -> UserRecord:
        user = self.users.get(uid)
        if user is None:
            raise UnknownUser(uid)
        return user

    def view(self, uid: str) -> PresenceView:
        self.require_user(uid)
        return self.stored_view(uid, self.cards.card(uid), pending=self._is_pending(uid))

    def stored_view(self, uid: str, card: Card, *, pending: bool = False) -> PresenceView:
        """The view of what this engine holds for ``uid``, with the card given (a
        follower shows the leader's cards)."""
        name, voicemail, forwarding = card
        eff = self._effective.get(uid)
        if eff is None:
            return PresenceView.unset(uid, pending=pending, name=name, voicemail=voicemail,
                                      forwarding=forwarding,
                                      calls=self.calls.summary(uid, NOT_SET))
        rec = self.contributions.get(uid, eff.source)
        actor = rec.actor if rec is not None else "engine"
        return PresenceView(uid, eff.presence, eff.source, actor, eff.since, pending,
                            eff.reason, name, voicemail, eff.chosen, eff.activity, forwarding,
                            self.calls.summary(uid, eff.chosen or eff.presence))

    def views(self) -> list[PresenceView]:
        return [self.view(uid) for uid in self.users.ids()]

    def sources(self, uid: str) -> list[SourceRecord]:
        self.require_user(uid)
        return self.contributions.of(uid)

    async def current_sources(self, uid: str) -> list[SourceRecord]:
        """:meth:`sources` (the API's port: a follower reads the store)."""
        self.require_user(uid)
        return self.contributions.of(uid)

    def device_view(self, uid: str) -> DeviceView:
        return self.devices.view(uid)

    async def current_devices(self, uid: str) -> DeviceView:
        """:meth:`device_view` (the API's port: a follower asks the leader)."""
        self.require_user(uid)
        return self.devices.view(uid)

    async def history(self, uid: str, limit: int) -> list[HistoryEntry]:
        self.require_user(uid)
        await self._committer.drain()  # changes from Asterisk are stored without waiting
        return await self._store.history(uid, limit)

    async def load_meta(self, prefix: str) -> dict[str, str]:
        """The store's meta entries under ``prefix`` (a source's own bookkeeping)."""
        return await self._store.load_meta(prefix)

    def pending_users(self) -> list[str]:
        return [uid for uid in self._effective if uid in self.users and self._is_pending(uid)]

    def desired(self, uid: str) -> Presence:
        """What Asterisk should hold for ``uid`` now."""
        eff = self._effective.get(uid)
        return eff.presence if eff is not None else NOT_SET

    def wanted(self, uid: str) -> tuple[Presence, Presence]:
        """(effective, chosen) of ``uid``: the presence writes follow the first; the
        BLF mirror, queue pauses and FreePBX DND the second (a call overlays
        nothing of what the person chose)."""
        eff = self._effective.get(uid)
        if eff is None:
            return NOT_SET, NOT_SET
        return eff.presence, eff.chosen or eff.presence

    def call_rules(self, uid: str) -> dict[str, Any]:
        """``uid``'s call-handling rules and what holds now (engine/calls.py)."""
        self.require_user(uid)
        return self.calls.view(uid, self.wanted(uid)[1])

    def _is_pending(self, uid: str) -> bool:
        want = self.desired(uid)
        return any(n.outbox.presence.needs(uid, want) for n in self.nodes.values())
