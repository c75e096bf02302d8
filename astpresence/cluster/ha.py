"""An HA group of daemons on one PostgreSQL database: exactly one leader.

The leader holds a PostgreSQL session-level advisory lock on a connection of
its own. Only the leader decides and talks to Asterisk (all writes); the
others are followers: they serve the API from the leader's committed changes
and hand their writes to it (relay.py), and try for the lock every half
second. PostgreSQL releases the lock when the leader's session ends (the
process killed, its connection closed), and a follower takes over: it loads
the state from the database and resyncs from Asterisk (nothing is assumed
after a takeover).

The leader checks its lock connection every second. When that check fails it
stops writing to Asterisk at once and the daemon exits (a supervisor starts it
again, as a follower): a leader that cannot reach the database must never keep
writing while another one may take the lock.
"""

from __future__ import annotations

import asyncio
import json
import logging
from datetime import UTC, datetime
from typing import Any

import asyncpg

logger = logging.getLogger(__name__)

#: pg_try_advisory_lock key of the leader ("astl" in ASCII).
LEADER_LOCK = 0x6173746C
RETRY = 0.5
HEARTBEAT = 1.0
HEARTBEAT_TIMEOUT = 2.0
#: A node not seen for this long is left out of the group.
GONE_AFTER = 30.0
#: How PostgreSQL watches the lock connection's socket (a session may set these
#: for its own socket): probes after 3 s of silence, 1 s apart, 2 unanswered
#: ones end it, and so does data unacknowledged for 5 s (tcp_user_timeout,
#: PostgreSQL 12+). A leader cut off by the network loses its lock about 5 s
#: after its last packet, instead of after the kernel's default of two hours.
#: Never sooner than it stops writing itself: its heartbeat gives up at most
#: HEARTBEAT + HEARTBEAT_TIMEOUT = 3 s after the last answer, so there are 2 s
#: to spare and never two writers. A busy leader still answers the probes: its
#: kernel does, not its event loop.
KEEPALIVES = {"tcp_keepalives_idle": "3", "tcp_keepalives_interval": "1",
              "tcp_keepalives_count": "2", "tcp_user_timeout": "5000"}


class Leadership:
    """Who leads; :meth:`acquire` waits to lead, :meth:`hold` returns when it stops."""

    def __init__(self, url: str, node: str, api: str = "") -> None:
        self._url = url
        self.node = node
        self.api = api
        self.role = "follower"
        self.since = datetime.now(UTC)
        self.leader: dict[str, Any] | None = None
        self.group: list[dict[str, Any]] = []
        self._conn: asyncpg.Connection | None = None
        self.takeovers = 0

    async def _connect(self) -> asyncpg.Connection:
        if self._conn is None or self._conn.is_closed():
            self._conn = await asyncpg.connect(
                self._url, timeout=5, command_timeout=5,
                server_settings={"application_name": "astpresence-ha", **KEEPALIVES})
        return self._conn

    async def acquire(self, stop: asyncio.Event) -> bool:
        """Wait until this node holds the lock (True) or ``stop`` is set (False)."""
        waiting_logged = False
        while not stop.is_set():
            try:
                conn = await self._connect()
                if await conn.fetchval("SELECT pg_try_advisory_lock($1)", LEADER_LOCK):
                    self.since = datetime.now(UTC)
                    # The group is told first: this node says "leader" only
                    # once acquire() returns and the daemon takes over.
                    await self._note(conn, role="leader")
                    self.role = "leader"
                    self.takeovers += 1
                    logger.info("this node (%s) is the leader now", self.node)
                    return True
                await self._note(conn)
                if not waiting_logged:
                    who = self.leader["node"] if self.leader else "another node"
                    logger.info("following: %s is the leader; taking over when it stops", who)
                    waiting_logged = True
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError,
                    TimeoutError) as exc:
                logger.warning("follower: the database is unreachable (%s); retrying", exc)
                await self._drop()
            try:
                await asyncio.wait_for(stop.wait(), RETRY)
            except TimeoutError:
                pass
        return False

    async def hold(self, stop: asyncio.Event) -> str | None:
        """While leading: check the lock connection every second. Returns None when
        ``stop`` is set, or why leadership is lost."""
        while not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), HEARTBEAT)
                return None
            except TimeoutError:
                pass
            try:
                conn = await self._connect_existing()
                async with asyncio.timeout(HEARTBEAT_TIMEOUT):
                    await self._note(conn)
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError,
                    TimeoutError) as exc:
                self.role = "follower"
                await self._drop()
                return f"the leader's database connection failed ({str(exc) or 'timed out'})"
        return None

    async def _connect_existing(self) -> asyncpg.Connection:
        if self._conn is None or self._conn.is_closed():
            raise asyncpg.InterfaceError("the lock connection is closed")
        return self._conn

    async def _note(self, conn: asyncpg.Connection, role: str | None = None) -> None:
        """This node's row in the group, and who leads (rows in the meta table)."""
        now = datetime.now(UTC)
        me = {"node": self.node, "api": self.api, "role": role or self.role,
              "since": self.since.isoformat(), "seen": now.isoformat()}
        await conn.execute("INSERT INTO meta (key, value) VALUES ($1, $2) ON CONFLICT (key) "
                           "DO UPDATE SET value = excluded.value", f"ha_node:{self.node}",
                           json.dumps(me))
        rows = await conn.fetch("SELECT value FROM meta WHERE key LIKE 'ha_node:%'")
        group = []
        for row in rows:
            try:
                info = json.loads(row[0])
                seen = datetime.fromisoformat(info["seen"])
            except (ValueError, KeyError, TypeError):
                continue
            if (now - seen).total_seconds() <= GONE_AFTER:
                group.append(info)
        self.group = sorted(group, key=lambda n: n.get("node", ""))
        # A leader that died leaves its row behind: only one seen lately counts
        # (a few heartbeats: a busy leader may be late).
        live = [n for n in self.group if n.get("role") == "leader"
                and (now - datetime.fromisoformat(n["seen"])).total_seconds()
                <= 5 * HEARTBEAT]
        self.leader = max(live, key=lambda n: str(n.get("since", "")), default=None)

    async def release(self) -> None:
        if self._conn is not None and not self._conn.is_closed():
            try:
                self.role = "follower"
                await self._note(self._conn)
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError):
                pass
        await self._drop()

    async def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                await asyncio.wait_for(conn.close(), 2)
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError):
                conn.terminate()

    def status_json(self) -> dict[str, Any]:
        return {"role": self.role, "node": self.node, "since": self.since.isoformat(),
                "leader": self.leader, "group": self.group, "takeovers": self.takeovers}
