"""Calendar feeds kept fresh, and their entries handed to the engine as the timed
source ``calendar``.

Each feed is fetched on its own schedule (``refresh``), a window of the next
``days`` at a time, with conditional requests (ETag / Last-Modified for ICS,
the ctag for CalDAV) and backoff on errors. A feed that fails keeps its last
good events, shown as ``stale``, until they end; one feed never holds up
another (bounded concurrency, each with its own timeout). For each user the
entry running now (or the next one) is the ``calendar`` contribution; the
engine's precedence does the rest (docs/presence-rules.md).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, tzinfo
from typing import Any

import aiohttp
from prometheus_client.registry import Collector

from astpresence.domain.model import InvalidInput
from astpresence.domain.records import SourceRecord
from astpresence.sources.calendars.entries import Busy, Entry, current_and_next, merge, to_presence
from astpresence.sources.calendars.fetch import (
    basic_auth,
    FETCH_TIMEOUT,
    FeedError,
    Unauthorized,
    caldav_ctag,
    caldav_events,
    fetch_ics,
    m365_calendar_view,
    m365_token,
)
from astpresence.sources.calendars.graph import busy_from_graph
from astpresence.sources.calendars.metrics import FeedStates
from astpresence.sources.calendars.ics import local_zone
from astpresence.engine.service import PresenceService, utcnow
from astpresence.engine.aligning import align
from astpresence.engine.timers import woken_within
from astpresence.sources.calendars.settings import FeedConfig
from astpresence.sources.calendars.worker import PARSE_TIMEOUT, ParseFailed, ParserPool

logger = logging.getLogger(__name__)

SOURCE = "calendar"
#: Feeds fetched at once, at most.
CONCURRENCY = 16
#: The loop looks at every user this often at least (users appear after a sync).
TICK = 5.0
#: A next entry starting this close to the end of the current one follows it
#: without a gap (no presence flicker between back-to-back entries).
SEAMLESS = timedelta(seconds=1)
#: Events are read this far beyond the window, so a refresh of an unchanged feed
#: can reuse them while the window moves.
SLACK = timedelta(days=1)


@dataclass
class FeedStatus:
    state: str = "new"  # new, ok, stale (failing, last good events kept), failing
    last_fetch: datetime | None = None
    last_success: datetime | None = None
    error: str = ""
    failures: int = 0
    events: int = 0
    fetches: int = 0
    not_modified: int = 0
    failed_total: int = 0


@dataclass
class Feed:
    """One configured feed: its last good events and how to get newer ones."""

    config: FeedConfig
    status: FeedStatus = field(default_factory=FeedStatus)
    busy: list[Busy] = field(default_factory=list)
    next_due: float = 0.0  # time.monotonic()
    running: bool = False
    idle: asyncio.Event = field(default_factory=asyncio.Event)  # set when not fetching
    _etag: str = ""
    _last_modified: str = ""
    _ctag: str = ""
    _kept: list[Busy] = field(default_factory=list)  # events up to _reach
    _reach: datetime | None = None
    _token: str = ""
    _token_until: float = 0.0

    @property
    def tz(self) -> tzinfo:
        zone: tzinfo | None = self.config.zone()
        return zone if zone is not None else local_zone()

    async def refresh(self, session: aiohttp.ClientSession, now: datetime,
                      parser: ParserPool) -> None:
        """Fetch and parse; on failure keep the last good events (state ``stale``).

        Whatever goes wrong (an unreachable server, a hostile answer, a library's
        own error on input it never expected) is one failure of this feed: stale,
        backoff, one log line. Only a cancellation (shutdown) passes through.
        """
        cfg = self.config
        self.status.last_fetch = now
        self.status.fetches += 1
        try:
            async with asyncio.timeout(FETCH_TIMEOUT):
                busy = await self._fetch(session, now, now + timedelta(days=cfg.days), parser)
        except Exception as exc:
            why = _why(exc)
            self.status.failures += 1
            self.status.failed_total += 1
            self.status.error = why
            self.status.state = "stale" if self.busy else "failing"
            delay = min(cfg.refresh * 2 ** min(self.status.failures - 1, 6), 3600.0)
            self.next_due = time.monotonic() + max(delay, 1.0)
            logger.warning("calendar %s: %s; %s, next try in %.0f s", cfg.name, why,
                           "keeping its last good events" if self.busy else "no events yet",
                           delay)
            return
        self.busy = busy
        self.status.state, self.status.error, self.status.failures = "ok", "", 0
        self.status.last_success = now
        self.status.events = len(busy)
        self.next_due = time.monotonic() + cfg.refresh

    async def _fetch(self, session: aiohttp.ClientSession, start: datetime,
                     end: datetime, parser: ParserPool) -> list[Busy]:
        """The window's events. Events are kept for a day beyond the window, so an
        unchanged feed (304, same ctag) is not parsed again while the window moves;
        no parsed calendar is kept (they are large)."""
        cfg = self.config
        if cfg.kind == "m365":
            return busy_from_graph(await self._graph(session, start, end))
        auth = basic_auth(cfg.username, cfg.password.read()) if cfg.username else ""
        fresh = self._reach is not None and end <= self._reach
        reach = end + SLACK
        if cfg.kind == "ics":
            got = await fetch_ics(session, cfg.url, etag=self._etag if fresh else "",
                                  last_modified=self._last_modified if fresh else "",
                                  auth=auth, max_bytes=cfg.max_bytes)
            if got.body is None:
                self.status.not_modified += 1
                return self._known(start, end)
            self._etag, self._last_modified = got.etag, got.last_modified
            bodies: list[bytes | str] = [got.body]
        else:
            ctag = await caldav_ctag(session, cfg.url, auth=auth)
            if fresh and ctag and ctag == self._ctag:
                self.status.not_modified += 1
                return self._known(start, end)
            bodies = list(await caldav_events(session, cfg.url, start, reach, auth=auth,
                                              max_bytes=cfg.max_bytes))
            self._ctag = ctag
        # Parsing and expanding take a while for big feeds, and without a bound for
        # hostile ones: in a worker process that is killed when it takes too long.
        self._kept = await parser.parse(bodies, start, reach, cfg.timezone, cfg.email)
        self._reach = reach
        return self._known(start, end)

    def _known(self, start: datetime, end: datetime) -> list[Busy]:
        return [b for b in self._kept if b.end > start and b.start < end]

    async def _graph(self, session: aiohttp.ClientSession, start: datetime,
                     end: datetime) -> list[dict[str, Any]]:
        cfg = self.config
        for attempt in (1, 2):
            if not self._token or time.monotonic() >= self._token_until:
                self._token, lifetime = await m365_token(
                    session, cfg.authority, cfg.tenant, cfg.client_id, cfg.password.read())
                self._token_until = time.monotonic() + max(lifetime - 60.0, 30.0)
            try:
                return await m365_calendar_view(session, cfg.graph, cfg.mailbox, self._token,
                                                start, end, max_bytes=cfg.max_bytes)
            except Unauthorized:
                self._token = ""  # expired or revoked: one new token, then give up
                if attempt == 2:
                    raise FeedError("Graph refused a fresh token (HTTP 401): does the app "
                                    "have Calendars.Read for this mailbox?") from None
        raise AssertionError("unreachable")

    def json(self) -> dict[str, Any]:
        st = self.status
        return {"user": self.config.user, "kind": self.config.kind, "name": self.config.name,
                "state": st.state, "error": st.error, "failures": st.failures,
                "events": st.events, "fetches": st.fetches, "not_modified": st.not_modified,
                "last_fetch": st.last_fetch.isoformat() if st.last_fetch else None,
                "last_success": st.last_success.isoformat() if st.last_success else None,
                "refresh_seconds": self.config.refresh,
                "next_fetch_in": max(0.0, round(self.next_due - time.monotonic(), 1))}


def _why(exc: Exception) -> str:
    """A failure's reason for the feed's status and its one log line."""
    if isinstance(exc, (FeedError, InvalidInput, ParseFailed)):
        return str(exc)
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, RecursionError):
        return "the answer is nested too deeply"
    return f"cannot read the feed ({type(exc).__name__})"


class CalendarFeeds:
    """Every ``[[calendars]]`` feed, and the ``calendar`` source of their users."""

    def __init__(self, configs: Sequence[FeedConfig], service: PresenceService, *,
                 clock: Callable[[], datetime] = utcnow,
                 parse_timeout: float = PARSE_TIMEOUT) -> None:
        self.feeds = [Feed(c) for c in configs]
        self.parser = ParserPool(timeout=parse_timeout)
        self.service = service
        self._clock = clock
        self._wake = asyncio.Event()
        self._session: aiohttp.ClientSession | None = None
        self._sem = asyncio.Semaphore(CONCURRENCY)
        self._tasks: set[asyncio.Task[None]] = set()
        self._due: dict[str, float] = {}  # user -> when (monotonic) to apply again

    def of(self, uid: str) -> list[Feed]:
        return [f for f in self.feeds if f.config.user == uid]

    def users(self) -> list[str]:
        return sorted({f.config.user for f in self.feeds})

    # -- the loop ----------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        if not self.feeds:
            return
        timeout = aiohttp.ClientTimeout(total=FETCH_TIMEOUT, sock_connect=10)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            self._session = session
            logger.info("reading %d calendar feed(s) of %d user(s)", len(self.feeds),
                        len(self.users()))
            try:
                while not stop.is_set():
                    mono = time.monotonic()
                    for feed in self.feeds:
                        if feed.next_due <= mono and not feed.running:
                            self._start(feed)
                    for uid in self.users():
                        if self._due.get(uid, 0.0) <= mono:
                            await self.apply(uid)
                    mono = time.monotonic()
                    pending = [f.next_due - mono for f in self.feeds if not f.running]
                    wait = min([TICK, *pending, *(d - mono for d in self._due.values())])
                    await woken_within(self._wake, stop, wait)
            finally:
                # the workers first: a parse under way is killed, never waited for
                await self.parser.close()
                for task in self._tasks:
                    task.cancel()
                await asyncio.gather(*self._tasks, return_exceptions=True)
                self._session = None

    def _start(self, feed: Feed) -> None:
        feed.running = True
        feed.idle.clear()
        task = asyncio.create_task(self._refresh(feed), name=f"calendar-{feed.config.name}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _refresh(self, feed: Feed) -> None:
        try:
            async with self._sem:
                assert self._session is not None
                await feed.refresh(self._session, self._clock(), self.parser)
            await self.apply(feed.config.user)
        finally:
            feed.running = False
            feed.idle.set()
            self._wake.set()

    async def refresh_user(self, uid: str) -> list[Feed]:
        """Fetch the user's feeds now and apply them (``calendar refresh``)."""
        feeds = self.of(uid)
        if self._session is None:
            raise RuntimeError("calendar feeds are not running")
        for feed in feeds:
            feed.next_due = time.monotonic() + feed.config.refresh  # the loop leaves it
        await asyncio.gather(*(self._refresh_now(f) for f in feeds))
        await self.apply(uid)
        return feeds

    async def _refresh_now(self, feed: Feed) -> None:
        while feed.running:  # a scheduled fetch is under way: wait for it, then fetch
            await feed.idle.wait()
        feed.running = True
        feed.idle.clear()
        await self._refresh(feed)

    # -- entries -> the engine ----------------------------------------------

    def user_json(self, uid: str) -> dict[str, Any]:
        """The user's feeds and their entries from now on (``/v1/calendars/{user}``)."""
        now = self._clock()
        cfg = self.of(uid)
        entries = []
        for entry in self.entries(uid, now):
            presence = to_presence(entry, cfg[0].config.mapping, now, cfg[0].tz)
            entries.append({"start": entry.start.isoformat(), "end": entry.end.isoformat(),
                            "kind": entry.kind.name.lower(), "all_day": entry.all_day,
                            "presence": presence.as_dict()})
        return {"user": uid, "feeds": [f.json() for f in cfg], "entries": entries}

    def entries(self, uid: str, now: datetime) -> list[Entry]:
        feeds = self.of(uid)
        if not feeds:
            return []
        days = max(f.config.days for f in feeds)
        return merge([b for f in feeds for b in f.busy], now, now + timedelta(days=days))

    def desired(self, uid: str, now: datetime) -> SourceRecord | None:
        """The ``calendar`` record the user should have now: the entry running (or the
        next one), its presence worked out from the user's first feed's mapping."""
        feeds = self.of(uid)
        look = now + timedelta(milliseconds=100)  # an entry ending now is over
        current, nxt = current_and_next(self.entries(uid, now), look)
        entry = current or nxt
        if entry is None:
            return None
        start = entry.start
        if current is None and start - now <= SEAMLESS:
            start = now  # follows the one that just ended, without a gap
        presence = to_presence(entry, feeds[0].config.mapping, now, feeds[0].tz)
        return SourceRecord(uid, SOURCE, presence, now, SOURCE, start, entry.end)

    async def apply(self, uid: str) -> None:
        """Bring the user's ``calendar`` source in line, and note when to look again."""
        wait = await self._apply(uid)
        self._due[uid] = time.monotonic() + wait
        self._wake.set()

    async def _apply(self, uid: str) -> float:
        service = self.service
        if uid not in service.users:
            return 1.0  # not a user yet (the first sync is still to come): look again soon
        now = self._clock()
        want = self.desired(uid, now)
        have = await align(service, uid, SOURCE, want, lambda a, b: (
            a.presence, a.start, a.end) == (b.presence, b.start, b.end))
        if want is None:
            return TICK
        if have is None or have.start != want.start or have.presence != want.presence:
            logger.info("calendar of %s: %s from %s to %s", uid, want.presence.state.value,
                        want.start.isoformat() if want.start else "-",
                        want.end.isoformat() if want.end else "-")
        assert want.end is not None
        return min(max((want.end - now).total_seconds() - 0.05, 0.01), TICK * 12)

    def collectors(self) -> list[Collector]:
        return [FeedStates(self.status_json,
                           lambda: sum(f.status.failed_total for f in self.feeds))]

    def status_json(self) -> dict[str, int]:
        counts = {"ok": 0, "stale": 0, "failing": 0, "new": 0}
        for feed in self.feeds:
            counts[feed.status.state] = counts.get(feed.status.state, 0) + 1
        return {"feeds": len(self.feeds), **counts}
