"""The daemon under test as a real process: ``python -m astpresence serve``.

A separate process so the daemon does not share an event loop (or a GIL)
with the fake Asterisk and the clients that measure it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import resource
import signal
import socket
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from .tests_import import ROOT


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now (the API refuses port 0)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def raise_fd_limit(wanted: int) -> int:
    """Raise RLIMIT_NOFILE's soft limit towards ``wanted`` (children inherit it)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        soft = target
    return int(soft)


def proc_status_kb(pid: int, key: str) -> int | None:
    """A ``/proc/<pid>/status`` value in kB (VmHWM = peak RSS, VmRSS = now)."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def proc_cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of a process so far, from /proc/<pid>/stat."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    # Fields after "(comm)": state is index 0, utime 11, stime 12 (man 5 proc).
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ASTPRESENCE_")}
    if os.environ.get("BENCH_EVENT_LOOP"):  # auto (the default), asyncio or uvloop
        env["ASTPRESENCE_EVENT_LOOP"] = os.environ["BENCH_EVENT_LOOP"]
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    return env


@dataclass
class DaemonProcess:
    """``astpresence serve`` against a fake AMI port, with its own SQLite file."""

    ami_port: int
    workdir: Path
    secret: str = "s3cret"
    username: str = "astpresence"
    http_port: int = field(default_factory=free_port)
    proc: asyncio.subprocess.Process | None = None
    started_at: float = 0.0
    token: str | None = None  # an admin API token, created before the start
    db_url: str = ""  # PostgreSQL instead of the SQLite file when set
    env_extra: dict[str, str] = field(default_factory=dict)  # e.g. ASTPRESENCE_HA
    #: More Asterisk servers: with ports here, a config file names ami_port and
    #: these as [[asterisk]] entries n1, n2, ... instead of the --ami-* flags.
    more_ami_ports: tuple[int, ...] = ()
    #: More of the config file (TOML), e.g. "[ami_reads]\nbatch_ms = 4\n".
    config_extra: str = ""

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def log_path(self) -> Path:
        return self.workdir / "daemon.log"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def db(self) -> Path:
        return self.workdir / "astpresence.db"

    async def create_token(self) -> None:
        """``astpresence token create --role admin`` on the daemon's database.

        The token commands never create a database; it is made here first, as
        the daemon would on its first start, so the token exists before the
        daemon starts and a cold start can be timed from its first instant.
        """
        env = self._env()
        if not self.db.exists() and not self.db_url:
            from astpresence.store.sqlite import SqliteStore

            store = SqliteStore(self.db)
            await store.open()
            await store.close()
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "astpresence", "token", "create", "--role", "admin",
            "--label", "bench", "--db", str(self.db), "--json",
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE, env=env, cwd=str(self.workdir),
        )
        out, err = await asyncio.wait_for(proc.communicate(), 60)
        if proc.returncode == 0:
            self.token = json.loads(out)["token"]
        elif b"No such command" in err:
            self.token = None  # a version of the API without tokens
        else:
            raise RuntimeError(f"token create failed ({proc.returncode}): {err.decode()[-500:]}")

    def _env(self) -> dict[str, str]:
        env = clean_env()
        if self.db_url:
            env["ASTPRESENCE_DB_URL"] = self.db_url
        env.update(self.env_extra)
        return env

    def _ami_args(self, env: dict[str, str]) -> list[str]:
        if not self.more_ami_ports and not self.config_extra:
            env["ASTPRESENCE_AMI_SECRET"] = self.secret
            return ["--ami-host", "127.0.0.1", "--ami-port", str(self.ami_port),
                    "--ami-username", self.username]
        path = self.workdir / "astpresence.toml"
        servers = (f'[ami]\nhost = "127.0.0.1"\nport = {self.ami_port}\n'
                   f'username = "{self.username}"\nsecret = "{self.secret}"\n\n'
                   if not self.more_ami_ports else "".join(
                       f'[[asterisk]]\nname = "n{i + 1}"\nhost = "127.0.0.1"\nport = {port}\n'
                       f'username = "{self.username}"\nsecret = "{self.secret}"\n\n'
                       for i, port in enumerate((self.ami_port, *self.more_ami_ports))))
        path.write_text(self.config_extra + "\n" + servers)
        return ["--config", str(path)]

    async def start(self, extra_args: Sequence[str] = ()) -> None:
        env = self._env()
        self.workdir.mkdir(parents=True, exist_ok=True)
        ami = self._ami_args(env)
        if self.token is None:
            await self.create_token()
        log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child
        try:
            self.started_at = time.monotonic()
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "astpresence", "serve", *ami, *extra_args,
                "--db", str(self.db),
                "--listen", f"127.0.0.1:{self.http_port}",
                "--log-level", self.env_extra.get("BENCH_LOG_LEVEL", "warning"),
                stdin=asyncio.subprocess.DEVNULL, stdout=log, stderr=log, env=env,
                cwd=str(self.workdir),
            )
        finally:
            log.close()

    def log_tail(self, lines: int = 20) -> str:
        try:
            text = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join(text[-lines:])

    async def status(self, session: aiohttp.ClientSession) -> dict[str, Any] | None:
        try:
            async with session.get(self.url + "/v1/status", headers=self.headers,
                                   timeout=aiohttp.ClientTimeout(total=5)) as resp:
                if resp.status != 200:
                    return None
                data: dict[str, Any] = await resp.json()
                return data
        except (TimeoutError, aiohttp.ClientError):
            return None

    async def wait_up(self, timeout: float) -> dict[str, Any]:
        """Poll /v1/status until the API answers (a standby answers it too)."""
        deadline = time.monotonic() + timeout
        async with aiohttp.ClientSession() as session:
            while True:
                st = await self.status(session)
                if st is not None:
                    return st
                if time.monotonic() > deadline:
                    raise TimeoutError(f"daemon API not up within {timeout} s:\n"
                                       f"{self.log_tail()}")
                await asyncio.sleep(0.05)

    async def wait_cards(self, timeout: float = 60.0) -> None:
        """Wait until every link has also read its contact cards: the work after a
        sync (a caller ID read per phone) that a measured burst must not share the
        loop and the links with (bench/README.md, scenario 2)."""
        deadline = time.monotonic() + timeout
        async with aiohttp.ClientSession() as session:
            while True:
                st = await self.status(session)
                if st is not None and all(n.get("cards") == "done" for n in st["asterisk"]):
                    return
                if time.monotonic() > deadline:
                    raise TimeoutError(f"contact cards not read within {timeout} s")
                await asyncio.sleep(0.05)

    async def wait_synced(self, timeout: float, poll: float = 0.01) -> tuple[float, dict[str, Any]]:
        """Poll /v1/status until synced; (monotonic time first seen synced, status)."""
        deadline = time.monotonic() + timeout
        async with aiohttp.ClientSession() as session:
            while True:
                if self.proc is not None and self.proc.returncode is not None:
                    raise RuntimeError(f"daemon exited with {self.proc.returncode}:\n"
                                       f"{self.log_tail()}")
                st = await self.status(session)
                if st is not None and st.get("synced") and all(
                        n["state"] == "synced" for n in st.get("asterisk") or [st["ami"]]):
                    return time.monotonic(), st
                if time.monotonic() > deadline:
                    raise TimeoutError(f"daemon not synced within {timeout} s "
                                       f"(status {st}):\n{self.log_tail()}")
                await asyncio.sleep(poll)

    async def profile(self, name: str) -> asyncio.subprocess.Process | None:
        """With BENCH_PYSPY=DIR set, attach ``py-spy record`` to the daemon until stop().

        For finding causes only: py-spy samples the daemon from outside
        (``--nonblocking``), but still takes some CPU from the 2 cores.
        """
        out_dir = os.environ.get("BENCH_PYSPY")
        if not out_dir or self.proc is None:
            return None
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        self._profiler = await asyncio.create_subprocess_exec(
            "py-spy", "record", "--pid", str(self.pid), "--nonblocking", "--rate",
            os.environ.get("BENCH_PYSPY_RATE", "250"),
            "--format", "raw", "--output", str(Path(out_dir) / f"{name}.txt"),
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        await asyncio.sleep(0.5)  # attached
        return self._profiler

    async def stop(self, timeout: float = 20.0) -> int | None:
        profiler = getattr(self, "_profiler", None)
        if profiler is not None and profiler.returncode is None:
            profiler.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(profiler.wait(), 30)
        if self.proc is None or self.proc.returncode is not None:
            return None if self.proc is None else self.proc.returncode
        with contextlib.suppress(ProcessLookupError):
            self.proc.send_signal(signal.SIGTERM)
        try:
            return await asyncio.wait_for(self.proc.wait(), timeout)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
            return await self.proc.wait()
