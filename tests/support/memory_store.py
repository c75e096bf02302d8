"""A :class:`~astpresence.store.base.Store` in memory, for tests of the service.

It behaves like :class:`~astpresence.store.sqlite.SqliteStore` wherever a caller
can tell: load order, history order and ids (1, 2, 3... never reused, not
consumed by a failed batch), datetimes read back in UTC, a naive datetime
refused with ``ValueError`` leaving nothing of the batch, StoreError when not
open. Data outlives close() and open() on the same object, the way a file does.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterable
from datetime import datetime

from astpresence.domain.model import DEFAULT_NODE, Presence
from astpresence.domain.records import (
    EffectiveRecord,
    HistoryEntry,
    SourceRecord,
    TokenRecord,
    UserRecord,
)
from astpresence.store.base import Batch, StoreError, aware_utc

logger = logging.getLogger(__name__)



def _opt_utc(value: datetime | None) -> datetime | None:
    return None if value is None else aware_utc(value)


class MemoryStore:
    """Dicts and a list; every method is atomic because none awaits mid-change."""

    local_file = None

    def __init__(self) -> None:
        self._open = False
        self._users: dict[str, UserRecord] = {}
        self._sources: dict[tuple[str, str], SourceRecord] = {}
        self._effective: dict[str, EffectiveRecord] = {}
        self._asterisk: dict[tuple[str, str], Presence] = {}  # (node, user)
        self._history: list[HistoryEntry] = []  # in id order
        self._meta: dict[str, str] = {}
        self._tokens: dict[str, TokenRecord] = {}
        self._last_id = 0

    def __repr__(self) -> str:
        return "MemoryStore()"

    async def open(self) -> None:
        self._open = True

    async def close(self) -> None:
        self._open = False

    def _check_open(self) -> None:
        if not self._open:
            raise StoreError("store (memory) is not open")

    async def save_users(self, users: Iterable[UserRecord]) -> None:
        """Insert or replace users by id."""
        self._check_open()
        for user in users:
            self._users[user.id] = dataclasses.replace(user, devices=tuple(user.devices))

    async def delete_users(self, ids: Iterable[str]) -> None:
        """Forget users found in hints that are gone."""
        self._check_open()
        for uid in ids:
            if uid in self._users and self._users[uid].origin == "hint":
                del self._users[uid]

    async def load_users(self) -> list[UserRecord]:
        """All users, by id."""
        self._check_open()
        return [self._users[k] for k in sorted(self._users)]

    async def load_sources(self, user: str | None = None) -> list[SourceRecord]:
        """All sources (or the user's), by (user, source)."""
        self._check_open()
        return [self._sources[k] for k in sorted(self._sources) if user in (None, k[0])]

    async def load_effective(self) -> list[EffectiveRecord]:
        """All effective presences, by user."""
        self._check_open()
        return [self._effective[k] for k in sorted(self._effective)]

    async def load_asterisk(self, node: str = DEFAULT_NODE) -> dict[str, Presence]:
        self._check_open()
        return {u: self._asterisk[(n, u)] for n, u in sorted(self._asterisk) if n == node}

    async def commit(self, batch: Batch) -> list[int]:
        """Apply the batch atomically; ids of the history rows are returned."""
        self._check_open()
        # Normalise (and so validate) everything before touching any state.
        sources = [
            dataclasses.replace(
                s, since=aware_utc(s.since), start=_opt_utc(s.start), end=_opt_utc(s.end)
            )
            for s in batch.put_sources
        ]
        effective = [dataclasses.replace(e, since=aware_utc(e.since)) for e in batch.put_effective]
        history = [dataclasses.replace(h, at=aware_utc(h.at)) for h in batch.history]

        for key in batch.delete_sources:
            self._sources.pop(key, None)
        for s in sources:
            self._sources[(s.user, s.source)] = s
        for e in effective:
            self._effective[e.user] = e
        for node, user, presence in batch.put_asterisk:
            self._asterisk[(node, user)] = presence
        ids: list[int] = []
        for h in history:
            self._last_id += 1
            self._history.append(dataclasses.replace(h, id=self._last_id))
            ids.append(self._last_id)
        self._meta.update(batch.meta)
        return ids

    async def history(
        self, user: str, limit: int = 50
    ) -> list[HistoryEntry]:
        """The user's history, newest first: at most ``limit`` rows."""
        if limit < 1:
            raise ValueError(f"limit must be at least 1, not {limit}")
        self._check_open()
        found: list[HistoryEntry] = []
        for entry in reversed(self._history):
            if entry.user != user:
                continue
            found.append(entry)
            if len(found) == limit:
                break
        return found

    async def prune_history(self, before: datetime, keep_rows: int) -> int:
        self._check_open()
        if not self._history:
            return 0
        newest = self._history[-1].id
        seen: dict[str, int] = {}
        kept: list[HistoryEntry] = []
        for entry in reversed(self._history):
            seen[entry.user] = seen.get(entry.user, 0) + 1
            if entry.id == newest or (entry.at >= before and seen[entry.user] <= keep_rows):
                kept.append(entry)
        gone = len(self._history) - len(kept)
        self._history = kept[::-1]
        return gone

    async def get_meta(self, key: str) -> str | None:
        self._check_open()
        return self._meta.get(key)

    async def load_meta(self, prefix: str) -> dict[str, str]:
        self._check_open()
        return {k: v for k, v in self._meta.items() if k.startswith(prefix)}

    async def add_token(self, token: TokenRecord) -> bool:
        self._check_open()
        if token.id in self._tokens:
            return False
        if any(t.hash == token.hash for t in self._tokens.values()):
            raise StoreError(f"a token with this hash exists already ({token.id})")
        self._tokens[token.id] = dataclasses.replace(
            token, created_at=aware_utc(token.created_at), revoked_at=_opt_utc(token.revoked_at))
        return True

    async def find_token(self, token_hash: str) -> TokenRecord | None:
        self._check_open()
        return next((t for t in self._tokens.values() if t.hash == token_hash), None)

    async def list_tokens(self) -> list[TokenRecord]:
        self._check_open()
        return sorted(self._tokens.values(), key=lambda t: (t.created_at, t.id))

    async def revoked_tokens(self) -> set[str]:
        self._check_open()
        return {t.id for t in self._tokens.values() if t.revoked_at is not None}

    async def revoke_token(self, token_id: str, at: datetime) -> bool:
        self._check_open()
        token = self._tokens.get(token_id)
        if token is None or token.revoked_at is not None:
            return False
        self._tokens[token_id] = dataclasses.replace(token, revoked_at=aware_utc(at))
        return True
