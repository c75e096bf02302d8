"""Hostile or careless input contained: secrets in database URLs, clients that go
away mid-request (issue "Contain hostile calendars, Graph answers, connections
and quota abuse")."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import pytest

from astpresence.web.auth import Role
from astpresence.web.limits import RateLimit, RateLimited
from astpresence.domain.model import InvalidInput, Presence, State
from astpresence.domain.records import SourceRecord
from astpresence.engine.contributions import MAX_SOURCES
from astpresence.store.postgres import safe_dsn
from tests.conftest import Starter
from tests.support.api import bearer, call
from tests.support.e2e import RunningDaemon, make_config, seed, until
from tests.support.fakeami import FakeAsterisk
from tests.support.processes import clean_env, run


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
    async with aiohttp.ClientSession(headers=daemon.auth) as http:
        async with http.get(daemon.url + "/v1/status") as resp:
            return resp.status


# -- one token cannot grow storage or slow everyone (rate limits, caps, retention) ---


@pytest.fixture
async def limited(fake_ami: FakeAsterisk, tmp_path: Path,
                  daemons: Starter) -> RunningDaemon:
    seed(fake_ami)
    config = replace(make_config(fake_ami, tmp_path / "p.db"), writes_per_second=5.0,
                     write_burst=10, history_keep_rows=20)
    return await daemons(config)


async def test_a_token_in_a_write_loop_gets_429(limited: RunningDaemon) -> None:
    d = limited
    user = await d.make_token(Role.USER, "2000")
    codes, retry = [], []
    async with aiohttp.ClientSession() as http:
        for i in range(30):
            async with http.put(d.url + "/v1/me/presence", headers=bearer(user),
                                json={"state": "away", "message": f"loop {i}"}) as resp:
                codes.append(resp.status)
                if resp.status == 429:
                    retry.append(resp.headers.get("Retry-After"))
                    assert "too many changes" in (await resp.json())["error"]
        # another token is not held up by this one
        async with http.put(d.url + "/v1/presence/2001", headers=d.auth,
                            json={"state": "dnd"}) as resp:
            assert resp.status == 200
    assert codes[:10] == [200] * 10  # the burst
    assert codes.count(429) >= 15 and all(r and int(r) >= 1 for r in retry)
    # reads are not limited
    assert (await call(d, "GET", "/v1/presence/2000", user))[0] == 200


async def test_sources_per_user_are_capped(limited: RunningDaemon) -> None:
    d = limited
    made = 0
    for i in range(MAX_SOURCES + 5):
        try:
            await d.service.set_source(SourceRecord(
                "2000", f"src{i}", Presence(State.AWAY), datetime.now(UTC), "api"))
            made += 1
        except InvalidInput as exc:
            assert "sources already" in str(exc)
    assert len(d.service.sources("2000")) == MAX_SOURCES
    assert made < MAX_SOURCES + 5
    # replacing one that exists is always possible
    await d.service.set_source(SourceRecord("2000", "src0", Presence(State.XA),
                                            datetime.now(UTC), "api"))
    code, body = await call(d, "PUT", "/v1/presence/2000/sources/one-more", d.token,
                            {"state": "away"})
    assert code == 400 and "sources already" in body["error"]


async def test_history_is_kept_within_its_bounds(limited: RunningDaemon) -> None:
    d = limited
    for i in range(60):
        await d.service.set_manual("2000", Presence(State.AWAY, "", f"n{i}"), "api")
    assert len(await d.service.history("2000", 500)) >= 60
    gone = await d.daemon.retention.prune()
    assert gone >= 40
    rows = await d.service.history("2000", 500)
    assert len(rows) == 20 and rows[0].new.message == "n59"


def test_a_rate_limit_refills_and_forgets_idle_keys() -> None:
    now = [0.0]
    limit = RateLimit(2.0, 3, clock=lambda: now[0], max_keys=2)
    for _ in range(3):
        limit.take("a")
    with pytest.raises(RateLimited) as refused:
        limit.take("a")
    assert refused.value.retry_after == pytest.approx(0.5)
    now[0] = 0.5  # one token back
    limit.take("a")
    with pytest.raises(RateLimited):
        limit.take("a")
    limit.take("b")
    now[0] = 10.0  # both full again: a third key pushes out the idle ones
    limit.take("c")
    assert len(limit) <= 2 and limit.refused == 2
