"""The presence engine: what astpresence knows and decides, in domain values only.

It holds the current state in memory, persists every change through a
:class:`~astpresence.store.base.Store` before acknowledging it (commit.py),
decides with the pure rules (rules.py), and tells the writer (outbox.py)
which users' values Asterisk should receive. Its parts: devices and missed
calls (devices.py), queue members (queues.py), deadlines (timers.py), change
events for clients (events.py). It never sees an AMI frame or a JSON body.

How it tells its own writes from changes made elsewhere: docs/architecture.md,
"Own writes".
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from astpresence.domain import rules, statuses
from astpresence.engine.reads import Reads
from astpresence.engine.broadcast import EVENT_SEQ, Broadcast
from astpresence.domain.call_settings import CallSettings
from astpresence.engine.calls import META_PREFIX, CallHandling
from astpresence.engine.cards import DEFAULT_MAILBOX, Card, Cards
from astpresence.engine.commit import GroupCommitter
from astpresence.engine.devices import Devices
from astpresence.engine.events import EventHub, LinkEvent
from astpresence.engine.ports import AsteriskNode
from astpresence.domain.model import DEFAULT_NODE, NOT_SET, Presence
from astpresence.domain.records import (
    EffectiveRecord,
    HistoryEntry,
    PresenceView,
    SourceRecord,
    UserRecord,
)
from astpresence.domain.rules import DEFAULT_RULES, RuleConfig
from astpresence.engine.contributions import Contributions
from astpresence.engine.errors import UnknownSource
from astpresence.store.base import Batch, Store
from astpresence.engine.timers import Deadlines
from astpresence.engine.users import DEFAULT_MAX_USERS, UserDirectory

logger = logging.getLogger(__name__)

MANUAL = rules.SOURCE_MANUAL
#: history ``source`` of a change adopted from Asterisk (made outside astpresence)
ASTERISK = "asterisk"
DEFAULT_SOURCE = "default"


def utcnow() -> datetime:
    return datetime.now(UTC)


def last_sync_key(node: str) -> str:
    """meta key: when Asterisk server ``node`` was last read (a first-ever sync adopts)."""
    return "last_sync" if node == DEFAULT_NODE else f"last_sync:{node}"


class PresenceService(Reads):
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
        dnd_device: str = "",
        dnd_sync: bool = False,
        mailbox_pattern: str = DEFAULT_MAILBOX,
        read_names: bool = True,
        nodes: Sequence[str] = (DEFAULT_NODE,),
        status_catalogue: Sequence[statuses.Status] = (),
        call_settings: CallSettings = CallSettings(),
    ) -> None:
        self._store = store
        self._clock = clock
        self.rules = rules_config
        #: The named statuses ([[statuses]]): their durations apply to matching choices.
        self.statuses = tuple(status_catalogue)
        self.users = UserDirectory(config_users, max_users=max_users, nodes=nodes)
        self.contributions = Contributions(rules_config)
        self._effective: dict[str, EffectiveRecord] = {}
        self.devices = Devices(self.users, rules_config, dnd_device=dnd_device)
        self.cards = Cards(self.users, mailbox_pattern=mailbox_pattern, read_names=read_names)
        self.dnd_sync = dnd_sync
        self.events = EventHub()
        self._committer = GroupCommitter(store)
        self._deadlines = Deadlines(clock, self._time_passed)
        #: The names of the Asterisk servers, in the config's order.
        self.node_names = tuple(nodes)
        #: Each Asterisk server's side (asterisk/nodes.py attaches them at wiring).
        self.nodes: dict[str, AsteriskNode] = {}
        #: As an HA group's leader: the notices for the followers, sent with each commit.
        #: Changes to the streams, and to the followers while leading.
        self.broadcast = Broadcast(self.events)
        #: Each person's call-handling rules (what astdb gets for the dialplan).
        self.calls = CallHandling(call_settings, self.users, self.statuses, self.mark,
                                  name=self.cards.name)

    def mark(self, uid: str) -> None:
        """``uid``'s wanted values may differ from what any Asterisk server holds."""
        for node in self.nodes.values():
            node.outbox.mark(uid)

    # -- lifecycle -------------------------------------------------------

    async def start(self) -> None:
        """Load everything from the store and start the writer and the timer.

        A follower that takes over leads from here: what it followed is
        replaced by what the store holds (its event numbers go on). Until that
        is loaded its API keeps answering as a follower (the daemon switches
        it after this returns): its copy is current, the store's state behind
        it may not be loaded yet.
        """
        last_event = await self.load_stored()
        self.events.continue_after(last_event)
        for node in self.nodes.values():
            node.outbox.presence.load((await self._store.load_asterisk(node.node)).items())
            last = await self._store.get_meta(last_sync_key(node.node))
            node.last_sync = datetime.fromisoformat(last) if last else None
        self._committer.start()
        # Windows may have opened or closed while the daemon was down.
        now = self._clock()
        batch = Batch()
        for uid in self.users.ids():
            self.recompute(uid, now, batch, trigger="start-up", actor="engine")
        await self._committer.submit(batch)
        self._deadlines.start()
        logger.info(
            "loaded %d users, %d presences (%d not yet written to Asterisk)",
            len(self.users.ids()), len(self._effective), len(self.pending_users()),
        )

    async def stop(self) -> None:
        await self._deadlines.stop()
        await self._committer.stop()
        self.events.close()

    async def drain(self) -> None:
        """Wait until every change so far is stored (a barrier for tests and shutdown)."""
        await self._committer.drain()

    # -- changes made through astpresence -------------------------------

    async def set_manual(self, uid: str, presence: Presence, actor: str, *,
                         end: datetime | None = None,
                         message_end: datetime | None = None) -> PresenceView:
        """A person or operator chose a presence. Durable when this returns.

        With ``end`` the choice lapses by itself then, and the other sources
        decide again; without one, the state's ``[rules] expire_after`` applies
        (if set). With ``message_end`` the message lapses then, the state stays.
        """
        self.require_user(uid)
        batch = Batch()
        self.set_manual_in(uid, presence, actor, batch, end=end, message_end=message_end)
        await self._committer.submit(batch)
        return self.view(uid)

    async def clear_manual(self, uid: str, actor: str) -> PresenceView:
        """Remove the manual presence; the other sources decide again."""
        self.require_user(uid)
        batch = Batch()
        self.clear_manual_in(uid, actor, batch)
        await self._committer.submit(batch)
        return self.view(uid)

    def set_manual_in(self, uid: str, presence: Presence, actor: str, batch: Batch, *,
                      end: datetime | None = None, message_end: datetime | None = None,
                      reason: str = "") -> None:
        """:meth:`set_manual` into the caller's batch (not stored yet)."""
        now = self._clock()
        if end is None:
            end = self.default_end(presence, now)
        self.contributions.put(SourceRecord(uid, MANUAL, presence, now, actor, None, end,
                                            message_end), batch)
        self._manual_changed(uid, batch)
        self.recompute(uid, now, batch, trigger=reason or "set by " + actor, actor=actor)

    def clear_manual_in(self, uid: str, actor: str, batch: Batch, *, reason: str = "") -> None:
        """:meth:`clear_manual` into the caller's batch (not stored yet)."""
        now = self._clock()
        self.contributions.drop(uid, MANUAL, batch)
        self._manual_changed(uid, batch)
        self.recompute(uid, now, batch, trigger=reason or "cleared by " + actor, actor=actor)

    async def set_call_rules(self, uid: str, body: object, actor: str) -> dict[str, Any]:
        """Replace ``uid``'s call-handling rules (``{"rules": [...]}``); stored, then
        written to every Asterisk server. InvalidInput changes nothing."""
        self.require_user(uid)
        rules, entry = self.calls.prepare(uid, body, actor, self._clock())
        before = self.view(uid)
        batch = Batch(meta={META_PREFIX + uid: entry})
        self.calls.apply(uid, rules, entry)
        after = self.view(uid)
        if after != before:  # the card's "what happens to a call now"
            self.broadcast.change(before, after, batch)
        await self._committer.submit(batch)
        return self.call_rules(uid)

    async def set_source(self, record: SourceRecord) -> PresenceView:
        """Add or replace a timed contribution (calendar...). Validated by the caller."""
        self.require_user(record.user)
        rules.check_source_name(record.source)
        self.contributions.check_room(record.user, record.source)
        now = self._clock()
        batch = Batch()
        self.contributions.put(record, batch)
        self.recompute(record.user, now, batch, trigger=f"{record.source} set by {record.actor}",
                        actor=record.actor)
        await self._committer.submit(batch)
        return self.view(record.user)

    async def delete_source(self, uid: str, name: str, actor: str) -> PresenceView:
        self.require_user(uid)
        if self.contributions.get(uid, name) is None or name in (MANUAL, rules.SOURCE_AUTO):
            raise UnknownSource(uid, name)
        now = self._clock()
        batch = Batch()
        self.contributions.drop(uid, name, batch)
        self.recompute(uid, now, batch, trigger=f"{name} removed by {actor}", actor=actor)
        await self._committer.submit(batch)
        return self.view(uid)

    def default_end(self, presence: Presence, now: datetime) -> datetime | None:
        """When a choice made without an end lapses: its status's duration (a preset
        code, a named status), else ``[rules] expire_after`` for its state."""
        status = statuses.matching(self.statuses, presence)
        length = (status.duration if status is not None and status.duration is not None
                  else self.rules.expire_after.get(presence.state))
        return now + length if length is not None else None

    def _manual_changed(self, uid: str, batch: Batch) -> None:
        """Any manual change clears auto-away and the missed-call count."""
        for node in self.nodes.values():
            node.outbox.presence.failures.clear(uid)
        self.devices.reset_missed(uid)
        self.contributions.drop(uid, rules.SOURCE_AUTO, batch)

    # -- the decision ----------------------------------------------------

    def recompute(
        self, uid: str, now: datetime, batch: Batch, *, trigger: str, actor: str,
        history_source: str | None = None,
    ) -> bool:
        """Decide again; record, publish and schedule what changed."""
        self.contributions.expire(uid, now, batch)
        devices = self.device_view(uid)
        decision = self.contributions.decide(uid, devices, now)
        self._deadlines.set(uid, self.contributions.next_change(uid, devices, now))
        old = self._effective.get(uid)
        # chosen is None where it is the effective presence (as a stored row loads)
        chosen = None if decision.chosen == decision.presence else decision.chosen
        stored = old is not None and (old.presence, old.source, old.reason) == (
            decision.presence, decision.source, decision.rule)
        shown = old is not None and (old.chosen, old.activity) == (chosen, decision.activity)
        if stored and shown:
            return False
        if old is None and decision.source == DEFAULT_SOURCE and not decision.activity:
            return False  # never set: nothing to record
        eff = EffectiveRecord(uid, decision.presence, decision.source, decision.rule,
                              old.since if old is not None and stored else now,
                              chosen, decision.activity)
        self._effective[uid] = eff
        if not stored:
            batch.put_effective.append(eff)
        self._changed(old, eff, batch, history_source=history_source or decision.source,
                      actor=actor, trigger=trigger)
        return True

    def _changed(self, old: EffectiveRecord | None, eff: EffectiveRecord, batch: Batch, *,
                 history_source: str, actor: str, trigger: str) -> None:
        """History when the presence changed; an event when anything shown did; the
        writer marked when Asterisk may need something new."""
        old_presence = old.presence if old is not None else NOT_SET
        if old_presence != eff.presence:
            batch.history.append(
                HistoryEntry(eff.since, eff.user, old.presence if old else None, eff.presence,
                             history_source, actor, f"{eff.reason}: {trigger}",
                             activity=eff.activity))
        if (old is None or old_presence != eff.presence
                or (old.chosen, old.activity) != (eff.chosen, eff.activity)):
            self._publish(eff.user, old, batch)
        if (old is None or (old.presence, old.source, old.reason, old.chosen)
                != (eff.presence, eff.source, eff.reason, eff.chosen)):
            self.mark(eff.user)  # the chosen presence drives the mirror, pauses, FreePBX DND

    async def _time_passed(self, due: list[str], now: datetime) -> None:
        batch = Batch()
        for uid in due:
            self.recompute(uid, now, batch, trigger="time", actor="engine")
        await self._committer.submit(batch)

    def _publish(self, uid: str, old: EffectiveRecord | None, batch: Batch) -> None:
        after = self.view(uid)
        before = (PresenceView(uid, old.presence, old.source, "", old.since, False, old.reason,
                               after.name, after.voicemail, old.chosen, old.activity)
                  if old is not None else
                  PresenceView.unset(uid, name=after.name, voicemail=after.voicemail))
        self.broadcast.change(before, after, batch)

    def users_changed(self) -> None:
        """The set of users changed (a sync, a new hint): derived indexes follow."""
        self.devices.users_changed()
        self.cards.users_changed()

    def cards_changed(self, before: Mapping[str, Card]) -> None:
        """Contact cards changed (name, voicemail, forwarding): an event for each, like a
        presence change, so clients need no second stream. Not history: it is not
        presence."""
        batch = Batch()
        for uid, (name, voicemail, forwarding) in before.items():
            if uid in self.users:
                if self.calls.enabled:
                    self.mark(uid)  # the name callers may see with the presence
                after = self.view(uid)
                self.broadcast.change(replace(after, name=name, voicemail=voicemail,
                                              forwarding=forwarding), after, batch)
        self.store_later(batch)

    def link_changed(self, event: LinkEvent) -> None:
        """An Asterisk link went down or is synced: here and on the followers."""
        batch = self.broadcast.link(event)
        if batch is not None:
            self.store_later(batch)

    def note_written(self, uid: str, batch: Batch) -> None:
        """An echo of a presence write: once every server has it, followers learn it
        (no followers, nothing to work out: this runs for every echo)."""
        if self.broadcast.relay is not None and not self._is_pending(uid):
            self.broadcast.written(uid, batch)

    async def load_stored(self) -> int:
        """Users, sources and presences as stored (a start, a follower's reload);
        returns the number of the last event a leader stored."""
        self.users.replace_stored(await self._store.load_users())
        self.users_changed()
        self.contributions.replace(await self._store.load_sources())
        self._effective = {eff.user: eff for eff in await self._store.load_effective()}
        self.calls.load(await self._store.load_meta(META_PREFIX))
        return int(await self._store.get_meta(EVENT_SEQ) or 0)

    # -- for the Asterisk side (sync.py) ---------------------------------

    async def commit(self, batch: Batch) -> None:
        """Store ``batch``; durable when this returns."""
        await self._committer.submit(batch)

    def store_later(self, batch: Batch) -> None:
        """Queue a change that came from Asterisk for the group commit; do not wait.

        Nobody waits for an acknowledgement of an AMI event, and awaiting the
        commit here made the AMI dispatcher commit (and fsync) once per event:
        about a thousand events/s at most. Queued batches are committed in
        order, many per transaction; :meth:`history` and shutdown wait for them.
        """
        self._committer.enqueue(batch)  # a failure is logged by the committer

    def adopt(self, uid: str, presence: Presence, batch: Batch, *, reason: str) -> None:
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
        self.contributions.put(SourceRecord(uid, MANUAL, clean, now, ASTERISK,
                                            end=self.default_end(clean, now)), batch)
        self._manual_changed(uid, batch)
        if not self.recompute(uid, now, batch, trigger=reason, actor=ASTERISK,
                               history_source=ASTERISK):
            # Same effective value, but Asterisk may now differ (an overlay is
            # still on): make sure it gets the effective value back.
            self.mark(uid)

