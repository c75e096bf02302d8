"""Reading calendars over HTTP: ICS feeds, CalDAV collections, Microsoft Graph.

Each function returns plain data or raises :class:`FeedError` with a message
for the person who configured the feed (never the URL's secret parts, never
a credential). Bodies are read with a size limit; nothing here decides
presence (ics.py, graph.py, entries.py do).
"""

from __future__ import annotations

import asyncio
import base64
import os
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit
from xml.etree.ElementTree import Element

import aiohttp
from defusedxml import ElementTree as SafeXML

from astpresence.sources.msgraph import (
    RemoteError as FeedError,
    Unauthorized,
    json_object as _json,
    m365_token,
    read_limited,
    retry_after as _retry_after,
)

__all__ = ["FeedError", "Unauthorized", "m365_token", "read_limited"]

#: One fetch of a feed (all its requests, and parsing it) takes at most this long.
FETCH_TIMEOUT = 60.0
#: A feed's body, at most (config ``max_bytes``).
DEFAULT_MAX_BYTES = 10 * 1024 * 1024
#: Graph pages followed for one refresh, at most.
MAX_PAGES = 50
#: Throttled (429/503) requests retried, at most.
MAX_RETRIES = 3

DAV = "{DAV:}"
CALDAV = "{urn:ietf:params:xml:ns:caldav}"
CS = "{http://calendarserver.org/ns/}"


@dataclass(frozen=True)
class Fetched:
    """A body (None: not modified since the validators sent) and its validators."""

    body: bytes | None
    etag: str = ""
    last_modified: str = ""


def basic_auth(username: str, password: str) -> str:
    """An ``Authorization`` value for HTTP basic authentication (UTF-8, RFC 7617)."""
    return "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode("ascii")


def safe_url(url: str) -> str:
    """What may be shown of a feed's URL: scheme, host and port. Paths and queries
    often hold the secret (Google's "secret address", Outlook's published links)."""
    parts = urlsplit(url)
    if parts.scheme in ("http", "https") and parts.hostname:
        port = f":{parts.port}" if parts.port else ""
        return f"{parts.scheme}://{parts.hostname}{port}/..."
    return "file"


def _status_error(status: int) -> FeedError:
    if status in (401, 403):
        return FeedError(f"wrong credentials or no access (HTTP {status})")
    if status == 404:
        return FeedError("no such calendar (HTTP 404)")
    return FeedError(f"server answered HTTP {status}")


async def fetch_ics(session: aiohttp.ClientSession, url: str, *, etag: str = "",
                    last_modified: str = "", auth: str = "",
                    max_bytes: int = DEFAULT_MAX_BYTES) -> Fetched:
    """An ICS feed by URL (conditional GET) or a local file."""
    if not url.startswith(("http://", "https://")):
        return _read_file(url.removeprefix("file://"), max_bytes)
    headers = {"Accept": "text/calendar, */*;q=0.5"}
    if auth:
        headers["Authorization"] = auth
    if etag:
        headers["If-None-Match"] = etag
    if last_modified:
        headers["If-Modified-Since"] = last_modified
    try:
        async with session.get(url, headers=headers) as resp:
            if resp.status == 304:
                return Fetched(None, etag, last_modified)
            if resp.status != 200:
                raise _status_error(resp.status)
            body = await read_limited(resp, max_bytes)
            return Fetched(body, resp.headers.get("ETag", ""),
                           resp.headers.get("Last-Modified", ""))
    except aiohttp.ClientError as exc:
        raise FeedError(f"unreachable: {type(exc).__name__}") from None
    except TimeoutError:
        raise FeedError("unreachable: timed out") from None


def _read_file(path: str, max_bytes: int) -> Fetched:
    try:
        size = os.path.getsize(path)
        if size > max_bytes:
            raise FeedError(f"file is {size} bytes, more than the limit of {max_bytes} "
                            "(max_bytes)")
        with open(path, "rb") as f:
            stamp = str(os.fstat(f.fileno()).st_mtime_ns)
            return Fetched(f.read(max_bytes + 1), stamp)
    except OSError as exc:
        raise FeedError(f"cannot read the file: {exc.strerror or exc}") from None


# -- CalDAV (RFC 4791) ---------------------------------------------------------

_PROPFIND = (b'<?xml version="1.0" encoding="utf-8"?>'
             b'<d:propfind xmlns:d="DAV:" xmlns:cs="http://calendarserver.org/ns/">'
             b'<d:prop><cs:getctag/><d:sync-token/></d:prop></d:propfind>')


def _report(start: datetime, end: datetime) -> bytes:
    fmt = "%Y%m%dT%H%M%SZ"
    return ('<?xml version="1.0" encoding="utf-8"?>'
            '<c:calendar-query xmlns:d="DAV:" xmlns:c="urn:ietf:params:xml:ns:caldav">'
            '<d:prop><c:calendar-data/></d:prop>'
            '<c:filter><c:comp-filter name="VCALENDAR"><c:comp-filter name="VEVENT">'
            f'<c:time-range start="{start:{fmt}}" end="{end:{fmt}}"/>'
            '</c:comp-filter></c:comp-filter></c:filter></c:calendar-query>').encode()


def _dav_headers(depth: str, auth: str) -> dict[str, str]:
    headers = {"Depth": depth, "Content-Type": "application/xml; charset=utf-8"}
    if auth:
        headers["Authorization"] = auth
    return headers


def _xml(body: bytes) -> Element:
    try:
        root: Element = SafeXML.fromstring(body)
    except Exception as exc:  # defusedxml raises its own and ParseError
        raise FeedError(f"the server's answer is not valid XML ({type(exc).__name__})") from None
    return root


async def caldav_ctag(session: aiohttp.ClientSession, url: str, *,
                      auth: str = "") -> str:
    """The collection's ctag (or sync-token): unchanged means no event changed."""
    try:
        async with session.request("PROPFIND", url, data=_PROPFIND, headers=_dav_headers(
                "0", auth)) as resp:
            if resp.status != 207:
                raise _status_error(resp.status)
            root = _xml(await read_limited(resp, 1024 * 1024))
    except aiohttp.ClientError as exc:
        raise FeedError(f"unreachable: {type(exc).__name__}") from None
    except TimeoutError:
        raise FeedError("unreachable: timed out") from None
    for tag in (f"{CS}getctag", f"{DAV}sync-token"):
        node = root.find(f".//{tag}")
        if node is not None and node.text:
            return node.text.strip()
    return ""


async def caldav_events(session: aiohttp.ClientSession, url: str, start: datetime,
                        end: datetime, *, auth: str = "",
                        max_bytes: int = DEFAULT_MAX_BYTES) -> list[str]:
    """The calendar data of every event object with an instance in ``[start, end)``."""
    try:
        async with session.request("REPORT", url, data=_report(start, end),
                                   headers=_dav_headers("1", auth)) as resp:
            if resp.status != 207:
                raise _status_error(resp.status)
            root = _xml(await read_limited(resp, max_bytes))
    except aiohttp.ClientError as exc:
        raise FeedError(f"unreachable: {type(exc).__name__}") from None
    except TimeoutError:
        raise FeedError("unreachable: timed out") from None
    return [node.text for node in root.iter(f"{CALDAV}calendar-data") if node.text]


# -- Microsoft Graph ------------------------------------------------------------


async def m365_calendar_view(session: aiohttp.ClientSession, graph: str, mailbox: str,
                             token: str, start: datetime, end: datetime, *,
                             max_bytes: int = DEFAULT_MAX_BYTES,
                             sleep: Any = asyncio.sleep) -> list[dict[str, Any]]:
    """Every event instance of ``mailbox`` in the window (``calendarView``), all pages.

    Throttling (429, 503) waits the Retry-After the service asks for, a few
    times. The next-page links are followed only on the Graph host itself:
    the token is never sent anywhere else. ``max_bytes`` bounds all the pages
    together, and each page is parsed off the event loop.
    """
    base = graph.rstrip("/")
    fmt = "%Y-%m-%dT%H:%M:%SZ"
    url: str | None = (f"{base}/users/{mailbox}/calendarView?startDateTime={start:{fmt}}"
                       f"&endDateTime={end:{fmt}}&$top=100&$select=subject,showAs,start,end,"
                       "isAllDay,isCancelled,responseStatus,sensitivity")
    headers = {"Authorization": f"Bearer {token}", "Prefer": 'outlook.timezone="UTC"'}
    origin = urlsplit(base)[:2]
    items: list[dict[str, Any]] = []
    pages = 0
    budget = [max_bytes]  # what the remaining pages may still take, in all
    while url is not None:
        pages += 1
        if pages > MAX_PAGES:
            raise FeedError(f"more than {MAX_PAGES} pages of events in the window")
        page = await _graph_get(session, url, headers, budget, sleep)
        value = page.get("value")
        if not isinstance(value, list):
            raise FeedError("calendarView answered without a 'value' list")
        items += [v for v in value if isinstance(v, dict)]
        nxt = page.get("@odata.nextLink")
        if nxt is not None and (not isinstance(nxt, str) or urlsplit(nxt)[:2] != origin):
            raise FeedError("calendarView's next page is on another host; not followed")
        url = nxt
    return items


async def _graph_get(session: aiohttp.ClientSession, url: str, headers: dict[str, str],
                     budget: list[int], sleep: Any) -> dict[str, Any]:
    for attempt in range(MAX_RETRIES + 1):
        try:
            async with session.get(url, headers=headers) as resp:
                if resp.status in (429, 503) and attempt < MAX_RETRIES:
                    await sleep(_retry_after(resp.headers.get("Retry-After"), attempt))
                    continue
                if resp.status == 401:
                    raise Unauthorized("Graph refused the token (HTTP 401)")
                if resp.status == 429:
                    raise FeedError("Microsoft Graph keeps throttling (HTTP 429)")
                if resp.status != 200:
                    raise _status_error(resp.status)
                try:
                    body = await read_limited(resp, budget[0])
                except FeedError:
                    raise FeedError("the calendar's pages together are larger than the "
                                    "limit (max_bytes)") from None
                budget[0] -= len(body)
                return await asyncio.to_thread(_json, body)
        except aiohttp.ClientError as exc:
            raise FeedError(f"Graph unreachable: {type(exc).__name__}") from None
        except TimeoutError:
            raise FeedError("Graph unreachable: timed out") from None
    raise FeedError("Microsoft Graph keeps throttling")
