"""The daemon on PostgreSQL ([store] url / ASTPRESENCE_DB_URL), as a real process:
tokens made by the CLI on the same database, an acknowledged change that
survives ``kill -9``, and the state a second daemon finds."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from dataclasses import replace
from pathlib import Path

import aiohttp

from astpresence.domain.model import Secret
from astpresence.domain.model import State
from astpresence.store.postgres import PostgresStore
from tests.conftest import Starter
from tests.support.api import call
from tests.support.e2e import barrier, make_config, seed, until
from tests.support.postgres import PostgresServer
from tests.support.fakeami import FakeAsterisk
from tests.support.processes import free_port, wait_up
from tests.support.processes import clean_env, run


async def serve(env: dict[str, str]) -> tuple[asyncio.subprocess.Process, str]:
    url = f"http://127.0.0.1:{free_port()}"
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "astpresence", "serve", "--listen", url.removeprefix("http://"),
        env=env, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
        stdin=asyncio.subprocess.DEVNULL)
    await wait_up(url)
    return proc, url


async def test_daemon_on_postgres_survives_kill_9(fake_ami: FakeAsterisk, postgres_url: str,
                                                  tmp_path: Path) -> None:
    seed(fake_ami)
    env = clean_env(ASTPRESENCE_AMI_PORT=str(fake_ami.port),
                    ASTPRESENCE_AMI_SECRET=fake_ami.secret, ASTPRESENCE_DB_URL=postgres_url,
                    ASTPRESENCE_DB=str(tmp_path / "unused.db"))
    proc, url = await serve(env)
    try:
        code, out, err = await run("token", "create", "--role", "admin", "--json", env=env)
        assert code == 0, err
        made = json.loads(out)
        assert made["database"] == postgres_url  # no password in it to hide
        headers = {"Authorization": f"Bearer {made['token']}"}
        async with aiohttp.ClientSession(headers=headers) as http:
            async with http.put(f"{url}/v1/presence/2000",
                                json={"state": "dnd", "message": "kept"}) as resp:
                assert resp.status == 200  # acknowledged: stored
            async with http.get(f"{url}/v1/status") as resp:
                assert (await resp.json())["version"]
        await until(lambda: fake_ami.presences.get("2000", ("",))[0] == "dnd")
    finally:
        proc.send_signal(signal.SIGKILL)
        await proc.wait()
    assert not (tmp_path / "unused.db").exists()  # SQLite was never touched

    store = PostgresStore(postgres_url)
    await store.open()
    try:
        (entry,) = await store.history("2000")
        assert (entry.new.state, entry.new.message) == (State.DND, "kept")
    finally:
        await store.close()

    # A new daemon on the same database finds the state and does not write it again.
    before = len(fake_ami.setvars("PRESENCE_STATE(CustomPresence:2000)"))
    proc, url = await serve(env)
    try:
        headers = {"Authorization": f"Bearer {made['token']}"}
        async with aiohttp.ClientSession(headers=headers) as http:
            for _ in range(100):
                async with http.get(f"{url}/v1/status") as resp:
                    if (await resp.json())["synced"]:
                        break
                await asyncio.sleep(0.1)
            async with http.get(f"{url}/v1/presence/2000") as resp:
                body = await resp.json()
        assert (body["state"], body["message"]) == ("dnd", "kept")
        assert len(fake_ami.setvars("PRESENCE_STATE(CustomPresence:2000)")) == before
    finally:
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 15) == 0


async def test_bad_store_url_is_one_line(tmp_path: Path) -> None:
    env = clean_env(ASTPRESENCE_DB_URL="mysql://x@y/z")
    code, out, err = await run("serve", env=env)
    assert code != 0 and "ASTPRESENCE_DB_URL" in err and "postgresql://" in err
    assert "Traceback" not in err
    env = clean_env(ASTPRESENCE_DB_URL=f"postgresql://u:s3cret@127.0.0.1:{free_port()}/x",
                    ASTPRESENCE_LISTEN=f"127.0.0.1:{free_port()}")
    code, out, err = await run("serve", env=env)
    assert code == 1 and "cannot connect to PostgreSQL at postgresql://u:***@" in err
    assert "s3cret" not in err and "Traceback" not in err


async def test_database_down_is_503_and_nothing_acknowledged(
        fake_ami: FakeAsterisk, tmp_path: Path, daemons: Starter) -> None:
    """PostgreSQL stops: requests get 503 with the reason (tokens live in the
    database too), nothing is acknowledged or written to Asterisk; when it is
    back, the next change goes through."""
    server = PostgresServer()
    try:
        await asyncio.to_thread(server.start)
        url = await asyncio.to_thread(server.create_database)
        seed(fake_ami)
        d = await daemons(replace(make_config(fake_ami, tmp_path / "p.db"),
                                  db_url=Secret(url)))
        await asyncio.to_thread(server.stop)
        status, body = await call(d, "PUT", "/v1/presence/2000", d.token, {"state": "dnd"})
        assert status == 503
        assert body["error"].startswith("the database is unavailable, try again: cannot ")
        await barrier(d, fake_ami)
        assert fake_ami.presences.get("2000", ("not_set",))[0] != "dnd"
        await asyncio.to_thread(server.start)
        status, body = await call(d, "PUT", "/v1/presence/2000", d.token, {"state": "away"})
        assert status == 200, body
        await until(lambda: fake_ami.presences.get("2000", ("",))[0] == "away")
    finally:
        await asyncio.to_thread(server.cleanup)
