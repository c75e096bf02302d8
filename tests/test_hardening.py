"""Hostile or careless input contained: secrets in database URLs, clients that go
away mid-request (issue "Contain hostile calendars, Graph answers, connections
and quota abuse")."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest

from astpresence.store.postgres import safe_dsn
from tests.support.e2e import RunningDaemon, until
from tests.test_first_run import clean_env, run


@pytest.mark.parametrize(("url", "shown"), [
    ("postgresql://astp@127.0.0.1:1/astp?password=QueryPassw0rd",
     "postgresql://astp@127.0.0.1:1/astp?password=***"),
    ("postgresql://astp:Pw0rd@db/astp?sslpassword=SslPw&sslmode=require",
     "postgresql://astp:***@db/astp?sslpassword=***&sslmode=require"),
    ("postgresql://a:b%40c@db:5432/x?application_name=y&PassWord=Z",
     "postgresql://a:***@db:5432/x?application_name=y&PassWord=***"),
    ("postgresql:///astp?host=/run/postgresql&passfile=/etc/pw",
     "postgresql:///astp?host=/run/postgresql&passfile=***"),
    ("postgresql://db/astp", "postgresql://db/astp"),
    ("postgresql://[::1/astp?password=x", "(an unparsable database URL)"),
])
def test_safe_dsn_hides_every_password(url: str, shown: str) -> None:
    assert safe_dsn(url) == shown


SECRETS = ("QueryPassw0rd", "SslSecret9")
HOSTILE_URL = f"postgresql://astp@127.0.0.1:1/astp?password={SECRETS[0]}&sslpassword={SECRETS[1]}"


async def test_a_password_in_the_url_query_is_never_printed(tmp_path: Path) -> None:
    env = clean_env(ASTPRESENCE_DB_URL=HOSTILE_URL, ASTPRESENCE_AMI_SECRET="x")
    code, out, err = await run("token", "create", "--role", "admin", env=env)
    assert code != 0 and "cannot connect to PostgreSQL" in err
    code2, out2, err2 = await run("serve", "--listen", "127.0.0.1:1", env=env, timeout=30)
    assert code2 != 0
    for text in (out, err, out2, err2):
        assert not any(s in text for s in SECRETS), text
    assert "password=***" in err2


async def test_an_aborted_request_body_is_one_debug_line(
        daemon: RunningDaemon, caplog: pytest.LogCaptureFixture) -> None:
    """A client that sends half a body and goes away is not an internal error."""
    caplog.set_level(logging.DEBUG, logger="astpresence")
    for _ in range(3):
        reader, writer = await asyncio.open_connection("127.0.0.1", daemon.daemon.port)
        writer.write(b"PUT /v1/presence/2000 HTTP/1.1\r\nHost: x\r\n"
                     b"Authorization: Bearer " + daemon.token.encode() + b"\r\n"
                     b"Content-Type: application/json\r\nContent-Length: 500\r\n\r\n"
                     b'{"state": "dn')
        await writer.drain()
        writer.transport.abort()  # a reset, as a client killed mid-request
    # barrier: each aborted request has been handled (its one debug line is there)
    def went_away() -> int:
        return sum("the client went away" in r.getMessage() for r in caplog.records)

    await until(lambda: went_away() == 3, what="the three aborted requests to end")
    assert await _get_status(daemon) == 200
    errors = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert errors == [], [r.getMessage() for r in errors]
    assert all(r.exc_info is None for r in caplog.records)
    assert daemon.service.view("2000").presence.state.value != "dnd"


async def _get_status(daemon: RunningDaemon) -> int:
    import aiohttp

    async with aiohttp.ClientSession(headers=daemon.auth) as http:
        async with http.get(daemon.url + "/v1/status") as resp:
            return resp.status
