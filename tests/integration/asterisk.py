"""What the tests read and do on the Asterisk side, over their own AMI session."""

from __future__ import annotations

import base64
import re
from typing import Any

from astpresence.asterisk.codec import encode_presence_value
from astpresence.domain.model import Presence, State

from .conftest import Server, asterisk_cli, eventually

FEATURES = "astpresence-features"


async def presence_in_asterisk(ami: Any, user: str) -> Presence:
    """``PresenceState``; the message is in ``PresenceMessage`` (the first
    ``Message:`` header is the response's own)."""
    resp = await ami.send_action("PresenceState", {"Provider": f"CustomPresence:{user}"})
    return Presence(State(resp.get("State", "").lower()), resp.get("Subtype") or "",
                    resp.get("PresenceMessage") or "")


async def hint_line(server: Server, exten: str, ami: Any | None = None) -> dict[str, str]:
    """``core show hint <exten>``: the hint's device ``State`` and ``Presence``, as a
    phone's BLF key and the dialplan see them."""
    out = await asterisk_cli(server, f"core show hint {exten}", ami)
    found = re.search(r"State:(\S+)\s+Presence:(\S+)", out)
    assert found, f"no hint for {exten}: {out!r}"
    return {"state": found.group(1), "presence": found.group(2)}


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


async def get_global(ami: Any, name: str) -> str:
    resp = await ami.send_action("Getvar", {"Variable": f"GLOBAL({name})"})
    return resp.get("Value") or ""


async def set_global(ami: Any, name: str, value: str) -> None:
    await ami.send_action("Setvar", {"Variable": f"GLOBAL({name})", "Value": value})


async def astdb_get(ami: Any, family: str, key: str) -> str | None:
    from astpresence.asterisk.ami.client import ActionError

    try:
        events = await ami.send_list_action("DBGet", {"Family": family, "Key": key})
    except ActionError:
        return None  # "Database entry not found"
    for ev in events:
        if ev.event == "DBGetResponse":
            return ev.get("Val") or ""
    return None


async def originate(ami: Any, channel: str, variables: dict[str, str] | None = None,
                    *, wait: int = 3, sync: bool = True) -> None:
    """A Local channel whose ;2 half runs ``channel``'s dialplan; the ;1 half waits.

    Originate variables reach the ;2 half because core_unreal copies every
    variable from ;1 to ;2 on call. One ``Variable`` header each: a value
    with a comma would be split by manager.c otherwise.
    """
    headers: list[tuple[str, str]] = [
        ("Channel", channel), ("Application", "Wait"), ("Data", str(wait)),
        ("Timeout", "15000"), ("Async", "false" if sync else "true")]
    for name, value in (variables or {}).items():
        headers.append(("Variable", f"{name}={value}"))
    await ami.send_action("Originate", headers, timeout=30.0)


async def call_and_read(ami: Any, channel: str, names: dict[str, str], *,
                        done_when: str = "dialstatus", timeout: float = 40.0,
                        wait: int = 10) -> dict[str, str]:
    """Originate ``channel`` (a calling side that records into globals) and read the
    globals ``names`` (key -> global) once ``names[done_when]`` is set; each is
    cleared first."""
    for name in names.values():
        await set_global(ami, name, "")
    await originate(ami, channel, wait=wait, sync=False)

    async def done() -> dict[str, str] | None:
        got = {k: await get_global(ami, v) for k, v in names.items()}
        return got if got[done_when] else None

    return await eventually(done, f"the call from {channel} to end", timeout=timeout)


async def run_feature_code(ami: Any, code: str, user: str | None) -> None:
    """Dial ``code`` in astpresence-features from a Local channel.

    A Local channel has no PJSIP endpoint, so the user comes from
    ASTPRESENCE_USER, as the kit documents for trusted callers.
    """
    await originate(ami, f"Local/{code}@{FEATURES}",
                    {"ASTPRESENCE_USER": user} if user is not None else None)


async def set_in_dialplan(ami: Any, user: str, presence: Presence) -> None:
    """``Set(PRESENCE_STATE(CustomPresence:<user>)=...,e)`` run by the dialplan."""
    def b64(text: str) -> str:
        return base64.b64encode(text.encode()).decode()

    await originate(ami, "Local/s@it-set-presence", {
        "ITUSER": user, "ITSTATE": presence.state.value,
        "ITSUB": b64(presence.subtype), "ITMSG": b64(presence.message)}, wait=1)


async def queue_member(ami: Any, queue: str, interface: str) -> dict[str, str]:
    events = await ami.send_list_action("QueueStatus", {"Queue": queue})
    for ev in events:
        if ev.event == "QueueMember" and ev.get("Location") == interface:
            return {k: v for k, v in ev.headers}
    raise AssertionError(f"{interface} is not a member of queue {queue!r}; see README.md")


async def wait_presence(ami: Any, user: str, wanted: Presence, what: str = "") -> None:
    async def check() -> bool:
        return await presence_in_asterisk(ami, user) == wanted

    await eventually(check, what or f"Asterisk to hold {wanted} for {user}")


async def wait_device(ami: Any, device: str, wanted: str) -> None:
    async def check() -> bool:
        return await device_state(ami, device) == wanted

    await eventually(check, f"{device} to be {wanted}")


async def wait_view(daemon: Any, user: str, **wanted: str) -> dict[str, Any]:
    """Poll the daemon's view of ``user`` until every given field matches."""
    async def check() -> dict[str, Any] | None:
        view: dict[str, Any] = await daemon.get(user)
        return view if all(view.get(k) == v for k, v in wanted.items()) else None

    return await eventually(check, f"the daemon to show {user} with {wanted}")
