"""Clients: tokens and roles, presence levels, self-publish with expiry, the event
stream with resume, OpenAPI and metrics -- all over real HTTP against the daemon."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from astpresence.web.auth import Role
from astpresence.domain.model import Presence, State
from astpresence.domain.records import SourceRecord
from tests.support.api import Stream, call
from tests.support.e2e import RunningDaemon, cli, until
from tests.support.fakeami import FakeAsterisk

async def test_requests_without_a_valid_token_get_401(daemon: RunningDaemon) -> None:
    user = await daemon.make_token(Role.USER, "2000")
    cases: list[tuple[dict[str, str], str]] = [
        ({}, "missing token"),
        ({"Authorization": "Basic abc"}, "malformed Authorization header"),
        ({"Authorization": "Bearer nope"}, "malformed token"),
        ({"Authorization": "Bearer astp_00000000_" + "x" * 32}, "unknown token"),
    ]
    async with aiohttp.ClientSession() as http:
        for headers, message in cases:
            async with http.put(daemon.url + "/v1/presence/2000", json={"state": "dnd"},
                                headers=headers) as resp:
                assert resp.status == 401
                assert resp.headers["WWW-Authenticate"].startswith("Bearer")
                assert message in (await resp.json())["error"]
    # Revoked through the API by an admin: refused from the next request on.
    token_id = user.split("_")[1]
    assert (await call(daemon, "DELETE", f"/v1/tokens/{token_id}", daemon.token))[0] == 200
    status, body = await call(daemon, "GET", "/v1/presence", user)
    assert status == 401 and body["error"] == "token revoked"
    assert daemon.service.view("2000").presence.state == State.NOT_SET


async def test_roles(daemon: RunningDaemon, fake_ami: FakeAsterisk) -> None:
    alice = await daemon.make_token(Role.USER, "2000")
    operator = await daemon.make_token(Role.OPERATOR)
    assert (await call(daemon, "PUT", "/v1/presence/2000", alice, {"state": "dnd"}))[0] == 200
    status, body = await call(daemon, "PUT", "/v1/presence/2001", alice, {"state": "dnd"})
    assert status == 403 and "only its own presence" in body["error"]
    status, _ = await call(daemon, "PUT", "/v1/presence/2001/sources/calendar", alice,
                           {"state": "away", "ttl": 60})
    assert status == 403
    assert (await call(daemon, "DELETE", "/v1/presence/2001", alice))[0] == 403
    assert daemon.service.view("2001").presence.state == State.NOT_SET
    assert (await call(daemon, "PUT", "/v1/presence/2001", operator,
                       {"state": "away"}))[0] == 200
    for path in ("/v1/tokens", "/v1/config"):
        assert (await call(daemon, "GET", path, operator))[0] == 403
        assert (await call(daemon, "GET", path, alice))[0] == 403
    status, config = await call(daemon, "GET", "/v1/config", daemon.token)
    assert status == 200 and config["ami"]["secret"] == {"set": True}
    assert fake_ami.secret not in json.dumps(config)
    # Generated from the Config dataclass: every setting is there.
    assert set(config) == {f.name for f in dataclasses.fields(daemon.daemon.config)}
    assert config["max_users"] == 20_000 and config["rules"]["mirror_via"] == "ami"
    status, me = await call(daemon, "GET", "/v1/me", alice)
    assert me["token"]["role"] == "user" and me["user"]["id"] == "2000"
    assert me["presence"]["state"] == "dnd"
    status, body = await call(daemon, "PUT", "/v1/me/presence", operator, {"state": "dnd"})
    assert status == 403 and "not tied to a user" in body["error"]


async def test_token_admin_api(daemon: RunningDaemon) -> None:
    status, made = await call(daemon, "POST", "/v1/tokens", daemon.token,
                              {"role": "user", "user": "2001", "label": "desk"})
    assert status == 201 and made["token"].startswith("astp_")
    status, listed = await call(daemon, "GET", "/v1/tokens", daemon.token)
    assert made["id"] in [t["id"] for t in listed["tokens"]]
    assert made["token"] not in json.dumps(listed)  # shown once, stored hashed
    assert (await call(daemon, "PUT", "/v1/me/presence", made["token"],
                       {"state": "chat"}))[0] == 200
    for body, message in [({"role": "boss"}, "invalid role 'boss'"),
                          ({"role": "user"}, "needs --user"),
                          ({"role": "user", "user": "a b"}, "forbidden character"),
                          ({"role": "admin", "extra": 1}, "unknown field(s) extra")]:
        status, err = await call(daemon, "POST", "/v1/tokens", daemon.token, body)
        assert status == 400 and message in err["error"], body
    assert (await call(daemon, "DELETE", "/v1/tokens/ffffffff", daemon.token))[0] == 404


def visible(body: dict[str, Any]) -> tuple[str, str, str]:
    return body["state"], body["subtype"], body["message"]


async def test_presence_levels_on_rest_reads(daemon: RunningDaemon) -> None:
    for uid in ("2000", "2001", "2002"):
        await daemon.service.set_manual(uid, Presence(State.DND, "meeting", f"note {uid}"),
                                        "api")
    alice = await daemon.make_token(Role.USER, "2000")  # in no group
    bob = await daemon.make_token(Role.USER, "2001")  # group support with carol
    carol = await daemon.make_token(Role.USER, "2002")
    expect = {
        # viewer: {target: what it sees}
        alice: {"2000": ("dnd", "meeting", "note 2000"),  # self: full
                "2001": ("dnd", "", ""),  # team, not in the group: state only
                "2002": ("not_set", "", "")},  # blocked
        bob: {"2000": ("dnd", "", ""),  # public: state only
              "2001": ("dnd", "meeting", "note 2001"),
              "2002": ("not_set", "", "")},  # blocked even for the group
        carol: {"2001": ("dnd", "meeting", "note 2001")},  # same group
        daemon.token: {"2002": ("dnd", "meeting", "note 2002")},  # admin sees all
    }
    for token, targets in expect.items():
        for uid, seen in targets.items():
            status, body = await call(daemon, "GET", f"/v1/presence/{uid}", token)
            assert status == 200 and visible(body) == seen, (token[:13], uid)
        status, listing = await call(daemon, "GET", "/v1/presence", token)
        by_user = {p["user"]: visible(p) for p in listing["presence"]}
        for uid, seen in targets.items():
            assert by_user[uid] == seen
    # Filtering by state uses what the viewer sees: blocked 2002 is not "dnd" to alice.
    status, listing = await call(daemon, "GET", "/v1/presence?state=dnd", alice)
    assert [p["user"] for p in listing["presence"]] == ["2000", "2001"]
    # Details (history, sources) only where the viewer sees everything.
    assert (await call(daemon, "GET", "/v1/presence/2001/history", alice))[0] == 403
    assert (await call(daemon, "GET", "/v1/presence/2001/history", carol))[0] == 200
    assert (await call(daemon, "GET", "/v1/presence/2002/sources", bob))[0] == 403


async def test_self_publish_with_expiry_reverts(daemon: RunningDaemon,
                                                fake_ami: FakeAsterisk) -> None:
    alice = await daemon.make_token(Role.USER, "2000")
    await call(daemon, "PUT", "/v1/me/presence", alice, {"state": "available", "message": "in"})
    status, body = await call(daemon, "PUT", "/v1/me/presence", alice,
                              {"state": "away", "message": "coffee", "expires": 0.5})
    assert status == 200 and body["state"] == "away"
    await until(lambda: fake_ami.presences.get("2000", ("",))[0] == "away")
    # At the end the manual choice lapses: nothing else contributes, so not_set.
    await until(lambda: daemon.service.view("2000").presence.state == State.NOT_SET,
                timeout=5, what="expiry")
    await until(lambda: fake_ami.presences.get("2000", ("not_set",))[0] == "not_set")
    for body, message in [({"state": "away", "expires": -1}, "must be a number of seconds"),
                          ({"state": "away", "expires": "2001-01-01T00:00:00Z"}, "in the past"),
                          ({"state": "away", "expires": True}, "expires must be"),
                          ({"state": "away", "until": 5}, "unknown field(s) until")]:
        status, err = await call(daemon, "PUT", "/v1/me/presence", alice, body)
        assert status == 400 and message in err["error"], body


async def test_events_follow_visibility_and_subscriptions(daemon: RunningDaemon) -> None:
    alice = await daemon.make_token(Role.USER, "2000")
    s_all = await Stream.open(daemon, {"token": alice, "subscribe": ["*"]})
    s_one = await Stream.open(daemon, {"token": alice, "subscribe": ["2000"]})
    try:
        assert (await s_all.next())["type"] == "hello"
        assert (await s_one.next())["type"] == "hello"
        svc = daemon.service
        await svc.set_manual("2001", Presence(State.DND, "meeting", "secret"), "api")
        ev = await s_all.next()
        assert ev["user"] == "2001" and visible(ev["presence"]) == ("dnd", "", "")
        # Subtype, message, what set it and the rule are not alice's to see.
        assert ev["changed"] == ["state", "chosen"]
        assert (ev["presence"]["source"], ev["presence"]["rule"], ev["presence"]["actor"]) == (
            "", "", "")
        await svc.set_manual("2001", Presence(State.DND, "meeting", "still secret"), "api")
        # The same state from a timed source whose name says too much: the source
        # changes, which alice may not see, so she is sent nothing.
        await svc.set_source(SourceRecord("2001", "job-interview", Presence(State.DND),
                                          datetime.now(UTC), "api"))
        await svc.clear_manual("2001", "api")
        assert svc.view("2001").source == "job-interview"
        await svc.set_manual("2002", Presence(State.AWAY, "", "hidden"), "api")  # blocked
        await svc.set_manual("2000", Presence(State.CHAT, "", "me"), "api")
        ev = await s_all.next()  # the two invisible changes were not sent
        assert ev["user"] == "2000" and ev["changed"] == ["state", "message", "source", "chosen"]
        ev_one = await s_one.next()
        assert ev_one["seq"] == ev["seq"] and ev_one["presence"]["message"] == "me"
        # Nothing else was sent: the next message is the next change.
        await svc.set_manual("2000", Presence(State.XA), "api")
        for stream in (s_all, s_one):
            marker = await stream.next()
            assert (marker["user"], marker["presence"]["state"]) == ("2000", "xa")
    finally:
        await s_all.close()
        await s_one.close()


async def test_resume_after_reconnect_and_snapshot_when_too_old(daemon: RunningDaemon) -> None:
    svc = daemon.service
    s = await Stream.open(daemon, {"token": daemon.token, "subscribe": ["*"]})
    hello = await s.next()
    await svc.set_manual("2000", Presence(State.DND), "api")
    last = (await s.next())["seq"]
    await s.close()
    # Changes while the client is away.
    await svc.set_manual("2000", Presence(State.AWAY), "api")
    await svc.set_manual("2001", Presence(State.XA), "api")
    s = await Stream.open(daemon, {"token": daemon.token, "subscribe": ["*"], "resume": last})
    try:
        assert (await s.next())["type"] == "hello"
        missed = [await s.next(), await s.next()]
        assert [(e["seq"], e["user"], e["presence"]["state"]) for e in missed] == [
            (last + 1, "2000", "away"), (last + 2, "2001", "xa")]
        await svc.set_manual("2000", Presence(State.CHAT), "api")
        marker = await s.next()  # nothing came in between
        assert (marker["seq"], marker["presence"]["state"]) == (last + 3, "chat")
    finally:
        await s.close()
    # A seq from before the buffer (or from another run): a snapshot, flagged stale.
    for resume in (hello["seq"] + 10_000, ):
        s = await Stream.open(daemon, {"token": daemon.token, "subscribe": ["2001"],
                                       "resume": resume})
        try:
            assert (await s.next())["type"] == "hello"
            snap = await s.next()
            assert snap["type"] == "snapshot" and snap["stale"] is True
            assert [(p["user"], p["state"]) for p in snap["presence"]] == [("2001", "xa")]
        finally:
            await s.close()
    svc.events._recent.clear()  # the buffer no longer reaches back to `last`
    await svc.set_manual("2000", Presence(State.CHAT), "api")
    s = await Stream.open(daemon, {"token": daemon.token, "subscribe": ["*"], "resume": last})
    try:
        await s.next()
        assert (await s.next())["type"] == "snapshot"
    finally:
        await s.close()


@pytest.mark.parametrize(
    ("hello", "message"),
    [
        ({"subscribe": ["*"]}, "missing token"),
        ({"token": "astp_00000000_" + "y" * 32, "subscribe": ["*"]}, "unknown token"),
        ({"token": "TOKEN", "subscribe": [str(i) for i in range(1001)]}, "too many subscriptions"),
        ({"token": "TOKEN", "subscribe": ["9999"]}, "unknown user '9999'"),
        ({"token": "TOKEN", "subscribe": "2000"}, "subscribe must be"),
        ({"token": "TOKEN", "resume": "x"}, "resume must be"),
        ({"token": "TOKEN", "colour": 1}, "unknown field(s) colour"),
    ],
)
async def test_bad_websocket_clients_are_refused(daemon: RunningDaemon, hello: dict[str, Any],
                                                 message: str) -> None:
    if hello.get("token") == "TOKEN":
        hello["token"] = daemon.token
    s = await Stream.open(daemon, hello)
    try:
        err = await s.next()
        assert err["type"] == "error" and message in err["error"]
        closed = await asyncio.wait_for(s.ws.receive(), 5)
        assert closed.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
    finally:
        await s.close()
    await until(lambda: daemon.service.events.subscribers == 0)


async def test_misbehaving_client_dropped_others_unaffected(daemon: RunningDaemon) -> None:
    good = await Stream.open(daemon, {"token": daemon.token, "subscribe": ["*"]})
    bad = await Stream.open(daemon, {"token": daemon.token, "subscribe": ["*"]})
    try:
        await good.next()
        await bad.next()
        await bad.ws.send_str("this is not json")
        err = await bad.next()
        assert err["type"] == "error"
        await until(lambda: daemon.service.events.subscribers == 1)
        await daemon.service.set_manual("2000", Presence(State.DND), "api")
        assert (await good.next())["presence"]["state"] == "dnd"
        # Changing the subscription on a live stream works.
        await good.ws.send_json({"subscribe": ["2001"]})
        await good.sync()  # the server has applied it
        await daemon.service.set_manual("2000", Presence(State.AWAY), "api")
        await daemon.service.set_manual("2001", Presence(State.AWAY), "api")
        assert (await good.next())["user"] == "2001"
    finally:
        await good.close()
        await bad.close()


async def test_slow_client_is_disconnected(daemon: RunningDaemon) -> None:
    s = await Stream.open(daemon, {"token": daemon.token, "subscribe": ["*"]})
    try:
        await s.next()
        await until(lambda: daemon.service.events.subscribers == 1)
        await daemon.service.set_manual("2000", Presence(State.DND), "api")
        event = daemon.service.events._recent[-1]
        sub = next(iter(daemon.service.events._subs))
        # Its queue full (no await in between, so the sender cannot drain it)...
        while not sub.queue.full():
            sub.queue.put_nowait(event)
        # ...the next change drops it from the fan-out at once, not blocking anyone.
        await daemon.service.set_manual("2000", Presence(State.AWAY), "api")
        assert daemon.service.events.subscribers == 0
        while True:  # it gets what was queued, then a close saying why
            msg = await asyncio.wait_for(s.ws.receive(), 10)
            if msg.type != aiohttp.WSMsgType.TEXT:
                break
        assert msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
        assert s.ws.close_code == 1011
    finally:
        await s.close()


async def test_openapi_matches_routes(daemon: RunningDaemon) -> None:
    async with aiohttp.ClientSession() as http:  # public, no token
        async with http.get(daemon.url + "/v1/openapi.json") as resp:
            doc = await resp.json()
    documented = {(method.upper(), path) for path, item in doc["paths"].items()
                  for method in item if method in ("get", "put", "post", "delete", "patch")}
    app = daemon.daemon._runner.app  # type: ignore[union-attr]
    served = set()
    for route in app.router.routes():
        info = route.resource.get_info() if route.resource else {}
        path = info.get("path") or info.get("formatter")
        if route.method != "HEAD" and path:
            served.add((route.method, path))
    assert documented == served


async def test_metrics(daemon: RunningDaemon, fake_ami: FakeAsterisk) -> None:
    await daemon.service.set_manual("2001", Presence(State.DND), "api")
    await until(lambda: not daemon.service.pending_users())
    s = await Stream.open(daemon, {"token": daemon.token, "subscribe": ["*"]})
    await s.next()
    try:
        async with aiohttp.ClientSession() as http:
            async with http.get(daemon.url + "/metrics") as resp:
                text = await resp.text()
        lines = dict(line.rsplit(" ", 1) for line in text.splitlines()
                     if line and not line.startswith("#"))
        assert float(lines['astpresence_ami_up{node="asterisk"}']) == 1
        assert float(lines['astpresence_users{state="dnd"}']) == 1
        assert float(lines['astpresence_users{state="not_set"}']) == 2
        assert float(lines["astpresence_websocket_clients"]) == 1
        assert float(lines["astpresence_setvar_seconds_count"]) >= 1
        assert float(lines['astpresence_ami_events_total{type="PresenceStateChange"}']) >= 1
        assert 'astpresence_ami_reconnects_total{node="asterisk"}' in lines
        await call(daemon, "GET", "/v1/presence", None)
        async with aiohttp.ClientSession() as http:
            async with http.get(daemon.url + "/metrics") as resp:
                assert 'astpresence_api_refused_total{status="401"} 1.0' in await resp.text()
    finally:
        await s.close()


async def test_cli_tokens_and_revocation(daemon: RunningDaemon) -> None:
    db = daemon.daemon.config.db
    res = await cli(daemon.url, "token", "create", "--db", db, "--role", "user", "--user",
                    "2000", "--json")
    assert res.code == 0, res.err
    made = json.loads(res.out)
    got = await cli(daemon.url, "set", "2000", "dnd", token=made["token"])
    assert got.code == 0, got.err
    denied = await cli(daemon.url, "set", "2001", "dnd", token=made["token"])
    assert denied.code == 1 and "only its own presence" in denied.err
    listing = await cli(daemon.url, "token", "list", "--db", db)
    assert made["id"] in listing.out and made["token"] not in listing.out
    assert (await cli(daemon.url, "token", "revoke", made["id"], "--db", db)).code == 0
    gone = await cli(daemon.url, "get", "2000", token=made["token"])
    assert gone.code == 1 and "token revoked" in gone.err and "ASTPRESENCE_TOKEN" in gone.err
    again = await cli(daemon.url, "token", "revoke", made["id"], "--db", db)
    assert again.code == 1 and "no active token" in again.err
    bad = await cli(daemon.url, "token", "create", "--db", db, "--role", "user")
    assert bad.code == 1 and "needs --user" in bad.err
    none = await cli(daemon.url, "list", token="")
    assert none.code == 1 and "missing token" in none.err
    # The token can also come from the [cli] table of the ASTPRESENCE_CONFIG file.
    conf = Path(db).parent / "cli.toml"
    conf.write_text(f'[cli]\ntoken = "{daemon.token}"\n')
    via_file = await cli(daemon.url, "get", "2000", "--json", token="",
                         env_extra={"ASTPRESENCE_CONFIG": str(conf)})
    assert via_file.code == 0 and json.loads(via_file.out)["user"] == "2000"
