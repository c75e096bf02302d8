"""Missed calls, the BLF mirror and queue pauses: the rules behind them."""

from __future__ import annotations

import pytest

from astpresence.domain.model import InvalidInput, Presence, State
from astpresence.domain.behaviours import (
    MissedCallEvent,
    auto_contribution,
    is_our_pause_reason,
    missed_calls_step,
    pause_reason,
    pause_wanted,
    queue_pause_action,
)
from astpresence.domain.rules import (
    MIRROR_MAP,
    RuleConfig,
    decide,
)
from astpresence.domain.mirror import is_mirror_device, mirror_device, mirror_state
from astpresence.domain.records import SourceRecord
from tests.support.rules import (
    AUTO_ON,
    D,
    IDLE,
    S,
    TEN,
)


# --- missed calls ----------------------------------------------------------


@pytest.mark.parametrize(
    ("limit", "count", "event", "expected"),
    [
        pytest.param(0, 0, "missed", (0, False), id="off"),
        pytest.param(0, 5, "missed", (0, False), id="off-resets"),
        pytest.param(3, 0, "missed", (1, False), id="first-miss"),
        pytest.param(3, 1, "missed", (2, False), id="second-miss"),
        pytest.param(3, 2, "missed", (3, True), id="third-miss-turns-on"),
        pytest.param(3, 3, "missed", (3, True), id="saturates"),
        pytest.param(1, 0, "missed", (1, True), id="limit-one"),
        pytest.param(3, 2, "answered", (0, False), id="answered-resets"),
        pytest.param(3, 3, "answered", (0, False), id="answered-clears"),
        pytest.param(3, 3, "manual", (0, False), id="manual-clears"),
    ],
)
def test_missed_calls_step(
    limit: int, count: int, event: MissedCallEvent, expected: tuple[int, bool]
) -> None:
    assert missed_calls_step(count, event, RuleConfig(missed_calls_away=limit)) == expected


def test_missed_calls_step_rejects_bad_input() -> None:
    with pytest.raises(ValueError):
        missed_calls_step(-1, "missed", AUTO_ON)
    with pytest.raises(ValueError):
        missed_calls_step(0, "bogus", AUTO_ON)  # type: ignore[arg-type]


def test_auto_contribution() -> None:
    record = auto_contribution("2000", TEN, AUTO_ON)
    assert record == SourceRecord("2000", "auto", Presence(S.AWAY, "missed-calls"), TEN, "auto")
    assert decide(None, (), IDLE, record, TEN, AUTO_ON).rule == "auto:missed-calls"


# --- BLF mirror ------------------------------------------------------------


@pytest.mark.parametrize(
    ("state", "expected"),
    [
        pytest.param(S.DND, "BUSY", id="dnd"),
        pytest.param(S.UNAVAILABLE, "UNAVAILABLE", id="unavailable"),
        pytest.param(S.AWAY, "ONHOLD", id="away"),
        pytest.param(S.XA, "ONHOLD", id="xa"),
        pytest.param(S.AVAILABLE, "INVALID", id="available"),
        pytest.param(S.CHAT, "INVALID", id="chat"),
        pytest.param(S.NOT_SET, "INVALID", id="not_set"),
    ],
)
def test_mirror_state(state: State, expected: str) -> None:
    assert mirror_state(state) == expected


def test_mirror_map_from_config_merges() -> None:
    cfg = RuleConfig.from_mapping({"mirror_map": {"away": "invalid", "chat": "NOT_INUSE"}})
    assert mirror_state(S.AWAY, cfg) == "INVALID"
    assert mirror_state(S.CHAT, cfg) == "NOT_INUSE"
    assert mirror_state(S.DND, cfg) == "BUSY"
    assert MIRROR_MAP[S.AWAY] is D.ONHOLD  # default untouched


def test_mirror_device() -> None:
    assert mirror_device("2000") == "Custom:presence-2000"
    assert mirror_device("alice", RuleConfig(mirror_prefix="blf.")) == "Custom:blf.alice"
    with pytest.raises(InvalidInput):
        mirror_device("20&00")
    assert is_mirror_device("Custom:presence-2000")
    assert not is_mirror_device("PJSIP/2000")
    assert not is_mirror_device("Custom:other-2000")


# --- queue pause -----------------------------------------------------------


@pytest.mark.parametrize(
    ("state", "wanted"),
    [pytest.param(s, s in (S.DND, S.AWAY, S.XA), id=s.value) for s in State],
)
def test_pause_wanted(state: State, wanted: bool) -> None:
    assert pause_wanted(state) is wanted
    assert pause_wanted(state, RuleConfig(pause_states=frozenset())) is False


def test_pause_reason() -> None:
    assert pause_reason(S.DND) == "astpresence:dnd"
    assert pause_reason(S.XA, RuleConfig(pause_reason_prefix="ap-")) == "ap-xa"


@pytest.mark.parametrize(
    ("reason", "ours"),
    [
        pytest.param("astpresence:dnd", True, id="ours-dnd"),
        pytest.param("astpresence:away", True, id="ours-away"),
        pytest.param(None, False, id="none"),
        pytest.param("", False, id="empty"),
        pytest.param("lunch", False, id="someone-else"),
        pytest.param("astpresence:", False, id="prefix-only"),
        pytest.param("astpresence:coffee", False, id="prefix-unknown-state"),
        pytest.param("ASTPRESENCE:dnd", False, id="other-case"),
        pytest.param("x-astpresence:dnd", False, id="prefix-inside"),
    ],
)
def test_is_our_pause_reason(reason: str | None, ours: bool) -> None:
    assert is_our_pause_reason(reason) is ours


@pytest.mark.parametrize(
    ("state", "paused", "reason", "action"),
    [
        pytest.param(S.DND, False, None, "pause", id="enter-set-pause"),
        pytest.param(S.DND, True, "astpresence:dnd", None, id="already-paused-by-us"),
        pytest.param(S.AWAY, True, "astpresence:dnd", "pause", id="refresh-reason"),
        pytest.param(S.DND, True, "supervisor", None, id="paused-by-other-left-alone"),
        pytest.param(S.AVAILABLE, True, "astpresence:dnd", "unpause", id="leave-set-unpause"),
        pytest.param(S.AVAILABLE, True, "supervisor", None, id="never-unpause-others"),
        pytest.param(S.AVAILABLE, True, "", None, id="never-unpause-no-reason"),
        pytest.param(S.AVAILABLE, False, None, None, id="nothing-to-do"),
        pytest.param(S.UNAVAILABLE, True, "astpresence:xa", "unpause", id="unavailable-not-in-set"),
    ],
)
def test_queue_pause_action(
    state: State, paused: bool, reason: str | None, action: str | None
) -> None:
    assert queue_pause_action(state, paused, reason) == action


