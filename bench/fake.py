"""The fake Asterisk of tests/support/fakeami.py, instrumented for benchmarks.

:class:`BenchFake` keeps the parent's behaviour (same frames, same answers)
with two additions:

- hint lookups are indexed: the parent scans every hint on each device or
  presence change, which at 10,000 hints would make the fake, not the
  daemon, the bottleneck;
- it stamps what it receives with :func:`time.monotonic` (CLOCK_MONOTONIC,
  shared by every process on the machine): the time of the socket read that
  brought each Setvar, and of each Login.

:meth:`BenchFake.blast` writes pre-encoded event frames straight to the
logged-in session, either as fast as TCP flow control allows or at a fixed
rate, and returns when each frame was handed to the socket.
"""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import Sequence
from typing import Any

from astpresence.asterisk.ami.frames import Message
from .tests_import import FakeAsterisk, Hint, encode_message

#: Frames written per socket write at full speed.
BLAST_CHUNK = 64


class _StampingReader:
    """Wraps the session's StreamReader: remembers when the last read returned."""

    def __init__(self, reader: asyncio.StreamReader) -> None:
        self._reader = reader
        self.stamp = 0.0

    async def read(self, n: int = -1) -> bytes:
        data = await self._reader.read(n)
        self.stamp = time.monotonic()
        return data


class BenchFake(FakeAsterisk):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        #: Variable -> time the read that brought its first Setvar returned.
        self.setvar_times: dict[str, float] = {}
        self.setvar_count = 0
        self.login_times: list[float] = []
        self.keep_actions = False  # the parent keeps every action; 10,000s add up
        self._by_device: dict[str, list[Hint]] = {}
        self._by_presence: dict[str, list[Hint]] = {}

    async def start(self) -> None:
        self.reindex()
        await super().start()

    def reindex(self) -> None:
        """Index hints by device and presence name; call after changing :attr:`hints`."""
        self._by_device, self._by_presence = {}, {}
        for hint in self.hints:
            for device in hint.devices:
                self._by_device.setdefault(device, []).append(hint)
            for label in (hint.presence or "").split("&"):
                prefix, sep, name = label.partition(":")
                if sep and prefix.lower() == "custompresence":
                    self._by_presence.setdefault(name, []).append(hint)

    # The parent methods look through self.hints; hand them only the hints
    # concerned, so they do exactly what they do, in O(1).

    def _set_device(self, device: str, state: str) -> list[list[tuple[str, str]]]:
        hints, self.hints = self.hints, self._by_device.get(device, [])
        try:
            return super()._set_device(device, state)
        finally:
            self.hints = hints

    def _set_presence(self, provider: str, name: str, state: str, subtype: str,
                      message: str) -> list[list[tuple[str, str]]]:
        hints, self.hints = self.hints, self._by_presence.get(name, [])
        try:
            return super()._set_presence(provider, name, state, subtype, message)
        finally:
            self.hints = hints

    async def _serve(self, session: Any) -> None:
        session.reader = _StampingReader(session.reader)
        await super()._serve(session)

    async def _request(self, session: Any, lines: list[str], too_long: bool) -> bool:
        keep = await super()._request(session, lines, too_long)
        if not self.keep_actions and self.actions:
            self.actions.clear()
        return keep

    async def _setvar(self, session: Any, m: Message) -> bool:
        variable = m.get("Variable") or ""
        self.setvar_count += 1
        self.setvar_times.setdefault(variable, session.reader.stamp)
        return await super()._setvar(session, m)

    async def _login(self, session: Any, m: Message) -> bool:
        self.login_times.append(session.reader.stamp)
        return await super()._login(session, m)

    # -- sending events fast ------------------------------------------------

    def _session(self) -> Any:
        sessions = [s for s in self._sessions if s.authenticated]
        if len(sessions) != 1:
            raise RuntimeError(f"expected one logged-in client, found {len(sessions)}")
        return sessions[0]

    async def blast(self, frames: Sequence[bytes], rate: float | None) -> list[float]:
        """Send ``frames`` to the client; the time each was written, in order.

        ``rate`` None: as fast as TCP flow control lets us (drain after each
        chunk of :data:`BLAST_CHUNK`). Else ``rate`` frames per second on a
        fixed schedule; a late tick sends every frame that is due.
        """
        session = self._session()
        writer = session.writer
        sent: list[float] = []
        n = len(frames)
        if rate is None:
            for i in range(0, n, BLAST_CHUNK):
                chunk = frames[i:i + BLAST_CHUNK]
                async with session.lock:
                    now = time.monotonic()
                    writer.write(b"".join(chunk))
                    await writer.drain()
                sent += [now] * len(chunk)
                await asyncio.sleep(0)  # let the fake answer Setvars meanwhile
            return sent
        start = time.monotonic()
        i = 0
        while i < n:
            now = time.monotonic()
            due = min(n, int((now - start) * rate) + 1)
            if due > i:
                async with session.lock:
                    now = time.monotonic()
                    writer.write(b"".join(frames[i:due]))
                    await writer.drain()
                sent += [now] * (due - i)
                i = due
            await asyncio.sleep(max(0.0, start + i / rate - time.monotonic()))
        return sent

    async def wait_setvars(self, prefix: str, count: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while sum(1 for v in self.setvar_times if v.startswith(prefix)) < count:
            if time.monotonic() > deadline:
                got = sum(1 for v in self.setvar_times if v.startswith(prefix))
                raise TimeoutError(f"only {got} of {count} Setvar {prefix}... within {timeout} s")
            await asyncio.sleep(0.01)


def event_frame(headers: list[tuple[str, str]]) -> bytes:
    """An event as FakeAsterisk._broadcast writes it (Privilege after Event)."""
    return encode_message([headers[0], ("Privilege", "call,all"), *headers[1:]])


def device_change_frame(device: str, state: str) -> bytes:
    return event_frame([("Event", "DeviceStateChange"), ("Device", device), ("State", state)])


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()
