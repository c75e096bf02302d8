"""The one place where AMI and the presence service meet.

It keeps the AMI link up (reconnecting with backoff), rebuilds state from
Asterisk after every login, routes events through one table to the service,
and writes what the service wants into ``PRESENCE_STATE``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from astpresence.asterisk.ami.client import (
    ActionError,
    ActionTimeout,
    AMIClient,
    AMIConnectionError,
    AuthenticationError,
)
from astpresence.asterisk.ami.frames import Message
from astpresence.asterisk.ami.gate import Reads
from astpresence.asterisk.ari import AriClient
from astpresence.engine.events import LinkEvent
from astpresence.engine.timers import backoff_delay, stopped_within
from astpresence.asterisk.settings import AMIConfig
from astpresence.domain.logsafe import clip
from astpresence.engine.metrics import Metrics
from astpresence.domain.model import DEFAULT_NODE, InvalidInput
from astpresence.engine.service import PresenceService
from astpresence.asterisk.sync import AsteriskSync
from astpresence.asterisk.call_codec import read_written
from astpresence.asterisk.cardreads import CardReads
from astpresence.asterisk.translate import (
    device_change,
    hint_user,
    message_waiting,
    presence_change,
    queue_member,
    translated,
)
from astpresence.asterisk.writer import Writer

logger = logging.getLogger(__name__)

#: FreePBX's devices of unconditional forwarding and follow-me (Custom:CF<ext>,
#: Custom:FOLLOWME<ext>): set by its feature codes, so the card follows them live.
FORWARD_DEVICES = ("Custom:CF", "Custom:FOLLOWME")


class NodeLog(logging.LoggerAdapter):  # type: ignore[type-arg]
    """Messages of one Asterisk server's link name it, when it has a name of its own."""

    def __init__(self, log: logging.Logger, node: str) -> None:
        super().__init__(log, {"node": node})

    def process(self, msg: Any, kwargs: Any) -> tuple[Any, Any]:
        node = (self.extra or {}).get("node")
        return (f"[{node}] {msg}" if node and node != DEFAULT_NODE else msg), kwargs


@dataclass
class LinkStatus:
    state: str = "disconnected"  # connecting, syncing, synced, disconnected
    last_error: str | None = None
    connected_since: datetime | None = None
    reconnects: int = 0
    next_retry_at: float | None = None  # loop.time()
    attempt: int = 0
    last_sync_seconds: float | None = None
    #: Reading contact cards after a sync: "", "reading caller IDs 120/10000", "done".
    cards: str = ""


class AMIBridge:
    def __init__(self, config: AMIConfig, service: PresenceService, *,
                 client_factory: Callable[..., AMIClient] = AMIClient, sync: AsteriskSync,
                 metrics: Metrics | None = None, ari: AriClient | None = None,
                 reads: Reads = Reads()) -> None:
        self._metrics = metrics or Metrics()
        self._ari = ari  # mirror writes go here when rules.mirror_via == "ari"
        self._config = config
        self._service = service
        #: This server's side of the engine (write trackers, queue members...).
        self._sync = sync
        self.name = config.name
        self._log = NodeLog(logger, config.name)
        self._metrics.ami_up.labels(self.name).set(0)
        self._metrics.reconnects.labels(self.name)  # shown from the start, at 0
        self._client_factory = client_factory
        self._reads = reads  # the read gate shared by every server's link (ami/gate.py)
        self._client: AMIClient | None = None
        self.status = LinkStatus()
        self._cards = CardReads(service, sync, self._log, self._cards_progress)
        self._mailbox_count_needed = False
        self._handlers: dict[str, Callable[[Message], Awaitable[None] | None]] = {
            "PresenceStateChange": self._on_presence_state_change,
            "PresenceStatus": self._on_hint_event,
            "ExtensionStatus": self._on_hint_event,
            "DeviceStateChange": self._on_device_state_change,
            "QueueMemberPause": self._on_queue_member,
            "QueueMemberStatus": self._on_queue_member,
            "QueueMemberAdded": self._on_queue_member,
            "QueueMemberRemoved": self._on_queue_member,
            "MessageWaiting": self._on_message_waiting,
        }
        # Labels from a fixed set: Asterisk (or anyone on the link) must not be able to
        # grow /metrics with made-up event names. Looked up once, not per event.
        self._counts = self._metrics.events.counts
        for name in [*self._handlers, "other"]:
            self._counts.setdefault(name, 0)

    # -- link loop -------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Keep the link up until ``stop`` is set."""
        attempt = 0
        while not stop.is_set():
            try:
                await self._session(stop)
                attempt = 0
            except AuthenticationError as exc:
                self.status.last_error = str(exc)
                self._log.error("%s; check ami.username/ami.secret and manager.conf", exc)
            except AMIConnectionError as exc:
                self.status.last_error = str(exc)
                self._log.warning("AMI link: %s", exc)
            finally:
                if self.status.state == "synced":
                    self._link_event("down", "astpresence is stopping" if stop.is_set()
                                     else self.status.last_error or "link closed")
                self._sync.link_lost()
                self._metrics.ami_up.labels(self.name).set(0)
                self.status.state = "disconnected"
                self.status.connected_since = None
                if self._client is not None:
                    await self._client.close()
                    self._client = None
            if stop.is_set():
                break
            attempt += 1
            self.status.attempt = attempt
            delay = backoff_delay(attempt)
            self.status.next_retry_at = asyncio.get_running_loop().time() + delay
            self._log.warning("reconnecting to AMI in %.1f s (attempt %d)", delay, attempt)
            await stopped_within(stop, delay)
            self.status.next_retry_at = None
            self.status.reconnects += 1
            self._metrics.reconnects.labels(self.name).inc()

    async def _session(self, stop: asyncio.Event) -> None:
        cfg = self._config
        self.status.state = "connecting"
        client = self._client_factory(
            cfg.host,
            cfg.port,
            cfg.username,
            cfg.secret.value,
            on_event=self._dispatch,
            ping_interval=cfg.ping_interval,
            action_timeout=cfg.action_timeout,
            connect_timeout=cfg.connect_timeout,
            read_gate=self._reads.gate,
            answer_hold=self._reads.answer_hold,
        )
        self._client = client
        await client.connect()
        self._log.info("logged in to AMI at %s:%d as %s", cfg.host, cfg.port, cfg.username)
        self.status.connected_since = datetime.now(UTC)
        self.status.last_error = None
        self.status.attempt = 0
        self.status.cards = ""
        self.status.state = "syncing"
        started = time.monotonic()
        try:
            await self._resync(client)
        except ActionError as exc:
            # e.g. res_manager_presencestate not loaded: the list action is unknown.
            raise AMIConnectionError(f"cannot read state from Asterisk: {exc}") from None
        except ActionTimeout as exc:
            raise AMIConnectionError(f"resync timed out: {exc}") from None
        self.status.last_sync_seconds = time.monotonic() - started
        self.status.state = "synced"
        self._link_event("synced")
        self._metrics.ami_up.labels(self.name).set(1)
        writer = asyncio.create_task(
            Writer(self._sync, self._ari, self._metrics, self._log).run(client),
            name="ami-writer")
        stopper = asyncio.create_task(stop.wait(), name="ami-stop")
        closed = asyncio.create_task(client.wait_closed(), name="ami-closed")
        # One action per phone (caller IDs) or per mailbox (MailboxCount): read
        # after the sync, beside the writer.
        names = asyncio.create_task(self._cards.after_sync(client), name="ami-cards")
        try:
            done, _ = await asyncio.wait(
                {writer, stopper, closed}, return_when=asyncio.FIRST_COMPLETED
            )
            for task in done:
                if task is not stopper:
                    task.result()  # raises AMIConnectionError when the link died
        finally:
            for task in (writer, stopper, closed, names):
                task.cancel()
            await asyncio.gather(writer, stopper, closed, names, return_exceptions=True)

    async def _resync(self, client: AMIClient) -> None:
        self._log.info("reading presence, device and hint state from Asterisk")
        presences = dict(translated(
            await client.send_list_action("PresenceStateList"), presence_change, "presence"))
        devices = dict(translated(
            await client.send_list_action("DeviceStateList"), device_change, "device"))
        try:
            hint_events = await client.send_list_action("ExtensionStateList")
        except ActionError as exc:
            # main/extension_state.c answers an error, not an empty list, when
            # the dialplan has no hints at all: users can still come from config.
            if "no dialplan hints" not in str(exc).lower():
                raise
            self._log.warning("Asterisk has no dialplan hints; only users from the config "
                              "are known")
            hint_events = []
        users = [u for u in map(hint_user, hint_events) if u is not None]
        if self._service.calls.enabled:  # before the sync lets the writer go
            self._sync.outbox.tracker("call_rule").reset(await read_written(client, self._log))
        counts = await self._sync.resync(presences, users, devices)
        if self._service.rules.queue_pause:
            await self._resync_queues(client)
        await self._cards.astdb(client)
        await self._cards.voicemail(client)
        self._log.info(
            "synced with Asterisk: %d users, %d presences, %d devices; "
            "adopted %d, writing %d, conflicts %d",
            len(self._service.users.ids()), len(presences), len(devices),
            counts["adopted"], counts["to_write"], counts["conflicts"],
        )


    async def _resync_queues(self, client: AMIClient) -> None:
        """Read every queue member, so pauses are reconciled after each login."""
        items = [ev for ev in await client.send_list_action("QueueStatus")
                 if ev.event == "QueueMember"]
        members = list(translated(items, queue_member, "queue member"))
        self._sync.resync_queues(members)
        self._log.info("read %d queue members", len(members))

    # -- events ----------------------------------------------------------

    def _dispatch(self, msg: Message) -> Awaitable[None] | None:
        """A plain call for what needs no await (every event of a presence change)."""
        name = msg.event or ""
        counts = self._counts
        if name in counts:
            counts[name] += 1
        else:
            counts["other"] += 1
        handler = self._handlers.get(name)
        return None if handler is None else handler(msg)

    def _on_presence_state_change(self, msg: Message) -> None:
        try:
            change = presence_change(msg)
        except InvalidInput as exc:
            self._log.warning("ignoring PresenceStateChange for %s: %s",
                           clip(msg.get("Presentity")), exc)
            return
        if change is not None:
            self._sync.on_presence_change(*change)

    def _on_hint_event(self, msg: Message) -> Awaitable[None] | None:
        user = hint_user(msg)
        if user is None or self._sync.knows(user):
            return None  # not a hint of a user, or one known as it is
        return self._sync.on_hint(user)

    def _on_device_state_change(self, msg: Message) -> Awaitable[None] | None:
        try:
            change = device_change(msg)
        except InvalidInput as exc:
            self._log.warning("ignoring DeviceStateChange for %s: %s", clip(msg.get("Device")), exc)
            return None
        if change is None:
            return None
        self._sync.on_device_change(*change)
        device = change[0]
        if device.startswith(FORWARD_DEVICES) and self._client is not None:
            # FreePBX's *72/*73 or *21 moved its BLF device: read that forwarding again
            return self._cards.forwarding_of(self._client, device.partition(":")[2]
                                             .removeprefix("CF").removeprefix("FOLLOWME"))
        return None

    def _on_message_waiting(self, msg: Message) -> None:
        try:
            mailbox, counts = message_waiting(msg)
        except InvalidInput as exc:
            self._log.warning("ignoring MessageWaiting for %s: %s", clip(msg.get("Mailbox")), exc)
            return
        self._sync.on_message_waiting(mailbox, counts)

    def _on_queue_member(self, msg: Message) -> None:
        member = queue_member(msg)
        if member is not None:
            self._sync.on_queue_member(member, removed=msg.event == "QueueMemberRemoved")

    # -- writes ----------------------------------------------------------

    def _cards_progress(self, text: str) -> None:
        self.status.cards = text

    def _link_event(self, state: str, reason: str | None = None) -> None:
        cfg = self._config
        self._service.link_changed(
            LinkEvent(state, datetime.now(UTC), f"{cfg.host}:{cfg.port}", reason, self.name))

    async def ping(self) -> None:
        """A round trip on the live link: every action sent before it has been answered
        (Asterisk runs one session's actions in order). AMIError when the link is down."""
        client = self._client
        if client is None:
            raise AMIConnectionError("not connected")
        await client.send_action("Ping")

    def status_json(self) -> dict[str, Any]:
        st = self.status
        retry_in = None
        if st.next_retry_at is not None:
            retry_in = max(0.0, round(st.next_retry_at - asyncio.get_running_loop().time(), 1))
        return {
            "name": self.name,
            "host": self._config.host,
            "port": self._config.port,
            "username": self._config.username,
            "state": st.state,
            "connected": st.state in ("syncing", "synced"),
            "connected_since": st.connected_since.isoformat() if st.connected_since else None,
            "last_error": st.last_error,
            "reconnects": st.reconnects,
            "retry_in_seconds": retry_in,
            "last_sync_seconds": st.last_sync_seconds,
            "cards": st.cards,
        }
