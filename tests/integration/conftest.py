"""Fixtures for the tests against a real Asterisk (see README.md here).

Nothing in this file touches the network unless ``ASTPRESENCE_IT_AMI`` (and its
user and secret) name an Asterisk: every test here is skipped with one reason
before any fixture runs. A second server (``ASTPRESENCE_IT_B_*``) is needed only
by the several-server and HA tests, which skip with their own reason without it.
"""

from __future__ import annotations

import asyncio
import json
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, TypeVar

import pytest

from astpresence.app.config import node_secret_var
from tests.support.processes import clean_env, free_port

ROOT = Path(__file__).resolve().parents[2]
PREFIX = "ASTPRESENCE_IT_"
SKIP_REASON = (
    "no real Asterisk given: set ASTPRESENCE_IT_AMI=host:port, ASTPRESENCE_IT_USERNAME "
    "and ASTPRESENCE_IT_SECRET (tests/integration/README.md)"
)
SKIP_REASON_B = (
    "no second Asterisk given: set ASTPRESENCE_IT_B_AMI (and _B_USERNAME, _B_SECRET, "
    "_B_CTL) for the several-server tests"
)

#: How long the daemon may take from start to "AMI connected and synced".
READY_TIMEOUT = 30.0
#: How long a change may take to travel Asterisk -> daemon -> Asterisk.
SETTLE_TIMEOUT = 15.0

#: A device the tests drive as "the phone" of user 2000 (besides PJSIP/2000, which
#: never registers), and a Local channel device for calls placed with Originate.
IT_DEVICE = "Custom:astpresence-it-2000"
IT_LOCAL_DEVICE = "Local/phone-2000@it-phones"

#: The daemon's config for most tests: the BLF mirror and queue pause on, the
#: offline overlay off (test phones are not registered and would look offline),
#: and user 2000 with the extra devices above.
IT_RULES = """
[rules]
mirror = true
queue_pause = true
offline = false
"""
IT_USERS = f"""
[[users]]
id = "2000"
devices = ["PJSIP/2000", "{IT_DEVICE}", "{IT_LOCAL_DEVICE}"]
"""
IT_CONFIG = IT_RULES + IT_USERS

T = TypeVar("T")


@dataclass(frozen=True)
class Server:
    """One Asterisk under test, from ``ASTPRESENCE_IT_[B_]*`` variables."""

    name: str
    host: str
    port: int
    username: str
    secret: str = field(repr=False)
    #: a command that runs one Asterisk CLI command given as its last argument
    #: (``asterisk -rx``); without it the AMI ``Command`` action is used
    ctl: tuple[str, ...] = ()
    #: a file the server's dialplan #includes, which the tests may overwrite
    dialplan: Path | None = None
    #: a command that starts the server again after ``core stop now``
    start: tuple[str, ...] = ()
    #: the server's manager.conf, which a test may extend for a while (a user
    #: with fewer permissions) and restores
    manager_conf: Path | None = None
    sip: tuple[str, int] | None = None
    http: str = ""
    ari_user: str = ""
    ari_password: str = field(default="", repr=False)

    @property
    def ami(self) -> str:
        return f"{self.host}:{self.port}"


def _address(value: str, what: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit():
        pytest.fail(f"{what} must be HOST:PORT, got {value!r}")
    return host.strip("[]"), int(port)


def server_from_env(name: str, prefix: str, env: dict[str, str] | None = None) -> Server | None:
    """The server the ``prefix``ed variables name, or None without ``<prefix>AMI``."""
    env = dict(os.environ) if env is None else env
    where = env.get(prefix + "AMI", "")
    if not where:
        return None
    if not (env.get(prefix + "USERNAME") and env.get(prefix + "SECRET")):
        pytest.fail(f"{prefix}AMI is set: set {prefix}USERNAME and {prefix}SECRET too")
    host, port = _address(where, prefix + "AMI")
    sip = env.get(prefix + "SIP", "")
    http = env.get(prefix + "HTTP", "")
    return Server(
        name=name, host=host, port=port, username=env[prefix + "USERNAME"],
        secret=env[prefix + "SECRET"],
        ctl=tuple(shlex.split(env.get(prefix + "CTL", ""))),
        dialplan=Path(env[prefix + "DIALPLAN"]) if env.get(prefix + "DIALPLAN") else None,
        start=tuple(shlex.split(env.get(prefix + "START", ""))),
        manager_conf=Path(env[prefix + "MANAGER_CONF"]) if env.get(prefix + "MANAGER_CONF") else None,
        sip=_address(sip, prefix + "SIP") if sip else None,
        http=(http if http.startswith("http") else f"http://{http}") if http else "",
        ari_user=env.get(prefix + "ARI_USER", ""),
        ari_password=env.get(prefix + "ARI_PASSWORD", ""),
    )


def integration_reason() -> str | None:
    """Why the integration tests cannot run here (None: they can)."""
    return None if os.environ.get(PREFIX + "AMI") else SKIP_REASON


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Every test of this folder is an integration test, skipped with one reason
    when no Asterisk is given."""
    reason = integration_reason()
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.integration)
            if reason:
                item.add_marker(pytest.mark.skip(reason=reason))


@pytest.fixture(scope="session")
def it() -> Server:
    server = server_from_env("east", PREFIX)
    if server is None:
        pytest.skip(SKIP_REASON)
    return server


@pytest.fixture(scope="session")
def it_b(it: Server) -> Server:
    server = server_from_env("west", PREFIX + "B_")
    if server is None:
        pytest.skip(SKIP_REASON_B)
    return server


async def eventually(check: Callable[[], Awaitable[T | None]], what: str,
                     timeout: float = SETTLE_TIMEOUT, interval: float = 0.2) -> T:
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


def run_coroutine_in_thread(make: Callable[[], Awaitable[T]]) -> T:
    """Run a coroutine to the end on a loop of its own, from sync code that may
    itself be called inside a running loop (an async test)."""
    out: list[T] = []
    errors: list[BaseException] = []

    def work() -> None:
        async def main() -> T:
            return await make()
        try:
            out.append(asyncio.run(main()))
        except BaseException as exc:  # handed to the caller
            errors.append(exc)

    thread = threading.Thread(target=work, name="it-coroutine")
    thread.start()
    thread.join()
    if errors:
        raise errors[0]
    return out[0]


@dataclass
class CliResult:
    returncode: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        assert self.returncode == 0, f"CLI failed ({self.returncode}): {self.stderr.strip()}"
        return json.loads(self.stdout)


def asterisk_section(servers: Sequence[Server]) -> str:
    """``[[asterisk]]`` entries for several servers (secrets through the environment)."""
    return "".join(
        f'\n[[asterisk]]\nname = "{s.name}"\nhost = "{s.host}"\nport = {s.port}\n'
        f'username = "{s.username}"\nping_interval = 1\n'
        for s in servers)


class Daemon:
    """``python -m astpresence serve`` in a subprocess, plus its CLI.

    One server: the ``--ami-*`` flags; several: ``[[asterisk]]`` entries. The
    secrets go through the environment, never the command line (ps shows it).
    """

    def __init__(self, servers: Sequence[Server], db: Path, config: Path, log: Path,
                 *, db_url: str = "", token: str = "") -> None:
        self.servers = list(servers)
        self.db = db
        self.db_url = db_url
        self.config = config
        self.log_path = log
        self.port = free_port()
        self.api = f"http://127.0.0.1:{self.port}"
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self.token = token

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def env(self) -> dict[str, str]:
        env = clean_env()
        if len(self.servers) == 1:
            env["ASTPRESENCE_AMI_SECRET"] = self.servers[0].secret
        else:
            for s in self.servers:
                env[node_secret_var(s.name)] = s.secret
        if self.db_url:
            env["ASTPRESENCE_DB_URL"] = self.db_url
        return env

    def _make_token(self) -> str:
        """An admin token in the daemon's database (the API needs one).

        The token commands never create a SQLite database: it is made first, as
        the daemon does on its first start (PostgreSQL: the command migrates).
        """
        if not self.db_url and not self.db.exists():
            from astpresence.store.sqlite import SqliteStore

            async def create() -> None:
                store = SqliteStore(self.db)
                await store.open()
                await store.close()

            run_coroutine_in_thread(create)
        args = [sys.executable, "-m", "astpresence", "token", "create", "--role", "admin",
                "--label", "integration tests", "--config", str(self.config)]
        if not self.db_url:
            args += ["--db", str(self.db)]
        made = subprocess.run(args, capture_output=True, text=True, timeout=30, env=self.env(),
                              stdin=subprocess.DEVNULL)
        assert made.returncode == 0, made.stderr
        return made.stdout.strip()

    def start(self) -> None:
        assert self._proc is None, "already started"
        if not self.token:
            self.token = self._make_token()
        args = [sys.executable, "-m", "astpresence", "serve", "--config", str(self.config),
                "--listen", f"127.0.0.1:{self.port}", "--log-level", "info"]
        if not self.db_url:
            args += ["--db", str(self.db)]
        if len(self.servers) == 1:
            s = self.servers[0]
            args += ["--ami-host", s.host, "--ami-port", str(s.port), "--ami-username", s.username]
        # kept open for the daemon's lifetime and closed by stop()
        self._log = open(self.log_path, "ab")  # noqa: SIM115
        self._proc = subprocess.Popen(args, env=self.env(), stdout=self._log,
                                      stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

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

    def kill(self) -> None:
        """kill -9, as a crash would."""
        assert self._proc is not None
        self._proc.kill()
        self._proc.wait(10)
        self.stop()

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:]) or "(no log)"

    def _get(self, path: str) -> Any:
        try:
            req = urllib.request.Request(self.api + path,
                                         headers={"Authorization": f"Bearer {self.token}"})
            with urllib.request.urlopen(req, timeout=3) as resp:
                return json.loads(resp.read())
        except (urllib.error.URLError, OSError, ValueError):
            return None

    async def status(self) -> dict[str, Any] | None:
        data = await asyncio.to_thread(self._get, "/v1/status")
        return data if isinstance(data, dict) else None

    async def wait_ready(self, timeout: float = READY_TIMEOUT,
                         ready: Callable[[dict[str, Any]], bool] | None = None) -> dict[str, Any]:
        """Poll ``GET /v1/status`` until every AMI link is up and the first sync
        from Asterisk is done (or ``ready`` says so)."""
        deadline = time.monotonic() + timeout
        status: dict[str, Any] | None = None
        check = ready or synced_on_every_server
        while time.monotonic() < deadline:
            if self._proc is not None and self._proc.poll() is not None:
                raise AssertionError(
                    f"daemon exited with {self._proc.returncode}:\n{self.log_tail()}")
            status = await self.status()
            if status and check(status):
                return status
            await asyncio.sleep(0.2)
        raise AssertionError(
            f"daemon not ready within {timeout:g} s (last status {status}):\n{self.log_tail()}")

    async def cli(self, *args: str, api: bool = True) -> CliResult:
        cmd = [sys.executable, "-m", "astpresence", *(("--api", self.api) if api else ()), *args]
        env = {**self.env(), "ASTPRESENCE_TOKEN": self.token}
        proc = await asyncio.to_thread(
            subprocess.run, cmd, capture_output=True, text=True, timeout=60, env=env,
            stdin=subprocess.DEVNULL)
        return CliResult(proc.returncode, proc.stdout, proc.stderr)

    async def get(self, user: str) -> dict[str, Any]:
        data = (await self.cli("get", user, "--json")).json()
        assert isinstance(data, dict)
        return data


def synced_on_every_server(status: dict[str, Any]) -> bool:
    links = status.get("asterisk") or [status.get("ami", {})]
    return bool(status.get("synced")) and all(link.get("connected") for link in links)


DaemonFactory = Callable[..., Daemon]


@pytest.fixture
def daemon_factory(it: Server, tmp_path: Path) -> Iterator[DaemonFactory]:
    """``make(config=IT_CONFIG, servers=[it], db=None, db_url="", token="")`` ->
    a started :class:`Daemon`.

    Every daemon made is stopped at the end of the test; its log is printed
    if the test failed (pytest shows captured output of failed tests).
    """
    made: list[Daemon] = []

    def make(config: str = IT_CONFIG, *, servers: Sequence[Server] | None = None,
             db: Path | None = None, db_url: str = "", token: str = "") -> Daemon:
        n = len(made) + 1
        servers = list(servers or [it])
        text = config + (asterisk_section(servers) if len(servers) > 1 else "")
        cfg_path = tmp_path / f"astpresence-{n}.toml"
        cfg_path.write_text(text, encoding="utf-8")
        daemon = Daemon(servers, db or tmp_path / "astpresence.db", cfg_path,
                        tmp_path / f"daemon-{n}.log", db_url=db_url, token=token)
        made.append(daemon)
        daemon.start()
        return daemon

    yield make
    for daemon in made:
        daemon.stop()
        print(f"--- daemon log {daemon.log_path.name} ---\n{daemon.log_tail(80)}")


async def connect(server: Server) -> Any:
    from astpresence.asterisk.ami.client import AMIClient

    client = AMIClient(server.host, server.port, server.username, server.secret,
                       action_timeout=20.0)
    await client.connect()
    return client


@pytest.fixture
async def ami(it: Server) -> AsyncIterator[Any]:
    """A logged-in AMI client for the test's own reads and writes."""
    client = await connect(it)
    try:
        yield client
    finally:
        await client.close()


@pytest.fixture
async def ami_b(it_b: Server) -> AsyncIterator[Any]:
    client = await connect(it_b)
    try:
        yield client
    finally:
        await client.close()


async def asterisk_cli(server: Server, command: str, ami: Any | None = None) -> str:
    """Run one Asterisk CLI command: through ``ctl`` when given, else AMI ``Command``."""
    if server.ctl:
        done = await asyncio.to_thread(
            subprocess.run, [*server.ctl, command], capture_output=True, text=True, timeout=30,
            stdin=subprocess.DEVNULL)
        assert done.returncode == 0, f"{command!r} failed: {done.stderr.strip()}"
        return done.stdout
    client = ami or await connect(server)
    try:
        resp = await client.send_action("Command", {"Command": command})
    finally:
        if ami is None:
            await client.close()
    # Asterisk 14+ sends the output as one "Output:" header per line
    return "\n".join(v for k, v in resp.headers if k.lower() == "output")


#: The dialplan the tests load: the kit as shipped, then the tests' own contexts.
KIT = ROOT / "astpresence" / "app" / "kit" / "extensions_astpresence.conf"
TEST_DIALPLAN = Path(__file__).parent / "extensions_it.conf"


def load_dialplan(server: Server) -> None:
    """Write the kit and the tests' contexts into the server's included file and
    reload the dialplan."""
    assert server.dialplan is not None
    # The file is #included at the end of the lab's [internal]: its first line is
    # still part of that context (SIP calls from the watcher endpoint land there).
    text = ("include => it-sip\n" + KIT.read_text(encoding="utf-8") + "\n"
            + TEST_DIALPLAN.read_text(encoding="utf-8"))
    server.dialplan.write_text(text, encoding="utf-8")
    out = run_coroutine_in_thread(lambda: asterisk_cli(server, "dialplan reload"))
    assert "reloaded" in out.lower() or not out, out


@pytest.fixture(scope="session")
def dialplan(it: Server) -> Server:
    """The kit and the tests' contexts loaded on the first server."""
    if it.dialplan is None:
        pytest.skip("set ASTPRESENCE_IT_DIALPLAN to a file the server's dialplan #includes "
                    "(the tests write the kit and their own contexts there)")
    load_dialplan(it)
    return it


@pytest.fixture(scope="session")
def dialplan_b(it_b: Server) -> Server:
    if it_b.dialplan is None:
        pytest.skip("set ASTPRESENCE_IT_B_DIALPLAN for the second server's dialplan")
    load_dialplan(it_b)
    return it_b
