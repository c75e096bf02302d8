"""A :class:`~astpresence.store.base.Store` in PostgreSQL (asyncpg).

Selected with ``[store] url = "postgresql://user@host/db"`` (or
``ASTPRESENCE_DB_URL``); SQLite stays the default. The tables are those of
the SQLite store, with ``timestamptz`` for times and an identity column for
history ids given without gaps (one writer at a time holds an advisory lock
while it numbers its rows, as SQLite's AUTOINCREMENT inside its write
transaction does). A batch is one transaction, committed before the change is
acknowledged (``synchronous_commit`` as the server has it: on by default, so
an acknowledged change survives a crash of the daemon or of PostgreSQL).

Connections come from a small pool: when PostgreSQL restarts, the next
statement fails with :class:`StoreError` (the group committer reports it and
the caller hears it) and the one after gets a fresh connection.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any
from urllib.parse import unquote, urlsplit

import asyncpg

from astpresence.domain.model import DEFAULT_NODE, Presence, State
from astpresence.domain.records import (
    EffectiveRecord,
    HistoryEntry,
    SourceRecord,
    TokenRecord,
    UserRecord,
)
from astpresence.store.base import Batch, StoreError, aware_utc
from astpresence.store.postgres_schema import (
    _opt,
    _text,
    COMMANDS_CHANNEL,
    HISTORY_LOCK,
    MIGRATIONS,
    MIGRATION_LOCK,
    RESULTS_CHANNEL,
    _Clean,
    _write,
)

logger = logging.getLogger(__name__)


#: How long closing waits for the server before dropping the connections.
CLOSE_TIMEOUT = 5.0


#: Query parameters of a libpq URL that hold a secret (or point at one).
SECRET_PARAMS = ("password", "sslpassword", "passfile", "sslkey")


def safe_dsn(url: str) -> str:
    """The URL without its passwords, for messages: the user:password part and every
    query parameter that holds one (``?password=``, ``sslpassword=``...)."""
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:  # an unparsable URL: show none of it
        return "(an unparsable database URL)"
    netloc = parts.netloc
    if password is not None:
        user, _, host = netloc.rpartition("@")
        netloc = f"{user.split(':', 1)[0]}:***@{host}"
    query = "&".join(_masked(pair) for pair in parts.query.split("&"))
    # by hand: geturl() drops an empty host ("postgresql:///db?host=/run/...")
    return (f"{parts.scheme}://{netloc}{parts.path}" + (f"?{query}" if parts.query else "")
            + (f"#{parts.fragment}" if parts.fragment else ""))


def _masked(pair: str) -> str:
    key, sep, _ = pair.partition("=")
    name = unquote(key).lower()
    if sep and (name in SECRET_PARAMS or "password" in name or "secret" in name):
        return f"{key}=***"
    return pair


def _utc(value: datetime | None) -> datetime | None:
    return None if value is None else value.astimezone(UTC)


def _presence(state: str, subtype: str, message: str) -> Presence:
    return Presence(State(state), subtype, message)


class PostgresStore:
    """The :class:`Store` protocol on PostgreSQL."""

    def __init__(self, url: str, *, pool_size: int = 4) -> None:
        self._url = url
        self._pool_size = pool_size
        self._pool: asyncpg.Pool | None = None

    @property
    def local_file(self) -> str | None:
        return None  # a server: its own locking; an HA group shares it on purpose

    @property
    def url(self) -> str:
        return safe_dsn(self._url)

    def __repr__(self) -> str:
        return f"PostgresStore({self.url!r})"

    # -- lifecycle ----------------------------------------------------------

    async def open(self) -> None:
        if self._pool is not None:
            return
        try:
            pool = await asyncpg.create_pool(self._url, min_size=1, max_size=self._pool_size,
                                             command_timeout=30)
        except (OSError, asyncpg.PostgresError, ValueError) as exc:
            raise StoreError(f"cannot connect to PostgreSQL at {self.url}: {exc}") from None
        try:
            await self._migrate(pool)
        except BaseException:
            await pool.close()
            raise
        self._pool = pool
        logger.info("opened store %s", self.url)

    async def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            try:
                await asyncio.wait_for(pool.close(), CLOSE_TIMEOUT)
            except TimeoutError:
                # The server is unreachable (a network cut): do not wait for it.
                pool.terminate()
                logger.warning("store %s: closed without a goodbye (the server did not "
                               "answer within %.0f s)", self.url, CLOSE_TIMEOUT)
                return
            logger.info("closed store %s", self.url)

    async def _migrate(self, pool: asyncpg.Pool) -> None:
        known = len(MIGRATIONS)
        try:
            async with pool.acquire() as conn, conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock($1)", MIGRATION_LOCK)
                await conn.execute("CREATE TABLE IF NOT EXISTS astpresence_schema "
                                   "(version integer NOT NULL)")
                version = await conn.fetchval("SELECT version FROM astpresence_schema")
                if version is None:
                    await conn.execute("INSERT INTO astpresence_schema VALUES (0)")
                    version = 0
                if version > known:
                    raise StoreError(f"database schema version {version} is newer than this "
                                     f"astpresence supports ({known})")
                for number, step in enumerate(MIGRATIONS[version:], start=version + 1):
                    logger.info("store %s: migrating to schema version %d", self.url, number)
                    for statement in step:
                        await conn.execute(statement)
                await conn.execute("UPDATE astpresence_schema SET version = $1", known)
        except (OSError, asyncpg.PostgresError) as exc:
            raise StoreError(f"cannot prepare PostgreSQL at {self.url}: {exc}") from None

    def _p(self) -> asyncpg.Pool:
        if self._pool is None:
            raise StoreError(f"store {self.url} is not open")
        return self._pool

    # -- reads --------------------------------------------------------------

    async def _fetch(self, sql: str, *args: Any) -> list[asyncpg.Record]:
        try:
            rows: list[asyncpg.Record] = await self._p().fetch(sql, *_text(args))
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            raise StoreError(f"cannot read PostgreSQL at {self.url}: {exc}") from None
        return rows

    async def load_users(self) -> list[UserRecord]:
        rows = await self._fetch("SELECT id, name, extension, context, devices, origin "
                                 "FROM users ORDER BY id")
        return [UserRecord(r[0], r[1], r[2], r[3], tuple(json.loads(r[4])), r[5]) for r in rows]

    async def load_sources(self, user: str | None = None) -> list[SourceRecord]:
        rows = await self._fetch('SELECT "user", source, state, subtype, message, since, actor, '
                                 'start, "end", message_end FROM sources '
                                 'WHERE $1::text IS NULL OR "user" = $1 '
                                 'ORDER BY "user", source', user)
        return [SourceRecord(r[0], r[1], _presence(r[2], r[3], r[4]), r[5].astimezone(UTC),
                             r[6], _utc(r[7]), _utc(r[8]), _utc(r[9])) for r in rows]

    async def load_effective(self) -> list[EffectiveRecord]:
        rows = await self._fetch('SELECT "user", state, subtype, message, source, reason, since '
                                 'FROM effective ORDER BY "user"')
        return [EffectiveRecord(r[0], _presence(r[1], r[2], r[3]), r[4], r[5],
                                r[6].astimezone(UTC)) for r in rows]

    async def load_asterisk(self, node: str = DEFAULT_NODE) -> dict[str, Presence]:
        rows = await self._fetch('SELECT "user", state, subtype, message FROM asterisk '
                                 'WHERE node = $1 ORDER BY "user"', node)
        return {r[0]: _presence(r[1], r[2], r[3]) for r in rows}

    async def history(self, user: str, limit: int = 50) -> list[HistoryEntry]:
        if limit < 1:
            raise ValueError(f"limit must be at least 1, not {limit}")
        rows = await self._fetch(
            'SELECT id, at, "user", old_state, old_subtype, old_message, new_state, '
            "new_subtype, new_message, source, actor, reason, activity FROM history "
            'WHERE "user" = $1 ORDER BY id DESC LIMIT $2', user, limit)
        return [HistoryEntry(id=r[0], at=r[1].astimezone(UTC), user=r[2],
                             old=None if r[3] is None else _presence(r[3], r[4], r[5]),
                             new=_presence(r[6], r[7], r[8]), source=r[9], actor=r[10],
                             reason=r[11], activity=r[12]) for r in rows]

    async def get_meta(self, key: str) -> str | None:
        rows = await self._fetch("SELECT value FROM meta WHERE key = $1", key)
        return str(rows[0][0]) if rows else None

    async def load_meta(self, prefix: str) -> dict[str, str]:
        rows = await self._fetch("SELECT key, value FROM meta WHERE left(key, $1) = $2",
                                 len(prefix), prefix)
        return {str(r[0]): str(r[1]) for r in rows}

    async def find_token(self, token_hash: str) -> TokenRecord | None:
        rows = await self._fetch(f"SELECT {_TOKEN_COLUMNS} FROM tokens WHERE hash = $1",
                                 token_hash)
        return _token(rows[0]) if rows else None

    async def list_tokens(self) -> list[TokenRecord]:
        rows = await self._fetch(f"SELECT {_TOKEN_COLUMNS} FROM tokens ORDER BY created_at, id")
        return [_token(r) for r in rows]

    async def revoked_tokens(self) -> set[str]:
        rows = await self._fetch("SELECT id FROM tokens WHERE revoked_at IS NOT NULL")
        return {str(r[0]) for r in rows}

    # -- writes -------------------------------------------------------------

    async def _run(self, work: Any) -> Any:
        """``work(conn)`` in one transaction; StoreError when PostgreSQL refuses."""
        try:
            async with self._p().acquire() as conn, conn.transaction():
                return await work(_Clean(conn))
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            raise StoreError(f"cannot write to PostgreSQL at {self.url}: {exc}") from None

    async def add_token(self, token: TokenRecord) -> bool:
        async def work(conn: _Clean) -> str:
            status: str = await conn.execute(
                f"INSERT INTO tokens ({_TOKEN_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7) "
                "ON CONFLICT (id) DO NOTHING",
                token.id, token.hash, token.role, token.user, token.label,
                aware_utc(token.created_at), _opt(token.revoked_at))
            return status
        return bool(await self._run(work) == "INSERT 0 1")

    async def revoke_token(self, token_id: str, at: datetime) -> bool:
        async def work(conn: _Clean) -> str:
            status: str = await conn.execute(
                "UPDATE tokens SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL",
                aware_utc(at), token_id)
            return status
        return bool(await self._run(work) == "UPDATE 1")

    async def save_users(self, users: Iterable[UserRecord]) -> None:
        rows = [(u.id, u.name, u.extension, u.context,
                 json.dumps(list(u.devices), ensure_ascii=False), u.origin) for u in users]
        if not rows:
            return

        async def work(conn: _Clean) -> None:
            await conn.executemany(
                "INSERT INTO users (id, name, extension, context, devices, origin) "
                "VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (id) DO UPDATE SET "
                "name = excluded.name, extension = excluded.extension, "
                "context = excluded.context, devices = excluded.devices, "
                "origin = excluded.origin", rows)
        await self._run(work)

    async def delete_users(self, ids: Iterable[str]) -> None:
        gone = list(ids)
        if gone:
            async def work(conn: _Clean) -> None:
                await conn.execute("DELETE FROM users WHERE id = ANY($1::text[]) "
                                   "AND origin = 'hint'", gone)
            await self._run(work)

    async def commit(self, batch: Batch) -> list[int]:
        """The batch in one transaction; durable when this returns."""
        if not batch:
            return []

        async def work(conn: _Clean) -> list[int]:
            return await _write(conn, batch)
        ids: list[int] = await self._run(work)
        return ids


    # -- an HA group's commands (relay.py) ---------------------------------------

    async def add_command(self, node: str, kind: str, body: str) -> int:
        """A follower's write for the leader; its id. The leader is told at commit."""
        async def work(conn: _Clean) -> int:
            command = int(await conn.fetchval(
                "INSERT INTO commands (node, kind, body) VALUES ($1, $2, $3) RETURNING id",
                node, kind, body))
            await conn.execute(f"SELECT pg_notify('{COMMANDS_CHANNEL}', $1)", str(command))
            return command
        command: int = await self._run(work)
        return command

    async def claim_commands(self, limit: int = 100) -> list[tuple[int, str, str]]:
        """The oldest new commands, now marked running (for this leader only)."""
        async def work(conn: _Clean) -> list[tuple[int, str, str]]:
            rows = await conn.fetch(
                "UPDATE commands SET status = 'running' WHERE id IN (SELECT id FROM commands "
                "WHERE status = 'new' ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED) "
                "RETURNING id, kind, body", limit)
            return sorted((int(r[0]), str(r[1]), str(r[2])) for r in rows)
        claimed: list[tuple[int, str, str]] = await self._run(work)
        return claimed

    async def finish_command(self, command: int, result: str) -> None:
        async def work(conn: _Clean) -> None:
            await conn.execute("UPDATE commands SET status = 'done', result = $2 WHERE id = $1",
                               command, result)
            await conn.execute(f"SELECT pg_notify('{RESULTS_CHANNEL}', $1)", str(command))
        await self._run(work)

    async def command_result(self, command: int) -> str | None:
        rows = await self._fetch("SELECT result FROM commands WHERE id = $1 AND "
                                 "status = 'done'", command)
        return str(rows[0][0]) if rows else None

    async def prune_history(self, before: datetime, keep_rows: int) -> int:
        async def work(conn: _Clean) -> int:
            # the history-id lock: no commit hands out ids while rows go
            await conn.execute("SELECT pg_advisory_xact_lock($1)", HISTORY_LOCK)
            newest = await conn.fetchval("SELECT max(id) FROM history")
            if newest is None:
                return 0
            old = await conn.execute("DELETE FROM history WHERE at < $1 AND id < $2",
                                     aware_utc(before), newest)
            crowded = await conn.execute(
                'DELETE FROM history WHERE id < $2 AND id IN (SELECT id FROM (SELECT id, '
                'row_number() OVER (PARTITION BY "user" ORDER BY id DESC) AS n '
                'FROM history) ranked WHERE n > $1)', keep_rows, newest)
            return int(old.split()[-1]) + int(crowded.split()[-1])
        gone: int = await self._run(work)
        return gone

    async def delete_command(self, command: int) -> None:
        async def work(conn: _Clean) -> None:
            await conn.execute("DELETE FROM commands WHERE id = $1", command)
        await self._run(work)

    async def sweep_commands(self, older_than: float) -> None:
        """Commands nobody waits for any more (a follower or a leader died)."""
        async def work(conn: _Clean) -> None:
            await conn.execute("DELETE FROM commands WHERE created < now() - "
                               "make_interval(secs => $1)", older_than)
        await self._run(work)


_TOKEN_COLUMNS = 'id, hash, role, "user", label, created_at, revoked_at'


def _token(r: Sequence[Any]) -> TokenRecord:
    return TokenRecord(r[0], r[1], r[2], r[3], r[4], r[5].astimezone(UTC), _utc(r[6]))


