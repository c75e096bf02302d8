"""Teams both ways against the lab's real Asterisk and the fake Graph: a real call on
the person's device shows InACall in Teams and clears after hang-up; Teams DND
reaches the hint Asterisk serves to phones; dnd chosen by the dialplan
(``PRESENCE_STATE``, as a feature code does) becomes the preferred presence."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from astpresence.domain.model import Presence, State
from tests.support.e2e import until
from tests.support.teams_graph import TeamsGraphServer, running_graph

from .asterisk import hint_line, originate, set_device_state, set_in_asterisk, wait_presence
from .conftest import IT_CONFIG, IT_DEVICE, IT_LOCAL_DEVICE, Server

pytestmark = pytest.mark.timeout(120)

ALICE = "2000"


@pytest.fixture
async def graph() -> AsyncIterator[TeamsGraphServer]:
    async with running_graph({"alice@contoso.com": None}) as server:
        yield server


def config(graph: TeamsGraphServer) -> str:
    return IT_CONFIG + f"""
[teams]
tenant = "contoso"
client_id = "app"
client_secret_env = "TEAMS_SECRET"
authority = "{graph.url}"
graph = "{graph.graph}"
poll = 5
max_requests = 1000

[teams.users]
{ALICE} = "alice@contoso.com"
"""


async def test_teams_both_ways_on_a_real_asterisk(dialplan: Server, it: Server, ami: Any,
                                                  daemon_factory: Any,
                                                  graph: TeamsGraphServer) -> None:
    oid = next(iter(graph.people))
    await set_device_state(ami, IT_DEVICE, "NOT_INUSE")
    await set_in_asterisk(ami, ALICE, Presence(State.AVAILABLE))
    daemon = daemon_factory(config(graph))
    await daemon.wait_ready()
    await until(lambda: bool(graph.calls), timeout=10, what="the daemon reading Teams")
    # a real channel on one of the person's devices
    await originate(ami, IT_LOCAL_DEVICE, wait=3, sync=False)
    await until(lambda: graph.shown(oid) == ("Busy", "InACall"), timeout=10,
                what="InACall in Teams")
    await until(lambda: graph.shown(oid) == ("Available", "Available"), timeout=15,
                what="cleared after the hang-up")
    # Teams DND -> the hint phones subscribe to (polled: no notification URL here)
    graph.set_client(oid, "DoNotDisturb", "Presenting")
    await wait_presence(ami, ALICE, Presence(State.DND, "presenting"))
    assert (await hint_line(it, ALICE, ami))["presence"] == "dnd"
    graph.set_client(oid, "Available", "Available")
    await wait_presence(ami, ALICE, Presence(State.AVAILABLE))
    # dnd chosen in Asterisk (the kit's feature codes set PRESENCE_STATE) -> Teams
    await set_in_asterisk(ami, ALICE, Presence(State.DND, "", "Focus"))
    await until(lambda: graph.people[oid].preferred is not None
                and graph.people[oid].message == "Focus", timeout=10,
                what="the preferred presence and the message in Teams")
    assert graph.shown(oid) == ("DoNotDisturb", "DoNotDisturb")
    await set_in_asterisk(ami, ALICE, Presence(State.AVAILABLE))
    await until(lambda: graph.people[oid].preferred is None, timeout=10, what="cleared")
