"""The Teams source's Graph client and subscriptions against the fake Graph (real HTTP
on loopback): throttling, tokens, permissions, and an hour of renewals in fake time."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from aiohttp import web

from astpresence.sources.msgraph import RemoteError
from astpresence.sources.settings_reader import Credential
from astpresence.sources.teams.graph import Forbidden, Missing, TeamsGraph
from astpresence.sources.teams.settings import TeamsSettings
from astpresence.sources.teams.subscriptions import LIFETIME, Subscriptions
from tests.support.teams_graph import TeamsGraphServer, running_graph


@pytest.fixture
async def graph() -> AsyncIterator[TeamsGraphServer]:
    async with running_graph({}) as server:
        yield server


def client(server: TeamsGraphServer, **changes: object) -> TeamsGraph:
    return TeamsGraph(replace(TeamsSettings(
        tenant="contoso", client_id="app", secret=Credential(env="TEAMS_SECRET"),
        authority=server.url, graph=server.graph, max_requests=1000), **changes))


async def test_throttling_pauses_every_request_for_its_retry_after(
        graph: TeamsGraphServer) -> None:
    person = graph.add("a@contoso.com")
    g = client(graph)
    try:
        graph.throttle_kinds["getPresencesByUserId"] = 2  # Retry-After: 1 each
        loop = asyncio.get_running_loop()
        started = loop.time()
        value, other = await asyncio.gather(g.presences([person.oid]),
                                            g.presences([person.oid]))
        took = loop.time() - started
        assert value[0]["availability"] == "Available" and other == value
        assert g.stats.throttled == 2 and took >= 1.0
        reads = [t for t, kind in graph.calls if kind == "getPresencesByUserId"]
        assert len(reads) == 4 and reads[2] - reads[0] >= 1.0  # nobody went on meanwhile
    finally:
        await g.close()


async def test_a_refused_token_is_renewed_once_and_the_secret_stays_out(
        graph: TeamsGraphServer) -> None:
    graph.add("a@contoso.com")
    g = client(graph)
    try:
        assert await g.resolve("a@contoso.com")
        graph.tokens.clear()  # revoked (or expired early)
        assert await g.resolve("a@contoso.com")
        assert g.stats.tokens == 2
        with pytest.raises(Missing):
            await g.resolve("nobody@contoso.com")
        wrong = client(graph, secret=Credential(env="NOPE"))
        with pytest.raises(RemoteError, match="NOPE is not set"):
            await wrong.presences(["x"])
        graph.secret = "rotated"
        g2 = client(graph)
        with pytest.raises(RemoteError) as info:
            await g2.presences(["x"])
        assert "refused the app's credentials" in str(info.value)
        assert "pw" not in str(info.value) and g2.stats.token_ok is False
        await wrong.close()
        await g2.close()
    finally:
        await g.close()


async def test_a_missing_permission_is_named(graph: TeamsGraphServer) -> None:
    person = graph.add("a@contoso.com")
    graph.forbidden_kinds |= {"setUserPreferredPresence", "users"}
    g = client(graph)
    try:
        with pytest.raises(Forbidden, match="Presence.ReadWrite.All"):
            await g.set_preferred(person.oid, ("Away", "Away"), None)
        with pytest.raises(Forbidden, match="User.Read.All"):
            await g.resolve("a@contoso.com")
        assert g.stats.missing == {"Presence.ReadWrite.All", "User.Read.All"}
        graph.forbidden_kinds.clear()  # consent granted
        await g.set_preferred(person.oid, ("Away", "Away"), None)
        assert g.stats.missing == {"User.Read.All"}
    finally:
        await g.close()


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 12, 7, 9, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
async def hook() -> AsyncIterator[str]:
    """A notification URL that answers Graph's validation handshake."""
    async def answer(request: web.Request) -> web.Response:
        return web.Response(text=request.query.get("validationToken", ""),
                            status=200 if "validationToken" in request.query else 202)

    app = web.Application()
    app.router.add_post("/hook", answer)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    yield f"http://127.0.0.1:{runner.addresses[0][1]}/hook"
    await runner.cleanup()


async def test_subscriptions_stay_alive_for_two_hours_of_fake_time(
        graph: TeamsGraphServer, hook: str) -> None:
    clock = Clock()
    graph.clock = clock
    ids = [graph.add(f"u{i}@contoso.com").oid for i in range(700)]
    g = client(graph)
    subs = Subscriptions(g, hook, clock)
    try:
        subs.watch(ids)
        await subs.tick()
        assert subs.alive and len(graph.subs) == 2
        assert sorted(len(s.ids) for s in graph.subs.values()) == [50, 650]
        first = set(graph.subs)
        for _ in range(120):  # a tick a minute, as the reader's wait allows
            clock.now += timedelta(minutes=1)
            await subs.tick()
            assert subs.alive
            assert all(s.expires > clock.now for s in graph.subs.values())
        assert set(graph.subs) == first  # renewed, never made again
        assert 4 <= subs.renewals <= 6  # every ~45 min, each of the two
        renew_at = sorted(subs._renew_at(i, s) for i, s in subs.live.items())
        assert renew_at[1] - renew_at[0] >= timedelta(seconds=5)  # spread
        # one is lost (Graph expired it while we were away): made again at renewal
        lost = next(iter(graph.subs))
        del graph.subs[lost]
        clock.now += LIFETIME
        await subs.tick()
        assert subs.alive and lost not in graph.subs and len(graph.subs) == 2
    finally:
        await g.close()


async def test_a_notification_url_that_does_not_answer_means_polling(
        graph: TeamsGraphServer) -> None:
    ids = [graph.add("a@contoso.com").oid]
    g = client(graph)
    subs = Subscriptions(g, "http://127.0.0.1:9/nothing", lambda: datetime.now(UTC))
    try:
        subs.watch(ids)
        await subs.tick()
        assert not subs.alive and "subscribing failed" in subs.error
        assert not graph.subs
    finally:
        await g.close()


async def test_the_doctor_says_what_is_missing(graph: TeamsGraphServer) -> None:
    from astpresence.sources.teams.doctor import check

    graph.add("a@contoso.com")
    base = replace(TeamsSettings(
        tenant="contoso", client_id="app", secret=Credential(env="TEAMS_SECRET"),
        authority=graph.url, graph=graph.graph),
        users={"2000": "a@contoso.com", "2001": "ghost@contoso.com"})
    checks = {c.name: c for c in await check(base)}
    assert checks["teams token"].ok and checks["teams permissions"].ok
    assert not checks["teams users"].ok
    assert "ghost@contoso.com): no such user in the tenant" in checks["teams users"].detail
    graph.roles = ["Presence.Read.All"]  # read only, and no User.Read.All
    checks = {c.name: c for c in await check(replace(base, users={"2000": "a@contoso.com"}))}
    perms = checks["teams permissions"]
    assert not perms.ok and "Presence.ReadWrite.All, User.Read.All" in perms.fix
    assert "admin consent" in perms.fix
    reading = replace(base, sync="from_teams", users={"2000": "7d1c0a52-3b7e-4f0e-9a59-2c1d7e5b9f10"})
    assert {c.name: c for c in await check(reading)}["teams permissions"].ok
    bad = await check(replace(base, secret=Credential(env="NOT_SET_ANYWHERE")))
    assert [(c.name, c.ok) for c in bad] == [("teams token", False)]
    assert "environment variable NOT_SET_ANYWHERE" in bad[0].fix


async def test_a_changed_group_is_subscribed_anew_and_the_old_one_deleted(
        graph: TeamsGraphServer, hook: str) -> None:
    ids = [graph.add(f"u{i}@contoso.com").oid for i in range(3)]
    g = client(graph)
    subs = Subscriptions(g, hook, lambda: datetime.now(UTC))
    try:
        subs.watch(ids[:2])
        await subs.tick()
        first = set(graph.subs)
        subs.watch(ids)  # a UPN resolved later joins the group
        await subs.tick()
        assert len(graph.subs) == 1 and not first & set(graph.subs)
        assert next(iter(graph.subs.values())).ids == set(ids)
    finally:
        await g.close()
