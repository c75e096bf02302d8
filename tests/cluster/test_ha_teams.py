"""Teams in an HA group: only the leader talks to Graph; notifications that reach a
follower are handed to the leader; after a takeover the new leader reads Teams again
and makes its own subscriptions."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.cluster.test_ha import eventually, started_group
from tests.support.e2e import until
from tests.support.fakeami import FakeAsterisk
from tests.support.teams_graph import TeamsGraphServer, running_graph

BOB = "7d1c0a52-3b7e-4f0e-9a59-2c1d7e5b9f10"


@pytest.fixture
async def graph() -> AsyncIterator[TeamsGraphServer]:
    async with running_graph({"bob@contoso.com": BOB}) as server:
        yield server


async def test_notifications_through_a_follower_and_a_takeover(
        fake_ami: FakeAsterisk, postgres_url: str, tmp_path: Path,
        graph: TeamsGraphServer) -> None:
    config = f"""
[teams]
tenant = "contoso"
client_id = "app"
client_secret_env = "TEAMS_SECRET"
authority = "{graph.url}"
graph = "{graph.graph}"
notification_url = "@B_URL@/v1/hooks/teams"
max_requests = 1000
poll = 3600
resync = 3600

[teams.users]
2001 = "{BOB}"
"""
    async with started_group(fake_ami, postgres_url, tmp_path, config) as (a, b, admin):
        await b.wait_following(admin)
        await until(lambda: bool(graph.subs), timeout=10, what="the leader subscribed")
        assert len(graph.subs) == 1  # the leader's only: the follower never talks to Graph
        token_requests = graph.token_requests
        graph.set_client(BOB, "DoNotDisturb", "Presenting")  # notified to b, read by a

        async def dnd() -> bool:
            _, view = await b.call("GET", "/v1/presence/2001", admin)
            return bool(view["state"] == "dnd" and view["rule"] == "timed:teams")
        await eventually(dnd, "the follower's notification to reach the leader")
        assert graph.failed_deliveries == 0
        code, body = await b.call("GET", "/v1/teams", admin)  # forwarded: the leader's view
        assert code == 200 and body["status"]["running"] and body["status"]["notifications"] >= 1
        a.proc.kill()  # type: ignore[union-attr]
        await a.proc.wait()  # type: ignore[union-attr]
        await b.wait_leading(admin, timeout=20)
        # the new leader reads Teams before assuming anything, and subscribes anew
        await until(lambda: graph.token_requests > token_requests and len(graph.subs) == 2,
                    timeout=10, what="the new leader's subscription")
        graph.set_client(BOB, "Available", "Available")

        async def cleared() -> bool:
            _, view = await b.call("GET", "/v1/presence/2001", admin)
            return bool(view["rule"] != "timed:teams")
        await eventually(cleared, "the new leader to follow Teams")
