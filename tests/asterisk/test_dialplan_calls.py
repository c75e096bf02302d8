"""astpresence-dial with call-handling rules in astdb, run by the test interpreter
(tests/support/dialplan.py), on the values the daemon's codec writes. The real
Asterisk runs the same paths in tests/integration/test_call_handling.py."""

from __future__ import annotations

import pytest

from astpresence.asterisk import call_codec
from astpresence.domain.call_settings import CallSettings
from astpresence.domain.calls import Callers, ForwardPolicy, parse_rules, resolve
from astpresence.domain.model import State
from tests.support.dialplan import Channel, DialplanSim, RunResult, kit_dialplan

CALLER = """
[calls]
exten => _X.,1,Gosub(astpresence-dial,s,1(${EXTEN},PJSIP/${EXTEN},30))
 same => n,Set(AFTER_RETURN=${ASTPRESENCE_DIAL_RESULT})
 same => n,Hangup()
"""
SETTINGS = CallSettings(True, (), ForwardPolicy(), "Local/{to}@from-internal")
PHONE = "PJSIP/2000"


def value(*rules: dict[str, object], state: State = State.AWAY,
          callers: Callers = Callers.INTERNAL) -> str:
    parsed = parse_rules({"rules": list(rules)}, ())
    return call_codec.encode(resolve(parsed, state, None, callers), state, SETTINGS)


def run(rule: str, *, key: str = "2000/internal", callerid: str = "2001",
        dial: dict[str, str] | None = None, boxes: set[str] | None = None,
        caller_kind: str | None = None, variables: dict[str, str] | None = None,
        presence: str | None = "away,,,e") -> RunResult:
    """One call to 2000 (in Asterisk: ``presence``) from 2001 with ``rule`` in astdb."""
    ast = DialplanSim(kit_dialplan(extra=CALLER), mailboxes=boxes,
                      presence={"2000": presence} if presence else None,
                      db={f"astpresence-calls/{key}": rule} if rule else {},
                      dial_status=dial)
    chan = Channel(name="PJSIP/2001-00000002", endpoint="2001", callerid=callerid)
    if caller_kind:
        chan.vars["ASTPRESENCE_CALLER"] = caller_kind
    chan.vars.update(variables or {})
    return ast.run(chan, "calls", "2000")


def outcome(res: RunResult) -> tuple[str, str, list[str]]:
    return (res.chan.vars["ASTPRESENCE_DIAL_RESULT"], res.chan.vars["ASTPRESENCE_DIAL_TARGET"],
            res.app_calls("Dial"))


FWD = "Local/2002@from-internal"


@pytest.mark.parametrize(("rules", "dial", "expected"), [
    # forward at once: the phone never rings
    ([{"when": "away", "action": "forward", "to": "2002"}], {},
     ("FORWARDED", "2002", [f"{FWD},30,"])),
    # after 20 s of ringing, unanswered: forwarded
    ([{"when": "away", "action": "forward", "to": "2002", "after": 20}], {},
     ("FORWARDED", "2002", [f"{PHONE},20,", f"{FWD},30,"])),
    # ... answered within those 20 s: that was the call
    ([{"when": "away", "action": "forward", "to": "2002", "after": 20}], {PHONE: "ANSWER"},
     ("DIALED", "2002", [f"{PHONE},20,"])),
    # both at once
    ([{"when": "away", "action": "forward", "to": "2002", "both": True}], {},
     ("FORWARDED", "2002", [f"{PHONE}&{FWD},30,"])),
    # ring, then by how ringing ended
    ([{"when": "away", "action": "ring", "timeout": 15},
      {"when": "away", "on": "no_answer", "action": "busy"}], {},
     ("BUSY", "", [f"{PHONE},15,"])),
    ([{"when": "away", "action": "ring"},
      {"when": "away", "on": "busy", "action": "forward", "to": "2002"}], {PHONE: "BUSY"},
     ("FORWARDED", "2002", [f"{PHONE},30,", f"{FWD},30,"])),
    ([{"when": "away", "action": "ring"},
      {"when": "away", "on": "busy", "action": "forward", "to": "2002"}], {PHONE: "ANSWER"},
     ("DIALED", "", [f"{PHONE},30,"])),
    # no rule for the call: presence routing (away: voicemail, no box: 480), then the
    # unregistered rule does not apply because nothing was dialled
    ([{"when": "away", "on": "unregistered", "action": "forward", "to": "2002"}], {},
     ("UNAVAILABLE", "", [])),
    ([{"when": "away", "action": "busy"}], {}, ("BUSY", "", [])),
    ([{"when": "away", "action": "unavailable"}], {}, ("UNAVAILABLE", "", [])),
])
def test_rule_steps(rules: list[dict[str, object]], dial: dict[str, str],
                    expected: tuple[str, str, list[str]]) -> None:
    res = run(value(*rules), dial=dial)
    assert res.ended == "hangup" and not res.frames
    assert outcome(res) == expected
    assert res.chan.vars["AFTER_RETURN"] == expected[0]


def test_default_dials_then_the_unregistered_rule() -> None:
    rule = value({"when": "available", "on": "unregistered", "action": "forward",
                  "to": "2002"}, state=State.AVAILABLE)
    assert rule == f"v1|default|||forward,0,0,2002,{FWD}"
    res = run(rule, dial={PHONE: "CHANUNAVAIL"}, presence="available,,,e")
    assert outcome(res) == ("FORWARDED", "2002", [f"{PHONE},30,", f"{FWD},30,"])


@pytest.mark.parametrize(("greeting", "box", "expected"), [
    ("busy", True, ("VOICEMAIL", "2000@default,b")), ("unavailable", True,
                                                      ("VOICEMAIL", "2000@default,u")),
    ("busy", False, ("BUSY", None)), ("unavailable", False, ("UNAVAILABLE", None)),
])
def test_voicemail_greetings(greeting: str, box: bool, expected: tuple[str, str | None]) -> None:
    res = run(value({"when": "away", "action": "voicemail", "greeting": greeting}),
              boxes={"2000@default"} if box else set())
    assert res.chan.vars["ASTPRESENCE_DIAL_RESULT"] == expected[0]
    assert res.app_calls("VoiceMail") == ([expected[1]] if expected[1] else [])


@pytest.mark.parametrize(("callerid", "kind", "variables", "uses"), [
    ("2001", None, {}, "internal"),
    ("004930123456", None, {}, "external"),
    ("", None, {}, "external"),
    ("2001", None, {"FROM_DID": "4930123"}, "external"),  # FreePBX: a trunk's call
    ("004930123456", "internal", {}, "internal"),  # set by trusted dialplan: wins
    ("2001", "external", {}, "external"),
    ("12345678", None, {"ASTPRESENCE_INTERNAL_DIGITS": "8"}, "internal"),
])
def test_which_callers_rule(callerid: str, kind: str | None, variables: dict[str, str],
                            uses: str) -> None:
    ast = DialplanSim(kit_dialplan(extra=CALLER),
                      db={"astpresence-calls/2000/internal": "v1|busy|||",
                          "astpresence-calls/2000/external": "v1|unavailable|||"})
    chan = Channel(name="PJSIP/2001-00000002", endpoint="2001", callerid=callerid)
    if kind:
        chan.vars["ASTPRESENCE_CALLER"] = kind
    for name, val in variables.items():
        (ast.globals if name.startswith("ASTPRESENCE_") else chan.vars)[name] = val
    res = ast.run(chan, "calls", "2000")
    assert res.chan.vars["ASTPRESENCE_DIAL_RULE"] == uses
    assert res.chan.vars["ASTPRESENCE_DIAL_RESULT"] == {"internal": "BUSY",
                                                        "external": "UNAVAILABLE"}[uses]


@pytest.mark.parametrize("bad", ["v2|busy|||", "v1|teleport|||", "v1|voicemail,x|||",
                                 "v1|forward,0,0,,|||", "busy"])
def test_a_value_astpresence_never_writes_routes_by_presence(bad: str) -> None:
    res = run(bad, presence=None)  # no rule, no presence: dialled as before
    assert outcome(res) == ("DIALED", "", [f"{PHONE},30,"])
    assert res.chan.vars["ASTPRESENCE_DIAL_RULE"] == ""


@pytest.mark.parametrize(("db", "dial", "expected"), [
    # *72: FreePBX's unconditional forward comes before astpresence's rule
    ({"CF/2000": "2002", "astpresence-calls/2000/internal": "v1|busy|||"}, {},
     ("FORWARDED", "2002", ["Local/2002@from-internal,30,"], "freepbx")),
    # busy / unanswered after ringing: CFB / CFU before the rule's own step
    ({"CFB/2000": "2003", "astpresence-calls/2000/internal": "v1|ring,10|voicemail,u||"},
     {PHONE: "BUSY"},
     ("FORWARDED", "2003", [f"{PHONE},10,", "Local/2003@from-internal,30,"], "freepbx")),
    ({"CFU/2000": "2004"}, {PHONE: "CHANUNAVAIL"},
     ("FORWARDED", "2004", [f"{PHONE},30,", "Local/2004@from-internal,30,"], "freepbx")),
    # no rule, nothing of FreePBX's for this outcome: dialled as before
    ({"CFB/2000": "2003"}, {PHONE: "NOANSWER"}, ("DIALED", "", [f"{PHONE},30,"], "")),
    # a CF value that is not a destination is ignored, the rule holds
    ({"CF/2000": "20 02", "astpresence-calls/2000/internal": "v1|busy|||"}, {},
     ("BUSY", "", [], "internal")),
])
def test_freepbx_forwarding_is_never_overruled(db: dict[str, str], dial: dict[str, str],
                                               expected: tuple[str, str, list[str], str]
                                               ) -> None:
    ast = DialplanSim(kit_dialplan(extra=CALLER), presence={"2000": "available,,,e"}, db=db,
                      dial_status=dial)
    res = ast.run(Channel(name="PJSIP/2001-00000002", endpoint="2001", callerid="2001"),
                  "calls", "2000")
    assert (*outcome(res), res.chan.vars["ASTPRESENCE_DIAL_RULE"]) == expected


def test_the_forward_context_is_a_setting() -> None:
    ast = DialplanSim(kit_dialplan(extra=CALLER), db={"CF/2000": "2002"})
    ast.globals["ASTPRESENCE_CF_CONTEXT"] = "ext-local"
    res = ast.run(Channel(), "calls", "2000")
    assert res.app_calls("Dial") == ["Local/2002@ext-local,30,"]


@pytest.mark.parametrize(("presence", "shown"), [
    ("away,,,e", "Alice Martin (Away)"),
    ("xa,,,e", "Alice Martin (Away)"),
    ("dnd,bWVldGluZw==,,e", "Alice Martin (In a meeting)"),  # base64("meeting")
    ("dnd,,,e", "Alice Martin (Do not disturb)"),
    ("away,b3V0LW9mLW9mZmljZQ==,,e", "Alice Martin (Out of office)"),
    ("available,bWVldGluZw==,,e", None),  # nothing to tell
    ("chat,,,e", None),
    (None, None),
])
def test_callers_told_why(presence: str | None, shown: str | None) -> None:
    ast = DialplanSim(kit_dialplan(extra=CALLER),
                      presence={"2000": presence} if presence else None,
                      db={"astpresence-calls/2000/show": "Alice Martin"})
    res = ast.run(Channel(name="PJSIP/2001-00000002", endpoint="2001", callerid="2001"),
                  "calls", "2000")
    assert res.chan.connected.get("name") == shown


def test_nobody_told_without_the_key() -> None:
    ast = DialplanSim(kit_dialplan(extra=CALLER), presence={"2000": "dnd,,,e"})
    res = ast.run(Channel(), "calls", "2000")
    assert res.chan.connected == {}
