"""A client session carried by an event stream (sources/sessions/).

A client that keeps ``/v1/events`` open can be a session without a second
connection: ``"session": {"client": "...", "kind": "board"}`` in its first
message opens one (the hello answers with it), ``{"session": {"state": "idle",
"idle_seconds": 300}}`` reports, and the open socket is the heartbeat: while it
stays open the server renews the session every third of ``expire_after``;
when it closes, so does the session. Every request goes through the serving
node's ``sessions`` command (run by the leader of an HA group); after a takeover
the session is opened again on the new leader with the last state reported.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from typing import Any

from aiohttp import WSMsgType

from astpresence.cluster.serving import Serving
from astpresence.domain.model import InvalidInput
from astpresence.web.auth import Principal

logger = logging.getLogger(__name__)

#: What a session report over the stream may hold.
REPORT_FIELDS = {"state", "idle_seconds"}


class StreamSession:
    def __init__(self, serving: Serving, user: str, spec: dict[str, Any]) -> None:
        self._serving = serving
        self._user = user
        self._spec = spec
        self._id = ""
        self._last: dict[str, Any] = {"state": "active"}
        self._keeper: asyncio.Task[None] | None = None
        self.opened: dict[str, Any] = {}

    @classmethod
    async def start(cls, serving: Serving, who: Principal, spec: object) -> StreamSession:
        """Open the session the hello asked for; InvalidInput says why it cannot be."""
        if who.user is None:
            raise InvalidInput("sessions belong to a user: this token is not tied to one")
        if not isinstance(spec, dict) or not set(spec) <= {"client", "kind"}:
            raise InvalidInput('session: expected {"client": ..., "kind": ...}')
        session = cls(serving, who.user, spec)
        await session._open()
        session._keeper = asyncio.create_task(session._keep(), name="stream-session")
        return session

    async def _ask(self, op: str, **more: Any) -> dict[str, Any]:
        return await self._serving.call("sessions", {"op": op, "user": self._user, **more})

    async def _open(self) -> None:
        answer = await self._ask("open", **self._spec)
        self.opened = answer
        self._id = str(answer["session"]["id"])

    async def _keep(self) -> None:
        """The heartbeat while the socket is open: the session lives on, its state as
        last reported (an idle time keeps counting from when idle began)."""
        interval = max(1.0, float(self.opened.get("expire_after", 60)) / 3)
        while True:
            await asyncio.sleep(interval)
            try:
                answer = await self._ask("touch", id=self._id)
                if answer.get("unknown_session"):  # a takeover, or expired
                    await self._send(self._last)
            except (InvalidInput, LookupError, OSError) as exc:
                logger.warning("stream session of %s not renewed: %s", self._user, exc)

    async def _send(self, body: dict[str, Any]) -> None:
        answer = await self._ask("report", id=self._id, **body)
        if answer.get("unknown_session"):  # a takeover, or expired: open it again
            await self._open()
            await self._ask("report", id=self._id, **body)

    @staticmethod
    def message(msg: Any) -> dict[str, Any] | None:
        """The report in a client message (``{"session": {...}}``), or None."""
        if msg.type != WSMsgType.TEXT:
            return None
        with contextlib.suppress(ValueError, RecursionError):
            data = json.loads(msg.data)
            if isinstance(data, dict) and set(data) == {"session"}:
                report = data["session"]
                return report if isinstance(report, dict) else {"state": None}
        return None

    async def report(self, body: dict[str, Any]) -> tuple[int, str] | None:
        """A report from the client: None, or why the stream ends (1008, the error)."""
        if not set(body) <= REPORT_FIELDS:
            return 1008, 'session: expected {"state": ..., "idle_seconds": ...}'
        try:
            await self._send(body)
        except InvalidInput as exc:
            return 1008, str(exc)
        self._last = body
        return None

    async def close(self) -> None:
        if self._keeper is not None:
            self._keeper.cancel()
            await asyncio.gather(self._keeper, return_exceptions=True)
        with contextlib.suppress(InvalidInput, LookupError, OSError):
            await self._ask("close", id=self._id)
