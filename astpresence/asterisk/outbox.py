"""The writer's side of the engine: what to send to Asterisk, and what came of it.

The engine marks users whose wanted values may have changed; the bridge's
writer asks for :meth:`Outbox.take` and reports each outcome back. The three
kinds of writes share one :class:`~astpresence.asterisk.writes.WriteTracker` type, so
own-echo detection, retries and what a lost link or a new login resets are
the same for all of them (writes.py states the rules).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from astpresence.domain import mirror, rules
from astpresence.domain.model import NOT_SET, Presence, State
from astpresence.asterisk.queues import MemberKey, QueueMembers
from astpresence.asterisk.retry import Failure, Failures
from astpresence.domain.rules import RuleConfig
from astpresence.engine.users import UserDirectory
from astpresence.asterisk.writes import (
    DndWrite,
    MirrorWrite,
    PauseWrite,
    PresenceWrite,
    Writes,
    WriteTracker,
)

logger = logging.getLogger(__name__)

Pause = tuple[bool, str]  # (paused, reason) of a queue member


class Outbox:
    def __init__(self, users: UserDirectory, config: RuleConfig, members: QueueMembers, *,
                 clock: Callable[[], float] = time.monotonic,
                 dnd_device: Callable[[str], str | None] = lambda uid: None,
                 wants_mirror: Callable[[str], bool] = lambda uid: True) -> None:
        self._users = users
        self._config = config
        self._members = members
        #: the FreePBX DND device to keep in step with dnd (None: no sync for that user)
        self._dnd_device = dnd_device
        #: does this Asterisk server get the user's BLF mirror (several servers)?
        self._wants_mirror = wants_mirror
        self.dnd: WriteTracker[str, bool] = WriteTracker("freepbx_dnd", False, clock=clock)
        self.presence: WriteTracker[str, Presence] = WriteTracker("presence", NOT_SET,
                                                                  clock=clock)
        self.mirror: WriteTracker[str, str] = WriteTracker("mirror", "", clock=clock)
        self.pauses: WriteTracker[MemberKey, Pause] = WriteTracker("queue_pause", (False, ""),
                                                                   clock=clock)
        self._dirty: set[str] = set()
        self.wakeup = asyncio.Event()  # set when there may be something to write
        self.synced = False  # nothing is sent before the state was read after a login

    def mark(self, uid: str) -> None:
        """``uid``'s wanted values may differ from what Asterisk holds."""
        self._dirty.add(uid)
        self.wakeup.set()

    def failures(self) -> tuple[Failures[str], Failures[str], Failures[MemberKey],
                                Failures[str]]:
        return (self.presence.failures, self.mirror.failures, self.pauses.failures,
                self.dnd.failures)

    def next_retry_in(self) -> float | None:
        """Seconds until a refused write is due again (None: nothing to retry)."""
        waits = [w for f in self.failures() if (w := f.next_retry_in()) is not None]
        return min(waits) if waits else None

    # -- taking the writes ----------------------------------------------------

    def take(self, desired: Callable[[str], Presence]) -> Writes:
        """Everything to send now for the users marked (and refused writes now due)."""
        self.wakeup.clear()
        writes = Writes([], [], [])
        if not self.synced:
            return writes
        self._dirty.update(self.presence.due())
        self._dirty.update(self.mirror.due())
        self._dirty.update(self.dnd.due())
        for key in self.pauses.due():
            member = self._members.get(key)
            owner = self._members.owner(member) if member is not None else None
            if owner is None:
                self.pauses.forget(key)  # the member is gone
            else:
                self._dirty.add(owner)
        dirty, self._dirty = self._dirty, set()
        for uid in dirty:
            want = desired(uid)
            if self.presence.take(uid, want):
                writes.presence.append(PresenceWrite(uid, want))
            if self._config.mirror and uid in self._users and self._wants_mirror(uid):
                state = mirror.mirror_state(want.state, self._config)
                if self.mirror.take(uid, state):
                    writes.mirror.append(
                        MirrorWrite(uid, mirror.mirror_device(uid, self._config), state))
            if self._config.queue_pause:
                writes.pauses.extend(self._pause_writes(uid, want))
            device = self._dnd_device(uid)
            if device is not None and self.dnd.take(uid, want.state is State.DND):
                writes.dnd.append(DndWrite(uid, device, want.state is State.DND))
        return writes

    def _pause_writes(self, uid: str, desired: Presence) -> list[PauseWrite]:
        out = []
        for member in self._members.of(uid):
            paused, reason = self.pauses.current(member.key)
            action = rules.queue_pause_action(desired.state, paused, reason, self._config)
            if action is None:
                continue
            paused = action == "pause"
            reason = rules.pause_reason(desired.state, self._config) if paused else ""
            if self.pauses.take(member.key, (paused, reason)):
                out.append(PauseWrite(member.queue, member.interface, paused, reason, uid))
        return out

    # -- outcomes, from the bridge ----------------------------------------------

    def presence_refused(self, write: PresenceWrite, error: str) -> None:
        self._refused(self.presence.refused(write.user, write.presence, error),
                      f"writing presence of {write.user}", error)

    def mirror_written(self, write: MirrorWrite) -> None:
        self.mirror.seen(write.user, write.state)

    def mirror_refused(self, write: MirrorWrite, error: str) -> None:
        self._refused(self.mirror.refused(write.user, write.state, error),
                      f"writing BLF mirror of {write.user} ({write.state})", error)

    def pause_written(self, write: PauseWrite) -> None:
        self.pauses.failures.clear((write.queue, write.interface))

    def pause_refused(self, write: PauseWrite, error: str) -> None:
        failure = self.pauses.refused((write.queue, write.interface),
                                      (write.paused, write.reason), error)
        self._refused(failure, f"{'pausing' if write.paused else 'unpausing'} "
                               f"{write.interface} in queue {write.queue} for {write.user}",
                      error)

    def dnd_written(self, write: DndWrite) -> None:
        self.dnd.failures.clear(write.user)

    def dnd_refused(self, write: DndWrite, error: str) -> None:
        self._refused(self.dnd.refused(write.user, write.on, error),
                      f"switching FreePBX DND of {write.user} {'on' if write.on else 'off'}",
                      error)

    def _refused(self, failure: Failure, what: str, error: str) -> None:
        logger.warning("%s failed (attempt %d): %s; retrying in %.0f s", what,
                       failure.attempts, error, failure.retry_at - self.presence.failures.now())
        self.wakeup.set()

    # -- the link -------------------------------------------------------------

    def link_lost(self) -> None:
        self.synced = False
        for tracker in (self.presence, self.mirror, self.pauses, self.dnd):
            tracker.link_lost()
