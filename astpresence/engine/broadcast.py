"""Every change told to whoever listens: the clients' event streams (events.py) and,
while this node leads an HA group, its followers (the ``Notices`` port), the
followers' notices riding on the batch that stores the change."""

from __future__ import annotations

from astpresence.domain.records import PresenceView
from astpresence.engine.events import EventHub, LinkEvent
from astpresence.engine.ports import Notices
from astpresence.store.base import Batch

#: meta key: the number of the last event the leader stored (followers resume there).
EVENT_SEQ = "event_seq"


class Broadcast:
    def __init__(self, events: EventHub) -> None:
        self.events = events
        #: As an HA group's leader: the notices for the followers (cluster/ sets it).
        self.relay: Notices | None = None

    def change(self, before: PresenceView, after: PresenceView, batch: Batch) -> None:
        """A presence or card changed: an event now, a notice when ``batch`` commits."""
        event = self.events.publish(before, after)
        if self.relay is not None:
            batch.notices.append(self.relay.change(event.seq, event.new))
            batch.meta[EVENT_SEQ] = str(event.seq)

    def link(self, event: LinkEvent) -> Batch | None:
        """An Asterisk link went down or is synced; the batch to store for followers
        (kept too, for followers that start later), or None."""
        self.events.publish_service(event)
        if self.relay is None:
            return None
        notice = self.relay.link(event)
        return Batch(notices=[notice], meta={f"link:{event.node}": notice})

    def written(self, uid: str, batch: Batch) -> None:
        """Every server has the user's presence: followers learn it is not pending."""
        if self.relay is not None:
            batch.notices.append(self.relay.written(uid))

    def users(self, batch: Batch) -> None:
        """The users were saved again: followers reload them."""
        if self.relay is not None:
            batch.notices.append(self.relay.users())
