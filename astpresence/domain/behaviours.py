"""What a presence makes happen besides the hint: missed-call auto-away and queue
pauses. Pure functions over plain values, like rules.py; the engine and the
Asterisk side call them.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from astpresence.domain.model import State
from astpresence.domain.records import SourceRecord
from astpresence.domain.rule_names import (
    SOURCE_AUTO,
)
from astpresence.domain.rule_config import (
    DEFAULT_RULES,
    RuleConfig,
)


# --- missed calls --------------------------------------------------------

MissedCallEvent = Literal["missed", "answered", "manual"]


def missed_calls_step(
    count: int, event: MissedCallEvent, config: RuleConfig = DEFAULT_RULES
) -> tuple[int, bool]:
    """Reducer for auto-away: (consecutive missed calls, auto-away active).

    ``missed``: a call rang the user's devices and nobody answered;
    ``answered``: a call was answered on one of them; ``manual``: the manual
    presence changed. With ``missed_calls_away = 0`` it always gives (0, False).
    """
    limit = config.missed_calls_away
    if count < 0:
        raise ValueError(f"missed-call count must be >= 0, got {count}")
    if event not in ("missed", "answered", "manual"):
        raise ValueError(f"unknown missed-call event {event!r}")
    if limit <= 0 or event != "missed":
        return 0, False
    new = min(count + 1, limit)  # saturate: more misses change nothing
    return new, new >= limit


def auto_contribution(user: str, now: datetime, config: RuleConfig = DEFAULT_RULES) -> SourceRecord:
    """The ``auto`` record to store when :func:`missed_calls_step` turns auto-away on."""
    return SourceRecord(user, SOURCE_AUTO, config.auto_presence, now, SOURCE_AUTO)


# --- queue pause ---------------------------------------------------------

PauseAction = Literal["pause", "unpause"]


def pause_wanted(state: State, config: RuleConfig = DEFAULT_RULES) -> bool:
    """True if members should be paused while the effective state is ``state``."""
    return state in config.pause_states


def pause_reason(state: State, config: RuleConfig = DEFAULT_RULES) -> str:
    """The QueuePause ``Reason`` we send: ``<prefix><state>``."""
    return f"{config.pause_reason_prefix}{state.value}"


def is_our_pause_reason(reason: str | None, config: RuleConfig = DEFAULT_RULES) -> bool:
    """True if a member's ``PausedReason`` is one astpresence wrote."""
    if not reason or not reason.startswith(config.pause_reason_prefix):
        return False
    return reason[len(config.pause_reason_prefix) :] in {s.value for s in State}


def queue_pause_action(
    state: State,
    paused: bool,
    reason: str | None,
    config: RuleConfig = DEFAULT_RULES,
) -> PauseAction | None:
    """What to do with one queue member given the user's effective ``state``.

    Pause when the state enters ``pause_states`` (or refresh our reason when it
    moves between them); unpause only a member paused with our reason. A
    member someone else paused is left alone either way.
    """
    if pause_wanted(state, config):
        if not paused:
            return "pause"
        if is_our_pause_reason(reason, config) and reason != pause_reason(state, config):
            return "pause"
        return None
    if paused and is_our_pause_reason(reason, config):
        return "unpause"
    return None
