"""The durable :class:`~astpresence.store.base.Store`: one SQLite file via aiosqlite.

Durability contract: :meth:`SqliteStore.commit` returns only after SQLite's
``COMMIT`` has returned, with ``journal_mode=WAL`` and ``synchronous=FULL``, so
the WAL is fsync'ed at every commit. Whatever a client was told is stored survives
kill -9 of the daemon, and a power cut too (``NORMAL`` would survive the first but
could lose the last transactions on the second).

One connection does all the work (the daemon is the only writer) and an
:class:`asyncio.Lock` serialises every operation on it: a read never sees half a
batch, and no statement slips into another caller's transaction.

The schema is versioned with ``PRAGMA user_version``; :data:`MIGRATIONS` lists
the steps, and :meth:`SqliteStore.open` applies the missing ones in one
transaction.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sqlite3
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from datetime import datetime
from typing import Any

import aiosqlite

from astpresence.domain.model import DEFAULT_NODE, Presence
from astpresence.domain.records import (
    EffectiveRecord,
    HistoryEntry,
    SourceRecord,
    TokenRecord,
    UserRecord,
)
from astpresence.store.base import Batch, StoreError
from astpresence.store.sqlite_schema import (
    MIGRATIONS,
    Row,
    _ADD_HISTORY,
    _DELETE_SOURCE,
    _HISTORY_COLUMNS,
    _PRUNE_OLD,
    _PRUNE_USER,
    _PUT_ASTERISK,
    _PUT_EFFECTIVE,
    _PUT_META,
    _PUT_SOURCE,
    _PUT_USER,
    _TOKEN_COLUMNS,
    _effective,
    _effective_row,
    _hint,
    _history,
    _history_row,
    _opt_ts,
    _presence,
    _source,
    _source_row,
    _token,
    _ts,
    _user,
    _user_row,
)

logger = logging.getLogger(__name__)

#: How long a statement waits for a lock held by another process (a backup, the
#: sqlite3 shell) before failing with "database is locked".
BUSY_TIMEOUT_MS = 5000

# -- the store --------------------------------------------------------------


class SqliteStore:
    """A :class:`~astpresence.store.base.Store` in one SQLite file."""

    def __init__(self, path: str | os.PathLike[str], *, create: bool = True) -> None:
        self._path = os.fspath(path)
        self._create = create  # False: a missing file is an error (the token commands)
        self._db: aiosqlite.Connection | None = None
        self._lock = asyncio.Lock()

    @property
    def path(self) -> str:
        return self._path

    @property
    def local_file(self) -> str | None:
        return None if self._path == ":memory:" else self._path

    def __repr__(self) -> str:
        return f"SqliteStore({self._path!r})"

    # -- lifecycle ----------------------------------------------------------

    async def open(self) -> None:
        """Open (creating if needed) and migrate the database; StoreError if impossible."""
        if self._db is not None:
            return
        # Checked up front: a failed aiosqlite.connect() leaves its worker
        # thread to report to the event loop later, possibly after it closed.
        path = os.fspath(self._path)
        if path != ":memory:":
            parent = os.path.dirname(os.path.abspath(path))
            if os.path.isdir(path):
                raise StoreError(f"cannot open database {self._path}: it is a directory")
            if not self._create and not os.path.exists(path):
                raise StoreError(
                    f"no database at {self._path}: the daemon creates it when it first starts "
                    "('astpresence serve'); or give the daemon's database with --db, "
                    "ASTPRESENCE_DB or [store] path")
            if not os.path.isdir(parent):
                raise StoreError(
                    f"cannot open database {self._path}: directory {parent} does not exist"
                )
        try:
            db = await aiosqlite.connect(self._path, isolation_level=None)
        except (sqlite3.Error, OSError) as exc:
            raise StoreError(f"cannot open database {self._path}: {_hint(exc)}") from exc
        try:
            await self._configure(db)
            await self._migrate(db)
        except BaseException as exc:
            await db.close()
            if isinstance(exc, (sqlite3.Error, OSError)):
                raise StoreError(f"cannot open database {self._path}: {_hint(exc)}") from exc
            raise
        self._db = db
        logger.info("opened store %s", self._path)

    async def close(self) -> None:
        """Close the database, after any commit in progress."""
        async with self._lock:
            db, self._db = self._db, None
            if db is not None:
                await db.close()
                logger.info("closed store %s", self._path)

    async def _configure(self, db: aiosqlite.Connection) -> None:
        # busy_timeout first: switching to WAL needs a lock another process may hold.
        await db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        # Reading the journal mode is also the first read of the file: this is
        # where "file is not a database" shows up.
        mode = await _scalar(db, "PRAGMA journal_mode = WAL")
        if str(mode).lower() != "wal":
            logger.warning("store %s: journal_mode is %s, not wal", self._path, mode)
        await db.execute("PRAGMA synchronous = FULL")
        await db.execute("PRAGMA foreign_keys = ON")

    async def _migrate(self, db: aiosqlite.Connection) -> None:
        migrations = list(MIGRATIONS)  # read at call time so tests can extend it
        known = len(migrations)
        # IMMEDIATE: two daemons started at once do not both migrate.
        await db.execute("BEGIN IMMEDIATE")
        try:
            version = int(await _scalar(db, "PRAGMA user_version"))
            if version > known:
                raise StoreError(
                    f"database schema version {version} is newer than "
                    f"this astpresence supports ({known})"
                )
            for number, step in enumerate(migrations[version:], start=version + 1):
                logger.info("store %s: migrating to schema version %d", self._path, number)
                if callable(step):
                    await step(db)
                else:
                    for statement in step:
                        await db.execute(statement)
            # Written even when unchanged: SQLite silently opens a write-protected
            # file read-only, and this write is what turns that into an error now
            # rather than at the first commit.
            await db.execute(f"PRAGMA user_version = {known}")
            await db.execute("COMMIT")
        except BaseException:
            await _rollback(db)
            raise
        if version != known:
            logger.info("store %s: schema version %d -> %d", self._path, version, known)

    def _conn(self) -> aiosqlite.Connection:
        if self._db is None:
            raise StoreError(f"store {self._path} is not open")
        return self._db

    # -- reads --------------------------------------------------------------

    async def _fetch(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        async with self._lock:
            db = self._conn()
            try:
                rows = await db.execute_fetchall(sql, params)
            except sqlite3.Error as exc:
                raise StoreError(f"cannot read database {self._path}: {exc}") from exc
        return [tuple(row) for row in rows]

    def _decode(self, table: str, rows: Iterable[Row], fn: Callable[[Row], Any]) -> list[Any]:
        try:
            return [fn(row) for row in rows]
        except (ValueError, TypeError, IndexError) as exc:
            raise StoreError(f"database {self._path}: unreadable row in {table}: {exc}") from exc

    async def load_users(self) -> list[UserRecord]:
        """All users, by id."""
        rows = await self._fetch(
            "SELECT id, name, extension, context, devices, origin FROM users ORDER BY id"
        )
        users: list[UserRecord] = self._decode("users", rows, _user)
        return users

    async def load_sources(self, user: str | None = None) -> list[SourceRecord]:
        """All sources (or the user's), by (user, source)."""
        rows = await self._fetch(
            'SELECT user, source, state, subtype, message, since, actor, start, "end", '
            "message_end FROM sources WHERE ? IS NULL OR user = ? ORDER BY user, source", (user, user)
        )
        sources: list[SourceRecord] = self._decode("sources", rows, _source)
        return sources

    async def load_effective(self) -> list[EffectiveRecord]:
        """All effective presences, by user."""
        rows = await self._fetch(
            "SELECT user, state, subtype, message, source, reason, since "
            "FROM effective ORDER BY user"
        )
        effective: list[EffectiveRecord] = self._decode("effective", rows, _effective)
        return effective

    async def load_asterisk(self, node: str = DEFAULT_NODE) -> dict[str, Presence]:
        rows = await self._fetch("SELECT user, state, subtype, message FROM asterisk "
                                 "WHERE node = ? ORDER BY user", (node,))
        pairs: list[tuple[str, Presence]] = self._decode(
            "asterisk", rows, lambda r: (r[0], _presence(r[1], r[2], r[3]))
        )
        return dict(pairs)

    async def history(self, user: str, limit: int = 50) -> list[HistoryEntry]:
        """The user's history, newest first: at most ``limit`` rows."""
        if limit < 1:
            raise ValueError(f"limit must be at least 1, not {limit}")
        rows = await self._fetch(
            f"SELECT {_HISTORY_COLUMNS} FROM history WHERE user = ? ORDER BY id DESC LIMIT ?",
            (user, limit),
        )
        entries: list[HistoryEntry] = self._decode("history", rows, _history)
        return entries

    async def prune_history(self, before: datetime, keep_rows: int) -> int:
        crowded = await self._fetch("SELECT user FROM history GROUP BY user HAVING count(*) > ?",
                                    (keep_rows,))
        cutoff = _ts(before)
        async with self._transaction() as db:
            cur = await db.execute(_PRUNE_OLD, (cutoff,))
            gone = cur.rowcount
            for (user,) in crowded:
                cur = await db.execute(_PRUNE_USER, (user, user, keep_rows))
                gone += cur.rowcount
        return max(gone, 0)

    async def get_meta(self, key: str) -> str | None:
        rows = await self._fetch("SELECT value FROM meta WHERE key = ?", (key,))
        return str(rows[0][0]) if rows else None

    async def load_meta(self, prefix: str) -> dict[str, str]:
        rows = await self._fetch("SELECT key, value FROM meta WHERE substr(key, 1, ?) = ?",
                                 (len(prefix), prefix))
        return {str(k): str(v) for k, v in rows}

    async def find_token(self, token_hash: str) -> TokenRecord | None:
        rows = await self._fetch(f"SELECT {_TOKEN_COLUMNS} FROM tokens WHERE hash = ?",
                                 (token_hash,))
        tokens: list[TokenRecord] = self._decode("tokens", rows, _token)
        return tokens[0] if tokens else None

    async def list_tokens(self) -> list[TokenRecord]:
        rows = await self._fetch(f"SELECT {_TOKEN_COLUMNS} FROM tokens ORDER BY created_at, id")
        tokens: list[TokenRecord] = self._decode("tokens", rows, _token)
        return tokens

    async def revoked_tokens(self) -> set[str]:
        rows = await self._fetch("SELECT id FROM tokens WHERE revoked_at IS NOT NULL")
        return {str(r[0]) for r in rows}

    # -- writes -------------------------------------------------------------

    async def add_token(self, token: TokenRecord) -> bool:
        added = await self._execute(
            f"INSERT INTO tokens ({_TOKEN_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (id) DO NOTHING",
            (token.id, token.hash, token.role, token.user, token.label,
             _ts(token.created_at), _opt_ts(token.revoked_at)),
        )
        return added > 0

    async def revoke_token(self, token_id: str, at: datetime) -> bool:
        changed = await self._execute(
            "UPDATE tokens SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL",
            (_ts(at), token_id),
        )
        return changed > 0

    async def _execute(self, sql: str, params: Sequence[Any]) -> int:
        """One statement in its own transaction; returns the rows changed."""
        async with self._transaction() as db:
            cursor = await db.execute(sql, params)
        return int(cursor.rowcount)

    @contextlib.asynccontextmanager
    async def _transaction(self) -> AsyncIterator[aiosqlite.Connection]:
        """``BEGIN IMMEDIATE`` ... ``COMMIT`` under the lock; anything raised inside rolls
        back (SQLite's own errors as :class:`StoreError`)."""
        async with self._lock:
            db = self._conn()
            try:
                await db.execute("BEGIN IMMEDIATE")
                yield db
                await db.execute("COMMIT")
            except sqlite3.Error as exc:
                await _rollback(db)
                raise StoreError(f"cannot write to database {self._path}: {exc}") from exc
            except BaseException:
                await _rollback(db)
                raise

    async def save_users(self, users: Iterable[UserRecord]) -> None:
        """Insert or replace users by id, in one transaction."""
        await self._execute_many(_PUT_USER, [_user_row(u) for u in users])

    async def delete_users(self, ids: Iterable[str]) -> None:
        """Forget users found in hints that are gone (their history stays)."""
        await self._execute_many("DELETE FROM users WHERE id = ? AND origin = 'hint'",
                                 [(uid,) for uid in ids])

    async def _execute_many(self, sql: str, rows: list[Sequence[Any]]) -> None:
        """One statement for each row, all in one transaction."""
        if not rows:
            return
        async with self._transaction() as db:
            await db.executemany(sql, rows)

    async def commit(self, batch: Batch) -> list[int]:
        """Write the batch in one transaction; durable when this returns.

        Raises :class:`StoreError` if SQLite refuses it and ``ValueError`` for a
        naive datetime; either way nothing of the batch is written.
        """
        if not batch:
            return []
        # Cancelled while awaiting COMMIT, the batch may be stored although the
        # caller hears CancelledError (aiosqlite runs statements in order on one
        # thread: the ROLLBACK runs after whatever was already queued).
        async with self._transaction() as db:
            ids = await self._write(db, batch)
        return ids

    async def _write(self, db: aiosqlite.Connection, batch: Batch) -> list[int]:
        # Rows are converted just before each statement, inside the transaction,
        # so a bad value (a naive datetime) aborts a transaction that may
        # already hold earlier statements: the rollback path is the normal one.
        if batch.delete_sources:
            await db.executemany(_DELETE_SOURCE, list(batch.delete_sources))
        if batch.put_sources:
            await db.executemany(_PUT_SOURCE, [_source_row(s) for s in batch.put_sources])
        if batch.put_effective:
            await db.executemany(_PUT_EFFECTIVE, [_effective_row(e) for e in batch.put_effective])
        if batch.put_asterisk:
            await db.executemany(
                _PUT_ASTERISK,
                [(n, u, p.state.value, p.subtype, p.message) for n, u, p in batch.put_asterisk],
            )
        ids: list[int] = []
        if batch.history:
            await db.executemany(_ADD_HISTORY, [_history_row(h) for h in batch.history])
            # One connection, inside one write transaction, AUTOINCREMENT: the rows
            # just inserted have consecutive ids ending at last_insert_rowid().
            last = int(await _scalar(db, "SELECT last_insert_rowid()"))
            ids = list(range(last - len(batch.history) + 1, last + 1))
        if batch.meta:
            await db.executemany(_PUT_META, list(batch.meta.items()))
        return ids


async def _scalar(db: aiosqlite.Connection, sql: str) -> Any:
    rows = list(await db.execute_fetchall(sql))
    return rows[0][0] if rows else None


async def _rollback(db: aiosqlite.Connection) -> None:
    try:
        await db.execute("ROLLBACK")
    except sqlite3.Error as exc:
        # Usually "no transaction is active": SQLite already rolled back (I/O
        # error, SQLITE_FULL) or the COMMIT went through before a cancellation.
        # The error that brought us here is the one worth raising.
        logger.debug("rollback: %s", exc)
