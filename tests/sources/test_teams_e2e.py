"""Teams presence both ways, end to end: the daemon in-process against the fake AMI
and the fake Graph (tests/support/teams_graph.py), over real sockets."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from astpresence.sources.settings_reader import Credential
from astpresence.sources.teams.mapping import TeamsPresence
from astpresence.sources.teams.settings import TeamsSettings
from astpresence.sources.teams.source import TeamsSource
from astpresence.web.auth import Role
from tests.conftest import Starter
from tests.support.api import call
from tests.support.calendar_servers import free_port
from tests.support.e2e import RunningDaemon, barrier, make_config, until
from tests.support.fakeami import FakeAsterisk, Hint
from tests.support.teams_graph import TeamsGraphServer, running_graph

ALICE = "alice@contoso.com"
BOB = "7d1c0a52-3b7e-4f0e-9a59-2c1d7e5b9f10"


@pytest.fixture
async def graph() -> AsyncIterator[TeamsGraphServer]:
    async with running_graph({ALICE: None, "bob@contoso.com": BOB}, tenant="contoso.onmicrosoft.com", client_id="app-1234", secret="s3cret-value") as server:
        yield server


def settings(graph: TeamsGraphServer, port: int, **changes: Any) -> TeamsSettings:
    return replace(TeamsSettings(
        tenant="contoso.onmicrosoft.com", client_id="app-1234",
        secret=Credential(env="TEAMS_SECRET"), authority=graph.url, graph=graph.graph,
        poll=5, notification_url=f"http://127.0.0.1:{port}/v1/hooks/teams",
        max_requests=1000, users={"2000": ALICE, "2001": BOB}), **changes)


async def start(daemons: Starter, fake: FakeAsterisk, graph: TeamsGraphServer, tmp_path: Path,
                **changes: Any) -> RunningDaemon:
    fake.hints[:] = [Hint(u, "ext-local", [f"PJSIP/{u}", f"Custom:DND{u}"],
                          f"CustomPresence:{u}") for u in ("2000", "2001")]
    fake.devices.update({"PJSIP/2000": "NOT_INUSE", "PJSIP/2001": "NOT_INUSE",
                         "Custom:DND2000": "UNAVAILABLE", "Custom:DND2001": "UNAVAILABLE"})
    port = free_port()
    config = replace(make_config(fake, tmp_path / "p.db"), listen_port=port,
                     sources={"teams": settings(graph, port, **changes)},
                     writes_per_second=1000.0, write_burst=1000)
    d = await daemons(config)
    await until(lambda: teams(d).directory.oid("2000") is not None, what="UPN resolved")
    return d


async def raw(d: RunningDaemon, method: str, path: str, body: bytes | Any = None,
              token: str | None = None) -> tuple[int, str]:
    """A request whose answer may be text or empty (the webhook, /metrics)."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    data = body if isinstance(body, bytes) else None
    async with aiohttp.ClientSession(headers=headers) as http:
        async with http.request(method, d.url + path, data=data,
                                json=None if data is not None else body) as resp:
            return resp.status, await resp.text()


def teams(d: RunningDaemon) -> TeamsSource:
    source = d.daemon.sources["teams"]
    assert isinstance(source, TeamsSource)
    return source


def alice(graph: TeamsGraphServer) -> str:
    return next(p.oid for p in graph.people.values() if p.upn == ALICE)


async def test_a_desk_phone_call_shows_in_teams_and_clears(
        fake_ami: FakeAsterisk, graph: TeamsGraphServer, tmp_path: Path,
        daemons: Starter) -> None:
    d = await start(daemons, fake_ami, graph, tmp_path)
    oid = alice(graph)
    await until(lambda: bool(graph.subs), what="subscribed")
    assert graph.shown(oid) == ("Available", "Available")
    await fake_ami.external_device_change("PJSIP/2000", "INUSE")
    await until(lambda: graph.shown(oid) == ("Busy", "InACall"), timeout=2.0,
                what="InACall in Teams")
    # The notification of that change comes back: seen, not adopted as Teams' own
    await until(lambda: teams(d).seen.get("2000", (None,))[0]
                == TeamsPresence("Busy", "InACall"), what="the echo read")
    assert d.service.contributions.get("2000", "teams") is None
    assert d.service.view("2000").presence.subtype == "on-the-phone"
    await fake_ami.external_device_change("PJSIP/2000", "NOT_INUSE")
    await until(lambda: graph.shown(oid) == ("Available", "Available"), timeout=2.0,
                what="the session cleared")
    assert not graph.people[oid].sessions
    writes = [(w[2], w[3].get("availability")) for w in graph.writes if w[1] == oid]
    assert writes == [("setPresence", "Busy"), ("clearPresence", None)]
    body = graph.writes[0][3]
    assert body["sessionId"] == "app-1234" and body["activity"] == "InACall"
    assert body["expirationDuration"] == "PT600S"


async def test_teams_dnd_reaches_the_hint_and_leaves_it(
        fake_ami: FakeAsterisk, graph: TeamsGraphServer, tmp_path: Path,
        daemons: Starter) -> None:
    d = await start(daemons, fake_ami, graph, tmp_path)
    await until(lambda: bool(graph.subs), what="subscribed")
    graph.set_client(BOB, "DoNotDisturb", "Presenting")
    await until(lambda: fake_ami.presences.get("2001", ("",))[0] == "dnd",
                timeout=2.0, what="dnd in the hint")
    view = d.service.view("2001")
    assert (view.presence.subtype, view.rule, view.activity) == (
        "presenting", "timed:teams", "presenting")
    # nothing of Teams' own goes back to Teams
    assert not [w for w in graph.writes if w[1] == BOB]
    graph.set_client(BOB, "Available", "Available")
    await until(lambda: d.service.contributions.get("2001", "teams") is None,
                timeout=2.0, what="the Teams entry gone")
    assert d.service.view("2001").presence.state.value != "dnd"


async def test_freepbx_dnd_sets_the_preferred_presence_and_clears_it(
        fake_ami: FakeAsterisk, graph: TeamsGraphServer, tmp_path: Path,
        daemons: Starter) -> None:
    d = await start(daemons, fake_ami, graph, tmp_path)
    oid = alice(graph)
    await fake_ami.freepbx_dnd("2000", True)  # *78
    await until(lambda: graph.shown(oid) == ("DoNotDisturb", "DoNotDisturb"), timeout=2.0,
                what="preferred DND")
    assert graph.people[oid].preferred is not None
    await until(lambda: teams(d).seen.get("2000", (None,))[0]
                == TeamsPresence("DoNotDisturb", "DoNotDisturb"), what="the echo read")
    assert d.service.contributions.get("2000", "teams") is None  # not adopted
    await fake_ami.freepbx_dnd("2000", False)  # *79
    await until(lambda: graph.people[oid].preferred is None, timeout=2.0, what="cleared")
    assert graph.shown(oid) == ("Available", "Available")
    kinds = [w[2] for w in graph.writes if w[1] == oid]
    assert kinds == ["setUserPreferredPresence", "clearUserPreferredPresence"]


async def test_a_chosen_state_with_an_end_and_a_message(
        fake_ami: FakeAsterisk, graph: TeamsGraphServer, tmp_path: Path,
        daemons: Starter) -> None:
    d = await start(daemons, fake_ami, graph, tmp_path)
    oid = alice(graph)
    token = await d.make_token(Role.USER, "2000")
    status, body = await call(d, "PUT", "/v1/me/presence", token,
                              {"state": "away", "message": "Lunch, back at 2",
                               "expires": (datetime.now(UTC) + timedelta(days=30)).isoformat()})
    assert status == 200, body
    await until(lambda: graph.people[oid].message == "Lunch, back at 2", timeout=2.0,
                what="status message")
    assert graph.shown(oid) == ("Away", "Away")
    preferred = next(w[3] for w in graph.writes if w[2] == "setUserPreferredPresence")
    assert preferred["expirationDuration"].startswith("PT") and \
        86400 * 29 < int(preferred["expirationDuration"][2:-1]) <= 86400 * 30
    status, body = await call(d, "DELETE", "/v1/me/presence", token)
    assert status == 200, body
    await until(lambda: graph.people[oid].preferred is None and graph.people[oid].message == "",
                timeout=2.0, what="cleared with the message")


async def test_polling_when_notifications_stop(
        fake_ami: FakeAsterisk, graph: TeamsGraphServer, tmp_path: Path,
        daemons: Starter) -> None:
    d = await start(daemons, fake_ami, graph, tmp_path, notification_url="", poll=5)
    assert teams(d).status_json()["polling"] is True
    graph.set_client(BOB, "Away", "Away")
    await until(lambda: d.service.view("2001").presence.state.value == "away", timeout=8.0,
                what="adopted by polling within a poll period")
    assert not graph.subs
    assert teams(d).status_json()["subscriptions"] == 0


async def test_notifications_are_checked_and_the_handshake_answered(
        fake_ami: FakeAsterisk, graph: TeamsGraphServer, tmp_path: Path,
        daemons: Starter) -> None:
    d = await start(daemons, fake_ami, graph, tmp_path)
    await until(lambda: bool(graph.subs), what="subscribed")
    sub = next(iter(graph.subs.values()))
    status, text = await raw(d, "POST", "/v1/hooks/teams?validationToken=abc%20123")
    assert (status, text) == (200, "abc 123")
    forged = {"value": [{"subscriptionId": sub.id, "clientState": "guess",
                         "resourceData": {"id": BOB}}]}
    reads = teams(d).reads
    status, _ = await raw(d, "POST", "/v1/hooks/teams", forged)
    assert status == 202
    status, text = await raw(d, "POST", "/v1/hooks/teams", {"value": "x"})
    assert status == 400, text
    status, text = await raw(d, "POST", "/v1/hooks/teams", b"{" * 100)
    assert status == 400, text
    await barrier(d, fake_ami)
    assert teams(d).reads == reads and teams(d).subscriptions.refused == 1
    # the link, for an operator; the secret and the clientState nowhere
    status, body = await call(d, "GET", "/v1/teams", d.token)
    assert status == 200 and body["status"]["users_resolved"] == 2, body
    assert [r["object_id"] for r in body["map"]] == [alice(graph), BOB]
    for path in ("/v1/teams", "/v1/status", "/v1/config", "/metrics"):
        status, shown = await raw(d, "GET", path, token=d.token)
        assert status == 200, path
        assert "s3cret-value" not in str(shown) and sub.client_state not in str(shown), path
    user = await d.make_token(Role.USER, "2000")
    status, body = await call(d, "GET", "/v1/teams", user)
    assert status == 403, body


async def test_a_lost_subscription_is_made_again(
        fake_ami: FakeAsterisk, graph: TeamsGraphServer, tmp_path: Path,
        daemons: Starter) -> None:
    d = await start(daemons, fake_ami, graph, tmp_path)
    await until(lambda: bool(graph.subs), what="subscribed")
    first = next(iter(graph.subs))
    graph.lifecycle(first, "subscriptionRemoved")
    await until(lambda: bool(graph.subs) and first not in graph.subs, what="made again")
    graph.set_client(BOB, "Busy", "InAMeeting")
    await until(lambda: d.service.view("2001").presence.subtype == "in-a-meeting", timeout=2.0,
                what="notified through the new subscription")


async def test_no_ping_pong_over_100_alternating_changes(
        fake_ami: FakeAsterisk, graph: TeamsGraphServer, tmp_path: Path,
        daemons: Starter) -> None:
    """Fifty *78/*79 on the desk phone and fifty DND/Available in the Teams client,
    interleaved: each side's writes are the other's echo or a real change, and the
    two settle; nothing is written after the last change but what it asks for."""
    d = await start(daemons, fake_ami, graph, tmp_path)
    oid = alice(graph)
    await until(lambda: bool(graph.subs), what="subscribed")
    for i in range(50):
        await fake_ami.freepbx_dnd("2000", i % 2 == 0)  # *78, *79, ...; ends with *79
        graph.set_client(oid, *(("DoNotDisturb", "Presenting") if i % 2 == 0
                                else ("Available", "Available")))  # ends Available
        if i % 5 == 4:
            await barrier(d, fake_ami)  # now and then the daemon catches up mid-way
    await barrier(d, fake_ami)
    source = teams(d)
    await until(lambda: not source.outbound._dirty and not source.outbound._inflight
                and graph.people[oid].preferred is None
                and d.service.view("2000").presence.state.value != "dnd", what="settled")
    writes = len(graph.writes)
    assert writes <= 50  # only the phone's changes went to Teams, coalesced
    assert {w[2] for w in graph.writes} <= {"setUserPreferredPresence",
                                            "clearUserPreferredPresence"}
    history = len(await d.service.history("2000", 1000))
    # a full read and a round trip later, nothing moved on either side
    reads = source.reads
    source.read_all_soon()
    await until(lambda: source.reads > reads, what="a full read")
    await barrier(d, fake_ami)
    assert len(graph.writes) == writes and graph.shown(oid) == ("Available", "Available")
    assert len(await d.service.history("2000", 1000)) == history
    assert d.service.view("2000").presence.state.value != "dnd"
    assert d.service.contributions.get("2000", "teams") is None


async def test_an_unmapped_person_s_teams_entry_goes_at_the_next_start(
        fake_ami: FakeAsterisk, graph: TeamsGraphServer, tmp_path: Path,
        daemons: Starter) -> None:
    d = await start(daemons, fake_ami, graph, tmp_path, notification_url="")
    graph.set_client(BOB, "Busy", "InAMeeting")
    teams(d).read_all_soon()
    await until(lambda: d.service.contributions.get("2001", "teams") is not None,
                what="adopted")
    await d.stop()
    d = await start(daemons, fake_ami, graph, tmp_path, notification_url="",
                    users={"2000": ALICE})
    await until(lambda: d.service.contributions.get("2001", "teams") is None,
                what="the entry of someone no longer mapped removed")
    assert d.service.view("2001").rule != "timed:teams"


async def test_polling_takes_over_when_notifications_stop(
        fake_ami: FakeAsterisk, graph: TeamsGraphServer, tmp_path: Path,
        daemons: Starter) -> None:
    d = await start(daemons, fake_ami, graph, tmp_path, poll=5)
    await until(lambda: bool(graph.subs), what="subscribed")
    assert teams(d).status_json()["polling"] is False
    # Graph drops the subscription and refuses new ones; nothing is delivered any more
    graph.forbidden_kinds.add("subscriptions")
    graph.lifecycle(next(iter(graph.subs)), "subscriptionRemoved")
    await until(lambda: teams(d).status_json()["polling"] is True, what="polling")
    graph.deliver = False
    graph.set_client(BOB, "Busy", "InAConferenceCall")
    await until(lambda: d.service.view("2001").presence.subtype == "in-a-conference-call",
                timeout=8.0, what="adopted within a poll period")
    assert "Presence.Read.All" in teams(d).status_json()["error"]  # why, in the status


async def test_a_flood_of_forged_notifications_is_cut_at_the_hook(
        fake_ami: FakeAsterisk, graph: TeamsGraphServer, tmp_path: Path,
        daemons: Starter) -> None:
    d = await start(daemons, fake_ami, graph, tmp_path, notification_url="")
    forged = {"value": [{"subscriptionId": "x", "clientState": "guess",
                         "resourceData": {"id": BOB}}] * 10}
    body = json.dumps(forged).encode()
    async with aiohttp.ClientSession() as http:
        async def post() -> int:
            async with http.post(d.url + "/v1/hooks/teams", data=body) as resp:
                return resp.status
        started = asyncio.get_running_loop().time()
        codes = await asyncio.gather(*(post() for _ in range(1500)))
        took = asyncio.get_running_loop().time() - started
    # the bucket: 400 at once, then 200 a second
    assert codes.count(202) <= 400 + 200 * took + 1, (codes.count(202), took)
    assert codes.count(429) >= 1
    assert set(codes) <= {202, 429}
    assert teams(d).subscriptions.refused == 10 * codes.count(202)
    status, _ = await call(d, "GET", "/v1/status", d.token)  # still answering
    assert status == 200


async def test_a_notification_without_resource_data_names_its_person_in_resource(
        fake_ami: FakeAsterisk, graph: TeamsGraphServer, tmp_path: Path,
        daemons: Starter) -> None:
    d = await start(daemons, fake_ami, graph, tmp_path, poll=3600)
    await until(lambda: bool(graph.subs), what="subscribed")
    sub = next(iter(graph.subs.values()))
    graph.deliver = False  # this change is told below, by hand
    graph.set_client(BOB, "Away", "BeRightBack")
    item = {"subscriptionId": sub.id, "clientState": sub.client_state,
            "changeType": "updated", "resource": f"communications/presences('{BOB}')"}
    status, _ = await raw(d, "POST", "/v1/hooks/teams", {"value": [item]})
    assert status == 202
    await until(lambda: d.service.view("2001").presence.subtype == "be-right-back",
                what="read from the resource's id")
    # the map says who is not an astpresence user
    await d.stop()
    d = await start(daemons, fake_ami, graph, tmp_path, poll=3600,
                    users={"2000": ALICE, "2099": BOB})
    status, body = await call(d, "GET", "/v1/teams", d.token)
    row = next(r for r in body["map"] if r["user"] == "2099")
    assert row["object_id"] == BOB and "no such astpresence user" in row["error"]


async def test_a_failed_renewal_waits_for_its_retry_and_never_hammers_graph(
        fake_ami: FakeAsterisk, graph: TeamsGraphServer, tmp_path: Path,
        daemons: Starter) -> None:
    d = await start(daemons, fake_ami, graph, tmp_path, notification_url="")
    oid = alice(graph)
    await fake_ami.external_device_change("PJSIP/2000", "INUSE")
    await until(lambda: graph.shown(oid) == ("Busy", "InACall"), what="InACall")
    out = teams(d).outbound
    # the session is due for renewal now, and Graph refuses writes
    held = out.held["2000"]
    out.held["2000"] = replace(held, call_until=datetime.now(UTC) + timedelta(seconds=1))
    graph.forbidden_kinds.add("setPresence")
    tries = sum(1 for _, kind in graph.calls if kind == "setPresence")
    out.mark("2000")
    await until(lambda: out.failures >= 1, what="the renewal refused")
    due = out._due.get("2000")
    assert due is not None and due >= datetime.now(UTC) + timedelta(seconds=25)
    assert sum(1 for _, kind in graph.calls if kind == "setPresence") == tries + 1
    assert "Presence.ReadWrite.All" in teams(d).status_json()["missing_permissions"]


async def test_an_unexpected_failure_restarts_the_source(
        fake_ami: FakeAsterisk, graph: TeamsGraphServer, tmp_path: Path,
        daemons: Starter, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    from astpresence.sources.teams import source as source_module

    monkeypatch.setattr(source_module, "RESTART", 0.05)
    d = await start(daemons, fake_ami, graph, tmp_path, notification_url="", poll=5)
    s = teams(d)
    real = s.graph.presences
    calls = [0]

    async def broken_once(ids: list[str]) -> list[Any]:
        calls[0] += 1
        if calls[0] == 1:
            raise RuntimeError("a bug")
        return await real(ids)

    monkeypatch.setattr(s.graph, "presences", broken_once)
    graph.set_client(BOB, "Busy", "InAMeeting")
    s.read_all_soon()
    await until(lambda: d.service.view("2001").presence.subtype == "in-a-meeting",
                timeout=8.0, what="read again after the restart")
    assert calls[0] >= 2 and "the link to Graph failed" in caplog.text
