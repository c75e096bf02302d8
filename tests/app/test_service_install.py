"""An install a PBX admin can trust: the kit and the unit in the wheel, systemd's
notification protocol against a real datagram socket, journald-friendly logs."""

from __future__ import annotations

import asyncio
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import zipfile
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from astpresence.app import kit
from astpresence.app.config import load_config
from astpresence.app.settings import ConfigError, default_db_path
from astpresence.app.systemd import JournalFormatter, Notifier, logs_to_journal
from tests.support.e2e import seed
from tests.support.fakeami import FakeAsterisk
from tests.support.processes import free_port, wait_up
from tests.support.processes import clean_env

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.timeout(120)


# -- the package --------------------------------------------------------------


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A wheel built from a copy of the tree (the build writes next to its sources)."""
    src = tmp_path_factory.mktemp("src") / "astpresence"
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(
        ".git", ".venv", "build", "*.egg-info", "__pycache__", ".*_cache", "tests"))
    out = tmp_path_factory.mktemp("wheel")
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", str(out), str(src)], capture_output=True, text=True, timeout=300,
        stdin=subprocess.DEVNULL)
    assert built.returncode == 0, built.stderr[-2000:]
    (found,) = out.glob("astpresence-*.whl")
    return found


def test_the_wheel_carries_the_kit_the_unit_and_the_board(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    for name in ("astpresence/app/kit/extensions_astpresence.conf",
                 "astpresence/app/kit/manager_astpresence.conf",
                 "astpresence/app/kit/astpresence.service",
                 "astpresence/web/static/index.html", "astpresence/web/static/app.js",
                 "astpresence/py.typed"):
        assert name in names, name


def test_an_installed_wheel_prints_the_repositorys_kit(wheel: Path, tmp_path: Path) -> None:
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    env = {**clean_env(), "PYTHONPATH": str(site)}

    def run(*args: str) -> str:
        done = subprocess.run([sys.executable, *args], capture_output=True, text=True,
                              cwd=tmp_path, env=env, timeout=60, stdin=subprocess.DEVNULL)
        assert done.returncode == 0, done.stderr
        return done.stdout

    # the package that runs is the unpacked wheel, not the repository
    assert run("-c", "import astpresence; print(astpresence.__file__)").startswith(str(site))
    kit_dir = ROOT / "astpresence" / "app" / "kit"
    assert run("-m", "astpresence", "dialplan", "kit") == (
        kit_dir / "extensions_astpresence.conf").read_text(encoding="utf-8")
    assert run("-m", "astpresence", "dialplan", "kit", "--manager") == (
        kit_dir / "manager_astpresence.conf").read_text(encoding="utf-8")
    unit = run("-m", "astpresence", "service", "unit", "--exec", "/srv/x/astpresence")
    assert "ExecStart=/srv/x/astpresence serve" in unit and "Type=notify" in unit


def test_writing_the_kit_never_clobbers_an_edited_file(tmp_path: Path) -> None:
    first = kit.write_kit(tmp_path)
    assert [w.action for w in first] == ["written", "written"]
    assert [w.action for w in kit.write_kit(tmp_path)] == ["unchanged", "unchanged"]
    manager = tmp_path / "manager_astpresence.conf"
    manager.write_text(manager.read_text() + "secret = mine\n")
    edited = manager.read_text()
    with pytest.raises(kit.KitConflict, match="manager_astpresence.conf changed there"):
        kit.write_kit(tmp_path)
    assert manager.read_text() == edited  # nothing written
    forced = kit.write_kit(tmp_path, force=True, now=datetime(2026, 12, 7, 4, tzinfo=UTC))
    assert forced[1].action == "replaced (backup: manager_astpresence.conf.20261207040000.bak)"
    assert (tmp_path / "manager_astpresence.conf.20261207040000.bak").read_text() == edited
    assert manager.read_text() == kit.text("manager_astpresence.conf")


# -- the unit -------------------------------------------------------------------


def test_the_unit_raises_the_open_files_limit() -> None:
    limit = re.search(r"^LimitNOFILE=(\d+)$", kit.text(kit.UNIT_FILE), re.M)
    assert limit and int(limit.group(1)) >= 65_536


@pytest.mark.skipif(shutil.which("systemd-analyze") is None,
                    reason="systemd-analyze is not installed (Debian package systemd)")
def test_systemd_analyze_verifies_the_unit_and_rates_it_ok(tmp_path: Path) -> None:
    unit = tmp_path / "astpresence.service"
    unit.write_text(kit.unit(sys.executable), encoding="utf-8")  # an executable that exists
    verify = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True,
                            text=True, timeout=60)
    assert verify.returncode == 0 and not verify.stderr.strip(), verify.stderr
    security = subprocess.run(["systemd-analyze", "security", "--offline=yes", str(unit)],
                              capture_output=True, text=True, timeout=60)
    found = re.search(r"Overall exposure level for astpresence\.service: ([\d.]+) (\w+)",
                      security.stdout)
    assert found, security.stdout[-500:] + security.stderr
    print(f"systemd-analyze security: {found.group(1)} {found.group(2)}")
    assert float(found.group(1)) <= 2.0 and found.group(2) in ("OK", "SAFE")


# -- readiness and the watchdog -------------------------------------------------


class NotifySocket:
    """What systemd listens on: an AF_UNIX datagram socket; keeps every message with
    the time it arrived (read as it arrives, while the test's loop is free)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.setblocking(False)
        self.got: list[tuple[float, str]] = []
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(self.sock.fileno(), self.drain)

    def drain(self) -> list[tuple[float, str]]:
        while True:
            try:
                self.got.append((time.monotonic(), self.sock.recv(4096).decode()))
            except BlockingIOError:
                return self.got

    def first(self, text: str) -> float | None:
        return next((t for t, m in self.drain() if text in m.split("\n")), None)

    async def wait_for(self, text: str, timeout: float = 10) -> float:
        deadline = time.monotonic() + timeout
        while (at := self.first(text)) is None:
            assert time.monotonic() < deadline, f"no {text!r} within {timeout} s: {self.got}"
            await asyncio.sleep(0.02)
        return at

    def close(self) -> None:
        self._loop.remove_reader(self.sock.fileno())
        self.sock.close()


@pytest.fixture
async def notify(tmp_path: Path) -> AsyncIterator[NotifySocket]:
    sock = NotifySocket(tmp_path / "notify")
    yield sock
    sock.close()


async def test_ready_only_after_the_sync_then_watchdog_then_stopping(
        notify: NotifySocket, tmp_path: Path) -> None:
    """Asterisk is not there at first: STATUS says what the daemon waits for and no
    READY comes; once Asterisk answers and the sync is done, READY=1."""
    fake = FakeAsterisk()
    seed(fake)
    ami_port = free_port()
    url = f"http://127.0.0.1:{free_port()}"
    env = clean_env(ASTPRESENCE_AMI_PORT=str(ami_port), ASTPRESENCE_AMI_SECRET=fake.secret,
                    ASTPRESENCE_DB=str(tmp_path / "p.db"), NOTIFY_SOCKET=str(notify.path),
                    WATCHDOG_USEC="300000")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "astpresence", "serve", "--listen", url.removeprefix("http://"),
        env=env, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
        stdin=asyncio.subprocess.DEVNULL)
    try:
        await wait_up(url)
        await notify.wait_for("WATCHDOG=1")
        status = [m for _, m in notify.drain() if m.startswith("STATUS=")]
        assert status and "waiting for Asterisk: asterisk" in status[-1]
        fake.port = ami_port  # Asterisk comes up
        await fake.start()
        ready = await notify.wait_for("READY=1", timeout=20)
        assert fake.logins >= 1
        assert notify.first("READY=1") == ready  # once
        await asyncio.sleep(1.0)  # watch the pings for a while
        pings = [t for t, m in notify.drain() if m == "WATCHDOG=1"]
        gaps = [b - a for a, b in zip(pings, pings[1:])]
        assert len(pings) >= 6 and max(gaps) < 0.3, gaps  # every 0.15 s
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 20) == 0
        assert notify.first("STOPPING=1") is not None
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        await fake.stop()


async def test_a_blocked_event_loop_stops_the_watchdog(notify: NotifySocket) -> None:
    notifier = Notifier({"NOTIFY_SOCKET": str(notify.path), "WATCHDOG_USEC": "100000"})
    stop = asyncio.Event()
    task = asyncio.create_task(notifier.keep_alive(stop))
    await notify.wait_for("WATCHDOG=1")
    time.sleep(0.6)  # the loop is stuck: no ping can go out meanwhile  # noqa: ASYNC251
    await asyncio.sleep(0.2)
    stop.set()
    await task
    notifier.close()
    pings = [t for t, m in notify.drain() if m == "WATCHDOG=1"]
    gaps = [b - a for a, b in zip(pings, pings[1:])]
    assert max(gaps) >= 0.55 and sorted(gaps)[len(gaps) // 2] < 0.1, gaps


def test_outside_systemd_nothing_is_sent() -> None:
    notifier = Notifier({})
    assert not notifier.enabled and notifier.watchdog is None
    notifier.send("READY=1")  # no socket: a no-op
    assert Notifier({"WATCHDOG_USEC": "5000000", "WATCHDOG_PID": "1"}).watchdog is None


# -- where things are, under systemd -----------------------------------------------


def test_state_and_config_directories_of_the_unit(tmp_path: Path) -> None:
    assert default_db_path({"STATE_DIRECTORY": "/var/lib/astpresence"}) == \
        "/var/lib/astpresence/astpresence.db"
    (tmp_path / "astpresence.toml").write_text('[api]\nlisten = "127.0.0.1:8999"\n')
    cfg = load_config(env={"CONFIGURATION_DIRECTORY": str(tmp_path)})
    assert cfg.listen_port == 8999
    # no config there: the defaults, no error
    assert load_config(env={"CONFIGURATION_DIRECTORY": str(tmp_path / "none")}).listen_port \
        == 8780


# -- logs ------------------------------------------------------------------------


def test_journal_lines_carry_a_priority_and_no_time() -> None:
    fmt = JournalFormatter()
    info = logging.LogRecord("astpresence.x", logging.INFO, "f", 1, "hello %s", ("there",),
                             None)
    assert fmt.format(info) == "<6>astpresence.x: hello there"
    try:
        raise ValueError("boom")
    except ValueError:
        err = logging.LogRecord("astpresence.x", logging.ERROR, "f", 1, "failed", None,
                                sys.exc_info())
    lines = fmt.format(err).split("\n")
    assert lines[0] == "<3>astpresence.x: failed" and len(lines) > 2
    assert all(line.startswith("<3>") for line in lines)


async def test_the_daemon_logs_for_journald_when_told(fake_ami: FakeAsterisk,
                                                      tmp_path: Path) -> None:
    seed(fake_ami)
    log = tmp_path / "journal"
    url = f"http://127.0.0.1:{free_port()}"
    with open(log, "wb") as out:
        st = os.fstat(out.fileno())
        env = clean_env(ASTPRESENCE_AMI_PORT=str(fake_ami.port),
                        ASTPRESENCE_AMI_SECRET=fake_ami.secret,
                        ASTPRESENCE_DB=str(tmp_path / "p.db"),
                        JOURNAL_STREAM=f"{st.st_dev}:{st.st_ino}")
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "astpresence", "serve", "--listen",
            url.removeprefix("http://"), env=env, stdout=out, stderr=out,
            stdin=asyncio.subprocess.DEVNULL)
    await wait_up(url)
    proc.send_signal(signal.SIGTERM)
    assert await asyncio.wait_for(proc.wait(), 20) == 0
    lines = log.read_text().splitlines()
    assert lines and all(re.match(r"<[2-7]>astpresence\.", line) for line in lines), lines[:5]
    assert not any(re.search(r"\d{4}-\d\d-\d\d \d\d:\d\d", line) for line in lines)
    assert not logs_to_journal({"JOURNAL_STREAM": "1:2"})  # not our stderr


def test_an_unreadable_config_is_said_plainly(tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """What the service's user sees for a config it may not read (root reads every
    file, so the refusal is made here)."""
    cfg = tmp_path / "astpresence.toml"
    cfg.write_text("[api]\n")

    def refuse(self: Path, *args: object, **kwargs: object) -> str:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(Path, "read_text", refuse)
    with pytest.raises(ConfigError, match="permission denied for user .*chmod 0644"):
        load_config(cfg)
