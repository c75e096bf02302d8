"""An HA group's follower: it loads the stored state like any daemon, then applies
the leader's notices (relay.py) to the engine and its :class:`Replica`
(engine/replica.py), and asks the leader for the contact cards once in step.
"""

from __future__ import annotations

import contextlib

from astpresence.engine.events import LinkEvent
from astpresence.domain.model import InvalidInput
from astpresence.cluster.commands import Remote
from astpresence.cluster.notices import Change, Notice, Written, parse_notice
from astpresence.engine.service import PresenceService
from astpresence.store.base import Store


class Following:
    """The engine's side of following a leader: (re)load, then apply its notices."""

    def __init__(self, engine: PresenceService, store: Store, leader: Remote) -> None:
        self._engine = engine
        self._store = store
        self._leader = leader

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
        self._engine.replica.cards_read(await self._leader.cards())
