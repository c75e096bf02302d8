"""Each Asterisk server's side of the engine, made and attached at wiring time.

The engine (engine/service.py) knows a server only as an ``AsteriskNode`` port;
this builds the real one for each configured server: its queue members, its
outbox (the write trackers) and the sync that turns its events into engine calls.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime

from astpresence.asterisk.outbox import Outbox
from astpresence.asterisk.queues import QueueMembers
from astpresence.asterisk.sync import AsteriskSync
from astpresence.domain import mirror
from astpresence.engine.service import PresenceService, utcnow
from astpresence.store.base import Store


def attach_nodes(service: PresenceService, store: Store, *,
                 clock: Callable[[], datetime] = utcnow,
                 retry_clock: Callable[[], float] = time.monotonic) -> dict[str, AsteriskSync]:
    """One :class:`AsteriskSync` per server the service was made for, in order."""
    made: dict[str, AsteriskSync] = {}
    devices = service.devices
    for name in service.node_names:
        members = QueueMembers(service.users, devices)
        outbox = Outbox(service.users, service.rules, members, clock=retry_clock,
                        dnd_device=devices.dnd_device_of if service.dnd_sync
                        else lambda uid: None,
                        wants_mirror=_mirror_wanted_on(service, name), calls=service.calls)
        made[name] = AsteriskSync(service, store, clock, name, outbox, members)
    for name, sync in made.items():
        service.nodes[name] = sync
    return made


def _mirror_wanted_on(service: PresenceService, node: str) -> Callable[[str], bool]:
    """Write a user's BLF mirror to ``node``? With several servers, only where a hint
    has the mirror device (or everywhere, when no hint has it)."""
    if len(service.node_names) == 1:
        return lambda uid: True

    def wanted(uid: str) -> bool:
        device = mirror.mirror_device(uid, service.rules)
        where = service.users.nodes_with_device(uid, device)
        return not where or node in where
    return wanted
