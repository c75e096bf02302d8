"""Who may hold an HTTP connection: caps in all and per address, descriptors kept back.

Anyone who can reach the API port can open connections, token or not. Unbounded,
a flood of slow connections takes every file descriptor (the common soft limit
is 1,024), and then the AMI reconnect and the database fail too. So:

- the soft open-files limit is raised to the hard one at start;
- at most ``max_connections`` HTTP connections at once, never more than the
  descriptors left after :data:`RESERVED_FDS` kept for AMI links, the database,
  calendar fetches and the log; at most ``per_address`` from one address;
- a connection over a cap is closed at once (no descriptor kept) and said in
  the log once a minute with a count, not once per attempt;
- aiohttp's keep-alive timeout, which also bounds how long a new connection may
  take to send its first request, is :data:`IDLE_TIMEOUT` instead of an hour
  (the daemon passes it to the runner).
"""

from __future__ import annotations

import asyncio
import logging
import resource
import time
from collections.abc import Callable
from typing import Any, cast

from aiohttp import web

logger = logging.getLogger(__name__)

#: Connections the kernel may hold for us to accept, and asyncio accepts in one go
#: (each takes a descriptor before it can be refused).
BACKLOG = 128
#: Descriptors kept for everything but admitted HTTP clients: AMI links, the
#: database, calendar fetches, the log, and one accept burst.
RESERVED_FDS = 128 + BACKLOG
#: Seconds an idle connection, or a new one that has not sent a whole request, is kept.
IDLE_TIMEOUT = 10.0
#: Refusals are logged at most this often (seconds), with a count.
LOG_EVERY = 60.0
#: A hard limit of "unlimited" is taken as this many.
NOFILE_CEILING = 1_048_576


def raise_open_files_limit() -> int:
    """Soft RLIMIT_NOFILE up to the hard limit; returns the soft limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = NOFILE_CEILING if hard == resource.RLIM_INFINITY else hard
    if soft != resource.RLIM_INFINITY and soft < want:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
            soft = want
        except (ValueError, OSError) as exc:
            logger.warning("cannot raise the open-files limit from %d to %d: %s", soft, want,
                           exc)
    return NOFILE_CEILING if soft == resource.RLIM_INFINITY else soft


class Admission:
    """Counts connections; refuses those over a cap."""

    def __init__(self, max_connections: int, per_address: int, *,
                 open_files: int | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        files = open_files if open_files is not None else raise_open_files_limit()
        self.limit = max(1, min(max_connections, files - RESERVED_FDS))
        self.per_address = max(1, min(per_address, self.limit))
        self.open = 0
        self._by_address: dict[str, int] = {}
        self._clock = clock
        self.refused = 0
        self._unlogged = 0
        self._logged_at = -LOG_EVERY

    def admit(self, address: str) -> bool:
        if self.open >= self.limit or self._by_address.get(address, 0) >= self.per_address:
            self._refuse(address)
            return False
        self.open += 1
        self._by_address[address] = self._by_address.get(address, 0) + 1
        return True

    def release(self, address: str) -> None:
        self.open -= 1
        left = self._by_address.get(address, 1) - 1
        if left > 0:
            self._by_address[address] = left
        else:
            self._by_address.pop(address, None)

    def _refuse(self, address: str) -> None:
        self.refused += 1
        self._unlogged += 1
        now = self._clock()
        if now - self._logged_at >= LOG_EVERY:
            why = (f"{self.open} open, the most there may be" if self.open >= self.limit else
                   f"{self._by_address.get(address, 0)} from one address, the most there may be")
            logger.warning("HTTP: refused %d connection(s) in the last %.0f s (%s; "
                           "[api] max_connections, max_connections_per_address)",
                           self._unlogged, min(now - self._logged_at, LOG_EVERY), why)
            self._logged_at, self._unlogged = now, 0

    def factory(self, server: web.Server) -> Callable[[], asyncio.Protocol]:
        return lambda: _Admitted(self, server)


class _Admitted(asyncio.Protocol):
    """aiohttp's protocol for one connection, made only once the connection is admitted."""

    def __init__(self, admission: Admission, server: web.Server) -> None:
        self._admission = admission
        self._server = server
        self._inner: asyncio.Protocol | None = None
        self._address = ""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        peer = transport.get_extra_info("peername")
        self._address = str(peer[0]) if isinstance(peer, tuple) and peer else "?"
        if not self._admission.admit(self._address):
            cast(asyncio.Transport, transport).abort()  # the descriptor goes now
            return
        inner: Any = self._server()
        self._inner = inner
        inner.connection_made(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._inner is not None:
            self._admission.release(self._address)
            self._inner.connection_lost(exc)
            self._inner = None

    def data_received(self, data: bytes) -> None:
        if self._inner is not None:
            self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self._inner.eof_received() if self._inner is not None else None

    def pause_writing(self) -> None:
        if self._inner is not None:
            self._inner.pause_writing()

    def resume_writing(self) -> None:
        if self._inner is not None:
            self._inner.resume_writing()


class AdmittingSite(web.TCPSite):
    """:class:`aiohttp.web.TCPSite` whose connections go through an :class:`Admission`."""

    def __init__(self, runner: web.BaseRunner, host: str, port: int,
                 admission: Admission) -> None:
        super().__init__(runner, host, port, backlog=BACKLOG)
        self.admission = admission

    async def start(self) -> None:
        self._runner._reg_site(self)
        server = self._runner.server
        assert server is not None
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(self.admission.factory(server), self._host,
                                                self._port, backlog=self._backlog)
        self._bound_port = self._server.sockets[0].getsockname()[1]


class OncePerInterval(logging.Filter):
    """Lets one record through per ``interval`` seconds for messages starting with
    ``prefix`` (asyncio logs every failed accept() with a traceback: at EMFILE, tens
    of thousands a second), with how many were held back."""

    def __init__(self, prefix: str, interval: float = LOG_EVERY,
                 clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self.prefix, self.interval, self._clock = prefix, interval, clock
        self._last = -interval
        self.held = 0

    def filter(self, record: logging.LogRecord) -> bool:
        if not str(record.msg).startswith(self.prefix):
            return True
        now = self._clock()
        if now - self._last < self.interval:
            self.held += 1
            return False
        record.msg = f"{record.msg} (and {self.held} more like it held back)"
        record.exc_info, record.exc_text = None, None
        self._last, self.held = now, 0
        return True
