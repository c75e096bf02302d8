"""A follower's copy of what its leader shows (cluster/ brings the leader's notices).

On top of the stored state the follower loads like any daemon, :class:`Replica`
keeps what only the leader knows and tells: each user's presence as the leader
last showed it (with its ``pending`` flag, cleared when the leader's write
landed), and the contact cards (names, voicemail counts) the leader read from
Asterisk. The engine asks it first, on a follower.
"""

from __future__ import annotations

from dataclasses import replace

from astpresence.domain.records import PresenceView
from astpresence.engine.cards import NO_CARD, Card


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
        return self._cards.get(uid, NO_CARD)

    def changed(self, view: PresenceView) -> None:
        self._views[view.user] = view
        self._cards[view.user] = (view.name, view.voicemail, view.forwarding)

    def written(self, uid: str) -> None:
        """The leader's write of the user's presence landed on every Asterisk server."""
        view = self._views.get(uid)
        if view is not None and view.pending:
            self._views[uid] = replace(view, pending=False)

    def pending_users(self) -> list[str]:
        return [uid for uid, view in self._views.items() if view.pending]

    def cards_read(self, cards: dict[str, Card]) -> None:
        """Every card as the leader has it (asked once the follower is in step)."""
        self._cards.update(cards)
        for uid, (name, voicemail, forwarding) in cards.items():
            view = self._views.get(uid)
            if view is not None:
                self._views[uid] = replace(view, name=name, voicemail=voicemail,
                                           forwarding=forwarding)
