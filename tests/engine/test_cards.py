"""Contact cards: display names and voicemail counts read from Asterisk.

Names: the config, else FreePBX's ``AMPUSER/<ext>/cidname``, else the caller
ID of the user's PJSIP endpoint; voicemail: ``VoicemailUsersList`` at a sync,
``MessageWaiting`` live (docs/asterisk.md; formats from main/db.c,
res_pjsip/pjsip_configuration.c, apps/app_voicemail.c, main/manager_mwi.c).
"""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

import pytest

from astpresence.web.auth import Role
from astpresence.engine.cards import MAX_NAME, Cards, Mailbox, callerid_name, check_mailbox
from astpresence.app.config import load_config
from astpresence.app.settings import CardsConfig, ConfigError, FreepbxConfig
from astpresence.domain.model import InvalidInput, Presence, State
from astpresence.domain.records import UserRecord
from astpresence.engine.users import UserDirectory
from tests.conftest import Starter
from tests.support.api import Stream, call
from tests.support.e2e import RunningDaemon, barrier, cli, make_config, until
from tests.support.fakeami import FakeAsterisk, Hint, callerid_merge


@pytest.mark.parametrize(("callerid", "name"), [
    ('"Alice Martin" <2000>', "Alice Martin"),
    (callerid_merge('Al "The Boss" \\o/', "2000"), 'Al "The Boss" \\o/'),
    (callerid_merge("Zoë 李小龍", "2000"), "Zoë 李小龍"),
    (callerid_merge("", "2000"), ""),          # empty name
    (callerid_merge("   ", "2000"), ""),
    ("2000", ""),                               # number only: no name
    ("<2000>", ""),
    ("<unknown>", ""),                          # neither
    ("Bob", "Bob"),                             # name only, unquoted
    ("Bob <2001>", "Bob"),
    ('"+4930123" <2000>', ""),                  # a number in the name field
    ('"Tab\tand\x07bell" <1>', "Tab andbell"),  # control characters dropped
    ('"unterminated <2000>', "unterminated <2000>"),
    ('"' + "x" * 400 + '" <2000>', "x" * MAX_NAME),  # over-long: cut
    ("", ""),
])
def test_display_name_from_a_caller_id(callerid: str, name: str) -> None:
    assert callerid_name(callerid) == name


@pytest.mark.parametrize(("raw", "ok"), [
    ("2000", "2000@default"), ("2000@default", "2000@default"), ("2000@sales", "2000@sales"),
    ("", None), ("@default", None), ("20 00", None), ("2000@a@b", None), ("2000,1", None),
    ("2000\r\n", None), ("x" * 81, None), (2000, None),
])
def test_mailbox_names(raw: object, ok: str | None) -> None:
    if ok is None:
        with pytest.raises(InvalidInput):
            check_mailbox(raw)
    else:
        assert check_mailbox(raw) == ok


def test_names_config_wins_then_astdb_then_caller_id() -> None:
    users = UserDirectory([UserRecord("2002", name="From Config", origin="config")])
    users.replace_hint_users([UserRecord("2000", extension="2000", devices=("PJSIP/2000",)),
                              UserRecord("2001", extension="2001", devices=("PJSIP/2001",)),
                              UserRecord("2002", extension="2002", devices=("PJSIP/2002",))])
    cards = Cards(users)
    changed = cards.replace_endpoint_names({u: f'"Phone {u}" <{u}>' for u in
                                            ("2000", "2001", "2002")})
    assert changed == {"2000": ("", None, None), "2001": ("", None, None)}  # 2002's name stays
    assert cards.replace_astdb_names({"2001": "Bea Astdb", "2002": "Ignored"}) == {
        "2001": ("Phone 2001", None, None)}
    assert [cards.name(u) for u in ("2000", "2001", "2002")] == [
        "Phone 2000", "Bea Astdb", "From Config"]
    assert [cards.needs_endpoint_name(u) for u in ("2000", "2001", "2002")] == [
        True, False, False]
    # Mailboxes follow the extension; counts of mailboxes no user has are not kept.
    assert cards.replace_mailboxes({"2000@default": Mailbox(2, 1),
                                    "9999@default": Mailbox(5, 0)}) == {"2000": ("Phone 2000",
                                                                                 None, None)}
    assert cards.card("2000") == ("Phone 2000", 2, None)
    assert cards.voicemail("2001") is None  # no box listed: unknown, not 0
    assert cards.mailbox_changed("9999@default", Mailbox(6, 0)) == {}
    assert cards.mailbox_changed("2000@default", Mailbox(2, 1)) == {}  # same: no event
    assert cards.mailbox_changed("2000@default", Mailbox(0, 3)) == {
        "2000": ("Phone 2000", 2, None)}


@pytest.mark.parametrize(("toml", "error"), [
    ('[cards]\nmailbox = "vm-{extension}@default"\n', None),
    ('[cards]\nmailbox = ""\nnames = false\n', None),
    ('[cards]\nmailbox = "2000@default"\n', "cards.mailbox"),
    ('[cards]\nmailbox = "{extension} x"\n', "cards.mailbox"),
    ('[cards]\nnames = "yes"\n', "cards.names"),
    ('[[users]]\nid = "2000"\nmailbox = "2000@sales"\n', None),
    ('[[users]]\nid = "2000"\nmailbox = "a,b"\n', "users[0].mailbox"),
])
def test_cards_config(tmp_path: Path, toml: str, error: str | None) -> None:
    path = tmp_path / "c.toml"
    path.write_text(toml)
    if error is None:
        load_config(path, env={})
    else:
        with pytest.raises(ConfigError, match=error.replace("[", r"\[").replace("]", r"\]")):
            load_config(path, env={})


def pbx(fake: FakeAsterisk) -> None:
    """Three users: caller IDs on the endpoints, FreePBX's astdb for one, mailboxes."""
    fake.hints[:] = [Hint(u, "ext-local", [f"PJSIP/{u}", f"Custom:DND{u}"],
                          f"CustomPresence:{u}") for u in ("2000", "2001", "2002")]
    fake.devices.update({f"PJSIP/{u}": "NOT_INUSE" for u in ("2000", "2001", "2002")})
    fake.endpoints.update({"2000": ("Alice Martin", "2000"), "2001": ("Phone Name", "2001"),
                           "2002": (None, "2002")})
    fake.astdb.update({("AMPUSER", "2001/cidname"): "Bea Müller",
                       ("AMPUSER", "2001/device"): "2001&2001b",
                       ("AMPUSER", "2001/voicemail"): "default"})
    fake.mailboxes.update({"2000@default": (3, 1), "2001@default": (0, 0)})
    fake.modules |= {"res_pjsip", "app_voicemail"}


async def started(daemons: Starter, fake: FakeAsterisk, tmp_path: Path,
                  **changes: object) -> RunningDaemon:
    d = await daemons(replace(make_config(fake, tmp_path / "p.db"), **changes))
    await until(lambda: d.daemon.bridge.status.cards == "done", what="cards read")
    return d


async def test_names_and_voicemail_in_the_api_and_live(
        fake_ami: FakeAsterisk, tmp_path: Path, daemons: Starter) -> None:
    pbx(fake_ami)
    d = await started(daemons, fake_ami, tmp_path)
    status, body = await call(d, "GET", "/v1/presence", d.token)
    cards = {p["user"]: (p["name"], p["voicemail"]) for p in body["presence"]}
    # 2001: astdb beats the phone's caller ID; 2002: a number only, no name;
    # 2002 has no voicemail box: null, not 0.
    assert cards == {"2000": ("Alice Martin", 3), "2001": ("Bea Müller", 0), "2002": ("", None)}
    users = {u["id"]: u["name"] for u in (await call(d, "GET", "/v1/users", d.token))[1]["users"]}
    assert users == {"2000": "Alice Martin", "2001": "Bea Müller", "2002": ""}
    # Only the phones without a name from astdb were asked.
    asked = [m.get("Endpoint") for m in fake_ami.actions
             if m.get("Action") == "PJSIPShowEndpoint"]
    assert sorted(asked) == ["2000", "2002"]

    stream = await Stream.open(d, {"token": d.token, "subscribe": ["*"]})
    try:
        assert (await stream.next())["type"] == "hello"
        await fake_ami.set_voicemail("2000@default", 4, 1)  # a message left
        ev = await stream.next()
        assert (ev["user"], ev["changed"], ev["presence"]["voicemail"]) == (
            "2000", ["voicemail"], 4)
        assert ev["presence"]["name"] == "Alice Martin"
        # A mailbox no user has, and a count that is not one: nothing.
        await fake_ami.set_voicemail("7777@default", 1, 0)
        await fake_ami.broadcast_event([("Event", "MessageWaiting"), ("Mailbox", "2000@default"),
                                        ("Waiting", "1"), ("New", "-1"), ("Old", "0")])
        await fake_ami.broadcast_event([("Event", "MessageWaiting"),
                                        ("Mailbox", "2000@default\x7f"), ("New", "1")])
        await barrier(d, fake_ami)
        await d.service.set_manual("2002", Presence(State.AWAY), "api")
        ev = await stream.next()  # the next event is the presence change
        assert (ev["user"], ev["changed"]) == ("2002", ["state", "source", "chosen"])
        assert d.service.view("2000").voicemail == 4
    finally:
        await stream.close()


async def test_names_are_read_again_at_every_sync(
        fake_ami: FakeAsterisk, tmp_path: Path, daemons: Starter) -> None:
    pbx(fake_ami)
    d = await started(daemons, fake_ami, tmp_path)
    stream = await Stream.open(d, {"token": d.token, "subscribe": ["2000", "2001"]})
    try:
        await stream.next()
        fake_ami.endpoints["2000"] = ("Alice Martin-Dupont", "2000")
        fake_ami.astdb[("AMPUSER", "2001/cidname")] = "Bea Schmidt"
        fake_ami.mailboxes["2000@default"] = (0, 4)  # listened while we were away
        await fake_ami.drop_clients()
        # Each change is an event: the voicemail at the sync, the names as read.
        wanted = {("2001", "Bea Schmidt", 0), ("2000", "Alice Martin-Dupont", 0)}
        while wanted:
            e = await stream.next()
            if e["type"] == "presence":
                wanted.discard((e["user"], e["presence"]["name"], e["presence"]["voicemail"]))
    finally:
        await stream.close()


async def test_config_names_win_and_mailboxes_come_from_the_config(
        fake_ami: FakeAsterisk, tmp_path: Path, daemons: Starter,
        caplog: pytest.LogCaptureFixture) -> None:
    pbx(fake_ami)
    users = (UserRecord("2000", name="Alice (Sales)", origin="config", mailbox="500@sales"),
             UserRecord("2002", origin="config", mailbox="2999@default"))
    fake_ami.mailboxes["500@sales"] = (7, 0)
    with caplog.at_level(logging.WARNING, logger="astpresence.asterisk.sync"):
        d = await started(daemons, fake_ami, tmp_path, users=users)
    assert d.service.cards.card("2000") == ("Alice (Sales)", 7, None)
    # A mailbox Asterisk does not have: a warning, no count (not a made-up 0).
    assert d.service.cards.card("2002") == ("", None, None)
    assert "no voicemail box 2999@default" in caplog.text


async def test_no_voicemail_or_endpoints_or_astdb_is_fine(
        fake_ami: FakeAsterisk, tmp_path: Path, daemons: Starter) -> None:
    pbx(fake_ami)
    fake_ami.modules -= {"app_voicemail", "res_pjsip"}
    fake_ami.astdb.clear()
    fake_ami.mailboxes["500@sales"] = (4, 0)  # held elsewhere (external MWI)
    users = (UserRecord("2001", origin="config", mailbox="500@sales"),)
    d = await started(daemons, fake_ami, tmp_path, users=users,
                      cards=CardsConfig(mailbox="{extension}@default"))
    # Without app_voicemail, MailboxCount asks for the mailboxes the config sets;
    # the pattern's <ext>@default boxes would be app_voicemail's: none.
    assert d.service.cards.card("2001") == ("", 4, None)
    assert d.service.cards.card("2000") == ("", None, None)
    assert [m.get("Mailbox") for m in fake_ami.actions
            if m.get("Action") == "MailboxCount"] == ["500@sales"]
    assert d.service.synced


async def test_names_off(fake_ami: FakeAsterisk, tmp_path: Path, daemons: Starter) -> None:
    pbx(fake_ami)
    d = await started(daemons, fake_ami, tmp_path, cards=CardsConfig(names=False, mailbox=""))
    assert [d.service.cards.card(u) for u in ("2000", "2001")] == [("", None, None), ("", None, None)]
    assert not [m for m in fake_ami.actions if m.get("Action") in (
        "PJSIPShowEndpoint", "VoicemailUsersList")]


async def test_voicemail_is_private_like_the_message(
        fake_ami: FakeAsterisk, tmp_path: Path, daemons: Starter) -> None:
    pbx(fake_ami)
    d = await started(daemons, fake_ami, tmp_path)
    bea = await d.make_token(Role.USER, "2001")
    body = (await call(d, "GET", "/v1/presence/2000", bea))[1]
    assert (body["name"], body["voicemail"]) == ("Alice Martin", None)
    mine = (await call(d, "GET", "/v1/presence/2001", bea))[1]
    assert mine["voicemail"] == 0


async def test_freepbx_dnd_switches_each_device_too(
        fake_ami: FakeAsterisk, tmp_path: Path, daemons: Starter) -> None:
    """*78 also sets Custom:DEVDND<device> for each device in AMPUSER/<ext>/device."""
    pbx(fake_ami)
    # A hint naming a per-device DND device (FreePBX's device hints can).
    fake_ami.hints[1].devices.append("Custom:DEVDND2001")
    fake_ami.devices.update({"Custom:DND2001": "UNAVAILABLE",
                             "Custom:DEVDND2001": "UNAVAILABLE"})
    d = await started(daemons, fake_ami, tmp_path, freepbx=FreepbxConfig(dnd_sync=True))
    await d.service.set_manual("2001", Presence(State.DND), "api")
    await until(lambda: fake_ami.devices.get("Custom:DEVDND2001b") == "BUSY", what="DEVDND")
    assert fake_ami.devices["Custom:DEVDND2001"] == "BUSY"
    assert fake_ami.astdb[("DND", "2001")] == "YES"
    await barrier(d, fake_ami)
    assert d.service.view("2001").presence == Presence(State.DND)  # no echo fight
    await d.service.set_manual("2001", Presence(State.AVAILABLE), "api")
    await until(lambda: fake_ami.devices.get("Custom:DEVDND2001b") == "UNAVAILABLE")
    assert fake_ami.devices["Custom:DEVDND2001"] == "UNAVAILABLE"
    # A per-device DND device in a hint is not a phone: BUSY is not a call.
    await fake_ami.external_device_change("Custom:DEVDND2001", "BUSY")
    await barrier(d, fake_ami)
    assert d.service.view("2001").presence == Presence(State.AVAILABLE)
    # *78 on the phone, exactly as FreePBX's dialplan runs it, then *79.
    await fake_ami.freepbx_dnd("2001", True)
    await until(lambda: d.service.view("2001").presence == Presence(State.DND), what="*78")
    await fake_ami.freepbx_dnd("2001", False)
    await until(lambda: d.service.view("2001").presence.state is State.NOT_SET, what="*79")
    await barrier(d, fake_ami)
    assert fake_ami.astdb.get(("DND", "2001")) is None  # nothing written back: no fight


async def test_cli_tables_show_names(fake_ami: FakeAsterisk, tmp_path: Path,
                                     daemons: Starter) -> None:
    pbx(fake_ami)
    d = await started(daemons, fake_ami, tmp_path)
    out = await cli(d.url, "list", token=d.token)
    assert out.code == 0, out.err
    lines = out.out.splitlines()
    assert lines[0].split()[:3] == ["USER", "NAME", "STATE"]
    row = next(line for line in lines if line.startswith("2000"))
    assert "Alice Martin" in row and "3" in row.split()
