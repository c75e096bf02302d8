"""Call handling on a real Asterisk: rules set with the CLI, written by the daemon
into astdb, and followed by the kit's astpresence-dial at call time (also with
the daemon stopped). What the caller sees is read on the calling side: the
result, DIALSTATUS and hangup cause through Local channels, and the SIP answer
of a real INVITE from the lab's watcher endpoint."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest

from astpresence.asterisk.ami.client import ActionError
from astpresence.domain.model import Presence, State
from tests.support.sip import Caller

from .asterisk import (astdb_get, call_and_read, originate, set_global, set_in_asterisk,
                       wait_view)
from .conftest import IT_CONFIG, Server, eventually

pytestmark = pytest.mark.timeout(120)

#: Forwards go to it-forwarded, which notes the time it was reached and answers.
CALLS_CONFIG = IT_CONFIG + """
[calls]
forward_dial = "Local/{to}@it-forwarded"
forward_users = true
forward_allow = ["^01[0-9]{6,12}$"]
"""
ANSWERS = "Local/answer@it-callee"
RINGS = "Local/ring@it-ringing"
UNREGISTERED = "PJSIP/2000"  # the lab's endpoint 2000 never registers


async def call(ami: Any, exten: str, *, phone: str, caller: str) -> dict[str, str]:
    """Call ``exten`` through astpresence-dial (it-caller-calls -> it-route-calls), its
    phone being ``phone``, from an ``internal`` or ``external`` caller."""
    await set_global(ami, "IT_PHONE", phone)
    await set_global(ami, "IT_CALLER", caller)
    names = {"result": f"IT_RESULT_{exten}", "target": f"IT_TARGET_{exten}",
             "rule": f"IT_RULE_{exten}", "dialstatus": f"IT_DIALSTATUS_{exten}",
             "cause": f"IT_CAUSE_{exten}", "started": f"IT_STARTED_{exten}",
             "shown": f"IT_SHOWN_{exten}",
             "forwarded": "IT_FORWARDED_2002"}
    return await call_and_read(ami, f"Local/{exten}@it-caller-calls", names, wait=30)


async def rules_set(daemon: Any, user: str, *rules: str) -> None:
    result = await daemon.cli("calls", "set", user, *rules)
    assert result.returncode == 0, result.stderr


async def written(ami: Any, user: str, caller: str, wanted: str | None) -> None:
    async def check() -> bool | None:
        return True if await astdb_get(ami, "astpresence-calls", f"{user}/{caller}") == wanted \
            else None
    await eventually(check, f"astpresence-calls/{user}/{caller} = {wanted!r}")


@pytest.fixture
async def away_2001(dialplan: Server, ami: Any, daemon_factory: Any) -> AsyncIterator[Any]:
    """A daemon with [calls], and user 2001 away (chosen through the daemon). The
    astdb family is removed afterwards: the other tests route by presence alone."""
    await set_in_asterisk(ami, "2001", Presence(State.AVAILABLE))
    daemon = daemon_factory(CALLS_CONFIG)
    await daemon.wait_ready()
    assert (await daemon.cli("set", "2001", "away")).returncode == 0
    await wait_view(daemon, "2001", state="away")
    yield daemon
    daemon.stop()
    with contextlib.suppress(ActionError):  # nothing left is fine
        await ami.send_action("DBDelTree", {"Family": "astpresence-calls"})


async def test_an_away_user_forwarded_to_another_extension(away_2001: Any, ami: Any) -> None:
    await rules_set(away_2001, "2001", "away forward to 2002")
    await written(ami, "2001", "internal", "v1|forward,0,0,2002,Local/2002@it-forwarded|||")
    got = await call(ami, "2001", phone=ANSWERS, caller="internal")
    assert (got["result"], got["target"], got["dialstatus"], got["cause"]) == (
        "FORWARDED", "2002", "ANSWER", "16")
    assert got["forwarded"], "the forward's destination was never reached"


async def test_forwarded_after_three_seconds_of_ringing(away_2001: Any, ami: Any) -> None:
    await rules_set(away_2001, "2001", "away forward to 2002 after 3")
    await written(ami, "2001", "external", "v1|forward,3,0,2002,Local/2002@it-forwarded|||")
    got = await call(ami, "2001", phone=RINGS, caller="external")
    assert (got["result"], got["target"], got["dialstatus"]) == ("FORWARDED", "2002", "ANSWER")
    assert int(got["forwarded"]) - int(got["started"]) >= 3  # EPOCH: whole seconds


async def test_external_callers_get_their_own_rule(away_2001: Any, ami: Any) -> None:
    await rules_set(away_2001, "2001", "away external forward to 0171234567",
                    "away busy")
    await written(ami, "2001", "external",
                  "v1|forward,0,0,0171234567,Local/0171234567@it-forwarded|||")
    await written(ami, "2001", "internal", "v1|busy|||")
    outside = await call(ami, "2001", phone=ANSWERS, caller="external")
    assert (outside["result"], outside["target"], outside["rule"]) == (
        "FORWARDED", "0171234567", "external")
    inside = await call(ami, "2001", phone=ANSWERS, caller="internal")
    assert (inside["result"], inside["dialstatus"], inside["cause"], inside["rule"]) == (
        "BUSY", "BUSY", "17", "internal")


async def test_the_last_rule_holds_while_the_daemon_is_stopped(away_2001: Any,
                                                               ami: Any) -> None:
    await rules_set(away_2001, "2001", "away forward to 2002")
    await written(ami, "2001", "internal", "v1|forward,0,0,2002,Local/2002@it-forwarded|||")
    assert away_2001.stop() == 0
    got = await call(ami, "2001", phone=ANSWERS, caller="internal")
    assert (got["result"], got["target"]) == ("FORWARDED", "2002")


async def test_a_forward_the_policy_refuses_is_never_written(away_2001: Any, ami: Any) -> None:
    await rules_set(away_2001, "2001", "away voicemail")
    result = await away_2001.cli("calls", "set", "2001", "away forward to 0900123456")
    assert result.returncode != 0
    assert "not allowed by this site's policy" in result.stderr
    await written(ami, "2001", "internal", "v1|voicemail,u|||")


async def test_not_registered_and_after_ringing(away_2001: Any, ami: Any) -> None:
    assert (await away_2001.cli("set", "2001", "available")).returncode == 0
    await rules_set(away_2001, "2001", "available on unregistered forward to 2002",
                    "available on no_answer busy", "available ring timeout 2")
    await written(ami, "2001", "internal",
                  "v1|ring,2||busy|forward,0,0,2002,Local/2002@it-forwarded")
    absent = await call(ami, "2001", phone=UNREGISTERED, caller="internal")
    assert (absent["result"], absent["target"]) == ("FORWARDED", "2002")
    unanswered = await call(ami, "2001", phone=RINGS, caller="internal")
    assert (unanswered["result"], unanswered["cause"]) == ("BUSY", "17")
    answered = await call(ami, "2001", phone=ANSWERS, caller="internal")
    assert (answered["result"], answered["dialstatus"]) == ("DIALED", "ANSWER")


@pytest.mark.parametrize(("rule", "status"), [("away busy", 486),
                                              ("away unavailable", 480)])
async def test_the_sip_answer_a_caller_sees(away_2001: Any, ami: Any, it: Server, rule: str,
                                            status: int) -> None:
    if it.sip is None:
        pytest.skip("set ASTPRESENCE_IT_SIP to the server's SIP address (UDP)")
    await rules_set(away_2001, "2001", rule)
    await written(ami, "2001", "external", f"v1|{rule.split()[1]}|||")
    await set_global(ami, "IT_PHONE", ANSWERS)
    assert await Caller.call(it.sip, "772001") == status


async def test_a_freepbx_forward_wins_and_is_shown_never_fought(away_2001: Any,
                                                                ami: Any) -> None:
    await rules_set(away_2001, "2001", "away busy")
    await written(ami, "2001", "internal", "v1|busy|||")
    await set_global(ami, "ASTPRESENCE_CF_CONTEXT", "it-forwarded")
    try:
        await originate(ami, "Local/*722002@it-freepbx", {"AMPUSER": "2001"}, wait=1)

        async def shown() -> dict[str, Any] | None:
            got = await away_2001.get("2001")
            return got if (got.get("forwarding") or {}).get("unconditional") == "2002" \
                else None
        view = await eventually(shown, "the *72 forward on the card")
        assert view["forwarding"]["on"] == ["unconditional"]
        got = await call(ami, "2001", phone=ANSWERS, caller="internal")
        assert (got["result"], got["target"], got["rule"]) == ("FORWARDED", "2002", "freepbx")
        # the daemon wrote nothing of FreePBX's, and kept its own rule
        assert await astdb_get(ami, "CF", "2001") == "2002"
        await written(ami, "2001", "internal", "v1|busy|||")
        await originate(ami, "Local/*73@it-freepbx", {"AMPUSER": "2001"}, wait=1)

        async def cleared() -> bool | None:
            return True if (await away_2001.get("2001")).get("forwarding") is None else None
        await eventually(cleared, "the forward gone from the card")
        got = await call(ami, "2001", phone=ANSWERS, caller="internal")
        assert (got["result"], got["rule"]) == ("BUSY", "internal")
    finally:
        await set_global(ami, "ASTPRESENCE_CF_CONTEXT", "")
        with contextlib.suppress(ActionError):
            await ami.send_action("DBDel", {"Family": "CF", "Key": "2001"})


async def test_callers_told_why_on_their_display(away_2001: Any, ami: Any) -> None:
    result = await away_2001.cli("calls", "set", "2001", "away busy", "--show-presence", "on")
    assert result.returncode == 0, result.stderr
    await written(ami, "2001", "show", "2001")  # no name known for 2001: its id
    got = await call(ami, "2001", phone=ANSWERS, caller="internal")
    assert (got["result"], got["shown"]) == ("BUSY", "2001 (Away)")
    result = await away_2001.cli("calls", "set", "2001", "away busy", "--show-presence", "off")
    assert result.returncode == 0, result.stderr
    await written(ami, "2001", "show", None)
    got = await call(ami, "2001", phone=ANSWERS, caller="internal")
    assert got["result"] == "BUSY" and got["shown"] != "2001 (Away)"
