"""A fake Microsoft Graph for Teams presence: a real aiohttp server on loopback that
does what Graph's documentation says (the calendar tests' token endpoint, plus):

- ``GET /users/{upn}`` -> the object id;
- ``POST /communications/getPresencesByUserId`` (650 ids at most);
- presence sessions: ``setPresence`` (the documented availability/activity
  pairs, ``expirationDuration`` PT5M..PT4H, gone when it runs out) and
  ``clearPresence``;
- the preferred presence: ``setUserPreferredPresence`` (the six pairs; default
  expiry one day for DoNotDisturb/Busy, seven days otherwise) and
  ``clearUserPreferredPresence``; ``setStatusMessage``;
- the aggregate: the preferred presence when one is set and any session
  exists; else the busiest session (DoNotDisturb > Busy > Available > Away);
  else Offline;
- subscriptions on ``/communications/presences?$filter=id in (...)``: the
  validation handshake (the notification URL must echo ``validationToken``
  within 10 s), at most 60 minutes, renewal by PATCH, a notification to the
  URL on each change of a watched aggregate, lifecycle events;
- throttling: ``throttle`` answers 429 with Retry-After; 401 for an unknown
  token.

The Teams client of each person is a session too (``client``): tests change it
as a person would in Teams. ``clock`` may be replaced (fake time).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
from aiohttp import web

from tests.support.calendar_servers import GraphServer

SESSION_PAIRS = {("Available", "Available"), ("Busy", "InACall"), ("Busy", "InAConferenceCall"),
                 ("Away", "Away"), ("DoNotDisturb", "Presenting")}
PREFERRED_PAIRS = {("Available", "Available"), ("Busy", "Busy"),
                   ("DoNotDisturb", "DoNotDisturb"), ("BeRightBack", "BeRightBack"),
                   ("Away", "Away"), ("Offline", "OffWork")}
ORDER = ["DoNotDisturb", "Busy", "Available", "BeRightBack", "Away", "Offline"]
CLIENT = "teams-client"
_DURATION = re.compile(r"PT(?:(\d+)H)?(?:(\d+)M)?(?:(\d+)S)?")
_FILTER = re.compile(r"/communications/presences\?\$filter=id in \((.*)\)")


def parse_duration(text: object) -> timedelta | None:
    m = _DURATION.fullmatch(text) if isinstance(text, str) else None
    if m is None or not any(m.groups()):
        return None
    h, mi, s = (int(g or 0) for g in m.groups())
    return timedelta(hours=h, minutes=mi, seconds=s)


@dataclass
class TeamsUser:
    oid: str
    upn: str
    #: The person's Teams client, as a session (None: not signed in).
    client: tuple[str, str] | None = ("Available", "Available")
    sessions: dict[str, tuple[str, str, datetime]] = field(default_factory=dict)
    preferred: tuple[str, str, datetime] | None = None
    message: str = ""


@dataclass
class Sub:
    id: str
    ids: set[str]
    url: str
    lifecycle_url: str
    client_state: str
    expires: datetime


class TeamsGraphServer(GraphServer):
    def __init__(self, tenant: str, client_id: str, secret: str) -> None:
        super().__init__(tenant, client_id, secret)
        self.clock: Callable[[], datetime] = lambda: datetime.now(UTC)
        self.people: dict[str, TeamsUser] = {}
        self.subs: dict[str, Sub] = {}
        self.throttle_kinds: dict[str, int] = {}  # path tail -> 429s still to give
        self.forbidden_kinds: set[str] = set()  # path tails the app lacks permission for
        self.writes: list[tuple[datetime, str, str, dict[str, Any]]] = []
        self.calls: list[tuple[float, str]] = []  # (monotonic time, path tail)
        self.notified: list[dict[str, Any]] = []
        self.failed_deliveries = 0
        self.deliver = True  # False: notifications stop arriving
        self._shown: dict[str, tuple[str, str]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._http: aiohttp.ClientSession | None = None
        r = self.app.router
        r.add_get("/v1.0/users/{upn}", self._user)
        r.add_post("/v1.0/communications/getPresencesByUserId", self._read)
        r.add_post("/v1.0/users/{oid}/presence/{action}", self._action)
        r.add_post("/v1.0/subscriptions", self._subscribe)
        r.add_patch("/v1.0/subscriptions/{id}", self._renew)
        r.add_delete("/v1.0/subscriptions/{id}", self._unsubscribe)

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        if self._http is not None:
            await self._http.close()
        await super().stop()

    # -- the tenant ---------------------------------------------------------------

    def add(self, upn: str, oid: str | None = None) -> TeamsUser:
        person = TeamsUser(oid or str(uuid.uuid4()), upn)
        self.people[person.oid] = person
        self._shown[person.oid] = self.aggregate(person)
        return person

    def aggregate(self, person: TeamsUser) -> tuple[str, str]:
        now = self.clock()
        person.sessions = {k: v for k, v in person.sessions.items() if v[2] > now}
        if person.preferred is not None and person.preferred[2] <= now:
            person.preferred = None
        shown = [(a, b) for a, b, _ in person.sessions.values()]
        if person.client is not None:
            shown.append(person.client)
        if not shown:
            return "Offline", "Offline"
        if person.preferred is not None:
            return person.preferred[0], person.preferred[1]
        return min(shown, key=lambda p: ORDER.index(p[0]) if p[0] in ORDER else len(ORDER))

    def shown(self, oid: str) -> tuple[str, str]:
        return self.aggregate(self.people[oid])

    def set_client(self, oid: str, availability: str, activity: str) -> None:
        """The person changes something in their Teams client (or a meeting starts)."""
        self.people[oid].client = (availability, activity)
        self.changed(oid)

    def choose(self, oid: str, pair: tuple[str, str] | None) -> None:
        """The person picks a status in Teams (their preferred presence), or resets it."""
        person = self.people[oid]
        person.preferred = None if pair is None else (*pair, self.clock() + timedelta(days=1))
        self.changed(oid)

    def changed(self, oid: str) -> None:
        """Notify watchers when the aggregate moved (also after time passed)."""
        now_shown = self.aggregate(self.people[oid])
        if self._shown.get(oid) == now_shown:
            return
        self._shown[oid] = now_shown
        for sub in self.subs.values():
            if oid in sub.ids and sub.expires > self.clock():
                self._send(sub, sub.url, {
                    "subscriptionId": sub.id, "clientState": sub.client_state,
                    "changeType": "updated", "tenantId": self.tenant,
                    "resource": f"communications/presences('{oid}')",
                    "subscriptionExpirationDateTime": sub.expires.isoformat(),
                    "resourceData": {"@odata.type": "#Microsoft.Graph.presence",
                                     "@odata.id": f"communications/presences('{oid}')",
                                     "id": oid}})

    def lifecycle(self, sid: str, event: str) -> None:
        sub = self.subs[sid]
        if event == "subscriptionRemoved":
            del self.subs[sid]
        self._send(sub, sub.lifecycle_url, {
            "subscriptionId": sub.id, "clientState": sub.client_state,
            "lifecycleEvent": event, "tenantId": self.tenant,
            "subscriptionExpirationDateTime": sub.expires.isoformat()})

    def _send(self, sub: Sub, url: str, item: dict[str, Any]) -> None:
        if not self.deliver:
            return
        task = asyncio.get_running_loop().create_task(self._post(url, {"value": [item]}))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _post(self, url: str, body: dict[str, Any]) -> None:
        if self._http is None:
            self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))
        try:
            async with self._http.post(url, json=body) as resp:
                if resp.status != 202:
                    self.failed_deliveries += 1
                self.notified.append(body)
        except aiohttp.ClientError:
            self.failed_deliveries += 1

    # -- requests ------------------------------------------------------------------

    def _check(self, request: web.Request, kind: str) -> web.Response | None:
        self.calls.append((asyncio.get_running_loop().time(), kind))
        auth = request.headers.get("Authorization", "")
        if not auth.startswith("Bearer ") or auth[7:] not in self.tokens:
            return web.json_response({"error": {"code": "InvalidAuthenticationToken"}},
                                     status=401)
        if kind in self.forbidden_kinds:
            return web.json_response({"error": {"code": "Forbidden",
                                                "message": "Insufficient privileges"}},
                                     status=403)
        if self.throttle_kinds.get(kind, 0) > 0:
            self.throttle_kinds[kind] -= 1
            return web.json_response({"error": {"code": "TooManyRequests"}}, status=429,
                                     headers={"Retry-After": "1"})
        return None

    async def _user(self, request: web.Request) -> web.Response:
        refused = self._check(request, "users")
        if refused:
            return refused
        upn = request.match_info["upn"].lower()
        person = next((p for p in self.people.values() if p.upn.lower() == upn), None)
        if person is None:
            return web.json_response({"error": {"code": "Request_ResourceNotFound"}}, status=404)
        return web.json_response({"id": person.oid})

    async def _read(self, request: web.Request) -> web.Response:
        refused = self._check(request, "getPresencesByUserId")
        if refused:
            return refused
        ids = (await request.json()).get("ids")
        if not isinstance(ids, list) or len(ids) > 650:
            return web.json_response({"error": {"code": "BadRequest"}}, status=400)
        value = []
        for oid in ids:
            person = self.people.get(oid)
            if person is None:
                continue
            availability, activity = self.aggregate(person)
            value.append({"id": oid, "availability": availability, "activity": activity,
                          "statusMessage": ({"message": {"content": person.message,
                                                         "contentType": "text"}}
                                            if person.message else None)})
        return web.json_response({"value": value})

    async def _action(self, request: web.Request) -> web.Response:
        action = request.match_info["action"]
        refused = self._check(request, action)
        if refused:
            return refused
        person = self.people.get(request.match_info["oid"])
        if person is None:
            return web.json_response({"error": {"code": "NotFound"}}, status=404)
        body = await request.json()
        self.writes.append((self.clock(), person.oid, action, body))
        error = self._apply(person, action, body)
        if error:
            return web.json_response({"error": {"code": "BadRequest", "message": error}},
                                     status=400)
        self.changed(person.oid)
        return web.Response(status=200)

    def _apply(self, person: TeamsUser, action: str, body: dict[str, Any]) -> str:
        now = self.clock()
        pair = (body.get("availability"), body.get("activity"))
        if action == "setPresence":
            span = parse_duration(body.get("expirationDuration", "PT5M"))
            if pair not in SESSION_PAIRS or not body.get("sessionId"):
                return "not a supported availability/activity pair, or no sessionId"
            if span is None or not timedelta(minutes=5) <= span <= timedelta(hours=4):
                return "expirationDuration is PT5M to PT4H"
            person.sessions[str(body["sessionId"])] = (*pair, now + span)  # type: ignore[assignment]
        elif action == "clearPresence":
            person.sessions.pop(str(body.get("sessionId")), None)
        elif action == "setUserPreferredPresence":
            if pair not in PREFERRED_PAIRS:
                return "not a supported preferred availability/activity pair"
            default = timedelta(days=1 if pair[0] in ("DoNotDisturb", "Busy") else 7)
            span = parse_duration(body["expirationDuration"]) if "expirationDuration" in body \
                else default
            if span is None:
                return "expirationDuration is an ISO 8601 duration"
            person.preferred = (str(pair[0]), str(pair[1]), now + span)
        elif action == "clearUserPreferredPresence":
            person.preferred = None
        elif action == "setStatusMessage":
            person.message = str(body["statusMessage"]["message"]["content"])
        else:
            return f"unknown action {action}"
        return ""

    async def _subscribe(self, request: web.Request) -> web.Response:
        refused = self._check(request, "subscriptions")
        if refused:
            return refused
        body = await request.json()
        m = _FILTER.fullmatch(str(body.get("resource")))
        expires = datetime.fromisoformat(str(body.get("expirationDateTime")).replace("Z", "+00:00"))
        if m is None or body.get("changeType") != "updated":
            return web.json_response({"error": {"code": "BadRequest"}}, status=400)
        ids = {i.strip().strip("'") for i in m.group(1).split(",")}
        if len(ids) > 650 or expires > self.clock() + timedelta(minutes=60):
            return web.json_response({"error": {"code": "BadRequest"}}, status=400)
        url = str(body["notificationUrl"])
        token = uuid.uuid4().hex
        if self._http is None:
            self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))
        try:
            async with self._http.post(url, params={"validationToken": token}) as resp:
                if resp.status != 200 or await resp.text() != token:
                    raise ValueError
        except (aiohttp.ClientError, ValueError, TimeoutError):
            return web.json_response({"error": {"code": "ValidationError", "message":
                                                "Subscription validation request failed"}},
                                     status=400)
        sub = Sub(str(uuid.uuid4()), ids, url, str(body.get("lifecycleNotificationUrl") or url),
                  str(body.get("clientState", "")), expires)
        self.subs[sub.id] = sub
        return web.json_response({"id": sub.id, "expirationDateTime": expires.isoformat(),
                                  "resource": body["resource"]}, status=201)

    async def _renew(self, request: web.Request) -> web.Response:
        refused = self._check(request, "renew")
        if refused:
            return refused
        sub = self.subs.get(request.match_info["id"])
        if sub is None or sub.expires <= self.clock():
            self.subs.pop(request.match_info["id"], None)
            return web.json_response({"error": {"code": "ResourceNotFound"}}, status=404)
        body = await request.json()
        expires = datetime.fromisoformat(str(body["expirationDateTime"]).replace("Z", "+00:00"))
        if expires > self.clock() + timedelta(minutes=60):
            return web.json_response({"error": {"code": "BadRequest"}}, status=400)
        sub.expires = expires
        return web.json_response({"id": sub.id, "expirationDateTime": expires.isoformat()})

    async def _unsubscribe(self, request: web.Request) -> web.Response:
        refused = self._check(request, "unsubscribe")
        if refused:
            return refused
        self.subs.pop(request.match_info["id"], None)
        return web.Response(status=204)


@contextlib.asynccontextmanager
async def running_graph(people: dict[str, str | None], *, tenant: str = "contoso",
                        client_id: str = "app", secret: str = "pw",
                        env: str = "TEAMS_SECRET") -> AsyncIterator[TeamsGraphServer]:
    """A fake Graph on loopback with ``people`` (UPN -> object id, None: a new one), its
    app secret in the environment variable ``env`` for the daemon to read."""
    before = os.environ.get(env)
    os.environ[env] = secret
    server = TeamsGraphServer(tenant, client_id, secret)
    await server.start()
    try:
        for upn, oid in people.items():
            server.add(upn, oid)
        yield server
    finally:
        await server.stop()
        if before is None:
            os.environ.pop(env, None)
        else:
            os.environ[env] = before
