"""A private D-Bus daemon with a small systemd-logind stand-in (and, when asked, the
freedesktop screensaver), for the agent's tests.

The stand-in exports what the agent reads, with logind's real names
(org.freedesktop.login1(5)): the manager (``GetSession``, ``GetSessionByPID``,
the ``PrepareForShutdown`` and ``SessionRemoved`` signals) and one session
(``Id``, ``IdleHint``, ``IdleSinceHint`` in microseconds of CLOCK_REALTIME,
``LockedHint``, with ``PropertiesChanged`` on every change, as logind sends it).
The bus is ``dbus-daemon --session`` on a socket of the test's own; the agent is
pointed at it as its system bus.

No ``from __future__ import annotations`` here: dbus-fast reads the D-Bus
signatures from the annotations themselves (the constants below, evaluated).
"""

import asyncio
import shutil
import time
from pathlib import Path
from typing import Any

from dbus_fast.aio import MessageBus
from dbus_fast.service import PropertyAccess, ServiceInterface, dbus_property, method, signal

#: D-Bus type signatures, as annotations (dbus-fast reads them).
S, O, U, B, T, SO = "s", "o", "u", "b", "t", "so"
SCREENSAVER = "org.freedesktop.ScreenSaver"

LOGIND = "org.freedesktop.login1"
SESSION_ID = "7"
SESSION_PATH = f"/org/freedesktop/login1/session/_3{SESSION_ID}"
DBUS_DAEMON = shutil.which("dbus-daemon")


class Manager(ServiceInterface):  # type: ignore[misc]
    def __init__(self) -> None:
        super().__init__("org.freedesktop.login1.Manager")

    @method()
    def GetSession(self, session_id: S) -> O:  # noqa: N802
        return SESSION_PATH

    @method()
    def GetSessionByPID(self, pid: U) -> O:  # noqa: N802
        return SESSION_PATH

    @signal()
    def PrepareForShutdown(self, start: bool) -> B:  # noqa: N802
        return start

    @signal()
    def SessionRemoved(self, session_id: str, path: str) -> SO:  # noqa: N802
        return [session_id, path]


class Session(ServiceInterface):  # type: ignore[misc]
    def __init__(self) -> None:
        super().__init__("org.freedesktop.login1.Session")
        self._idle = False
        self._idle_since = 0
        self._locked = False

    @dbus_property(access=PropertyAccess.READ)
    def Id(self) -> S:  # noqa: N802
        return SESSION_ID

    @dbus_property(access=PropertyAccess.READ)
    def IdleHint(self) -> B:  # noqa: N802
        return self._idle

    @dbus_property(access=PropertyAccess.READ)
    def IdleSinceHint(self) -> T:  # noqa: N802
        return self._idle_since

    @dbus_property(access=PropertyAccess.READ)
    def LockedHint(self) -> B:  # noqa: N802
        return self._locked

    def set_idle(self, idle: bool, seconds_ago: float = 0.0) -> None:
        """What a desktop's SetIdleHint does: the hint and since when."""
        self._idle = idle
        self._idle_since = int((time.time() - seconds_ago) * 1e6)
        self.emit_properties_changed({"IdleHint": idle, "IdleSinceHint": self._idle_since})

    def set_locked(self, locked: bool) -> None:
        """What a screen locker's SetLockedHint does."""
        self._locked = locked
        self.emit_properties_changed({"LockedHint": locked})


class ScreenSaver(ServiceInterface):  # type: ignore[misc]
    """org.freedesktop.ScreenSaver as KDE and Xfce export it on the session bus."""

    def __init__(self) -> None:
        super().__init__(SCREENSAVER)
        self.active = False
        self.idle_seconds = 0

    @method()
    def GetActive(self) -> B:  # noqa: N802
        return self.active

    @method()
    def GetSessionIdleTime(self) -> U:  # noqa: N802
        return self.idle_seconds

    @signal()
    def ActiveChanged(self, active: bool) -> B:  # noqa: N802
        return active

    def lock(self, active: bool) -> None:
        self.active = active
        self.ActiveChanged(active)


class LogindStandIn:
    """``async with LogindStandIn(tmp) as logind:`` -> ``logind.address`` for the agent."""

    def __init__(self, workdir: Path) -> None:
        self._workdir = workdir
        self.address = ""
        self.manager = Manager()
        self.session = Session()
        self._proc: asyncio.subprocess.Process | None = None
        self._bus: Any = None

    async def __aenter__(self) -> "LogindStandIn":
        assert DBUS_DAEMON is not None, "dbus-daemon is missing (scripts/test installs dbus)"
        socket = self._workdir / "bus"
        self._proc = await asyncio.create_subprocess_exec(
            DBUS_DAEMON, "--session", "--nofork", "--nopidfile", "--print-address=1",
            f"--address=unix:path={socket}", stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE, stdin=asyncio.subprocess.DEVNULL)
        assert self._proc.stdout is not None
        line = await asyncio.wait_for(self._proc.stdout.readline(), 10)
        self.address = line.decode().strip()
        assert self.address, "dbus-daemon printed no address"
        self._bus = await MessageBus(bus_address=self.address).connect()
        self._bus.export("/org/freedesktop/login1", self.manager)
        self._bus.export(SESSION_PATH, self.session)
        await self._bus.request_name(LOGIND)
        return self

    async def serve_screensaver(self) -> ScreenSaver:
        """The screensaver on the same bus (the agent is pointed at it as the session
        bus); logind can be left out by never asking for it."""
        saver = ScreenSaver()
        self._bus.export("/org/freedesktop/ScreenSaver", saver)
        await self._bus.request_name(SCREENSAVER)
        return saver

    async def __aexit__(self, *exc: object) -> None:
        if self._bus is not None:
            self._bus.disconnect()
        if self._proc is not None and self._proc.returncode is None:
            self._proc.terminate()
            await asyncio.wait_for(self._proc.wait(), 10)

    def remove_session(self) -> None:
        """Logout: logind drops the session."""
        self.manager.SessionRemoved(SESSION_ID, SESSION_PATH)

    def shutdown(self) -> None:
        self.manager.PrepareForShutdown(True)
