"""What the daemon keeps: records and the :class:`Store` protocol.

The service holds the current state in memory and uses the store as its
durable copy: everything is loaded once at start-up, and every change is
written as one :class:`Batch` in one transaction before it is acknowledged.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from ..model import Presence


@dataclass(frozen=True, slots=True)
class UserRecord:
    """A person whose presence is ``CustomPresence:<id>``."""

    id: str
    name: str = ""
    extension: str = ""
    context: str = ""
    devices: tuple[str, ...] = ()
    origin: str = "hint"  # "hint" (found in dialplan) or "config"


@dataclass(frozen=True, slots=True)
class SourceRecord:
    """One source's contribution to one user's presence."""

    user: str
    source: str  # "manual", "calendar", ...
    presence: Presence
    since: datetime  # when it was set (aware, UTC)
    actor: str  # who set it: "api", "cli", "asterisk", ...
    start: datetime | None = None  # timed sources: window
    end: datetime | None = None


@dataclass(frozen=True, slots=True)
class EffectiveRecord:
    """The presence astpresence computed for a user and wants in Asterisk."""

    user: str
    presence: Presence
    source: str
    reason: str
    since: datetime


@dataclass(frozen=True, slots=True)
class HistoryEntry:
    """One row of the append-only history. ``id`` is 0 until stored."""

    at: datetime
    user: str
    old: Presence | None
    new: Presence
    source: str
    actor: str
    reason: str = ""
    id: int = 0


@dataclass(slots=True)
class Batch:
    """Everything one change writes, committed atomically."""

    put_sources: list[SourceRecord] = field(default_factory=list)
    delete_sources: list[tuple[str, str]] = field(default_factory=list)  # (user, source)
    put_effective: list[EffectiveRecord] = field(default_factory=list)
    # Last value seen in (or confirmed by) Asterisk; NOT_SET is stored as such.
    put_asterisk: list[tuple[str, Presence]] = field(default_factory=list)
    history: list[HistoryEntry] = field(default_factory=list)
    meta: dict[str, str] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(
            self.put_sources
            or self.delete_sources
            or self.put_effective
            or self.put_asterisk
            or self.history
            or self.meta
        )

    def extend(self, other: Batch) -> None:
        self.put_sources.extend(other.put_sources)
        self.delete_sources.extend(other.delete_sources)
        self.put_effective.extend(other.put_effective)
        self.put_asterisk.extend(other.put_asterisk)
        self.history.extend(other.history)
        self.meta.update(other.meta)


@dataclass(frozen=True, slots=True)
class TokenRecord:
    """An API token; only the SHA-256 of the secret is kept."""

    id: str
    hash: str
    role: str  # "user", "operator" or "admin"
    user: str | None
    label: str
    created_at: datetime
    revoked_at: datetime | None = None


class StoreError(Exception):
    """The store cannot be opened or written (message fit for a user)."""


class Store(Protocol):
    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def save_users(self, users: Iterable[UserRecord]) -> None:
        """Insert or replace users by id."""

    async def delete_users(self, ids: Iterable[str]) -> None:
        """Forget users found in hints (origin ``hint``) by id."""

    async def load_users(self) -> list[UserRecord]: ...

    async def load_sources(self) -> list[SourceRecord]: ...

    async def load_effective(self) -> list[EffectiveRecord]: ...

    async def load_asterisk(self) -> dict[str, Presence]: ...

    async def commit(self, batch: Batch) -> list[int]:
        """Write the batch in one transaction; durable when this returns.

        Applied in this order: delete_sources, put_sources, put_effective,
        put_asterisk, history, meta. Returns the ids given to the history rows.
        """

    async def history(
        self, user: str, limit: int = 50, before_id: int | None = None
    ) -> list[HistoryEntry]:
        """Newest first."""

    async def get_meta(self, key: str) -> str | None: ...

    async def add_token(self, token: TokenRecord) -> None: ...

    async def find_token(self, token_hash: str) -> TokenRecord | None:
        """The token with this hash, revoked or not."""

    async def list_tokens(self) -> list[TokenRecord]: ...

    async def revoke_token(self, token_id: str, at: datetime) -> bool:
        """Mark revoked; False if there is no such token or it was revoked already."""
