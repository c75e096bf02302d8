"""Scenario 6: HA failover with 10,000 users on PostgreSQL.

Two daemons (``[ha] enabled``) on one throwaway PostgreSQL and the fake
Asterisk of scenario 3 (10,000 hints, presences, 20,000 devices). Node A
leads and is synced; node B waits as a standby. A is killed with SIGKILL:

- **failover -> synced**: from the kill to B's ``/v1/status`` reporting it
  leads and is synced (it took the lock, loaded the state from PostgreSQL and
  resynced from Asterisk);
- **failover -> writing**: from the kill to the fake receiving B's Setvar for
  a call that started right after the kill.

Baseline: the same daemon (not HA) started cold on the same database, process
start to synced: what a manual restart would cost at best.
"""

from __future__ import annotations

import asyncio
import signal
import tempfile
import time
from pathlib import Path

from .common import FIRST_USER, PRESENCE_PREFIX
from .fake import BenchFake, device_change_frame
from .procs import DaemonProcess
from .report import Row, at_most, ratio
from .resync import seed
from .tests_import import PostgresServer

SCENARIO = "6 failover"


async def run(quick: bool) -> list[Row]:
    n = 500 if quick else 10_000
    server = PostgresServer()
    fake = BenchFake()
    seed(fake, n)
    await fake.start()
    nodes: list[DaemonProcess] = []
    try:
        await asyncio.to_thread(server.start)
        url = await asyncio.to_thread(server.create_database)
        with tempfile.TemporaryDirectory(prefix="astp-bench-ha-") as tmp:
            def node(name: str) -> DaemonProcess:
                d = DaemonProcess(fake.port, Path(tmp) / name, db_url=url,
                                  env_extra={"ASTPRESENCE_HA": "1",
                                             "ASTPRESENCE_HA_NODE": name})
                nodes.append(d)
                return d
            a = node("a")
            await a.start()
            await a.wait_synced(timeout=180)
            b = node("b")
            await b.start()
            await b.wait_up(timeout=60)
            assert a.proc is not None
            victim = str(FIRST_USER)  # available: a call overlays it
            killed = time.monotonic()
            a.proc.send_signal(signal.SIGKILL)
            await a.proc.wait()
            synced_at, status = await b.wait_synced(timeout=120)
            await fake.blast([device_change_frame(f"PJSIP/{victim}", "INUSE")], None)
            await fake.wait_setvars(f"{PRESENCE_PREFIX}{victim})", 1, timeout=30)
            wrote_at = fake.setvar_times[f"{PRESENCE_PREFIX}{victim})"]
            if status["ha"]["role"] != "leader":
                raise RuntimeError(f"node b is not the leader: {status['ha']}")
            await b.stop(timeout=60)
            plain = DaemonProcess(fake.port, Path(tmp) / "plain", db_url=url)
            nodes.append(plain)
            await plain.start()
            plain_synced, _ = await plain.wait_synced(timeout=180)
            cold = plain_synced - plain.started_at
    finally:
        for d in nodes:
            await d.stop(timeout=60)
        await fake.stop()
        await asyncio.to_thread(server.cleanup)
    to_synced, to_write = synced_at - killed, wrote_at - killed
    t, ok = at_most(to_synced, 5.0)
    rows = [Row(SCENARIO, "failover -> synced", to_synced, "s", t, ok, cold,
                ratio(to_synced, cold),
                note=f"{n:,} users on PostgreSQL; leader killed with SIGKILL; baseline = a "
                     "cold start of one daemon on the same database (process start -> synced)"),
            Row(SCENARIO, "failover -> writing", to_write, "s", baseline=cold,
                ratio=ratio(to_write, cold),
                note="until the fake received the new leader's Setvar for a call that "
                     "started after the kill")]
    return rows
