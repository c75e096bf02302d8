"""astpresence against a real Asterisk: daemon, CLI and dialplan kit together.

Skipped unless ASTPRESENCE_IT_AMI, ASTPRESENCE_IT_USERNAME and
ASTPRESENCE_IT_SECRET are set; README.md here lists the Asterisk
configuration these tests expect. They change the presence of users 2000 and
2001, the Custom: devices Custom:astpresence-it-2000 and Custom:presence-2001,
and the pause state of PJSIP/2000 in queue "support": use a test system.

The daemon and the CLI run as subprocesses (``python -m astpresence``), the
way an administrator runs them; the tests read Asterisk's side through their
own AMI session.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from typing import Any

import pytest

from astpresence.codec import encode_presence_value
from astpresence.model import Presence, State

from .conftest import IT_DEVICE, SKIP_REASON, eventually

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        not all(os.environ.get(n) for n in
                ("ASTPRESENCE_IT_AMI", "ASTPRESENCE_IT_USERNAME", "ASTPRESENCE_IT_SECRET")),
        reason=SKIP_REASON,
    ),
    pytest.mark.timeout(180),
]

FEATURES = "astpresence-features"


# --- Asterisk-side helpers (AMI) -------------------------------------------


async def presence_in_asterisk(ami: Any, user: str) -> Presence:
    """``PresenceState``; the message is in ``PresenceMessage`` (the first
    ``Message:`` header is the response's own)."""
    resp = await ami.send_action("PresenceState", {"Provider": f"CustomPresence:{user}"})
    return Presence(State(resp.get("State", "").lower()), resp.get("Subtype") or "",
                    resp.get("PresenceMessage") or "")


async def set_in_asterisk(ami: Any, user: str, presence: Presence) -> None:
    await ami.send_action("Setvar", {
        "Variable": f"PRESENCE_STATE(CustomPresence:{user})",
        "Value": encode_presence_value(presence),
    })


async def device_state(ami: Any, device: str) -> str:
    resp = await ami.send_action("Getvar", {"Variable": f"DEVICE_STATE({device})"})
    return resp.get("Value") or ""


async def set_device_state(ami: Any, device: str, state: str) -> None:
    await ami.send_action("Setvar", {"Variable": f"DEVICE_STATE({device})", "Value": state})


async def run_feature_code(ami: Any, code: str, user: str | None) -> None:
    """Dial ``code`` in astpresence-features from a Local channel.

    A Local channel has no PJSIP endpoint, so the user comes from
    ASTPRESENCE_USER, which Originate sets on the ;1 half and core_unreal
    copies to the ;2 half that runs the code. The ;1 half just waits.
    """
    headers = {
        "Channel": f"Local/{code}@{FEATURES}",
        "Application": "Wait",
        "Data": "3",
        "Timeout": "15000",
    }
    if user is not None:
        headers["Variable"] = f"ASTPRESENCE_USER={user}"
    await ami.send_action("Originate", headers, timeout=30.0)


async def queue_member(ami: Any, queue: str, interface: str) -> dict[str, str]:
    events = await ami.send_list_action("QueueStatus", {"Queue": queue})
    for ev in events:
        if ev.event == "QueueMember" and ev.get("Location") == interface:
            return {k: v for k, v in ev.headers}
    raise AssertionError(f"{interface} is not a member of queue {queue!r}; see README.md")


@pytest.fixture
async def baseline(ami: Any) -> Any:
    """Users 2000 and 2001 available, the IT device idle, PJSIP/2000 unpaused."""
    for user in ("2000", "2001"):
        await set_in_asterisk(ami, user, Presence(State.AVAILABLE))
    await set_device_state(ami, IT_DEVICE, "NOT_INUSE")
    yield ami
    await set_device_state(ami, IT_DEVICE, "NOT_INUSE")
    # best-effort cleanup: an error here only means the member was not paused
    with contextlib.suppress(Exception):
        await ami.send_action("QueuePause", {"Interface": "PJSIP/2000", "Queue": "support",
                                             "Paused": "false"})


# --- tests --------------------------------------------------------------------


async def test_cli_set_reaches_asterisk(baseline: Any, daemon_factory: Any) -> None:
    ami = baseline
    daemon = daemon_factory()
    await daemon.wait_ready()
    wanted = Presence(State.AWAY, "lunch", "Back at 2, promise — café")
    res = await daemon.cli("set", "2000", "away", "--subtype", wanted.subtype,
                           "--message", wanted.message, "--json")
    assert res.json()["state"] == "away"

    async def check() -> bool:
        return await presence_in_asterisk(ami, "2000") == wanted

    await eventually(check, "PresenceState of 2000 to show the CLI's value")
    view = await daemon.get("2000")
    assert (view["state"], view["subtype"], view["message"], view["source"]) == (
        "away", wanted.subtype, wanted.message, "manual")


async def test_feature_code_is_adopted_by_the_daemon(baseline: Any,
                                                     daemon_factory: Any) -> None:
    ami = baseline
    daemon = daemon_factory()
    await daemon.wait_ready()
    await eventually(lambda: _state_is(daemon, "2000", "available"), "2000 available")

    await run_feature_code(ami, "*33", user="2000")

    async def adopted() -> dict[str, Any] | None:
        view = await daemon.get("2000")
        return view if view["state"] == "dnd" else None

    view = await eventually(adopted, "the daemon to adopt dnd set by *33")
    assert view["source"] == "manual"
    assert await presence_in_asterisk(ami, "2000") == Presence(State.DND)


async def _state_is(daemon: Any, user: str, state: str) -> bool:
    return bool((await daemon.get(user))["state"] == state)


async def test_feature_codes_work_without_the_daemon(baseline: Any) -> None:
    """The kit writes PRESENCE_STATE itself: toggle, fixed codes, presets."""
    ami = baseline

    async def wait_for(presence: Presence) -> None:
        async def check() -> bool:
            return await presence_in_asterisk(ami, "2001") == presence

        await eventually(check, f"2001 to become {presence}")

    await run_feature_code(ami, "*30", user="2001")  # available -> dnd
    await wait_for(Presence(State.DND))
    await run_feature_code(ami, "*30", user="2001")  # dnd -> available
    await wait_for(Presence(State.AVAILABLE))
    await run_feature_code(ami, "*34", user="2001")
    await wait_for(Presence(State.XA))
    await run_feature_code(ami, "*36", user="2001")
    await wait_for(Presence(State.NOT_SET))

    # a preset as `astpresence dialplan presets` would write it, set as a global
    preset = Presence(State.AWAY, "réunion", "Back at 2, promise")
    await ami.send_action("Setvar", {"Variable": "ASTPRESENCE_PRESET_7",
                                     "Value": encode_presence_value(preset)})
    try:
        await run_feature_code(ami, "*377", user="2001")
        await wait_for(preset)
    finally:
        await ami.send_action("Setvar", {"Variable": "ASTPRESENCE_PRESET_7", "Value": ""})


async def test_feature_code_without_a_user_writes_nothing(baseline: Any) -> None:
    ami = baseline
    before = await presence_in_asterisk(ami, "2000")
    # Local channel, no ASTPRESENCE_USER: CHANNEL(endpoint) is empty there
    await run_feature_code(ami, "*33", user=None)
    await asyncio.sleep(3.0)  # the code has answered, failed, played its tone and hung up
    assert await presence_in_asterisk(ami, "2000") == before
    assert await presence_in_asterisk(ami, "2001") == Presence(State.AVAILABLE)


async def test_custom_device_drives_presence(baseline: Any, daemon_factory: Any) -> None:
    """NEEDS THE ENGINE'S DEVICE SOURCE: user 2000 has the extra device
    Custom:astpresence-it-2000 (IT_CONFIG); a device in a call state puts the
    documented on-the-phone overlay (unavailable / "on-the-phone", source
    device) over an overridable manual state, and the manual state comes back
    when the call ends. This asserts the documented behaviour even if the
    daemon does not implement it yet."""
    ami = baseline
    daemon = daemon_factory()
    await daemon.wait_ready()
    assert (await daemon.cli("set", "2000", "available")).returncode == 0

    await set_device_state(ami, IT_DEVICE, "INUSE")

    async def on_phone() -> dict[str, Any] | None:
        view = await daemon.get("2000")
        return view if view["state"] == "unavailable" else None

    view = await eventually(on_phone, "2000 to be on the phone")
    assert (view["subtype"], view["source"]) == ("on-the-phone", "device")

    async def asterisk_on_phone() -> bool:
        return await presence_in_asterisk(ami, "2000") == Presence(State.UNAVAILABLE,
                                                                   "on-the-phone")

    await eventually(asterisk_on_phone, "Asterisk to show the on-the-phone overlay")

    await set_device_state(ami, IT_DEVICE, "NOT_INUSE")

    async def back() -> bool:
        view = await daemon.get("2000")
        return view["state"] == "available" and view["source"] == "manual"

    await eventually(back, "2000 to be available again after the call")
    assert await presence_in_asterisk(ami, "2000") == Presence(State.AVAILABLE)


async def test_blf_mirror_follows_presence(baseline: Any, daemon_factory: Any) -> None:
    """rules.mirror = true: Custom:presence-2001 is BUSY while 2001 is dnd and
    INVALID (neutral in the hint's aggregation) when available."""
    ami = baseline
    daemon = daemon_factory()
    await daemon.wait_ready()
    mirror = "Custom:presence-2001"

    assert (await daemon.cli("set", "2001", "dnd")).returncode == 0

    async def busy() -> bool:
        return await device_state(ami, mirror) == "BUSY"

    await eventually(busy, f"{mirror} to be BUSY")

    assert (await daemon.cli("set", "2001", "away")).returncode == 0

    async def on_hold() -> bool:
        return await device_state(ami, mirror) == "ONHOLD"

    await eventually(on_hold, f"{mirror} to be ONHOLD")

    assert (await daemon.cli("set", "2001", "available")).returncode == 0

    async def neutral() -> bool:
        return await device_state(ami, mirror) == "INVALID"

    await eventually(neutral, f"{mirror} to be INVALID")


async def test_queue_pause_and_resume(baseline: Any, daemon_factory: Any) -> None:
    ami = baseline
    daemon = daemon_factory()
    await daemon.wait_ready()

    assert (await daemon.cli("set", "2000", "dnd")).returncode == 0

    async def paused() -> dict[str, str] | None:
        member = await queue_member(ami, "support", "PJSIP/2000")
        return member if member.get("Paused") == "1" else None

    member = await eventually(paused, "PJSIP/2000 to be paused in queue support")
    assert member.get("PausedReason") == "astpresence:dnd"

    assert (await daemon.cli("set", "2000", "available")).returncode == 0

    async def resumed() -> bool:
        return (await queue_member(ami, "support", "PJSIP/2000")).get("Paused") == "0"

    await eventually(resumed, "PJSIP/2000 to be unpaused")


async def test_restart_keeps_state(baseline: Any, daemon_factory: Any, tmp_path: Any) -> None:
    ami = baseline
    db = tmp_path / "restart.db"
    first = daemon_factory(db=db)
    await first.wait_ready()
    wanted = Presence(State.XA, "holiday", "Back on Monday, 3 June")
    res = await first.cli("set", "2000", "xa", "--subtype", wanted.subtype,
                          "--message", wanted.message)
    assert res.returncode == 0, res.stderr

    async def written() -> bool:
        return await presence_in_asterisk(ami, "2000") == wanted

    await eventually(written, "Asterisk to hold the xa presence")
    assert first.stop() == 0, "the daemon should exit cleanly on SIGTERM"

    second = daemon_factory(db=db)
    await second.wait_ready()
    view = await second.get("2000")
    assert (view["state"], view["subtype"], view["message"], view["source"]) == (
        "xa", wanted.subtype, wanted.message, "manual")
    assert await presence_in_asterisk(ami, "2000") == wanted
    history = (await second.cli("history", "2000", "--json")).json()
    assert any(h["new"]["state"] == "xa" for h in history)
