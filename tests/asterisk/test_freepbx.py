"""FreePBX sites: the DND device in hints is a switch the person flips, never a phone.

FreePBX writes hints as ``PJSIP/2000&Custom:DND2000,CustomPresence:2000`` and
its *78/*79 codes set ``Custom:DND2000`` to BUSY/UNAVAILABLE
(docs/asterisk.md, "FreePBX conventions").
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from astpresence.app.config import load_config
from astpresence.app.settings import Config, ConfigError, FreepbxConfig
from astpresence.domain.model import Presence, State
from astpresence.engine.phone_rules import FREEPBX_DND
from tests.support.e2e import RunningDaemon, barrier, make_config, until
from tests.conftest import Starter
from tests.support.fakeami import FakeAsterisk, Hint

DND = Presence(State.DND)
ON_PHONE = Presence(State.DND, "on-the-phone")  # a call reads as busy (docs/presence-rules.md)


def freepbx(fake: FakeAsterisk) -> None:
    """A FreePBX-style PBX: DND mode hints, intercom hints, phones idle, DND off."""
    fake.hints[:] = [
        Hint("2000", "ext-local", ["PJSIP/2000", "Custom:DND2000"], "CustomPresence:2000"),
        Hint("*802000", "ext-local", ["PJSIP/2000", "Custom:DND2000"], "CustomPresence:2000"),
        Hint("2001", "ext-local", ["PJSIP/2001", "Custom:DND2001"], "CustomPresence:2001"),
    ]
    fake.devices.update({"PJSIP/2000": "NOT_INUSE", "PJSIP/2001": "NOT_INUSE",
                         "Custom:DND2000": "UNAVAILABLE", "Custom:DND2001": "UNAVAILABLE"})


def value(fake: FakeAsterisk, user: str) -> Presence:
    state, subtype, message = fake.presences.get(user, ("not_set", "", ""))
    return Presence(State(state), subtype, message)


async def start(daemons: Starter, fake: FakeAsterisk, tmp_path: Path) -> RunningDaemon:
    return await daemons(make_config(fake, tmp_path / "p.db"))


async def test_dnd_codes_set_and_clear_dnd_never_on_the_phone(
        fake_ami: FakeAsterisk, tmp_path: Path, daemons: Starter) -> None:
    freepbx(fake_ami)
    d = await start(daemons, fake_ami, tmp_path)
    # One user per presentity, shown with the plain extension, not *80.
    assert d.service.users.ids() == ["2000", "2001"]
    assert d.service.require_user("2000").extension == "2000"
    await fake_ami.external_device_change("Custom:DND2000", "BUSY")  # *78
    await until(lambda: value(fake_ami, "2000") == DND, what="dnd written")
    view = d.service.view("2000")
    assert (view.source, view.actor, view.rule) == ("manual", FREEPBX_DND,
                                                    "manual-protected")
    # A call does not overlay a chosen dnd, and the DND device is no phone.
    await fake_ami.external_device_change("PJSIP/2000", "INUSE")
    await barrier(d, fake_ami)
    assert value(fake_ami, "2000") == DND
    assert d.service.device_view("2000").states == (d.service.devices.states["PJSIP/2000"],)
    await fake_ami.external_device_change("PJSIP/2000", "NOT_INUSE")
    await fake_ami.external_device_change("Custom:DND2000", "UNAVAILABLE")  # *79
    await until(lambda: value(fake_ami, "2000").state == State.NOT_SET, what="dnd cleared")
    hist = await d.service.history("2000", 5)
    assert [(h.new.state.value, h.actor) for h in hist[:2]] == [
        ("not_set", FREEPBX_DND), ("dnd", FREEPBX_DND)]
    assert "FreePBX DND" in hist[1].reason


async def test_dnd_off_leaves_a_later_choice_alone(
        fake_ami: FakeAsterisk, tmp_path: Path, daemons: Starter) -> None:
    freepbx(fake_ami)
    d = await start(daemons, fake_ami, tmp_path)
    await fake_ami.external_device_change("Custom:DND2001", "BUSY")
    await until(lambda: d.service.view("2001").presence == DND)
    await d.service.set_manual("2001", Presence(State.AWAY, "lunch"), "api")
    await fake_ami.external_device_change("Custom:DND2001", "UNAVAILABLE")
    await barrier(d, fake_ami)
    assert d.service.view("2001").presence == Presence(State.AWAY, "lunch")


async def test_dnd_switched_while_astpresence_was_away(
        fake_ami: FakeAsterisk, tmp_path: Path, daemons: Starter) -> None:
    freepbx(fake_ami)
    d = await start(daemons, fake_ami, tmp_path)
    await d.stop()
    fake_ami.devices["Custom:DND2000"] = "BUSY"  # *78 while the daemon was down
    d = await start(daemons, fake_ami, tmp_path)
    assert d.service.view("2000").presence == DND
    await d.stop()
    fake_ami.devices["Custom:DND2000"] = "UNAVAILABLE"  # *79, down again
    d = await start(daemons, fake_ami, tmp_path)
    assert d.service.view("2000").presence.state == State.NOT_SET


async def test_a_dnd_device_of_nobody_changes_nothing(
        fake_ami: FakeAsterisk, tmp_path: Path, daemons: Starter) -> None:
    freepbx(fake_ami)
    d = await start(daemons, fake_ami, tmp_path)
    await fake_ami.external_device_change("Custom:DND9999", "BUSY")
    await barrier(d, fake_ami)
    assert "9999" not in d.service.users
    assert all(v.presence.state == State.NOT_SET for v in d.service.views())


async def test_without_the_pattern_the_device_counts_as_a_phone(
        fake_ami: FakeAsterisk, tmp_path: Path, daemons: Starter) -> None:
    freepbx(fake_ami)
    await daemons(replace(make_config(fake_ami, tmp_path / "p.db"), freepbx=FreepbxConfig("")))
    await fake_ami.external_device_change("Custom:DND2000", "BUSY")
    await until(lambda: value(fake_ami, "2000") == ON_PHONE, what="on-the-phone")


@pytest.mark.parametrize(("raw", "ok"), [
    ('"Custom:DND{user}"', True), ('"Custom:dnd-{user}-x"', True), ('""', True),
    ('"Custom:DND"', False), ('"Custom:{user}{user}"', False), ('"A&{user}"', False),
    ("5", False),
])
def test_dnd_device_config(tmp_path: Path, raw: str, ok: bool) -> None:
    path = tmp_path / "c.toml"
    path.write_text(f"[freepbx]\ndnd_device = {raw}\n")
    if ok:
        assert load_config(path, env={}).freepbx.dnd_device == raw.strip('"')
    else:
        with pytest.raises(ConfigError, match="freepbx.dnd_device"):
            load_config(path, env={})


def sync_config(fake: FakeAsterisk, tmp_path: Path) -> Config:
    return replace(make_config(fake, tmp_path / "p.db"),
                   freepbx=FreepbxConfig(dnd_sync=True))


def db_actions(fake: FakeAsterisk) -> list[str]:
    return [f"{m.get('Action')} {m.get('Key')} {m.get('Val') or ''}".strip()
            for m in fake.actions if (m.get("Action") or "") in ("DBPut", "DBDel")]


async def test_dnd_sync_switches_freepbx_dnd_like_its_codes(
        fake_ami: FakeAsterisk, tmp_path: Path, daemons: Starter) -> None:
    freepbx(fake_ami)
    d = await daemons(sync_config(fake_ami, tmp_path))
    await d.service.set_manual("2000", Presence(State.DND, "", "focus"), "api")
    # What *78 does: the astdb key FreePBX's routing reads, and the DND device.
    await until(lambda: fake_ami.devices.get("Custom:DND2000") == "BUSY", what="DND on")
    assert fake_ami.astdb == {("DND", "2000"): "YES"}
    await barrier(d, fake_ami)
    # Our own device change came back and was recognised: nothing adopted, no fight.
    assert d.service.view("2000").presence == Presence(State.DND, "", "focus")
    assert db_actions(fake_ami) == ["DBPut 2000 YES"]
    # Leaving dnd switches it off the way *79 does.
    await d.service.set_manual("2000", Presence(State.AVAILABLE), "api")
    await until(lambda: fake_ami.devices.get("Custom:DND2000") == "UNAVAILABLE")
    assert fake_ami.astdb == {}
    await barrier(d, fake_ami)
    assert db_actions(fake_ami) == ["DBPut 2000 YES", "DBDel 2000"]
    assert d.service.view("2000").presence == Presence(State.AVAILABLE)
    # *79 on the phone ends a dnd set through astpresence too.
    await d.service.set_manual("2000", Presence(State.DND), "api")
    await until(lambda: fake_ami.devices.get("Custom:DND2000") == "BUSY")
    await barrier(d, fake_ami)
    fake_ami.astdb.pop(("DND", "2000"), None)
    await fake_ami.external_device_change("Custom:DND2000", "UNAVAILABLE")
    await until(lambda: d.service.view("2000").presence.state == State.NOT_SET,
                what="dnd cleared by *79")
    await barrier(d, fake_ami)
    assert db_actions(fake_ami) == ["DBPut 2000 YES", "DBDel 2000", "DBPut 2000 YES"]


async def test_without_dnd_sync_astdb_is_never_written(
        fake_ami: FakeAsterisk, tmp_path: Path, daemons: Starter) -> None:
    freepbx(fake_ami)
    d = await daemons(make_config(fake_ami, tmp_path / "p.db"))
    await d.service.set_manual("2000", Presence(State.DND), "api")
    await until(lambda: value(fake_ami, "2000") == DND)
    await barrier(d, fake_ami)
    assert db_actions(fake_ami) == [] and fake_ami.devices["Custom:DND2000"] == "UNAVAILABLE"


def test_dnd_sync_needs_write_system() -> None:
    from astpresence.cli.permissions import required_permissions

    assert "system" in required_permissions(Config(freepbx=FreepbxConfig(dnd_sync=True)))[1]
    assert "system" not in required_permissions(Config())[1]
