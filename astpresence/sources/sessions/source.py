"""The ``sessions`` source at work: the leader's sessions in memory, and each person's
contribution kept in line with them (model.py says what they give).

Sessions live in memory only: after a restart or a takeover, a client whose
session is unknown opens a new one (its report answers 404) and carries on. The
number of sessions is bounded per person and in all; opening one past a
person's limit closes their stalest.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from dataclasses import replace
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta
from typing import Any

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from astpresence.domain.device_rules import is_registered
from astpresence.domain.model import InvalidInput
from astpresence.domain.records import SourceRecord
from astpresence.engine.service import PresenceService, utcnow
from astpresence.engine.aligning import align
from astpresence.engine.timers import DueTimes, woken_within
from astpresence.sources.sessions.model import (
    Activity,
    Kind,
    Session,
    SessionRules,
    next_change,
    presence_from,
)

logger = logging.getLogger(__name__)

SOURCE = "sessions"
#: Sessions one person may have open, and in all.
MAX_PER_USER = 16
MAX_SESSIONS = 100_000
#: The longest the timer waits without a reason (a clock jump is caught by then).
TICK = 30.0


class UnknownSession(LookupError):
    """No such session of this user (expired, closed, or from before a restart)."""


class SessionSource:
    def __init__(self, rules: SessionRules, service: PresenceService, *,
                 clock: Callable[[], datetime] = utcnow) -> None:
        self.rules = rules
        self.service = service
        self._clock = clock
        self._sessions: dict[str, Session] = {}
        self._by_user: dict[str, dict[str, None]] = {}  # user -> session ids, oldest first
        self._due = DueTimes()  # user -> when to look again
        self._wake = asyncio.Event()

    def now(self) -> datetime:
        return self._clock()

    # -- what clients do --------------------------------------------------------

    async def open(self, uid: str, client: str, kind: Kind) -> Session:
        self.service.require_user(uid)
        mine = self._by_user.setdefault(uid, {})
        if len(mine) >= MAX_PER_USER:
            stalest = min(mine, key=lambda sid: self._sessions[sid].last_report)
            self._drop(stalest)
            logger.info("session of %s closed: the %d-session limit was reached", uid,
                        MAX_PER_USER)
        elif len(self._sessions) >= MAX_SESSIONS:
            raise InvalidInput(f"{MAX_SESSIONS} sessions are open, the most there may be")
        now = self._clock()
        session = Session(secrets.token_urlsafe(12), uid, client, kind, now, now,
                          last_active=now)
        self._sessions[session.id] = session
        self._by_user.setdefault(uid, {})[session.id] = None
        await self.apply(uid)
        return session

    async def report(self, uid: str, sid: str, activity: Activity, idle_seconds: float
                     ) -> Session:
        now = self._clock()
        session = await self._alive(uid, sid, now)
        self._sessions[sid] = updated = session.reported(activity, idle_seconds, now)
        due = self._due.get(uid)
        if (updated.activity, updated.idle_since) != (session.activity, session.idle_since) \
                or due is None or due <= now:
            await self.apply(uid)
        # else a heartbeat: nothing changes before the time already set, which then
        # looks again (no work per heartbeat but the report itself)
        return updated

    async def touch(self, uid: str, sid: str) -> Session:
        """Alive, nothing else to say (a stream's session while its socket is open)."""
        now = self._clock()
        session = await self._alive(uid, sid, now)
        self._sessions[sid] = touched = replace(session, last_report=now)
        return touched

    async def close(self, uid: str, sid: str) -> None:
        """Closed (logout, shutdown): it ends now, as if its last report had expired."""
        session = self._mine(uid, sid)
        if not session.alive(self._clock(), self.rules):
            raise UnknownSession(sid)
        self._sessions[sid] = replace(session, last_report=self._clock() - self.rules.expire_after)
        await self.apply(uid)

    def of(self, uid: str) -> list[Session]:
        return [self._sessions[sid] for sid in self._by_user.get(uid, {})]

    async def _alive(self, uid: str, sid: str, now: datetime) -> Session:
        """``uid``'s session ``sid`` if it is still alive; one that expired goes (and the
        person's contribution with it) and is :class:`UnknownSession`."""
        session = self._mine(uid, sid)
        if not session.alive(now, self.rules):
            self._drop(sid)
            await self.apply(uid)
            raise UnknownSession(sid)
        return session

    def _mine(self, uid: str, sid: str) -> Session:
        session = self._sessions.get(sid)
        if session is None or session.user != uid:
            raise UnknownSession(sid)
        return session

    def _drop(self, sid: str) -> None:
        session = self._sessions.pop(sid, None)
        if session is not None:
            self._by_user.get(session.user, {}).pop(sid, None)

    # -- the contribution -------------------------------------------------------

    def desired(self, uid: str, now: datetime) -> SourceRecord | None:
        found = presence_from(self.of(uid), now, self.rules,
                              is_registered(self.service.device_view(uid)))
        if found is None:
            return None
        presence, since = found
        return SourceRecord(uid, SOURCE, presence, now, SOURCE, since, None)

    async def apply(self, uid: str) -> None:
        """Bring the person's ``sessions`` contribution in line; forget sessions that
        ended long ago (an offline contribution stays without them)."""
        service = self.service
        if uid not in service.users:
            return
        now = self._clock()
        want = self.desired(uid, now)
        have = await align(service, uid, SOURCE, want,
                           lambda a, b: (a.presence, a.start) == (b.presence, b.start))
        if want is not None and (have is None or (have.presence, have.start)
                                 != (want.presence, want.start)):
            logger.info("sessions of %s: %s since %s", uid, want.presence.state.value,
                        want.start.isoformat() if want.start else "-")
        self._reschedule(uid, now)

    def _reschedule(self, uid: str, now: datetime) -> None:
        mine = self.of(uid)
        if mine and not any(s.alive(now, self.rules) for s in mine):
            # All ended: keep the last one (when they ended), and look again now and
            # then, since a phone registering or going ends "offline".
            last = max(mine, key=lambda s: s.last_report)
            for session in mine:
                if session is not last:
                    self._drop(session.id)
            self._set_due(uid, now + timedelta(seconds=TICK))
            return
        due = next_change(mine, now, self.rules)
        if due is None:
            self._due.drop(uid)
            if not mine:
                self._by_user.pop(uid, None)
        else:
            self._set_due(uid, due)

    def _set_due(self, uid: str, due: datetime) -> None:
        if self._due.set(uid, due):
            self._wake.set()  # earlier than anything the loop waits for

    async def run(self, stop: asyncio.Event) -> None:
        """Apply each person's contribution when a threshold or an expiry comes.

        A contribution stored by an earlier leader (or before a restart) has no
        session here: its clients get a 404 and open new ones within
        ``expire_after``; whatever is still without a session then goes."""
        start = self._clock() + self.rules.expire_after
        for uid in self.service.users.ids():
            if self.service.contributions.get(uid, SOURCE) is not None \
                    and self._due.get(uid) is None:
                self._due.set(uid, start)
        while not stop.is_set():
            for uid in self._due.pop_due(self._clock()):
                await self.apply(uid)
            nxt = self._due.next()
            wait = TICK if nxt is None else min(TICK, (nxt - self._clock()).total_seconds())
            await woken_within(self._wake, stop, wait)


    # -- status -----------------------------------------------------------------

    def status_json(self) -> dict[str, int]:
        counts = {a.value: 0 for a in Activity}
        for session in self._sessions.values():
            counts[session.activity.value] += 1
        return {"sessions": len(self._sessions), "users": len(self._by_user), **counts}

    def collectors(self) -> Iterable[Collector]:
        return [_Gauge(self.status_json)]


class _Gauge(Collector):
    def __init__(self, status: Callable[[], dict[str, int]]) -> None:
        self._status = status

    def collect(self) -> Iterable[Any]:
        family = GaugeMetricFamily("astpresence_sessions",
                                   "Client sessions open, by what they report", labels=["state"])
        for state, count in self._status().items():
            if state in {a.value for a in Activity}:
                family.add_metric([state], count)
        yield family
