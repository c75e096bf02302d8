"""FreePBX conventions on a real Asterisk: DND codes, dnd_sync, names from astdb."""

from __future__ import annotations

import contextlib
from typing import Any

import pytest

from astpresence.domain.model import Presence, State

from .asterisk import astdb_get, device_state, originate, set_device_state, set_in_asterisk
from .asterisk import wait_device, wait_presence, wait_view
from .conftest import IT_RULES, Server, eventually

pytestmark = pytest.mark.timeout(120)

EXT = "2004"  # hint Custom:phone-2004&Custom:DND2004,CustomPresence:2004 (extensions_it.conf)
SYNC = IT_RULES + "\n[freepbx]\ndnd_sync = true\n"


async def db_put(ami: Any, family: str, key: str, value: str) -> None:
    await ami.send_action("DBPut", {"Family": family, "Key": key, "Val": value})


async def db_del(ami: Any, family: str, key: str) -> None:
    with contextlib.suppress(Exception):  # "Database entry not found" is fine
        await ami.send_action("DBDel", {"Family": family, "Key": key})


@pytest.fixture
async def freepbx(dialplan: Server, ami: Any) -> Any:
    """Extension 2004 as FreePBX keeps it: a name and a device in AMPUSER, DND off."""
    await db_put(ami, "AMPUSER", f"{EXT}/cidname", "Bob Müller")
    await db_put(ami, "AMPUSER", f"{EXT}/device", EXT)
    await db_del(ami, "DND", EXT)
    for device in (f"Custom:DND{EXT}", f"Custom:DEVDND{EXT}"):
        await set_device_state(ami, device, "UNAVAILABLE")
    await set_device_state(ami, f"Custom:phone-{EXT}", "NOT_INUSE")
    await set_in_asterisk(ami, EXT, Presence(State.AVAILABLE))
    yield ami
    for key in ("cidname", "device"):
        await db_del(ami, "AMPUSER", f"{EXT}/{key}")
    await db_del(ami, "DND", EXT)


async def dnd_code(ami: Any, code: str) -> None:
    await originate(ami, f"Local/{code}@it-freepbx", {"AMPUSER": EXT}, wait=1)


async def test_star78_and_star79_switch_dnd(freepbx: Any, daemon_factory: Any) -> None:
    ami = freepbx
    daemon = daemon_factory()
    await daemon.wait_ready()
    await wait_view(daemon, EXT, state="available")
    await dnd_code(ami, "*78")  # returns once the code has answered, before it wrote
    view = await wait_view(daemon, EXT, state="dnd")
    assert view["source"] == "manual"
    await wait_presence(ami, EXT, Presence(State.DND))
    # off removes that dnd and the other sources decide again (docs/presence-rules.md,
    # "FreePBX DND"): nothing else chosen, 2004's phone is registered: available
    await dnd_code(ami, "*79")
    view = await wait_view(daemon, EXT, state="available", source="device")
    assert view["rule"] == "registered"
    await wait_presence(ami, EXT, Presence(State.AVAILABLE))


async def test_dnd_sync_writes_freepbx_dnd(freepbx: Any, daemon_factory: Any) -> None:
    ami = freepbx
    daemon = daemon_factory(SYNC)
    await daemon.wait_ready()
    assert (await daemon.cli("set", EXT, "dnd")).returncode == 0

    async def switched_on() -> bool:
        return await astdb_get(ami, "DND", EXT) == "YES"

    await eventually(switched_on, "astdb DND/2004 = YES")
    await wait_device(ami, f"Custom:DND{EXT}", "BUSY")
    await wait_device(ami, f"Custom:DEVDND{EXT}", "BUSY")
    # the device change that came back is the daemon's own: still manual dnd, once
    view = await daemon.get(EXT)
    assert (view["state"], view["source"]) == ("dnd", "manual")

    assert (await daemon.cli("set", EXT, "available")).returncode == 0

    async def switched_off() -> bool:
        return await astdb_get(ami, "DND", EXT) is None

    await eventually(switched_off, "astdb DND/2004 deleted")
    await wait_device(ami, f"Custom:DND{EXT}", "UNAVAILABLE")
    assert await device_state(ami, f"Custom:DEVDND{EXT}") == "UNAVAILABLE"
    history = (await daemon.cli("history", EXT, "--json")).json()
    assert [h["new"]["state"] for h in history][:2] == ["available", "dnd"]


async def test_names_from_caller_id_and_astdb(freepbx: Any, daemon_factory: Any) -> None:
    daemon = daemon_factory()
    await daemon.wait_ready()
    # PJSIP endpoint 2000: callerid = "Alice Martin" <2000>; 2004: AMPUSER/2004/cidname
    await wait_view(daemon, "2000", name="Alice Martin")
    await wait_view(daemon, EXT, name="Bob Müller")
