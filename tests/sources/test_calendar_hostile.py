"""Hostile calendars and Graph answers are contained: bounded in time and memory,
one failure of one feed (stale, backoff, one log line), never a hung thread, a
500, or a daemon that cannot stop."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import pytest

from astpresence.sources.calendars.entries import MAX_EVENTS
from astpresence.sources.calendars.feeds import CalendarFeeds, Feed
from astpresence.sources.calendars.settings import (
    CalendarSettings,
    Credential,
    FeedConfig,
    parse_feed,
)
from astpresence.sources.calendars.worker import ParserPool
from tests.conftest import Starter
from tests.support.calendar_servers import FeedServer, GraphMailbox, GraphServer
from tests.support.e2e import make_config, seed
from tests.support.fakeami import FakeAsterisk
from tests.support.calendar_servers import graph_event, ics_event

pytestmark = pytest.mark.timeout(120)

NOW = datetime.now(UTC).replace(microsecond=0)
#: A parse may take this long in these tests before its worker is killed.
LIMIT = 3.0


def vcal(event: str, extra: str = "") -> bytes:
    return ("BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//x//EN\r\n" + extra
            + "BEGIN:VEVENT\r\nUID:bomb\r\nDTSTAMP:20261101T000000Z\r\n" + event
            + "SUMMARY:Bomb\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n").encode()


#: The invitations of the issue: each makes a naive expansion walk millions of
#: occurrences (or years of them) before it reaches the window.
BOMBS = {
    "every minute of every day since 1970": vcal(
        "DTSTART:19700101T000000Z\r\nDTEND:19700101T000100Z\r\n"
        "RRULE:FREQ=YEARLY;BYYEARDAY=1..366;BYHOUR=0..23;BYMINUTE=0..59\r\n".replace(
            "1..366", ",".join(map(str, range(1, 367)))).replace(
            "0..23", ",".join(map(str, range(24)))).replace(
            "0..59", ",".join(map(str, range(60))))),
    "secondly since 2000": vcal(
        "DTSTART:20000101T000000Z\r\nDTEND:20000101T000001Z\r\nRRULE:FREQ=SECONDLY\r\n"),
    "minutely, a billion times": vcal(
        "DTSTART:20000101T000000Z\r\nDTEND:20000101T000100Z\r\n"
        "RRULE:FREQ=MINUTELY;COUNT=1000000000\r\n"),
    "daily from year 1": vcal(
        "DTSTART:00010101T090000Z\r\nDTEND:00010101T100000Z\r\nRRULE:FREQ=DAILY\r\n"),
    "a time zone changing every second": vcal(
        "DTSTART;TZID=Bomb:20261201T090000\r\nDTEND;TZID=Bomb:20261201T100000\r\n",
        "BEGIN:VTIMEZONE\r\nTZID:Bomb\r\nBEGIN:STANDARD\r\nDTSTART:19700101T000000\r\n"
        "RRULE:FREQ=SECONDLY\r\nTZOFFSETFROM:+0100\r\nTZOFFSETTO:+0100\r\n"
        "END:STANDARD\r\nEND:VTIMEZONE\r\n"),
}


@pytest.fixture
async def parser() -> AsyncIterator[ParserPool]:
    pool = ParserPool(timeout=LIMIT)
    yield pool
    await pool.close()


@pytest.mark.parametrize("name", list(BOMBS))
async def test_a_runaway_recurrence_is_stopped(name: str, feeds: FeedServer,
                                               http: aiohttp.ClientSession,
                                               parser: ParserPool) -> None:
    feeds.put("bomb.ics", BOMBS[name])
    feed = Feed(FeedConfig("2000", "ics", url=f"{feeds.url}/bomb.ics", timezone="UTC"))
    started = time.monotonic()
    await feed.refresh(http, NOW, parser)
    took = time.monotonic() - started
    assert took < LIMIT + 10, f"the refresh took {took:.1f} s"
    if feed.status.state == "ok":  # expanded within the bounds: a bounded answer
        assert feed.status.events <= MAX_EVENTS
    else:
        assert feed.status.state == "failing" and feed.status.error, feed.status
        assert feed.next_due > time.monotonic()  # backoff, not a fetch loop
    # the next feed parses as usual (a new worker where the old one was killed)
    feeds.put("good.ics", ics_event("g", NOW + timedelta(hours=1), NOW + timedelta(hours=2)))
    good = Feed(FeedConfig("2001", "ics", url=f"{feeds.url}/good.ics", timezone="UTC"))
    await good.refresh(http, NOW, parser)
    assert (good.status.state, good.status.events) == ("ok", 1)


async def test_the_worst_one_is_killed_not_waited_for(feeds: FeedServer,
                                                      http: aiohttp.ClientSession,
                                                      parser: ParserPool) -> None:
    feeds.put("bomb.ics", BOMBS["every minute of every day since 1970"])
    feed = Feed(FeedConfig("2000", "ics", url=f"{feeds.url}/bomb.ics", timezone="UTC"))
    await feed.refresh(http, NOW, parser)
    assert feed.status.state == "failing"
    assert f"longer than {LIMIT:g} s" in feed.status.error
    assert parser.killed == 1


async def test_shutdown_never_waits_on_a_parse(fake_ami: FakeAsterisk, tmp_path: Path,
                                               daemons: Starter, feeds: FeedServer) -> None:
    seed(fake_ami)
    feeds.put("bomb.ics", BOMBS["every minute of every day since 1970"])
    feed = parse_feed({"user": "2000", "kind": "ics", "url": f"{feeds.url}/bomb.ics"}, "c0")
    config = replace(make_config(fake_ami, tmp_path / "p.db"),
                     sources={"calendars": CalendarSettings((feed,), parse_seconds=600)})
    d = await daemons(config)
    calendars = d.daemon.sources["calendars"]
    assert isinstance(calendars, CalendarFeeds)
    deadline = time.monotonic() + 20
    while not calendars.feeds[0].running or not calendars.parser._workers:
        assert time.monotonic() < deadline, "the parse never started"
        await asyncio.sleep(0.05)
    worker = calendars.parser._workers[0].proc
    started = time.monotonic()
    await d.stop()
    took = time.monotonic() - started
    assert took < 5, f"the daemon took {took:.1f} s to stop"
    assert worker.returncode is not None  # killed, not left behind


@pytest.fixture
async def graph(tmp_path: Path) -> AsyncIterator[tuple[GraphServer, FeedConfig]]:
    server = GraphServer("contoso", "app-id", "s3cret")
    await server.start()
    secret = tmp_path / "secret"
    secret.write_text("s3cret")
    cfg = FeedConfig("2001", "m365", tenant="contoso", client_id="app-id",
                     mailbox="bob@contoso.com", password=Credential(file=str(secret)),
                     authority=server.url, graph=server.graph)
    yield server, cfg
    await server.stop()


async def test_a_deeply_nested_graph_answer_is_one_failure(
        graph: tuple[GraphServer, FeedConfig], http: aiohttp.ClientSession,
        parser: ParserPool, caplog: pytest.LogCaptureFixture) -> None:
    server, cfg = graph
    server.raw_view = b"[" * 200_000
    feed = Feed(cfg)
    caplog.set_level(logging.INFO, logger="astpresence")
    await feed.refresh(http, NOW, parser)
    assert (feed.status.state, feed.status.error) == ("failing", "the answer is nested too deeply")
    assert feed.next_due >= time.monotonic() + 1  # backoff: no fetch loop
    assert len(server.requests) == 1
    lines = [r for r in caplog.records if r.name.startswith("astpresence")]
    assert len(lines) == 1 and lines[0].exc_info is None


async def test_graph_pages_are_bounded_in_all(graph: tuple[GraphServer, FeedConfig],
                                              http: aiohttp.ClientSession,
                                              parser: ParserPool) -> None:
    """12 pages of about a megabyte each with a 4 MB limit: refused once the limit is
    passed in all, not after reading 12 MB (the limit was per page)."""
    server, cfg = graph
    t = NOW + timedelta(hours=1)
    server.mailboxes["bob@contoso.com"] = GraphMailbox(
        [graph_event(f"E{i}", t + timedelta(hours=i), 0.5) for i in range(12)])
    server.page_size, server.padding = 1, 1_000_000
    feed = Feed(replace(cfg, max_bytes=4_000_000))
    await feed.refresh(http, NOW, parser)
    assert feed.status.state == "failing"
    assert "pages together are larger than the limit" in feed.status.error
    assert len(server.requests) <= 5


async def test_a_parse_cancelled_midway_never_answers_the_next(feeds: FeedServer,
                                                              parser: ParserPool) -> None:
    """The fetch's own time limit can cancel a parse under way: that worker goes, so its
    late answer cannot be taken for the next feed's."""
    pool = ParserPool(workers=1, timeout=30)
    slow = asyncio.create_task(pool.parse([BOMBS["secondly since 2000"]], NOW,
                                          NOW + timedelta(days=7), "UTC", ""))
    await asyncio.sleep(0.5)  # the worker is busy with it
    slow.cancel()
    with pytest.raises(asyncio.CancelledError):
        await slow
    one = ics_event("one", NOW + timedelta(hours=1), NOW + timedelta(hours=2), "Only me")
    busy = await asyncio.wait_for(pool.parse([one], NOW, NOW + timedelta(days=7), "UTC", ""),
                                  20)
    assert [b.subject for b in busy] == ["Only me"]
    await pool.close()
