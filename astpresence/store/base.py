"""What the daemon keeps: the :class:`Store` protocol and its :class:`Batch`.

The service holds the current state in memory and uses the store as its
durable copy: everything is loaded once at start-up, and every change is
written as one :class:`Batch` in one transaction before it is acknowledged.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Protocol

from astpresence.domain.model import DEFAULT_NODE, Presence
from astpresence.domain.records import (
    EffectiveRecord,
    HistoryEntry,
    SourceRecord,
    TokenRecord,
    UserRecord,
)


@dataclass(slots=True)
class Batch:
    """Everything one change writes, committed atomically."""

    put_sources: list[SourceRecord] = field(default_factory=list)
    delete_sources: list[tuple[str, str]] = field(default_factory=list)  # (user, source)
    put_effective: list[EffectiveRecord] = field(default_factory=list)
    # Last value seen in (or confirmed by) each Asterisk server: (node, user,
    # presence); NOT_SET is stored as such.
    put_asterisk: list[tuple[str, str, Presence]] = field(default_factory=list)
    history: list[HistoryEntry] = field(default_factory=list)
    meta: dict[str, str] = field(default_factory=dict)
    #: Told to an HA group's followers once the batch is committed (relay.py);
    #: a store without followers ignores them.
    notices: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(
            self.notices
            or self.put_sources
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
        self.notices.extend(other.notices)


def aware_utc(value: datetime) -> datetime:
    """``value`` in UTC; a naive datetime is refused (every store keeps aware ones)."""
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"naive datetime {value.isoformat()}: the store keeps aware datetimes")
    return value.astimezone(UTC)


class StoreError(Exception):
    """The store cannot be opened or written (message fit for a user)."""


class Store(Protocol):
    @property
    def local_file(self) -> str | None:
        """The database file on this machine (None: a database server, or memory):
        what one daemon at a time may use (app/lock.py)."""

    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def save_users(self, users: Iterable[UserRecord]) -> None:
        """Insert or replace users by id."""

    async def delete_users(self, ids: Iterable[str]) -> None:
        """Forget users found in hints (origin ``hint``) by id."""

    async def load_users(self) -> list[UserRecord]: ...

    async def load_sources(self, user: str | None = None) -> list[SourceRecord]:
        """All sources, or only ``user``'s."""

    async def load_effective(self) -> list[EffectiveRecord]: ...

    async def load_asterisk(self, node: str = DEFAULT_NODE) -> dict[str, Presence]:
        """What the Asterisk server ``node`` held when last seen, by user."""

    async def commit(self, batch: Batch) -> list[int]:
        """Write the batch in one transaction; durable when this returns.

        Applied in this order: delete_sources, put_sources, put_effective,
        put_asterisk, history, meta. Returns the ids given to the history rows.
        """

    async def history(self, user: str, limit: int = 50) -> list[HistoryEntry]:
        """Newest first."""

    async def prune_history(self, before: datetime, keep_rows: int) -> int:
        """Delete history older than ``before``, and all but each user's newest
        ``keep_rows`` rows; the newest row of all always stays (ids are never
        reused). Returns how many rows went."""

    async def get_meta(self, key: str) -> str | None: ...

    async def load_meta(self, prefix: str) -> dict[str, str]:
        """Every meta entry whose key starts with ``prefix``."""

    async def add_token(self, token: TokenRecord) -> bool:
        """Store a new token; False (nothing stored) when its id is taken already."""

    async def find_token(self, token_hash: str) -> TokenRecord | None:
        """The token with this hash, revoked or not."""

    async def list_tokens(self) -> list[TokenRecord]: ...

    async def revoked_tokens(self) -> set[str]:
        """The ids of revoked tokens (what a stream's revocation check needs)."""

    async def revoke_token(self, token_id: str, at: datetime) -> bool:
        """Mark revoked; False if there is no such token or it was revoked already."""
