"""Queue pause by presence on the real ``support`` queue (member PJSIP/2000)."""

from __future__ import annotations

import contextlib
from typing import Any

import pytest

from astpresence.domain.model import Presence, State

from .asterisk import queue_member, set_in_asterisk, wait_presence
from .conftest import eventually

pytestmark = pytest.mark.timeout(120)

MEMBER = "PJSIP/2000"


async def pause(ami: Any, paused: bool, reason: str = "") -> None:
    headers = {"Interface": MEMBER, "Queue": "support", "Paused": str(paused).lower()}
    if reason:
        headers["Reason"] = reason
    await ami.send_action("QueuePause", headers)


async def wait_member(ami: Any, paused: str, reason: str | None = None) -> dict[str, str]:
    async def check() -> dict[str, str] | None:
        member = await queue_member(ami, "support", MEMBER)
        ok = member.get("Paused") == paused and (
            reason is None or member.get("PausedReason") == reason)
        return member if ok else None

    return await eventually(check, f"{MEMBER} Paused={paused} reason={reason}")


@pytest.fixture
async def unpaused(ami: Any) -> Any:
    await pause(ami, False)
    await set_in_asterisk(ami, "2000", Presence(State.AVAILABLE))
    yield ami
    with contextlib.suppress(Exception):
        await pause(ami, False)


async def test_pause_and_resume(unpaused: Any, daemon_factory: Any) -> None:
    ami = unpaused
    daemon = daemon_factory()
    await daemon.wait_ready()
    assert (await daemon.cli("set", "2000", "dnd")).returncode == 0
    await wait_member(ami, "1", "astpresence:dnd")
    assert (await daemon.cli("set", "2000", "away")).returncode == 0
    await wait_member(ami, "1", "astpresence:away")
    assert (await daemon.cli("set", "2000", "available")).returncode == 0
    await wait_member(ami, "0")


async def test_a_supervisors_pause_is_kept(unpaused: Any, daemon_factory: Any) -> None:
    """A member paused by someone else is never unpaused nor relabelled."""
    ami = unpaused
    daemon = daemon_factory()
    await daemon.wait_ready()
    await pause(ami, True, "supervisor: coaching")
    await wait_member(ami, "1", "supervisor: coaching")
    assert (await daemon.cli("set", "2000", "dnd")).returncode == 0
    await wait_presence(ami, "2000", Presence(State.DND))
    assert (await daemon.cli("set", "2000", "available")).returncode == 0
    await wait_presence(ami, "2000", Presence(State.AVAILABLE))
    # the presence writes above went out after any pause the daemon would have sent
    # on the same link; QueueStatus is asked after the presence read back
    member = await queue_member(ami, "support", MEMBER)
    assert (member.get("Paused"), member.get("PausedReason")) == ("1", "supervisor: coaching")


async def test_a_pause_missed_while_down_is_reconciled(unpaused: Any,
                                                       daemon_factory: Any, tmp_path: Any) -> None:
    """The daemon reconciles every member after a (re)connect."""
    ami = unpaused
    db = tmp_path / "q.db"
    first = daemon_factory(db=db)
    await first.wait_ready()
    assert (await first.cli("set", "2000", "xa")).returncode == 0
    await wait_member(ami, "1", "astpresence:xa")
    assert first.stop() == 0
    await pause(ami, False)  # someone unpaused it while the daemon was away
    second = daemon_factory(db=db, token=first.token)
    await second.wait_ready()
    await wait_member(ami, "1", "astpresence:xa")
