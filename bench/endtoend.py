"""Scenario 2: device changes in, presence writes out, through the whole daemon.

The fake Asterisk (this process) holds 10,000 hints
``exten => N,hint,PJSIP/N,CustomPresence:N`` with every phone NOT_INUSE. The
daemon (``python -m astpresence serve``, SQLite in a temporary directory, its
own process) logs in and syncs; then the fake sends one
``DeviceStateChange`` INUSE per user. The default rules make each user "on the
phone", and the daemon writes ``Setvar PRESENCE_STATE(CustomPresence:N)``
``dnd,b24tdGhlLXBob25l,,e``.

Measured at the fake, on CLOCK_MONOTONIC:

- presence changes/s = users / (last Setvar received - first event sent);
- latency per user = time the socket read carrying its Setvar returned -
  time its event was written to the socket.

Twice: at full speed (events written as fast as TCP flow control allows)
and at a fixed 1,000 events/s. Each run starts a fresh fake and daemon.

Baseline: the same fake and events answered by bench/rawami.py, a minimal
client that sends the Setvar as soon as it sees the event (no rules, no
store): the ceiling this harness can measure on this machine.

Then once more at full speed with the store on PostgreSQL (a throwaway local
server, tests/support/postgres.py), against the SQLite daemon of the same run:
target at least half of its throughput.
"""

from __future__ import annotations

import asyncio
import importlib.util
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from .common import PRESENCE_PREFIX, RawClient, ms, users
from .fake import BenchFake, device_change_frame
from .procs import DaemonProcess, proc_cpu_seconds
from .report import Row, at_least, at_most, percentile, ratio
from .tests_import import Hint, PostgresServer

SCENARIO = "2 end-to-end"
PACED_RATE = 1000.0


def seed(fake: BenchFake, ids: list[str]) -> None:
    fake.hints[:] = [Hint(u, "internal", [f"PJSIP/{u}"], f"CustomPresence:{u}") for u in ids]
    fake.devices.update({f"PJSIP/{u}": "NOT_INUSE" for u in ids})
    # A site astpresence already runs on: every registered idle user reads available
    # (rule registered), so the run writes one value per change and nothing else.
    fake.presences.update({u: ("available", "", "") for u in ids})


async def one_run(kind: str, n: int, rate: float | None, workdir: Path,
                  db_url: str = "", loop: str = "") -> dict[str, Any]:
    """One fresh fake + daemon (or raw client); returns throughput and latencies."""
    ids = users(n)
    fake = BenchFake()
    seed(fake, ids)
    await fake.start()
    daemon: DaemonProcess | None = None
    raw: RawClient | None = None
    try:
        if kind == "daemon":
            daemon = DaemonProcess(fake.port, workdir, db_url=db_url, env_extra=(
                {"ASTPRESENCE_EVENT_LOOP": loop} if loop else {}))
            await daemon.start()
            await daemon.wait_synced(timeout=60)
            # Measured once the caller IDs are read: a burst that shared the loop
            # and the link with those 10,000 reads had its p99 at 45-200 ms in
            # about two runs of five (bench/README.md, "A fifth round").
            await daemon.wait_cards()
            await daemon.profile(f"e2e-{'full' if rate is None else 'paced'}-{n}"
                                 f"{'-postgres' if db_url else ''}")
        else:
            raw = await RawClient.start("echo", fake.port, n)
            await raw.expect("ready", timeout=30)
        frames = [device_change_frame(f"PJSIP/{u}", "INUSE") for u in ids]
        pid = daemon.pid if daemon is not None else raw.proc.pid  # type: ignore[union-attr]
        cpu_before, fake_before = proc_cpu_seconds(pid), time.process_time()
        sent = await fake.blast(frames, rate)
        await fake.wait_setvars(PRESENCE_PREFIX, n, timeout=max(60.0, n / 100))
        cpu_after, fake_after = proc_cpu_seconds(pid), time.process_time()
        received = [fake.setvar_times[f"{PRESENCE_PREFIX}{u})"] for u in ids]
        wrong = [u for u in ids[:: max(1, n // 50)]
                 if fake.presences.get(u, ("",))[:2] != ("dnd", "on-the-phone")]
        if wrong:
            raise RuntimeError(f"users {wrong[:5]} not 'dnd / on-the-phone' in the fake")
        latencies = [r - s for r, s in zip(received, sent)]
        span = max(received) - sent[0]
        return {
            "changes_per_s": n / span,
            "send_rate": n / max(1e-9, sent[-1] - sent[0]),
            "p50": ms(percentile(latencies, 50)),
            "p99": ms(percentile(latencies, 99)),
            "max": ms(max(latencies)),
            # CPU seconds per 1,000 changes: the process under test, and the fake
            "cpu_per_1000": (1000 * (cpu_after - cpu_before) / n
                             if cpu_after is not None and cpu_before is not None else None),
            "fake_cpu_per_1000": 1000 * (fake_after - fake_before) / n,
        }
    finally:
        if daemon is not None:
            code = await daemon.stop()
            if code not in (0, None):
                print(f"warning: daemon exited with {code}:\n{daemon.log_tail()}",
                      file=sys.stderr)
        if raw is not None:
            await raw.stop()
        await fake.stop()


async def run(quick: bool) -> list[Row]:
    n = 300 if quick else 10_000
    out: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="astp-bench-e2e-") as tmp:
        for kind in ("daemon", "raw"):
            for label, rate in (("full", None), ("paced", PACED_RATE)):
                out[f"{kind}-{label}"] = await one_run(kind, n, rate, Path(tmp) / f"{kind}-{label}")
        if uvloop_installed():  # the daemon runs uvloop: asyncio's loop for comparison
            out["asyncio-full"] = await one_run("daemon", n, None, Path(tmp) / "asyncio",
                                                loop="asyncio")
        server = PostgresServer()
        try:
            await asyncio.to_thread(server.start)
            url = await asyncio.to_thread(server.create_database)
            out["postgres-full"] = await one_run("daemon", n, None, Path(tmp) / "pg", url)
        finally:
            await asyncio.to_thread(server.cleanup)
    df, dp, rf, rp = out["daemon-full"], out["daemon-paced"], out["raw-full"], out["raw-paced"]
    pg = out["postgres-full"]
    rows = []
    t, ok = at_least(df["changes_per_s"], 5000)
    rows.append(Row(SCENARIO, "presence changes/s, full speed", df["changes_per_s"], "changes/s",
                    t, ok, rf["changes_per_s"], ratio(df["changes_per_s"], rf["changes_per_s"]),
                    note=f"{n:,} users, one DeviceStateChange INUSE each -> one Setvar each; "
                         f"baseline = bench/rawami.py echo client on the same fake"))
    rows.append(Row(SCENARIO, "latency p50, full speed", df["p50"], "ms", baseline=rf["p50"],
                    ratio=ratio(df["p50"], rf["p50"]),
                    note="event written by the fake -> Setvar read by the fake; at full "
                         "speed this is mostly queueing behind earlier events"))
    rows.append(Row(SCENARIO, "latency p99, full speed", df["p99"], "ms", baseline=rf["p99"],
                    ratio=ratio(df["p99"], rf["p99"])))
    rows.append(Row(SCENARIO, f"latency p50 @ {PACED_RATE:.0f} ev/s", dp["p50"], "ms",
                    baseline=rp["p50"], ratio=ratio(dp["p50"], rp["p50"]),
                    note=f"achieved send rate {dp['send_rate']:.0f} events/s"))
    t, ok = at_most(dp["p99"], 20)
    rows.append(Row(SCENARIO, f"latency p99 @ {PACED_RATE:.0f} ev/s", dp["p99"], "ms", t, ok,
                    rp["p99"], ratio(dp["p99"], rp["p99"])))
    rows.extend(cpu_rows(out, n))
    t, ok = at_least(pg["changes_per_s"], 0.5 * df["changes_per_s"])
    rows.append(Row(SCENARIO, "changes/s on PostgreSQL, full speed", pg["changes_per_s"],
                    "changes/s", f">= 0.5x SQLite ({t.removeprefix('>= ')})", ok,
                    df["changes_per_s"], ratio(pg["changes_per_s"], df["changes_per_s"]),
                    note="the same run with [store] url on a local PostgreSQL (fsync on); "
                         "baseline = the SQLite daemon above"))
    rows[-1].extra = out
    return rows


def uvloop_installed() -> bool:
    return importlib.util.find_spec("uvloop") is not None


def cpu_rows(out: dict[str, dict[str, Any]], n: int) -> list[Row]:
    """The issue's targets as ratios to the raw client, and the CPU behind them."""
    df, dp, rf, rp = out["daemon-full"], out["daemon-paced"], out["raw-full"], out["raw-paced"]
    full = ratio(df["changes_per_s"], rf["changes_per_s"])
    paced = ratio(dp["p99"], rp["p99"])
    t, ok = at_least(full or 0, 0.6)
    rows = [Row(SCENARIO, "full speed / raw echo client", full, "ratio", t, ok,
                note="changes/s of the daemon over those of bench/rawami.py, same run")]
    t, ok = at_most(paced or 0, 3.0)
    rows.append(Row(SCENARIO, f"p99 @ {PACED_RATE:.0f} ev/s / raw echo client", paced,
                    "ratio", t, ok))
    for label, key in (("full speed", "full"), (f"@ {PACED_RATE:.0f} ev/s", "paced")):
        mine, raw = out[f"daemon-{key}"], out[f"raw-{key}"]
        if mine["cpu_per_1000"] is None:
            continue  # no /proc
        rows.append(Row(SCENARIO, f"daemon CPU per change, {label}", mine["cpu_per_1000"],
                        "ms", baseline=raw["cpu_per_1000"],
                        ratio=ratio(mine["cpu_per_1000"], raw["cpu_per_1000"]),
                        note="CPU time of the daemon process (every thread) over the "
                             f"{n:,} changes; baseline = the raw client's"))
    if "asyncio-full" in out and out["asyncio-full"]["cpu_per_1000"] is not None:
        std = out["asyncio-full"]
        rows.append(Row(SCENARIO, "presence changes/s, full speed, asyncio's loop",
                        std["changes_per_s"], "changes/s", baseline=df["changes_per_s"],
                        ratio=ratio(std["changes_per_s"], df["changes_per_s"]),
                        note="the daemon with ASTPRESENCE_EVENT_LOOP=asyncio; baseline = "
                             "the same daemon on uvloop (installed, so the default)"))
        rows.append(Row(SCENARIO, "daemon CPU per change, full speed, asyncio's loop",
                        std["cpu_per_1000"], "ms", baseline=df["cpu_per_1000"],
                        ratio=ratio(std["cpu_per_1000"], df["cpu_per_1000"])))
    return rows
