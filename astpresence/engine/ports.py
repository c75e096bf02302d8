"""What the engine needs from the outside, as small protocols handed to it at wiring
time (app/daemon.py): the engine imports none of the parts that implement them.

- :class:`AsteriskNode`: one Asterisk server's side (asterisk/sync.py), attached by
  ``asterisk.nodes.attach_nodes``;
- :class:`Notices`: how the leader of an HA group encodes what its followers must
  hear (cluster/relay.py), set while this node leads;
- :class:`Leader`: a follower's way to have the leader run a write
  (cluster/relay.py ``Remote``), set while this node follows.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any, Protocol

from astpresence.domain.model import Presence
from astpresence.domain.records import PresenceView, SourceRecord
from astpresence.domain.rules import DeviceView
from astpresence.engine.cards import Mailbox
from astpresence.engine.events import LinkEvent


class PresenceWrites(Protocol):
    """The presence writes of one server: what it holds, what is still to go."""

    @property
    def failures(self) -> Any:
        """retry.Failures: ``.clear(uid)``."""

    def load(self, held: Iterable[tuple[str, Presence]]) -> None: ...

    def needs(self, uid: str, want: Presence) -> bool: ...


class NodeOutbox(Protocol):
    @property
    def synced(self) -> bool: ...

    @property
    def presence(self) -> PresenceWrites: ...

    def mark(self, uid: str) -> None: ...

    def failures(self) -> Iterable[Any]:
        """Each write kind's refused writes (retry.Failures), for status and metrics."""


class AsteriskNode(Protocol):
    """One Asterisk server as the engine sees it."""

    node: str
    last_sync: datetime | None

    @property
    def outbox(self) -> NodeOutbox: ...

    @property
    def astdb_names(self) -> Mapping[str, str]: ...

    @property
    def callerids(self) -> Mapping[str, str]: ...

    @property
    def mailbox_counts(self) -> Mapping[str, Mailbox]: ...


class Notices(Protocol):
    """The leader's notices to its followers, sent with each commit."""

    def change(self, seq: int, view: PresenceView) -> str: ...

    def link(self, event: LinkEvent) -> str: ...

    def written(self, uid: str) -> str: ...

    def users(self) -> str: ...


class Leader(Protocol):
    """A follower's writes, run by the leader of its group."""

    async def set_manual(self, uid: str, presence: Presence, actor: str,
                         end: datetime | None) -> PresenceView: ...

    async def clear_manual(self, uid: str, actor: str) -> PresenceView: ...

    async def set_source(self, record: SourceRecord) -> PresenceView: ...

    async def delete_source(self, uid: str, name: str, actor: str) -> PresenceView: ...

    async def device_view(self, uid: str) -> DeviceView: ...

    async def calendars(self, uid: str | None, refresh: bool) -> dict[str, Any]:
        """The leader's calendar feeds (only the leader fetches them)."""
