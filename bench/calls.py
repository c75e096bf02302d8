"""Scenario 9: call handling for 10,000 people, each with rules of their own.

The store holds three rules per person (away: outside callers forwarded after
20 s, everyone else to voicemail; dnd: busy), as ``PUT call-handling`` would
have saved them. The fake holds 10,000 hints, everyone available, so nothing
is written at the first sync. Then:

- a presence change per person (every phone pressing *32 at once:
  PresenceStateChange to away): the AMI writes it takes (astdb DBPut/DBDel of
  astpresence-calls, two kinds of caller: at most 2 per change) and the time
  until the last one has reached Asterisk;
- a reconnect (the link dropped): login -> synced, and how many rules are
  written again (none: the tracker starts from DBGetTree);
- the same after Asterisk lost its astdb: login -> every rule written again.
  Baseline: bench/rawami.py writing as many keys, pipelined, on one session.
"""

from __future__ import annotations

import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from astpresence.engine.calls import META_PREFIX
from astpresence.store.base import Batch
from astpresence.store.sqlite import SqliteStore

from .common import RawClient, users
from .fake import BenchFake, event_frame
from .procs import DaemonProcess
from .report import Row, at_most, ratio
from .tests_import import Hint

SCENARIO = "9 call handling"
FAMILY = "astpresence-calls"
CONFIG = '[calls]\nforward_dial = "Local/{to}@from-internal"\nforward_allow = ["^0171[0-9]+$"]\n'


class CallsFake(BenchFake):
    """Counts the astdb writes of astpresence's family, with the time of the last."""

    def __init__(self) -> None:
        super().__init__()
        self.db_writes = 0
        self.last_db_write = 0.0

    async def _dbput(self, session: Any, m: Any) -> bool:
        self._count(m)
        return await super()._dbput(session, m)

    async def _dbdel(self, session: Any, m: Any) -> bool:
        self._count(m)
        return await super()._dbdel(session, m)

    def _count(self, m: Any) -> None:
        if m.get("Family") == FAMILY:
            self.db_writes += 1
            self.last_db_write = time.monotonic()

    def keys(self) -> int:
        return sum(1 for family, _key in self.astdb if family == FAMILY)


def rules_of(uid: str) -> str:
    return json.dumps({"rules": [
        {"when": "away", "callers": "external", "action": "forward", "to": f"0171{uid}",
         "after": 20},
        {"when": "away", "action": "voicemail"},
        {"when": "dnd", "action": "busy"},
    ], "actor": "bench", "at": "2026-12-07T12:00:00+00:00"})


async def prepare(workdir: Path, ids: list[str]) -> Path:
    workdir.mkdir(parents=True, exist_ok=True)
    store = SqliteStore(workdir / "astpresence.db")
    await store.open()
    try:
        await store.commit(Batch(meta={META_PREFIX + u: rules_of(u) for u in ids}))
    finally:
        await store.close()
    config = workdir / "calls.toml"
    config.write_text(CONFIG, encoding="utf-8")
    return config


async def until(what: str, done: Any, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not within {timeout} s")
        await asyncio.sleep(0.01)


async def relogin(fake: CallsFake, daemon: DaemonProcess, timeout: float) -> float:
    """Drop the link; seconds from the daemon's next login to synced."""
    logins = len(fake.login_times)
    await fake.drop_clients()
    await until("login", lambda: len(fake.login_times) > logins, timeout)
    synced_at, _status = await daemon.wait_synced(timeout)
    return synced_at - fake.login_times[-1]


async def raw_dbput(fake: CallsFake, count: int) -> float:
    raw = await RawClient.start("dbput", fake.port, count)
    try:
        ready = await raw.expect("ready", timeout=30)
        done = await raw.expect("done", timeout=120)
    finally:
        await raw.stop()
    return float(done["t"]) - float(ready["t"])


async def measure(n: int, tmp: Path) -> dict[str, Any]:
    ids = users(n)
    fake = CallsFake()
    fake.hints[:] = [Hint(u, "internal", [f"PJSIP/{u}"], f"CustomPresence:{u}") for u in ids]
    for u in ids:
        fake.devices[f"PJSIP/{u}"] = "NOT_INUSE"
        fake.presences[u] = ("available", "", "")
    config = await prepare(tmp / "pbx", ids)
    await fake.start()
    daemon = DaemonProcess(fake.port, tmp / "pbx")
    try:
        await daemon.start(["--config", str(config)])
        await daemon.wait_synced(timeout=120)
        at_sync = fake.db_writes
        frames = [event_frame([("Event", "PresenceStateChange"), ("Presentity",
                                                                  f"CustomPresence:{u}"),
                               ("Status", "away"), ("Subtype", ""), ("Message", "")])
                  for u in ids]
        for u in ids:
            fake.presences[u] = ("away", "", "")
        started = time.monotonic()
        await fake.blast(frames, None)
        await until("every rule written", lambda: fake.keys() == 2 * n, 120)
        await asyncio.sleep(0.5)  # nothing more may come: counted below
        changes = {"writes": fake.db_writes - at_sync, "seconds": fake.last_db_write - started}
        before = fake.db_writes
        resync = await relogin(fake, daemon, 120)
        await asyncio.sleep(0.5)
        rewritten_after_reconnect = fake.db_writes - before
        for key in [k for k in fake.astdb if k[0] == FAMILY]:
            del fake.astdb[key]  # Asterisk lost its astdb
        logins = len(fake.login_times)
        await fake.drop_clients()
        await until("login", lambda: len(fake.login_times) > logins, 120)
        await until("every rule written again", lambda: fake.keys() == 2 * n, 120)
        lost = fake.last_db_write - fake.login_times[-1]
    finally:
        code = await daemon.stop(timeout=60)
        if code not in (0, None):
            print(f"warning: daemon exited with {code}:\n{daemon.log_tail()}", file=sys.stderr)
        await fake.stop()
    raw_fake = CallsFake()
    await raw_fake.start()
    try:
        raw = await raw_dbput(raw_fake, 2 * n)
    finally:
        await raw_fake.stop()
    return {"n": n, "at_sync": at_sync, "changes": changes, "resync": resync,
            "rewritten_after_reconnect": rewritten_after_reconnect, "lost": lost, "raw": raw}


async def run(quick: bool) -> list[Row]:
    n = 500 if quick else 10_000
    with tempfile.TemporaryDirectory(prefix="astp-bench-calls-") as tmp:
        r = await measure(n, Path(tmp))
    per_change = r["changes"]["writes"] / n
    size = f"{n:,} people with 3 rules each"
    rows = [
        Row(SCENARIO, "AMI writes per presence change", per_change, "writes",
            "1 to 2", 1 <= per_change <= 2,
            note=f"{size}; one change each (PresenceStateChange to away); astdb keys per "
                 f"kind of caller; {r['at_sync']} written at the first sync (everyone "
                 "available: no rule holds)"),
        Row(SCENARIO, f"{n:,} changes -> last rule in astdb", r["changes"]["seconds"], "s",
            note="from the first event sent to the last DBPut received"),
    ]
    t, ok = at_most(r["rewritten_after_reconnect"], 0)
    rows.append(Row(SCENARIO, "rules written again after a reconnect",
                    r["rewritten_after_reconnect"], "writes", t, ok,
                    note=f"login -> synced {r['resync']:.2f} s with {2 * n:,} keys read "
                         "back (DBGetTree)"))
    rows.append(Row(SCENARIO, "astdb lost: login -> every rule written", r["lost"], "s",
                    baseline=r["raw"], ratio=ratio(r["lost"], r["raw"]),
                    note=f"{2 * n:,} DBPut; baseline = bench/rawami.py writing as many "
                         "keys, pipelined, on one session"))
    rows[-1].extra = r
    return rows
