"""Client sessions and what they say about a person: pure values and one rule.

A session is one client of one user (the desktop agent, a board tab, a desk
client using the API). It reports ``active``, ``idle`` (with how long), or
``locked``, and is alive while it reports: silent for ``expire_after`` seconds,
it has expired; ``closed`` ends it. :func:`presence_from` turns a person's
sessions into the contribution of the ``sessions`` source (docs/presence-rules.md,
"Sessions"), or none:

- any live session active: none (activity on any session ends idle at once);
- every live session locked: ``xa`` / ``away-from-desk`` since the last lock;
- every live session idle or locked for ``idle_away_after``: ``away`` / ``idle``,
  for ``idle_xa_after``: ``xa`` / ``away-from-desk``, since idle began;
- sessions, but none alive, and no phone registered: ``unavailable`` / ``offline``.

The contribution is a timed entry starting when the person went idle, so the
precedence's own rules apply: a chosen dnd still wins, a call still shows, and a
presence chosen after idle began wins (the person spoke since).
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from astpresence.domain.model import InvalidInput, Presence, State, check_label

#: The presence each condition gives, unless ``[sessions]`` says otherwise.
IDLE_AWAY = Presence(State.AWAY, "idle")
AWAY_FROM_DESK = Presence(State.XA, "away-from-desk")
OFFLINE = Presence(State.UNAVAILABLE, "offline")


class Kind(enum.StrEnum):
    DESKTOP = "desktop"
    BOARD = "board"
    API = "api"


class Activity(enum.StrEnum):
    ACTIVE = "active"
    IDLE = "idle"
    LOCKED = "locked"


@dataclass(frozen=True, slots=True)
class SessionRules:
    """``[sessions]``: how long a silent session lives, and when idle becomes away."""

    expire_after: timedelta = timedelta(seconds=60)
    idle_away_after: timedelta = timedelta(minutes=5)
    idle_xa_after: timedelta = timedelta(minutes=30)
    idle: Presence = IDLE_AWAY
    away_from_desk: Presence = AWAY_FROM_DESK
    offline: Presence = OFFLINE


@dataclass(frozen=True, slots=True)
class Session:
    id: str
    user: str
    client: str
    kind: Kind
    opened: datetime
    #: The last report (the heartbeat): alive until ``last_report + expire_after``.
    last_report: datetime
    activity: Activity = Activity.ACTIVE
    #: When its input stopped (idle: now - idle_seconds; locked: when it locked).
    idle_since: datetime | None = None
    #: When it last saw input: what ``last_active_ago`` counts from.
    last_active: datetime | None = None

    def alive(self, now: datetime, rules: SessionRules) -> bool:
        return now < self.last_report + rules.expire_after

    def reported(self, activity: Activity, idle_seconds: float, now: datetime) -> Session:
        """The session after a report (a heartbeat repeats the state)."""
        if activity is Activity.ACTIVE:
            return replace(self, activity=activity, idle_since=None, last_report=now,
                           last_active=now)
        since = min(now - timedelta(seconds=idle_seconds), now)
        if activity is Activity.LOCKED and self.activity is Activity.LOCKED:
            since = self.idle_since or since  # locked since it locked
        last_active = since if activity is Activity.IDLE else (self.last_active or since)
        return replace(self, activity=activity, idle_since=since, last_report=now,
                       last_active=last_active)


def parse_kind(raw: object) -> Kind:
    try:
        return Kind(str(raw)) if isinstance(raw, str) else Kind("")
    except ValueError:
        raise InvalidInput(f"kind: expected one of {', '.join(k.value for k in Kind)}") \
            from None


def parse_activity(raw: object) -> Activity:
    try:
        return Activity(raw) if isinstance(raw, str) else Activity("")
    except ValueError:
        raise InvalidInput(f"state: expected one of {', '.join(a.value for a in Activity)}") \
            from None


def parse_idle_seconds(raw: object) -> float:
    if raw is None:
        return 0.0
    if isinstance(raw, bool) or not isinstance(raw, (int, float)) or not 0 <= raw <= 31_536_000:
        raise InvalidInput("idle_seconds: a number of seconds from 0 to one year")
    return float(raw)


def parse_client(raw: object) -> str:
    """The client's label ("astpresence-agent on alice-laptop"): a short label."""
    if raw is None or raw == "":
        return ""
    return check_label(raw)


def presence_from(sessions: Iterable[Session], now: datetime, rules: SessionRules,
                  phone_registered: bool) -> tuple[Presence, datetime] | None:
    """The ``sessions`` contribution for one person, and since when (module docstring)."""
    known = list(sessions)
    if not known:
        return None
    live = [s for s in known if s.alive(now, rules)]
    if not live:
        if phone_registered:
            return None
        ended = max(s.last_report + rules.expire_after for s in known)
        return rules.offline, min(ended, now)
    if any(s.activity is Activity.ACTIVE for s in live):
        return None
    since = max(s.idle_since or now for s in live)
    if all(s.activity is Activity.LOCKED for s in live):
        return rules.away_from_desk, since
    idle_for = now - since
    if idle_for >= rules.idle_xa_after:
        return rules.away_from_desk, since
    if idle_for >= rules.idle_away_after:
        return rules.idle, since
    return None


def next_change(sessions: Iterable[Session], now: datetime, rules: SessionRules
                ) -> datetime | None:
    """When :func:`presence_from` may give something else with no report in between:
    a session expiring, or idle crossing a threshold."""
    times: list[datetime] = []
    live = [s for s in sessions if s.alive(now, rules)]
    times += [s.last_report + rules.expire_after for s in live]
    if live and not any(s.activity is Activity.ACTIVE for s in live):
        since = max(s.idle_since or now for s in live)
        times += [t for t in (since + rules.idle_away_after, since + rules.idle_xa_after)
                  if t > now]
    return min(times) if times else None
