"""Scenario 3: resync after login, with 10,000 presences, 20,000 devices, 10,000 hints.

The fake holds ``exten => N,hint,PJSIP/N&Custom:presence-N,CustomPresence:N``
for 10,000 users, their phones NOT_INUSE, the helper devices INVALID, and a
presence for every user (mixed states, UTF-8 messages). The daemon
(``python -m astpresence serve``, own process) logs in, reads the three lists
and rebuilds its state:

- cold: empty store, so every presence is adopted (10,000 sources, effective
  rows and history entries written);
- warm: the same daemon restarted on the same store: nothing to adopt.

"login -> synced" runs from the fake's read of the Login action to the first
``GET /v1/status`` (polled every 10 ms) that reports synced. Peak RSS is the
daemon process's VmHWM, read from /proc once it is synced.

Baselines: the same lists read by bench/rawami.py (login -> last list
complete, the fake's own cost included), and the VmHWM of the same daemon
synced with a one-user PBX.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path
from typing import Any

from .common import RawClient, users
from .fake import BenchFake
from .procs import DaemonProcess, proc_status_kb
from .report import Row, at_most, ratio
from .tests_import import Hint

SCENARIO = "3 resync"

PRESENCES = [
    ("available", "", ""),
    ("away", "lunch", "Back at 14:00 — à tout à l'heure"),
    ("dnd", "meeting", "Réunion « budget 2027 », salle Århus"),
    ("xa", "holiday", "Zurück am Montag, 9:00"),
    ("chat", "", "会議中ですが、チャットは可"),
]


def seed(fake: BenchFake, n: int) -> None:
    ids = users(n)
    fake.hints[:] = [Hint(u, "internal", [f"PJSIP/{u}", f"Custom:presence-{u}"],
                          f"CustomPresence:{u}") for u in ids]
    for u in ids:
        fake.devices[f"PJSIP/{u}"] = "NOT_INUSE"
        fake.devices[f"Custom:presence-{u}"] = "INVALID"
    for i, u in enumerate(ids):
        fake.presences[u] = PRESENCES[i % len(PRESENCES)]


async def sync_daemon(fake: BenchFake, workdir: Path) -> dict[str, Any]:
    """Start a daemon, wait until synced; stop it. Times are from the Login."""
    logins = len(fake.login_times)
    daemon = DaemonProcess(fake.port, workdir)
    await daemon.start()
    try:
        synced_at, status = await daemon.wait_synced(timeout=120)
        if len(fake.login_times) != logins + 1:
            raise RuntimeError(f"expected one login, saw {len(fake.login_times) - logins}")
        hwm = proc_status_kb(daemon.pid, "VmHWM")
        if hwm is None:
            raise RuntimeError("cannot read the daemon's VmHWM from /proc")
        return {
            "login_to_synced": synced_at - fake.login_times[-1],
            "start_to_synced": synced_at - daemon.started_at,
            "daemon_reported": status["ami"].get("last_sync_seconds"),
            "users": status.get("users"),
            "peak_rss_mb": hwm / 1024,
        }
    finally:
        code = await daemon.stop(timeout=60)
        if code not in (0, None):
            print(f"warning: daemon exited with {code}:\n{daemon.log_tail()}", file=sys.stderr)


async def raw_lists(fake: BenchFake) -> float:
    raw = await RawClient.start("lists", fake.port)
    try:
        await raw.expect("ready", timeout=30)
        done = await raw.expect("done", timeout=120)
    finally:
        await raw.stop()
    items = done["items"]
    expected = {"PresenceStateList": len(fake.presences), "DeviceStateList": len(fake.devices),
                "ExtensionStateList": len(fake.hints)}
    if items != expected:
        raise RuntimeError(f"raw client read {items}, expected {expected}")
    return float(done["t"]) - fake.login_times[-1]


async def run(quick: bool) -> list[Row]:
    n = 500 if quick else 10_000
    with tempfile.TemporaryDirectory(prefix="astp-bench-resync-") as tmp:
        idle_fake = BenchFake()
        seed(idle_fake, 1)
        await idle_fake.start()
        try:
            idle = await sync_daemon(idle_fake, Path(tmp) / "idle")
        finally:
            await idle_fake.stop()
        fake = BenchFake()
        seed(fake, n)
        await fake.start()
        try:
            cold = await sync_daemon(fake, Path(tmp) / "pbx")
            warm = await sync_daemon(fake, Path(tmp) / "pbx")
            raw = await raw_lists(fake)
        finally:
            await fake.stop()
    for label, r in (("cold", cold), ("warm", warm)):
        if r["users"] != n:
            raise RuntimeError(f"{label}: daemon reports {r['users']} users, expected {n}")
    sizes = f"{n:,} presences, {2 * n:,} devices, {n:,} hints"
    rows = []
    for label, r in (("cold store", cold), ("warm store", warm)):
        t, ok = at_most(r["login_to_synced"], 3.0)
        rows.append(Row(SCENARIO, f"login -> synced, {label}", r["login_to_synced"], "s", t, ok,
                        raw, ratio(r["login_to_synced"], raw),
                        note=(f"{sizes}; baseline = bench/rawami.py reading the same 3 lists; "
                              f"daemon's own last_sync_seconds {r['daemon_reported']:.2f} s, "
                              f"process start -> synced {r['start_to_synced']:.2f} s")))
    for label, r in (("cold store", cold), ("warm store", warm)):
        t, ok = at_most(r["peak_rss_mb"], 150)
        rows.append(Row(SCENARIO, f"peak RSS, {label}", r["peak_rss_mb"], "MB", t, ok,
                        idle["peak_rss_mb"], ratio(r["peak_rss_mb"], idle["peak_rss_mb"]),
                        note="VmHWM of the daemon process once synced; baseline = same "
                             "daemon synced with a 1-user PBX" if label == "cold store" else ""))
    rows[-1].extra = {"idle": idle, "cold": cold, "warm": warm, "raw_lists_s": raw}
    return rows
