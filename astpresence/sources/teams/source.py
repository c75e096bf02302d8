"""The Teams source at work (the leader of an HA group only): Teams -> astpresence by
batch reads and change notifications, astpresence -> Teams by outbound.py.

Teams' presence becomes the person's ``teams`` contribution, a timed entry
that starts when Teams changed (docs/presence-rules.md, "Teams"): a state the
person chose on the phone still wins, a call still shows, and a choice made
after Teams changed wins. A report that is only astpresence's own writes
coming back (outbound.py) is not adopted.

Reads: all mapped people every ``poll`` seconds while notifications are not
flowing, every ``resync`` seconds while they are; the people a notification
names, and those whose Teams presence astpresence just cleared, within a loop
turn, batched 650 a request. After a start or a takeover everything is read
before anything is assumed.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta
from typing import Any

from prometheus_client.registry import Collector

from astpresence.domain.model import InvalidInput
from astpresence.domain.records import SourceRecord
from astpresence.engine.aligning import align
from astpresence.engine.events import ChangeEvent
from astpresence.engine.service import PresenceService, utcnow
from astpresence.engine.timers import stopped_within, woken_or
from astpresence.sources.msgraph import RemoteError
from astpresence.sources.teams.directory import TeamsDirectory
from astpresence.sources.teams.graph import BATCH, TeamsGraph, missing
from astpresence.sources.teams.mapping import TeamsPresence, from_teams, parse_presence
from astpresence.sources.teams.metrics import TeamsCollector
from astpresence.sources.teams.outbound import Outbound
from astpresence.sources.teams.settings import TeamsSettings
from astpresence.sources.teams.subscriptions import Subscriptions

logger = logging.getLogger(__name__)

SOURCE = "teams"
#: A read for notified people waits this long for more to join it (one request a
#: loop turn, not one per notification).
READ_GATHER = 0.05
#: An unexpected failure of the source's tasks: started again this much later.
RESTART = 5.0
#: Ids waiting for a read, at most (notifications beyond it wait for the next full read).
MAX_PENDING = 20_000


class TeamsSource:
    def __init__(self, settings: TeamsSettings, service: PresenceService, *,
                 clock: Callable[[], datetime] = utcnow,
                 mono: Callable[[], float] = time.monotonic) -> None:
        self.settings = settings
        self.service = service
        self._clock = clock
        self._mono = mono
        self.graph = TeamsGraph(settings, clock=mono)
        self.directory = TeamsDirectory(settings.users)
        self.outbound = Outbound(settings, service, self.graph, self.directory, clock=clock,
                                 cleared=self._read_user_soon)
        self.subscriptions = Subscriptions(self.graph, settings.notification_url, clock)
        #: Each person's last Teams presence and when it began (as seen here).
        self.seen: dict[str, tuple[TeamsPresence, datetime]] = {}
        self._pending: dict[str, None] = {}  # object ids to read soon
        self._full_at: datetime | None = None  # next full read (None: now)
        self._wake = asyncio.Event()
        self.reads = 0
        self.running = False

    # -- lifecycle --------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        await self._forget_unmapped()
        if not self.settings.enabled:
            await stop.wait()
            return
        self.running = True
        logger.info("teams: %d people mapped, sync %s, %s", len(self.directory.refs),
                    self.settings.sync, "notifications" if self.settings.notification_url
                    else f"polling every {self.settings.poll:g} s")
        try:
            await self.outbound.load()
            while not stop.is_set():
                try:
                    await self._work(stop)
                except Exception:  # a bug, not Graph's trouble (that is handled inside)
                    logger.exception("teams: the link to Graph failed; again in %g s", RESTART)
                    await stopped_within(stop, RESTART)
        finally:
            self.running = False
            try:
                if self.subscriptions.live:  # a new leader makes its own
                    async with asyncio.timeout(10):
                        await self.subscriptions.close()
            except TimeoutError:
                logger.warning("teams: deleting the subscriptions timed out; they expire "
                               "by themselves within the hour")
            finally:
                await self.graph.close()

    async def _work(self, stop: asyncio.Event) -> None:
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(self._resolver(stop))
            if self.settings.writes:
                tasks.create_task(self.outbound.run(stop))
                tasks.create_task(self._follow(stop))
            if self.settings.reads:
                tasks.create_task(self._reader(stop))

    async def _forget_unmapped(self) -> None:
        """Teams entries of people Teams no longer reads for (unmapped, the source off
        or writing only) go: nothing would ever end them."""
        s = self.settings
        for uid in self.service.users.ids():
            record = self.service.contributions.get(uid, SOURCE)
            if record is not None and record.actor == SOURCE and \
                    not (s.enabled and s.reads and uid in self.directory.refs):
                await self.service.delete_source(uid, SOURCE, SOURCE)
                logger.info("teams: %s's Teams entry removed (no longer read from Teams)", uid)

    async def _resolver(self, stop: asyncio.Event) -> None:
        """Resolve the UPNs, and again now and then those that failed."""
        while not stop.is_set():
            await self.directory.resolve(self.graph)
            self.subscriptions.watch(self.directory.ids())
            self.outbound.mark_all()
            self._full_at = None
            self._wake.set()
            await stopped_within(stop,
                                 self.settings.resync if self.directory.unresolved else 86400.0)

    async def _follow(self, stop: asyncio.Event) -> None:
        """Every change of a mapped person's presence -> outbound looks at them."""
        while not stop.is_set():
            sub = self.service.events.subscribe()
            self.outbound.mark_all()  # first, and after a fall behind
            try:
                while not stop.is_set() and not sub.overflowed:
                    try:
                        event = sub.queue.get_nowait()
                    except asyncio.QueueEmpty:
                        event = await _next_or_stop(sub.queue, stop)
                        if event is None:
                            break
                    if isinstance(event, ChangeEvent):
                        self.outbound.mark(event.user)
            finally:
                self.service.events.unsubscribe(sub)

    # -- reading Teams -----------------------------------------------------------

    def _read_user_soon(self, uid: str) -> None:
        oid = self.directory.oid(uid)
        if oid is not None and self.settings.reads:
            self.read_soon([oid])

    def read_soon(self, oids: Iterable[str]) -> None:
        for oid in oids:
            if len(self._pending) >= MAX_PENDING:
                self._full_at = None  # too many: read everyone instead
                break
            self._pending[oid.lower()] = None
        self._wake.set()

    def read_all_soon(self) -> None:
        self._full_at = None
        self._wake.set()

    async def _reader(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            self._wake.clear()  # before the work: a wake during it comes round again
            if self.settings.notification_url and self.directory.ids():
                await self.subscriptions.tick()
            now = self._clock()
            if self._full_at is None or now >= self._full_at:
                self._pending.clear()
                every = self.settings.resync if self.subscriptions.alive else self.settings.poll
                self._full_at = now + timedelta(seconds=every)
                await self.read(self.directory.ids())
            elif self._pending:
                if len(self._pending) < BATCH:  # a moment for more to join this request
                    await stopped_within(stop, READ_GATHER)
                ids = list(self._pending)
                self._pending.clear()
                await self.read(ids)
            if self._pending:
                continue
            await woken_or(self._wake, stop, self._wait())

    def _wait(self) -> float:
        now = self._clock()
        times = [t for t in (self._full_at, self.subscriptions.next_due()) if t is not None]
        return max(0.0, min((t - now).total_seconds() for t in times)) if times else 60.0

    async def read(self, oids: list[str]) -> None:
        """Read ``oids`` (batched) and adopt what Teams says."""
        for start in range(0, len(oids), BATCH):
            try:
                items = await self.graph.presences(oids[start:start + BATCH])
            except RemoteError as exc:
                logger.warning("teams: reading presence failed: %s", exc)
                self._full_at = min(self._full_at or self._clock(),
                                    self._clock() + timedelta(seconds=self.settings.poll))
                return
            self.reads += 1
            for item in items:
                try:
                    oid, reported = parse_presence(item)
                except InvalidInput:
                    continue  # one bad item spoils nothing else
                try:
                    await self.adopt(oid, reported)
                except (InvalidInput, LookupError) as exc:  # a full user, a user gone
                    logger.warning("teams: %s's Teams presence not taken: %s",
                                   self.directory.uid(oid), exc)

    async def adopt(self, oid: str, reported: TeamsPresence) -> None:
        uid = self.directory.uid(oid)
        if uid is None or uid not in self.service.users:
            return
        now = self._clock()
        before = self.seen.get(uid)
        began = before[1] if before is not None and before[0] == reported else now
        self.seen[uid] = (reported, began)
        if self.outbound.echo(uid, reported):
            return
        presence = from_teams(reported, self.settings.from_teams)
        want = None if presence is None else SourceRecord(uid, SOURCE, presence, now, SOURCE,
                                                         began, None)
        have = await align(self.service, uid, SOURCE, want,
                           lambda a, b: (a.presence, a.start) == (b.presence, b.start))
        if want is not None and (have is None or have.presence != want.presence):
            logger.info("teams: %s is %s/%s in Teams", uid, reported.availability,
                        reported.activity)

    # -- notifications (web.py, through the leader's command) --------------------

    async def notified(self, items: list[Any]) -> dict[str, int]:
        accepted = 0
        for item in items[:1000]:
            if not isinstance(item, dict) or not self.subscriptions.known(item):
                continue
            accepted += 1
            event = item.get("lifecycleEvent")
            if isinstance(event, str):
                if await self.subscriptions.lifecycle(event, str(item.get("subscriptionId"))):
                    self.read_all_soon()
                continue
            oid = _notified_id(item)
            if oid is not None and self.directory.uid(oid) is not None:
                self.read_soon([oid])
        return {"accepted": accepted, "ignored": min(len(items), 1000) - accepted}

    # -- status -------------------------------------------------------------------

    def status_json(self) -> dict[str, Any]:
        s, stats = self.settings, self.graph.stats
        if not s.enabled:
            return {"enabled": False}
        return {"enabled": True, "running": self.running, "sync": s.sync,
                "token": {None: "not asked yet", True: "ok", False: "failing"}[stats.token_ok],
                "users_mapped": len(self.directory.refs),
                "users_resolved": len(self.directory.ids()),
                "polling": not self.subscriptions.alive,
                "reads": self.reads,
                "requests": dict(stats.requests), "requests_last_minute":
                    stats.per_minute(self._mono()),
                "throttled": stats.throttled, "failures": sum(stats.failures.values()),
                "last_error": stats.last_error,
                "granted": sorted(stats.roles) if stats.roles is not None else None,
                "missing_permissions": missing(s, stats),
                **self.subscriptions.status_json(), **self.outbound.status_json()}

    def map_json(self) -> list[dict[str, Any]]:
        rows = self.directory.rows()
        for row in rows:
            if row["user"] not in self.service.users and not row["error"]:
                row["error"] = "no such astpresence user (no hint, not in [[users]])"
            seen = self.seen.get(row["user"])
            row["availability"] = seen[0].availability if seen else None
            row["activity"] = seen[0].activity if seen else None
        return rows

    def collectors(self) -> Iterable[Collector]:
        return [TeamsCollector(self)] if self.settings.enabled else []


_RESOURCE = re.compile(r"communications/presences\('([^')]{1,64})'\)")


def _notified_id(item: dict[str, Any]) -> str | None:
    """Whose presence a notification is about: ``resourceData.id``, else the id in
    ``resource`` (``communications/presences('<id>')``)."""
    data = item.get("resourceData")
    oid = data.get("id") if isinstance(data, dict) else None
    if isinstance(oid, str) and 0 < len(oid) <= 64:
        return oid
    found = _RESOURCE.search(str(item.get("resource", ""))[:200])
    return found.group(1) if found else None


async def _next_or_stop(queue: asyncio.Queue[Any], stop: asyncio.Event) -> Any:
    """The queue's next item, or None once ``stop`` is set first."""
    getter = asyncio.ensure_future(queue.get())
    stopper = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({getter, stopper}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopper.cancel()
        if not getter.done():
            getter.cancel()
    return getter.result() if getter.done() and not getter.cancelled() else None
