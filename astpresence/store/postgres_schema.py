"""The PostgreSQL store's schema (versioned migrations), its channels and locks,
and the writing of one batch in its transaction.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

import asyncpg

from astpresence.domain.records import HistoryEntry
from astpresence.store.base import Batch, aware_utc


logger = logging.getLogger(__name__)


def _text(value: Any) -> Any:
    """PostgreSQL text cannot hold NUL (SQLite can): it is kept as U+FFFD. Only text
    from outside gets here with one (a device name, a reason quoting it)."""
    if isinstance(value, str):
        return value.replace("\x00", "\ufffd") if "\x00" in value else value
    if isinstance(value, (list, tuple)):
        return type(value)(_text(v) for v in value)
    return value


def _opt(value: datetime | None) -> datetime | None:
    return None if value is None else aware_utc(value)


_STATES = "('not_set', 'unavailable', 'available', 'away', 'xa', 'chat', 'dnd')"

#: Schema steps in order; a shipped step never changes. The version is a row in
#: astpresence_schema; migrating holds a transaction-level advisory lock, so two
#: daemons started at once do not both migrate.
MIGRATIONS: list[tuple[str, ...]] = [
    (
        """CREATE TABLE users (
            id text PRIMARY KEY, name text NOT NULL, extension text NOT NULL,
            context text NOT NULL, devices text NOT NULL, origin text NOT NULL)""",
        f"""CREATE TABLE sources (
            "user" text NOT NULL, source text NOT NULL,
            state text NOT NULL CHECK (state IN {_STATES}),
            subtype text NOT NULL, message text NOT NULL, since timestamptz NOT NULL,
            actor text NOT NULL, start timestamptz, "end" timestamptz,
            PRIMARY KEY ("user", source))""",
        f"""CREATE TABLE effective (
            "user" text PRIMARY KEY, state text NOT NULL CHECK (state IN {_STATES}),
            subtype text NOT NULL, message text NOT NULL, source text NOT NULL,
            reason text NOT NULL, since timestamptz NOT NULL)""",
        f"""CREATE TABLE asterisk (
            "user" text PRIMARY KEY, state text NOT NULL CHECK (state IN {_STATES}),
            subtype text NOT NULL, message text NOT NULL)""",
        f"""CREATE TABLE history (
            id bigint PRIMARY KEY, at timestamptz NOT NULL,
            "user" text NOT NULL,
            old_state text CHECK (old_state IN {_STATES}), old_subtype text, old_message text,
            new_state text NOT NULL CHECK (new_state IN {_STATES}),
            new_subtype text NOT NULL, new_message text NOT NULL,
            source text NOT NULL, actor text NOT NULL, reason text NOT NULL,
            CHECK ((old_state IS NULL) = (old_subtype IS NULL)
                   AND (old_state IS NULL) = (old_message IS NULL)))""",
        'CREATE INDEX history_user_id ON history ("user", id)',
        "CREATE TABLE meta (key text PRIMARY KEY, value text NOT NULL)",
        """CREATE TABLE tokens (
            id text PRIMARY KEY, hash text NOT NULL UNIQUE,
            role text NOT NULL CHECK (role IN ('user', 'operator', 'admin')),
            "user" text, label text NOT NULL, created_at timestamptz NOT NULL,
            revoked_at timestamptz)""",
    ),
    # Several Asterisk servers: what each one holds, by (node, user); the rows
    # of the single server so far are the default node's.
    (
        "ALTER TABLE asterisk ADD COLUMN node text NOT NULL DEFAULT 'asterisk'",
        "ALTER TABLE asterisk ALTER COLUMN node DROP DEFAULT",
        "ALTER TABLE asterisk DROP CONSTRAINT asterisk_pkey",
        'ALTER TABLE asterisk ADD PRIMARY KEY (node, "user")',
    ),
    # An HA group's followers hand their writes to the leader here (relay.py).
    (
        """CREATE TABLE commands (
            id bigserial PRIMARY KEY, node text NOT NULL, kind text NOT NULL,
            body text NOT NULL, status text NOT NULL DEFAULT 'new'
                CHECK (status IN ('new', 'running', 'done')),
            result text, created timestamptz NOT NULL DEFAULT now())""",
        "CREATE INDEX commands_new ON commands (id) WHERE status = 'new'",
    ),
    # What was going on at each change (activity), and a chosen message's own end.
    (
        "ALTER TABLE history ADD COLUMN activity text NOT NULL DEFAULT ''",
        "ALTER TABLE sources ADD COLUMN message_end timestamptz",
    ),
]


#: LISTEN/NOTIFY channels of an HA group (relay.py): the leader's committed
#: changes, the followers' commands, and the leader's answers to them.
EVENTS_CHANNEL = "astpresence_events"
COMMANDS_CHANNEL = "astpresence_commands"
RESULTS_CHANNEL = "astpresence_results"

#: pg_advisory_xact_lock keys: migrations ("astp" in ASCII), history ids ("asth").
MIGRATION_LOCK = 0x61737470
HISTORY_LOCK = 0x61737468


class _Clean:
    """A connection whose statements get their text through :func:`_text`."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self._conn = conn

    async def execute(self, sql: str, *args: Any) -> str:
        status: str = await self._conn.execute(sql, *_text(args))
        return status

    async def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        await self._conn.executemany(sql, [_text(tuple(r)) for r in rows])

    async def fetchval(self, sql: str, *args: Any) -> Any:
        return await self._conn.fetchval(sql, *_text(args))

    async def fetch(self, sql: str, *args: Any) -> list[asyncpg.Record]:
        rows: list[asyncpg.Record] = await self._conn.fetch(sql, *_text(args))
        return rows


async def _write(conn: _Clean, batch: Batch) -> list[int]:
    if batch.delete_sources:
        await conn.executemany('DELETE FROM sources WHERE "user" = $1 AND source = $2',
                               list(batch.delete_sources))
    if batch.put_sources:
        await conn.executemany(
            'INSERT INTO sources ("user", source, state, subtype, message, since, actor, start, '
            '"end", message_end) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) '
            'ON CONFLICT ("user", source) '
            "DO UPDATE SET state = excluded.state, subtype = excluded.subtype, "
            "message = excluded.message, since = excluded.since, actor = excluded.actor, "
            'start = excluded.start, "end" = excluded."end", message_end = excluded.message_end',
            [(s.user, s.source, s.presence.state.value, s.presence.subtype, s.presence.message,
              aware_utc(s.since), s.actor, _opt(s.start), _opt(s.end), _opt(s.message_end))
             for s in batch.put_sources])
    if batch.put_effective:
        await conn.executemany(
            'INSERT INTO effective ("user", state, subtype, message, source, reason, since) '
            'VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT ("user") DO UPDATE SET '
            "state = excluded.state, subtype = excluded.subtype, message = excluded.message, "
            "source = excluded.source, reason = excluded.reason, since = excluded.since",
            [(e.user, e.presence.state.value, e.presence.subtype, e.presence.message, e.source,
              e.reason, aware_utc(e.since)) for e in batch.put_effective])
    if batch.notices:
        # Delivered when (and only if) this transaction commits, in order.
        await conn.execute(f"SELECT pg_notify('{EVENTS_CHANNEL}', n) "
                           "FROM unnest($1::text[]) WITH ORDINALITY AS t(n, i) ORDER BY i",
                           list(batch.notices))
    if batch.put_asterisk:
        await conn.executemany(
            'INSERT INTO asterisk (node, "user", state, subtype, message) '
            'VALUES ($1, $2, $3, $4, $5) ON CONFLICT (node, "user") DO UPDATE SET '
            "state = excluded.state, subtype = excluded.subtype, message = excluded.message",
            [(n, u, p.state.value, p.subtype, p.message) for n, u, p in batch.put_asterisk])
    ids = await _write_history(conn, batch.history) if batch.history else []
    if batch.meta:
        await conn.executemany("INSERT INTO meta (key, value) VALUES ($1, $2) ON CONFLICT (key) "
                               "DO UPDATE SET value = excluded.value", list(batch.meta.items()))
    return ids


async def _write_history(conn: _Clean, history: list[HistoryEntry]) -> list[int]:
    """Ids without gaps, consecutive within a batch: numbered under a lock held to the
    end of the transaction (a sequence would leave holes on rollback)."""
    await conn.execute("SELECT pg_advisory_xact_lock($1)", HISTORY_LOCK)
    base = int(await conn.fetchval("SELECT coalesce(max(id), 0) FROM history"))
    ids = list(range(base + 1, base + 1 + len(history)))
    cols = list(zip(*[
        (aware_utc(h.at), h.user, None if h.old is None else h.old.state.value,
         None if h.old is None else h.old.subtype, None if h.old is None else h.old.message,
         h.new.state.value, h.new.subtype, h.new.message, h.source, h.actor, h.reason,
         h.activity)
        for h in history]))
    await conn.execute(
        'INSERT INTO history (id, at, "user", old_state, old_subtype, old_message, '
        "new_state, new_subtype, new_message, source, actor, reason, activity) "
        "SELECT * FROM unnest($1::bigint[], $2::timestamptz[], $3::text[], $4::text[], "
        "$5::text[], $6::text[], $7::text[], $8::text[], $9::text[], $10::text[], "
        "$11::text[], $12::text[], $13::text[])", ids, *[list(c) for c in cols])
    return ids
