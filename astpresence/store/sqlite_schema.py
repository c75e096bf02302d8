"""The SQLite store's schema (versioned migrations) and its rows: statements and
the conversions between records and rows. No I/O but the migration steps' own.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import Any, TypeAlias

import aiosqlite

from astpresence.domain.model import Presence, State
from astpresence.domain.records import (
    EffectiveRecord,
    HistoryEntry,
    SourceRecord,
    TokenRecord,
    UserRecord,
)
from astpresence.store.base import aware_utc


logger = logging.getLogger(__name__)

#: One schema step: SQL statements run in order, or an async function given the
#: connection. Steps run inside the migration transaction, so they must not
#: COMMIT (``executescript`` does, so do not use it). A shipped step never changes;
#: a schema change is a new step at the end.
Migration: TypeAlias = Sequence[str] | Callable[[aiosqlite.Connection], Awaitable[None]]

# No foreign keys from sources/effective/history to users: users come and go
# with the dialplan while their sources and history must stay, and the service
# may record a change for a user before it has saved the user list.

#: The presence states as schema version 1 spelt them in its CHECK constraints.
#: Written once; a migration never changes after it shipped, so this is not
#: derived from model.State.
_V1_STATES = "('not_set', 'unavailable', 'available', 'away', 'xa', 'chat', 'dnd')"
_SCHEMA_V1: tuple[str, ...] = (
    """
    CREATE TABLE users (
        id TEXT NOT NULL PRIMARY KEY,
        name TEXT NOT NULL,
        extension TEXT NOT NULL,
        context TEXT NOT NULL,
        devices TEXT NOT NULL,  -- JSON array of device names
        origin TEXT NOT NULL
    ) WITHOUT ROWID
    """,
    f"""
    CREATE TABLE sources (
        user TEXT NOT NULL,
        source TEXT NOT NULL,
        state TEXT NOT NULL CHECK (state IN
            {_V1_STATES}),
        subtype TEXT NOT NULL,
        message TEXT NOT NULL,
        since TEXT NOT NULL,
        actor TEXT NOT NULL,
        start TEXT,
        "end" TEXT,
        PRIMARY KEY (user, source)
    ) WITHOUT ROWID
    """,
    f"""
    CREATE TABLE effective (
        user TEXT NOT NULL PRIMARY KEY,
        state TEXT NOT NULL CHECK (state IN
            {_V1_STATES}),
        subtype TEXT NOT NULL,
        message TEXT NOT NULL,
        source TEXT NOT NULL,
        reason TEXT NOT NULL,
        since TEXT NOT NULL
    ) WITHOUT ROWID
    """,
    f"""
    CREATE TABLE asterisk (
        user TEXT NOT NULL PRIMARY KEY,
        state TEXT NOT NULL CHECK (state IN
            {_V1_STATES}),
        subtype TEXT NOT NULL,
        message TEXT NOT NULL
    ) WITHOUT ROWID
    """,
    # AUTOINCREMENT: ids are never reused, so an id names one change for good.
    f"""
    CREATE TABLE history (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        at TEXT NOT NULL,
        user TEXT NOT NULL,
        old_state TEXT CHECK (old_state IN
            {_V1_STATES}),
        old_subtype TEXT,
        old_message TEXT,
        new_state TEXT NOT NULL CHECK (new_state IN
            {_V1_STATES}),
        new_subtype TEXT NOT NULL,
        new_message TEXT NOT NULL,
        source TEXT NOT NULL,
        actor TEXT NOT NULL,
        reason TEXT NOT NULL,
        CHECK ((old_state IS NULL) = (old_subtype IS NULL)
               AND (old_state IS NULL) = (old_message IS NULL))
    )
    """,
    "CREATE INDEX history_user_id ON history (user, id)",
    """
    CREATE TABLE meta (
        key TEXT NOT NULL PRIMARY KEY,
        value TEXT NOT NULL
    ) WITHOUT ROWID
    """,
)

#: Schema steps in order; the schema version of a database is how many it has had.
_SCHEMA_V2: tuple[str, ...] = (
    """
    CREATE TABLE tokens (
        id TEXT NOT NULL PRIMARY KEY,
        hash TEXT NOT NULL UNIQUE,
        role TEXT NOT NULL CHECK (role IN ('user', 'operator', 'admin')),
        user TEXT,
        label TEXT NOT NULL,
        created_at TEXT NOT NULL,
        revoked_at TEXT
    ) WITHOUT ROWID
    """,
)

#: Several Asterisk servers: what each one holds, by (node, user). The rows of
#: the single server so far are the default node's.
_SCHEMA_V3: tuple[str, ...] = (
    f"""
    CREATE TABLE asterisk_nodes (
        node TEXT NOT NULL,
        user TEXT NOT NULL,
        state TEXT NOT NULL CHECK (state IN
            {_V1_STATES}),
        subtype TEXT NOT NULL,
        message TEXT NOT NULL,
        PRIMARY KEY (node, user)
    ) WITHOUT ROWID
    """,
    """
    INSERT INTO asterisk_nodes (node, user, state, subtype, message)
    SELECT 'asterisk', user, state, subtype, message FROM asterisk
    """,
    "DROP TABLE asterisk",
    "ALTER TABLE asterisk_nodes RENAME TO asterisk",
)

#: What was going on at each change (activity), and a chosen message's own end.
_SCHEMA_V4: tuple[str, ...] = (
    "ALTER TABLE history ADD COLUMN activity TEXT NOT NULL DEFAULT ''",
    "ALTER TABLE sources ADD COLUMN message_end TEXT",
)

MIGRATIONS: list[Migration] = [_SCHEMA_V1, _SCHEMA_V2, _SCHEMA_V3, _SCHEMA_V4]

_PUT_USER = """
    INSERT INTO users (id, name, extension, context, devices, origin)
    VALUES (?, ?, ?, ?, ?, ?)
    ON CONFLICT (id) DO UPDATE SET
        name = excluded.name, extension = excluded.extension,
        context = excluded.context, devices = excluded.devices,
        origin = excluded.origin
"""
_DELETE_SOURCE = "DELETE FROM sources WHERE user = ? AND source = ?"
_PUT_SOURCE = """
    INSERT INTO sources (user, source, state, subtype, message, since, actor, start, "end",
                         message_end)
    VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
    ON CONFLICT (user, source) DO UPDATE SET
        state = excluded.state, subtype = excluded.subtype,
        message = excluded.message, since = excluded.since, actor = excluded.actor,
        start = excluded.start, "end" = excluded."end", message_end = excluded.message_end
"""
_PUT_EFFECTIVE = """
    INSERT INTO effective (user, state, subtype, message, source, reason, since)
    VALUES (?, ?, ?, ?, ?, ?, ?)
    ON CONFLICT (user) DO UPDATE SET
        state = excluded.state, subtype = excluded.subtype,
        message = excluded.message, source = excluded.source,
        reason = excluded.reason, since = excluded.since
"""
_PUT_ASTERISK = """
    INSERT INTO asterisk (node, user, state, subtype, message) VALUES (?, ?, ?, ?, ?)
    ON CONFLICT (node, user) DO UPDATE SET
        state = excluded.state, subtype = excluded.subtype, message = excluded.message
"""
_ADD_HISTORY = """
    INSERT INTO history (at, user, old_state, old_subtype, old_message,
                         new_state, new_subtype, new_message, source, actor, reason, activity)
    VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
"""
_PUT_META = """
    INSERT INTO meta (key, value) VALUES (?, ?)
    ON CONFLICT (key) DO UPDATE SET value = excluded.value
"""
_HISTORY_COLUMNS = """
    id, at, user, old_state, old_subtype, old_message,
    new_state, new_subtype, new_message, source, actor, reason, activity
"""

Row: TypeAlias = tuple[Any, ...]


# -- conversions ------------------------------------------------------------


def _ts(value: datetime) -> str:
    # Fixed width (always microseconds, always +00:00) so text order is time order.
    return aware_utc(value).isoformat(timespec="microseconds")


def _opt_ts(value: datetime | None) -> str | None:
    return None if value is None else _ts(value)


def _dt(text: str) -> datetime:
    value = datetime.fromisoformat(text)
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def _opt_dt(text: str | None) -> datetime | None:
    return None if text is None else _dt(text)


def _presence(state: str, subtype: str, message: str) -> Presence:
    return Presence(State(state), subtype, message)


def _user_row(user: UserRecord) -> Row:
    devices = json.dumps(list(user.devices), ensure_ascii=False)
    return (user.id, user.name, user.extension, user.context, devices, user.origin)


def _user(row: Row) -> UserRecord:
    devices = json.loads(row[4])
    if not isinstance(devices, list) or not all(isinstance(d, str) for d in devices):
        raise ValueError(f"devices is not a JSON list of strings: {row[4]!r}")
    return UserRecord(row[0], row[1], row[2], row[3], tuple(devices), row[5])


def _source_row(rec: SourceRecord) -> Row:
    p = rec.presence
    return (
        rec.user,
        rec.source,
        p.state.value,
        p.subtype,
        p.message,
        _ts(rec.since),
        rec.actor,
        _opt_ts(rec.start),
        _opt_ts(rec.end),
        _opt_ts(rec.message_end),
    )


def _source(row: Row) -> SourceRecord:
    return SourceRecord(
        user=row[0],
        source=row[1],
        presence=_presence(row[2], row[3], row[4]),
        since=_dt(row[5]),
        actor=row[6],
        start=_opt_dt(row[7]),
        end=_opt_dt(row[8]),
        message_end=_opt_dt(row[9]),
    )


def _effective_row(rec: EffectiveRecord) -> Row:
    p = rec.presence
    return (rec.user, p.state.value, p.subtype, p.message, rec.source, rec.reason, _ts(rec.since))


def _effective(row: Row) -> EffectiveRecord:
    return EffectiveRecord(
        user=row[0],
        presence=_presence(row[1], row[2], row[3]),
        source=row[4],
        reason=row[5],
        since=_dt(row[6]),
    )


#: Retention (prune_history). The newest row of all is never deleted.
_PRUNE_OLD = "DELETE FROM history WHERE at < ? AND id < (SELECT max(id) FROM history)"
_PRUNE_USER = ("DELETE FROM history WHERE user = ? AND id <= (SELECT id FROM history "
               "WHERE user = ? ORDER BY id DESC LIMIT 1 OFFSET ?) "
               "AND id < (SELECT max(id) FROM history)")


def _history_row(entry: HistoryEntry) -> Row:
    old, new = entry.old, entry.new
    return (
        _ts(entry.at),
        entry.user,
        None if old is None else old.state.value,
        None if old is None else old.subtype,
        None if old is None else old.message,
        new.state.value,
        new.subtype,
        new.message,
        entry.source,
        entry.actor,
        entry.reason,
        entry.activity,
    )


def _history(row: Row) -> HistoryEntry:
    return HistoryEntry(
        id=row[0],
        at=_dt(row[1]),
        user=row[2],
        old=None if row[3] is None else _presence(row[3], row[4], row[5]),
        new=_presence(row[6], row[7], row[8]),
        source=row[9],
        actor=row[10],
        reason=row[11],
        activity=row[12],
    )


_TOKEN_COLUMNS = "id, hash, role, user, label, created_at, revoked_at"


def _token(row: Row) -> TokenRecord:
    return TokenRecord(str(row[0]), str(row[1]), str(row[2]),
                       None if row[3] is None else str(row[3]), str(row[4]),
                       _dt(row[5]), _opt_dt(row[6]))


def _hint(exc: BaseException) -> str:
    text = str(exc)
    if "unable to open" in text:
        return f"{text} (does the directory exist, and may this user write to it?)"
    if "readonly" in text:
        return f"{text} (may this user write to the file and its directory?)"
    return text
