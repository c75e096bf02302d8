"""What the computer says about the person at it: active, idle (for how long), or
locked. One small interface, :class:`Reader`, per system:

- Linux: systemd-logind's session object over D-Bus (``IdleHint``,
  ``IdleSinceHint``, ``LockedHint`` of ``org.freedesktop.login1.Session``;
  ``PrepareForShutdown`` and ``SessionRemoved`` of the manager end the session),
  else the freedesktop screensaver on the session bus (``GetActive``,
  ``GetSessionIdleTime``, ``ActiveChanged``). Both tested against a private
  dbus-daemon with stand-ins.
- macOS: ``ioreg -c IOHIDSystem`` (``HIDIdleTime``, nanoseconds): idle only, no
  lock state. The parsing is tested; the command itself only on a Mac.
- Windows: ``GetLastInputInfo``: idle only. Not tested here (no Windows).
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import sys
import time
from dataclasses import dataclass
from typing import Any, Protocol

logger = logging.getLogger(__name__)

#: systemd-logind's names (org.freedesktop.login1(5)).
LOGIND = "org.freedesktop.login1"
LOGIND_PATH = "/org/freedesktop/login1"
MANAGER = "org.freedesktop.login1.Manager"
SESSION = "org.freedesktop.login1.Session"
PROPERTIES = "org.freedesktop.DBus.Properties"


@dataclass(frozen=True)
class Reading:
    state: str  # active | idle | locked
    idle_seconds: float = 0.0


class Reader(Protocol):
    #: Set when something changed (a report should go now, not at the next beat).
    changed: asyncio.Event
    #: Set when the person's session ends (logout, shutdown): close and stop.
    ending: asyncio.Event

    async def open(self) -> None: ...

    async def read(self) -> Reading: ...

    async def close(self) -> None: ...


class ReaderError(Exception):
    """The system cannot tell (no logind session, no D-Bus): the message says why."""


class LogindReader:
    """The person's logind session (this process's, or ``XDG_SESSION_ID``'s), on the
    system bus (``DBUS_SYSTEM_BUS_ADDRESS`` names another one)."""

    def __init__(self, bus_address: str | None = None) -> None:
        self.changed = asyncio.Event()
        self.ending = asyncio.Event()
        self._address = bus_address or os.environ.get("DBUS_SYSTEM_BUS_ADDRESS")
        self._bus: Any = None
        self._props: Any = None
        self._session_id = ""

    async def open(self) -> None:
        try:
            from dbus_fast import BusType
            from dbus_fast.aio import MessageBus
        except ImportError:
            raise ReaderError("dbus-fast is not installed: pip install "
                              "'astpresence[agent]'") from None
        try:
            bus = MessageBus(bus_address=self._address) if self._address else \
                MessageBus(bus_type=BusType.SYSTEM)
            self._bus = await bus.connect()
            manager = await self._interface(LOGIND_PATH, MANAGER)
            sid = os.environ.get("XDG_SESSION_ID")
            path = await (manager.call_get_session(sid) if sid else
                          manager.call_get_session_by_pid(os.getpid()))
            session = await self._interface(path, PROPERTIES)
        except Exception as exc:  # noqa: BLE001 - any D-Bus failure: the reader cannot work
            await self.close()
            raise ReaderError(f"no logind session over D-Bus: {exc}") from None
        self._props = session
        self._session_id = str(await self._get("Id", ""))
        session.on_properties_changed(self._on_properties)
        manager.on_prepare_for_shutdown(self._on_shutdown)
        manager.on_session_removed(self._on_removed)
        logger.info("reading logind session %s", self._session_id or path)

    async def _interface(self, path: str, name: str) -> Any:
        introspection = await self._bus.introspect(LOGIND, path)
        return self._bus.get_proxy_object(LOGIND, path, introspection).get_interface(name)

    async def _get(self, name: str, default: Any) -> Any:
        try:
            return (await self._props.call_get(SESSION, name)).value
        except Exception:  # noqa: BLE001 - an older logind without the property
            return default

    async def read(self) -> Reading:
        values = await self._props.call_get_all(SESSION)
        if values.get("LockedHint") is not None and values["LockedHint"].value:
            return Reading("locked")
        if values.get("IdleHint") is not None and values["IdleHint"].value:
            since = values.get("IdleSinceHint")
            usec = since.value if since is not None else 0
            idle = max(0.0, time.time() - usec / 1e6) if usec else 0.0
            return Reading("idle", idle)
        return Reading("active")

    def _on_properties(self, interface: str, changed: dict[str, Any],
                       invalidated: list[str]) -> None:
        if interface == SESSION and {"IdleHint", "LockedHint"} & {*changed, *invalidated}:
            self.changed.set()

    def _on_shutdown(self, start: bool) -> None:
        if start:
            logger.info("the machine is shutting down: closing the session")
            self.ending.set()

    def _on_removed(self, session_id: str, path: str) -> None:
        if session_id == self._session_id:
            logger.info("logind session %s removed (logout): closing the session",
                        session_id)
            self.ending.set()

    async def close(self) -> None:
        if self._bus is not None:
            self._bus.disconnect()
            self._bus = None


#: The freedesktop screensaver (KDE, Xfce, GNOME's compatibility name), on the
#: person's session bus: the fallback where logind has no idle or lock state.
SCREENSAVER = "org.freedesktop.ScreenSaver"
SCREENSAVER_PATH = "/org/freedesktop/ScreenSaver"


class ScreenSaverReader:
    """``GetActive`` (the screen locked or blanked) and ``GetSessionIdleTime``
    (seconds without input) of ``org.freedesktop.ScreenSaver``, asked at each read;
    its ``ActiveChanged`` signal reports a lock at once. Idle after ``idle_after``."""

    def __init__(self, bus_address: str | None = None, idle_after: float = 60.0) -> None:
        self.changed = asyncio.Event()
        self.ending = asyncio.Event()
        self._address = bus_address or os.environ.get("DBUS_SESSION_BUS_ADDRESS")
        self._idle_after = idle_after
        self._bus: Any = None
        self._saver: Any = None

    async def open(self) -> None:
        try:
            from dbus_fast.aio import MessageBus
        except ImportError:
            raise ReaderError("dbus-fast is not installed: pip install "
                              "'astpresence[agent]'") from None
        if not self._address:
            raise ReaderError("no session bus (DBUS_SESSION_BUS_ADDRESS is not set)")
        try:
            self._bus = await MessageBus(bus_address=self._address).connect()
            introspection = await self._bus.introspect(SCREENSAVER, SCREENSAVER_PATH)
            self._saver = self._bus.get_proxy_object(
                SCREENSAVER, SCREENSAVER_PATH, introspection).get_interface(SCREENSAVER)
            await self._saver.call_get_active()
        except Exception as exc:  # noqa: BLE001 - any D-Bus failure: no screensaver
            await self.close()
            raise ReaderError(f"no {SCREENSAVER} on the session bus: {exc}") from None
        self._saver.on_active_changed(lambda active: self.changed.set())
        logger.info("reading %s on the session bus", SCREENSAVER)

    async def read(self) -> Reading:
        if await self._saver.call_get_active():
            return Reading("locked")
        idle = float(await self._saver.call_get_session_idle_time())
        return Reading("idle", idle) if idle >= self._idle_after else Reading("active")

    async def close(self) -> None:
        if self._bus is not None:
            self._bus.disconnect()
            self._bus = None


class FallbackReader:
    """logind first; where it cannot tell, the screensaver on the session bus."""

    def __init__(self, first: Reader, second: Reader) -> None:
        self._readers = (first, second)
        self._chosen: Reader = first
        self.changed = asyncio.Event()
        self.ending = asyncio.Event()

    async def open(self) -> None:
        errors = []
        for reader in self._readers:
            try:
                await reader.open()
            except ReaderError as exc:
                errors.append(str(exc))
                continue
            self._chosen = reader
            self.changed, self.ending = reader.changed, reader.ending
            return
        raise ReaderError("; ".join(errors))

    async def read(self) -> Reading:
        return await self._chosen.read()

    async def close(self) -> None:
        await self._chosen.close()


_HID_IDLE = re.compile(r'"HIDIdleTime"\s*=\s*(\d+)')


def hid_idle_seconds(ioreg_output: str) -> float | None:
    """``HIDIdleTime`` (nanoseconds) from ``ioreg -c IOHIDSystem``, in seconds."""
    found = _HID_IDLE.search(ioreg_output)
    return int(found.group(1)) / 1e9 if found else None


class PollingReader:
    """Idle time the system gives on request (macOS, Windows): idle once there was no
    input for ``idle_after`` seconds; no lock state."""

    def __init__(self, idle_after: float = 60.0) -> None:
        self.changed = asyncio.Event()
        self.ending = asyncio.Event()
        self._idle_after = idle_after

    async def open(self) -> None:
        await self._idle()  # fails now, not at the first report

    async def _idle(self) -> float:
        if sys.platform == "darwin":
            proc = await asyncio.create_subprocess_exec(
                "ioreg", "-c", "IOHIDSystem", stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.DEVNULL, stdin=asyncio.subprocess.DEVNULL)
            out, _ = await proc.communicate()
            seconds = hid_idle_seconds(out.decode(errors="replace"))
            if seconds is None:
                raise ReaderError("ioreg shows no HIDIdleTime")
            return seconds
        if sys.platform == "win32":
            return _windows_idle()
        raise ReaderError(f"no idle time on {sys.platform} without logind")

    async def read(self) -> Reading:
        idle = await self._idle()
        return Reading("idle", idle) if idle >= self._idle_after else Reading("active")

    async def close(self) -> None:
        return None


def _windows_idle() -> float:  # pragma: no cover - Windows only
    import ctypes

    class LastInput(ctypes.Structure):
        _fields_ = [("cbSize", ctypes.c_uint), ("dwTime", ctypes.c_uint)]

    info = LastInput(ctypes.sizeof(LastInput), 0)
    if not ctypes.windll.user32.GetLastInputInfo(ctypes.byref(info)):  # type: ignore[attr-defined]
        raise ReaderError("GetLastInputInfo failed")
    ticks = ctypes.windll.kernel32.GetTickCount() & 0xFFFFFFFF  # type: ignore[attr-defined]
    return float((ticks - info.dwTime) & 0xFFFFFFFF) / 1000.0


def reader_for(kind: str, bus_address: str | None = None) -> Reader:
    """``auto``: on Linux logind, else the freedesktop screensaver; elsewhere the
    system's idle time. Or one by name: ``logind``, ``screensaver``, ``poll``."""
    if kind == "logind":
        return LogindReader(bus_address)
    if kind == "screensaver":
        return ScreenSaverReader(bus_address)
    if kind == "auto" and sys.platform.startswith("linux"):
        return FallbackReader(LogindReader(bus_address), ScreenSaverReader())
    return PollingReader()
