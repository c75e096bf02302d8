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
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from . import rules
from .model import NOT_SET, DeviceState, InvalidInput, Presence, parse_device_state
from .retry import Failures
from .rules import DEFAULT_RULES, Decision, DeviceView, RuleConfig
from .logsafe import clip
from .records import EffectiveRecord, HistoryEntry, SourceRecord, UserRecord
from .store.base import Batch, Store
from .users import DEFAULT_MAX_USERS, UserDirectory, user_from_hint, user_id_from_provider

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


class UnknownSource(LookupError):
    def __init__(self, uid: str, name: str) -> None:
        super().__init__(f"user {uid!r} has no source {name!r}")


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class PresenceView:
    """A user's effective presence as clients see it."""

    user: str
    presence: Presence
    source: str
    actor: str
    since: datetime | None
    pending: bool
    rule: str = "default"

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
            "rule": self.rule,
        }


@dataclass(frozen=True, slots=True)
class ChangeEvent:
    """One change of a user's effective presence, numbered for resuming."""

    seq: int
    user: str
    old: dict[str, Any]  # presence objects (PresenceView.to_json) before/after
    new: dict[str, Any]


#: How many recent events a reconnecting client can resume from.
EVENT_BUFFER = 10_000


@dataclass(slots=True, eq=False)
class Subscription:
    """A listener's bounded queue of change events."""

    queue: asyncio.Queue[ChangeEvent] = field(
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
        self._last: asyncio.Future[None] | None = None
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

    def enqueue(self, batch: Batch) -> asyncio.Future[None] | None:
        """Queue a batch without waiting; the future is done once it is committed."""
        if not batch:
            return None
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait((batch, fut))  # unbounded
        self._last = fut
        return fut

    async def submit(self, batch: Batch) -> None:
        """Queue a batch and wait until it is committed (durable)."""
        fut = self.enqueue(batch)
        if fut is not None:
            await fut

    async def drain(self) -> None:
        """Wait until every batch queued so far is committed (or has failed).

        Batches are committed in the order queued, so waiting for the last
        one is enough.
        """
        last = self._last
        if last is not None and not last.done():
            await asyncio.wait({last})  # never raises; a cancelled caller leaves it be

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


def _log_store_failure(fut: asyncio.Future[None]) -> None:
    if not fut.cancelled() and fut.exception() is not None:
        logger.error("a change from Asterisk was not stored: %s", fut.exception())


@dataclass(slots=True)
class QueueMember:
    """A queue member as ``QueueStatus``/``QueueMemberPause`` describe it."""

    queue: str
    interface: str
    state_interface: str = ""
    paused: bool = False
    reason: str = ""


@dataclass(frozen=True, slots=True)
class PauseWrite:
    queue: str
    interface: str
    paused: bool
    reason: str
    user: str


class PresenceService:
    """State, decisions and persistence for every user's presence."""

    def __init__(
        self,
        store: Store,
        config_users: Iterable[UserRecord] = (),
        *,
        rules_config: RuleConfig = DEFAULT_RULES,
        clock: Callable[[], datetime] = utcnow,
        retry_clock: Callable[[], float] = time.monotonic,
        max_users: int = DEFAULT_MAX_USERS,
    ) -> None:
        self._store = store
        self._clock = clock
        self.rules = rules_config
        self.users = UserDirectory(config_users, max_users=max_users)
        self._sources: dict[str, dict[str, SourceRecord]] = {}
        self._effective: dict[str, EffectiveRecord] = {}
        self._asterisk: dict[str, Presence] = {}  # last value seen in Asterisk
        self._in_flight: dict[str, collections.deque[Presence]] = {}
        # Writes Asterisk refused, retried with backoff (retry.py), per kind.
        self.presence_failures: Failures[str] = Failures("presence", retry_clock)
        self.mirror_failures: Failures[str] = Failures("mirror", retry_clock)
        self.pause_failures: Failures[tuple[str, str]] = Failures("queue_pause", retry_clock)
        self._dirty: set[str] = set()
        self.devices: dict[str, DeviceState] = {}
        self.wakeup = asyncio.Event()  # set when there is something to write
        self.synced = False
        self.last_sync: datetime | None = None
        self._committer = GroupCommitter(store)
        self._subs: set[Subscription] = set()
        # Event numbers continue across restarts (they start at the start time
        # in microseconds), so a number from an earlier run is never mistaken
        # for one of this run: resuming from it gets a snapshot.
        self._seq = int(time.time() * 1_000_000)
        self._recent: collections.deque[ChangeEvent] = collections.deque(maxlen=EVENT_BUFFER)
        self.adopted = 0
        self.echoes = 0
        # device engine
        self._device_index: dict[str, set[str]] | None = None  # device -> users
        self._unavailable_since: dict[str, datetime] = {}
        self._missed: dict[str, int] = {}
        self._ring: dict[str, str] = {}  # uid -> "ringing" | "answered"
        # timers: when each user's decision may change by time alone
        self._deadlines: dict[str, datetime] = {}
        self._timer_wakeup = asyncio.Event()
        self._timer_task: asyncio.Task[None] | None = None
        # BLF mirror: device state last seen in Asterisk, writes in flight
        self._mirror_seen: dict[str, str] = {}
        self._mirror_in_flight: dict[str, str] = {}
        # queue members: (queue, interface) -> QueueMember
        self.queue_members: dict[tuple[str, str], QueueMember] = {}
        # QueuePause writes not yet seen back in a QueueMemberPause, per member
        self._pause_sent: dict[tuple[str, str], collections.deque[tuple[bool, str]]] = {}

    # -- lifecycle -------------------------------------------------------

    async def start(self) -> None:
        """Load everything from the store and start the writer and the timer."""
        self.users.load(await self._store.load_users())
        for rec in await self._store.load_sources():
            self._sources.setdefault(rec.user, {})[rec.source] = rec
        for eff in await self._store.load_effective():
            self._effective[eff.user] = eff
        self._asterisk = dict(await self._store.load_asterisk())
        last = await self._store.get_meta("last_sync")
        self.last_sync = datetime.fromisoformat(last) if last else None
        self._committer.start()
        # Windows may have opened or closed while the daemon was down.
        now = self._clock()
        batch = Batch()
        for uid in self.users.ids():
            self._recompute(uid, now, batch, trigger="start-up", actor="engine")
        await self._committer.submit(batch)
        self._timer_task = asyncio.create_task(self._timer(), name="presence-timer")
        logger.info(
            "loaded %d users, %d presences (%d not yet written to Asterisk)",
            len(self.users.ids()), len(self._effective), len(self.pending_users()),
        )

    async def stop(self) -> None:
        if self._timer_task is not None:
            self._timer_task.cancel()
            await asyncio.gather(self._timer_task, return_exceptions=True)
            self._timer_task = None
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
        rec = self._sources.get(uid, {}).get(eff.source)
        actor = rec.actor if rec is not None else "engine"
        return PresenceView(uid, eff.presence, eff.source, actor, eff.since, pending,
                            eff.reason)

    def views(self) -> list[PresenceView]:
        return [self.view(uid) for uid in self.users.ids()]

    def sources(self, uid: str) -> list[SourceRecord]:
        self.require_user(uid)
        return sorted(self._sources.get(uid, {}).values(), key=lambda r: r.source)

    def device_view(self, uid: str) -> DeviceView:
        user = self.users.get(uid)
        states: list[DeviceState] = []
        if user is not None:
            for device in user.devices:
                if rules.is_mirror_device(device, self.rules):
                    continue  # derived from the result: never an input
                state = self.devices.get(device)
                if state is not None:
                    states.append(state)
        return DeviceView(tuple(states), self._unavailable_since.get(uid))

    async def history(self, uid: str, limit: int) -> list[HistoryEntry]:
        self.require_user(uid)
        await self._committer.drain()  # changes from Asterisk are stored without waiting
        return await self._store.history(uid, limit)

    def pending_users(self) -> list[str]:
        return [uid for uid in self._effective if uid in self.users and self._is_pending(uid)]

    def asterisk_value(self, uid: str) -> Presence:
        return self._asterisk.get(uid, NOT_SET)

    # -- changes made through astpresence -------------------------------

    async def set_manual(self, uid: str, presence: Presence, actor: str, *,
                         end: datetime | None = None) -> PresenceView:
        """A person or operator chose a presence. Durable when this returns.

        With ``end`` the choice lapses by itself then, and the other sources
        decide again.
        """
        self.require_user(uid)
        now = self._clock()
        batch = Batch()
        self._put_source(SourceRecord(uid, MANUAL, presence, now, actor, None, end), batch)
        self._manual_changed(uid, batch)
        self._recompute(uid, now, batch, trigger="set by " + actor, actor=actor)
        await self._committer.submit(batch)
        return self.view(uid)

    async def clear_manual(self, uid: str, actor: str) -> PresenceView:
        """Remove the manual presence; the other sources decide again."""
        self.require_user(uid)
        now = self._clock()
        batch = Batch()
        self._drop_source(uid, MANUAL, batch)
        self._manual_changed(uid, batch)
        self._recompute(uid, now, batch, trigger="cleared by " + actor, actor=actor)
        await self._committer.submit(batch)
        return self.view(uid)

    async def set_source(self, record: SourceRecord) -> PresenceView:
        """Add or replace a timed contribution (calendar...). Validated by the caller."""
        self.require_user(record.user)
        if record.source in rules.RESERVED_SOURCES:
            raise InvalidInput(f"source name {record.source!r} is reserved")
        now = self._clock()
        batch = Batch()
        self._put_source(record, batch)
        self._recompute(record.user, now, batch, trigger=f"{record.source} set by {record.actor}",
                        actor=record.actor)
        await self._committer.submit(batch)
        return self.view(record.user)

    async def delete_source(self, uid: str, name: str, actor: str) -> PresenceView:
        self.require_user(uid)
        if name not in self._sources.get(uid, {}) or name in (MANUAL, rules.SOURCE_AUTO):
            raise UnknownSource(uid, name)
        now = self._clock()
        batch = Batch()
        self._drop_source(uid, name, batch)
        self._recompute(uid, now, batch, trigger=f"{name} removed by {actor}", actor=actor)
        await self._committer.submit(batch)
        return self.view(uid)

    def _put_source(self, rec: SourceRecord, batch: Batch) -> None:
        self._sources.setdefault(rec.user, {})[rec.source] = rec
        batch.put_sources.append(rec)

    def _drop_source(self, uid: str, name: str, batch: Batch) -> None:
        if self._sources.get(uid, {}).pop(name, None) is not None:
            batch.delete_sources.append((uid, name))

    def _manual_changed(self, uid: str, batch: Batch) -> None:
        """Any manual change clears auto-away and the missed-call count."""
        self.presence_failures.clear(uid)
        self._missed[uid] = 0
        self._drop_source(uid, rules.SOURCE_AUTO, batch)

    # -- the decision ----------------------------------------------------

    def _decide(self, uid: str, now: datetime) -> Decision:
        contributions = self._sources.get(uid, {})
        timed = [r for name, r in contributions.items() if name not in rules.RESERVED_SOURCES]
        return rules.decide(
            contributions.get(MANUAL), timed, self.device_view(uid),
            contributions.get(rules.SOURCE_AUTO), now, self.rules,
        )

    def _recompute(
        self, uid: str, now: datetime, batch: Batch, *, trigger: str, actor: str,
        history_source: str | None = None,
    ) -> bool:
        """Decide again; record, publish and schedule what changed."""
        # Nothing stale remains: records whose window is over are deleted.
        for name, rec in list(self._sources.get(uid, {}).items()):
            if rules.is_expired(rec, now):
                self._drop_source(uid, name, batch)
        decision = self._decide(uid, now)
        self._schedule(uid, now)
        old = self._effective.get(uid)
        old_presence = old.presence if old is not None else NOT_SET
        if old is not None and (old.presence, old.source, old.reason) == (
            decision.presence, decision.source, decision.rule
        ):
            return False
        if old is None and decision.source == DEFAULT_SOURCE:
            return False  # never set: nothing to record
        eff = EffectiveRecord(uid, decision.presence, decision.source, decision.rule, now)
        self._effective[uid] = eff
        batch.put_effective.append(eff)
        if old_presence != decision.presence:
            batch.history.append(
                HistoryEntry(now, uid, old.presence if old else None, decision.presence,
                             history_source or decision.source, actor,
                             f"{decision.rule}: {trigger}")
            )
            self._publish(uid, old)
        self._mark_dirty(uid)
        return True

    def _schedule(self, uid: str, now: datetime) -> None:
        contributions = self._sources.get(uid, {})
        timed = [r for name, r in contributions.items() if name not in rules.RESERVED_SOURCES]
        when = rules.next_change_at(
            contributions.get(MANUAL), timed, self.device_view(uid),
            contributions.get(rules.SOURCE_AUTO), now, self.rules,
        )
        # Also wake at the end of any record, to delete it.
        ends = [r.end for r in contributions.values() if r.end is not None and r.end > now]
        if ends:
            first_end = min(ends)
            when = first_end if when is None else min(when, first_end)
        old = self._deadlines.get(uid)
        if when is None:
            self._deadlines.pop(uid, None)
        else:
            self._deadlines[uid] = when
            if old is None or when < old:
                self._timer_wakeup.set()

    async def _timer(self) -> None:
        """Recompute users whose decision changes with time (windows, offline)."""
        while True:
            self._timer_wakeup.clear()
            if self._deadlines:
                delay = (min(self._deadlines.values()) - self._clock()).total_seconds()
                if delay > 0:
                    try:
                        await asyncio.wait_for(self._timer_wakeup.wait(), min(delay, 3600))
                    except TimeoutError:
                        pass
                    continue
            else:
                await self._timer_wakeup.wait()
                continue
            now = self._clock()
            batch = Batch()
            for uid in [u for u, t in self._deadlines.items() if t <= now]:
                del self._deadlines[uid]
                self._recompute(uid, now, batch, trigger="time", actor="engine")
            try:
                await self._committer.submit(batch)
            except Exception:
                logger.exception("could not store timed changes")

    # -- what Asterisk tells us -----------------------------------------

    async def on_presence_change(self, presentity: str, presence: Presence) -> None:
        """A live ``PresenceStateChange``: our echo or a change made elsewhere."""
        uid = user_id_from_provider(presentity)
        if uid is None or uid not in self.users:
            return  # not a user: nothing is stored for it
        batch = Batch()
        queue = self._in_flight.get(uid)
        self._asterisk[uid] = presence
        batch.put_asterisk.append((uid, presence))
        if queue and presence in queue:
            # Ours. Asterisk applies writes in the order sent, so queued values
            # before this one have been overwritten already.
            while queue.popleft() != presence:
                pass
            self.presence_failures.clear(uid)
            self.echoes += 1
            logger.debug("echo of our write for %s: %s", uid, presence.state.value)
            self._mark_dirty(uid)
        else:
            logger.info(
                "presence of %s changed in Asterisk to %s; adopting it as a manual change",
                uid, presence.state.value,
            )
            self.adopted += 1
            self._adopt(uid, presence, batch, reason="changed in Asterisk")
        self._store_later(batch)

    def _store_later(self, batch: Batch) -> None:
        """Queue a change that came from Asterisk for the group commit; do not wait.

        Nobody waits for an acknowledgement of an AMI event, and awaiting the
        commit here made the AMI dispatcher commit (and fsync) once per event:
        about a thousand events/s at most. Queued batches are committed in
        order, many per transaction; :meth:`history` and shutdown wait for them.
        """
        fut = self._committer.enqueue(batch)
        if fut is not None:
            fut.add_done_callback(_log_store_failure)

    def _adopt(self, uid: str, presence: Presence, batch: Batch, *, reason: str) -> None:
        """Take a value set elsewhere as the person's manual choice.

        It is normalised first (docs/asterisk.md, "Presence": other tools can
        store control characters or more than 255 bytes), so it can always be
        written back, e.g. when a call that overlaid it ends.
        """
        now = self._clock()
        clean = presence.normalised()
        if clean != presence:
            reason += "; normalised (control characters removed, cut to 255 bytes)"
            logger.warning("presence of %s from Asterisk holds text astpresence cannot write "
                           "back; adopted it normalised", uid)
        self._put_source(SourceRecord(uid, MANUAL, clean, now, ASTERISK), batch)
        self._manual_changed(uid, batch)
        if not self._recompute(uid, now, batch, trigger=reason, actor=ASTERISK,
                               history_source=ASTERISK):
            # Same effective value, but Asterisk may now differ (an overlay is
            # still on): make sure it gets the effective value back.
            self._mark_dirty(uid)

    def _users_of(self, device: str) -> set[str]:
        if self._device_index is None:
            index: dict[str, set[str]] = {}
            for user in self.users.all():
                for dev in user.devices:
                    index.setdefault(dev, set()).add(user.id)
            self._device_index = index
        return self._device_index.get(device, set())

    def _note_device(self, device: str, state: DeviceState) -> str | None:
        """Record a device state; for a mirror device, return whose it is."""
        self.devices[device] = state
        mirrored = rules.mirror_user(device, self.rules) if self.rules.mirror else None
        if mirrored is not None:
            self._mirror_seen[mirrored] = state.value
        return mirrored

    async def on_device_change(self, device: str, state: str) -> None:
        """A live ``DeviceStateChange``."""
        try:
            new = parse_device_state(state)
        except InvalidInput as exc:
            logger.warning("ignoring DeviceStateChange for %s: %s", device, exc)
            return
        mirrored = self._note_device(device, new)
        if mirrored is not None:
            uid = mirrored
            if self._mirror_in_flight.get(uid) == new.value:
                del self._mirror_in_flight[uid]
            self._mark_dirty(uid)
            return
        uids = self._users_of(device)
        if not uids:
            return
        now = self._clock()
        batch = Batch()
        for uid in uids:
            view = self._update_unavailable(uid, now)
            self._track_calls(uid, view.states, now, batch)
            self._recompute(uid, now, batch, trigger=f"{device} {new.value}", actor="engine")
        self._store_later(batch)

    def _update_unavailable(self, uid: str, now: datetime) -> DeviceView:
        """Note when all of the user's devices became UNAVAILABLE (for offline)."""
        view = self.device_view(uid)
        since = rules.track_unavailable_since(self._unavailable_since.get(uid), view.states, now)
        if since is None:
            self._unavailable_since.pop(uid, None)
        else:
            self._unavailable_since[uid] = since
        return view

    def _track_calls(self, uid: str, states: tuple[DeviceState, ...], now: datetime,
                     batch: Batch) -> None:
        """Missed-call auto-away: a ring that ends without any device in a call."""
        if self.rules.missed_calls_away <= 0:
            return
        ringing = any(s in (DeviceState.RINGING, DeviceState.RINGINUSE) for s in states)
        talking = any(s in (DeviceState.INUSE, DeviceState.BUSY, DeviceState.ONHOLD)
                      for s in states)
        phase = self._ring.get(uid)
        if ringing and phase is None:
            self._ring[uid] = "answered" if talking else "ringing"
        elif phase == "ringing" and talking:
            self._ring[uid] = "answered"
        if phase is None or ringing:
            return
        # The ring is over.
        del self._ring[uid]
        answered = phase == "answered" or talking
        count, active = rules.missed_calls_step(
            self._missed.get(uid, 0), "answered" if answered else "missed", self.rules)
        self._missed[uid] = count
        if answered:
            self._drop_source(uid, rules.SOURCE_AUTO, batch)
        elif active and rules.SOURCE_AUTO not in self._sources.get(uid, {}):
            logger.info("%s missed %d calls in a row: auto-away", uid, count)
            self._put_source(rules.auto_contribution(uid, now, self.rules), batch)

    async def on_hint(self, exten: str, context: str, hint: str) -> None:
        """A hint seen in ExtensionStatus/PresenceStatus: maybe a new user.

        Capped (``max_users``); users whose hint is gone leave at the next sync.
        """
        user = user_from_hint(exten, context, hint)
        if user is None or user.id in self.users and self.users.get(user.id) == user:
            return
        refused = self.users.refused
        if self.users.add_hint_user(user):
            logger.info("user %s found in hint %s@%s", user.id, clip(exten), clip(context))
            self._device_index = None
            await self._store.save_users([user])
        elif self.users.refused > refused and refused == 0:
            logger.warning("a hint names user %s but there are max_users (%d) already; "
                           "left out until the next sync", user.id, self.users.max_users)

    def on_queue_member(self, queue: str, interface: str, *, paused: bool, reason: str,
                        state_interface: str = "", removed: bool = False) -> None:
        """QueueMember / QueueMemberPause / QueueMemberAdded / QueueMemberRemoved."""
        key = (queue, interface)
        if removed:
            self.queue_members.pop(key, None)
            return
        member = self.queue_members.get(key)
        if member is None:
            member = self.queue_members[key] = QueueMember(queue, interface, state_interface)
        elif state_interface:
            member.state_interface = state_interface
        member.paused, member.reason = paused, reason
        sent = self._pause_sent.get(key)
        if sent and (paused, reason) in sent:
            # Our own write coming back; older ones were overwritten by it.
            while sent.popleft() != (paused, reason):
                pass
            self.pause_failures.clear(key)
        uid = self._member_user(member)
        if uid is not None:
            self._mark_dirty(uid)

    async def resync(
        self,
        presences: dict[str, Presence],
        hints: list[tuple[str, str, str]],
        devices: dict[str, str],
    ) -> dict[str, int]:
        """Rebuild from what Asterisk holds after a login.

        ``presences`` maps presentity names (``CustomPresence:2000``) to values;
        absent ones are not_set. For each user:
        - Asterisk equals what we want: nothing to do;
        - Asterisk changed while we were away and we have no unsent change:
          adopt it (history source ``asterisk``);
        - we have a change Asterisk never got: write it (it was acknowledged
          to a client; on a conflict with a change in Asterisk it wins, and a
          warning says so).
        Then devices are replaced by what Asterisk reports and every user is
        decided again. Nothing is assumed from before the reconnect.
        """
        found = [u for u in (user_from_hint(*h) for h in hints) if u is not None]
        changed, gone = self.users.replace_hint_users(found)
        if changed:
            await self._store.save_users(changed)
        if gone:
            logger.info("%d user(s) no longer in any hint: %s", len(gone),
                        ", ".join(sorted(gone)[:20]) + (" ..." if len(gone) > 20 else ""))
            await self._store.delete_users(gone)
        if self.users.refused:
            logger.warning("%d hint(s) name more users than max_users (%d) allows; "
                           "those users are left out", self.users.refused, self.users.max_users)
        self._device_index = None
        self._in_flight.clear()
        self.presence_failures.reset()
        self._mirror_in_flight.clear()
        self.mirror_failures.reset()
        self._pause_sent.clear()
        self.pause_failures.reset()

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

        # Devices as Asterisk reports them now; what we knew before is void.
        now = self._clock()
        self.devices = {}
        self._mirror_seen = {}
        for device, state in devices.items():
            try:
                parsed = parse_device_state(state)
            except InvalidInput as exc:
                logger.warning("ignoring device %s from Asterisk: %s", device, exc)
                continue
            self._note_device(device, parsed)
        self._ring.clear()
        for uid in self.users.ids():
            self._update_unavailable(uid, now)
            self._recompute(uid, now, batch, trigger="resync", actor="engine")
            self._mark_dirty(uid)
        batch.meta["last_sync"] = now.isoformat()
        await self._committer.submit(batch)
        self.last_sync = now
        self.synced = True
        self.wakeup.set()
        return counts

    def resync_queues(self, members: list[QueueMember]) -> None:
        """Replace queue members with what ``QueueStatus`` reported."""
        self.queue_members = {(m.queue, m.interface): m for m in members}
        self._pause_sent.clear()
        for uid in self.users.ids():
            self._mark_dirty(uid)

    def link_lost(self) -> None:
        """The AMI link is down: nothing in flight will be confirmed."""
        self.synced = False
        self._in_flight.clear()
        self._mirror_in_flight.clear()
        self._pause_sent.clear()

    # -- the writer's side ----------------------------------------------

    def _desired(self, uid: str) -> Presence:
        eff = self._effective.get(uid)
        return eff.presence if eff is not None else NOT_SET

    def _is_pending(self, uid: str) -> bool:
        queue = self._in_flight.get(uid)
        last = queue[-1] if queue else self._asterisk.get(uid, NOT_SET)
        return last != self._desired(uid)

    def _mark_dirty(self, uid: str) -> None:
        self._dirty.add(uid)
        self.wakeup.set()

    def take_all(self) -> tuple[list[tuple[str, Presence]], list[tuple[str, str, str]],
                                list[PauseWrite]]:
        """Everything to send now: presence, mirror device states, queue pauses."""
        self.wakeup.clear()
        if not self.synced:
            return [], [], []
        presence: list[tuple[str, Presence]] = []
        mirror: list[tuple[str, str, str]] = []
        pauses: list[PauseWrite] = []
        for uid in self.presence_failures.due() + self.mirror_failures.due():
            self._dirty.add(uid)
        for key in self.pause_failures.due():
            member = self.queue_members.get(key)
            owner = self._member_user(member) if member is not None else None
            if owner is None:
                self.pause_failures.clear(key)  # the member is gone
            else:
                self._dirty.add(owner)
        dirty, self._dirty = self._dirty, set()
        for uid in dirty:
            desired = self._desired(uid)
            if self._is_pending(uid):
                if not self.presence_failures.blocks(uid, desired):
                    queue = self._in_flight.setdefault(uid, collections.deque())
                    if len(queue) >= MAX_IN_FLIGHT:
                        queue.popleft()
                    queue.append(desired)
                    presence.append((uid, desired))
                    self.presence_failures.retrying(uid)
            elif not self._in_flight.get(uid):
                self.presence_failures.clear(uid)  # Asterisk holds what we want
            if self.rules.mirror and uid in self.users:
                want = rules.mirror_state(desired.state, self.rules)
                current = self._mirror_in_flight.get(uid, self._mirror_seen.get(uid))
                if current != want and not self.mirror_failures.blocks(uid, want):
                    self._mirror_in_flight[uid] = want
                    mirror.append((uid, rules.mirror_device(uid, self.rules), want))
                    self.mirror_failures.retrying(uid)
            if self.rules.queue_pause:
                pauses.extend(self._pause_writes(uid, desired))
        return presence, mirror, pauses

    def _member_user(self, member: QueueMember) -> str | None:
        for uid in self._users_of(member.interface):
            return uid
        if member.state_interface.startswith("hint:"):
            exten, _, context = member.state_interface[5:].partition("@")
            for user in self.users.all():
                if user.extension == exten and (not context or user.context == context):
                    return user.id
        return None

    def members_of(self, uid: str) -> list[QueueMember]:
        return [m for m in self.queue_members.values() if self._member_user(m) == uid]

    def _pause_writes(self, uid: str, desired: Presence) -> list[PauseWrite]:
        out = []
        for member in self.members_of(uid):
            key = (member.queue, member.interface)
            sent = self._pause_sent.setdefault(key, collections.deque(maxlen=MAX_IN_FLIGHT))
            # What the member will be once our writes land.
            paused, reason = sent[-1] if sent else (member.paused, member.reason)
            action = rules.queue_pause_action(desired.state, paused, reason, self.rules)
            if action is None:
                continue
            paused = action == "pause"
            reason = rules.pause_reason(desired.state, self.rules) if paused else ""
            if self.pause_failures.blocks(key, (paused, reason)):
                continue
            self.pause_failures.retrying(key)
            sent.append((paused, reason))
            out.append(PauseWrite(member.queue, member.interface, paused, reason, uid))
        return out

    def next_retry_in(self) -> float | None:
        """Seconds until a refused write is due again (None: nothing to retry)."""
        waits = [w for f in self.failures() if (w := f.next_retry_in()) is not None]
        return min(waits) if waits else None

    def failures(self) -> tuple[Failures[str], Failures[str], Failures[tuple[str, str]]]:
        return self.presence_failures, self.mirror_failures, self.pause_failures

    def write_failed(self, uid: str, presence: Presence, error: str) -> None:
        """Asterisk refused the write: still wanted, tried again after a backoff."""
        queue = self._in_flight.get(uid)
        if queue and presence in queue:
            queue.remove(presence)
        failure = self.presence_failures.failed(uid, presence, error)
        logger.warning("writing presence of %s to Asterisk failed (attempt %d): %s; "
                       "retrying in %.0f s", uid, failure.attempts, error,
                       failure.retry_at - self.presence_failures.now())
        self.wakeup.set()

    def mirror_written(self, uid: str, state: str) -> None:
        self._mirror_seen[uid] = state
        self.mirror_failures.clear(uid)
        if self._mirror_in_flight.get(uid) == state:
            del self._mirror_in_flight[uid]

    def mirror_failed(self, uid: str, state: str, error: str) -> None:
        self._mirror_in_flight.pop(uid, None)
        failure = self.mirror_failures.failed(uid, state, error)
        logger.warning("writing BLF mirror of %s (%s) failed (attempt %d): %s; "
                       "retrying in %.0f s", uid, state, failure.attempts, error,
                       failure.retry_at - self.mirror_failures.now())
        self.wakeup.set()

    def pause_written(self, write: PauseWrite) -> None:
        self.pause_failures.clear((write.queue, write.interface))

    def pause_failed(self, write: PauseWrite, error: str) -> None:
        key = (write.queue, write.interface)
        sent = self._pause_sent.get(key)
        if sent and (write.paused, write.reason) in sent:
            sent.remove((write.paused, write.reason))
        failure = self.pause_failures.failed(key, (write.paused, write.reason), error)
        logger.warning("%s %s in queue %s for %s failed (attempt %d): %s; retrying in %.0f s",
                       "pausing" if write.paused else "unpausing", write.interface, write.queue,
                       write.user, failure.attempts, error,
                       failure.retry_at - self.pause_failures.now())
        self.wakeup.set()

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

    @property
    def seq(self) -> int:
        return self._seq

    def events_since(self, seq: int) -> list[ChangeEvent] | None:
        """Events after ``seq``, or None when they are no longer all buffered."""
        if seq > self._seq:
            return None  # a number from an earlier run of the daemon
        if seq == self._seq:
            return []
        if not self._recent or self._recent[0].seq > seq + 1:
            return None
        return [e for e in self._recent if e.seq > seq]

    def _publish(self, uid: str, old: EffectiveRecord | None) -> None:
        self._seq += 1
        before = (PresenceView(uid, old.presence, old.source, "", old.since, False, old.reason)
                  if old is not None else PresenceView(uid, NOT_SET, DEFAULT_SOURCE, "", None,
                                                       False))
        event = ChangeEvent(self._seq, uid, before.to_json(), self.view(uid).to_json())
        self._recent.append(event)
        for sub in list(self._subs):
            try:
                sub.queue.put_nowait(event)
            except asyncio.QueueFull:
                sub.overflowed = True
                self._subs.discard(sub)
