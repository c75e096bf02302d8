"""The Teams tables and the [teams] section: pure values, hostile input included."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, strategies as st

from astpresence.domain.model import InvalidInput, Presence, State, validate_text
from astpresence.sources.teams.mapping import (
    CALL_SESSION,
    DEFAULT_FROM_TEAMS,
    DEFAULT_TO_TEAMS,
    TeamsPresence,
    from_teams,
    is_echo,
    parse_from_table,
    parse_presence,
    parse_to_table,
    to_teams,
    words,
)
from astpresence.sources.teams.settings import parse_section


@pytest.mark.parametrize("availability, activity, want", [
    ("DoNotDisturb", "Presenting", Presence(State.DND, "presenting")),
    ("DoNotDisturb", "Focusing", Presence(State.DND, "focusing")),
    ("DoNotDisturb", "DoNotDisturb", Presence(State.DND, "do-not-disturb")),
    ("Busy", "InAMeeting", Presence(State.DND, "in-a-meeting")),
    ("Busy", "InAConferenceCall", Presence(State.DND, "in-a-conference-call")),
    ("Busy", "InACall", Presence(State.DND, "in-a-call")),
    ("Busy", "Busy", Presence(State.DND, "busy")),
    ("Away", "Away", Presence(State.AWAY, "away")),
    ("BeRightBack", "BeRightBack", Presence(State.AWAY, "be-right-back")),
    ("AvailableIdle", "Inactive", Presence(State.AWAY, "inactive")),
    ("Offline", "OffWork", Presence(State.XA, "off-work")),
    ("Offline", "OutOfOffice", Presence(State.XA, "out-of-office")),
    ("Available", "Available", None),
    ("Offline", "Offline", None),
    ("PresenceUnknown", "PresenceUnknown", None),
])
def test_teams_to_astpresence(availability: str, activity: str, want: Presence | None) -> None:
    assert from_teams(TeamsPresence(availability, activity), DEFAULT_FROM_TEAMS) == want


def test_the_table_is_the_config_s() -> None:
    table = parse_from_table({"Offline": "unavailable", "InAMeeting": "away"}, "t")
    assert from_teams(TeamsPresence("Offline", "Offline"), table) == \
        Presence(State.UNAVAILABLE, "offline")
    assert from_teams(TeamsPresence("Busy", "InAMeeting"), table) == \
        Presence(State.AWAY, "in-a-meeting")
    for bad, match in [({"Lunch": "away"}, "not a Teams"), ({"Away": "gone"}, "expected an"),
                       ({"Away": 3}, "table of strings"), ("x", "table of strings")]:
        with pytest.raises(InvalidInput, match=match):
            parse_from_table(bad, "t")


@pytest.mark.parametrize("state, want", [
    (State.DND, ("DoNotDisturb", "DoNotDisturb")), (State.AWAY, ("Away", "Away")),
    (State.XA, ("Away", "Away")), (State.UNAVAILABLE, ("Offline", "OffWork")),
    (State.AVAILABLE, None), (State.CHAT, None), (State.NOT_SET, None),
])
def test_astpresence_to_teams(state: State, want: tuple[str, str] | None) -> None:
    assert to_teams(state, DEFAULT_TO_TEAMS) == want


def test_to_teams_table() -> None:
    table = parse_to_table({"xa": "BeRightBack", "chat": "Available"}, "t")
    assert to_teams(State.XA, table) == ("BeRightBack", "BeRightBack")
    assert to_teams(State.CHAT, table) == ("Available", "Available")
    with pytest.raises(InvalidInput, match="expected one of"):
        parse_to_table({"dnd": "InAMeeting"}, "t")  # not a preferred availability
    with pytest.raises(InvalidInput, match="not an astpresence state"):
        parse_to_table({"busy": "Busy"}, "t")


def test_echo() -> None:
    dnd = ("DoNotDisturb", "DoNotDisturb")
    assert is_echo(TeamsPresence(*dnd), dnd, False)
    assert not is_echo(TeamsPresence("Available", "Available"), dnd, False)  # the person
    assert not is_echo(TeamsPresence(*CALL_SESSION), dnd, True)  # preferred shows, not calls
    assert is_echo(TeamsPresence(*CALL_SESSION), None, True)
    assert not is_echo(TeamsPresence("DoNotDisturb", "Presenting"), None, True)  # busier
    assert not is_echo(TeamsPresence(*CALL_SESSION), None, False)  # a Teams call of its own


def test_words() -> None:
    assert [words(w) for w in ("InAMeeting", "OffWork", "UrgentInterruptionsOnly")] == \
        ["in-a-meeting", "off-work", "urgent-interruptions-only"]


def test_a_presence_from_graph_is_checked() -> None:
    oid, p = parse_presence({"id": "abc", "availability": "Busy", "activity": "InAMeeting",
                             "statusMessage": {"message": {
                                 "content": "<p>Back <b>at 3</b></p>\x07\n", "contentType": "html"}}})
    assert (oid, p) == ("abc", TeamsPresence("Busy", "InAMeeting", "Back at 3"))
    _, odd = parse_presence({"id": "x", "availability": "Sleeping", "activity": ["x"]})
    assert odd.pair() == ("PresenceUnknown", "PresenceUnknown")
    for bad in ([], {"availability": "Busy"}, {"id": "x" * 65}, {"id": "a\nb"}):
        with pytest.raises(InvalidInput):
            parse_presence(bad)


@given(st.dictionaries(st.sampled_from(["id", "availability", "activity", "statusMessage"]),
                       st.recursive(st.none() | st.text() | st.integers(),
                                    lambda c: st.lists(c) | st.dictionaries(st.text(), c),
                                    max_leaves=8)))
def test_any_graph_item_is_refused_or_safe(item: dict[str, Any]) -> None:
    try:
        _, p = parse_presence(item)
    except InvalidInput:
        return
    validate_text("message", p.message)  # fit for an AMI header: <= 255 bytes, no controls
    presence = from_teams(p, DEFAULT_FROM_TEAMS)
    if presence is not None:
        validate_text("subtype", presence.subtype)


GOOD = {"tenant": "contoso.onmicrosoft.com", "client_id": "app", "client_secret_env": "S",
        "users": {"2000": "alice@contoso.com",
                  "2001": "7d1c0a52-3b7e-4f0e-9a59-2c1d7e5b9f10"}}


def test_the_section() -> None:
    s = parse_section(GOOD, "f")
    assert s.enabled and s.reads and s.writes and s.poll == 30 and len(s.users) == 2
    assert parse_section({**GOOD, "sync": "from_teams"}, "f").writes is False
    assert parse_section({**GOOD, "notification_url": "https://p.example.com/v1/hooks/teams"},
                         "f").notification_url


@pytest.mark.parametrize("change, match", [
    ({"sync": "sideways"}, "sync"),
    ({"client_secret_env": None}, "client_secret_env or client_secret_file"),
    ({"poll": 1}, "poll"),
    ({"notification_url": "http://presence.example.com/hook"}, "https only"),
    ({"users": {"2000": "alice"}}, "UPN"),
    ({"users": {"2000": "a@b.c", "2001": "A@B.C"}}, "same Teams user"),
    ({"users": {"bad\nid": "a@b.c"}}, "forbidden character"),
    ({"colour": "blue"}, "unknown key"),
    ({"call_session": 60}, "call_session"),
    ({"tenant": None}, "missing 'tenant'"),
])
def test_the_section_refuses(change: dict[str, Any], match: str) -> None:
    raw = {k: v for k, v in {**GOOD, **change}.items() if v is not None}
    with pytest.raises(InvalidInput, match=match):
        parse_section(raw, "f")
