"""The presence service: what astpresence knows and decides, without sockets.

It holds the current state in memory, persists every change through a
:class:`~astpresence.store.base.Store` before acknowledging it, and tells a
writer (the AMI bridge) which values Asterisk should receive.

Own writes vs. changes made elsewhere
-------------------------------------
Every Setvar we send comes back as a ``PresenceStateChange``. Before a write
goes out its value is appended to the user's *in-flight* queue; an incoming
change equal to a queued value is our echo: it is consumed (with every older
queued value, which Asterisk has overwritten by then) and only updates what we
know Asterisk holds. Any other change was made elsewhere (feature code, Digium
phone, ``presencestate change`` on the CLI, another AMI client) and is adopted
as a manual change. If it arrived while our write was still in flight,
Asterisk applies our older write after it; the echo is then recognised as
ours, Asterisk differs from the adopted value, and the writer re-asserts the
adopted value once. The newest information the daemon received wins, and the
two sides converge without fighting.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable, Iterable

from .model import NOT_SET, DeviceState, InvalidInput, Presence, parse_device_state
from .store.base import (
    Batch,
    EffectiveRecord,
    HistoryEntry,
    SourceRecord,
    Store,
    UserRecord,
)
from .users import UserDirectory, user_from_hint, user_id_from_provider

logger = logging.getLogger(__name__)

MANUAL = "manual"
#: history ``source`` of a change adopted from Asterisk (made outside astpresence)
ASTERISK = "asterisk"
DEFAULT_SOURCE = "default"
#: A user whose echoes never come back (module not loaded) must not grow a queue.
MAX_IN_FLIGHT = 32


class UnknownUser(LookupError):
    def __init__(self, uid: str) -> None:
        super().__init__(f"unknown user {uid!r}")
        self.uid = uid


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


@dataclass(frozen=True, slots=True)
class PresenceView:
    """A user's effective presence as clients see it."""

    user: str
    presence: Presence
    source: str
    actor: str
    since: datetime | None
    pending: bool

    def to_json(self) -> dict[str, Any]:
        return {
            "user": self.user,
            "state": self.presence.state.value,
            "subtype": self.presence.subtype,
            "message": self.presence.message,
            "source": self.source,
            "actor": self.actor,
            "since": self.since.isoformat() if self.since else None,
            "pending": self.pending,
        }


@dataclass(slots=True, eq=False)
class Subscription:
    """A listener's bounded queue of change events."""

    queue: asyncio.Queue[dict[str, Any]] = field(
        default_factory=lambda: asyncio.Queue(maxsize=1000)
    )
    overflowed: bool = False


class GroupCommitter:
    """One writer: queues batches and commits whatever queued up in one go.

    Each caller waits for the commit that contains its batch, so an
    acknowledged change is durable, and a burst costs one transaction.
    """

    def __init__(self, store: Store, max_batches: int = 2000) -> None:
        self._store = store
        self._queue: asyncio.Queue[tuple[Batch, asyncio.Future[None]]] = asyncio.Queue()
        self._max = max_batches
        self._task: asyncio.Task[None] | None = None
        self.commits = 0

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="store-writer")

    async def stop(self) -> None:
        if self._task is None:
            return
        await self._queue.join()
        self._task.cancel()
        try:
            await self._task
        except asyncio.CancelledError:
            pass
        self._task = None

    async def submit(self, batch: Batch) -> None:
        if not batch:
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        await self._queue.put((batch, fut))
        await fut

    async def _run(self) -> None:
        while True:
            items = [await self._queue.get()]
            while len(items) < self._max and not self._queue.empty():
                items.append(self._queue.get_nowait())
            merged = Batch()
            for batch, _ in items:
                merged.extend(batch)
            try:
                await self._store.commit(merged)
                self.commits += 1
                for _, fut in items:
                    if not fut.done():
                        fut.set_result(None)
            except Exception as exc:  # every waiter must learn about it
                logger.error("store write failed: %s", exc)
                for _, fut in items:
                    if not fut.done():
                        fut.set_exception(exc)
            finally:
                for _ in items:
                    self._queue.task_done()


class PresenceService:
    """State, decisions and persistence for every user's presence."""

    def __init__(
        self,
        store: Store,
        config_users: Iterable[UserRecord] = (),
        *,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self._store = store
        self._clock = clock
        self.users = UserDirectory(config_users)
        self._sources: dict[str, dict[str, SourceRecord]] = {}
        self._effective: dict[str, EffectiveRecord] = {}
        self._asterisk: dict[str, Presence] = {}  # last value seen in Asterisk
        self._in_flight: dict[str, collections.deque[Presence]] = {}
        self._failed: dict[str, Presence] = {}  # refused by Asterisk; not retried
        self._dirty: set[str] = set()
        self.devices: dict[str, DeviceState] = {}
        self.wakeup = asyncio.Event()  # set when there is something to write
        self.synced = False
        self.last_sync: datetime | None = None
        self._committer = GroupCommitter(store)
        self._subs: set[Subscription] = set()
        self._seq = 0
        self.adopted = 0
        self.echoes = 0

    # -- lifecycle -------------------------------------------------------

    async def start(self) -> None:
        """Load everything from the store and start the writer."""
        self.users.load(await self._store.load_users())
        for rec in await self._store.load_sources():
            self._sources.setdefault(rec.user, {})[rec.source] = rec
        for eff in await self._store.load_effective():
            self._effective[eff.user] = eff
        self._asterisk = dict(await self._store.load_asterisk())
        last = await self._store.get_meta("last_sync")
        self.last_sync = datetime.fromisoformat(last) if last else None
        self._committer.start()
        pending = len(self.pending_users())
        logger.info(
            "loaded %d users, %d presences (%d not yet written to Asterisk)",
            len(self.users.ids()), len(self._effective), pending,
        )

    async def stop(self) -> None:
        await self._committer.stop()
        for sub in list(self._subs):
            self.unsubscribe(sub)

    # -- queries ---------------------------------------------------------

    def require_user(self, uid: str) -> UserRecord:
        user = self.users.get(uid)
        if user is None:
            raise UnknownUser(uid)
        return user

    def view(self, uid: str) -> PresenceView:
        self.require_user(uid)
        eff = self._effective.get(uid)
        pending = self._is_pending(uid)
        if eff is None:
            return PresenceView(uid, NOT_SET, DEFAULT_SOURCE, "", None, pending)
        manual = self._sources.get(uid, {}).get(eff.source)
        actor = manual.actor if manual is not None else ""
        return PresenceView(uid, eff.presence, eff.source, actor, eff.since, pending)

    def views(self) -> list[PresenceView]:
        return [self.view(uid) for uid in self.users.ids()]

    async def history(self, uid: str, limit: int) -> list[HistoryEntry]:
        self.require_user(uid)
        return await self._store.history(uid, limit)

    def pending_users(self) -> list[str]:
        return [uid for uid in self._effective if self._is_pending(uid)]

    def asterisk_value(self, uid: str) -> Presence:
        return self._asterisk.get(uid, NOT_SET)

    # -- changes made through astpresence -------------------------------

    async def set_manual(self, uid: str, presence: Presence, actor: str) -> PresenceView:
        """A person or operator chose a presence. Durable when this returns."""
        self.require_user(uid)
        now = self._clock()
        rec = SourceRecord(uid, MANUAL, presence, now, actor)
        batch = Batch(put_sources=[rec])
        self._sources.setdefault(uid, {})[MANUAL] = rec
        self._failed.pop(uid, None)
        self._recompute(uid, now, batch, history_source=MANUAL, actor=actor,
                        reason="set by " + actor)
        await self._committer.submit(batch)
        return self.view(uid)

    async def clear_manual(self, uid: str, actor: str) -> PresenceView:
        """Remove the manual presence; the user falls back to not_set."""
        self.require_user(uid)
        now = self._clock()
        batch = Batch(delete_sources=[(uid, MANUAL)])
        self._sources.get(uid, {}).pop(MANUAL, None)
        self._failed.pop(uid, None)
        self._recompute(uid, now, batch, history_source=MANUAL, actor=actor,
                        reason="cleared by " + actor)
        await self._committer.submit(batch)
        return self.view(uid)

    def _decide(self, uid: str) -> tuple[Presence, str, str]:
        """(presence, source, rule) from the user's contributions."""
        manual = self._sources.get(uid, {}).get(MANUAL)
        if manual is None:
            return NOT_SET, DEFAULT_SOURCE, "default"
        return manual.presence, MANUAL, MANUAL

    def _recompute(
        self, uid: str, now: datetime, batch: Batch, *, history_source: str, actor: str,
        reason: str,
    ) -> bool:
        presence, source, _rule = self._decide(uid)
        old = self._effective.get(uid)
        old_presence = old.presence if old is not None else NOT_SET
        if old is not None and old.presence == presence and old.source == source:
            return False
        eff = EffectiveRecord(uid, presence, source, reason, now)
        self._effective[uid] = eff
        batch.put_effective.append(eff)
        if old_presence != presence:
            batch.history.append(
                HistoryEntry(now, uid, old.presence if old else None, presence,
                             history_source, actor, reason)
            )
            self._publish(uid, old_presence)
        self._mark_dirty(uid)
        return True

    # -- what Asterisk tells us -----------------------------------------

    async def on_presence_change(self, presentity: str, presence: Presence) -> None:
        """A live ``PresenceStateChange``: our echo or a change made elsewhere."""
        uid = user_id_from_provider(presentity)
        if uid is None:
            return
        batch = Batch()
        queue = self._in_flight.get(uid)
        self._asterisk[uid] = presence
        batch.put_asterisk.append((uid, presence))
        if queue and presence in queue:
            # Ours. Asterisk applies writes in the order sent, so queued values
            # before this one have been overwritten already.
            while queue.popleft() != presence:
                pass
            self.echoes += 1
            logger.debug("echo of our write for %s: %s", uid, presence.state.value)
            self._mark_dirty(uid)
        elif uid in self.users:
            logger.info(
                "presence of %s changed in Asterisk to %s; adopting it as a manual change",
                uid, presence.state.value,
            )
            self.adopted += 1
            self._adopt(uid, presence, batch, reason="changed in Asterisk")
        await self._committer.submit(batch)

    def _adopt(self, uid: str, presence: Presence, batch: Batch, *, reason: str) -> None:
        now = self._clock()
        rec = SourceRecord(uid, MANUAL, presence, now, ASTERISK)
        self._sources.setdefault(uid, {})[MANUAL] = rec
        batch.put_sources.append(rec)
        self._failed.pop(uid, None)
        self._recompute(uid, now, batch, history_source=ASTERISK, actor=ASTERISK, reason=reason)

    def on_device_change(self, device: str, state: str) -> None:
        try:
            self.devices[device] = parse_device_state(state)
        except InvalidInput as exc:
            logger.warning("ignoring DeviceStateChange for %s: %s", device, exc)

    async def on_hint(self, exten: str, context: str, hint: str) -> None:
        """A hint seen in ExtensionStatus/PresenceStatus: maybe a new user."""
        user = user_from_hint(exten, context, hint)
        if user is not None and self.users.add_hint_user(user):
            logger.info("user %s found in hint %s@%s", user.id, exten, context)
            await self._store.save_users([user])

    async def resync(
        self,
        presences: dict[str, Presence],
        hints: list[tuple[str, str, str]],
        devices: dict[str, str],
    ) -> dict[str, int]:
        """Rebuild from what Asterisk holds after a login.

        ``presences`` maps presentity names (``CustomPresence:2000``) to values;
        absent ones are not_set (Asterisk drops them from astdb). For each user:
        - Asterisk equals what we want: nothing to do;
        - Asterisk changed while we were away and we have no unsent change:
          adopt it (history source ``asterisk``);
        - we have a change Asterisk never got: write it (it was acknowledged
          to a client; on a conflict with a change in Asterisk it wins, and a
          warning says so);
        nothing is assumed from before the reconnect.
        """
        found: list[UserRecord] = []
        for exten, context, hint in hints:
            user = user_from_hint(exten, context, hint)
            if user is not None and self.users.add_hint_user(user):
                found.append(user)
        if found:
            await self._store.save_users(found)
        self.devices = {}
        for device, state in devices.items():
            self.on_device_change(device, state)
        self._in_flight.clear()
        self._failed.clear()

        by_user: dict[str, Presence] = {}
        for presentity, value in presences.items():
            uid = user_id_from_provider(presentity)
            if uid is not None:
                by_user[uid] = value
        batch = Batch()
        counts = {"adopted": 0, "to_write": 0, "unchanged": 0, "conflicts": 0}
        for uid in self.users.ids():
            now_value = by_user.get(uid, NOT_SET)
            known = self._asterisk.get(uid, NOT_SET)
            eff = self._effective.get(uid)
            desired = eff.presence if eff is not None else NOT_SET
            if now_value != known or uid not in self._asterisk:
                self._asterisk[uid] = now_value
                batch.put_asterisk.append((uid, now_value))
            if now_value == desired:
                counts["unchanged"] += 1
            elif now_value != known and desired == known:
                self._adopt(uid, now_value, batch,
                            reason="changed in Asterisk while astpresence was away")
                counts["adopted"] += 1
            else:
                if now_value != known:
                    counts["conflicts"] += 1
                    logger.warning(
                        "%s: Asterisk has %s but a change made through astpresence while "
                        "Asterisk was unreachable (%s) is newer; writing it",
                        uid, now_value.state.value, desired.state.value,
                    )
                counts["to_write"] += 1
                self._mark_dirty(uid)
        now = self._clock()
        batch.meta["last_sync"] = now.isoformat()
        await self._committer.submit(batch)
        self.last_sync = now
        self.synced = True
        self.wakeup.set()
        return counts

    def link_lost(self) -> None:
        """The AMI link is down: nothing in flight will be confirmed."""
        self.synced = False
        self._in_flight.clear()

    # -- the writer's side ----------------------------------------------

    def _is_pending(self, uid: str) -> bool:
        eff = self._effective.get(uid)
        desired = eff.presence if eff is not None else NOT_SET
        queue = self._in_flight.get(uid)
        last = queue[-1] if queue else self._asterisk.get(uid, NOT_SET)
        return last != desired

    def _mark_dirty(self, uid: str) -> None:
        self._dirty.add(uid)
        self.wakeup.set()

    def take_writes(self) -> list[tuple[str, Presence]]:
        """Values to send now; each is registered as in flight before it goes out."""
        self.wakeup.clear()
        if not self.synced:
            return []
        out: list[tuple[str, Presence]] = []
        dirty, self._dirty = self._dirty, set()
        for uid in dirty:
            if not self._is_pending(uid):
                continue
            eff = self._effective.get(uid)
            desired = eff.presence if eff is not None else NOT_SET
            if self._failed.get(uid) == desired:
                continue
            queue = self._in_flight.setdefault(uid, collections.deque())
            if len(queue) >= MAX_IN_FLIGHT:
                queue.popleft()
            queue.append(desired)
            out.append((uid, desired))
        return out

    def write_failed(self, uid: str, presence: Presence, error: str) -> None:
        """Asterisk refused the write; it will not be retried until the next change."""
        queue = self._in_flight.get(uid)
        if queue and presence in queue:
            queue.remove(presence)
        self._failed[uid] = presence
        logger.error("writing presence of %s to Asterisk failed: %s", uid, error)

    # -- change events for clients --------------------------------------

    def subscribe(self) -> Subscription:
        sub = Subscription()
        self._subs.add(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        self._subs.discard(sub)

    @property
    def subscribers(self) -> int:
        return len(self._subs)

    def _publish(self, uid: str, old: Presence) -> None:
        if not self._subs:
            return
        self._seq += 1
        view = self.view(uid)
        new = view.presence
        changed = [
            name
            for name, a, b in (
                ("state", old.state, new.state),
                ("subtype", old.subtype, new.subtype),
                ("message", old.message, new.message),
            )
            if a != b
        ]
        event = {"seq": self._seq, "user": uid, "presence": view.to_json(), "changed": changed}
        for sub in list(self._subs):
            try:
                sub.queue.put_nowait(event)
            except asyncio.QueueFull:
                sub.overflowed = True
                self._subs.discard(sub)
