"""The dialplan kit (dialplan/extensions_astpresence.conf) on a real Asterisk."""

from __future__ import annotations

from typing import Any

import pytest

from astpresence.asterisk.codec import encode_presence_value
from astpresence.domain.model import Presence, State

from .asterisk import (call_and_read, presence_in_asterisk, run_feature_code, set_global,
                       set_in_asterisk, wait_presence, wait_view)
from .conftest import Server

pytestmark = pytest.mark.timeout(120)


@pytest.mark.parametrize(("code", "before", "after"), [
    ("*30", State.AVAILABLE, State.DND),
    ("*30", State.DND, State.AVAILABLE),
    ("*31", State.DND, State.AVAILABLE),
    ("*32", State.AVAILABLE, State.AWAY),
    ("*33", State.AVAILABLE, State.DND),
    ("*34", State.AVAILABLE, State.XA),
    ("*35", State.AVAILABLE, State.CHAT),
    ("*36", State.AVAILABLE, State.NOT_SET),
])
async def test_every_feature_code(dialplan: Server, ami: Any, code: str, before: State,
                                  after: State) -> None:
    """Each code writes PRESENCE_STATE itself: it works without the daemon."""
    await set_in_asterisk(ami, "2001", Presence(before, "old", "old message"))
    await run_feature_code(ami, code, user="2001")
    await wait_presence(ami, "2001", Presence(after))


async def test_a_preset_code(dialplan: Server, ami: Any) -> None:
    preset = Presence(State.AWAY, "réunion", "Back at 2, promise")
    await set_in_asterisk(ami, "2001", Presence(State.AVAILABLE))
    await set_global(ami, "ASTPRESENCE_PRESET_7", encode_presence_value(preset))
    try:
        await run_feature_code(ami, "*377", user="2001")
        await wait_presence(ami, "2001", preset)
        # an unset preset writes nothing
        await run_feature_code(ami, "*378", user="2001")
        assert await presence_in_asterisk(ami, "2001") == preset
    finally:
        await set_global(ami, "ASTPRESENCE_PRESET_7", "")


async def test_a_code_without_a_user_writes_nothing(dialplan: Server, ami: Any) -> None:
    await set_in_asterisk(ami, "2000", Presence(State.AVAILABLE))
    await set_in_asterisk(ami, "2001", Presence(State.AVAILABLE))
    # a Local channel without ASTPRESENCE_USER: CHANNEL(endpoint) is empty there.
    # The Originate is synchronous: it returns once the code has answered, so the
    # code's write (if any) is done when a second, working code has run after it.
    await run_feature_code(ami, "*33", user=None)
    await run_feature_code(ami, "*32", user="2001")
    await wait_presence(ami, "2001", Presence(State.AWAY))
    assert await presence_in_asterisk(ami, "2000") == Presence(State.AVAILABLE)


async def test_a_feature_code_is_adopted_by_the_daemon(dialplan: Server, ami: Any,
                                                       daemon_factory: Any) -> None:
    await set_in_asterisk(ami, "2000", Presence(State.AVAILABLE))
    daemon = daemon_factory()
    await daemon.wait_ready()
    await wait_view(daemon, "2000", state="available")
    await run_feature_code(ami, "*33", user="2000")
    view = await wait_view(daemon, "2000", state="dnd")
    assert view["source"] == "manual"
    assert await presence_in_asterisk(ami, "2000") == Presence(State.DND)


async def call_routed(ami: Any, exten: str) -> dict[str, str]:
    """Call ``exten`` through ``astpresence-dial`` (context it-route) from it-caller,
    and read back what the kit returned and what the calling side saw."""
    names = {"result": f"IT_RESULT_{exten}", "dialstatus": f"IT_DIALSTATUS_{exten}",
             "cause": f"IT_CAUSE_{exten}"}
    return await call_and_read(ami, f"Local/{exten}@it-caller", names, timeout=15)


@pytest.mark.parametrize(("state", "result", "dialstatus", "cause"), [
    (State.AVAILABLE, "DIALED", "ANSWER", "16"),
    # no voicemail box for 2001 on the test server: a chosen dnd falls back to busy
    # (486), away and xa to absent (480, cause 20: DIALSTATUS CHANUNAVAIL)
    (State.DND, "BUSY", "BUSY", "17"),
    (State.AWAY, "UNAVAILABLE", "CHANUNAVAIL", "20"),
    (State.XA, "UNAVAILABLE", "CHANUNAVAIL", "20"),
    # astpresence's reading of a call in progress: dialled, the phone decides
    (Presence(State.DND, "on-the-phone"), "DIALED", "ANSWER", "16"),
])
async def test_astpresence_dial_routes_a_real_call(dialplan: Server, ami: Any,
                                                   state: State | Presence, result: str,
                                                   dialstatus: str, cause: str) -> None:
    await set_in_asterisk(ami, "2001", state if isinstance(state, Presence) else Presence(state))
    got = await call_routed(ami, "2001")
    assert got == {"result": result, "dialstatus": dialstatus, "cause": cause}


async def test_routing_follows_a_change_made_through_the_daemon(
        dialplan: Server, ami: Any, daemon_factory: Any) -> None:
    await set_in_asterisk(ami, "2001", Presence(State.AVAILABLE))
    daemon = daemon_factory()
    await daemon.wait_ready()
    assert (await daemon.cli("set", "2001", "dnd")).returncode == 0
    await wait_presence(ami, "2001", Presence(State.DND))
    assert (await call_routed(ami, "2001"))["result"] == "BUSY"
    assert (await daemon.cli("set", "2001", "available")).returncode == 0
    await wait_presence(ami, "2001", Presence(State.AVAILABLE))
    assert (await call_routed(ami, "2001"))["result"] == "DIALED"
