"""Call handling in astdb, against the fake AMI: written when presence or the rules
change, one write per kind of caller and change, nothing written twice, read back
after a reconnect, and never a forward the policy does not allow."""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from astpresence.asterisk.call_codec import FAMILY
from astpresence.domain.call_settings import CallSettings
from astpresence.domain.calls import ForwardPolicy
from astpresence.domain.model import InvalidInput, Presence, State
from astpresence.engine.calls import CallsOff
from tests.conftest import Starter
from tests.support.e2e import RunningDaemon, barrier, make_config, until
from tests.support.fakeami import FakeAsterisk, Hint

AWAY_RULES = {"rules": [
    {"when": "away", "callers": "external", "action": "forward", "to": "0171234567",
     "after": 20},
    {"when": "away", "action": "voicemail"},
]}
POLICY = ForwardPolicy(users=True, allow=(re.compile(r"01[0-9]{6,12}"),))
ON = CallSettings(True, (), POLICY, "Local/{to}@from-internal")


def pbx(fake: FakeAsterisk) -> None:
    fake.hints[:] = [Hint(u, "default", [f"PJSIP/{u}"], f"CustomPresence:{u}")
                     for u in ("2000", "2001", "2002")]
    fake.devices.update({f"PJSIP/{u}": "NOT_INUSE" for u in ("2000", "2001", "2002")})


def db_writes(fake: FakeAsterisk, start: int = 0) -> list[tuple[str, str, str]]:
    return [((m.get("Action") or "").lower(), m.get("Key") or "", m.get("Val") or "")
            for m in fake.actions[start:]
            if (m.get("Action") or "").lower() in ("dbput", "dbdel")
            and m.get("Family") == FAMILY]


def held(fake: FakeAsterisk) -> dict[str, str]:
    return {k: v for (f, k), v in fake.astdb.items() if f == FAMILY}


async def start(daemons: Starter, fake: FakeAsterisk, tmp_path: Path,
                calls: CallSettings = ON) -> RunningDaemon:
    return await daemons(replace(make_config(fake, tmp_path / "p.db"), calls=calls))


async def test_rules_follow_presence_one_write_per_caller_kind_and_change(
        fake_ami: FakeAsterisk, tmp_path: Path, daemons: Starter) -> None:
    pbx(fake_ami)
    d = await start(daemons, fake_ami, tmp_path)
    await barrier(d, fake_ami)
    assert db_writes(fake_ami) == []  # nobody has a rule: nothing written
    view = await d.service.set_call_rules("2000", AWAY_RULES, "api:2000")
    assert view["rules"][0]["to"] == "0171234567"
    await barrier(d, fake_ami)
    assert db_writes(fake_ami) == []  # available: no rule holds yet
    mark = len(fake_ami.actions)
    await d.service.set_manual("2000", Presence(State.AWAY), "api")
    await until(lambda: len(held(fake_ami)) == 2, what="both keys")
    await barrier(d, fake_ami)
    assert held(fake_ami) == {
        "2000/external": "v1|forward,20,0,0171234567,Local/0171234567@from-internal|||",
        "2000/internal": "v1|voicemail,u|||"}
    assert len(db_writes(fake_ami, mark)) == 2
    # The same rule again (a message changes, away stays): nothing written.
    mark = len(fake_ami.actions)
    await d.service.set_manual("2000", Presence(State.AWAY, "", "back at 3"), "api")
    await barrier(d, fake_ami)
    assert db_writes(fake_ami, mark) == []
    # A call overlays nothing of the rule (the kit sees the phone busy itself).
    await fake_ami.external_device_change("PJSIP/2000", "INUSE")
    await barrier(d, fake_ami)
    assert db_writes(fake_ami, mark) == []
    # Back to available: both keys go (the kit routes by presence again).
    await d.service.set_manual("2000", Presence(State.AVAILABLE), "api")
    await until(lambda: not held(fake_ami), what="keys deleted")
    await barrier(d, fake_ami)
    assert [w[0] for w in db_writes(fake_ami, mark)] == ["dbdel", "dbdel"]


async def test_rules_change_rewrites_and_removing_them_deletes(
        fake_ami: FakeAsterisk, tmp_path: Path, daemons: Starter) -> None:
    pbx(fake_ami)
    d = await start(daemons, fake_ami, tmp_path)
    await d.service.set_manual("2001", Presence(State.DND), "api")
    await d.service.set_call_rules("2001", {"rules": [{"when": "dnd", "action": "busy"}]},
                                   "api")
    await until(lambda: held(fake_ami).get("2001/internal") == "v1|busy|||")
    assert held(fake_ami)["2001/external"] == "v1|busy|||"
    mark = len(fake_ami.actions)
    await d.service.set_call_rules("2001", {"rules": [
        {"when": "dnd", "callers": "internal", "action": "ring", "timeout": 15}]}, "api")
    await until(lambda: held(fake_ami).get("2001/internal") == "v1|ring,15|||")
    await until(lambda: "2001/external" not in held(fake_ami))
    await barrier(d, fake_ami)
    assert len(db_writes(fake_ami, mark)) == 2
    await d.service.set_call_rules("2001", {"rules": []}, "api")
    await until(lambda: not held(fake_ami))


async def test_bad_or_disallowed_rules_change_nothing(
        fake_ami: FakeAsterisk, tmp_path: Path, daemons: Starter) -> None:
    pbx(fake_ami)
    d = await start(daemons, fake_ami, tmp_path)
    await d.service.set_call_rules("2000", AWAY_RULES, "api")
    for body in ({"rules": [{"when": "away", "action": "forward", "to": "0900666"}]},
                 {"rules": [{"when": "away", "action": "teleport"}]}, {"rule": []}):
        with pytest.raises(InvalidInput):
            await d.service.set_call_rules("2000", body, "api")
    assert d.service.call_rules("2000")["rules"] == AWAY_RULES["rules"]


async def test_off_without_a_calls_section(
        fake_ami: FakeAsterisk, tmp_path: Path, daemons: Starter) -> None:
    pbx(fake_ami)
    d = await start(daemons, fake_ami, tmp_path, calls=CallSettings())
    with pytest.raises(CallsOff, match=r"\[calls\]"):
        await d.service.set_call_rules("2000", AWAY_RULES, "api")
    await d.service.set_manual("2000", Presence(State.AWAY), "api")
    await barrier(d, fake_ami)
    assert db_writes(fake_ami) == []


async def test_a_reconnect_writes_only_what_differs_and_a_policy_change_is_honoured(
        fake_ami: FakeAsterisk, tmp_path: Path, daemons: Starter) -> None:
    pbx(fake_ami)
    d = await start(daemons, fake_ami, tmp_path)
    await d.service.set_call_rules("2000", AWAY_RULES, "api")
    await d.service.set_call_rules("2001", {"rules": [{"when": "any", "on": "no_answer",
                                                       "action": "voicemail"}]}, "api")
    await d.service.set_manual("2000", Presence(State.AWAY), "api")
    await until(lambda: len(held(fake_ami)) == 4, what="four keys")
    # Changed in astdb behind astpresence's back while the link is down.
    fake_ami.astdb[(FAMILY, "2001/internal")] = "v1|busy|||"
    fake_ami.astdb[(FAMILY, "2002/internal")] = "v1|busy|||"  # 2002 has no rule
    mark = len(fake_ami.actions)
    logins = fake_ami.logins
    await fake_ami.drop_clients()
    await fake_ami.wait_for_login(logins + 1)
    await until(lambda: held(fake_ami).get("2001/internal") == "v1|default||voicemail,u|")
    await barrier(d, fake_ami)
    # Only the keys that differed are written; the others were read back (DBGetTree).
    assert sorted(db_writes(fake_ami, mark)) == [
        ("dbdel", "2002/internal", ""), ("dbput", "2001/internal", "v1|default||voicemail,u|")]
    await d.stop()
    # The site stops allowing mobile numbers: the stored forward is never written.
    strict = replace(ON, policy=ForwardPolicy(users=True))
    d = await start(daemons, fake_ami, tmp_path, calls=strict)
    await until(lambda: held(fake_ami).get("2000/external") == "v1|voicemail,u|||")
    assert d.service.call_rules("2000")["now"]["external"]["summary"] == "calls go to voicemail"


async def test_site_defaults_come_after_the_persons_rules(
        fake_ami: FakeAsterisk, tmp_path: Path, daemons: Starter) -> None:
    pbx(fake_ami)
    from astpresence.domain.calls import parse_rules
    defaults = parse_rules({"rules": [{"when": "xa", "action": "unavailable"},
                                      {"when": "away", "action": "busy"}]}, ())
    d = await start(daemons, fake_ami, tmp_path, calls=replace(ON, defaults=defaults))
    await d.service.set_call_rules("2000", {"rules": [{"when": "away", "action": "voicemail",
                                                       "greeting": "busy"}]}, "api")
    await d.service.set_manual("2000", Presence(State.AWAY), "api")
    await d.service.set_manual("2001", Presence(State.AWAY), "api")
    await d.service.set_manual("2002", Presence(State.XA), "api")
    await until(lambda: len(held(fake_ami)) == 6, what="six keys")
    assert {k: v for k, v in held(fake_ami).items() if k.endswith("internal")} == {
        "2000/internal": "v1|voicemail,b|||", "2001/internal": "v1|busy|||",
        "2002/internal": "v1|unavailable|||"}
    answer: dict[str, Any] = d.service.call_rules("2001")
    assert answer["rules"] == [] and answer["defaults"][0] == {"when": "xa",
                                                               "action": "unavailable"}


async def test_callers_told_why_site_wide_and_per_person(
        fake_ami: FakeAsterisk, tmp_path: Path, daemons: Starter) -> None:
    from astpresence.domain.records import UserRecord

    pbx(fake_ami)
    config = replace(make_config(fake_ami, tmp_path / "p.db",
                                 users=(UserRecord("2000", name='Zoë "<b>" Müller',
                                                   origin="config"),)),
                     calls=replace(ON, show_presence=True))
    d = await daemons(config)
    # every person's name, once, whatever their presence; no rule needed
    await until(lambda: held(fake_ami).get("2000/show") == "Zoë b Müller")
    await until(lambda: held(fake_ami).get("2001/show") == "2001")  # no name: the id
    mark = len(fake_ami.actions)
    await d.service.set_manual("2000", Presence(State.AWAY), "api")
    await barrier(d, fake_ami)
    assert db_writes(fake_ami, mark) == []  # presence does not change the name
    # 2001 does not want callers told: the key goes; the others stay
    view = await d.service.set_call_rules("2001", {"rules": [], "show_presence": False}, "api")
    assert view["show_presence"] is False and view["shown_to_callers"] is None
    await until(lambda: "2001/show" not in held(fake_ami))
    assert held(fake_ami)["2002/show"] == "2002"
    with pytest.raises(InvalidInput, match="show_presence"):
        await d.service.set_call_rules("2001", {"rules": [], "show_presence": "yes"}, "api")
