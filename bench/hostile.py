"""Scenario 8: the API and the daemon's memory while hostile input goes on.

The daemon follows 1,000 users of the fake Asterisk and reads two calendars
that attack it: an ICS feed whose one event recurs every minute since 1970 (its
parse runs into ``[limits] calendar_parse_seconds`` every refresh) and a Microsoft
365 mailbox whose calendarView answer is ``[`` 200,000 deep. In three phases a
client reads presence (``GET /v1/presence/<user>``, one at a time) and the p99 of
those reads is taken:

- quiet: nothing else (the baseline);
- calendars: both hostile feeds are refreshed over and over (every refresh the
  API allows: 429s included);
- flood: 1,100 connections from another address send a request head one byte
  a second (the slow-header attack of the issue).

The daemon's peak RSS (VmHWM) is read at the end.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import sys
import tempfile
import time
from asyncio.subprocess import PIPE
from pathlib import Path

import aiohttp
from aiohttp import web

from .common import ms, users
from .fake import BenchFake
from .procs import DaemonProcess, free_port, proc_status_kb, raise_fd_limit
from .report import Row, at_most, percentile, ratio
from .tests_import import Hint

SCENARIO = "8 hostile input"
BOMB = ("BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//x//EN\r\nBEGIN:VEVENT\r\nUID:b\r\n"
        "DTSTAMP:20261101T000000Z\r\nDTSTART:19700101T000000Z\r\nDTEND:19700101T000100Z\r\n"
        "RRULE:FREQ=MINUTELY\r\nSUMMARY:bomb\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n").encode()
FLOOD = 1100
PARSE_SECONDS = 5


async def _hostile_server() -> tuple[web.AppRunner, str]:
    async def bomb(request: web.Request) -> web.Response:
        return web.Response(body=BOMB, content_type="text/calendar")

    async def token(request: web.Request) -> web.Response:
        return web.json_response({"access_token": "t", "expires_in": 3600})

    async def view(request: web.Request) -> web.Response:
        return web.Response(body=b"[" * 200_000, content_type="application/json")

    app = web.Application()
    app.router.add_get("/bomb.ics", bomb)
    app.router.add_post("/tenant/oauth2/v2.0/token", token)
    app.router.add_get("/v1.0/users/{mailbox}/calendarView", view)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner, f"http://127.0.0.1:{port}"


def _config(url: str, parse_seconds: int) -> str:
    return (f"[limits]\ncalendar_parse_seconds = {parse_seconds}\n\n"
            f'[[calendars]]\nuser = "u0"\nkind = "ics"\nurl = "{url}/bomb.ics"\nrefresh = 5\n\n'
            '[[calendars]]\nuser = "u1"\nkind = "m365"\ntenant = "tenant"\n'
            'client_id = "app"\nclient_secret_env = "BENCH_GRAPH_SECRET"\n'
            f'mailbox = "m@example.com"\nauthority = "{url}"\ngraph = "{url}/v1.0"\nrefresh = 5\n')


async def _reads(daemon: DaemonProcess, ids: list[str], n: int) -> list[float]:
    took: list[float] = []
    async with aiohttp.ClientSession(
            headers=daemon.headers,
            connector=aiohttp.TCPConnector(local_addr=("127.0.0.2", 0))) as http:
        for i in range(n):
            started = time.perf_counter()
            async with http.get(f"{daemon.url}/v1/presence/{ids[i % len(ids)]}") as resp:
                await resp.read()
                if resp.status != 200:
                    raise RuntimeError(f"GET answered {resp.status}")
            took.append(time.perf_counter() - started)
            await asyncio.sleep(0.01)
    return took


async def _refresh_forever(daemon: DaemonProcess, stop: asyncio.Event) -> int:
    asked = 0
    async with aiohttp.ClientSession(headers=daemon.headers) as http:
        while not stop.is_set():
            for user in ("u0", "u1"):
                with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                    async with http.post(f"{daemon.url}/v1/calendars/{user}/refresh",
                                         timeout=aiohttp.ClientTimeout(total=90)) as resp:
                        await resp.read()
                        asked += 1
            await asyncio.sleep(0.2)
    return asked


async def _slow(port: int, stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    while not stop.is_set():
        sock = socket.socket()
        sock.setblocking(False)
        try:
            await loop.sock_connect(sock, ("127.0.0.1", port))
            await loop.sock_sendall(sock, b"GET /v1/status HTTP/1.1\r\nHost: x\r\nX-Slow: ")
            while not stop.is_set():
                try:
                    async with asyncio.timeout(1):
                        if await loop.sock_recv(sock, 1024) == b"":
                            break  # dropped by the daemon: open another
                except TimeoutError:
                    await loop.sock_sendall(sock, b"x")
        except OSError:
            await asyncio.sleep(0.2)
        finally:
            sock.close()


async def run(quick: bool) -> list[Row]:
    reads = 50 if quick else 600
    ids = users(100 if quick else 1000)
    raise_fd_limit(FLOOD + 500)
    fake = BenchFake()
    fake.hints[:] = [Hint(u, "internal", [f"PJSIP/{u}"], f"CustomPresence:{u}")
                     for u in ["u0", "u1", *ids]]
    await fake.start()
    server, url = await _hostile_server()
    workdir = Path(tempfile.mkdtemp(prefix="astp-bench-hostile-"))
    daemon = DaemonProcess(fake.port, workdir, env_extra={"BENCH_GRAPH_SECRET": "x"})
    config = workdir / "astpresence.toml"
    workdir.mkdir(parents=True, exist_ok=True)
    parse_seconds = 1 if quick else PARSE_SECONDS
    config.write_text(_config(url, parse_seconds), encoding="utf-8")
    try:
        await daemon.start(extra_args=["--config", str(config)])
        await daemon.wait_synced(60)
        quiet = await _reads(daemon, ids, reads)
        stop = asyncio.Event()
        refresher = asyncio.create_task(_refresh_forever(daemon, stop))
        await asyncio.sleep(1)
        during_feeds = await _reads(daemon, ids, reads)
        stop.set()
        asked = await refresher
        # the attacker is a process of its own: its 1,100 sockets must not slow the
        # measuring client's event loop (that would measure the bench, not the daemon)
        flooder = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bench.hostile", str(daemon.http_port), stdin=PIPE,
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
        await asyncio.sleep(3)
        during_flood = await _reads(daemon, ids, reads)
        assert flooder.stdin is not None
        flooder.stdin.close()  # the flooder stops when its stdin closes
        await asyncio.wait_for(flooder.wait(), 30)
        rss = (proc_status_kb(daemon.pid, "VmHWM") or 0) / 1024
    finally:
        await daemon.stop()
        await server.cleanup()
        await fake.stop()
    base = ms(percentile(quiet, 99))
    rows = [Row(SCENARIO, "API p99, quiet", base, "ms",
                note=f"{reads} reads of /v1/presence, one at a time, 1,000 users")]
    for name, took, note in (
            ("API p99, hostile calendars", during_feeds,
             f"an ICS bomb (parse cut at {parse_seconds} s) and a Graph answer 200,000 "
             f"deep, refreshed {asked} times meanwhile"),
            ("API p99, connection flood", during_flood,
             f"{FLOOD} slow-header connections from another address")):
        p99 = ms(percentile(took, 99))
        target, ok = at_most(p99, 50.0)
        rows.append(Row(SCENARIO, name, p99, "ms", target, ok, base, ratio(p99, base),
                        note=note))
    target, ok = at_most(rss, 300.0)
    rows.append(Row(SCENARIO, "daemon peak RSS", rss, "MB", target, ok,
                    note="VmHWM of the daemon (the parser workers are separate processes "
                         "with a 1 GiB address-space limit each)"))
    return rows


async def _flood(port: int) -> None:
    """The flooder process: FLOOD slow connections until stdin closes."""
    raise_fd_limit(FLOOD + 200)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    flood = [asyncio.create_task(_slow(port, stop)) for _ in range(FLOOD)]
    await reader.read()  # EOF: the bench is done
    stop.set()
    await asyncio.gather(*flood)


if __name__ == "__main__":
    asyncio.run(_flood(int(sys.argv[1])))
