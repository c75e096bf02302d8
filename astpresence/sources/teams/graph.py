"""The Graph requests of the Teams source, with one token, one request budget and
Graph's throttling honoured (no presence logic here: source.py and outbound.py).

Every request waits for its budget (``[teams] max_requests`` a second, one for
reads and subscriptions, one for writes; Graph allows 1,500 requests per 30 s
per app and tenant to each presence API), and a 429/503 pauses every request
of that budget for its Retry-After, not just the one that got it. A
401 gets a new token once. A 403 names the permission the app lacks.
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any
from urllib.parse import quote

import aiohttp

from astpresence.sources.msgraph import (
    RemoteError,
    Unauthorized,
    json_object,
    m365_token,
    read_limited,
    retry_after,
    token_roles,
)
from astpresence.sources.teams.settings import TeamsSettings, is_object_id

#: Ids in one getPresencesByUserId request and in one subscription (Graph's limit).
BATCH = 650
#: One answer, at most.
MAX_ANSWER = 4 * 1024 * 1024
#: Tries of one request (throttled, or a token refused once).
TRIES = 4
REQUEST_TIMEOUT = 20.0

#: What each kind of request needs (for a 403's message).
PERMISSION = {"read": "Presence.Read.All", "subscribe": "Presence.Read.All",
              "renew": "Presence.Read.All", "resolve": "User.Read.All"}
WRITE_PERMISSION = "Presence.ReadWrite.All"
#: The kinds of request that write (their own budget).
WRITES = frozenset({"set_presence", "clear_presence", "preferred", "clear_preferred",
                    "status_message"})


class Forbidden(RemoteError):
    """The app lacks a permission (HTTP 403); the message names it."""

    def __init__(self, permission: str) -> None:
        super().__init__(f"Graph refused: the app needs the application permission "
                         f"{permission}, with admin consent")
        self.permission = permission


class Missing(RemoteError):
    """No such user or subscription (HTTP 404)."""


def required(settings: TeamsSettings) -> set[str]:
    """The application permissions ``settings`` needs."""
    need = {WRITE_PERMISSION} if settings.writes else set()
    if settings.reads and not settings.writes:
        need.add("Presence.Read.All")
    if any(not is_object_id(ref) for ref in settings.users.values()):
        need.add("User.Read.All")
    return need


def missing(settings: TeamsSettings, stats: GraphStats) -> list[str]:
    """What the token lacks of :func:`required` (when it says), and what Graph refused."""
    granted = stats.roles
    lacking = set(stats.missing)
    if granted is not None:
        lacking |= {p for p in required(settings) if p not in granted
                    and not (p == "Presence.Read.All" and WRITE_PERMISSION in granted)}
    return sorted(lacking)


class Budget:
    """At most ``rate`` requests a second (a token bucket of one second's worth), and
    a pause for everyone while Graph asked to wait."""

    def __init__(self, rate: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self._clock = clock
        self._tokens = max(rate, 1.0)
        self._at = clock()
        self._paused_until = 0.0
        self._lock = asyncio.Lock()

    def pause(self, seconds: float) -> None:
        self._paused_until = max(self._paused_until, self._clock() + seconds)

    async def take(self) -> None:
        async with self._lock:  # first come, first served
            while True:
                now = self._clock()
                if now < self._paused_until:
                    await asyncio.sleep(self._paused_until - now)
                    continue
                self._tokens = min(max(self.rate, 1.0),
                                   self._tokens + (now - self._at) * self.rate)
                self._at = now
                if self._tokens >= 1.0:
                    self._tokens -= 1.0
                    return
                await asyncio.sleep((1.0 - self._tokens) / self.rate)


class GraphStats:
    """Counts for status and metrics (nothing secret: kinds, codes, times)."""

    def __init__(self) -> None:
        self.requests: collections.Counter[str] = collections.Counter()
        self.failures: collections.Counter[str] = collections.Counter()
        self.throttled = 0
        self.tokens = 0
        self.token_ok: bool | None = None  # None: never asked
        self.last_error = ""
        self.missing: set[str] = set()  # permissions Graph said the app lacks
        self.roles: frozenset[str] | None = None  # what the token says is granted
        #: Request times of the last minute (for "requests per minute").
        self.recent: collections.deque[float] = collections.deque(maxlen=100_000)

    def per_minute(self, now: float) -> int:
        while self.recent and self.recent[0] < now - 60.0:
            self.recent.popleft()
        return len(self.recent)


class TeamsGraph:
    """Graph for one tenant, as the app (client credentials)."""

    def __init__(self, settings: TeamsSettings, *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.settings = settings
        self.base = settings.graph.rstrip("/")
        #: Graph limits each presence API on its own (1,500 per 30 s per app and tenant):
        #: reads and subscriptions never wait behind a queue of writes, nor the reverse.
        self.budgets = {"read": Budget(settings.max_requests, clock),
                        "write": Budget(settings.max_requests, clock)}
        self.stats = GraphStats()
        self._clock = clock
        self._session: aiohttp.ClientSession | None = None
        self._token = ""
        self._token_until = 0.0
        self._token_lock = asyncio.Lock()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT),
                connector=aiohttp.TCPConnector(limit=32))
        return self._session

    async def bearer(self) -> str:
        """A token (cached until shortly before it runs out)."""
        async with self._token_lock:
            if self._token and self._clock() < self._token_until:
                return self._token
            s = self.settings
            try:
                secret = s.secret.read()
                token, lifetime = await m365_token(self._http(), s.authority, s.tenant,
                                                   s.client_id, secret)
            except (RemoteError, ValueError) as exc:
                self.stats.token_ok = False
                raise RemoteError(f"no token: {exc}") from None
            self.stats.tokens += 1
            self.stats.token_ok = True
            self.stats.roles = token_roles(token)
            # a new one five minutes (or a tenth of its life) before it runs out
            self._token = token
            self._token_until = self._clock() + max(lifetime - min(300.0, lifetime / 10), 1.0)
            return token

    async def call(self, kind: str, method: str, path: str,
                   body: dict[str, Any] | None = None) -> dict[str, Any]:
        """One request; the answer's JSON object ({} for an empty answer)."""
        try:
            answer = await self._call(kind, method, path, body)
        except RemoteError as exc:
            self.stats.failures[kind] += 1
            self.stats.last_error = f"{kind}: {exc}"
            if isinstance(exc, Forbidden):
                self.stats.missing.add(exc.permission)
            raise
        self.stats.missing.discard(PERMISSION.get(kind, WRITE_PERMISSION))
        return answer

    async def _call(self, kind: str, method: str, path: str,
                    body: dict[str, Any] | None) -> dict[str, Any]:
        budget = self.budgets["write" if kind in WRITES else "read"]
        for attempt in range(TRIES):
            await budget.take()
            token = await self.bearer()
            self.stats.requests[kind] += 1
            self.stats.recent.append(self._clock())
            try:
                return await self._once(kind, method, path, body, token)
            except Unauthorized:
                if attempt:
                    raise
                self._token = ""  # expired or revoked early: one new token, once
            except _Throttled as exc:
                self.stats.throttled += 1
                budget.pause(retry_after(exc.after, attempt))
        raise RemoteError("Microsoft Graph keeps throttling (HTTP 429)")

    async def _once(self, kind: str, method: str, path: str, body: dict[str, Any] | None,
                    token: str) -> dict[str, Any]:
        headers = {"Authorization": f"Bearer {token}"}
        try:
            async with self._http().request(method, self.base + path, json=body,
                                            headers=headers) as resp:
                if resp.status in (429, 503):
                    raise _Throttled(resp.headers.get("Retry-After"))
                if resp.status == 401:
                    raise Unauthorized("Graph refused the token (HTTP 401)")
                if resp.status == 403:
                    raise Forbidden(PERMISSION.get(kind, WRITE_PERMISSION))
                if resp.status == 404:
                    raise Missing(f"{kind}: not found (HTTP 404)")
                if not 200 <= resp.status < 300:
                    raise RemoteError(f"{kind}: Graph answered HTTP {resp.status}")
                raw = await read_limited(resp, MAX_ANSWER)
        except aiohttp.ClientError as exc:
            raise RemoteError(f"Graph unreachable: {type(exc).__name__}") from None
        except TimeoutError:
            raise RemoteError("Graph unreachable: timed out") from None
        if not raw.strip():
            return {}
        return json_object(raw) if len(raw) < 65536 else await asyncio.to_thread(json_object, raw)

    # -- the requests -----------------------------------------------------------

    async def resolve(self, upn: str) -> str:
        """A UPN's object id (``GET /users/{upn}``)."""
        answer = await self.call("resolve", "GET", f"/users/{quote(upn, safe='@')}?$select=id")
        oid = answer.get("id")
        if not isinstance(oid, str) or not 0 < len(oid) <= 64:
            raise RemoteError("resolve: Graph answered without an id")
        return oid

    async def presences(self, ids: list[str]) -> list[Any]:
        """Presence of up to :data:`BATCH` users (``getPresencesByUserId``)."""
        answer = await self.call("read", "POST", "/communications/getPresencesByUserId",
                                 {"ids": ids[:BATCH]})
        value = answer.get("value")
        if not isinstance(value, list):
            raise RemoteError("read: Graph answered without a 'value' list")
        return value[:BATCH]

    async def set_presence(self, oid: str, session: str, pair: tuple[str, str],
                           seconds: float) -> None:
        await self.call("set_presence", "POST", f"/users/{oid}/presence/setPresence",
                        {"sessionId": session, "availability": pair[0], "activity": pair[1],
                         "expirationDuration": duration(seconds)})

    async def clear_presence(self, oid: str, session: str) -> None:
        await self.call("clear_presence", "POST", f"/users/{oid}/presence/clearPresence",
                        {"sessionId": session})

    async def set_preferred(self, oid: str, pair: tuple[str, str],
                            seconds: float | None) -> None:
        body = {"availability": pair[0], "activity": pair[1]}
        if seconds is not None:
            body["expirationDuration"] = duration(seconds)
        await self.call("preferred", "POST", f"/users/{oid}/presence/setUserPreferredPresence",
                        body)

    async def clear_preferred(self, oid: str) -> None:
        await self.call("clear_preferred", "POST",
                        f"/users/{oid}/presence/clearUserPreferredPresence", {})

    async def set_status_message(self, oid: str, text: str, until: datetime | None) -> None:
        status: dict[str, Any] = {"message": {"content": text, "contentType": "text"}}
        if until is not None:
            status["expiryDateTime"] = {"dateTime": until.strftime("%Y-%m-%dT%H:%M:%S"),
                                        "timeZone": "UTC"}
        await self.call("status_message", "POST", f"/users/{oid}/presence/setStatusMessage",
                        {"statusMessage": status})

    async def subscribe(self, ids: list[str], url: str, client_state: str,
                        expires: datetime) -> dict[str, Any]:
        quoted = ",".join(f"'{i}'" for i in ids[:BATCH])
        return await self.call("subscribe", "POST", "/subscriptions", {
            "changeType": "updated", "notificationUrl": url, "lifecycleNotificationUrl": url,
            "resource": f"/communications/presences?$filter=id in ({quoted})",
            "expirationDateTime": iso(expires), "clientState": client_state,
            "includeResourceData": False})

    async def renew(self, sid: str, expires: datetime) -> dict[str, Any]:
        return await self.call("renew", "PATCH", f"/subscriptions/{quote(sid, safe='')}",
                               {"expirationDateTime": iso(expires)})

    async def unsubscribe(self, sid: str) -> None:
        await self.call("unsubscribe", "DELETE", f"/subscriptions/{quote(sid, safe='')}")


class _Throttled(Exception):
    def __init__(self, after: str | None) -> None:
        self.after = after


def duration(seconds: float) -> str:
    """ISO 8601 duration Graph takes (``PT600S``)."""
    return f"PT{max(int(seconds), 1)}S"


def iso(when: datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
