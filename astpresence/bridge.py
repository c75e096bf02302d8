"""The one place where AMI and the presence service meet.

It keeps the AMI link up (reconnecting with backoff), rebuilds state from
Asterisk after every login, routes events through one table to the service,
and writes what the service wants into ``PRESENCE_STATE``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from .ami.client import (
    ActionError,
    ActionTimeout,
    AMIClient,
    AMIConnectionError,
    AMIError,
    AuthenticationError,
)
from .ami.frames import Message
from .ari import AriClient, AriError
from .codec import encode_presence_value, presence_from_change_event
from .config import AMIConfig
from .metrics import Metrics
from .model import InvalidInput, Presence
from .service import PauseWrite, PresenceService, QueueMember

logger = logging.getLogger(__name__)

#: Reconnect delays in seconds; the last one repeats (STYLE.md, Lifecycle).
BACKOFF = (1.0, 2.0, 4.0, 8.0, 16.0, 32.0)
MAX_CONCURRENT_WRITES = 64


def backoff_delay(attempt: int, rng: random.Random | None = None) -> float:
    """Delay before reconnect attempt ``attempt`` (1-based), with +-20% jitter."""
    base = BACKOFF[min(attempt, len(BACKOFF)) - 1]
    return base * (rng or random).uniform(0.8, 1.2)


@dataclass
class LinkStatus:
    state: str = "disconnected"  # connecting, syncing, synced, disconnected
    last_error: str | None = None
    connected_since: datetime | None = None
    reconnects: int = 0
    next_retry_at: float | None = None  # loop.time()
    attempt: int = 0
    last_sync_seconds: float | None = None


class AMIBridge:
    def __init__(
        self,
        config: AMIConfig,
        service: PresenceService,
        *,
        client_factory: Callable[..., AMIClient] = AMIClient,
        metrics: Metrics | None = None,
        ari: AriClient | None = None,
    ) -> None:
        self._metrics = metrics or Metrics()
        self._ari = ari  # mirror writes go here when rules.mirror_via == "ari"
        self._config = config
        self._service = service
        self._client_factory = client_factory
        self._client: AMIClient | None = None
        self.status = LinkStatus()
        self._handlers: dict[str, Callable[[Message], Awaitable[None] | None]] = {
            "PresenceStateChange": self._on_presence_state_change,
            "PresenceStatus": self._on_hint_event,
            "ExtensionStatus": self._on_hint_event,
            "DeviceStateChange": self._on_device_state_change,
            "QueueMemberPause": self._on_queue_member,
            "QueueMemberStatus": self._on_queue_member,
            "QueueMemberAdded": self._on_queue_member,
            "QueueMemberRemoved": self._on_queue_member,
        }

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
                logger.error("%s; check ami.username/ami.secret and manager.conf", exc)
            except AMIConnectionError as exc:
                self.status.last_error = str(exc)
                logger.warning("AMI link: %s", exc)
            finally:
                self._service.link_lost()
                self._metrics.ami_up.set(0)
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
            logger.warning("reconnecting to AMI in %.1f s (attempt %d)", delay, attempt)
            try:
                await asyncio.wait_for(stop.wait(), delay)
            except TimeoutError:
                pass
            self.status.next_retry_at = None
            self.status.reconnects += 1
            self._metrics.reconnects.inc()

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
        )
        self._client = client
        await client.connect()
        logger.info("logged in to AMI at %s:%d as %s", cfg.host, cfg.port, cfg.username)
        self.status.connected_since = datetime.now(UTC)
        self.status.last_error = None
        self.status.attempt = 0
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
        self._metrics.ami_up.set(1)
        writer = asyncio.create_task(self._writer(client), name="ami-writer")
        stopper = asyncio.create_task(stop.wait(), name="ami-stop")
        closed = asyncio.create_task(client.wait_closed(), name="ami-closed")
        try:
            done, _ = await asyncio.wait(
                {writer, stopper, closed}, return_when=asyncio.FIRST_COMPLETED
            )
            for task in done:
                if task is not stopper:
                    task.result()  # raises AMIConnectionError when the link died
        finally:
            for task in (writer, stopper, closed):
                task.cancel()
            await asyncio.gather(writer, stopper, closed, return_exceptions=True)

    async def _resync(self, client: AMIClient) -> None:
        logger.info("reading presence, device and hint state from Asterisk")
        presences: dict[str, Presence] = {}
        for ev in await client.send_list_action("PresenceStateList"):
            presentity = ev.get("Presentity")
            if not presentity:
                continue
            try:
                presences[presentity] = presence_from_change_event(
                    ev.get("Status", "") or "", ev.get("Subtype", "") or "",
                    ev.get("Message", "") or "",
                )
            except InvalidInput as exc:
                logger.warning("ignoring presence of %s from Asterisk: %s", presentity, exc)
        devices = {
            ev.get("Device", "") or "": ev.get("State", "") or ""
            for ev in await client.send_list_action("DeviceStateList")
            if ev.get("Device")
        }
        try:
            hint_events = await client.send_list_action("ExtensionStateList")
        except ActionError as exc:
            # main/extension_state.c answers an error, not an empty list, when
            # the dialplan has no hints at all: users can still come from config.
            if "no dialplan hints" not in str(exc).lower():
                raise
            logger.warning("Asterisk has no dialplan hints; only users from the config are known")
            hint_events = []
        hints = [
            (ev.get("Exten", "") or "", ev.get("Context", "") or "", ev.get("Hint", "") or "")
            for ev in hint_events
            if ev.get("Hint")
        ]
        counts = await self._service.resync(presences, hints, devices)
        if self._service.rules.queue_pause:
            await self._resync_queues(client)
        logger.info(
            "synced with Asterisk: %d users, %d presences, %d devices; "
            "adopted %d, writing %d, conflicts %d",
            len(self._service.users.ids()), len(presences), len(devices),
            counts["adopted"], counts["to_write"], counts["conflicts"],
        )

    async def _resync_queues(self, client: AMIClient) -> None:
        """Read every queue member, so pauses are reconciled after each login."""
        members = []
        for ev in await client.send_list_action("QueueStatus"):
            if ev.event != "QueueMember":
                continue
            queue, location = ev.get("Queue"), ev.get("Location") or ev.get("Interface")
            if queue and location:
                members.append(QueueMember(
                    queue, location, ev.get("StateInterface", "") or "",
                    ev.get("Paused") == "1", ev.get("PausedReason", "") or ""))
        self._service.resync_queues(members)
        logger.info("read %d queue members", len(members))

    # -- events ----------------------------------------------------------

    async def _dispatch(self, msg: Message) -> None:
        name = msg.event or ""
        # Labels from a fixed set: Asterisk (or anyone on the link) must not be
        # able to grow /metrics with made-up event names.
        self._metrics.events.labels(name if name in self._handlers else "other").inc()
        handler = self._handlers.get(name)
        if handler is not None:
            result = handler(msg)
            if result is not None:
                await result

    async def _on_presence_state_change(self, msg: Message) -> None:
        presentity = msg.get("Presentity") or ""
        try:
            presence = presence_from_change_event(
                msg.get("Status", "") or "", msg.get("Subtype", "") or "",
                msg.get("Message", "") or "",
            )
        except InvalidInput as exc:
            logger.warning("ignoring PresenceStateChange for %s: %s", presentity, exc)
            return
        await self._service.on_presence_change(presentity, presence)

    async def _on_hint_event(self, msg: Message) -> None:
        hint = msg.get("Hint")
        if hint:
            await self._service.on_hint(msg.get("Exten", "") or "", msg.get("Context", "") or "",
                                        hint)

    async def _on_device_state_change(self, msg: Message) -> None:
        device = msg.get("Device")
        if device:
            await self._service.on_device_change(device, msg.get("State", "") or "")

    def _on_queue_member(self, msg: Message) -> None:
        queue = msg.get("Queue")
        interface = msg.get("Interface") or msg.get("Location")
        if not queue or not interface:
            return
        self._service.on_queue_member(
            queue, interface, paused=msg.get("Paused") == "1",
            reason=msg.get("PausedReason", "") or "",
            state_interface=msg.get("StateInterface", "") or "",
            removed=msg.event == "QueueMemberRemoved",
        )

    # -- writes ----------------------------------------------------------

    async def _writer(self, client: AMIClient) -> None:
        """Send what the service wants; many in flight at once, in order per user.

        Asterisk runs one session's actions in the order received, so
        pipelining keeps each user's writes in order.
        """
        sem = asyncio.Semaphore(MAX_CONCURRENT_WRITES)
        tasks: set[asyncio.Task[None]] = set()
        try:
            while True:
                # Wake for new work, or when a refused write is due again.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._service.wakeup.wait(),
                                           self._service.next_retry_in())
                presence_writes, mirror_writes, pause_writes = self._service.take_all()
                jobs: list[Awaitable[None]] = [
                    self._write_one(client, uid, presence) for uid, presence in presence_writes]
                jobs += [self._write_mirror(client, uid, device, state)
                         for uid, device, state in mirror_writes]
                jobs += [self._write_pause(client, w) for w in pause_writes]
                for job in jobs:
                    await sem.acquire()
                    task = asyncio.create_task(self._bounded(job, sem))
                    tasks.add(task)
                    task.add_done_callback(tasks.discard)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    @staticmethod
    async def _bounded(job: Awaitable[None], sem: asyncio.Semaphore) -> None:
        try:
            await job
        finally:
            sem.release()

    async def _write_one(self, client: AMIClient, uid: str, presence: Presence) -> None:
        started = time.perf_counter()
        try:
            await client.send_action(
                "Setvar",
                {
                    "Variable": f"PRESENCE_STATE(CustomPresence:{uid})",
                    "Value": encode_presence_value(presence),
                },
            )
            self._metrics.setvar_seconds.observe(time.perf_counter() - started)
            logger.debug("wrote presence of %s: %s", uid, presence.state.value)
        except (ActionError, ActionTimeout, InvalidInput, ValueError) as exc:
            self._service.write_failed(uid, presence, str(exc))
        except AMIError as exc:
            # Link lost: the resync after the next login decides what to write.
            logger.debug("write of %s not confirmed: %s", uid, exc)

    async def _write_mirror(self, client: AMIClient, uid: str, device: str, state: str) -> None:
        try:
            if self._ari is not None:
                await self._ari.set_device_state(device, state)
            else:
                await client.send_action(
                    "Setvar", {"Variable": f"DEVICE_STATE({device})", "Value": state})
            self._service.mirror_written(uid, state)
        except (ActionError, ActionTimeout, AriError) as exc:
            self._service.mirror_failed(uid, state, str(exc))
        except AMIError as exc:
            logger.debug("mirror write of %s not confirmed: %s", uid, exc)

    async def _write_pause(self, client: AMIClient, write: PauseWrite) -> None:
        headers = {"Interface": write.interface, "Queue": write.queue,
                   "Paused": "true" if write.paused else "false"}
        if write.paused:
            headers["Reason"] = write.reason
        try:
            await client.send_action("QueuePause", headers)
            self._service.pause_written(write)
            logger.info("%s %s in queue %s (%s)", "paused" if write.paused else "unpaused",
                        write.interface, write.queue, write.user)
        except (ActionError, ActionTimeout) as exc:
            self._service.pause_failed(write, str(exc))
        except AMIError as exc:
            logger.debug("QueuePause for %s not confirmed: %s", write.user, exc)

    def status_json(self) -> dict[str, Any]:
        st = self.status
        retry_in = None
        if st.next_retry_at is not None:
            retry_in = max(0.0, round(st.next_retry_at - asyncio.get_running_loop().time(), 1))
        return {
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
        }
