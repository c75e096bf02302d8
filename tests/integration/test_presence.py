"""Presence both ways between the daemon and a real Asterisk."""

from __future__ import annotations

import asyncio
import json
import urllib.request
from typing import Any

from astpresence.domain.model import Presence, State, normalise_text

from tests.support.fakeami import asterisk_b64decode

from .asterisk import (hint_line, presence_in_asterisk, set_in_asterisk, set_in_dialplan,
                       wait_presence, wait_view)
from .conftest import Server, asterisk_cli

pytestmark = __import__("pytest").mark.timeout(120)


async def test_cli_set_reaches_the_hint(it: Server, ami: Any, daemon_factory: Any) -> None:
    await set_in_asterisk(ami, "2000", Presence(State.AVAILABLE))
    daemon = daemon_factory()
    await daemon.wait_ready()
    wanted = Presence(State.AWAY, "lunch", "Back at 2, promise — café")
    res = await daemon.cli("set", "2000", "away", "--subtype", wanted.subtype,
                           "--message", wanted.message, "--json")
    assert res.json()["state"] == "away"
    await wait_presence(ami, "2000", wanted)
    assert (await hint_line(it, "2000", ami))["presence"] == "away"
    view = await daemon.get("2000")
    assert (view["state"], view["subtype"], view["message"], view["source"]) == (
        "away", wanted.subtype, wanted.message, "manual")


async def test_api_set_reaches_the_hint(it: Server, ami: Any, daemon_factory: Any) -> None:
    await set_in_asterisk(ami, "2001", Presence(State.AVAILABLE))
    daemon = daemon_factory()
    await daemon.wait_ready()
    body = json.dumps({"state": "dnd", "message": "Focus time"}).encode()
    req = urllib.request.Request(daemon.api + "/v1/presence/2001", data=body, method="PUT",
                                 headers={"Authorization": f"Bearer {daemon.token}",
                                          "Content-Type": "application/json"})

    def put() -> dict[str, Any]:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return dict(json.loads(resp.read()))

    assert (await asyncio.to_thread(put))["state"] == "dnd"
    await wait_presence(ami, "2001", Presence(State.DND, "", "Focus time"))
    assert (await hint_line(it, "2001", ami))["presence"] == "dnd"


async def test_a_change_on_the_asterisk_cli_is_adopted(it: Server, ami: Any,
                                                       daemon_factory: Any) -> None:
    """``presencestate change`` (func_presencestate's CLI command) is a change made
    elsewhere: the daemon adopts it as the person's manual state."""
    await set_in_asterisk(ami, "2000", Presence(State.AVAILABLE))
    daemon = daemon_factory()
    await daemon.wait_ready()
    await wait_view(daemon, "2000", state="available")
    out = await asterisk_cli(it, 'presencestate change CustomPresence:2000 "XA,holiday,Back on Monday"',
                             ami)
    assert "Changing 2000 to XA" in out, out
    view = await wait_view(daemon, "2000", state="xa")
    assert (view["subtype"], view["message"], view["source"]) == (
        "holiday", "Back on Monday", "manual")


async def test_a_change_made_by_the_dialplan_is_adopted(dialplan: Server, ami: Any,
                                                        daemon_factory: Any) -> None:
    await set_in_asterisk(ami, "2001", Presence(State.AVAILABLE))
    daemon = daemon_factory()
    await daemon.wait_ready()
    await wait_view(daemon, "2001", state="available")
    wanted = Presence(State.AWAY, "meeting", "In Raum 3, bis 15 Uhr")
    await set_in_dialplan(ami, "2001", wanted)
    view = await wait_view(daemon, "2001", state="away")
    assert (view["subtype"], view["message"], view["source"]) == (
        wanted.subtype, wanted.message, "manual")
    assert await presence_in_asterisk(ami, "2001") == wanted


async def test_restart_keeps_state(ami: Any, daemon_factory: Any, tmp_path: Any) -> None:
    await set_in_asterisk(ami, "2000", Presence(State.AVAILABLE))
    db = tmp_path / "restart.db"
    first = daemon_factory(db=db)
    await first.wait_ready()
    wanted = Presence(State.XA, "holiday", "Back on Monday, 3 June")
    res = await first.cli("set", "2000", "xa", "--subtype", wanted.subtype,
                          "--message", wanted.message)
    assert res.returncode == 0, res.stderr
    await wait_presence(ami, "2000", wanted)
    assert first.stop() == 0, "the daemon should exit cleanly on SIGTERM"

    second = daemon_factory(db=db, token=first.token)
    await second.wait_ready()
    view = await second.get("2000")
    assert (view["state"], view["subtype"], view["message"], view["source"]) == (
        "xa", wanted.subtype, wanted.message, "manual")
    assert await presence_in_asterisk(ami, "2000") == wanted
    history = (await second.cli("history", "2000", "--json")).json()
    assert any(h["new"]["state"] == "xa" for h in history)


async def test_text_asterisk_holds_is_adopted_normalised(ami: Any, daemon_factory: Any) -> None:
    """Asterisk decodes any ``,e`` text, valid base64 or not (ast_base64decode reads
    a character outside the alphabet as 63): here the subtype becomes bytes with
    control characters and invalid UTF-8. The daemon adopts it normalised."""
    await set_in_asterisk(ami, "2000", Presence(State.AVAILABLE))
    daemon = daemon_factory()
    await daemon.wait_ready()
    await wait_view(daemon, "2000", state="available")
    await ami.send_action("Setvar", {"Variable": "PRESENCE_STATE(CustomPresence:2000)",
                                     "Value": "away,bad base64!,TWVzc2FnZQ==,e"})
    stored = asterisk_b64decode("bad base64!")  # the fake decodes as Asterisk does
    assert stored == "m\ufffd\x7fm\ufffd\x1e\ufffd"
    view = await wait_view(daemon, "2000", state="away", message="Message")
    assert view["subtype"] == normalise_text(stored) == "m\ufffdm\ufffd\ufffd"
    # and the clean value is written back, so it can be restored after a call
    await wait_presence(ami, "2000", Presence(State.AWAY, normalise_text(stored), "Message"))
