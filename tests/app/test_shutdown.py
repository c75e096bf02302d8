"""Shutdown: bounded, and a second Ctrl-C stops at once but still drains the store."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from pathlib import Path

from astpresence.app.lock import DaemonLock
from astpresence.store.sqlite import SqliteStore
from tests.support.e2e import make_config, seed, start_daemon, until
from tests.support.fakeami import FakeAsterisk


async def test_second_interrupt_stops_at_once_and_still_drains(fake_ami: FakeAsterisk,
                                                               tmp_path: Path) -> None:
    seed(fake_ami)
    db = tmp_path / "p.db"
    cfg = make_config(fake_ami, db)
    # An Asterisk that hangs makes the AMI link wait this long for an answer.
    cfg = replace(cfg, ami=replace(cfg.ami, connect_timeout=60.0, action_timeout=60.0,
                                   ping_interval=60.0))
    running = await start_daemon(cfg)
    daemon = running.daemon
    # A change made in Asterisk: stored without anyone waiting for it.
    await fake_ami.external_presence_change("2000", "dnd", "", "from the phone")
    await until(lambda: daemon.service.view("2000").presence.state.value == "dnd")
    # Asterisk hangs; the daemon's next login waits for an answer that never comes.
    fake_ami.stall(True)
    await fake_ami.drop_clients()
    await until(lambda: daemon.bridge.status.state == "connecting", what="reconnect")
    daemon.stop_event.set()  # the first Ctrl-C: shutdown waits for the hung link...
    daemon.force_exit.set()  # ...the second one stops that wait at once
    await asyncio.wait_for(running.task, 5)  # not the 10 s a step may take otherwise
    assert daemon.stopped.is_set()
    store = SqliteStore(db)
    await store.open()
    try:
        history = await store.history("2000", 5)
        assert history and history[0].new.message == "from the phone"
    finally:
        await store.close()
    lock = DaemonLock(str(db))
    lock.acquire()  # released: the next daemon may start
    lock.release()
