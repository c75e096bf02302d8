"""Fixtures for the tests against a real Asterisk (see README.md here).

Nothing in this file touches the network unless the ``ASTPRESENCE_IT_*``
variables are set: the tests are skipped before any fixture runs. Imports of
the AMI client happen inside the fixtures so that collection never depends on
it.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, TypeVar

import pytest

SKIP_REASON = (
    "set ASTPRESENCE_IT_AMI, ASTPRESENCE_IT_USERNAME and ASTPRESENCE_IT_SECRET "
    "to run against a real Asterisk"
)
ENV_NAMES = ("ASTPRESENCE_IT_AMI", "ASTPRESENCE_IT_USERNAME", "ASTPRESENCE_IT_SECRET")

#: How long the daemon may take from start to "AMI connected and synced".
READY_TIMEOUT = 30.0
#: How long a change may take to travel Asterisk -> daemon -> Asterisk.
SETTLE_TIMEOUT = 15.0

#: Written to the daemon's --config: the BLF mirror and queue pause on, the
#: offline overlay off (test phones are not registered and would look offline
#: after a minute), and user 2000 with an extra Custom: device the device test
#: drives.
IT_DEVICE = "Custom:astpresence-it-2000"
IT_CONFIG = f"""
[rules]
mirror = true
queue_pause = true
offline = false

[[users]]
id = "2000"
devices = ["PJSIP/2000", "{IT_DEVICE}"]
"""

T = TypeVar("T")


@dataclass(frozen=True)
class ITConfig:
    host: str
    port: int
    username: str
    secret: str = field(repr=False)


def it_config_from_env() -> ITConfig:
    missing = [n for n in ENV_NAMES if not os.environ.get(n)]
    if missing:
        pytest.skip(SKIP_REASON)
    where = os.environ["ASTPRESENCE_IT_AMI"]
    host, sep, port = where.rpartition(":")
    if not sep or not host or not port.isdigit():
        pytest.fail(f"ASTPRESENCE_IT_AMI must be HOST:PORT, got {where!r}")
    return ITConfig(host.strip("[]"), int(port), os.environ["ASTPRESENCE_IT_USERNAME"],
                    os.environ["ASTPRESENCE_IT_SECRET"])


@pytest.fixture(scope="session")
def it() -> ITConfig:
    return it_config_from_env()


def clean_env() -> dict[str, str]:
    """The test process's environment without settings that would leak into
    the daemon or the CLI (a developer's ASTPRESENCE_CONFIG, _API, ...)."""
    return {k: v for k, v in os.environ.items() if not k.startswith("ASTPRESENCE_")}


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def eventually(check: Callable[[], Awaitable[T | None]], what: str,
                     timeout: float = SETTLE_TIMEOUT, interval: float = 0.25) -> T:
    """Poll ``check`` until it returns something other than None (or False)."""
    deadline = time.monotonic() + timeout
    last: object = None
    while True:
        try:
            result = await check()
        except AssertionError as exc:  # a check may assert on a partial state
            result, last = None, exc
        if result is not None and result is not False:
            return result
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}"
                                 + (f" (last: {last})" if last else ""))
        await asyncio.sleep(interval)


@dataclass
class CliResult:
    returncode: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        assert self.returncode == 0, f"CLI failed ({self.returncode}): {self.stderr.strip()}"
        return json.loads(self.stdout)


class Daemon:
    """``python -m astpresence serve`` in a subprocess, plus its CLI."""

    def __init__(self, it: ITConfig, db: Path, config: Path | None, log: Path) -> None:
        self.it = it
        self.db = db
        self.config = config
        self.log_path = log
        self.port = free_port()
        self.api = f"http://127.0.0.1:{self.port}"
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self.token = ""

    def _make_token(self) -> str:
        """An admin token in the daemon's database (the API needs one).

        The token commands never create a database: it is made first, as the
        daemon does on its first start.
        """
        if not self.db.exists():
            from astpresence.store.sqlite import SqliteStore

            async def create() -> None:
                store = SqliteStore(self.db)
                await store.open()
                await store.close()

            asyncio.run(create())
        made = subprocess.run(
            [sys.executable, "-m", "astpresence", "token", "create", "--role", "admin",
             "--label", "integration tests", "--db", str(self.db)],
            capture_output=True, text=True, timeout=30, env=clean_env(), stdin=subprocess.DEVNULL)
        assert made.returncode == 0, made.stderr
        return made.stdout.strip()

    def start(self) -> None:
        assert self._proc is None, "already started"
        if not self.token:
            self.token = self._make_token()
        args = [
            sys.executable, "-m", "astpresence", "serve",
            "--ami-host", self.it.host, "--ami-port", str(self.it.port),
            "--ami-username", self.it.username,
            "--db", str(self.db), "--listen", f"127.0.0.1:{self.port}",
            "--log-level", "info",
        ]
        if self.config is not None:
            args += ["--config", str(self.config)]
        env = clean_env()
        # the secret through the environment: command lines show in ps
        env["ASTPRESENCE_AMI_SECRET"] = self.it.secret
        # kept open for the daemon's lifetime and closed by stop()
        self._log = open(self.log_path, "ab")  # noqa: SIM115
        self._proc = subprocess.Popen(args, env=env, stdout=self._log, stderr=subprocess.STDOUT,
                                      stdin=subprocess.DEVNULL)

    def stop(self, timeout: float = 15.0) -> int | None:
        """SIGTERM, wait, SIGKILL if it does not stop. Returns the exit code."""
        proc, self._proc = self._proc, None
        code = None
        if proc is not None:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(5)
            code = proc.returncode
        if self._log is not None:
            self._log.close()
            self._log = None
        return code

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def _get_status(self) -> dict[str, Any] | None:
        try:
            req = urllib.request.Request(self.api + "/v1/status",
                                         headers={"Authorization": f"Bearer {self.token}"})
            with urllib.request.urlopen(req, timeout=2) as resp:
                data = json.loads(resp.read())
        except (urllib.error.URLError, OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    async def wait_ready(self, timeout: float = READY_TIMEOUT) -> dict[str, Any]:
        """Poll ``GET /v1/status`` until the AMI link is up and the first
        sync from Asterisk is done."""
        deadline = time.monotonic() + timeout
        status: dict[str, Any] | None = None
        while time.monotonic() < deadline:
            if self._proc is not None and self._proc.poll() is not None:
                raise AssertionError(
                    f"daemon exited with {self._proc.returncode}:\n{self.log_tail()}")
            status = await asyncio.to_thread(self._get_status)
            if status and status.get("ami", {}).get("connected") and status.get("synced"):
                return status
            await asyncio.sleep(0.25)
        raise AssertionError(
            f"daemon not ready within {timeout:g} s (last status {status}):\n{self.log_tail()}")

    async def cli(self, *args: str) -> CliResult:
        cmd = [sys.executable, "-m", "astpresence", "--api", self.api, *args]
        env = {**clean_env(), "ASTPRESENCE_TOKEN": self.token}
        proc = await asyncio.to_thread(
            subprocess.run, cmd, capture_output=True, text=True, timeout=30, env=env,
            stdin=subprocess.DEVNULL)
        return CliResult(proc.returncode, proc.stdout, proc.stderr)

    async def get(self, user: str) -> dict[str, Any]:
        data = (await self.cli("get", user, "--json")).json()
        assert isinstance(data, dict)
        return data


@pytest.fixture
def daemon_factory(it: ITConfig, tmp_path: Path) -> Iterator[Callable[..., Daemon]]:
    """``make(db=None, config=IT_CONFIG)`` -> a started :class:`Daemon`.

    Every daemon made is stopped at the end of the test; its log is printed
    if the test failed (pytest shows captured output of failed tests).
    """
    made: list[Daemon] = []

    def make(db: Path | None = None, config: str | None = IT_CONFIG) -> Daemon:
        n = len(made) + 1
        cfg_path = None
        if config is not None:
            cfg_path = tmp_path / f"astpresence-{n}.toml"
            cfg_path.write_text(config, encoding="utf-8")
        daemon = Daemon(it, db or tmp_path / "astpresence.db", cfg_path,
                        tmp_path / f"daemon-{n}.log")
        made.append(daemon)
        daemon.start()
        return daemon

    yield make
    for daemon in made:
        daemon.stop()
        print(f"--- daemon log {daemon.log_path.name} ---\n{daemon.log_tail(80)}")


@pytest.fixture
async def ami(it: ITConfig) -> AsyncIterator[Any]:
    """A logged-in AMI client for the test's own reads and writes."""
    from astpresence.ami.client import AMIClient

    client = AMIClient(it.host, it.port, it.username, it.secret, action_timeout=20.0)
    await client.connect()
    try:
        yield client
    finally:
        await client.close()
