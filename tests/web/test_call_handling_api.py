"""Call handling over the API and the CLI: who may see and change whose rules, what
a bad body gets, and that a refused change leaves everything as it was."""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path
from typing import Any

import click
import pytest

from astpresence.cli.calls import parse_words
from astpresence.domain.call_settings import CallSettings
from astpresence.domain.calls import ForwardPolicy
from astpresence.domain.model import Presence, State
from astpresence.web.auth import Role
from tests.conftest import Starter
from tests.support.api import Stream, call
from tests.support.e2e import cli, make_config
from tests.support.fakeami import FakeAsterisk, Hint

CALLS = CallSettings(True, (), ForwardPolicy(True, (re.compile(r"01[0-9]{6,12}"),)),
                     "Local/{to}@from-internal")
RULES = {"rules": [{"when": "away", "callers": "external", "action": "forward",
                    "to": "0171234567", "after": 20},
                   {"when": "away", "action": "voicemail"}]}


@pytest.fixture
async def running(fake_ami: FakeAsterisk, tmp_path: Path, daemons: Starter) -> Any:
    fake_ami.hints[:] = [Hint(u, "default", [f"PJSIP/{u}"], f"CustomPresence:{u}")
                         for u in ("2000", "2001")]
    return await daemons(replace(make_config(fake_ami, tmp_path / "p.db"), calls=CALLS,
                                 writes_per_second=1000.0, write_burst=1000))


async def test_a_person_edits_their_own_rules_and_nobody_elses(running: Any) -> None:
    alice = await running.make_token(Role.USER, "2000")
    status, answer = await call(running, "PUT", "/v1/me/call-handling", alice, RULES)
    assert status == 200 and answer["rules"] == RULES["rules"]
    assert answer["updated_by"] == "api:2000"
    status, answer = await call(running, "GET", "/v1/users/2000/call-handling", alice)
    assert status == 200 and answer["now"]["internal"]["summary"] == "calls follow presence"
    for method, body in (("GET", None), ("PUT", RULES)):
        status, answer = await call(running, method, "/v1/users/2001/call-handling", alice,
                                    body)
        assert status == 403, answer
    assert running.service.call_rules("2001")["rules"] == []


async def test_operators_edit_anyones_and_unknown_users_are_404(running: Any) -> None:
    operator = await running.make_token(Role.OPERATOR)
    status, answer = await call(running, "PUT", "/v1/users/2001/call-handling", operator,
                                RULES)
    assert status == 200 and answer["user"] == "2001"
    assert (await call(running, "GET", "/v1/users/9999/call-handling", operator))[0] == 404
    status, answer = await call(running, "GET", "/v1/me/call-handling", operator)
    assert status == 403 and "not tied to a user" in answer["error"]


@pytest.mark.parametrize(("body", "message"), [
    ({"rules": [{"when": "away", "action": "forward", "to": "0900123456"}]},
     "not allowed by this site's policy"),
    ({"rules": [{"when": "away", "action": "fly"}]}, "'action' is 'fly'"),
    ({"rules": [{"when": "away", "action": "busy"}], "extra": 1}, "unknown field(s) extra"),
    ({"rules": "away"}, "'rules' (a list)"),
    ({"rules": [], "show_presence": "yes"}, "'show_presence' is true, false or null"),
    ([], "must be a JSON object"),
])
async def test_bad_bodies_change_nothing(running: Any, body: Any, message: str) -> None:
    alice = await running.make_token(Role.USER, "2000")
    assert (await call(running, "PUT", "/v1/me/call-handling", alice, RULES))[0] == 200
    status, answer = await call(running, "PUT", "/v1/me/call-handling", alice, body)
    assert status == 400 and message in answer["error"], answer
    assert running.service.call_rules("2000")["rules"] == RULES["rules"]


async def test_the_cli_sets_shows_and_clears(running: Any) -> None:
    result = await cli(running.url, "calls", "set", "2000",
                       "away external forward to 0171234567 after 20", "away voicemail")
    assert result.code == 0, result.err
    assert running.service.call_rules("2000")["rules"] == RULES["rules"]
    await running.service.set_manual("2000", Presence(State.AWAY), "api")
    shown = await cli(running.url, "calls", "show", "2000")
    assert "away external forward to 0171234567 after 20" in shown.out
    assert "now, external callers: calls are forwarded to 0171234567 after 20 s" in shown.out
    refused = await cli(running.url, "calls", "set", "2000", "away forward to 0900123456")
    assert refused.code != 0 and "not allowed" in refused.err
    assert "Traceback" not in refused.err
    told = await cli(running.url, "calls", "set", "2000", "away voicemail",
                     "--show-presence", "on")
    assert told.code == 0 and "callers see: 2000 (and the presence)" in told.out, told.err
    assert (await cli(running.url, "calls", "clear", "2000")).code == 0
    assert running.service.call_rules("2000")["rules"] == []
    assert running.service.call_rules("2000")["show_presence"] is True  # kept by clear


@pytest.mark.parametrize(("words", "rule"), [
    ("away voicemail", {"when": "away", "action": "voicemail"}),
    ("dnd internal on no_answer forward to 2001", {"when": "dnd", "callers": "internal",
                                                    "on": "no_answer", "action": "forward",
                                                    "to": "2001"}),
    ("available ring timeout 15", {"when": "available", "action": "ring", "timeout": 15}),
    ("xa forward to 2001 both", {"when": "xa", "action": "forward", "to": "2001",
                                 "both": True}),
])
def test_rule_words(words: str, rule: dict[str, Any]) -> None:
    assert parse_words(words) == rule


@pytest.mark.parametrize("words", ["away", "away teleport", "away forward to",
                                   "away ring timeout soon", "away busy busy"])
def test_rule_words_that_do_not_read(words: str) -> None:
    with pytest.raises(click.UsageError):
        parse_words(words)


async def test_the_card_says_what_happens_to_a_call_and_streams_hear_of_it(
        running: Any) -> None:
    alice = await running.make_token(Role.USER, "2000")
    bob = await running.make_token(Role.USER, "2001")  # sees 2000's state only
    await running.service.set_manual("2000", Presence(State.AWAY), "api")
    own = await Stream.open(running, {"token": alice, "subscribe": ["2000"]})
    other = await Stream.open(running, {"token": bob, "subscribe": ["2000"]})
    try:
        assert (await own.next())["type"] == "hello"
        assert (await other.next())["type"] == "hello"
        assert (await call(running, "PUT", "/v1/me/call-handling", alice, RULES))[0] == 200
        ev = await own.next()
        assert ev["changed"] == ["calls"]
        assert ev["presence"]["calls"] == (
            "internal calls go to voicemail; external calls are forwarded to 0171234567 "
            "after 20 s")
        # bob may not see where calls go: he was sent nothing (the next message he
        # gets is the next change he may see)
        await running.service.set_manual("2000", Presence(State.DND), "api")
        ev = await other.next()
        assert ev["changed"] == ["state", "chosen"] and ev["presence"]["calls"] == ""
    finally:
        await own.close()
        await other.close()
