"""Scenario 5: 1,000 users' calendar feeds refreshed (ICS over HTTP, mixed sizes).

A local HTTP server serves 1,000 ICS feeds: most small (10 events), some
medium (200 events, weekly recurrences with exceptions, a VTIMEZONE) and a
few large (2,000 events). A worker process (``python -m bench.calendars
URL N``) refreshes every feed once the way the daemon does (astpresence's
Feed.refresh, 16 at a time: conditional GET, parse, expand a 7-day window)
and reports the time; its peak RSS (VmHWM) is read from /proc.

Baselines, same run: the same worker with parsing switched off (HTTP only)
for the time, and the worker after importing everything but fetching one
feed for the memory.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from aiohttp import web

from .procs import free_port
from .report import Row, at_most, ratio

SCENARIO = "5 calendars"
TZ = ("BEGIN:VTIMEZONE\r\nTZID:Europe/Berlin\r\nBEGIN:DAYLIGHT\r\nTZOFFSETFROM:+0100\r\n"
      "TZOFFSETTO:+0200\r\nDTSTART:19700329T020000\r\nRRULE:FREQ=YEARLY;BYMONTH=3;BYDAY=-1SU\r\n"
      "END:DAYLIGHT\r\nBEGIN:STANDARD\r\nTZOFFSETFROM:+0200\r\nTZOFFSETTO:+0100\r\n"
      "DTSTART:19701025T030000\r\nRRULE:FREQ=YEARLY;BYMONTH=10;BYDAY=-1SU\r\nEND:STANDARD\r\n"
      "END:VTIMEZONE\r\n")


def feed(user: int, events: int, now: datetime) -> bytes:
    """An ICS feed: one-off events around now, plus weekly series in medium/large ones."""
    out = ["BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//bench//EN\r\n", TZ]
    base = now.replace(hour=8, minute=0, second=0, microsecond=0) - timedelta(days=30)
    fmt = "%Y%m%dT%H%M%S"
    for i in range(events):
        start = base + timedelta(hours=(i * 7) % (24 * 60), minutes=(i * 13) % 60)
        weekly = events >= 200 and i % 10 == 0
        out.append(
            f"BEGIN:VEVENT\r\nUID:{user}-{i}@bench\r\nDTSTAMP:20260101T000000Z\r\n"
            f"DTSTART;TZID=Europe/Berlin:{start:{fmt}}\r\n"
            f"DTEND;TZID=Europe/Berlin:{start + timedelta(minutes=45):{fmt}}\r\n"
            f"SUMMARY:Meeting {i} of user {user}\r\n"
            + ("RRULE:FREQ=WEEKLY;COUNT=20\r\n"
               f"EXDATE;TZID=Europe/Berlin:{start + timedelta(weeks=2):{fmt}}\r\n"
               if weekly else "")
            + ("TRANSP:TRANSPARENT\r\n" if i % 7 == 3 else "")
            + "END:VEVENT\r\n")
    out.append("END:VCALENDAR\r\n")
    return "".join(out).encode()


def sizes(n: int) -> list[int]:
    """Events per feed: 1 in 50 large, 1 in 10 medium, the rest small."""
    return [2000 if i % 50 == 0 else 200 if i % 10 == 0 else 10 for i in range(n)]


async def worker(url: str, n: int, parse: bool) -> dict[str, Any]:
    import aiohttp

    from astpresence.sources.calendars import feeds as feeds_module
    from astpresence.sources.calendars.feeds import Feed
    from astpresence.sources.calendars.settings import FeedConfig
    from astpresence.sources.calendars.worker import ParserPool

    parser = ParserPool()
    if not parse:  # the baseline: the same requests, no iCalendar work
        async def nothing(*args: Any) -> list[Any]:
            return []
        parser.parse = nothing  # type: ignore[method-assign]
    all_feeds = [Feed(FeedConfig(str(1000 + i), "ics", url=f"{url}/{i}.ics",
                                 timezone="Europe/Berlin")) for i in range(n)]
    sem = asyncio.Semaphore(feeds_module.CONCURRENCY)
    now = datetime.now(UTC)
    started = time.perf_counter()
    async with aiohttp.ClientSession() as session:
        async def one(f: Feed) -> None:
            async with sem:
                await f.refresh(session, now, parser)
        await asyncio.gather(*(one(f) for f in all_feeds))
    took = time.perf_counter() - started
    await parser.close()
    bad = [f.status.error for f in all_feeds if f.status.state != "ok"]
    if bad:
        raise RuntimeError(f"{len(bad)} feeds failed, e.g. {bad[0]}")
    return {"seconds": took, "events": sum(f.status.events for f in all_feeds)}


async def run_worker(url: str, n: int, parse: bool) -> dict[str, Any]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bench.calendars", url, str(n), "parse" if parse else "http",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"calendar worker failed: {err.decode()[-500:]}")
    result: dict[str, Any] = json.loads(out.decode().strip().splitlines()[-1])
    return result


async def run(quick: bool) -> list[Row]:
    n = 50 if quick else 1000
    now = datetime.now(UTC)
    bodies = {i: feed(1000 + i, events, now) for i, events in enumerate(sizes(n))}

    async def serve(request: web.Request) -> web.Response:
        name = request.match_info["name"]
        return web.Response(body=bodies[int(name.removesuffix(".ics"))],
                            content_type="text/calendar")

    app = web.Application()
    app.router.add_get("/{name}", serve)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    url = f"http://127.0.0.1:{port}"
    try:
        http_only = await run_worker(url, n, parse=False)
        full = await run_worker(url, n, parse=True)
        one = await run_worker(url, 1, parse=True)
    finally:
        await runner.cleanup()
    mb = sum(len(b) for b in bodies.values()) / 1e6
    t, ok = at_most(full["seconds"], 30.0)
    m, mok = at_most(full["peak_rss_mb"], 200.0)
    note = (f"{n:,} feeds ({mb:.1f} MB of ICS), {full['events']:,} busy events in the "
            "7-day windows; 16 at a time")
    return [
        Row(SCENARIO, "refresh every feed", full["seconds"], "s", t, ok,
            http_only["seconds"], ratio(full["seconds"], http_only["seconds"]),
            note=note + "; baseline = the same requests without parsing"),
        Row(SCENARIO, "peak RSS", full["peak_rss_mb"], "MB", m, mok, one["peak_rss_mb"],
            ratio(full["peak_rss_mb"], one["peak_rss_mb"]),
            note="VmHWM of the bench process or its largest parser worker; baseline = one feed"),
    ]


def _main() -> None:
    url, n, mode = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    result = asyncio.run(worker(url, n, mode == "parse"))
    import resource

    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                result["peak_rss_mb"] = int(line.split()[1]) / 1024
    # the parsing runs in worker processes (astpresence/calendars/worker.py): the
    # largest of them counts too
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    result["peak_rss_mb"] = max(result["peak_rss_mb"], children)
    print(json.dumps(result))


if __name__ == "__main__":
    _main()
