"""One behavioural suite for every store, plus what only SQLite has.

Tests taking ``store`` or ``reopen`` run on :class:`SqliteStore`,
:class:`PostgresStore` (a throwaway server, a database per test) and
:class:`MemoryStore`; tests taking ``db_path`` are about the SQLite file.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator, Callable
from contextlib import closing
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from astpresence.domain.model import DEFAULT_NODE, NOT_SET, Presence, State
from astpresence.store import sqlite as sqlite_mod
from astpresence.domain.records import EffectiveRecord, HistoryEntry, SourceRecord, UserRecord
from astpresence.store.base import Batch, Store, StoreError
from tests.support.memory_store import MemoryStore
from astpresence.store.sqlite import SqliteStore
from astpresence.store.postgres import PostgresStore

ROOT = Path(__file__).resolve().parents[2]
T0 = datetime(2024, 5, 1, 12, 0, 0, 123456, tzinfo=timezone.utc)
CEST = timezone(timedelta(hours=2))

# Text a user may type (model.validate_text allows all of these).
TEXTS = [
    "",
    "Ünïcödé façade",
    "会議中 — 14h",
    "🎉🎉 party 👩‍👩‍👧",
    "O'Brien\"; DROP TABLE users; --",
    "Ω" * 127,  # 254 bytes of UTF-8
]

Factory = Callable[[], Store]


# -- fixtures ---------------------------------------------------------------


@pytest.fixture(params=["sqlite", "postgres", "memory"])
def reopen(request: pytest.FixtureRequest, tmp_path: Path) -> Factory:
    """Each call gives the store a restarted daemon would get.

    SQLite: a new SqliteStore on the same file; PostgreSQL: a new
    PostgresStore on the same database. Memory: the same object, whose data
    lives as long as it does (the closest it has to a file).
    """
    if request.param == "sqlite":
        path = tmp_path / "presence.db"
        return lambda: SqliteStore(path)
    if request.param == "postgres":
        url = request.getfixturevalue("postgres_url")
        return lambda: PostgresStore(url)
    mem = MemoryStore()
    return lambda: mem


@pytest.fixture
async def store(reopen: Factory) -> AsyncIterator[Store]:
    s = reopen()
    await s.open()
    try:
        yield s
    finally:
        await s.close()


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "presence.db"


@pytest.fixture
async def sqlite_store(db_path: Path) -> AsyncIterator[SqliteStore]:
    s = SqliteStore(db_path)
    await s.open()
    try:
        yield s
    finally:
        await s.close()


# -- helpers ----------------------------------------------------------------


def hist(
    user: str,
    new: Presence,
    old: Presence | None = None,
    *,
    at: datetime = T0,
    reason: str = "",
) -> HistoryEntry:
    return HistoryEntry(at=at, user=user, old=old, new=new, source="manual", actor="api", reason=reason)


def src(user: str, source: str = "manual", state: State = State.AWAY, message: str = "") -> SourceRecord:
    return SourceRecord(user, source, Presence(state, "", message), T0, "api")


N = DEFAULT_NODE


def eff(user: str, state: State = State.AWAY, reason: str = "") -> EffectiveRecord:
    return EffectiveRecord(user, Presence(state), "manual", reason, T0)


async def snapshot(store: Store) -> tuple[object, ...]:
    """Everything a caller can read, to compare before and after."""
    users = await store.load_users()
    sources = await store.load_sources()
    effective = await store.load_effective()
    asterisk = await store.load_asterisk()
    history = [await store.history(u, limit=1000) for u in ("alice", "bob", "carol")]
    meta = [await store.get_meta(k) for k in ("k1", "k2")]
    return users, sources, effective, asterisk, history, meta


def full_batch(history: list[HistoryEntry]) -> Batch:
    return Batch(
        put_sources=[src("carol", "calendar", State.DND, "meeting")],
        delete_sources=[("alice", "manual")],
        put_effective=[eff("carol", State.DND, "calendar")],
        put_asterisk=[(N, "carol", Presence(State.DND))],
        history=history,
        meta={"k1": "changed", "k2": "new"},
    )


def user_version(path: Path) -> int:
    with closing(sqlite3.connect(path)) as conn:
        return int(conn.execute("PRAGMA user_version").fetchone()[0])


# -- round trips ------------------------------------------------------------


async def test_new_store_is_empty(store: Store) -> None:
    assert await store.load_users() == []
    assert await store.load_sources() == []
    assert await store.load_effective() == []
    assert await store.load_asterisk() == {}
    assert await store.history("alice") == []
    assert await store.get_meta("anything") is None


@pytest.mark.parametrize("text", TEXTS)
async def test_users_round_trip(store: Store, text: str) -> None:
    users = [
        UserRecord("alice", text, "1001", "default", ("PJSIP/alice", f"SIP/{text}"), "hint"),
        UserRecord("bob", origin="config"),
    ]
    await store.save_users(reversed(users))
    assert await store.load_users() == users


async def test_save_users_replaces_by_id(store: Store) -> None:
    await store.save_users([UserRecord("alice", "Alice", devices=("PJSIP/a",)), UserRecord("bob")])
    await store.save_users([UserRecord("alice", "Alice B.", devices=())])
    assert await store.load_users() == [UserRecord("alice", "Alice B."), UserRecord("bob")]
    await store.save_users([])  # nothing to do, and fine
    assert len(await store.load_users()) == 2


@pytest.mark.parametrize("text", TEXTS)
async def test_sources_round_trip(store: Store, text: str) -> None:
    timed = SourceRecord(
        "alice",
        "calendar",
        Presence(State.DND, text, text),
        T0,
        f"calendar {text}",
        start=T0 + timedelta(hours=1),
        end=T0 + timedelta(hours=2),
    )
    untimed = SourceRecord("alice", "manual", Presence(State.AWAY, "", text), T0, "cli")
    other = SourceRecord("bob", text or "x", NOT_SET, T0, "asterisk")
    await store.commit(Batch(put_sources=[other, untimed, timed]))
    got = await store.load_sources()
    assert got == [timed, untimed, other]  # by (user, source)
    assert got[1].start is None and got[1].end is None


async def test_datetimes_come_back_aware_utc(store: Store) -> None:
    local = datetime(2024, 5, 1, 14, 0, 0, 1, tzinfo=CEST)
    await store.commit(
        Batch(
            put_sources=[SourceRecord("alice", "manual", NOT_SET, local, "api", local, local)],
            put_effective=[EffectiveRecord("alice", NOT_SET, "manual", "", local)],
            history=[hist("alice", NOT_SET, at=local)],
        )
    )
    (source,) = await store.load_sources()
    (effective,) = await store.load_effective()
    (entry,) = await store.history("alice")
    for value in (source.since, source.start, source.end, effective.since, entry.at):
        assert value == local
        assert value is not None and value.tzinfo is timezone.utc
        assert value.microsecond == 1


@pytest.mark.parametrize("text", TEXTS)
async def test_effective_and_asterisk_round_trip(store: Store, text: str) -> None:
    effective = [
        EffectiveRecord("alice", Presence(State.XA, text, text), f"src {text}", f"why {text}", T0),
        EffectiveRecord("bob", NOT_SET, "none", "", T0),
    ]
    asterisk = [("bob", NOT_SET), ("alice", Presence(State.CHAT, text, text))]
    await store.commit(Batch(put_effective=effective[::-1],
                             put_asterisk=[(N, u, p) for u, p in asterisk]))
    assert await store.load_effective() == effective
    assert await store.load_asterisk() == dict(asterisk)
    assert list(await store.load_asterisk()) == ["alice", "bob"]


async def test_asterisk_values_are_kept_per_node(store: Store) -> None:
    await store.commit(Batch(put_asterisk=[
        (N, "alice", Presence(State.AWAY)), ("b", "alice", Presence(State.DND)),
        ("b", "bob", NOT_SET)]))
    assert await store.load_asterisk() == {"alice": Presence(State.AWAY)}
    assert await store.load_asterisk("b") == {"alice": Presence(State.DND), "bob": NOT_SET}
    assert await store.load_asterisk("c") == {}


@pytest.mark.parametrize("text", TEXTS)
async def test_history_round_trip(store: Store, text: str) -> None:
    entries = [
        hist("alice", Presence(State.AWAY, text, text), None, reason=text),
        hist("alice", NOT_SET, Presence(State.AWAY, text, text), at=T0 + timedelta(seconds=1)),
        hist("alice", Presence(State.AVAILABLE), NOT_SET),  # old NOT_SET is not old None
    ]
    ids = await store.commit(Batch(history=entries))
    assert ids == [1, 2, 3]
    got = await store.history("alice")
    assert got == [
        HistoryEntry(e.at, e.user, e.old, e.new, e.source, e.actor, e.reason, id=i)
        for e, i in reversed(list(zip(entries, ids)))
    ]
    assert got[2].old is None and got[0].old == NOT_SET


async def test_puts_replace_and_last_in_batch_wins(store: Store) -> None:
    await store.commit(
        Batch(
            put_sources=[src("alice", message="first")],
            put_effective=[eff("alice", State.AWAY)],
            put_asterisk=[(N, "alice", Presence(State.AWAY))],
            meta={"k1": "one"},
        )
    )
    await store.commit(
        Batch(
            put_sources=[src("alice", message="second"), src("alice", message="third")],
            put_effective=[eff("alice", State.DND), eff("alice", State.XA)],
            put_asterisk=[(N, "alice", Presence(State.DND)), (N, "alice", NOT_SET)],
            meta={"k1": "two"},
        )
    )
    assert await store.load_sources() == [src("alice", message="third")]
    assert await store.load_effective() == [eff("alice", State.XA)]
    assert await store.load_asterisk() == {"alice": NOT_SET}
    assert await store.get_meta("k1") == "two"


async def test_delete_sources(store: Store) -> None:
    await store.commit(
        Batch(put_sources=[src("alice"), src("alice", "calendar"), src("bob"), src("bob", "calendar")])
    )
    await store.commit(
        Batch(delete_sources=[("alice", "manual"), ("bob", "calendar"), ("nobody", "manual")])
    )
    assert await store.load_sources() == [src("alice", "calendar"), src("bob")]


async def test_delete_runs_before_put_in_one_batch(store: Store) -> None:
    await store.commit(Batch(put_sources=[src("alice", message="old")]))
    await store.commit(
        Batch(put_sources=[src("alice", message="new")], delete_sources=[("alice", "manual")])
    )
    assert await store.load_sources() == [src("alice", message="new")]


async def test_meta(store: Store) -> None:
    await store.commit(Batch(meta={"k1": "v1", "ünï": "☃"}))
    assert await store.get_meta("k1") == "v1"
    assert await store.get_meta("ünï") == "☃"
    assert await store.get_meta("k2") is None
    await store.commit(Batch(meta={"k1": ""}))
    assert await store.get_meta("k1") == ""


async def test_meta_by_prefix(store: Store) -> None:
    """Call handling keeps each person's rules under calls/<user> (engine/calls.py)."""
    await store.commit(Batch(meta={"calls/2000": "a", "calls/2001": "b", "callsx": "c",
                                   "last_sync": "d", "calls%": "e", "calls_": "f"}))
    assert await store.load_meta("calls/") == {"calls/2000": "a", "calls/2001": "b"}
    assert await store.load_meta("calls%") == {"calls%": "e"}  # no LIKE wildcards
    assert await store.load_meta("nothing/") == {}


async def test_revoked_token_ids(store: Store) -> None:
    from astpresence.web.auth import Role, new_token

    now = datetime.now(timezone.utc)
    records = [new_token(Role.USER, str(2000 + i), "t", now)[1] for i in range(3)]
    for record in records:
        await store.add_token(record)
    assert await store.revoked_tokens() == set()
    assert await store.revoke_token(records[1].id, now)
    assert await store.revoked_tokens() == {records[1].id}


async def test_a_token_whose_id_is_taken_is_not_stored(store: Store) -> None:
    from astpresence.web.auth import Role, new_token

    now = datetime.now(timezone.utc)
    first = new_token(Role.USER, "2000", "first", now)[1]
    clash = dataclasses.replace(new_token(Role.ADMIN, None, "clash", now)[1], id=first.id)
    assert await store.add_token(first)
    assert not await store.add_token(clash)
    assert await store.list_tokens() == [first]  # the first one stands, untouched


async def test_issuing_a_token_draws_again_while_its_id_is_taken(
        store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    from astpresence.web import auth

    now = datetime.now(timezone.utc)
    ids = iter(["0000000a", "0000000a", "0000000a", "0000000b"])
    monkeypatch.setattr(auth.secrets, "token_hex", lambda n: next(ids))
    _, first = await auth.issue_token(store, auth.Role.USER, "2000", "one", now)
    secret, second = await auth.issue_token(store, auth.Role.USER, "2001", "two", now)
    assert (first.id, second.id) == ("0000000a", "0000000b")
    assert secret.startswith("astp_0000000b_")
    assert await store.find_token(auth.hash_token(secret)) == second
    monkeypatch.setattr(auth.secrets, "token_hex", lambda n: "0000000a")
    with pytest.raises(StoreError, match="no free token id in 5 draws"):
        await auth.issue_token(store, auth.Role.USER, "2002", "three", now)


async def test_empty_batch_is_a_no_op(store: Store) -> None:
    assert await store.commit(Batch()) == []
    assert await store.commit(Batch(history=[hist("alice", NOT_SET)])) == [1]


ANY_TEXT = st.text(st.characters(exclude_categories=["Cs"]), max_size=30)
ANY_DATETIME = st.datetimes(
    min_value=datetime(1990, 1, 1), max_value=datetime(2100, 1, 1)
).flatmap(
    lambda naive: st.integers(-14 * 60, 14 * 60).map(
        lambda minutes: naive.replace(tzinfo=timezone(timedelta(minutes=minutes)))
    )
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    user=ANY_TEXT,
    text=ANY_TEXT,
    state=st.sampled_from(State),
    at=ANY_DATETIME,
    window=st.none() | ANY_DATETIME,
)
async def test_any_value_round_trips(
    store: Store, user: str, text: str, state: State, at: datetime, window: datetime | None
) -> None:
    # The store is shared by the examples: each one overwrites the same keys.
    # PostgreSQL text cannot hold NUL (see test_postgres_keeps_nul_as_replacement).
    assume(not isinstance(store, PostgresStore) or "\x00" not in user + text)
    presence = Presence(state, text, text)
    source = SourceRecord(user, "p", presence, at, text, window, window)
    effective = EffectiveRecord(user, presence, text, text, at)
    entry = HistoryEntry(at, user, presence, presence, text, text, text)
    await store.save_users([UserRecord("p", text, text, text, (text, user), text)])
    await store.commit(
        Batch(
            delete_sources=[(s.user, s.source) for s in await store.load_sources()],
            put_sources=[source],
            put_effective=[effective],
            put_asterisk=[(N, "p", presence)],
            history=[entry],
            meta={"p": text},
        )
    )
    assert await store.load_users() == [UserRecord("p", text, text, text, (text, user), text)]
    assert await store.load_sources() == [source]
    assert effective in await store.load_effective()
    assert (await store.load_asterisk())["p"] == presence
    (got,) = await store.history(user, limit=1)
    assert got == HistoryEntry(at, user, presence, presence, text, text, text, id=got.id)
    assert await store.get_meta("p") == text


# -- history paging ---------------------------------------------------------


async def test_history_newest_first_and_limit(store: Store) -> None:
    ids: dict[str, list[int]] = {"alice": [], "bob": []}
    for i in range(10):
        # Interleave users and batch sizes; give "at" no say in the order.
        batch = Batch(
            history=[
                hist("alice", Presence(State.AWAY, message=f"a{i}"), at=T0 - timedelta(minutes=i)),
                hist("bob", Presence(State.DND, message=f"b{i}")),
            ][: 1 + i % 2]
        )
        new_ids = await store.commit(batch)
        for entry, new_id in zip(batch.history, new_ids):
            ids[entry.user].append(new_id)

    all_ids = ids["alice"] + ids["bob"]
    assert sorted(all_ids) == list(range(1, len(all_ids) + 1))

    alice = await store.history("alice", limit=100)
    assert [e.id for e in alice] == ids["alice"][::-1]
    assert [e.new.message for e in alice] == [f"a{i}" for i in reversed(range(10))]
    assert [e.id for e in await store.history("bob")] == ids["bob"][::-1]

    assert [e.id for e in await store.history("alice", limit=3)] == ids["alice"][::-1][:3]
    assert await store.history("nobody") == []


@pytest.mark.parametrize("limit", [0, -1])
async def test_history_limit_below_one_is_refused(store: Store, limit: int) -> None:
    with pytest.raises(ValueError, match="limit"):
        await store.history("alice", limit=limit)


# -- atomicity and concurrency ----------------------------------------------


async def seed(store: Store) -> None:
    await store.commit(
        Batch(
            put_sources=[src("alice"), src("bob")],
            put_effective=[eff("alice"), eff("bob")],
            put_asterisk=[(N, "alice", Presence(State.AWAY))],
            history=[hist("alice", Presence(State.AWAY)), hist("bob", Presence(State.AWAY))],
            meta={"k1": "original"},
        )
    )


async def test_batch_with_a_bad_history_row_leaves_nothing(store: Store) -> None:
    """A naive datetime in the last part written fails the whole batch.

    In SQLite the history rows are converted inside the transaction, after the
    deletes and puts ran, so this goes through the real ROLLBACK.
    """
    await seed(store)
    before = await snapshot(store)
    naive = datetime(2024, 5, 1, 12, 0)
    bad = full_batch([hist("carol", Presence(State.DND)), hist("carol", NOT_SET, at=naive)])
    with pytest.raises(ValueError, match="naive"):
        await store.commit(bad)
    assert await snapshot(store) == before
    # The failed batch consumed no ids and left no transaction open.
    assert await store.commit(Batch(history=[hist("carol", NOT_SET)])) == [3]


@pytest.mark.parametrize("field", ["since", "start", "end"])
async def test_naive_datetime_in_a_source_is_refused(store: Store, field: str) -> None:
    naive = datetime(2024, 1, 1)
    good = src("alice")
    bad = {
        "since": dataclasses.replace(good, since=naive),
        "start": dataclasses.replace(good, start=naive),
        "end": dataclasses.replace(good, end=naive),
    }[field]
    with pytest.raises(ValueError, match="naive"):
        await store.commit(Batch(put_sources=[bad]))
    assert await store.load_sources() == []


async def test_concurrent_commits_get_distinct_consecutive_ids(store: Store) -> None:
    async def one(i: int) -> list[int]:
        return await store.commit(
            Batch(
                put_effective=[eff(f"u{i:02d}")],
                history=[hist(f"u{i:02d}", NOT_SET), hist(f"u{i:02d}", Presence(State.AWAY))],
            )
        )

    results = await asyncio.gather(*(one(i) for i in range(20)))
    for ids in results:
        assert ids == [ids[0], ids[0] + 1]
    assert sorted(i for ids in results for i in ids) == list(range(1, 41))
    assert len(await store.load_effective()) == 20
    for i, ids in enumerate(results):
        assert [e.id for e in await store.history(f"u{i:02d}")] == ids[::-1]


CANCEL_POINTS = [*range(6), 0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.03]


@pytest.mark.parametrize("when", CANCEL_POINTS)
async def test_cancelled_commit_is_all_or_nothing(store: Store, when: float) -> None:
    """Cancel after ``when`` trips round the event loop (int) or seconds (float).

    The points span the whole commit in SQLite: before BEGIN, between
    statements, during COMMIT and after it returned.
    """
    await seed(store)
    before = await snapshot(store)
    batch = full_batch([hist("carol", Presence(State.DND)), hist("carol", NOT_SET)])
    task = asyncio.create_task(store.commit(batch))
    if isinstance(when, float):
        await asyncio.sleep(when)
    else:
        for _ in range(when):
            await asyncio.sleep(0)
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        pass
    after = await snapshot(store)
    if after != before:  # then all of it
        assert len(await store.history("carol")) == 2
        assert await store.get_meta("k2") == "new"
        assert [s.user for s in await store.load_sources()] == ["bob", "carol"]
    # No transaction left open, no id consumed by half a batch.
    ids = await store.commit(Batch(history=[hist("bob", NOT_SET)]))
    assert ids[0] in (3, 5)


# -- lifecycle --------------------------------------------------------------


async def test_data_survives_reopen(reopen: Factory) -> None:
    first = reopen()
    await first.open()
    await first.save_users([UserRecord("alice", "Älice", devices=("PJSIP/1",))])
    await seed(first)
    before = await snapshot(first)
    await first.close()

    second = reopen()
    await second.open()
    try:
        assert await snapshot(second) == before
        assert await second.commit(Batch(history=[hist("alice", NOT_SET)])) == [3]
    finally:
        await second.close()


async def test_closed_store_raises_store_error(reopen: Factory) -> None:
    s = reopen()
    with pytest.raises(StoreError, match="not open"):
        await s.load_users()
    await s.open()
    await s.open()  # idempotent
    await s.close()
    await s.close()  # idempotent
    with pytest.raises(StoreError, match="not open"):
        await s.commit(Batch(meta={"k": "v"}))
    with pytest.raises(StoreError, match="not open"):
        await s.history("alice")


# -- PostgreSQL only ------------------------------------------------------------


async def test_postgres_keeps_nul_as_replacement(postgres_url: str) -> None:
    store = PostgresStore(postgres_url)
    await store.open()
    try:
        ids = await store.commit(Batch(history=[hist("a\x00b", NOT_SET)],
                                       meta={"k\x00": "v\x00"}))
        (entry,) = await store.history("a\x00b")  # found by the same (cleaned) name
        assert entry.id == ids[0] and entry.user == "a\ufffdb"
        assert await store.get_meta("k\x00") == "v\ufffd"
    finally:
        await store.close()


async def test_postgres_survives_a_server_restart(postgres_server: object,
                                                  postgres_url: str) -> None:
    """Acknowledged batches survive PostgreSQL restarting, and the store goes on
    (the pool replaces the connections the restart closed)."""
    from tests.support.postgres import PostgresServer
    assert isinstance(postgres_server, PostgresServer)
    store = PostgresStore(postgres_url)
    await store.open()
    try:
        await seed(store)
        before = await snapshot(store)
        await asyncio.to_thread(postgres_server.restart)
        assert await snapshot(store) == before
        assert await store.commit(Batch(history=[hist("bob", NOT_SET)])) == [3]
    finally:
        await store.close()


async def test_postgres_unreachable_or_newer_schema(postgres_url: str) -> None:
    with pytest.raises(StoreError, match="cannot connect to PostgreSQL at postgresql://"
                                         "postgres:\\*\\*\\*@127.0.0.1"):
        await PostgresStore("postgresql://postgres:hunter2@127.0.0.1:1/x").open()
    store = PostgresStore(postgres_url)
    await store.open()
    await store.close()
    import asyncpg
    conn = await asyncpg.connect(postgres_url)
    await conn.execute("UPDATE astpresence_schema SET version = 99")
    await conn.close()
    with pytest.raises(StoreError, match="schema version 99 is newer"):
        await PostgresStore(postgres_url).open()


# -- SQLite only: pragmas, migrations, errors, durability ---------------------


async def test_sqlite_pragmas(sqlite_store: SqliteStore, db_path: Path) -> None:
    with closing(sqlite3.connect(db_path)) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    db = sqlite_store._db  # per-connection settings can only be read on it
    assert db is not None
    for pragma, expected in [("synchronous", 2), ("foreign_keys", 1), ("busy_timeout", 5000)]:
        rows = list(await db.execute_fetchall(f"PRAGMA {pragma}"))
        assert rows[0][0] == expected, pragma


async def test_sqlite_history_lookup_uses_the_index(sqlite_store: SqliteStore) -> None:
    db = sqlite_store._db
    assert db is not None
    plan = await db.execute_fetchall(
        "EXPLAIN QUERY PLAN SELECT * FROM history WHERE user = ? AND id < ? ORDER BY id DESC LIMIT 5",
        ("alice", 10),
    )
    text = " ".join(str(row[-1]) for row in plan)
    assert "history_user_id" in text and "TEMP B-TREE" not in text


async def test_sqlite_rejected_row_rolls_back_the_whole_batch(
    sqlite_store: SqliteStore, db_path: Path
) -> None:
    """SQLite itself refuses the last history row (an injected trigger)."""
    await seed(sqlite_store)
    before = await snapshot(sqlite_store)
    with closing(sqlite3.connect(db_path)) as conn:
        conn.execute(
            "CREATE TRIGGER reject_boom BEFORE INSERT ON history WHEN NEW.reason = 'boom' "
            "BEGIN SELECT RAISE(ABORT, 'injected failure'); END"
        )
        conn.commit()
    bad = full_batch([hist("carol", Presence(State.DND)), hist("carol", NOT_SET, reason="boom")])
    with pytest.raises(StoreError, match="injected failure") as info:
        await sqlite_store.commit(bad)
    assert str(db_path) in str(info.value)
    assert await snapshot(sqlite_store) == before
    assert await sqlite_store.commit(Batch(history=[hist("carol", NOT_SET)])) == [3]


async def test_sqlite_schema_version_is_recorded(db_path: Path) -> None:
    s = SqliteStore(db_path)
    await s.open()
    await s.close()
    assert user_version(db_path) == len(sqlite_mod.MIGRATIONS) >= 1


async def test_sqlite_migrations_apply_missing_steps_once(
    db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    old = SqliteStore(db_path)  # what the previous release left
    await old.open()
    await seed(old)
    await old.close()
    base = len(sqlite_mod.MIGRATIONS)

    calls: list[int] = []

    async def fill_probe(db: object) -> None:
        calls.append(1)
        await db.execute("INSERT INTO probe (x) VALUES ('from a function step')")  # type: ignore[attr-defined]

    # A plain CREATE TABLE fails if run twice: the reopens below prove it is not.
    monkeypatch.setattr(
        sqlite_mod, "MIGRATIONS", [*sqlite_mod.MIGRATIONS, ("CREATE TABLE probe (x TEXT)",), fill_probe]
    )
    for _ in range(3):
        s = SqliteStore(db_path)
        await s.open()
        assert len(await s.history("alice")) == 1  # old data untouched
        await s.close()
    assert calls == [1]
    assert user_version(db_path) == base + 2
    with closing(sqlite3.connect(db_path)) as conn:
        assert conn.execute("SELECT x FROM probe").fetchall() == [("from a function step",)]


async def test_sqlite_failed_migration_changes_nothing(
    db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    s = SqliteStore(db_path)
    await s.open()
    await s.close()
    base = len(sqlite_mod.MIGRATIONS)
    with monkeypatch.context() as m:
        m.setattr(
            sqlite_mod,
            "MIGRATIONS",
            [*sqlite_mod.MIGRATIONS, ("CREATE TABLE probe (x)", "INSERT INTO no_such_table VALUES (1)")],
        )
        with pytest.raises(StoreError, match="no_such_table") as info:
            await SqliteStore(db_path).open()
        assert str(db_path) in str(info.value)
    assert user_version(db_path) == base
    with closing(sqlite3.connect(db_path)) as conn:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert "probe" not in tables and "history" in tables
    s = SqliteStore(db_path)
    await s.open()
    await s.close()


async def test_sqlite_newer_schema_is_refused(db_path: Path) -> None:
    s = SqliteStore(db_path)
    await s.open()
    await s.close()
    known = len(sqlite_mod.MIGRATIONS)
    with closing(sqlite3.connect(db_path)) as conn:
        conn.execute(f"PRAGMA user_version = {known + 1}")
    with pytest.raises(StoreError) as info:
        await SqliteStore(db_path).open()
    assert str(info.value) == (
        f"database schema version {known + 1} is newer than this astpresence supports ({known})"
    )
    assert user_version(db_path) == known + 1


async def test_sqlite_file_that_is_not_a_database(db_path: Path) -> None:
    db_path.write_bytes(b"this is a text file, not an SQLite database\n" * 100)
    with pytest.raises(StoreError, match="not a database") as info:
        await SqliteStore(db_path).open()
    assert str(db_path) in str(info.value)
    assert info.value.__cause__ is not None  # details kept for a debug log


@pytest.mark.parametrize("layout", ["parent_is_a_file", "parent_missing", "path_is_a_directory"])
async def test_sqlite_unopenable_path(tmp_path: Path, layout: str) -> None:
    if layout == "parent_is_a_file":
        (tmp_path / "plain").write_text("x")
        path = tmp_path / "plain" / "presence.db"
    elif layout == "parent_missing":
        path = tmp_path / "missing" / "presence.db"
    else:
        path = tmp_path / "presence.db"
        path.mkdir()
    with pytest.raises(StoreError, match="cannot open database") as info:
        await SqliteStore(path).open()
    assert str(path) in str(info.value)


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root ignores permissions")
@pytest.mark.parametrize("what", ["directory", "file"])
async def test_sqlite_write_protected(tmp_path: Path, what: str) -> None:
    folder = tmp_path / "ro"
    folder.mkdir()
    path = folder / "presence.db"
    if what == "file":
        s = SqliteStore(path)
        await s.open()
        await s.close()
        path.chmod(0o444)
    else:
        folder.chmod(0o555)
    try:
        with pytest.raises(StoreError) as info:
            await SqliteStore(path).open()
        assert str(path) in str(info.value)
    finally:
        folder.chmod(0o755)
        if path.exists():
            path.chmod(0o644)


CHILD = textwrap.dedent(
    """
    import asyncio, sys
    from datetime import datetime, timezone
    from astpresence.domain.model import Presence, State
    from astpresence.domain.records import EffectiveRecord, HistoryEntry
    from astpresence.store.base import Batch
    from astpresence.store.sqlite import SqliteStore

    def batch(user, i):
        now = datetime.now(timezone.utc)
        p = Presence(State.AWAY, "", f"n{i}")
        return Batch(
            put_effective=[EffectiveRecord(user, p, "manual", f"n{i}", now)],
            history=[HistoryEntry(now, user, None, p, "manual", "test", f"n{i}")],
            meta={"last": f"n{i}"},
        )

    async def main(path, mode):
        store = SqliteStore(path)
        await store.open()
        ids = await store.commit(batch("alice", 0))
        print("committed", ids[0], flush=True)
        if mode == "block":
            await asyncio.Event().wait()
        i = 0
        while True:  # keep committing so the kill lands in or between transactions
            i += 1
            await store.commit(batch("bob", i))

    asyncio.run(main(sys.argv[1], sys.argv[2]))
    """
)


@pytest.mark.parametrize("mode", ["block", "churn"])
async def test_sqlite_committed_batch_survives_kill_9(db_path: Path, mode: str) -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    with subprocess.Popen(
        [sys.executable, "-c", CHILD, str(db_path), mode],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env=env,
    ) as proc:
        assert proc.stdout is not None and proc.stderr is not None
        try:
            line = await asyncio.wait_for(asyncio.to_thread(proc.stdout.readline), 30)
            if mode == "churn":
                await asyncio.sleep(0.3)
        finally:
            proc.send_signal(signal.SIGKILL)
            _, err = await asyncio.to_thread(proc.communicate)
        assert line.split() == ["committed", "1"], err
        assert proc.returncode == -signal.SIGKILL

    s = SqliteStore(db_path)
    await s.open()
    try:
        (alice,) = await s.history("alice")
        assert (alice.id, alice.new.message) == (1, "n0")
        assert [e.user for e in await s.load_effective()][:1] == ["alice"]
        bob = await s.history("bob", limit=1)
        if mode == "churn":
            assert bob, "the child should have committed more batches in 0.3 s"
            # Every batch was all-or-nothing: bob's effective, his newest
            # history row and meta all come from the same last batch.
            (bob_effective,) = [e for e in await s.load_effective() if e.user == "bob"]
            assert bob_effective.reason == bob[0].reason == await s.get_meta("last")
        else:
            assert bob == []
    finally:
        await s.close()
    with closing(sqlite3.connect(db_path)) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


async def check_migrated_asterisk(s: Store) -> None:
    """The row the old schema held is the default server's; other servers have theirs."""
    await s.open()
    try:
        assert await s.load_asterisk() == {"alice": Presence(State.AWAY, "lunch", "back at 2")}
        await s.commit(Batch(put_asterisk=[("b", "alice", NOT_SET)]))
        assert await s.load_asterisk("b") == {"alice": NOT_SET}
    finally:
        await s.close()


async def test_sqlite_v2_asterisk_rows_become_the_default_nodes(
    db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with monkeypatch.context() as m:
        m.setattr(sqlite_mod, "MIGRATIONS", sqlite_mod.MIGRATIONS[:2])
        old = SqliteStore(db_path)
        await old.open()
        await old.close()
    with closing(sqlite3.connect(db_path)) as conn:
        conn.execute("INSERT INTO asterisk (user, state, subtype, message) "
                     "VALUES ('alice', 'away', 'lunch', 'back at 2')")
        conn.commit()
    await check_migrated_asterisk(SqliteStore(db_path))


async def test_postgres_v1_asterisk_rows_become_the_default_nodes(
    postgres_server: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    from astpresence.store import postgres as pg_mod
    from tests.support.postgres import PostgresServer
    assert isinstance(postgres_server, PostgresServer)
    url = postgres_server.create_database()
    with monkeypatch.context() as m:
        m.setattr(pg_mod, "MIGRATIONS", pg_mod.MIGRATIONS[:1])
        old = PostgresStore(url)
        await old.open()
        await old.close()
    import asyncpg
    conn = await asyncpg.connect(url)
    try:
        await conn.execute("""INSERT INTO asterisk ("user", state, subtype, message) """
                           "VALUES ('alice', 'away', 'lunch', 'back at 2')")
    finally:
        await conn.close()
    await check_migrated_asterisk(PostgresStore(url))


async def test_history_retention_by_age_and_rows(store: Store) -> None:
    """prune_history: older than the cut-off, and all but each user's newest rows, go;
    the newest row of all stays even when it is old (ids are never reused)."""
    day = timedelta(days=1)
    batch = Batch(history=[hist("2000", Presence(State.AWAY), at=T0 + i * day) for i in range(10)]
                  + [hist("2001", Presence(State.DND), at=T0 + i * day) for i in range(3)])
    await store.commit(batch)
    gone = await store.prune_history(T0 + 2 * day, keep_rows=5)
    # 2000: days 0-4 too many rows (days 0,1 also too old); 2001: days 0,1 too old
    assert gone == 7
    assert [h.at for h in await store.history("2000", 50)] == [T0 + i * day
                                                               for i in range(9, 4, -1)]
    assert [h.at for h in await store.history("2001", 50)] == [T0 + 2 * day]
    # everything is old: only the newest row of all stays, and the next id follows it
    newest = (await store.history("2001", 1))[0].id  # 2001's rows were stored last
    assert await store.prune_history(T0 + 100 * day, keep_rows=5) == 5
    assert await store.history("2000", 50) == []
    assert [h.id for h in await store.history("2001", 50)] == [newest]
    ids = await store.commit(Batch(history=[hist("2001", Presence(State.XA), at=T0)]))
    assert ids == [newest + 1]
