"""``astpresence serve``: startup -> main loop -> shutdown.

SIGINT/SIGTERM set a stop flag; a second SIGINT forces exit. Shutdown closes
the HTTP listener, stops the AMI link, drains the store writer and closes the
database, each with a timeout.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import signal
import socket
from collections.abc import Awaitable, Sequence
from typing import Any

from aiohttp import web

from astpresence.web.api import HttpServerLog, create_app
from astpresence.asterisk.ari import AriClient
from astpresence.asterisk.ami.gate import Reads
from astpresence.cluster.ha import Leadership
from astpresence.web.admission import Admission, AdmittingSite
from astpresence.domain.logsafe import clip
from astpresence.app.retention import Retention
from astpresence.app.systemd import Notifier
from astpresence.asterisk.nodes import attach_nodes
from astpresence.cluster.commands import CommandTable, Remote
from astpresence.cluster.notices import LeaderNotices
from astpresence.cluster.relay import CommandServer, Follower
from astpresence.cluster.following import FollowerAPI, Following
from astpresence.cluster.serving import Serving
from astpresence.sources.registry import SOURCES
from astpresence.asterisk.bridge import AMIBridge
from astpresence.app.config import node_secret_var
from astpresence.app.config_view import config_json, read_batching
from astpresence.app.settings import Config, default_db_path
from astpresence.app.lock import DaemonLock, LockFailed, take_database
from astpresence.app.loop import event_loop_factory
from astpresence.app.metrics import Metrics
from astpresence.engine.service import PresenceService
from astpresence.store.base import Store, StoreError
from astpresence.app.store_choice import open_store, store_name

logger = logging.getLogger(__name__)

SHUTDOWN_TIMEOUT = 10.0
#: The store drain's wait once the database is known to be lost (a leader that
#: lost it): what is still queued was never acknowledged.
LOST_STORE_TIMEOUT = 2.0
#: Allocations between young-generation collections (CPython's default: 700).
GC_THRESHOLD = 10_000


class DaemonError(Exception):
    """Start-up failed for a reason the user can fix (message says how)."""


class Daemon:
    """The running daemon: store, service, AMI bridge and HTTP API."""

    def __init__(self, config: Config, store: Store | None = None) -> None:
        self.config = config
        self.notifier = Notifier()  # systemd: READY, STATUS, WATCHDOG, STOPPING
        self._notifying: list[asyncio.Task[None]] = []
        self.store: Store = store if store is not None else open_store(config)
        self.service = PresenceService(self.store, config.users, rules_config=config.rules,
                                       max_users=config.max_users,
                                       dnd_device=config.freepbx.dnd_device,
                                       dnd_sync=config.freepbx.dnd_sync,
                                       mailbox_pattern=config.cards.mailbox,
                                       read_names=config.cards.names,
                                       nodes=[n.name for n in config.asterisk_servers],
                                       status_catalogue=config.statuses, call_settings=config.calls)
        #: The ports the engine is handed: each Asterisk server's side.
        self.nodes = attach_nodes(self.service, self.store)
        self.metrics = Metrics()
        self.metrics.watch_service(self.service)
        self.ari = (AriClient(config.ari.url, config.ari.username, config.ari.password.value)
                    if config.rules.mirror and config.rules.mirror_via == "ari" else None)
        #: One AMI link per Asterisk server; :attr:`bridge` is the first (or only) one.
        reads = Reads.of(config.read_batch_ms, config.answers_ms)  # one gate for all
        self.bridges = [AMIBridge(node, self.service, sync=self.nodes[node.name],
                                  metrics=self.metrics, ari=self.ari, reads=reads)
                        for node in config.asterisk_servers]
        self.bridge = self.bridges[0]
        self.retention = Retention(self.store, config.history_keep_days,
                                   config.history_keep_rows)
        #: Each source plug-in at work (sources/registry.py), by name.
        self.sources = {p.name: p.start(config.sources.get(p.name, p.default), self.service)
                        for p in SOURCES}
        for source in self.sources.values():
            self.metrics.watch(source.collectors())
        #: Who answers the API: the engine, or while following the follower's port.
        self.serving = Serving(self.service, CommandTable(self.service, self.sources, SOURCES))
        self.stop_event = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self.port: int | None = None  # the bound HTTP port (useful with port 0)
        self.api_url = ""
        self.started = asyncio.Event()  # the API listens; port is known
        self.stopped = asyncio.Event()  # everything closed
        self.force_exit = asyncio.Event()  # shutdown stops waiting (but drains the store)
        self._lock: DaemonLock | None = None
        #: An HA group on PostgreSQL ([ha] enabled): None when off.
        self.leadership = (Leadership(config.db_url.value, config.ha.node)
                           if config.ha.enabled else None)
        self.exit_code = 0
        #: An HA group's follower link and the leader's command runner (relay.py).
        self.follower: Follower | None = None
        self.commands: CommandServer | None = None
        if self.leadership is not None:
            leadership = self.leadership
            self.metrics.watch_ha(lambda: leadership.role)

    async def start(self) -> None:
        if self.leadership is not None and not self.config.db_url.value:
            raise DaemonError("[ha] enabled needs the store on PostgreSQL ([store] url or "
                              "ASTPRESENCE_DB_URL): the database is what the nodes share")
        self._take_database()
        try:
            await self.store.open()
        except StoreError as exc:
            self._release_database()
            raise DaemonError(str(exc)) from None
        if self.leadership is None:
            await self.service.start()
        # else: the state is loaded once this node leads (run()).
        app = create_app(self.serving, self._status, self.store,
                         privacy=self.config.privacy, metrics=self.metrics,
                         config=lambda: config_json(self.config),
                         max_websockets=self.config.max_websockets, sources=self.sources,
                         ha=self._ha_status if self.leadership else None,
                         writes=(self.config.writes_per_second, self.config.write_burst))
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False,
                                     logger=HttpServerLog(),
                                     keepalive_timeout=self.config.idle_timeout)
        await self._runner.setup()
        self.admission = Admission(self.config.max_connections,
                                   self.config.max_connections_per_address)
        site = AdmittingSite(self._runner, self.config.listen_host, self.config.listen_port,
                             self.admission)
        try:
            await site.start()
        except OSError as exc:
            await self._runner.cleanup()
            await self.service.stop()
            await self.store.close()
            self._release_database()
            raise DaemonError(f"cannot listen on {self.config.listen}: {exc.strerror}") from None
        self.port = int(self._runner.addresses[0][1])  # the real one, also with port 0
        host = f"[{self.config.listen_host}]" if ":" in self.config.listen_host else \
            self.config.listen_host
        self.api_url = f"http://{host}:{self.port}"
        if self._lock is not None:
            self._lock.note(api=self.api_url)
        if self.leadership is not None:
            self.leadership.api = self.api_url
            self.leadership.node = self.config.ha.node or f"{socket.gethostname()}:{self.port}"
        logger.info("HTTP API listening on %s", self.api_url)

    def _take_database(self) -> None:
        """A database file is locked to this daemon (its default directory made)."""
        path = self.store.local_file
        if path is not None:
            try:
                self._lock = take_database(path, make_dir=path == default_db_path())
            except LockFailed as exc:
                raise DaemonError(str(exc)) from None

    def _release_database(self) -> None:
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def _ha_status(self) -> dict[str, Any]:
        assert self.leadership is not None
        follower = self.follower
        return {**self.leadership.status_json(),
                "following": follower is not None and follower.ready.is_set(),
                "commands_run": self.commands.done if self.commands is not None else 0}

    async def _call_leader(self, kind: str, body: dict[str, Any]) -> dict[str, Any]:
        if self.follower is None:
            raise StoreError("this node no longer follows a leader; try again")
        return await self.follower.call(kind, body)

    def _waiting_for(self) -> str | None:
        """What keeps the daemon from serving fully (systemd's STATUS=), or None once
        every Asterisk server is synced, or a follower is in step with its leader."""
        if self.follower is not None:
            return None if self.follower.ready.is_set() else "following: loading the state"
        waiting = [b for b in self.bridges if b.status.state != "synced"]
        return ("waiting for Asterisk: " + "; ".join(
            f"{b.name} {b.status.state}"
            + (f" ({clip(b.status.last_error, 120)})" if b.status.last_error else "")
            for b in waiting)) if waiting else None

    def _status(self) -> list[dict[str, Any]]:
        if self.follower is None:
            return [b.status_json() for b in self.bridges]
        # A follower talks to no Asterisk: it shows the leader's links as told.
        links = self.service.events.links
        return [{**b.status_json(), "state": "follower", "connected": False,
                 "leader_link": links[b.name].state if b.name in links else None}
                for b in self.bridges]

    async def run(self) -> None:
        """Start, keep the AMI link up until stopped, shut down.

        :attr:`started` is set once the API listens (:attr:`port` is then the
        bound port); :attr:`stopped` once everything is closed.
        """
        await self.start()
        self.started.set()
        self._notifying = [
            asyncio.create_task(self.notifier.keep_alive(self.stop_event), name="watchdog"),
            asyncio.create_task(self.notifier.report(self._waiting_for, self.stop_event),
                                name="readiness")]
        ha = self.leadership
        commands = None
        if ha is not None:
            try:
                if not await self._follow_until_leading(ha):
                    await self.shutdown()
                    return  # stopped as a follower
                # A takeover: the state as the last leader stored it; the AMI
                # login below rebuilds the rest from Asterisk.
                self.service.broadcast.relay = LeaderNotices()
                await self.service.start()
                self.serving.lead(self.service)
            except BaseException:
                await self.shutdown()
                raise
            self.commands = CommandServer(self.config.db_url.value, self.serving.table,
                                          self.store)
            commands = asyncio.create_task(self.commands.run(self.stop_event), name="commands")
        link = asyncio.create_task(self._links(), name="ami-links")
        sources = [asyncio.create_task(s.run(self.stop_event), name=name)
                   for name, s in self.sources.items()]
        retention = asyncio.create_task(self.retention.run(self.stop_event), name="retention")
        try:
            if ha is None:
                await self.stop_event.wait()
            else:
                lost = await ha.hold(self.stop_event)
                if lost is not None:
                    # Stop writing to Asterisk now: another node may take the lock.
                    link.cancel()
                    logger.error("%s: no longer the leader; AMI writes stopped, exiting "
                                 "(restarted, this node follows the new leader)", lost)
                    self.exit_code = 1
        finally:
            for task in (commands, retention):
                if task is not None:
                    task.cancel()
                    await asyncio.gather(task, return_exceptions=True)
            await self.shutdown(link, sources)

    async def _follow_until_leading(self, ha: Leadership) -> bool:
        """Serve the API as a follower until this node takes the lock (True) or stops."""
        done = asyncio.Event()
        remote = Remote(lambda kind, body: self._call_leader(kind, body))
        following = Following(self.service, self.store, remote)
        self.follower = Follower(self.config.db_url.value, ha.node, self.store,
                                 following.load, following.apply,
                                 following.read_leaders_cards)
        self.serving.follow(FollowerAPI(following), remote)
        task = asyncio.create_task(self.follower.run(done), name="follower")
        try:
            return await ha.acquire(self.stop_event)
        finally:
            # The links as the old leader told them are void: this node reads
            # its own after the takeover (until then it is not "synced"). It
            # answers as a follower until service.start() has loaded the state.
            self.service.events.links.clear()
            done.set()
            await asyncio.gather(task, return_exceptions=True)
            self.follower = None

    async def _links(self) -> None:
        """Every server's link, side by side: one that is down holds up none of the others."""
        async with asyncio.TaskGroup() as group:
            for bridge in self.bridges:
                group.create_task(bridge.run(self.stop_event), name=f"ami-link-{bridge.name}")

    async def shutdown(self, link: asyncio.Task[None] | None = None,
                       sources: Sequence[asyncio.Task[None]] = ()) -> None:
        """Close the listener, stop the AMI link, drain the store, close it.

        Each step waits at most :data:`SHUTDOWN_TIMEOUT`; once :attr:`force_exit`
        is set (a second Ctrl-C) the remaining waits end at once, except the
        store's: what was acknowledged is still written.
        """
        logger.info("shutting down")
        self.notifier.send("STOPPING=1")
        self.stop_event.set()
        await asyncio.gather(*self._notifying, return_exceptions=True)
        if self._runner is not None:
            await self._step("the HTTP API and its WebSocket clients", self._runner.cleanup())
            self._runner = None
        for task in sources:
            await self._step(f"the source {task.get_name()}", task)
        if link is not None:
            await self._step("the AMI link", link)
        await self._step("the store writer", self.service.stop(), drain=True,
                         timeout=LOST_STORE_TIMEOUT if self.exit_code else SHUTDOWN_TIMEOUT)
        if self.ari is not None:
            await self._step("the ARI client", self.ari.close())
        if self.leadership is not None:
            await self._step("the leader lock", self.leadership.release())
        await self.store.close()
        self._release_database()
        self.notifier.close()
        self.stopped.set()
        logger.info("stopped")

    async def _step(self, what: str, work: Awaitable[None], *, drain: bool = False,
                    timeout: float = SHUTDOWN_TIMEOUT) -> None:
        task = asyncio.ensure_future(work)
        waiters: set[asyncio.Future[Any]] = {task}
        forced = None
        if not drain:  # a forced shutdown still drains the store
            forced = asyncio.ensure_future(self.force_exit.wait())
            waiters.add(forced)
        done, _ = await asyncio.wait(waiters, timeout=timeout,
                                     return_when=asyncio.FIRST_COMPLETED)
        if forced is not None:
            forced.cancel()
        if task in done:
            if not task.cancelled() and task.exception() is not None:
                logger.error("%s ended with an error: %s", what, task.exception())
            return
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        why = "forced" if self.force_exit.is_set() else f"not done within {timeout:.0f} s"
        logger.warning("stopping %s: %s; cancelled", what, why)


def serve(config: Config) -> int:
    """Run the daemon until SIGINT/SIGTERM. Returns the process exit code."""

    async def main() -> int:
        daemon = Daemon(config)
        loop = asyncio.get_running_loop()
        interrupts = 0

        def on_signal(signum: int) -> None:
            nonlocal interrupts
            interrupts += 1
            if interrupts == 1:
                logger.info("received %s; stopping (Ctrl-C again to stop at once)",
                            signal.Signals(signum).name)
                daemon.stop_event.set()
            elif interrupts == 2:
                logger.warning("received %s again: stopping at once; acknowledged changes "
                               "are still stored (a third one exits without that)",
                               signal.Signals(signum).name)
                daemon.force_exit.set()
            else:
                logger.warning("third signal: exiting now, without draining the store")
                os._exit(130)

        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, on_signal, sig)
        logger.info(
            "astpresence starting: AMI %s%s, store %s, event loop %s",
            ", ".join(f"{n.host}:{n.port} as {n.username}" + (f" ({n.name})" if config.nodes
                                                             else "")
                      for n in config.asterisk_servers), read_batching(config), store_name(config),
            type(loop).__module__.split(".")[0])
        if not config.nodes and not config.ami.secret.value:
            logger.warning("no AMI secret configured (ami.secret / ASTPRESENCE_AMI_SECRET)")
        for node in config.nodes:
            if not node.secret.value:
                logger.warning("no AMI secret configured for Asterisk %s (secret in its "
                               "[[asterisk]] entry, or %s)", node.name,
                               node_secret_var(node.name))
        try:
            await daemon.run()
        except DaemonError as exc:
            logger.error("%s", exc)
            return 1
        if daemon.exit_code:
            return daemon.exit_code
        leftover = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        if leftover:
            logger.info("cancelling %d remaining task(s)", len(leftover))
        return 0

    # The state of thousands of users is long-lived; with CPython's default
    # thresholds (700, 10, 10) every burst of AMI events triggers full
    # collections over all of it, 20 to 140 ms each at 10,000 users, about a
    # sixth of the CPU at full load (bench/README.md, scenario 2). Collect the
    # young generation less often: fewer promotions, hence far fewer full ones.
    gc.set_threshold(GC_THRESHOLD, 10, 10)
    with asyncio.Runner(loop_factory=event_loop_factory()) as runner:
        return runner.run(main())

