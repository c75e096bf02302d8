"""Scenario 11: Teams presence both ways for 5,000 people.

The fake Graph (tests/support/teams_graph.py) holds 5,000 people mapped by
object id, the daemon subscribes to their presence (notifications to its
``/v1/hooks/teams``). For the measured window, at the same time:

- 100 presence changes a second in Teams (half the people, each flipping
  between DoNotDisturb/Presenting and Available in their client), timed from
  the change to its presence event on the daemon's stream;
- 100 calls a second on Asterisk (the other half, each call lasting ``hold``
  seconds), timed from the device event to ``setPresence`` (and from the
  hang-up to ``clearPresence``) arriving at Graph.

Run twice: with Graph's budget (``max_requests = 45`` a second for reads and
for writes, under the published 1,500 per 30 s per API) and without it
(1,000), which shows the daemon's own latency. Target: p99 under 2 s each way
without the budget. With it, calls beyond the write budget are coalesced (a
call that ends before its turn is never sent): the share of calls shown is
printed. Also: Graph requests per minute, peak RSS.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp

from .common import users
from .fake import BenchFake
from .procs import DaemonProcess, proc_status_kb
from .report import Row, at_most, percentile
from .tests_import import Hint, TeamsGraphServer

SCENARIO = "11 teams"


def config(graph: TeamsGraphServer, url: str, ids: dict[str, str], budget: float) -> str:
    mapping = "".join(f'{uid} = "{oid}"\n' for uid, oid in ids.items())
    return (f'[teams]\ntenant = "contoso"\nclient_id = "bench-app"\n'
            f'client_secret_env = "BENCH_TEAMS_SECRET"\nauthority = "{graph.url}"\n'
            f'graph = "{graph.graph}"\nnotification_url = "{url}/v1/hooks/teams"\n'
            f"max_requests = {budget:g}\npoll = 30\nresync = 3600\n\n[teams.users]\n{mapping}")


class Load:
    def __init__(self, graph: TeamsGraphServer, fake: BenchFake, ids: dict[str, str]) -> None:
        self.graph, self.fake, self.ids = graph, fake, ids
        uids = list(ids)
        self.teams_side, self.phone_side = uids[::2], uids[1::2]
        self.sent: dict[str, tuple[float, bool]] = {}  # uid -> (when, dnd?) of a Teams change
        self.teams_lat: list[float] = []
        #: Every call: [oid, start, end (None: still on), ended by the final hang-up?]
        self.calls: list[list[Any]] = []
        self._on: dict[str, list[Any]] = {}  # oid -> its call now

    async def watch(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        async for msg in ws:
            data = json.loads(msg.data)
            if data.get("type") != "presence":
                continue
            sent = self.sent.get(data["user"])
            if sent is None:
                continue
            dnd = data["presence"]["rule"] == "timed:teams"
            if dnd == sent[1]:
                self.teams_lat.append(time.monotonic() - sent[0])
                del self.sent[data["user"]]

    async def drive(self, seconds: float, rate: float, hold: float) -> None:
        start = time.monotonic()
        flips = calls = 0
        dnd: dict[str, bool] = {}
        ends: list[tuple[float, str]] = []
        while (now := time.monotonic()) - start < seconds:
            for _ in range(flips, int((now - start) * rate)):
                uid = self.teams_side[(flips * 7919) % len(self.teams_side)]
                flips += 1
                if uid in self.sent:
                    continue
                dnd[uid] = not dnd.get(uid, False)
                self.sent[uid] = (time.monotonic(), dnd[uid])
                self.graph.set_client(self.ids[uid], *(("DoNotDisturb", "Presenting")
                                                       if dnd[uid] else ("Available", "Available")))
            for _ in range(calls, int((now - start) * rate)):
                uid = self.phone_side[(calls * 104729) % len(self.phone_side)]
                calls += 1
                oid = self.ids[uid]
                if oid in self._on:
                    continue  # still on the phone
                self._on[oid] = call = [oid, datetime.now(UTC), None, False]
                self.calls.append(call)
                await self.fake.external_device_change(f"PJSIP/{uid}", "INUSE")
                ends.append((now + hold, uid))
            while ends and ends[0][0] <= now:
                _, uid = ends.pop(0)
                self._on.pop(self.ids[uid])[2] = datetime.now(UTC)
                await self.fake.external_device_change(f"PJSIP/{uid}", "NOT_INUSE")
            await asyncio.sleep(0.005)
        for _, uid in ends:  # hang up the rest at once (not timed: a burst of its own)
            call = self._on.pop(self.ids[uid])
            call[2], call[3] = datetime.now(UTC), True
            await self.fake.external_device_change(f"PJSIP/{uid}", "NOT_INUSE")

    def call_latencies(self, since: datetime) -> tuple[list[float], list[float], int]:
        """(start -> setPresence, hang-up -> clearPresence) in seconds, and the calls that
        showed in Teams (a setPresence while they lasted)."""
        writes: dict[str, list[tuple[datetime, str]]] = {}
        for at, oid, action, _ in self.graph.writes:
            if at >= since and action in ("setPresence", "clearPresence"):
                writes.setdefault(oid, []).append((at, action))
        starts, ends, shown = [], [], 0
        for oid, start, end, final in self.calls:
            mine = writes.get(oid, [])
            first_set = next((at for at, a in mine if a == "setPresence" and at >= start), None)
            if first_set is not None and (end is None or first_set <= end):
                shown += 1
                starts.append((first_set - start).total_seconds())
            if end is not None and not final:
                clear = next((at for at, a in mine if a == "clearPresence" and at >= end), None)
                if clear is not None and first_set is not None and first_set <= end:
                    ends.append((clear - end).total_seconds())
        return starts, ends, shown


async def measure(n: int, seconds: float, rate: float, hold: float, budget: float,
                  tmp: Path) -> dict[str, Any]:
    uids = users(n)
    graph = TeamsGraphServer("contoso", "bench-app", "bench-secret")
    await graph.start()
    ids = {uid: graph.add(f"u{uid}@contoso.com", str(uuid.uuid4())).oid for uid in uids}
    fake = BenchFake()
    fake.hints[:] = [Hint(u, "internal", [f"PJSIP/{u}"], f"CustomPresence:{u}") for u in uids]
    for u in uids:
        fake.devices[f"PJSIP/{u}"] = "NOT_INUSE"
    await fake.start()
    daemon = DaemonProcess(fake.port, tmp, env_extra={"BENCH_LOG_LEVEL": "warning",
                                                      "BENCH_TEAMS_SECRET": "bench-secret"})
    path = tmp / "teams.toml"
    path.write_text(config(graph, daemon.url, ids, budget), encoding="utf-8")
    load = Load(graph, fake, ids)
    try:
        await daemon.start(["--config", str(path)])
        await daemon.wait_synced(timeout=120)
        deadline = time.monotonic() + 120
        while len(graph.subs) < (n + 649) // 650 and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        async with aiohttp.ClientSession() as http:
            ws = await http.ws_connect(daemon.url + "/v1/events")
            await ws.send_json({"token": daemon.token, "subscribe": ["*"]})
            watcher = asyncio.create_task(load.watch(ws))
            since, calls0 = datetime.now(UTC), len(graph.calls)
            t0 = time.monotonic()
            await load.drive(seconds, rate, hold)
            t1 = time.monotonic()
            window = graph.calls[calls0:]
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(30):
                    while load.sent:
                        await asyncio.sleep(0.1)
            await asyncio.sleep(min(10.0, hold))  # the last writes
            watcher.cancel()
            await ws.close()
        hwm = proc_status_kb(daemon.pid, "VmHWM") or 0
    finally:
        await daemon.stop(timeout=60)
        await fake.stop()
        await graph.stop()
    starts, ends, shown = load.call_latencies(since)
    writes = sum(1 for _, k in window if k in ("setPresence", "clearPresence",
                                               "setUserPreferredPresence",
                                               "clearUserPreferredPresence", "setStatusMessage"))
    minutes = (t1 - t0) / 60
    return {"teams": load.teams_lat, "starts": starts, "ends": ends, "shown": shown,
            "calls": len(load.calls), "missing": len(load.sent), "rss_mb": hwm / 1024,
            "writes_per_min": writes / minutes, "reads_per_min": (len(window) - writes) / minutes}


def _rows(label: str, r: dict[str, Any], target: bool) -> list[Row]:
    rows = []
    for what, values in (("Teams change -> presence event", r["teams"]),
                         ("call start -> setPresence", r["starts"]),
                         ("hang-up -> clearPresence", r["ends"])):
        if not values:
            rows.append(Row(SCENARIO, f"{what} p99 ({label})", float("nan"), "s",
                            note="none arrived"))
            continue
        p99 = percentile(values, 99)
        if target:
            t, ok = at_most(p99, 2.0)
            rows.append(Row(SCENARIO, f"{what} p99 ({label})", p99, "s", t, ok))
        else:
            rows.append(Row(SCENARIO, f"{what} p99 ({label})", p99, "s"))
    rows.append(Row(SCENARIO, f"calls shown in Teams ({label})",
                    100.0 * r["shown"] / max(r["calls"], 1), "%",
                    note=f"{r['shown']} of {r['calls']} calls"))
    rows.append(Row(SCENARIO, f"Graph writes per minute ({label})", r["writes_per_min"], "/min",
                    note="Graph: 3,000/min per presence API per app and tenant"))
    rows.append(Row(SCENARIO, f"Graph reads per minute ({label})", r["reads_per_min"], "/min"))
    rows.append(Row(SCENARIO, f"daemon peak RSS ({label})", r["rss_mb"], "MB"))
    return rows


async def run(quick: bool) -> list[Row]:
    n, seconds, rate, hold = (100, 3.0, 10.0, 1.0) if quick else (5000, 40.0, 100.0, 20.0)
    rows: list[Row] = []
    for label, budget, target in (("Graph's budget", 45.0, False),
                                  ("no budget", 1000.0, True)):
        with tempfile.TemporaryDirectory(prefix="astp-bench-teams-") as tmp:
            r = await measure(n, seconds, rate, hold, budget, Path(tmp))
        rows += _rows(label, r, target)
    rows[0].note = (f"{n:,} people, {rate:g} Teams changes/s and {rate:g} calls/s "
                    f"({hold:g} s each) for {seconds:g} s")
    return rows
