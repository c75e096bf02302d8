"""Call handling rules: how they read, which one holds, what reaches astdb."""

from __future__ import annotations

import re
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from astpresence.asterisk import call_codec
from astpresence.domain.call_settings import CallSettings, parse_call_settings
from astpresence.domain.calls import (
    Action,
    Callers,
    ForwardPolicy,
    Handling,
    On,
    check_policy,
    describe,
    parse_rule,
    parse_rules,
    resolve,
)
from astpresence.domain.model import InvalidInput, State

STATUSES = ("lunch", "meeting")
USERS = {"2000", "2001", "alice"}


def rules(*raw: dict[str, Any]) -> tuple[Any, ...]:
    return parse_rules({"rules": list(raw)}, STATUSES)


EXAMPLE = rules(
    {"when": "away", "callers": "external", "action": "forward", "to": "+4930123456",
     "after": 20},
    {"when": "away", "action": "voicemail"},
    {"when": "dnd", "action": "busy"},
    {"when": "lunch", "action": "forward", "to": "2001"},
    {"when": "any", "on": "no_answer", "action": "voicemail", "greeting": "unavailable"},
    {"when": "available", "on": "busy", "action": "forward", "to": "2001"},
    {"when": "any", "on": "unregistered", "action": "unavailable"},
)


@pytest.mark.parametrize(("state", "status", "callers", "on", "expected"), [
    # the example: external callers forwarded after 20 s, internal to voicemail
    (State.AWAY, None, Callers.EXTERNAL, On.CALL, ("forward", "+4930123456", 20)),
    (State.AWAY, None, Callers.INTERNAL, On.CALL, ("voicemail", "", 0)),
    (State.DND, None, Callers.INTERNAL, On.CALL, ("busy", "", 0)),
    (State.DND, None, Callers.EXTERNAL, On.CALL, ("busy", "", 0)),
    # a named status matches by its id; its state's rules come after
    (State.AWAY, "lunch", Callers.INTERNAL, On.CALL, ("voicemail", "", 0)),
    (State.XA, "lunch", Callers.INTERNAL, On.CALL, ("forward", "2001", 0)),
    # nothing for the call: the kit's presence routing
    (State.AVAILABLE, None, Callers.INTERNAL, On.CALL, None),
    (State.AVAILABLE, None, Callers.INTERNAL, On.BUSY, ("forward", "2001", 0)),
    (State.XA, None, Callers.INTERNAL, On.BUSY, None),
    (State.XA, None, Callers.EXTERNAL, On.NO_ANSWER, ("voicemail", "", 0)),
    (State.CHAT, None, Callers.EXTERNAL, On.UNREGISTERED, ("unavailable", "", 0)),
])
def test_the_first_matching_rule_holds(state: State, status: str | None, callers: Callers,
                                       on: On, expected: tuple[str, str, int] | None) -> None:
    rule = resolve(EXAMPLE, state, status, callers).step(on)
    assert (None if rule is None else (rule.action.value, rule.to, rule.after)) == expected


def test_a_rule_that_is_not_usable_is_passed_over() -> None:
    found = resolve(EXAMPLE, State.AWAY, None, Callers.EXTERNAL,
                    usable=lambda r: r.action is not Action.FORWARD)
    assert found.call is not None and found.call.action is Action.VOICEMAIL


@pytest.mark.parametrize(("raw", "message"), [
    ({"when": "away"}, "'action' must be one of"),
    ({"when": "gone", "action": "busy"}, "'when' is 'gone'"),
    ({"when": "away", "action": "forward"}, "'to' must be"),
    ({"when": "away", "action": "forward", "to": "2001,x"}, "'to' must be"),
    ({"when": "away", "action": "forward", "to": "20|01"}, "'to' must be"),
    ({"when": "away", "action": "busy", "to": "2001"}, "'to' belongs to forward"),
    ({"when": "away", "action": "ring", "greeting": "busy"}, "'greeting' belongs"),
    ({"when": "away", "action": "voicemail", "timeout": 5}, "'timeout' belongs to ring"),
    ({"when": "away", "action": "ring", "timeout": 0}, "from 1 to 300"),
    ({"when": "away", "action": "forward", "to": "2001", "after": 301}, "from 0 to 300"),
    ({"when": "away", "action": "forward", "to": "2001", "after": True}, "'after'"),
    ({"when": "away", "action": "forward", "to": "2001", "after": 5, "both": True},
     "cannot wait"),
    ({"when": "away", "on": "busy", "action": "ring"}, "cannot ring again"),
    ({"when": "away", "callers": "vip", "action": "busy"}, "'callers' is 'vip'"),
    ({"when": "away", "action": "busy", "colour": "red"}, "unknown field(s) colour"),
    ("busy", "a rule is an object"),
])
def test_bad_rules_are_refused_with_the_field_named(raw: Any, message: str) -> None:
    with pytest.raises(InvalidInput, match=re.escape(message)):
        parse_rule(raw, STATUSES, "rule 1")


@pytest.mark.parametrize("body", [None, [], {"rules": {}}, {"rules": [], "more": 1},
                                  {"rules": [{"when": "any", "action": "busy"}] * 33}])
def test_a_bad_body_is_refused(body: Any) -> None:
    with pytest.raises(InvalidInput):
        parse_rules(body, STATUSES)


def test_rules_read_back_from_their_json() -> None:
    assert rules(*(r.json() for r in EXAMPLE)) == EXAMPLE


def test_the_policy_allows_users_and_listed_numbers_only() -> None:
    policy = ForwardPolicy(users=True, allow=(re.compile(r"0[1-9][0-9]{6,14}"),))
    check_policy(rules({"when": "away", "action": "forward", "to": "2001"},
                       {"when": "xa", "action": "forward", "to": "01711234567"}),
                 policy, USERS.__contains__)
    with pytest.raises(InvalidInput, match="rule 2: forwarding to '0900123456' is not allowed"):
        check_policy(rules({"when": "away", "action": "voicemail"},
                           {"when": "xa", "action": "forward", "to": "0900123456"}),
                     ForwardPolicy(users=True), USERS.__contains__)
    with pytest.raises(InvalidInput, match="not allowed"):
        check_policy(rules({"when": "away", "action": "forward", "to": "2001"}),
                     ForwardPolicy(users=False), USERS.__contains__)


def test_the_card_says_what_happens_now() -> None:
    assert describe(resolve(EXAMPLE, State.AWAY, None, Callers.EXTERNAL)) == (
        "calls are forwarded to +4930123456 after 20 s; no answer: go to voicemail; "
        "not registered: are refused as unavailable")
    assert describe(Handling()) == "calls follow presence"


# -- astdb values ----------------------------------------------------------------


SETTINGS = CallSettings(True, (), ForwardPolicy(), "Local/{to}@from-internal")


@pytest.mark.parametrize(("state", "callers", "value"), [
    (State.AWAY, Callers.EXTERNAL,
     "v1|forward,20,0,+4930123456,Local/+4930123456@from-internal|"
     "|voicemail,u|unavailable"),
    (State.AWAY, Callers.INTERNAL, "v1|voicemail,u||voicemail,u|unavailable"),
    (State.DND, Callers.INTERNAL, "v1|busy||voicemail,u|unavailable"),
    (State.AVAILABLE, Callers.INTERNAL,
     "v1|default|forward,0,0,2001,Local/2001@from-internal|voicemail,u|unavailable"),
])
def test_astdb_values(state: State, callers: Callers, value: str) -> None:
    assert call_codec.encode(resolve(EXAMPLE, state, None, callers), state, SETTINGS) == value


def test_a_voicemail_greeting_follows_the_state_unless_named() -> None:
    vm = rules({"when": "any", "action": "voicemail"})
    assert call_codec.encode(resolve(vm, State.DND, None, Callers.ANY), State.DND,
                             SETTINGS) == "v1|voicemail,b|||"
    assert call_codec.encode(resolve(vm, State.XA, None, Callers.ANY), State.XA,
                             SETTINGS) == "v1|voicemail,u|||"
    assert call_codec.encode(Handling(), State.XA, SETTINGS) == ""


def test_settings_are_checked() -> None:
    ok = parse_call_settings({"forward_dial": "PJSIP/{to}@trunk", "forward_allow": ["^0"],
                              "defaults": [{"when": "lunch", "action": "voicemail"}]},
                             STATUSES, "[calls]")
    assert ok.enabled and ok.dial("0171") == "PJSIP/0171@trunk"
    for raw, message in [({"forward_dial": "Local/{to},x"}, "forward_dial"),
                         ({"forward_dial": "Local/2000"}, "forward_dial"),
                         ({"forward_dial": "${X}{to}"}, "forward_dial"),
                         ({"forward_allow": ["("]}, "not a regular expression"),
                         ({"forward_users": "yes"}, "forward_users"),
                         ({"defaults": [{"when": "gone", "action": "busy"}]}, "'when'"),
                         ({"speed": 1}, "unknown key(s) speed")]:
        with pytest.raises(InvalidInput, match=re.escape(message)):
            parse_call_settings(raw, STATUSES, "[calls]")


# -- nothing the policy refuses, and nothing malformed, ever reaches astdb -----------

_DESTINATIONS = st.one_of(
    st.sampled_from(["2000", "2001", "alice", "0171234567", "+4930123456", "0900666",
                     "bob"]),
    st.text(alphabet="0123456789+*#,|;$(){} abc@/", min_size=1, max_size=12))
_RAW_RULES = st.lists(st.fixed_dictionaries(
    {"when": st.sampled_from(["any", "away", "dnd", "lunch", "available"]),
     "action": st.sampled_from(["ring", "forward", "voicemail", "busy", "unavailable"]),
     "callers": st.sampled_from(["any", "internal", "external"]),
     "on": st.sampled_from(["call", "busy", "no_answer", "unregistered"]),
     "to": _DESTINATIONS}), max_size=8)


def _parsed(raw: list[dict[str, Any]]) -> list[Any]:
    out = []
    for item in raw:
        item = dict(item)
        if item["action"] != "forward":
            item.pop("to")
        try:
            out.append(parse_rule(item, STATUSES, "rule"))
        except InvalidInput:
            continue
    return out


@settings(max_examples=300, deadline=None)
@given(_RAW_RULES, st.sampled_from(list(State)), st.sampled_from([None, "lunch"]),
       st.sampled_from([Callers.INTERNAL, Callers.EXTERNAL]))
def test_no_disallowed_or_malformed_destination_is_ever_encoded(
        raw: list[dict[str, Any]], state: State, status: str | None, callers: Callers) -> None:
    policy = ForwardPolicy(users=True, allow=(re.compile(r"01[0-9]{6,12}"),))
    settings_ = CallSettings(True, (), policy, "Local/{to}@from-internal")
    parsed = _parsed(raw)

    def usable(rule: Any) -> bool:
        return rule.action is not Action.FORWARD or policy.allows(rule.to, USERS.__contains__)

    value = call_codec.encode(resolve(parsed, state, status, callers, usable), state,
                              settings_)
    assert value == "" or call_codec.VALUE.fullmatch(value)
    for step in value.split("|")[1:]:
        fields = step.split(",")
        if fields[0] == "forward":
            to = fields[3]
            assert to in USERS or re.fullmatch(r"01[0-9]{6,12}", to)
            assert fields[4] == f"Local/{to}@from-internal"
