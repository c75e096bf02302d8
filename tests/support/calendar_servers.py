"""Real servers the calendar tests talk to, each on a free loopback port.

- :class:`FeedServer`: an HTTP server for ICS feeds (ETag, 304, any status,
  a huge body streamed without holding it in memory, a dead port).
- :class:`Radicale`: the Radicale CalDAV server from PyPI as a subprocess,
  with htpasswd users, and helpers to create calendars and put events.
- :class:`GraphServer`: answers the documented Microsoft identity platform
  token request and Graph ``calendarView`` (paging, 401, 429 + Retry-After).
"""

from __future__ import annotations

import asyncio
import base64
import json
import socket
import sys
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from astpresence.asterisk.ari import basic_auth

HOST = "127.0.0.1"
CALENDARS = Path(__file__).resolve().parent / "calendars"


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


class _App:
    def __init__(self) -> None:
        self.app = web.Application()
        self.runner: web.AppRunner | None = None
        self.port = 0
        self.requests: list[web.Request] = []

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    async def start(self) -> None:
        self.runner = web.AppRunner(self.app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, HOST, 0)
        await site.start()
        self.port = int(self.runner.addresses[0][1])

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()


@dataclass
class Feed:
    body: bytes = b""
    status: int = 200
    etag: str = ""
    huge: int = 0  # stream this many bytes (no Content-Length), ignoring body


class FeedServer(_App):
    """``GET /<name>.ics`` serves :attr:`feeds` ``[name]``; conditional by ETag."""

    def __init__(self) -> None:
        super().__init__()
        self.feeds: dict[str, Feed] = {}
        self.app.router.add_get("/{name}", self._get)

    def put(self, name: str, body: bytes | str) -> None:
        data = body.encode() if isinstance(body, str) else body
        self.feeds[name] = Feed(data, etag=f'"{uuid.uuid4().hex}"')

    async def _get(self, request: web.Request) -> web.StreamResponse:
        self.requests.append(request)
        feed = self.feeds.get(request.match_info["name"])
        if feed is None:
            return web.Response(status=404, text="not found")
        if feed.status != 200:
            return web.Response(status=feed.status, text="no")
        if feed.huge:
            resp = web.StreamResponse()
            resp.content_type = "text/calendar"
            await resp.prepare(request)
            chunk = b"BEGIN:VCALENDAR\r\n" + b"X" * 65_000 + b"\r\n"
            sent = 0
            try:
                while sent < feed.huge:
                    await resp.write(chunk)
                    sent += len(chunk)
            except (ConnectionError, RuntimeError):
                pass  # the client stopped reading at its limit
            return resp
        if feed.etag and request.headers.get("If-None-Match") == feed.etag:
            return web.Response(status=304, headers={"ETag": feed.etag})
        return web.Response(body=feed.body, content_type="text/calendar",
                            headers={"ETag": feed.etag} if feed.etag else {})


class Radicale:
    """Radicale (CalDAV, from PyPI) in a subprocess; users from an htpasswd file."""

    def __init__(self, root: Path, users: dict[str, str]) -> None:
        self.root = root
        self.users = users
        self.port = 0
        self.proc: asyncio.subprocess.Process | None = None

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    async def start(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        htpasswd = self.root / "users"
        htpasswd.write_text("".join(f"{u}:{p}\n" for u, p in self.users.items()))
        self.port = free_port()
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "radicale", "--server-hosts", f"{HOST}:{self.port}",
            "--storage-filesystem-folder", str(self.root / "collections"),
            "--auth-type", "htpasswd", "--auth-htpasswd-filename", str(htpasswd),
            "--auth-htpasswd-encryption", "plain", "--rights-type", "owner_only",
            "--logging-level", "warning",
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE)
        for _ in range(200):  # ready when it answers
            try:
                async with aiohttp.ClientSession() as http, http.get(self.url + "/") as resp:
                    if resp.status < 500:
                        return
            except aiohttp.ClientError:
                await asyncio.sleep(0.05)
        raise RuntimeError("Radicale did not start")

    async def stop(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.terminate()
            try:
                await asyncio.wait_for(self.proc.wait(), 5)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()

    async def mkcalendar(self, user: str, name: str) -> str:
        url = f"{self.url}/{user}/{name}/"
        body = ('<?xml version="1.0" encoding="utf-8"?><C:mkcalendar xmlns:D="DAV:" '
                'xmlns:C="urn:ietf:params:xml:ns:caldav"><D:set><D:prop>'
                f'<D:displayname>{name}</D:displayname></D:prop></D:set></C:mkcalendar>')
        await self._call("MKCALENDAR", url, user, body.encode(), (201,))
        return url

    async def put_event(self, calendar_url: str, user: str, ics: str, uid: str) -> None:
        await self._call("PUT", f"{calendar_url}{uid}.ics", user, ics.encode(), (201, 204),
                         {"Content-Type": "text/calendar; charset=utf-8"})

    async def _call(self, method: str, url: str, user: str, body: bytes,
                    ok: tuple[int, ...], headers: dict[str, str] | None = None) -> None:
        auth = {"Authorization": basic_auth(user, self.users[user])}
        async with aiohttp.ClientSession() as http, http.request(
                method, url, data=body, headers={**auth, **(headers or {})}) as resp:
            text = await resp.text()
            assert resp.status in ok, f"{method} {url}: {resp.status} {text[:300]}"


@dataclass
class GraphMailbox:
    events: list[dict[str, Any]] = field(default_factory=list)


class GraphServer(_App):
    """The two Microsoft 365 requests astpresence makes, as documented:
    ``POST /{tenant}/oauth2/v2.0/token`` (client credentials) and
    ``GET /v1.0/users/{mailbox}/calendarView`` (paged with @odata.nextLink)."""

    def __init__(self, tenant: str, client_id: str, secret: str) -> None:
        super().__init__()
        self.tenant, self.client_id, self.secret = tenant, client_id, secret
        self.mailboxes: dict[str, GraphMailbox] = {}
        self.page_size = 2
        self.throttle = 0  # answer this many calendarView requests with 429 first
        self.raw_view: bytes | None = None  # a hostile answer: this body, as is
        self.padding = 0  # bytes of filler in each page (a huge answer)
        self.tokens: set[str] = set()
        self.token_requests = 0
        #: The application permissions granted (the token's ``roles`` claim).
        self.roles = ["Calendars.Read", "Presence.ReadWrite.All", "User.Read.All"]
        self.app.router.add_post("/{tenant}/oauth2/v2.0/token", self._token)
        self.app.router.add_get("/v1.0/users/{mailbox}/calendarView", self._view)

    @property
    def graph(self) -> str:
        return f"{self.url}/v1.0"

    async def _token(self, request: web.Request) -> web.Response:
        self.token_requests += 1
        form = await request.post()
        if request.match_info["tenant"] != self.tenant:
            return web.json_response({"error": "invalid_tenant"}, status=400)
        if (form.get("grant_type") != "client_credentials" or form.get("client_id") !=
                self.client_id or form.get("client_secret") != self.secret
                or form.get("scope") != "https://graph.microsoft.com/.default"):
            return web.json_response({"error": "invalid_client"}, status=401)
        token = jwt_shaped({"aud": "https://graph.microsoft.com", "tid": self.tenant,
                            "appid": self.client_id, "roles": self.roles})
        self.tokens.add(token)
        return web.json_response({"token_type": "Bearer", "expires_in": 3599,
                                  "access_token": token})

    async def _view(self, request: web.Request) -> web.Response:
        self.requests.append(request)
        auth = request.headers.get("Authorization", "")
        if not auth.startswith("Bearer ") or auth[7:] not in self.tokens:
            return web.json_response({"error": {"code": "InvalidAuthenticationToken"}},
                                     status=401)
        if self.throttle > 0:
            self.throttle -= 1
            return web.json_response({"error": {"code": "TooManyRequests"}}, status=429,
                                     headers={"Retry-After": "0"})
        if self.raw_view is not None:
            return web.Response(body=self.raw_view, content_type="application/json")
        box = self.mailboxes.get(request.match_info["mailbox"])
        if box is None:
            return web.json_response({"error": {"code": "ErrorItemNotFound"}}, status=404)
        assert "startDateTime" in request.query and "endDateTime" in request.query
        skip = int(request.query.get("$skip", "0"))
        page = box.events[skip:skip + self.page_size]
        body: dict[str, Any] = {"value": page}
        if self.padding:
            body["filler"] = "x" * self.padding
        if skip + self.page_size < len(box.events):
            query = dict(request.query)
            query["$skip"] = str(skip + self.page_size)
            body["@odata.nextLink"] = str(request.url.with_query(query))
        return web.json_response(body)


def jwt_shaped(claims: dict[str, Any]) -> str:
    """An access token shaped as Entra ID issues them (header.claims.signature,
    base64url); the signature is random: only the fake Graph checks it, by value."""
    def part(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).decode().rstrip("=")
    return ".".join([part(json.dumps({"typ": "JWT", "alg": "RS256"}).encode()),
                     part(json.dumps(claims).encode()), part(uuid.uuid4().bytes)])


def ics_event(uid: str, start: datetime, end: datetime, summary: str = "Meeting",
              extra: str = "") -> str:
    fmt = "%Y%m%dT%H%M%SZ"
    return ("BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//test//EN\r\nBEGIN:VEVENT\r\n"
            f"UID:{uid}\r\nDTSTAMP:20261101T000000Z\r\nDTSTART:{start:{fmt}}\r\n"
            f"DTEND:{end:{fmt}}\r\nSUMMARY:{summary}\r\n{extra}END:VEVENT\r\nEND:VCALENDAR\r\n")


def graph_event(subject: str, start: datetime, hours: float, show: str = "busy",
                **more: object) -> dict[str, object]:
    fmt = "%Y-%m-%dT%H:%M:%S.0000000"
    return {"subject": subject, "showAs": show, "isAllDay": False, "isCancelled": False,
            "responseStatus": {"response": "organizer"},
            "start": {"dateTime": f"{start:{fmt}}", "timeZone": "UTC"},
            "end": {"dateTime": f"{start + timedelta(hours=hours):{fmt}}", "timeZone": "UTC"},
            **more}
