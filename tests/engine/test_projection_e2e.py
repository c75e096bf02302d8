"""The standard projection through the whole daemon and the fake Asterisk: registered
means available, a call reads busy and moves no behaviour, expiries, the message's
own end (across a restart) and named statuses (docs/presence-rules.md)."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest

from astpresence.app.settings import Config, FreepbxConfig
from astpresence.domain.model import Presence, State
from astpresence.domain.rules import RuleConfig
from astpresence.domain.statuses import Status
from tests.conftest import Starter
from tests.support.api import call
from tests.support.e2e import RunningDaemon, barrier, make_config, seed, until
from tests.support.fakeami import FakeAsterisk, Hint, QueueMember

LUNCH = Status("lunch", "Lunch", Presence(State.AWAY, "", "At lunch"), timedelta(hours=1), 1)
NAP = Status("nap", "Nap", Presence(State.XA, "", "zzz"), timedelta(seconds=1), 2)


def value(fake: FakeAsterisk, user: str) -> Presence:
    state, subtype, message = fake.presences.get(user, ("not_set", "", ""))
    return Presence(State(state), subtype, message)


@pytest.fixture
def fake(fake_ami: FakeAsterisk) -> FakeAsterisk:
    seed(fake_ami)
    # 2000 registered and idle; 2001's phone unplugged.
    fake_ami.devices.update({"PJSIP/2000": "NOT_INUSE", "PJSIP/2001": "UNAVAILABLE"})
    return fake_ami


def config(fake: FakeAsterisk, tmp_path: Path, **rules: object) -> Config:
    """The default rules (not the tests' quiet ones), with ``rules`` on top."""
    return replace(make_config(fake, tmp_path / "p.db", rules=RuleConfig.from_mapping(rules)),
                   statuses=(LUNCH, NAP))


async def test_a_registered_idle_person_is_available(fake: FakeAsterisk, tmp_path: Path,
                                                     daemons: Starter) -> None:
    d = await daemons(config(fake, tmp_path))
    await until(lambda: value(fake, "2000") == Presence(State.AVAILABLE), what="available")
    view = d.service.view("2000")
    assert (view.source, view.rule, view.chosen) == ("device", "registered",
                                                     Presence(State.AVAILABLE))
    await barrier(d, fake)
    assert value(fake, "2001").state is State.NOT_SET  # nothing known registered
    # Cleared by hand (a feature code writes not_set): still available, the phone is up.
    await fake.external_presence_change("2000", "not_set")
    await until(lambda: value(fake, "2000") == Presence(State.AVAILABLE), what="back")


async def test_a_call_moves_no_behaviour(fake: FakeAsterisk, tmp_path: Path,
                                         daemons: Starter) -> None:
    """A call reads busy (dnd / on-the-phone) but pauses no queue member, switches no
    FreePBX DND; a dnd the person chooses does both."""
    fake.hints[:] = [Hint("2000", "internal", ["PJSIP/2000", "Custom:DND2000"],
                          "CustomPresence:2000")]
    fake.devices["Custom:DND2000"] = "UNAVAILABLE"
    member = QueueMember("support", "Alice", "PJSIP/2000", state_interface="hint:2000@internal")
    fake.queue_members[:] = [member]
    cfg = replace(config(fake, tmp_path, queue_pause=True),
                  freepbx=FreepbxConfig(dnd_sync=True))
    d = await daemons(cfg)
    await until(lambda: value(fake, "2000").state is State.AVAILABLE, what="available")
    await fake.external_device_change("PJSIP/2000", "INUSE")
    await until(lambda: value(fake, "2000") == Presence(State.DND, "on-the-phone"),
                what="the call read as busy")
    await barrier(d, fake)
    assert not member.paused
    assert fake.devices["Custom:DND2000"] == "UNAVAILABLE"
    assert ("DND", "2000") not in fake.astdb
    await fake.external_device_change("PJSIP/2000", "NOT_INUSE")
    await until(lambda: value(fake, "2000") == Presence(State.AVAILABLE), what="call over")
    await d.service.set_manual("2000", Presence(State.DND), "api")
    await until(lambda: member.paused and fake.devices["Custom:DND2000"] == "BUSY",
                what="a chosen dnd pauses and switches")


async def test_expiry_by_state_and_the_message_alone(fake: FakeAsterisk, tmp_path: Path,
                                                    daemons: Starter) -> None:
    d = await daemons(config(fake, tmp_path, expire_after={"dnd": 1}))
    await d.service.set_manual("2000", Presence(State.DND, "", "focus"), "api")
    await until(lambda: value(fake, "2000").state is State.DND, what="dnd")
    await until(lambda: value(fake, "2000") == Presence(State.AVAILABLE), timeout=5,
                what="dnd lapsed after [rules] expire_after")
    code, body = await call(d, "PUT", "/v1/presence/2000", d.token,
                            {"state": "away", "message": "back at 3", "message_expires": 1})
    assert code == 200, body
    await until(lambda: value(fake, "2000") == Presence(State.AWAY, "", "back at 3"))
    await until(lambda: value(fake, "2000") == Presence(State.AWAY), timeout=5,
                what="the message lapsed, the state stayed")


async def test_a_message_end_survives_a_restart(fake: FakeAsterisk, tmp_path: Path,
                                                daemons: Starter) -> None:
    d = await daemons(config(fake, tmp_path))
    code, body = await call(d, "PUT", "/v1/presence/2000", d.token,
                            {"state": "xa", "message": "on leave", "message_expires": 3})
    assert code == 200, body
    await until(lambda: value(fake, "2000") == Presence(State.XA, "", "on leave"))
    await d.stop()
    d = await daemons(config(fake, tmp_path))
    source = next(s for s in await d.daemon.store.load_sources("2000") if s.source == "manual")
    assert source.message_end is not None
    await until(lambda: value(fake, "2000") == Presence(State.XA), timeout=6,
                what="the stored message end, after the restart")


async def test_named_statuses_through_the_api_and_a_preset_code(
        fake: FakeAsterisk, tmp_path: Path, daemons: Starter) -> None:
    d: RunningDaemon = await daemons(config(fake, tmp_path))
    code, body = await call(d, "GET", "/v1/statuses", d.token)
    assert code == 200 and [s["id"] for s in body["statuses"]] == ["lunch", "nap"]
    assert body["statuses"][0] == {"id": "lunch", "label": "Lunch", "state": "away",
                                   "subtype": "", "message": "At lunch", "duration": 3600.0,
                                   "digit": 1}
    code, body = await call(d, "PUT", "/v1/presence/2000", d.token, {"status": "lunch"})
    assert code == 200 and (body["state"], body["message"]) == ("away", "At lunch")
    manual = d.service.contributions.get("2000", "manual")
    assert manual.end is not None
    assert abs(manual.end - manual.since - timedelta(hours=1)) < timedelta(seconds=1)
    code, body = await call(d, "PUT", "/v1/presence/2000", d.token,
                            {"status": "lunch", "message": "Canteen"})
    assert code == 200 and body["message"] == "Canteen"  # given words win
    code, body = await call(d, "PUT", "/v1/presence/2000", d.token, {"status": "golf"})
    assert code == 400 and "unknown status" in body["error"]
    # A preset code (*372) writes the status's presence: adopted with its duration.
    await fake.external_presence_change("2000", "xa", "", "zzz")
    await until(lambda: d.service.view("2000").presence == NAP.presence, what="adopted")
    await until(lambda: value(fake, "2000") == Presence(State.AVAILABLE), timeout=5,
                what="the preset's status lapsed by itself")
