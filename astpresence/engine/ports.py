"""What the engine needs from the outside, as small protocols handed to it at wiring
time (app/daemon.py): the engine imports none of the parts that implement them.

- :class:`AsteriskNode`: one Asterisk server's side (asterisk/sync.py), attached by
  ``asterisk.nodes.attach_nodes``;
- :class:`Notices`: how the leader of an HA group encodes what its followers must
  hear (cluster/relay.py), set while this node leads;

and what the engine offers the API:

- :class:`PresenceAPI`: the queries and writes the web layer calls. The leader's
  (or a lone daemon's) is :class:`~astpresence.engine.service.PresenceService`;
  an HA follower's is ``cluster.following.FollowerAPI``, which reads its copy
  and has the leader run its writes. The daemon picks one at wiring and
  switches on a takeover (``cluster.serving.Serving``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any, Protocol

from astpresence.domain.forwarding import Forwarding
from astpresence.domain.model import Presence
from astpresence.domain.records import HistoryEntry, PresenceView, SourceRecord, UserRecord
from astpresence.domain.rules import DeviceView, RuleConfig
from astpresence.domain.statuses import Status
from astpresence.engine.cards import Mailbox
from astpresence.engine.events import EventHub, LinkEvent
from astpresence.engine.users import UserDirectory


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

    @property
    def forwarding(self) -> Mapping[str, Forwarding]:
        """FreePBX's forwarding and follow-me, by extension."""


class Notices(Protocol):
    """The leader's notices to its followers, sent with each commit."""

    def change(self, seq: int, view: PresenceView) -> str: ...

    def link(self, event: LinkEvent) -> str: ...

    def written(self, uid: str) -> str: ...

    def users(self) -> str: ...


class PresenceAPI(Protocol):
    """What the API reads and changes, whoever answers it (leader or follower)."""

    @property
    def users(self) -> UserDirectory: ...

    @property
    def rules(self) -> RuleConfig: ...

    @property
    def events(self) -> EventHub: ...

    @property
    def nodes(self) -> Mapping[str, AsteriskNode]: ...

    @property
    def synced(self) -> bool: ...

    @property
    def last_sync(self) -> datetime | None: ...

    def require_user(self, uid: str) -> UserRecord: ...

    def view(self, uid: str) -> PresenceView: ...

    def views(self) -> list[PresenceView]: ...

    def pending_users(self) -> list[str]: ...

    async def current_sources(self, uid: str) -> list[SourceRecord]: ...

    async def current_devices(self, uid: str) -> DeviceView: ...

    async def history(self, uid: str, limit: int) -> list[HistoryEntry]: ...

    @property
    def statuses(self) -> tuple[Status, ...]: ...

    async def set_manual(self, uid: str, presence: Presence, actor: str, *,
                         end: datetime | None = None,
                         message_end: datetime | None = None) -> PresenceView: ...

    async def clear_manual(self, uid: str, actor: str) -> PresenceView: ...

    async def set_source(self, record: SourceRecord) -> PresenceView: ...

    async def delete_source(self, uid: str, name: str, actor: str) -> PresenceView: ...
