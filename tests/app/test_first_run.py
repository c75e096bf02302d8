"""A first run as a new user makes it: real processes, real sockets, one-line errors."""

from __future__ import annotations

import asyncio
import signal
import socket
import sys
from pathlib import Path
from typing import AsyncIterator

import pytest
from aiohttp import web

from astpresence.cli.common import _shorten, _table, _width
from astpresence.cli.kit import format_hints
from tests.support.e2e import cli, seed
from tests.support.fakeami import FakeAsterisk
from tests.support.processes import free_port, clean_env, create_token, run, wait_up


async def test_token_commands_never_create_a_database(tmp_path: Path) -> None:
    db = tmp_path / "nowhere.db"
    for args in (["token", "create", "--role", "admin"], ["token", "list"],
                 ["token", "revoke", "deadbeef"]):
        code, out, err = await run(*args, "--db", "nowhere.db", env=clean_env(), cwd=tmp_path)
        assert code == 1 and out == ""
        assert err.strip().startswith(f"Error: no database at {db}:")  # the absolute path
        assert "astpresence serve" in err and "Traceback" not in err
    assert not db.exists()


@pytest.fixture
async def daemon_proc(fake_ami: FakeAsterisk, tmp_path: Path
                      ) -> AsyncIterator[tuple[str, Path, dict[str, str]]]:
    seed(fake_ami)
    db = tmp_path / "state" / "p.db"
    db.parent.mkdir()
    env = clean_env(ASTPRESENCE_AMI_PORT=str(fake_ami.port),
                    ASTPRESENCE_AMI_SECRET=fake_ami.secret, ASTPRESENCE_DB=str(db))
    url = f"http://127.0.0.1:{free_port()}"
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "astpresence", "serve", "--listen", url.removeprefix("http://"),
        env=env, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
        stdin=asyncio.subprocess.DEVNULL)
    try:
        await wait_up(url)
        yield url, db, env
    finally:
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 15) == 0


async def test_daemon_first_then_a_token_from_anywhere(
        daemon_proc: tuple[str, Path, dict[str, str]], tmp_path: Path) -> None:
    url, db, env = daemon_proc
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    code, out, err = await run("token", "create", "--role", "user", "--user", "nobody",
                               env=env, cwd=elsewhere)
    assert code == 0 and out.startswith("astp_")
    assert f"created in {db}" in err
    assert "warning: no user 'nobody' is known yet" in err
    token = await create_token(db, env)
    status = await cli(url, "status", "--json", token=token)
    assert status.code == 0 and '"version"' in status.out


async def test_a_second_daemon_on_the_same_database_is_refused(
        daemon_proc: tuple[str, Path, dict[str, str]]) -> None:
    url, db, env = daemon_proc
    code, out, err = await run("serve", "--listen", f"127.0.0.1:{free_port()}", env=env)
    assert code == 1
    assert "another astpresence daemon (pid " in err and f"API {url}" in err
    assert str(db) in err and "Traceback" not in err
    # The first one goes on.
    assert (await cli(url, "status", token=await create_token(db, env))).code == 0


@pytest.fixture
async def not_astpresence() -> AsyncIterator[str]:
    """An HTTP server that is not astpresence: HTML, 404 pages, JSON of another shape."""

    async def html(request: web.Request) -> web.Response:
        return web.Response(text="<html>hello</html>", content_type="text/html")

    async def other_json(request: web.Request) -> web.Response:
        return web.json_response({"something": "else"})

    app = web.Application()
    app.router.add_get("/html/v1/status", html)
    app.router.add_get("/json/v1/status", other_json)
    app.router.add_get("/json/v1/presence", other_json)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    await runner.cleanup()


@pytest.mark.parametrize("suffix", ["/html", "/json", "/nowhere"])
async def test_cli_against_something_else_is_one_line(not_astpresence: str,
                                                      suffix: str) -> None:
    for args in (["status"], ["list"], ["get", "2000"]):
        res = await cli(not_astpresence + suffix, *args, token="astp_00000000_" + "x" * 32)
        assert res.code == 1, res
        assert res.err.count("\n") == 1 and res.err.startswith("Error: ")
        assert "Traceback" not in res.err


async def test_cli_against_the_ami_port_is_one_line(fake_ami: FakeAsterisk) -> None:
    res = await cli(f"http://127.0.0.1:{fake_ami.port}", "status", token="t")
    assert res.code == 1 and res.err.count("\n") == 1
    assert "did not answer like an astpresence daemon" in res.err


async def test_watch_fails_fast_without_daemon_or_token() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, not listening: refused
        res = await cli(f"http://127.0.0.1:{port}", "watch", token="astp_x", timeout=10)
    assert res.code == 1 and res.err.count("\n") == 1
    assert "cannot reach the astpresence daemon" in res.err
    res = await cli(f"http://127.0.0.1:{port}", "watch", token="", timeout=10)
    assert res.code == 1
    assert res.err.strip() == ("Error: no token: give --token or set ASTPRESENCE_TOKEN "
                               "(create one with 'astpresence token create')")


async def test_watch_with_a_bad_token_is_one_line(
        daemon_proc: tuple[str, Path, dict[str, str]]) -> None:
    url, _, _ = daemon_proc
    res = await cli(url, "watch", token="astp_00000000_" + "x" * 32, timeout=10)
    assert res.code == 1 and res.err.strip() == (
        "Error: the daemon refused the event stream: unknown token")


def test_tables_line_up_with_wide_characters() -> None:
    assert _width("中文") == 4 and _width("e\u0301") == 1 and _width("abc") == 3
    table = _table([["中文", "x"], ["ab", "y"]], ["name", "v"])
    lines = table.splitlines()
    assert [_width(line.rstrip("xyV")) for line in lines] == [6, 6, 6]
    assert _shorten("a" * 50, 10) == "a" * 9 + "…"
    assert _width(_shorten("中" * 30, 11)) <= 11


def test_hints_leave_out_the_mirror_when_it_is_off() -> None:
    users = [{"id": "2000", "extension": "2000", "context": "internal",
              "devices": ["PJSIP/2000"], "mirror_device": "Custom:presence-2000"}]
    assert "Custom:presence-2000" in format_hints(users)
    off = format_hints(users, mirror=False)
    assert "exten => 2000,hint,PJSIP/2000,CustomPresence:2000" in off
    assert "Custom:presence" not in off
