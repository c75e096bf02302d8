"""A flood of slow connections, no token needed, against the real daemon with the
common open-files limit of 1,024: the API keeps answering other clients, the AMI
link stays up, slow connections are dropped in seconds, and the log says it once."""

from __future__ import annotations

import asyncio
import logging
import resource
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator
from typing import Any
from pathlib import Path

import aiohttp
import pytest

from astpresence.web.admission import RESERVED_FDS, Admission, OncePerInterval
from tests.support.e2e import seed
from tests.support.fakeami import FakeAsterisk
from tests.support.processes import free_port, create_token, wait_up
from tests.support.processes import clean_env

pytestmark = pytest.mark.timeout(120)

FLOOD = 1100
IDLE = 3  # [api] idle_timeout of the daemon under test
SLOW_HEAD = b"GET /v1/status HTTP/1.1\r\nHost: x\r\nX-Slow: "


def _nofile_1024() -> None:  # in the daemon's process, before exec
    resource.setrlimit(resource.RLIMIT_NOFILE, (1024, 1024))


@pytest.fixture
async def flooded(fake_ami: FakeAsterisk, tmp_path: Path
                  ) -> AsyncIterator[tuple[str, str, Path]]:
    seed(fake_ami)
    db = tmp_path / "p.db"
    config = tmp_path / "astpresence.toml"
    config.write_text(f"[api]\nidle_timeout = {IDLE}\n", encoding="utf-8")
    env = clean_env(ASTPRESENCE_AMI_PORT=str(fake_ami.port),
                    ASTPRESENCE_AMI_SECRET=fake_ami.secret, ASTPRESENCE_DB=str(db))
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = tmp_path / "daemon.log"
    with open(log, "wb") as out:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "astpresence", "serve", "--listen", f"127.0.0.1:{port}",
            "--config", str(config), env=env, stdout=out, stderr=out,
            stdin=asyncio.subprocess.DEVNULL, preexec_fn=_nofile_1024)
    try:
        await wait_up(url)
        yield url, await create_token(db, env), log
    finally:
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 20) == 0, log.read_text()[-3000:]


async def _slow_client(port: int, opened: list[socket.socket],
                       closed_after: list[float]) -> None:
    """Opens, sends half a request head, then a byte a second, until the daemon hangs up."""
    loop = asyncio.get_running_loop()
    sock = socket.socket()
    sock.setblocking(False)
    try:
        await loop.sock_connect(sock, ("127.0.0.1", port))
        opened.append(sock)
        started = time.monotonic()
        await loop.sock_sendall(sock, SLOW_HEAD)
        for _ in range(IDLE * 4):
            try:
                async with asyncio.timeout(1):
                    if await loop.sock_recv(sock, 1024) == b"":
                        closed_after.append(time.monotonic() - started)
                        return
            except TimeoutError:
                await loop.sock_sendall(sock, b"x")
    except (ConnectionError, OSError):
        closed_after.append(0.0)  # refused at once
    finally:
        sock.close()


async def test_a_slow_connection_flood_leaves_the_api_and_ami_up(
        flooded: tuple[str, str, Path]) -> None:
    url, token, log = flooded
    port = int(url.rsplit(":", 1)[1])
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < FLOOD + 200:
        pytest.skip(f"this test process may open {hard} files; the flood needs {FLOOD + 200}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, FLOOD + 200), hard))
    opened: list[socket.socket] = []
    closed_after: list[float] = []
    flood = [asyncio.create_task(_slow_client(port, opened, closed_after))
             for _ in range(FLOOD)]
    await asyncio.sleep(0)
    # Meanwhile, another client (from another address) uses the API.
    took: list[float] = []
    async with aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(local_addr=("127.0.0.2", 0), force_close=True),
            headers={"Authorization": f"Bearer {token}"}) as http:
        for _ in range(60):
            started = time.monotonic()
            async with http.get(f"{url}/v1/status") as resp:
                assert resp.status == 200
                status = await resp.json()
            took.append(time.monotonic() - started)
            await asyncio.sleep(0.05)
        assert status["ami"]["connected"] and status["synced"]
    await asyncio.gather(*flood)
    took.sort()
    print(f"API during the flood: p50 {took[len(took) // 2] * 1000:.1f} ms, "
          f"p99 {took[int(len(took) * 0.99)] * 1000:.1f} ms; "
          f"{len(closed_after)} flood connections ended")
    # Every slow connection was dropped: refused at once, or closed after the idle timeout.
    assert len(closed_after) == FLOOD
    assert max(closed_after) < IDLE + 3
    text = log.read_text(encoding="utf-8", errors="replace")
    assert "Traceback" not in text
    assert text.count("refused") <= 3, text[-2000:]
    assert "out of system resource" not in text


def test_admission_caps_in_all_and_per_address() -> None:
    now = [0.0]
    gate = Admission(10, 4, open_files=1024, clock=lambda: now[0])
    assert [gate.admit("a") for _ in range(5)] == [True] * 4 + [False]
    assert all(gate.admit(f"b{i}") for i in range(6))
    assert not gate.admit("c")  # 10 open: the cap in all
    gate.release("a")
    assert gate.admit("c") and gate.open == 10 and gate.refused == 2
    # descriptors are kept back (AMI, the database, one accept burst)
    assert Admission(4096, 4096, open_files=1024).limit == 1024 - RESERVED_FDS


def test_a_flood_of_log_records_is_one_a_minute() -> None:
    now = [0.0]
    keep = OncePerInterval("socket.accept() out of", clock=lambda: now[0])

    def record(msg: str) -> bool:
        return keep.filter(logging.LogRecord("asyncio", 40, "x", 1, msg, None, None))

    assert record("socket.accept() out of system resource")
    assert not any(record("socket.accept() out of system resource") for _ in range(1000))
    assert record("something else")
    now[0] = 61.0
    rec = logging.LogRecord("asyncio", 40, "x", 1, "socket.accept() out of system resource",
                            None, None)
    assert keep.filter(rec) and "1000 more" in str(rec.msg)



async def test_every_connection_is_counted_back_when_it_ends(daemon: Any) -> None:
    """Plain requests, keep-alive and WebSockets: the admission count returns to what
    it was (a connection whose end were missed would hold a place for ever)."""
    gate = daemon.daemon.admission
    before = gate.open
    async with aiohttp.ClientSession(headers=daemon.auth) as http:
        for _ in range(5):
            async with http.get(daemon.url + "/v1/status") as resp:
                assert resp.status == 200
        sockets = [await http.ws_connect(daemon.url + "/v1/events") for _ in range(3)]
        for ws in sockets:
            await ws.send_json({"token": daemon.token})
            assert (await ws.receive_json())["type"] == "hello"
        assert gate.open >= before + 3
        for ws in sockets:
            await ws.close()
    deadline = time.monotonic() + 5
    while gate.open != before:
        assert time.monotonic() < deadline, (gate.open, before)
        await asyncio.sleep(0.02)
