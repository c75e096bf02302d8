"""One daemon per database: a lock file beside it, held while the daemon runs.

Two daemons on one database would both write to Asterisk and fight over
every presence. The lock is an ``flock`` on ``<database>.lock``: the kernel
drops it when the process ends, even on ``kill -9``, so a crash never leaves
a stale lock behind. The file says who holds it, for the refusal message.
"""

from __future__ import annotations

import fcntl
import json
import os


class AlreadyRunning(Exception):
    """Another daemon holds the database; the message names it."""


class DaemonLock:
    def __init__(self, db_path: str) -> None:
        self.path = db_path + ".lock"
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock or raise :class:`AlreadyRunning` (OSError if the file cannot be made)."""
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _describe(fd)
            os.close(fd)
            raise AlreadyRunning(
                f"another astpresence daemon ({holder}) is already using the database "
                f"{self.path.removesuffix('.lock')}; stop it first, or give this one its own "
                "database with --db") from None
        self._fd = fd
        self.note(api=None)

    def note(self, *, api: str | None) -> None:
        """Record who holds the lock (pid, API address) for a daemon that is refused."""
        if self._fd is None:
            return
        data = json.dumps({"pid": os.getpid(), "api": api}).encode()
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, data, 0)

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing drops the flock
            self._fd = None


def _describe(fd: int) -> str:
    try:
        info = json.loads(os.pread(fd, 4096, 0) or b"{}")
    except ValueError:
        info = {}
    if not isinstance(info, dict):
        info = {}
    parts = [f"pid {info['pid']}" if isinstance(info.get("pid"), int) else "pid unknown"]
    if isinstance(info.get("api"), str):
        parts.append(f"API {info['api']}")
    return ", ".join(parts)


class LockFailed(Exception):
    """The database could not be taken (message fit for a user)."""


def take_database(path: str, *, make_dir: bool) -> DaemonLock:
    """Lock the database file ``path`` for this daemon (its directory made first with
    ``make_dir``: the default place); :class:`LockFailed` saying why not."""
    if make_dir:
        try:
            os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        except OSError as exc:
            raise LockFailed(f"cannot create the directory of the database {path}: "
                             f"{exc.strerror}") from None
    lock = DaemonLock(path)
    try:
        lock.acquire()
    except AlreadyRunning as exc:
        raise LockFailed(str(exc)) from None
    except OSError as exc:
        raise LockFailed(f"cannot lock the database {path} ({lock.path}): "
                         f"{exc.strerror}") from None
    return lock
