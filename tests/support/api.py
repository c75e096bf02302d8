"""HTTP and WebSocket clients of the daemon's API, for the tests."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp

from astpresence.web.auth import Level, Privacy
from tests.support.e2e import RunningDaemon

#: The presence levels the API tests run with (tests/conftest.py, fixture ``daemon``).
PRIVACY = Privacy(
    default=Level.TEAM,
    levels={"2000": Level.PUBLIC, "2002": Level.BLOCKED},
    groups={"support": frozenset({"2001", "2002"})},
)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def call(d: RunningDaemon, method: str, path: str, token: str | None,
               body: Any = None) -> tuple[int, Any]:
    headers = bearer(token) if token else {}
    async with aiohttp.ClientSession(headers=headers) as http:
        async with http.request(method, d.url + path, json=body) as resp:
            return resp.status, await resp.json()


class Stream:
    """A WebSocket client of /v1/events."""

    def __init__(self, http: aiohttp.ClientSession, ws: aiohttp.ClientWebSocketResponse):
        self.http, self.ws = http, ws

    @classmethod
    async def open(cls, d: RunningDaemon, hello: dict[str, Any]) -> Stream:
        http = aiohttp.ClientSession()
        ws = await http.ws_connect(d.url + "/v1/events", autoping=False)
        await ws.send_json(hello)
        return cls(http, ws)

    async def next(self, timeout: float = 5.0) -> dict[str, Any]:
        msg = await asyncio.wait_for(self.ws.receive(), timeout)
        assert msg.type == aiohttp.WSMsgType.TEXT, msg
        data: dict[str, Any] = json.loads(msg.data)
        return data

    async def sync(self) -> None:
        """A ping round trip: the server has read everything sent before it (it reads
        one message at a time and answers the ping when it reads it)."""
        await self.ws.ping()
        msg = await asyncio.wait_for(self.ws.receive(), 5)
        assert msg.type == aiohttp.WSMsgType.PONG, msg

    async def close(self) -> None:
        await self.ws.close()
        await self.http.close()
