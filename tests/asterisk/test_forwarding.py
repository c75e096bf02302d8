"""FreePBX's own forwarding on the contact card: CF/CFB/CFU and follow-me read at each
sync and again when FreePBX moves Custom:CF<ext> or Custom:FOLLOWME<ext>."""

from __future__ import annotations

from pathlib import Path

import pytest

from astpresence.domain.forwarding import Forwarding, followme_numbers, forwarding_from_json
from astpresence.domain.records import presence_json
from astpresence.web.auth import project
from tests.conftest import Starter
from tests.support.e2e import barrier, make_config, until
from tests.support.fakeami import FakeAsterisk, Hint


def pbx(fake: FakeAsterisk) -> None:
    fake.hints[:] = [Hint(u, "ext-local", [f"PJSIP/{u}"], f"CustomPresence:{u}")
                     for u in ("2000", "2001", "2002")]
    fake.astdb.update({
        ("CF", "2000"): "0171234567",
        ("CFB", "2001"): "2002",
        ("CFU", "2001"): "bad\u0007value",  # not a destination: left out
        ("CF", "9999"): "2000",  # an extension of nobody
        ("AMPUSER", "2002/followme/ddial"): "DIRECT",
        ("AMPUSER", "2002/followme/grplist"): "2002-0171234567#",
        ("AMPUSER", "2001/followme/ddial"): "EXTENSION",  # follow-me off
        ("AMPUSER", "2001/followme/grplist"): "2001-0170000000#",
    })


async def test_read_at_sync_and_shown_on_the_card(
        fake_ami: FakeAsterisk, tmp_path: Path, daemons: Starter) -> None:
    pbx(fake_ami)
    d = await daemons(make_config(fake_ami, tmp_path / "p.db"))
    cards = d.service.cards
    assert cards.card("2000")[2] == Forwarding(unconditional="0171234567")
    assert cards.card("2001")[2] == Forwarding(busy="2002")
    assert cards.card("2002")[2] == Forwarding(followme=("2002", "0171234567"))
    shown = presence_json(d.service.view("2000"))["forwarding"]
    assert shown == {"on": ["unconditional"], "unconditional": "0171234567", "busy": "",
                     "unavailable": "", "followme": []}
    # Someone who may see the state only learns that calls are forwarded, not where.
    assert project(presence_json(d.service.view("2000")), "state")["forwarding"] == {
        "on": ["unconditional"], "unconditional": "", "busy": "", "unavailable": "",
        "followme": []}
    assert project(presence_json(d.service.view("2000")), "hidden")["forwarding"] is None


async def test_star_72_is_seen_live_and_told_to_streams(
        fake_ami: FakeAsterisk, tmp_path: Path, daemons: Starter) -> None:
    pbx(fake_ami)
    d = await daemons(make_config(fake_ami, tmp_path / "p.db"))
    seq = d.service.events.seq
    # *72 on 2001: FreePBX writes CF/2001, then Custom:CF2001 BUSY
    fake_ami.astdb[("CF", "2001")] = "2000"
    await fake_ami.external_device_change("Custom:CF2001", "BUSY")
    await until(lambda: d.service.cards.card("2001")[2] == Forwarding("2000", busy="2002"),
                what="the forward on the card")
    assert d.service.view("2001").forwarding == Forwarding("2000", busy="2002")
    told = d.service.events.events_since(seq)
    assert told and told[-1].new.forwarding == Forwarding("2000", busy="2002")
    # *73: gone again
    del fake_ami.astdb[("CF", "2001")]
    await fake_ami.external_device_change("Custom:CF2001", "NOT_INUSE")
    await until(lambda: d.service.cards.card("2001")[2] == Forwarding(busy="2002"))
    # *21 turns follow-me off for 2002
    fake_ami.astdb[("AMPUSER", "2002/followme/ddial")] = "EXTENSION"
    await fake_ami.external_device_change("Custom:FOLLOWME2002", "NOT_INUSE")
    await until(lambda: d.service.cards.card("2002")[2] is None)
    # a device of an extension nobody has changes nothing
    await fake_ami.external_device_change("Custom:CF9999", "BUSY")
    await barrier(d, fake_ami)
    assert all(d.service.cards.card(u)[2] != Forwarding("2000") for u in ("2000", "2002"))


@pytest.mark.parametrize(("ddial", "grplist", "numbers"), [
    ("DIRECT", "2002-0171234567#", ("2002", "0171234567")),
    ("direct", "2002", ("2002",)),
    ("EXTENSION", "2002-0171#", ()),
    ("", "2002", ()),
    ("DIRECT", "2002-bad value#-" + "9" * 60, ("2002",)),
    ("DIRECT", "-".join(str(n) for n in range(2000, 2030)), tuple(str(n) for n in
                                                                 range(2000, 2010))),
])
def test_follow_me_numbers(ddial: str, grplist: str, numbers: tuple[str, ...]) -> None:
    assert followme_numbers(ddial, grplist) == numbers


def test_forwarding_reads_back_from_json() -> None:
    value = Forwarding("0171", "2002", "", ("2003",))
    assert forwarding_from_json(value.json()) == value
    assert forwarding_from_json({"unconditional": "a b", "followme": ["x\ny"]}) is None
    assert forwarding_from_json(None) is None
    assert value.text() == "forwarded to 0171; if busy: 2002; follow-me: 2003"
