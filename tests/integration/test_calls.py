"""A call on a person's phone overlays their presence and then restores it exactly."""

from __future__ import annotations

from typing import Any

import pytest

from astpresence.domain.model import Presence, State

from .asterisk import originate, set_device_state, set_in_asterisk, wait_presence, wait_view
from .conftest import IT_DEVICE, IT_LOCAL_DEVICE, Server

pytestmark = pytest.mark.timeout(120)

CHOSEN = Presence(State.CHAT, "desk", "Ask me anything — I'm in")


@pytest.fixture
async def chosen(ami: Any, daemon_factory: Any) -> Any:
    """User 2000 with a chosen presence and message, their test devices idle."""
    await set_device_state(ami, IT_DEVICE, "NOT_INUSE")
    await set_in_asterisk(ami, "2000", Presence(State.AVAILABLE))
    daemon = daemon_factory()
    await daemon.wait_ready()
    res = await daemon.cli("set", "2000", CHOSEN.state.value, "--subtype", CHOSEN.subtype,
                           "--message", CHOSEN.message)
    assert res.returncode == 0, res.stderr
    await wait_presence(ami, "2000", CHOSEN)
    yield daemon
    await set_device_state(ami, IT_DEVICE, "NOT_INUSE")


async def test_phone_in_use_overlays_and_restores(ami: Any, chosen: Any) -> None:
    """A ``Custom:`` phone device in use (as a phone's own device state would be)."""
    await set_device_state(ami, IT_DEVICE, "INUSE")
    view = await wait_view(chosen, "2000", source="device")
    # Busy, not gone: dnd / on-the-phone with the chosen message; what was chosen and
    # what is going on are shown beside it.
    assert (view["state"], view["subtype"], view["message"]) == ("dnd", "on-the-phone",
                                                                 CHOSEN.message)
    assert (view["chosen"], view["activity"]) == (CHOSEN.as_dict(), "on-the-phone")
    await wait_presence(ami, "2000", Presence(State.DND, "on-the-phone", CHOSEN.message))

    await set_device_state(ami, IT_DEVICE, "NOT_INUSE")
    view = await wait_view(chosen, "2000", source="manual")
    assert (view["state"], view["subtype"], view["message"]) == (
        CHOSEN.state.value, CHOSEN.subtype, CHOSEN.message)
    await wait_presence(ami, "2000", CHOSEN, "the chosen presence back exactly after the call")


async def test_a_real_call_overlays_and_restores(dialplan: Server, ami: Any,
                                                 chosen: Any) -> None:
    """A real channel: Originate to a Local channel that is the user's device
    (core_local reports it in use while the call lasts)."""
    await originate(ami, IT_LOCAL_DEVICE, wait=3, sync=False)
    view = await wait_view(chosen, "2000", source="device")
    assert (view["state"], view["subtype"]) == ("dnd", "on-the-phone")
    await wait_presence(ami, "2000", Presence(State.DND, "on-the-phone", CHOSEN.message))
    # the ;1 half hangs up after its Wait(3): the call ends by itself
    view = await wait_view(chosen, "2000", source="manual")
    assert view["message"] == CHOSEN.message
    await wait_presence(ami, "2000", CHOSEN, "the chosen presence back exactly after the call")
