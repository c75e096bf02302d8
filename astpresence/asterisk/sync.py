"""The Asterisk side of the engine: what Asterisk says, and what to send back.

The bridge hands every event and every list read after a login to
:class:`AsteriskSync` as domain values (translate.py); it tells our own
writes from changes made elsewhere (the write trackers in outbox.py),
rebuilds state after each login and asks the engine (service.py) to decide
again. Nothing from before a reconnect is assumed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from astpresence.engine.cards import Mailbox
from astpresence.engine.devices import DEVDND_PREFIX
from astpresence.domain.forwarding import Forwarding
from astpresence.domain.logsafe import clip
from astpresence.domain.model import NOT_SET, DeviceState, Presence
from astpresence.asterisk.outbox import Outbox
from astpresence.asterisk.queues import QueueMember, QueueMembers
from astpresence.domain.records import UserRecord
from astpresence.store.base import Batch, Store
from astpresence.asterisk.translate import freepbx_devices
from astpresence.asterisk.outbox import Writes
from astpresence.engine.phone_rules import call_step, freepbx_dnd_switched
from astpresence.engine.service import PresenceService, last_sync_key

logger = logging.getLogger(__name__)

#: The actor of a presence set by FreePBX's DND switch (history, sources).


class AsteriskSync:
    """One Asterisk server (``node``): what it holds, and what to send it.

    Each server has its own write trackers (outbox.py), queue members and
    FreePBX astdb; users, devices and presence are the engine's, shared by
    all servers.
    """

    def __init__(self, engine: PresenceService, store: Store,
                 clock: Callable[[], datetime], node: str, outbox: Outbox,
                 queue_members: QueueMembers) -> None:
        self._engine = engine
        self._store = store
        self._clock = clock
        self.node = node
        self.users = engine.users
        self.devices = engine.devices
        self.queue_members = queue_members
        self.outbox = outbox
        self.last_sync: datetime | None = None
        # Contact-card facts as this server has them; the engine merges the servers'.
        self.astdb_names: dict[str, str] = {}  # extension -> AMPUSER cidname
        self.callerids: dict[str, str] = {}  # user -> caller ID of a phone
        self.mailbox_counts: dict[str, Mailbox] = {}  # users' mailboxes only
        self.forwarding: dict[str, Forwarding] = {}  # extension -> FreePBX's CF, follow-me
        self._freepbx_devices: dict[str, tuple[str, ...]] = {}  # uid -> AMPUSER/<ext>/device
        self.adopted = 0  # changes made elsewhere and adopted
        self.echoes = 0  # our own writes seen back

    def on_presence_change(self, uid: str, presence: Presence) -> None:
        """A live ``PresenceStateChange``: our echo or a change made elsewhere."""
        if uid not in self.users:
            return  # not a user: nothing is stored for it
        batch = Batch()
        batch.put_asterisk.append((self.node, uid, presence))
        tracker = self.outbox.presence
        if tracker.seen(uid, presence):
            self.echoes += 1  # no log line here: there is one echo per change
            if tracker.needs(uid, self._engine.desired(uid)):
                # ours, but older than what is wanted now (a change made elsewhere
                # arrived while it was in flight): the writer asserts the wanted one
                self.outbox.mark(uid)
            self._engine.note_written(uid, batch)
        else:
            logger.info(
                "presence of %s changed in Asterisk (%s) to %s; adopting it as a manual change",
                uid, self.node, presence.state.value,
            )
            self.adopted += 1
            self._engine.adopt(uid, presence, batch, reason="changed in Asterisk")
        self._engine.store_later(batch)

    def on_device_change(self, device: str, state: DeviceState) -> None:
        """A live ``DeviceStateChange``."""
        self.devices.set(device, state, self.node)
        owner = self.devices.mirror_owner(device)
        if owner is not None:
            self.outbox.tracker("mirror").seen(owner, state.value)
            self.outbox.mark(owner)
            return
        dnd_user = self.devices.dnd_owner(device)
        if dnd_user is not None:
            batch = Batch()
            self._dnd_switched(dnd_user, state, batch)
            self._engine.store_later(batch)
            return
        uids = self.devices.users_of(device)
        if not uids:
            return
        now = self._clock()
        batch = Batch()
        for uid in uids:
            view = self.devices.note_unavailable(uid, now)
            self._call_step(uid, view.states, now, batch)
            self._engine.recompute(uid, now, batch, trigger=f"{device} {state.value}", actor="engine")
        self._engine.store_later(batch)

    def _dnd_switched(self, uid: str, state: DeviceState, batch: Batch) -> None:
        """FreePBX DND (``Custom:DND<user>``): BUSY is on, anything else off; our
        own write (dnd_sync) coming back is no switch."""
        on = state is DeviceState.BUSY
        if not self.outbox.tracker("freepbx_dnd").seen(uid, on):
            freepbx_dnd_switched(self._engine, uid, on, batch)

    def _call_step(self, uid: str, states: tuple[DeviceState, ...], now: datetime,
                   batch: Batch) -> None:
        call_step(self._engine, uid, states, now, batch)

    def knows(self, user: UserRecord) -> bool:
        """``user`` is known exactly as this hint names it (nothing to do)."""
        return self.users.get(user.id) == user

    async def on_hint(self, user: UserRecord) -> None:
        """A hint seen in ExtensionStatus/PresenceStatus: maybe a new user.

        Capped (``max_users``); users whose hint is gone leave at the next sync.
        """
        if self.knows(user):
            return
        refused = self.users.refused
        if self.users.add_hint_user(user, self.node):
            logger.info("user %s found in hint %s@%s", user.id, clip(user.extension),
                        clip(user.context))
            self._engine.users_changed()
            await self._store.save_users([user])
            batch = Batch()
            self._engine.broadcast.users(batch)
            self._engine.store_later(batch)
        elif self.users.refused > refused and refused == 0:
            logger.warning("a hint names user %s but there are max_users (%d) already; "
                           "left out until the next sync", user.id, self.users.max_users)

    def on_queue_member(self, member: QueueMember, *, removed: bool = False) -> None:
        """QueueMember / QueueMemberPause / QueueMemberAdded / QueueMemberRemoved."""
        if removed:
            self.queue_members.remove(member.key)
            self.outbox.tracker("queue_pause").forget(member.key)
            return
        kept = self.queue_members.update(member)
        if kept is None:
            return  # over the bound (logged once by QueueMembers)
        member = kept
        self.outbox.tracker("queue_pause").seen(member.key, (member.paused, member.reason))
        owner = self.queue_members.owner(member)
        if owner is not None:
            self.outbox.mark(owner)

    async def resync(
        self,
        presences: Mapping[str, Presence],
        hint_users: Iterable[UserRecord],
        devices: Mapping[str, DeviceState],
    ) -> dict[str, int]:
        """Rebuild from what Asterisk holds after a login.

        ``presences`` maps user ids to what Asterisk holds; absent ones are
        not_set. For each user:
        - Asterisk equals what we want: nothing to do;
        - Asterisk changed while we were away and we have no unsent change:
          adopt it (history source ``asterisk``);
        - we have a change Asterisk never got: write it (it was acknowledged
          to a client; on a conflict with a change in Asterisk it wins, and a
          warning says so).
        Then devices are replaced by what Asterisk reports and every user is
        decided again. Nothing is assumed from before the reconnect.
        """
        changed, gone = self.users.replace_hint_users(hint_users, self.node)
        if changed:
            await self._store.save_users(changed)
        if gone:
            logger.info("%d user(s) no longer in any hint: %s", len(gone),
                        ", ".join(sorted(gone)[:20]) + (" ..." if len(gone) > 20 else ""))
            await self._store.delete_users(gone)
        if self.users.refused:
            logger.warning("%d hint(s) name more users than max_users (%d) allows; "
                           "those users are left out", self.users.refused, self.users.max_users)
        self._engine.users_changed()
        self.outbox.presence.reset()
        self.outbox.tracker("queue_pause").reset()

        batch = Batch()
        counts = {"adopted": 0, "to_write": 0, "unchanged": 0, "conflicts": 0}
        for uid in self.users.ids():
            case = self._reconcile(uid, presences.get(uid, NOT_SET), batch)
            counts[case] += 1
            if case == "conflicts":
                counts["to_write"] += 1  # a conflict is written too

        # Devices as Asterisk reports them now; what we knew before is void.
        now = self._clock()
        self.devices.replace(devices, self.node)
        self.outbox.tracker("freepbx_dnd").reset()
        for device, state in devices.items():
            dnd_user = self.devices.dnd_owner(device)
            if dnd_user is not None:
                self._dnd_switched(dnd_user, state, batch)
        self.outbox.tracker("mirror").reset({owner: state.value for device, state in devices.items()
                                  if (owner := self.devices.mirror_owner(device)) is not None})
        for uid in self.users.ids():
            self.devices.note_unavailable(uid, now)
            self._engine.recompute(uid, now, batch, trigger="resync", actor="engine")
            self.outbox.mark(uid)
        batch.meta[last_sync_key(self.node)] = now.isoformat()
        self._engine.broadcast.users(batch)
        await self._engine.commit(batch)
        self.last_sync = now
        self.outbox.synced = True
        self.outbox.poke()
        return counts

    def _reconcile(self, uid: str, now_value: Presence, batch: Batch) -> str:
        """One user's presence after a login: which of the resync cases applies."""
        tracker = self.outbox.presence
        known = tracker.confirmed(uid)
        desired = self._engine.desired(uid)
        if now_value != known or not tracker.knows(uid):
            tracker.confirm(uid, now_value)
            batch.put_asterisk.append((self.node, uid, now_value))
        if now_value == desired:
            return "unchanged"
        if now_value != known and desired == known:
            self._engine.adopt(uid, now_value, batch,
                        reason="changed in Asterisk while astpresence was away")
            return "adopted"
        if now_value != known:
            logger.warning(
                "%s: Asterisk (%s) has %s but a change made through astpresence while "
                "it was unreachable (%s) is newer; writing it",
                uid, self.node, now_value.state.value, desired.state.value,
            )
            self.outbox.mark(uid)
            return "conflicts"
        self.outbox.mark(uid)
        return "to_write"

    def resync_queues(self, members: Iterable[QueueMember]) -> None:
        """Replace queue members with what ``QueueStatus`` reported."""
        members = list(members)
        self.queue_members.replace(members)
        self.outbox.tracker("queue_pause").reset({m.key: (m.paused, m.reason) for m in members})
        for uid in self.users.ids():
            self.outbox.mark(uid)

    # -- contact cards (cards.py) ----------------------------------------

    def on_ampuser(self, entries: Mapping[str, Mapping[str, str]]) -> None:
        """FreePBX's astdb AMPUSER as read at a sync: names and each user's devices."""
        by_user: dict[str, tuple[str, ...]] = {}
        for user in self.users.all():
            entry = entries.get(user.extension) if user.extension else None
            if entry and entry.get("device"):
                by_user[user.id] = freepbx_devices(entry["device"])
        self._freepbx_devices = by_user
        self.astdb_names = {ext: e["cidname"] for ext, e in entries.items() if e.get("cidname")}
        cards_from_nodes(self._engine)

    def per_device_dnd(self, uid: str) -> tuple[str, ...]:
        """FreePBX's per-device DND devices of the user on this server
        (``Custom:DEVDND<device>``), switched with the user's DND as its *78/*79 do."""
        return tuple(f"{DEVDND_PREFIX}{d}" for d in self._freepbx_devices.get(uid, ()))

    def on_forwarding(self, found: Mapping[str, Forwarding]) -> None:
        """FreePBX's forwarding and follow-me by extension, read at a sync."""
        self.forwarding = dict(found)
        cards_from_nodes(self._engine)

    def on_forwarding_of(self, extension: str, found: Forwarding | None) -> None:
        """One extension's forwarding read again (its Custom:CF / FOLLOWME device moved)."""
        if found:
            self.forwarding[extension] = found
        else:
            self.forwarding.pop(extension, None)
        cards_from_nodes(self._engine)

    def on_endpoint_names(self, callerids: Mapping[str, str]) -> None:
        """Caller IDs of users' phones (user -> ``"Alice Martin" <2000>``)."""
        self.callerids = dict(callerids)
        cards_from_nodes(self._engine)

    def on_mailboxes(self, counts: Mapping[str, Mailbox]) -> None:
        """Every mailbox's counts as listed at a sync."""
        cards = self._engine.cards
        self.mailbox_counts = {box: c for box, c in counts.items() if cards.has_mailbox(box)}
        listed = {box for node in self._engine.nodes.values() for box in node.mailbox_counts}
        missing = cards.missing_mailboxes(listed)
        if missing:
            logger.warning("Asterisk has no voicemail box %s set in the config; no "
                           "voicemail count for it", ", ".join(clip(m) for m in missing[:10]))
        cards_from_nodes(self._engine)

    def on_message_waiting(self, mailbox: str, counts: Mailbox) -> None:
        """A live ``MessageWaiting``; mailboxes no user has are dropped."""
        if self._engine.cards.has_mailbox(mailbox):
            self.mailbox_counts[mailbox] = counts
            self._engine.cards_changed(self._engine.cards.mailbox_changed(mailbox, counts))

    def link_lost(self) -> None:
        """The AMI link is down: nothing in flight will be confirmed."""
        self.outbox.link_lost()

    def take_all(self) -> Writes:
        """Everything to send now (see :meth:`Outbox.take`)."""
        return self.outbox.take(self._engine.wanted)


def cards_from_nodes(engine: PresenceService) -> None:
    """A server's names or voicemail counts were read: the cards as all servers have
    them (the first server in the config wins where two differ)."""
    names: dict[str, str] = {}
    callerids: dict[str, str] = {}
    counts: dict[str, Mailbox] = {}
    forwarding: dict[str, Forwarding] = {}
    for node in reversed(engine.nodes.values()):
        names.update(node.astdb_names)
        callerids.update(node.callerids)
        counts.update(node.mailbox_counts)
        forwarding.update(node.forwarding)
    cards = engine.cards
    engine.cards_changed(cards.replace_astdb_names(names if cards.read_names else {}))
    engine.cards_changed(cards.replace_endpoint_names(callerids))
    engine.cards_changed(cards.replace_mailboxes(counts))
    engine.cards_changed(cards.replace_forwarding(forwarding))
