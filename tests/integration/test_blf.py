"""The BLF mirror as a phone sees it: SUBSCRIBE from the ``watcher`` endpoint, and
the ARI-controlled ``Stasis:`` mirror."""

from __future__ import annotations

from typing import Any

import pytest

from astpresence.domain.model import Presence, State
from tests.support.sip import Watcher

from .asterisk import device_state, hint_line, set_device_state, set_in_asterisk, wait_device
from .conftest import IT_CONFIG, Server, eventually

pytestmark = pytest.mark.timeout(120)

MIRROR = "Custom:presence-2001"


@pytest.fixture
async def mirrored(it: Server, ami: Any, daemon_factory: Any) -> Any:
    await set_in_asterisk(ami, "2001", Presence(State.AVAILABLE))
    daemon = daemon_factory()
    await daemon.wait_ready()
    await wait_device(ami, MIRROR, "INVALID")
    return daemon


def _sip(it: Server) -> tuple[str, int]:
    if it.sip is None:
        pytest.skip("set ASTPRESENCE_IT_SIP=host:port (the server's PJSIP UDP transport, "
                    "with an endpoint identified by 127.0.0.2 that may subscribe)")
    return it.sip


async def test_mirror_device_follows_presence(ami: Any, mirrored: Any) -> None:
    """BUSY while dnd, ONHOLD while away, INVALID (neutral in the hint) when available."""
    for state, device in (("dnd", "BUSY"), ("away", "ONHOLD"), ("available", "INVALID")):
        assert (await mirrored.cli("set", "2001", state)).returncode == 0
        await wait_device(ami, MIRROR, device)


async def test_a_dialog_watcher_sees_the_mirror(it: Server, ami: Any, mirrored: Any) -> None:
    """A BLF key (dialog-info, a non-Digium phone) lights while dnd and goes out after."""
    watcher = await Watcher.open(_sip(it), "2001", "dialog")
    try:
        first = await watcher.next_body()
        assert "<state>terminated</state>" in first, first
        assert (await mirrored.cli("set", "2001", "dnd")).returncode == 0
        await watcher.wait_for("<state>confirmed</state>")
        assert (await mirrored.cli("set", "2001", "available")).returncode == 0
        await watcher.wait_for("<state>terminated</state>")
    finally:
        await watcher.close()


async def test_a_presence_watcher_sees_the_mirror(it: Server, ami: Any, mirrored: Any) -> None:
    """PIDF (Event: presence): open and "On the phone" while the mirror is BUSY."""
    watcher = await Watcher.open(_sip(it), "2001", "presence")
    try:
        first = await watcher.next_body()
        assert "<basic>closed</basic>" in first, first
        assert (await mirrored.cli("set", "2001", "dnd")).returncode == 0
        body = await watcher.wait_for("<basic>open</basic>")
        assert "On the phone" in body, body
        assert (await mirrored.cli("set", "2001", "available")).returncode == 0
        await watcher.wait_for("<basic>closed</basic>")
    finally:
        await watcher.close()


async def test_a_digium_phone_sees_the_presence_itself(it: Server, ami: Any,
                                                       mirrored: Any) -> None:
    """A Digium User-Agent gets the presence state, subtype and message in PIDF
    (res_pjsip_pidf_digium_body_supplement)."""
    watcher = await Watcher.open(_sip(it), "2001", "presence", user_agent="Digium D65 2_9_9")
    try:
        await watcher.next_body()
        res = await mirrored.cli("set", "2001", "dnd", "--subtype", "meeting",
                                 "--message", "In a meeting until 3pm")
        assert res.returncode == 0, res.stderr
        await watcher.wait_for(
            '<digium_presence type="dnd" subtype="meeting">In a meeting until 3pm')
    finally:
        await watcher.close()


async def test_the_ari_mirror_turns_the_hint_busy_and_idle(dialplan: Server, ami: Any,
                                                           daemon_factory: Any) -> None:
    it = dialplan
    if not (it.http and it.ari_user):
        pytest.skip("set ASTPRESENCE_IT_HTTP, _ARI_USER and _ARI_PASSWORD for the ARI mirror")
    await set_in_asterisk(ami, "2003", Presence(State.AVAILABLE))
    await set_device_state(ami, "Custom:phone-2003", "NOT_INUSE")  # the phone, idle
    config = IT_CONFIG.replace("mirror = true", 'mirror = true\nmirror_via = "ari"') + f"""
[ari]
url = "{it.http}/ari"
username = "{it.ari_user}"
password = "{it.ari_password}"
"""
    daemon = daemon_factory(config)
    await daemon.wait_ready()

    async def hint_state(wanted: str) -> None:
        async def check() -> bool:
            return (await hint_line(it, "2003", ami))["state"] == wanted

        await eventually(check, f"hint 2003 to be {wanted}")

    assert (await daemon.cli("set", "2003", "dnd")).returncode == 0
    await hint_state("Busy")
    assert await device_state(ami, "Stasis:presence-2003") == "BUSY"
    assert (await daemon.cli("set", "2003", "available")).returncode == 0
    await hint_state("Idle")
