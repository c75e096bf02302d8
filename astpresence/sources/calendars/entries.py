"""From calendar events to presence entries: pure functions over plain values.

A feed (ics.py, graph.py) yields :class:`Busy` intervals: the events that
make a person unavailable, already stripped of free, tentative, transparent,
cancelled and declined ones. :func:`merge` turns them into one continuous
entry per stretch of time (out of office wins over busy where they overlap),
and :func:`to_presence` says what the person shows during an entry. The feed
manager (feeds.py) hands them to the engine as the timed source ``calendar``.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta, tzinfo

from astpresence.domain.model import InvalidInput, Presence, normalise_text, parse_presence

#: Events of one feed inside the window, at most: a feed that expands to more
#: (an RRULE every minute, say) is refused instead of filling memory.
MAX_EVENTS = 10_000


class Kind(enum.IntEnum):
    """What an event says about the person; a higher value wins an overlap."""

    BUSY = 1
    OOF = 2  # out of office (Outlook showAs oof, X-MICROSOFT-CDO-BUSYSTATUS:OOF)


@dataclass(frozen=True, slots=True)
class Busy:
    """One event that makes the person unavailable, ``[start, end)`` (aware)."""

    start: datetime
    end: datetime
    kind: Kind
    subject: str = ""
    all_day: bool = False


@dataclass(frozen=True, slots=True)
class Entry:
    """A continuous stretch of one kind: what the calendar source holds."""

    start: datetime
    end: datetime
    kind: Kind
    subject: str
    all_day: bool


@dataclass(frozen=True)
class CalendarMapping:
    """What a busy or out-of-office stretch shows (config ``[[calendars]]``).

    ``{until}`` in a message is the end (``15:00``; with the weekday when it is
    not the same day; the date for all-day and out-of-office stretches);
    ``{subject}`` the event's subject, used only with ``show_subject``.
    """

    busy: Presence
    oof: Presence
    show_subject: bool = False


DEFAULT_BUSY = parse_presence("away", "meeting", "In a meeting until {until}")
DEFAULT_OOF = parse_presence("xa", "out-of-office", "Out of office until {until}")
SUBJECT_MESSAGE = "{subject} until {until}"
DEFAULT_MAPPING = CalendarMapping(DEFAULT_BUSY, DEFAULT_OOF)


def merge(events: Iterable[Busy], start: datetime, end: datetime) -> list[Entry]:
    """Entries that touch ``[start, end)``: overlapping and touching events of one kind
    become one; out of office wins over busy where both apply.

    An entry keeps its events' real start, also when that is before ``start``: a
    running meeting started at 9:00, not "now", so a state the person chose after
    9:00 wins over it (docs/presence-rules.md). Only the end is cut at ``end``.
    """
    live = sorted((e for e in events if e.end > start and e.start < end and e.end > e.start),
                  key=lambda e: (e.start, -e.kind))
    edges = sorted({e.start for e in live} | {min(e.end, end) for e in live})
    out: list[Entry] = []
    for a, b in zip(edges, edges[1:]):
        first = _winner([e for e in live if e.start <= a and e.end >= b])
        if first is not None:
            _append(out, a, b, first)
    return [e for e in out if e.end > start]


def _winner(live: list[Busy]) -> Busy | None:
    """Of the events covering one stretch, the first of the highest kind (OOF > busy)."""
    if not live:
        return None
    top = max(e.kind for e in live)
    return next(e for e in live if e.kind == top)


def _append(out: list[Entry], a: datetime, b: datetime, first: Busy) -> None:
    last = out[-1] if out else None
    if last is not None and last.end == a and last.kind == first.kind:
        out[-1] = Entry(last.start, b, last.kind, last.subject or first.subject,
                        last.all_day and first.all_day)
    else:
        out.append(Entry(a, b, first.kind, first.subject, first.all_day))


def until_text(entry: Entry, now: datetime, tz: tzinfo) -> str:
    """``15:00``; ``Tue 15:00`` on another day; ``3 Dec`` for a day boundary (all-day,
    out of office): the person is back that morning, so the day shown is the last day
    away when the entry ends at midnight."""
    end = entry.end.astimezone(tz)
    local_now = now.astimezone(tz)
    if entry.kind is Kind.OOF or entry.all_day or (end.hour, end.minute) == (0, 0):
        day = end - timedelta(days=1) if (end.hour, end.minute, end.second) == (0, 0, 0) else end
        return f"{day.day} {day:%b}"
    if end.date() == local_now.date():
        return f"{end:%H:%M}"
    return f"{end:%a %H:%M}"


def to_presence(entry: Entry, mapping: CalendarMapping, now: datetime, tz: tzinfo) -> Presence:
    """The presence an entry gives, with its message filled in and made writable."""
    base = mapping.oof if entry.kind is Kind.OOF else mapping.busy
    template = base.message
    subject = " ".join(entry.subject.split())
    if mapping.show_subject and subject and "{subject}" not in template:
        template = SUBJECT_MESSAGE
    values = {"until": until_text(entry, now, tz),
              "subject": subject if mapping.show_subject else ""}
    try:
        message = template.format_map(values)
    except (KeyError, ValueError, IndexError):
        message = template  # checked at config load; never fail at run time
    return Presence(base.state, base.subtype, normalise_text(message).strip())


def check_template(text: str, what: str) -> str:
    """A message template: only ``{until}`` and ``{subject}`` may be filled in."""
    try:
        text.format_map({"until": "15:00", "subject": "x"})
    except (KeyError, ValueError, IndexError):
        raise InvalidInput(f"{what}: only {{until}} and {{subject}} can be filled in, "
                           f"got {text!r}") from None
    return text


def current_and_next(entries: list[Entry], now: datetime) -> tuple[Entry | None, Entry | None]:
    """The entry running at ``now`` (if any) and the one after it."""
    live = [e for e in entries if e.end > now]
    if not live:
        return None, None
    if live[0].start <= now:
        return live[0], live[1] if len(live) > 1 else None
    return None, live[0]
