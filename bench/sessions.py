"""Scenario 10: 10,000 client sessions heartbeating, plus 100 state changes a second.

10,000 users (their phones registered), each with a token of their own and one
session (``POST /v1/me/sessions``). For the measured window every session
reports every 20 s (``PUT``, its state unchanged: the heartbeat) and 100
sessions a second change state (locked, then active again: each a presence
change, xa/away-from-desk and back). A WebSocket client subscribed to everyone
times each change from the report being sent to its presence event arriving.

Target: p99 from a report to its event under 50 ms at that load. Also printed:
the daemon's CPU (cores) and peak RSS, and the requests per second it served.
No baseline: the figure is absolute.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp

from astpresence.store.sqlite import SqliteStore
from astpresence.web.auth import Role, issue_token

from .common import users
from .fake import BenchFake
from .procs import DaemonProcess, proc_status_kb
from .report import Row, at_most, percentile
from .tests_import import Hint

SCENARIO = "10 sessions"
BEAT = 20.0


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / 100.0  # utime, stime (clock ticks)


async def tokens_for(db: Path, ids: list[str]) -> dict[str, str]:
    store = SqliteStore(db)
    await store.open()
    out = {}
    try:
        for uid in ids:
            # issue_token draws again when an id is taken: among 10,000 ids of 8 hex
            # digits, two alike about one run in 80.
            secret, _ = await issue_token(store, Role.USER, uid, "bench", datetime.now(UTC))
            out[uid] = secret
    finally:
        await store.close()
    return out


class Load:
    def __init__(self, url: str, tokens: dict[str, str]) -> None:
        self.url = url
        self.tokens = tokens
        self.sids: dict[str, str] = {}
        self.sent: dict[str, tuple[float, str]] = {}  # user -> (when, state) of a change
        self.latencies: list[float] = []
        self.requests = 0
        self.errors = 0

    async def put(self, http: aiohttp.ClientSession, uid: str, state: str) -> None:
        headers = {"Authorization": f"Bearer {self.tokens[uid]}"}
        try:
            async with http.put(f"{self.url}/v1/me/sessions/{self.sids[uid]}",
                                json={"state": state}, headers=headers) as resp:
                await resp.read()
                self.requests += 1
                self.errors += resp.status != 200
        except aiohttp.ClientError:
            self.errors += 1

    async def open_all(self, http: aiohttp.ClientSession) -> None:
        sem = asyncio.Semaphore(64)

        async def one(uid: str) -> None:
            async with sem:
                async with http.post(f"{self.url}/v1/me/sessions", json={"kind": "api"},
                                     headers={"Authorization":
                                              f"Bearer {self.tokens[uid]}"}) as resp:
                    body = await resp.json()
                    if resp.status != 201:
                        raise RuntimeError(f"open failed: {resp.status} {body}")
                    self.sids[uid] = body["session"]["id"]

        await asyncio.gather(*(one(u) for u in self.tokens))

    async def watch(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        async for msg in ws:
            data = json.loads(msg.data)
            if data.get("type") != "presence":
                continue
            uid = data["user"]
            sent = self.sent.get(uid)
            if sent is None:
                continue
            locked = data["presence"]["chosen"]["subtype"] == "away-from-desk"
            if locked == (sent[1] == "locked"):
                self.latencies.append(time.monotonic() - sent[0])
                del self.sent[uid]

    async def drive(self, http: aiohttp.ClientSession, seconds: float, changes: float,
                    beat: float) -> None:
        """Heartbeats for every session spread over ``beat``; ``changes``/s toggles."""
        ids = list(self.sids)
        tasks: set[asyncio.Task[None]] = set()
        start = time.monotonic()
        beats_done = flips = 0
        state: dict[str, str] = {}
        while (now := time.monotonic()) - start < seconds:
            due_beats = int((now - start) / beat * len(ids))
            for i in range(beats_done, min(due_beats, beats_done + 500)):
                uid = ids[i % len(ids)]
                tasks.add(asyncio.create_task(self.put(http, uid, state.get(uid, "active"))))
            beats_done = max(beats_done, min(due_beats, beats_done + 500))
            for _ in range(flips, int((now - start) * changes)):
                uid = ids[(flips * 7919) % len(ids)]  # spread over the users
                flips += 1
                if uid in self.sent:
                    continue
                new = "active" if state.get(uid) == "locked" else "locked"
                state[uid] = new
                self.sent[uid] = (time.monotonic(), new)
                tasks.add(asyncio.create_task(self.put(http, uid, new)))
            tasks = {t for t in tasks if not t.done()}
            await asyncio.sleep(0.005)
        await asyncio.gather(*tasks)


async def measure(n: int, seconds: float, changes: float, beat: float,
                  tmp: Path) -> dict[str, Any]:
    ids = users(n)
    fake = BenchFake()
    fake.hints[:] = [Hint(u, "internal", [f"PJSIP/{u}"], f"CustomPresence:{u}") for u in ids]
    for u in ids:
        fake.devices[f"PJSIP/{u}"] = "NOT_INUSE"
    await fake.start()
    daemon = DaemonProcess(fake.port, tmp, env_extra={"BENCH_LOG_LEVEL": "warning"})
    try:
        await daemon.create_token()
        load = Load(daemon.url, await tokens_for(daemon.db, ids))
        await daemon.start()
        await daemon.wait_synced(timeout=120)
        conn = aiohttp.TCPConnector(limit=64)
        async with aiohttp.ClientSession(connector=conn) as http:
            await load.open_all(http)
            ws = await http.ws_connect(daemon.url + "/v1/events")
            await ws.send_json({"token": daemon.token, "subscribe": ["*"]})
            watcher = asyncio.create_task(load.watch(ws))
            await daemon.profile("sessions")  # BENCH_PYSPY=DIR: a flame graph of the window
            cpu0, t0 = cpu_seconds(daemon.pid), time.monotonic()
            await load.drive(http, seconds, changes, beat)
            cpu1, t1 = cpu_seconds(daemon.pid), time.monotonic()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(5):
                    while load.sent:
                        await asyncio.sleep(0.05)
            watcher.cancel()
            await ws.close()
        hwm = proc_status_kb(daemon.pid, "VmHWM") or 0
    finally:
        await daemon.stop(timeout=60)
        await fake.stop()
    return {"latencies": load.latencies, "missing": len(load.sent), "cpu": (cpu1 - cpu0) /
            (t1 - t0), "rss_mb": hwm / 1024, "rate": load.requests / (t1 - t0),
            "errors": load.errors, "n": n}


async def run(quick: bool) -> list[Row]:
    n, seconds, changes, beat = (200, 3.0, 10.0, 2.0) if quick else (10_000, 40.0, 100.0, BEAT)
    with tempfile.TemporaryDirectory(prefix="astp-bench-sessions-") as tmp:
        r = await measure(n, seconds, changes, beat, Path(tmp))
    lat = [x * 1000 for x in r["latencies"]]
    if not lat:
        raise RuntimeError("no state change reached the event stream")
    p99 = percentile(lat, 99)
    t, ok = at_most(p99, 50.0)
    load = (f"{n:,} sessions, a heartbeat each every {beat:g} s, {changes:g} changes/s, "
            f"{seconds:g} s; {r['rate']:.0f} requests/s served, {r['errors']} errors, "
            f"{r['missing']} changes without an event")
    rows = [
        Row(SCENARIO, "report -> presence event p99", p99, "ms", t, ok, note=load),
        Row(SCENARIO, "report -> presence event p50", percentile(lat, 50), "ms"),
        Row(SCENARIO, "daemon CPU", r["cpu"], "cores"),
        Row(SCENARIO, "daemon peak RSS", r["rss_mb"], "MB"),
    ]
    rows[-1].extra = {k: v for k, v in r.items() if k != "latencies"}
    return rows
