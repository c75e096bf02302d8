"""The systemd service manager's notification protocol (sd_notify), and journald logs.

One datagram per message to ``$NOTIFY_SOCKET`` (a path, or ``@name`` in the
abstract namespace), ``KEY=value`` lines: ``READY=1`` once the daemon serves
(the unit is ``Type=notify``), ``STATUS=...`` for what it waits for,
``WATCHDOG=1`` from the event loop at half of ``$WATCHDOG_USEC`` (a loop that is
stuck stops them, and systemd restarts the service), ``STOPPING=1`` at
shutdown. Without ``$NOTIFY_SOCKET`` (not run by systemd) nothing is sent.

With ``$JOURNAL_STREAM`` naming our standard error, log lines carry a
``<N>`` syslog priority prefix and no timestamp of their own: journald adds
both the time and the priority from it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import sys
from collections.abc import Callable, Mapping

from astpresence.domain.logsafe import OneLineFormatter

logger = logging.getLogger(__name__)


class Notifier:
    """Sends notifications; every call is a no-op outside systemd."""

    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        env = os.environ if env is None else env
        where = env.get("NOTIFY_SOCKET", "")
        self._address = ("\0" + where[1:]) if where.startswith("@") else where
        self._sock: socket.socket | None = None
        self.watchdog = _watchdog_interval(env)
        self._status = ""

    @property
    def enabled(self) -> bool:
        return bool(self._address)

    def send(self, *lines: str) -> None:
        if not self._address:
            return
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            self._sock.sendto("\n".join(lines).encode(), self._address)
        except OSError as exc:  # a notification is never worth stopping for
            logger.debug("sd_notify to %s failed: %s", self._address.lstrip("\0"), exc)

    def status(self, text: str) -> None:
        """STATUS=, sent only when it changed."""
        if text != self._status:
            self._status = text
            self.send(f"STATUS={text}")

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    async def keep_alive(self, stop: asyncio.Event) -> None:
        """WATCHDOG=1 at half the interval systemd asked for, from the event loop."""
        if self.watchdog is None:
            return
        while not stop.is_set():
            self.send("WATCHDOG=1")
            try:
                await asyncio.wait_for(stop.wait(), self.watchdog / 2)
            except TimeoutError:
                pass

    async def report(self, ready: Callable[[], str | None], stop: asyncio.Event,
                     every: float = 0.5) -> None:
        """STATUS= with what ``ready()`` says the daemon waits for, until it says
        nothing (None): then READY=1, once, and the status it serves with."""
        while not stop.is_set():
            waiting = ready()
            if waiting is None:
                self.send("READY=1", "STATUS=serving")
                self._status = "serving"
                return
            self.status(waiting)
            try:
                await asyncio.wait_for(stop.wait(), every)
            except TimeoutError:
                pass


def _watchdog_interval(env: Mapping[str, str]) -> float | None:
    """Seconds of ``WATCHDOG_USEC``, when it is meant for this process."""
    usec = env.get("WATCHDOG_USEC", "")
    pid = env.get("WATCHDOG_PID", "")
    if not usec.isdigit() or int(usec) == 0 or (pid and pid != str(os.getpid())):
        return None
    return int(usec) / 1_000_000


#: logging level -> syslog priority (sd-daemon.h SD_ERR...).
PRIORITIES = {logging.DEBUG: 7, logging.INFO: 6, logging.WARNING: 4, logging.ERROR: 3,
              logging.CRITICAL: 2}


def logs_to_journal(env: Mapping[str, str] | None = None) -> bool:
    """True when standard error is the journal stream systemd gave us."""
    env = os.environ if env is None else env
    dev, _, ino = env.get("JOURNAL_STREAM", "").partition(":")
    if not (dev.isdigit() and ino.isdigit()):
        return False
    try:
        st = os.fstat(sys.stderr.fileno())
    except (OSError, ValueError):
        return False
    return (st.st_dev, st.st_ino) == (int(dev), int(ino))


def journal_prefix(record: logging.LogRecord) -> str:
    level = max((lv for lv in PRIORITIES if lv <= record.levelno), default=logging.DEBUG)
    return f"<{PRIORITIES[level]}>"


class JournalFormatter(OneLineFormatter):
    """``<N>name: message`` per line (a traceback's lines too), no timestamp."""

    def __init__(self) -> None:
        super().__init__("%(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        prefix = journal_prefix(record)
        return "\n".join(prefix + line for line in super().format(record).split("\n"))
