"""The writer's side of the engine: what to send to Asterisk, and what came of it.

The engine marks users whose wanted values may have changed; the bridge's
writer asks for :meth:`Outbox.take` and reports each outcome back. Every kind
of write (write_kinds.py, one table) has a
:class:`~astpresence.asterisk.writes.WriteTracker` of its own, so own-echo
detection, retries and what a lost link or a new login resets are the same for
all of them (writes.py states the rules); nothing here names a kind.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from typing import Any

from astpresence.asterisk.queues import QueueMembers
from astpresence.asterisk.retry import Failures
from astpresence.asterisk.write_kinds import KINDS, Target, WriteKind
from astpresence.asterisk.writes import WriteTracker
from astpresence.domain.model import Presence
from astpresence.domain.rules import RuleConfig
from astpresence.engine.calls import CallHandling
from astpresence.engine.users import UserDirectory

logger = logging.getLogger(__name__)

#: What to send now: kind name -> its writes, in the table's order.
Writes = dict[str, list[Any]]


class Outbox:
    def __init__(self, users: UserDirectory, config: RuleConfig, members: QueueMembers, *,
                 clock: Callable[[], float] = time.monotonic,
                 dnd_device: Callable[[str], str | None] = lambda uid: None,
                 wants_mirror: Callable[[str], bool] = lambda uid: True,
                 calls: CallHandling | None = None) -> None:
        self.users = users
        self.config = config
        self.members = members
        #: the FreePBX DND device to keep in step with dnd (None: no sync for that user)
        self.dnd_device = dnd_device
        #: does this Asterisk server get the user's BLF mirror (several servers)?
        self.wants_mirror = wants_mirror
        #: each person's call handling (the call_rule writes), None: none written
        self.calls = calls
        self._trackers: dict[str, WriteTracker[Any, Any]] = {
            kind.name: WriteTracker(kind.name, kind.default, clock=clock) for kind in KINDS}
        self._dirty: set[str] = set()
        #: There may be something to write that the writer has not taken yet.
        self.pending = False
        #: The link's writer, told once when ``pending`` becomes true (see :meth:`listen`).
        self._listener: Callable[[], None] | None = None
        self.synced = False  # nothing is sent before the state was read after a login

    def tracker(self, kind: str) -> WriteTracker[Any, Any]:
        """The tracker of one kind of write (write_kinds.py)."""
        return self._trackers[kind]

    @property
    def presence(self) -> WriteTracker[str, Presence]:
        """The presence writes (the engine's port: what each server holds)."""
        return self._trackers["presence"]

    def listen(self, on_work: Callable[[], None] | None) -> None:
        """The link's writer: ``on_work()`` when there may be something to write,
        once until the next :meth:`take` (a plain call: no task, no event to wait
        on, per change). None: the writer stopped."""
        self._listener = on_work
        if on_work is not None and self.pending:
            on_work()

    def poke(self) -> None:
        """There may be something to write (a user marked, a sync done, a refusal)."""
        if not self.pending:
            self.pending = True
            if self._listener is not None:
                self._listener()

    def mark(self, uid: str) -> None:
        """``uid``'s wanted values may differ from what Asterisk holds."""
        self._dirty.add(uid)
        if not self.pending:
            self.poke()

    def failures(self) -> Iterable[Failures[Any]]:
        return [tracker.failures for tracker in self._trackers.values()]

    def next_retry_in(self) -> float | None:
        """Seconds until a refused write is due again (None: nothing to retry)."""
        waits = [w for f in self.failures() if (w := f.next_retry_in()) is not None]
        return min(waits) if waits else None

    # -- taking the writes ----------------------------------------------------

    def take(self, wanted: Callable[[str], tuple[Presence, Presence]]) -> Writes:
        """Everything to send now for the users marked (and refused writes now due).
        ``wanted``: a user's (effective, chosen) presence (engine/reads.py)."""
        self.pending = False
        writes: Writes = {kind.name: [] for kind in KINDS}
        if not self.synced:
            return writes
        for kind in KINDS:
            tracker = self._trackers[kind.name]
            for key in tracker.due():
                owner = kind.owner(self, key)
                if owner is None:
                    tracker.forget(key)  # e.g. a queue member that is gone
                else:
                    self._dirty.add(owner)
        dirty, self._dirty = self._dirty, set()
        active = [kind for kind in KINDS if kind.active(self)]
        for uid in dirty:
            want = Target(*wanted(uid))
            for kind in active:
                tracker = self._trackers[kind.name]
                out = writes[kind.name]
                for write in kind.wanted(self, uid, want):
                    if tracker.take(kind.key(write), kind.value(write)):
                        out.append(write)
        return writes

    # -- outcomes, from the bridge ----------------------------------------------

    def written(self, kind: WriteKind[Any, Any, Any], write: Any) -> None:
        tracker = self._trackers[kind.name]
        if kind.confirmed_by_success:
            tracker.seen(kind.key(write), kind.value(write))
        else:
            tracker.failures.clear(kind.key(write))

    def refused(self, kind: WriteKind[Any, Any, Any], write: Any, error: str) -> None:
        failure = self._trackers[kind.name].refused(kind.key(write), kind.value(write), error)
        logger.warning("%s failed (attempt %d): %s; retrying in %.0f s", kind.what(write),
                       failure.attempts, error, failure.retry_at - self.presence.failures.now())
        self.poke()

    # -- the link -------------------------------------------------------------

    def link_lost(self) -> None:
        self.synced = False
        for tracker in self._trackers.values():
            tracker.link_lost()

