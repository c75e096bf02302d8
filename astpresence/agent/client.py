"""The agent's session over HTTP: open it, report what the reader says (at once when
it changes, else as the heartbeat every ``interval`` seconds), reopen it when the
server forgot it (404: expired, or a restart), close it at the end.

A lost server is retried with the backoff the daemon uses for Asterisk (1, 2, 4,
8, 16, then 32 s, with jitter); every wait ends at once on ``stop``.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from astpresence.agent.readers import Reader, Reading
from astpresence.engine.timers import backoff_delay, stopped_within

logger = logging.getLogger(__name__)

#: Seconds between reports when nothing changes: a third of the server's default
#: expiry (60 s), so one lost report never ends the session.
DEFAULT_INTERVAL = 20.0
REQUEST_TIMEOUT = 10.0


class SessionGone(Exception):
    """The server does not know the session (404): open a new one."""


class Refused(Exception):
    """The server refused the agent (a bad token, 401/403): stop, retrying cannot help."""


@dataclass
class Counters:
    """What the agent did, for its log line at the end (and the tests)."""

    opened: int = 0
    reports: int = 0
    failures: int = 0
    states: list[str] = field(default_factory=list)


class Agent:
    def __init__(self, api: str, token: str, reader: Reader, *, client: str = "",
                 interval: float = DEFAULT_INTERVAL) -> None:
        self._api = api.rstrip("/")
        self._headers = {"Authorization": f"Bearer {token}",
                         "User-Agent": "astpresence-agent"}
        self._reader = reader
        self._client = client or f"astpresence agent on {socket.gethostname()}"[:80]
        self._interval = interval
        self.counters = Counters()

    async def run(self, stop: asyncio.Event) -> None:
        """Until ``stop`` or the end of the person's session; closes it on the way out."""
        timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT)
        attempt = 0
        async with aiohttp.ClientSession(headers=self._headers, timeout=timeout) as http:
            while not (stop.is_set() or self._reader.ending.is_set()):
                try:
                    sid = await self._open(http)
                    attempt = 0
                    await self._report_until_done(http, sid, stop)
                    await self._close(http, sid)
                    return
                except SessionGone:
                    logger.info("the server no longer knows the session: opening a new one")
                except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                    attempt += 1
                    self.counters.failures += 1
                    delay = backoff_delay(attempt)
                    logger.warning("presence server unreachable (%s); retrying in %.0f s",
                                   type(exc).__name__ if not str(exc) else exc, delay)
                    await stopped_within(stop, delay)

    async def _report_until_done(self, http: aiohttp.ClientSession, sid: str,
                                 stop: asyncio.Event) -> None:
        reader = self._reader
        while not (stop.is_set() or reader.ending.is_set()):
            reader.changed.clear()
            await self._report(http, sid, await reader.read())
            waiters = {asyncio.ensure_future(e.wait())
                       for e in (reader.changed, reader.ending, stop)}
            try:
                await asyncio.wait(waiters, timeout=self._interval,
                                   return_when=asyncio.FIRST_COMPLETED)
            finally:
                for waiter in waiters:
                    waiter.cancel()

    async def _call(self, http: aiohttp.ClientSession, method: str, path: str,
                    body: dict[str, Any] | None = None) -> dict[str, Any]:
        async with http.request(method, self._api + path, json=body) as resp:
            if resp.status == 404 and path.startswith("/v1/me/sessions/"):
                raise SessionGone()
            if resp.status in (401, 403):
                raise Refused(f"the server refused the token ({resp.status}): "
                              f"{(await resp.text())[:200]}")
            if resp.status >= 400:
                raise aiohttp.ClientResponseError(resp.request_info, (), status=resp.status,
                                                  message=(await resp.text())[:200])
            data: dict[str, Any] = await resp.json()
            return data

    async def _open(self, http: aiohttp.ClientSession) -> str:
        answer = await self._call(http, "POST", "/v1/me/sessions",
                                  {"client": self._client, "kind": "desktop"})
        self.counters.opened += 1
        sid = str(answer["session"]["id"])
        logger.info("session open at %s", self._api)
        return sid

    async def _report(self, http: aiohttp.ClientSession, sid: str, reading: Reading) -> None:
        await self._call(http, "PUT", f"/v1/me/sessions/{sid}",
                         {"state": reading.state, "idle_seconds": round(reading.idle_seconds)})
        self.counters.reports += 1
        if not self.counters.states or self.counters.states[-1] != reading.state:
            self.counters.states.append(reading.state)
            logger.info("reported %s", reading.state)

    async def _close(self, http: aiohttp.ClientSession, sid: str) -> None:
        try:
            await self._call(http, "DELETE", f"/v1/me/sessions/{sid}")
            logger.info("session closed")
        except SessionGone:
            pass
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            logger.warning("could not close the session (%s): it expires by itself", exc)
