"""Client sessions over the real HTTP API: open, report, heartbeat, close, expire, and
what they do to presence beside a call, a chosen dnd and what others may see."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from astpresence.domain.model import Presence, State
from astpresence.sources.sessions.model import SessionRules
from astpresence.sources.sessions.source import MAX_PER_USER
from astpresence.web.auth import Role
from tests.conftest import Starter
from tests.support.api import call
from tests.support.e2e import RunningDaemon, barrier, make_config, until
from tests.support.fakeami import FakeAsterisk, Hint

RULES = SessionRules(expire_after=timedelta(seconds=60), idle_away_after=timedelta(minutes=5),
                     idle_xa_after=timedelta(minutes=30))


async def start(daemons: Starter, fake: FakeAsterisk, tmp_path: Path,
                rules: SessionRules = RULES) -> RunningDaemon:
    fake.hints[:] = [Hint(u, "default", [f"PJSIP/{u}"], f"CustomPresence:{u}")
                     for u in ("2000", "2001")]
    fake.devices.update({"PJSIP/2000": "UNAVAILABLE", "PJSIP/2001": "NOT_INUSE"})
    config = replace(make_config(fake, tmp_path / "p.db"), sources={"sessions": rules},
                     writes_per_second=1000.0, write_burst=1000)
    return await daemons(config)


def state(d: RunningDaemon, uid: str = "2000") -> tuple[str, str, str]:
    view = d.service.view(uid)
    return view.presence.state.value, view.presence.subtype, view.rule


async def opened(d: RunningDaemon, token: str, kind: str = "desktop") -> str:
    status, body = await call(d, "POST", "/v1/me/sessions", token,
                              {"client": "agent on alice-laptop", "kind": kind})
    assert status == 201, body
    sid: str = body["session"]["id"]
    return sid


async def test_idle_away_back_locked_and_closed(fake_ami: FakeAsterisk, tmp_path: Path,
                                                daemons: Starter) -> None:
    d = await start(daemons, fake_ami, tmp_path)
    alice = await d.make_token(Role.USER, "2000")
    before = state(d)  # nothing chosen, no phone registered
    sid = await opened(d, alice)
    path = f"/v1/me/sessions/{sid}"
    # idle for 6 minutes already (the agent reports what the desktop says)
    status, body = await call(d, "PUT", path, alice, {"state": "idle", "idle_seconds": 360})
    assert status == 200 and body["session"]["state"] == "idle", body
    assert state(d) == ("away", "idle", "timed:sessions")
    # input again: idle ends at once
    assert (await call(d, "PUT", path, alice, {"state": "active"}))[0] == 200
    assert state(d) == before
    # the screen locks: xa / away-from-desk
    assert (await call(d, "PUT", path, alice, {"state": "locked"}))[0] == 200
    assert state(d) == ("xa", "away-from-desk", "timed:sessions")
    # logout: closed; no phone registered (PJSIP/2000 UNAVAILABLE): offline
    status, body = await call(d, "DELETE", path, alice)
    assert status == 200 and body == {"closed": True}
    assert state(d)[:2] == ("unavailable", "offline")
    # the session is gone
    assert (await call(d, "PUT", path, alice, {"state": "active"}))[0] == 404
    # a new session: no longer offline
    await opened(d, alice)
    assert state(d) == before


async def test_a_chosen_dnd_a_call_and_a_later_choice_win(
        fake_ami: FakeAsterisk, tmp_path: Path, daemons: Starter) -> None:
    d = await start(daemons, fake_ami, tmp_path)
    bob = await d.make_token(Role.USER, "2001")
    sid = await opened(d, bob)
    path = f"/v1/me/sessions/{sid}"
    await d.service.set_manual("2001", Presence(State.DND, "", "focus"), "api")
    await call(d, "PUT", path, bob, {"state": "idle", "idle_seconds": 400})
    assert state(d, "2001")[::2] == ("dnd", "manual-protected")
    await d.service.set_manual("2001", Presence(State.CHAT), "api")  # spoke after idle began
    assert state(d, "2001") == ("chat", "", "manual")
    # a call still shows over idle
    alice = await d.make_token(Role.USER, "2000")
    mine = await opened(d, alice)
    await call(d, "PUT", f"/v1/me/sessions/{mine}", alice, {"state": "idle", "idle_seconds": 400})
    assert state(d)[:2] == ("away", "idle")
    await fake_ami.external_device_change("PJSIP/2000", "INUSE")
    await barrier(d, fake_ami)
    assert state(d)[2] == "on-the-phone"
    await fake_ami.external_device_change("PJSIP/2000", "NOT_INUSE")
    await barrier(d, fake_ami)
    assert state(d)[:2] == ("away", "idle")  # and idle is back when the call ends


async def test_heartbeats_stop_then_the_session_expires(
        fake_ami: FakeAsterisk, tmp_path: Path, daemons: Starter) -> None:
    rules = replace(RULES, expire_after=timedelta(seconds=1))
    d = await start(daemons, fake_ami, tmp_path, rules)
    alice = await d.make_token(Role.USER, "2000")
    await d.service.set_manual("2000", Presence(State.AVAILABLE), "api")
    sid = await opened(d, alice)
    assert state(d) == ("available", "", "manual")
    # the client is killed: no report, no close. After a second: offline.
    await until(lambda: state(d)[:2] == ("unavailable", "offline"), timeout=5,
                what="the session to expire")
    assert (await call(d, "PUT", f"/v1/me/sessions/{sid}", alice, {"state": "active"}))[0] \
        == 404  # the client is told to open a new one


async def test_who_sees_what_and_bad_requests(fake_ami: FakeAsterisk, tmp_path: Path,
                                             daemons: Starter) -> None:
    d = await start(daemons, fake_ami, tmp_path)
    alice = await d.make_token(Role.USER, "2000")
    bob = await d.make_token(Role.USER, "2001")
    operator = await d.make_token(Role.OPERATOR)
    sid = await opened(d, alice)
    await call(d, "PUT", f"/v1/me/sessions/{sid}", alice, {"state": "idle", "idle_seconds": 150})
    status, mine = await call(d, "GET", "/v1/me/sessions", alice)
    assert status == 200 and mine["sessions"][0]["client"] == "agent on alice-laptop"
    assert mine["sessions"][0]["last_active_ago"] >= 150
    status, theirs = await call(d, "GET", "/v1/users/2000/sessions", bob)
    assert status == 200 and theirs["sessions"] == [{"last_active_ago": 120}]  # the minute
    status, full = await call(d, "GET", "/v1/users/2000/sessions", operator)
    assert full["sessions"][0]["id"] == sid
    # another user's session is not bob's to report or close
    assert (await call(d, "PUT", f"/v1/me/sessions/{sid}", bob, {"state": "active"}))[0] == 404
    assert (await call(d, "DELETE", f"/v1/me/sessions/{sid}", bob))[0] == 404
    bad: list[tuple[str, str, Any]] = [
        ("POST", "/v1/me/sessions", {"kind": "toaster"}),
        ("POST", "/v1/me/sessions", {"client": "x\ny"}),
        ("PUT", f"/v1/me/sessions/{sid}", {"state": "sleeping"}),
        ("PUT", f"/v1/me/sessions/{sid}", {"state": "idle", "idle_seconds": -5}),
        ("PUT", f"/v1/me/sessions/{sid}", {"state": "idle", "mouse_moves": 3}),
    ]
    for method, path, body in bad:
        status, answer = await call(d, method, path, alice, body)
        assert status == 400, (path, body, answer)
    assert (await call(d, "POST", "/v1/me/sessions", operator, {}))[0] == 403  # no user


async def test_sessions_per_person_are_bounded(fake_ami: FakeAsterisk, tmp_path: Path,
                                               daemons: Starter) -> None:
    d = await start(daemons, fake_ami, tmp_path)
    alice = await d.make_token(Role.USER, "2000")
    first = await opened(d, alice)
    for _ in range(MAX_PER_USER):
        await opened(d, alice, kind="board")
    status, mine = await call(d, "GET", "/v1/me/sessions", alice)
    assert len(mine["sessions"]) == MAX_PER_USER
    assert first not in {s["id"] for s in mine["sessions"]}  # the stalest went


@pytest.mark.parametrize(("raw", "message"), [
    ({"expire_after": 0}, "more than 0"), ({"idle_away_after": "1h", "idle_xa_after": "5m"},
                                           "not shorter"),
    ({"idle": "sleepy"}, "invalid state"), ({"heartbeat": 5}, "unknown key"),
])
def test_the_section_is_checked(raw: dict[str, Any], message: str) -> None:
    from astpresence.domain.model import InvalidInput
    from astpresence.sources.sessions.plugin import parse_section

    with pytest.raises(InvalidInput, match=message):
        parse_section(raw, "astpresence.toml")


async def test_a_contribution_left_from_before_a_restart_goes(
        fake_ami: FakeAsterisk, tmp_path: Path, daemons: Starter) -> None:
    rules = replace(RULES, expire_after=timedelta(seconds=1))
    d = await start(daemons, fake_ami, tmp_path, rules)
    alice = await d.make_token(Role.USER, "2000")
    sid = await opened(d, alice)
    await call(d, "PUT", f"/v1/me/sessions/{sid}", alice, {"state": "locked"})
    assert state(d)[:2] == ("xa", "away-from-desk")
    await d.stop()  # the daemon restarts; the desktop that locked is gone for good
    d = await start(daemons, fake_ami, tmp_path, rules)
    assert state(d)[:2] == ("xa", "away-from-desk")  # as stored, for expire_after
    await until(lambda: d.service.contributions.get("2000", "sessions") is None, timeout=5,
                what="the stale contribution to go")


async def test_a_session_carried_by_the_event_stream(fake_ami: FakeAsterisk, tmp_path: Path,
                                                    daemons: Starter) -> None:
    import aiohttp

    d = await start(daemons, fake_ami, tmp_path, replace(RULES, expire_after=timedelta(
        seconds=3)))
    alice = await d.make_token(Role.USER, "2000")
    source: Any = d.daemon.sources["sessions"]
    async with aiohttp.ClientSession() as http:
        async with http.ws_connect(d.url + "/v1/events") as ws:
            await ws.send_json({"token": alice, "subscribe": ["2000"],
                                "session": {"client": "desk client", "kind": "api"}})
            hello = await ws.receive_json(timeout=5)
            assert hello["type"] == "hello" and hello["session"]["session"]["kind"] == "api"
            await ws.send_json({"session": {"state": "locked"}})
            await until(lambda: state(d)[:2] == ("xa", "away-from-desk"))
            # the open socket is the heartbeat: alive past expire_after (3 s)
            sid = source.of("2000")[0].id
            await until(lambda: source.of("2000")[0].last_report
                        > source.of("2000")[0].opened + timedelta(seconds=1.5), timeout=5,
                        what="a renewal by the server")
            assert source.of("2000")[0].id == sid and state(d)[:2] == ("xa", "away-from-desk")
            await ws.send_json({"session": {"state": "sleeping"}})  # refused: stream ends
            refused = await ws.receive_json(timeout=5)
            while refused["type"] == "presence":  # the lock's own event came first
                refused = await ws.receive_json(timeout=5)
            assert refused["type"] == "error" and "state" in refused["error"]
        # the socket closed: so did the session (no phone registered: offline)
        await until(lambda: state(d)[:2] == ("unavailable", "offline"), what="closed")
        operator = await d.make_token(Role.OPERATOR)
        async with http.ws_connect(d.url + "/v1/events") as ws:
            await ws.send_json({"token": operator, "subscribe": ["*"], "session": {}})
            answer = await ws.receive_json(timeout=5)
            assert answer["type"] == "error" and "belong to a user" in answer["error"]


async def test_sessions_beside_a_calendar_entry(fake_ami: FakeAsterisk, tmp_path: Path,
                                               daemons: Starter) -> None:
    """Two timed sources: the one set last wins (docs/presence-rules.md, rule 4),
    unless timed_priority says otherwise; each goes when its reason does."""
    from datetime import UTC, datetime

    from astpresence.domain.records import SourceRecord

    d = await start(daemons, fake_ami, tmp_path)
    alice = await d.make_token(Role.USER, "2000")
    sid = await opened(d, alice)
    await call(d, "PUT", f"/v1/me/sessions/{sid}", alice, {"state": "idle", "idle_seconds": 400})
    assert state(d) == ("away", "idle", "timed:sessions")
    now = datetime.now(UTC)
    await d.service.set_source(SourceRecord("2000", "calendar", Presence(State.DND, "meeting"),
                                            now, "calendar", now, now + timedelta(hours=1)))
    assert state(d) == ("dnd", "meeting", "timed:calendar")  # set last
    await call(d, "PUT", f"/v1/me/sessions/{sid}", alice, {"state": "active"})
    assert state(d) == ("dnd", "meeting", "timed:calendar")  # the meeting is still on
    await call(d, "PUT", f"/v1/me/sessions/{sid}", alice, {"state": "locked"})
    assert state(d) == ("xa", "away-from-desk", "timed:sessions")  # the lock came later
    await d.service.delete_source("2000", "calendar", "calendar")
    assert state(d)[2] == "timed:sessions"
