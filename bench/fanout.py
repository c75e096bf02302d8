"""Scenario 4: one presence change delivered to 1,000 WebSocket clients.

The daemon (own process) follows a fake PBX; 1,000 clients (one separate
process, bench/wsswarm.py) connect to ``/v1/events`` with an admin token and
subscribe to every user. Then, every 250 ms, the fake sends a
``DeviceStateChange`` INUSE for a new user; the daemon makes that user "on the
phone" and publishes one event, which every client must receive.

Latency per delivery = the client's receive time (CLOCK_MONOTONIC, on entry to
``data_received``) - the time the fake wrote the AMI event. Reported over all
deliveries (p50, p99: the target) and, per change, for the last client to get
it ("all clients served").

Baseline: bench/rawrelay.py, a minimal AMI -> WebSocket relay (one json.dumps
per change, one send per client), with the same clients and the same fake.
The daemon with a single client is shown for scale.
"""

from __future__ import annotations

import asyncio
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

from .common import RawClient, ms, users
from .endtoend import seed
from .fake import BenchFake, device_change_frame
from .procs import DaemonProcess, clean_env, free_port, raise_fd_limit
from .report import Row, at_most, percentile, ratio
from .tests_import import ROOT

SCENARIO = "4 fan-out"


async def measure(url: str, token: str | None, fake: BenchFake, ids: list[str], clients: int,
                  spacing: float, workdir: Path) -> dict[str, Any]:
    timeout = 60 + len(ids) * spacing * 4
    result_file = workdir / f"deliveries-{clients}-{ids[0]}.json"
    env = clean_env()
    env["BENCH_TOKEN"] = token or ""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bench.wsswarm",
        url.replace("http", "ws", 1) + "/v1/events", str(clients), str(len(ids)),
        str(timeout), str(result_file),
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE, env=env, cwd=str(ROOT),
    )
    swarm = RawClient(proc)  # same line protocol: {"event": ...}
    try:
        await swarm.expect("ready", timeout=120)
        sent: dict[str, float] = {}
        for uid in ids:
            sent[uid] = (await fake.blast([device_change_frame(f"PJSIP/{uid}", "INUSE")],
                                          None))[0]
            await asyncio.sleep(spacing)
        await swarm.expect("done", timeout=timeout + 30)
    finally:
        await swarm.stop()
    deliveries: list[list[tuple[float, str]]] = json.loads(result_file.read_text())
    all_latencies = []
    last_per_change: dict[str, float] = {}
    missing = 0
    for per_client in deliveries:
        seen = {u: t for t, u in per_client}
        for uid in ids:
            if uid not in seen:
                missing += 1
                continue
            lat = seen[uid] - sent[uid]
            all_latencies.append(lat)
            last_per_change[uid] = max(last_per_change.get(uid, 0.0), lat)
    if missing:
        raise RuntimeError(f"{missing} of {clients * len(ids)} deliveries missing")
    per_change = list(last_per_change.values())
    return {
        "clients": clients,
        "changes": len(ids),
        "p50": ms(percentile(all_latencies, 50)),
        "p99": ms(percentile(all_latencies, 99)),
        "all_p50": ms(percentile(per_change, 50)),
        "all_p99": ms(percentile(per_change, 99)),
    }


async def run(quick: bool) -> list[Row]:
    clients = 20 if quick else 1000
    changes = 5 if quick else 40
    spacing = 0.1 if quick else 0.25
    raise_fd_limit(clients * 2 + 512)  # the daemon and the relay inherit it
    ids = users(3 * changes)
    with tempfile.TemporaryDirectory(prefix="astp-bench-fanout-") as tmp:
        work = Path(tmp)
        fake = BenchFake()
        seed(fake, ids)
        await fake.start()
        try:
            daemon = DaemonProcess(fake.port, work / "daemon")
            # every client is on 127.0.0.1: above the per-address default of 512
            (work / "daemon").mkdir(parents=True, exist_ok=True)
            limits = work / "daemon" / "limits.toml"
            limits.write_text(f"[api]\nmax_connections_per_address = {clients + 100}\n")
            try:
                await daemon.start(extra_args=["--config", str(limits)])
                await daemon.wait_synced(timeout=60)
                await daemon.profile(f"fanout-{clients}")
                one = await measure(daemon.url, daemon.token, fake, ids[:changes], 1,
                                    spacing, work)
                many = await measure(daemon.url, daemon.token, fake,
                                     ids[changes:2 * changes], clients, spacing, work)
            finally:
                code = await daemon.stop()
                if code not in (0, None):
                    print(f"warning: daemon exited with {code}:\n{daemon.log_tail()}",
                          file=sys.stderr)
            port = free_port()
            relay = await RawClient.start_module("bench.rawrelay", str(fake.port), str(port))
            try:
                await relay.expect("ready", timeout=30)
                base = await measure(f"http://127.0.0.1:{port}", None, fake,
                                     ids[2 * changes:], clients, spacing, work)
            finally:
                await relay.stop()
        finally:
            await fake.stop()
    what = (f"{clients:,} clients (one process) x {changes} changes, one every "
            f"{spacing * 1000:.0f} ms; AMI event written by the fake -> WebSocket message "
            "received; baseline = bench/rawrelay.py, a minimal AMI->WebSocket relay, same clients")
    rows = [
        Row(SCENARIO, "delivery latency p50", many["p50"], "ms", baseline=base["p50"],
            ratio=ratio(many["p50"], base["p50"]), note=what),
    ]
    t, ok = at_most(many["p99"], 100)
    rows.append(Row(SCENARIO, "delivery latency p99", many["p99"], "ms", t, ok, base["p99"],
                    ratio(many["p99"], base["p99"])))
    rows.append(Row(SCENARIO, "all clients served p50", many["all_p50"], "ms",
                    baseline=base["all_p50"], ratio=ratio(many["all_p50"], base["all_p50"]),
                    note=f"per change, until the last of the {clients:,} clients got it; its "
                         f"p99 is about the worst of the {changes} changes, so no target"))
    rows.append(Row(SCENARIO, "all clients served p99", many["all_p99"], "ms",
                    baseline=base["all_p99"], ratio=ratio(many["all_p99"], base["all_p99"])))
    rows.append(Row(SCENARIO, "delivery latency p99, 1 client", one["p99"], "ms",
                    note="the daemon with a single subscriber, for scale"))
    rows[-1].extra = {"one": one, "many": many, "relay": base}
    return rows
