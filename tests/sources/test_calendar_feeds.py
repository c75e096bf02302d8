"""Calendar feeds against real servers: an HTTP server for ICS, Radicale for
CalDAV, a local server answering Microsoft 365's token and calendarView
requests; then end to end through the daemon and the fake Asterisk."""

from __future__ import annotations

import json
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import pytest

from astpresence.sources.calendars.feeds import Feed
from astpresence.sources.calendars.settings import (
    CalendarSettings,
    Credential,
    FeedConfig,
    parse_feed,
)
from astpresence.sources.calendars.worker import ParserPool
from astpresence.domain.model import Presence, State
from tests.conftest import Starter
from tests.support.calendar_servers import (
    CALENDARS,
    FeedServer,
    GraphMailbox,
    GraphServer,
    Radicale,
    free_port,
)
from tests.support.calendar_servers import Feed as ServedFeed
from tests.support.calendar_servers import graph_event, ics_event
from tests.support.e2e import barrier, cli, make_config, seed, until
from tests.support.fakeami import FakeAsterisk

NOW = datetime(2026, 11, 2, 12, tzinfo=UTC)


async def test_ics_feed_conditional_stale_and_bad_input(feeds: FeedServer,
                                                        http: aiohttp.ClientSession, parser: ParserPool) -> None:
    feeds.put("alice.ics", (CALENDARS / "google.ics").read_bytes())
    feed = Feed(FeedConfig("2000", "ics", url=f"{feeds.url}/alice.ics", timezone="UTC",
                           email="alice@example.com"))
    await feed.refresh(http, NOW, parser)
    assert feed.status.state == "ok" and feed.status.events > 0
    good = list(feed.busy)
    # Unchanged: a conditional request, answered 304, the events kept.
    await feed.refresh(http, NOW, parser)
    assert feeds.requests[-1].headers["If-None-Match"] == feeds.feeds["alice.ics"].etag
    assert (feed.status.not_modified, feed.busy) == (1, good)
    # The feed breaks: each failure is said for this feed, the last good events stay.
    for status, body, message in [(404, None, "no such calendar (HTTP 404)"),
                                  (500, None, "HTTP 500"),
                                  (401, None, "wrong credentials"),
                                  (200, b"<html>sign in</html>", "not an iCalendar feed"),
                                  (200, b"BEGIN:VCALENDAR\r\nBEGIN:VEVENT\r\nDTSTART:nope\r\n"
                                        b"END:VEVENT\r\nEND:VCALENDAR\r\n", "DTSTART: Expected datetime")]:
        feeds.feeds["alice.ics"].status = status
        if body is not None:
            feeds.put("alice.ics", body)
        await feed.refresh(http, NOW, parser)
        assert feed.status.state == "stale" and message in feed.status.error, feed.status
        assert feed.busy == good
    assert feed.status.failures == 5
    # Backoff grows with the failures.
    assert feed.next_due - time.monotonic() > feed.config.refresh * 8


async def test_unreachable_huge_and_missing_feeds(feeds: FeedServer,
                                                  http: aiohttp.ClientSession, parser: ParserPool,
                                                  tmp_path: Path) -> None:
    dead = Feed(FeedConfig("2000", "ics", url=f"http://127.0.0.1:{free_port()}/x.ics"))
    await dead.refresh(http, NOW, parser)
    assert dead.status.state == "failing" and dead.status.error.startswith("unreachable")
    feeds.feeds["big.ics"] = ServedFeed(huge=50 << 20)  # 50 MB, streamed
    big = Feed(FeedConfig("2000", "ics", url=f"{feeds.url}/big.ics"))
    started = time.monotonic()
    await big.refresh(http, NOW, parser)
    assert "larger than the limit of 10485760 bytes" in big.status.error
    assert time.monotonic() - started < 10  # stopped at the limit, not after 50 MB
    local = tmp_path / "cal.ics"
    local.write_bytes((CALENDARS / "outlook.ics").read_bytes())
    ok = Feed(FeedConfig("2000", "ics", url=str(local), timezone="Europe/Berlin"))
    await ok.refresh(http, datetime(2026, 10, 26, tzinfo=UTC), parser)
    assert ok.status.state == "ok" and [b.subject for b in ok.busy][:1] == ["Weekly sync"]
    gone = Feed(FeedConfig("2000", "ics", url=str(tmp_path / "nope.ics")))
    await gone.refresh(http, NOW, parser)
    assert "cannot read the file" in gone.status.error


async def test_caldav_against_radicale(tmp_path: Path, http: aiohttp.ClientSession, parser: ParserPool,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    server = Radicale(tmp_path / "radicale", {"alice": "pw-alice"})
    await server.start()
    try:
        cal = await server.mkcalendar("alice", "work")
        start = datetime.now(UTC).replace(microsecond=0) + timedelta(hours=1)
        await server.put_event(cal, "alice", ics_event("m1", start, start + timedelta(hours=1),
                                                       "Design review"), "m1")
        await server.put_event(cal, "alice", ics_event(
            "f1", start + timedelta(hours=3), start + timedelta(hours=4), "Free",
            "TRANSP:TRANSPARENT\r\n"), "f1")
        monkeypatch.setenv("CAL_PW", "pw-alice")
        feed = Feed(FeedConfig("2000", "caldav", url=cal, username="alice",
                               password=Credential(env="CAL_PW")))
        await feed.refresh(http, datetime.now(UTC), parser)
        assert feed.status.state == "ok", feed.status
        assert [(b.subject, b.start) for b in feed.busy] == [("Design review", start)]
        # Nothing changed: the ctag says so, no REPORT.
        await feed.refresh(http, datetime.now(UTC), parser)
        assert feed.status.not_modified == 1
        # A new event changes the ctag: read again.
        await server.put_event(cal, "alice", ics_event(
            "m2", start + timedelta(hours=5), start + timedelta(hours=6), "Retro"), "m2")
        await feed.refresh(http, datetime.now(UTC), parser)
        assert [b.subject for b in feed.busy] == ["Design review", "Retro"]
        # Wrong password, and a variable that is not set: said for this feed.
        monkeypatch.setenv("CAL_PW", "wrong")
        await feed.refresh(http, datetime.now(UTC), parser)
        assert feed.status.state == "stale" and "wrong credentials" in feed.status.error
        monkeypatch.delenv("CAL_PW")
        await feed.refresh(http, datetime.now(UTC), parser)
        assert "environment variable CAL_PW is not set" in feed.status.error
        assert [b.subject for b in feed.busy] == ["Design review", "Retro"]
    finally:
        await server.stop()


async def test_microsoft_365(tmp_path: Path, http: aiohttp.ClientSession, parser: ParserPool) -> None:
    server = GraphServer("contoso", "app-id", "s3cret")
    await server.start()
    t = NOW + timedelta(hours=1)
    try:
        server.mailboxes["bob@contoso.com"] = GraphMailbox([
            graph_event("One", t, 1), graph_event("Two", t + timedelta(hours=2), 1),
            graph_event("Lunch", t + timedelta(hours=3), 1, "free"),
            graph_event("Off", t + timedelta(days=1), 24, "oof"),
            graph_event("Gone", t + timedelta(hours=5), 1, isCancelled=True)])
        secret = tmp_path / "secret"
        secret.write_text("s3cret\n")
        cfg = FeedConfig("2001", "m365", tenant="contoso", client_id="app-id",
                         mailbox="bob@contoso.com", password=Credential(file=str(secret)),
                         authority=server.url, graph=server.graph)
        feed = Feed(cfg)
        server.throttle = 1  # one 429 with Retry-After first
        await feed.refresh(http, NOW, parser)
        assert feed.status.state == "ok", feed.status
        assert [(b.subject, b.kind.name) for b in feed.busy] == [
            ("One", "BUSY"), ("Two", "BUSY"), ("Off", "OOF")]
        assert len(server.requests) == 4  # the 429, then 3 pages of 2
        assert all(r.headers["Prefer"] == 'outlook.timezone="UTC"' for r in server.requests)
        # A revoked token: one new token, then it works again.
        tokens = server.token_requests
        server.tokens.clear()
        await feed.refresh(http, NOW, parser)
        assert feed.status.state == "ok" and server.token_requests == tokens + 1
        # Wrong secret: a clear message, the last good events kept.
        secret.write_text("nope")
        feed._token = ""
        await feed.refresh(http, NOW, parser)
        assert feed.status.state == "stale"
        assert "refused the app's credentials (HTTP 401: invalid_client)" in feed.status.error
        assert "nope" not in feed.status.error
    finally:
        await server.stop()


async def test_calendar_drives_presence_end_to_end(
        fake_ami: FakeAsterisk, tmp_path: Path, daemons: Starter, feeds: FeedServer) -> None:
    """An event starting in a moment is written to Asterisk at its start and taken back
    at its end; a manual dnd is not overridden; a broken feed affects only its user."""
    seed(fake_ami)
    start = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=5)
    feeds.put("alice.ics", ics_event("e1", start, start + timedelta(seconds=3), "Secret plans"))
    feeds.put("bob.ics", "")
    feeds.feeds["bob.ics"].status = 503
    config = replace(make_config(fake_ami, tmp_path / "p.db"), sources={"calendars": CalendarSettings((
        parse_feed({"user": "2000", "kind": "ics", "url": f"{feeds.url}/alice.ics",
                    "refresh": 30, "timezone": "UTC"}, "c0"),
        parse_feed({"user": "2001", "kind": "ics", "url": f"{feeds.url}/bob.ics",
                    "refresh": 30}, "c1")))})
    d = await daemons(config)

    def asterisk(uid: str) -> str:
        return fake_ami.presences.get(uid, ("not_set", "", ""))[0]

    await until(lambda: d.service.contributions.get("2000", "calendar") is not None,
                what="calendar entry")
    assert d.service.contributions.get("2000", "calendar").start == start
    if datetime.now(UTC) < start - timedelta(seconds=0.5):
        await barrier(d, fake_ami)
        assert asterisk("2000") == "not_set"  # not yet
    await until(lambda: asterisk("2000") == "away", timeout=8, what="meeting started")
    state, subtype, message = fake_ami.presences["2000"]
    assert (subtype, message) == ("meeting", f"In a meeting until "
                                             f"{(start + timedelta(seconds=3)):%H:%M}")
    assert "Secret plans" not in message  # the subject only with show_subject
    view = d.service.view("2000")
    assert (view.source, view.rule) == ("calendar", "timed:calendar")
    await until(lambda: asterisk("2000") == "not_set", timeout=8, what="meeting over")
    # The broken feed is said, for its user only.
    status = await cli(d.url, "calendar", "list", token=d.token)
    assert status.code == 0, status.err
    rows = {line.split()[0]: line for line in status.out.splitlines()[1:]}
    assert "ok" in rows["2000"] and "failing" in rows["2001"] and "HTTP 503" in rows["2001"]

    # A manual dnd is not overridden by the next meeting.
    await d.service.set_manual("2000", Presence(State.DND, "", "focus"), "api")
    start = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=2)
    feeds.put("alice.ics", ics_event("e2", start, start + timedelta(minutes=30)))
    shown = await cli(d.url, "calendar", "refresh", "2000", token=d.token)
    assert shown.code == 0 and "In a meeting until" in shown.out, shown.err
    await until(lambda: datetime.now(UTC) > start + timedelta(seconds=1), timeout=6)
    await barrier(d, fake_ami)
    assert fake_ami.presences["2000"][0] == "dnd"
    show = await cli(d.url, "calendar", "show", "2000", "--json", token=d.token)
    data = json.loads(show.out)
    assert data["entries"][0]["presence"]["state"] == "away"
    assert data["feeds"][0]["state"] == "ok"
    status_json = json.loads((await cli(d.url, "status", "--json", token=d.token)).out)
    assert status_json["calendars"] == {"feeds": 2, "ok": 1, "stale": 0, "failing": 1,
                                        "new": 0}
    async with aiohttp.ClientSession() as session, session.get(d.url + "/metrics") as resp:
        metrics = await resp.text()
    assert 'astpresence_calendar_feeds{state="failing"} 1.0' in metrics
    failed = [line for line in metrics.splitlines()
              if line.startswith("astpresence_calendar_fetch_failures_total ")]
    assert failed and float(failed[0].split()[1]) >= 1  # retried with backoff meanwhile


async def test_a_state_chosen_during_a_meeting_wins_over_it(
        fake_ami: FakeAsterisk, tmp_path: Path, daemons: Starter, feeds: FeedServer) -> None:
    """docs/presence-rules.md: a state the person sets after the meeting started wins.
    A refresh must not make the meeting look newer than that choice (its start is the
    event's start, not the moment of the refresh)."""
    seed(fake_ami)
    began = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=10)
    feeds.put("alice.ics", ics_event("e1", began, began + timedelta(minutes=40)))
    config = replace(make_config(fake_ami, tmp_path / "p.db"), sources={"calendars": CalendarSettings((
        parse_feed({"user": "2000", "kind": "ics", "url": f"{feeds.url}/alice.ics",
                    "refresh": 30, "timezone": "UTC"}, "c0"),))})
    d = await daemons(config)
    await until(lambda: d.service.view("2000").source == "calendar", what="the meeting")
    assert d.service.contributions.get("2000", "calendar").start == began
    await d.service.set_manual("2000", Presence(State.AVAILABLE, "", "back early"), "api")
    for _ in range(2):  # each refresh is a full pass over the user's entries
        shown = await cli(d.url, "calendar", "refresh", "2000", token=d.token)
        assert shown.code == 0, shown.err
    # a third at once is refused: a refresh fetches every feed of the user
    third = await cli(d.url, "calendar", "refresh", "2000", token=d.token)
    assert third.code != 0 and "just refreshed" in third.err, third
    await barrier(d, fake_ami)
    view = d.service.view("2000")
    assert (view.presence.state, view.source) == (State.AVAILABLE, "manual")
    assert fake_ami.presences["2000"][0] == "available"
    assert d.service.contributions.get("2000", "calendar").start == began
