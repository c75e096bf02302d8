"""What phones and the dialplan read, on a real Asterisk: an unplugged phone is
Unavailable (never Busy), a registered idle person is available, a named status
reaches the hint with its duration (docs/presence-rules.md, "What each reader
shows"). The call overlay and its exact return: test_calls.py; routing: test_kit.py.
"""

from __future__ import annotations

from typing import Any

import pytest

from astpresence.domain.model import Presence, State

from .asterisk import (
    hint_line,
    set_device_state,
    set_in_asterisk,
    wait_device,
    wait_presence,
    wait_view,
)
from .conftest import IT_USERS, Server, eventually

pytestmark = pytest.mark.timeout(120)

#: The mirror on, and the offline overlay after a second (the lab's PJSIP phones are
#: not registered: PJSIP/2001 is UNAVAILABLE).
OFFLINE_CONFIG = """
[rules]
mirror = true
offline_after = 1

[[statuses]]
id = "lunch"
label = "Lunch"
state = "away"
message = "At lunch"
for = "1h"
""" + IT_USERS


async def test_an_unplugged_phone_reads_unavailable_not_busy(it: Server, ami: Any,
                                                             daemon_factory: Any) -> None:
    await set_in_asterisk(ami, "2001", Presence(State.NOT_SET))
    daemon = daemon_factory(OFFLINE_CONFIG)
    await daemon.wait_ready()
    # Nothing chosen, phone unregistered: offline, the hint's devices Unavailable.
    view = await wait_view(daemon, "2001", activity="offline")
    assert (view["state"], view["subtype"], view["rule"]) == ("unavailable", "offline",
                                                              "offline")
    await wait_presence(ami, "2001", Presence(State.UNAVAILABLE, "offline"))
    assert (await hint_line(it, "2001", ami))["state"] == "Unavailable"
    # Chosen unavailable: the mirror shows UNAVAILABLE (before 0.2: BUSY, which lit
    # every BLF key red and counted as busy for app_queue).
    assert (await daemon.cli("set", "2001", "unavailable")).returncode == 0
    await wait_device(ami, "Custom:presence-2001", "UNAVAILABLE")
    hint = await hint_line(it, "2001", ami)
    assert (hint["state"], hint["presence"]) == ("Unavailable", "unavailable")
    # dnd still lights the key: the mirror follows what the person chose.
    assert (await daemon.cli("set", "2001", "dnd")).returncode == 0
    await wait_device(ami, "Custom:presence-2001", "BUSY")
    assert (await hint_line(it, "2001", ami))["state"] == "Busy"


async def test_a_registered_idle_person_reads_available(it: Server, ami: Any,
                                                        daemon_factory: Any) -> None:
    """2002's phone (Custom:phone-2002) is idle and nothing is chosen: available, as
    UCP and chat clients should show it, not not_set ("Offline" in UCP)."""
    await set_device_state(ami, "Custom:phone-2002", "NOT_INUSE")
    await set_in_asterisk(ami, "2002", Presence(State.NOT_SET))
    daemon = daemon_factory(OFFLINE_CONFIG)
    await daemon.wait_ready()
    view = await wait_view(daemon, "2002", state="available")
    assert (view["source"], view["rule"]) == ("device", "registered")
    await wait_presence(ami, "2002", Presence(State.AVAILABLE))
    assert (await hint_line(it, "2002", ami))["presence"] == "available"
    # Unplugged: offline after a second, and not_set is never written on the way.
    await set_device_state(ami, "Custom:phone-2002", "UNAVAILABLE")
    await wait_presence(ami, "2002", Presence(State.UNAVAILABLE, "offline"))


async def test_a_named_status_reaches_the_hint_and_lapses_by_itself(
        it: Server, ami: Any, daemon_factory: Any) -> None:
    await set_device_state(ami, "Custom:phone-2002", "NOT_INUSE")
    daemon = daemon_factory(OFFLINE_CONFIG)
    await daemon.wait_ready()
    res = await daemon.cli("set", "2002", "--status", "lunch", "--json")
    assert res.returncode == 0, res.stderr
    await wait_presence(ami, "2002", Presence(State.AWAY, "", "At lunch"))
    sources = (await daemon.cli("source", "list", "2002", "--json")).json()
    manual = [s for s in sources["sources"] if s["source"] == "manual"]
    assert len(manual) == 1 and manual[0]["end"] is not None  # an hour, from the status
    # A choice with its own short end: back to available by itself.
    res = await daemon.cli("set", "2002", "dnd", "--for", "2s")
    assert res.returncode == 0, res.stderr
    await wait_presence(ami, "2002", Presence(State.DND))

    async def lapsed() -> bool:
        return (await daemon.get("2002"))["state"] == "available"

    await eventually(lapsed, "the dnd to lapse after 2 s")
    await wait_presence(ami, "2002", Presence(State.AVAILABLE))
