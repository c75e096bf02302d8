"""The [rules] table: parsing and validation."""

from __future__ import annotations

from datetime import timedelta

import pytest

from astpresence.domain.model import InvalidInput, Presence
from astpresence.domain.rules import DEFAULT_RULES, RULE_KEYS, RuleConfig
from tests.support.rules import (
    D,
    S,
)


# --- configuration ---------------------------------------------------------


def test_default_config() -> None:
    c = RuleConfig()
    assert c.projection == "standard"
    assert c.on_phone == Presence(S.DND, "on-the-phone") and c.call_keeps_message
    assert c.registered == Presence(S.AVAILABLE)
    assert c.expire_after == {}
    assert c.offline == Presence(S.UNAVAILABLE, "offline")
    assert c.offline_after == timedelta(seconds=60)
    assert c.call_states == {D.INUSE, D.BUSY, D.RINGINUSE, D.ONHOLD}
    assert c.overridable_manual == {S.AVAILABLE, S.CHAT, S.NOT_SET}
    assert c.timed_priority == ()
    assert c.missed_calls_away == 0
    assert c.auto_presence == Presence(S.AWAY, "missed-calls")
    assert c.mirror is False
    assert c.mirror_prefix == "presence-"
    assert dict(c.mirror_map) == {
        S.DND: D.BUSY,
        S.UNAVAILABLE: D.UNAVAILABLE,
        S.AWAY: D.ONHOLD,
        S.XA: D.ONHOLD,
    }
    assert c.pause_states == {S.DND, S.AWAY, S.XA}
    assert c.pause_reason_prefix == "astpresence:"
    assert RuleConfig.from_mapping({}) == c == DEFAULT_RULES
    hash(c)


def test_the_legacy_projection_is_one_setting() -> None:
    """projection = "legacy": a call reads unavailable (no message kept), nothing chosen
    reads not_set, an unavailable user's mirror is BUSY; other keys still apply."""
    c = RuleConfig.from_mapping({"projection": "legacy", "mirror_map": {"away": "UNAVAILABLE"}})
    assert c.on_phone == Presence(S.UNAVAILABLE, "on-the-phone")
    assert not c.call_keeps_message and c.registered is None
    assert dict(c.mirror_map) == {S.DND: D.BUSY, S.UNAVAILABLE: D.BUSY,
                                  S.AWAY: D.UNAVAILABLE, S.XA: D.ONHOLD}
    assert RuleConfig.from_mapping({"projection": "legacy"}) == RuleConfig.legacy()
    c = RuleConfig.from_mapping({"projection": "legacy", "on_phone": True})
    assert c.on_phone == Presence(S.UNAVAILABLE, "on-the-phone")  # true: this projection's


def test_expire_after_takes_durations_by_state() -> None:
    c = RuleConfig.from_mapping({"expire_after": {"dnd": "1d", "away": 5400}})
    assert c.expire_after == {S.DND: timedelta(days=1), S.AWAY: timedelta(minutes=90)}
    for bad in ({"dnd": "soon"}, {"dnd": 0}, {"nap": "1h"}, "1d", {"dnd": "400d"}):
        with pytest.raises(InvalidInput, match="rules.expire_after"):
            RuleConfig.from_mapping({"expire_after": bad})


def test_from_mapping_full() -> None:
    c = RuleConfig.from_mapping(
        {
            "on_phone": {"state": "DND", "subtype": "call", "message": "On a call"},
            "offline": False,
            "offline_after": 90.5,
            "call_states": ["inuse", "BUSY"],
            "overridable_manual": ["available"],
            "timed_priority": ["calendar", "travel"],
            "missed_calls_away": 3,
            "auto_presence": {"state": "xa"},
            "mirror": True,
            "mirror_prefix": "blf_",
            "mirror_map": {"chat": "NOT_INUSE"},
            "pause_states": [],
            "pause_reason_prefix": "ap:",
        }
    )
    assert c.on_phone == Presence(S.DND, "call", "On a call")
    assert c.offline is None
    assert c.offline_after == timedelta(seconds=90.5)
    assert c.call_states == {D.INUSE, D.BUSY}
    assert c.overridable_manual == {S.AVAILABLE}
    assert c.timed_priority == ("calendar", "travel")
    assert c.missed_calls_away == 3
    assert c.auto_presence == Presence(S.XA)
    assert c.mirror is True
    assert c.mirror_prefix == "blf_"
    assert c.mirror_map[S.CHAT] is D.NOT_INUSE
    assert c.pause_states == frozenset()
    assert c.pause_reason_prefix == "ap:"


def test_from_mapping_true_overlay_means_default() -> None:
    c = RuleConfig.from_mapping({"on_phone": True, "offline": True})
    assert c.on_phone == DEFAULT_RULES.on_phone and c.offline == DEFAULT_RULES.offline


BAD_VALUES = [
    ("projection", "modern"),
    ("call_keeps_message", "yes"),
    ("registered", {"state": "not_set"}),
    ("registered", "available"),
    ("expire_after", {"dnd": -1}),
    ("on_phone", "yes"),
    ("on_phone", {"subtype": "x"}),
    ("on_phone", {"state": "busy"}),
    ("on_phone", {"state": "not_set"}),
    ("on_phone", {"state": "dnd", "colour": "red"}),
    ("on_phone", {"state": "dnd", "message": "a\r\nb"}),
    ("on_phone", {"state": "dnd", "subtype": "x" * 256}),
    ("offline", 0),
    ("offline", {"state": 3}),
    ("offline_after", 0),
    ("offline_after", -5),
    ("offline_after", "60"),
    ("offline_after", True),
    ("offline_after", float("nan")),
    ("offline_after", float("inf")),
    ("offline_after", 10**9),
    ("call_states", []),
    ("call_states", "INUSE"),
    ("call_states", ["ON_THE_PHONE"]),
    ("overridable_manual", "available"),
    ("overridable_manual", ["available", "lunch"]),
    ("overridable_manual", [1]),
    ("timed_priority", "calendar"),
    ("timed_priority", ["calendar", "calendar"]),
    ("timed_priority", ["manual"]),
    ("timed_priority", ["auto"]),
    ("timed_priority", [""]),
    ("timed_priority", ["cal endar"]),
    ("missed_calls_away", -1),
    ("missed_calls_away", 1.5),
    ("missed_calls_away", True),
    ("missed_calls_away", "3"),
    ("auto_presence", False),
    ("auto_presence", {"state": "nope"}),
    ("mirror", "yes"),
    ("mirror_via", "sip"),
    ("queue_pause", "on"),
    ("mirror", 1),
    ("mirror_prefix", ""),
    ("mirror_prefix", 5),
    ("mirror_prefix", "pres ence-"),
    ("mirror_prefix", "presence:"),
    ("mirror_prefix", "a&b"),
    ("mirror_prefix", "x" * 41),
    ("mirror_map", ["dnd", "BUSY"]),
    ("mirror_map", {"dnd": "UNKNOWN"}),
    ("mirror_map", {"dnd": "OCCUPIED"}),
    ("mirror_map", {"lunch": "BUSY"}),
    ("pause_states", "dnd"),
    ("pause_states", ["dnd", "coffee"]),
    ("pause_reason_prefix", ""),
    ("pause_reason_prefix", "ast presence:"),
    ("pause_reason_prefix", "a\r\nEvent: x"),
    ("pause_reason_prefix", None),
]


@pytest.mark.parametrize(
    ("key", "value"),
    [pytest.param(k, v, id=f"{k}={v!r}"[:60]) for k, v in BAD_VALUES],
)
def test_from_mapping_bad_value_names_key(key: str, value: object) -> None:
    with pytest.raises(InvalidInput, match=rf"^rules\.{key}: "):
        RuleConfig.from_mapping({key: value})


def test_every_key_has_a_bad_value_case() -> None:
    assert {k for k, _ in BAD_VALUES} == set(RULE_KEYS)


@pytest.mark.parametrize("key", ["offline_afer", "on-phone", "rules", ""])
def test_from_mapping_unknown_key(key: str) -> None:
    with pytest.raises(InvalidInput, match="unknown key") as info:
        RuleConfig.from_mapping({"offline_after": 30, key: 1})
    assert repr(key) in str(info.value)


def test_from_mapping_not_a_table() -> None:
    with pytest.raises(InvalidInput, match="rules"):
        RuleConfig.from_mapping(["on_phone"])  # type: ignore[arg-type]


