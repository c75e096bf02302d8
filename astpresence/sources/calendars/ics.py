"""iCalendar text (an ICS feed, CalDAV calendar data) -> :class:`Busy` intervals.

No I/O. Recurrences (RRULE, RDATE, EXDATE, moved and cancelled instances)
and time zones (VTIMEZONE, Windows zone names as Outlook writes them,
X-WR-TIMEZONE, floating times) are the job of icalendar and
recurring-ical-events; this module only decides which events make the
person unavailable (RFC 5545 TRANSP and STATUS, Outlook's
X-MICROSOFT-CDO-BUSYSTATUS, the person's own PARTSTAT).
"""

from __future__ import annotations

import functools
import os
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import icalendar
import recurring_ical_events

from astpresence.domain.model import InvalidInput, normalise_text
from astpresence.sources.calendars.entries import MAX_EVENTS, Busy, Kind

@functools.lru_cache(maxsize=1)
def local_zone() -> tzinfo:
    """The machine's zone with its daylight-saving rules (TZ, else /etc/localtime);
    a fixed offset would misplace floating times across a DST change."""
    name = os.environ.get("TZ", "").removeprefix(":")
    try:
        if name:
            return ZoneInfo(name)
        with open("/etc/localtime", "rb") as f:
            return ZoneInfo.from_file(f)
    except (OSError, ValueError, ZoneInfoNotFoundError):
        zone = datetime.now().astimezone().tzinfo
        return zone if zone is not None else UTC


#: Outlook's busy status (X-MICROSOFT-CDO-BUSYSTATUS) -> kind; None: free.
CDO_BUSYSTATUS: dict[str, Kind | None] = {
    "BUSY": Kind.BUSY, "OOF": Kind.OOF, "FREE": None, "TENTATIVE": None,
    "WORKINGELSEWHERE": None,
}


TIME_PROPERTIES = frozenset({"DTSTART", "DTEND", "DURATION", "RRULE", "RDATE", "EXDATE",
                             "RECURRENCE-ID"})


#: An event is dropped before parsing only when its dates are this far outside the
#: window: no time zone is more than 26 hours away from another.
PREFILTER_SLACK = timedelta(days=2)
_RECURRING = ("RRULE", "RDATE", "EXRULE", "RECURRENCE-ID", "DURATION")


def parse_calendar(data: bytes | str, window: tuple[datetime, datetime] | None = None
                   ) -> icalendar.Calendar:
    """A VCALENDAR, or :class:`InvalidInput` saying why not.

    With ``window``, one-off events that certainly lie outside it are left out
    before parsing: exports hold years of past events, and parsing is the
    costly part. Anything recurring or not plainly dated is kept.
    """
    text = data.decode("utf-8", "replace") if isinstance(data, bytes) else data
    if "BEGIN:VCALENDAR" not in text[:4096].upper():
        raise InvalidInput("not an iCalendar feed (no BEGIN:VCALENDAR)")
    if window is not None:
        text = prefilter(text, window[0] - PREFILTER_SLACK, window[1] + PREFILTER_SLACK)
    try:
        cal = icalendar.Calendar.from_ical(text)
    except (ValueError, KeyError, IndexError, TypeError) as exc:
        raise InvalidInput(f"invalid iCalendar data: {str(exc)[:200]}") from None
    if not isinstance(cal, icalendar.Calendar):
        raise InvalidInput("invalid iCalendar data: not a VCALENDAR")
    # icalendar is lenient: a property it cannot read is noted, not raised. An
    # event whose times cannot be read would silently vanish; refuse the feed
    # instead, so its last good events are kept.
    for comp in cal.walk("VEVENT"):
        for name, error in comp.errors:
            if name in TIME_PROPERTIES:
                uid = normalise_text(str(comp.get("UID", "?")))[:60]
                raise InvalidInput(f"invalid iCalendar data: event {uid!r}: {name}: "
                                   f"{normalise_text(str(error))[:120]}")
    return cal


def prefilter(text: str, start: datetime, end: datetime) -> str:
    """``text`` without the VEVENT blocks whose DTSTART and DTEND dates are both
    before ``start`` or both after ``end`` (dates compared as YYYYMMDD text)."""
    lo, hi = f"{start:%Y%m%d}", f"{end:%Y%m%d}"
    out: list[str] = []
    block: list[str] | None = None
    for line in text.splitlines(keepends=True):
        upper = line[:16].upper()
        if block is None:
            if upper.startswith("BEGIN:VEVENT"):
                block = [line]
            else:
                out.append(line)
            continue
        block.append(line)
        if upper.startswith("END:VEVENT"):
            if _keep(block, lo, hi):
                out.extend(block)
            block = None
    if block is not None:
        out.extend(block)  # unterminated: let the parser say so
    return "".join(out)


def _keep(block: list[str], lo: str, hi: str) -> bool:
    dates = {}
    for line in block:
        name = line.split(":", 1)[0].split(";", 1)[0].strip().upper()
        if name in _RECURRING:
            return True
        if name in ("DTSTART", "DTEND") and ":" in line:
            value = line.rsplit(":", 1)[1].strip()
            if len(value) < 8 or not value[:8].isdigit():
                return True
            dates[name] = value[:8]
    first = dates.get("DTSTART")
    if first is None:
        return True
    last = dates.get("DTEND", first)
    return not (last < lo or first > hi)


def busy_intervals(cal: icalendar.Calendar, start: datetime, end: datetime, tz: tzinfo,
                   *, email: str = "") -> list[Busy]:
    """The events of ``cal`` that make the person unavailable in ``[start, end)``.

    ``tz`` places floating times and all-day dates; ``email`` is the person's
    address, to leave out events they declined.
    """
    try:
        events = _expand(cal, start, end)
    except (ValueError, TypeError, KeyError, OverflowError,
            recurring_ical_events.InvalidCalendar) as exc:
        raise InvalidInput(f"cannot expand the events: {str(exc)[:200]}") from None
    out = []
    for ev in events:
        kind = event_kind(ev, email)
        if kind is None:
            continue
        dtstart = ev.get("DTSTART")
        dtend = ev.get("DTEND")
        if dtstart is None:
            continue
        s = _when(dtstart, tz)
        e = _when(dtend, tz) if dtend is not None else s
        if e <= s:
            continue
        all_day = isinstance(dtstart.dt, date) and not isinstance(dtstart.dt, datetime)
        # RFC 5545 3.8.1.3: PRIVATE and CONFIDENTIAL events keep their subject to
        # themselves, whatever show_subject says (so does any class we do not know)
        private = str(ev.get("CLASS") or "PUBLIC").strip().upper() != "PUBLIC"
        subject = "" if private else normalise_text(str(ev.get("SUMMARY") or ""))
        out.append(Busy(s, e, kind, subject, all_day))
    out.sort(key=lambda b: (b.start, b.end))
    return out


def _expand(cal: icalendar.Calendar, start: datetime, end: datetime) -> list[Any]:
    """Instances in the window, a day at a time so a feed with too many stops early
    (recurring-ical-events' ``after()`` slows down as it goes; ``between()`` per day
    stays linear). An instance spanning days is listed once."""
    query = recurring_ical_events.of(cal, skip_bad_series=True)
    seen: set[tuple[str, str]] = set()
    out: list[Any] = []
    day = start
    while day < end:
        upto = min(day + timedelta(days=1), end)
        for ev in query.between(day, upto):
            key = (str(ev.get("UID", "")), str(getattr(ev.get("DTSTART"), "dt", "")))
            if key not in seen:
                seen.add(key)
                out.append(ev)
        if len(out) > MAX_EVENTS:
            raise InvalidInput(f"more than {MAX_EVENTS} events in the window")
        day = upto
    return out


def event_kind(ev: Any, email: str = "") -> Kind | None:
    """BUSY, OOF, or None for an event that leaves the person free."""
    if str(ev.get("STATUS") or "").upper() in ("CANCELLED", "TENTATIVE"):
        return None
    cdo = str(ev.get("X-MICROSOFT-CDO-BUSYSTATUS") or "").upper()
    if cdo:
        if cdo in CDO_BUSYSTATUS:
            return CDO_BUSYSTATUS[cdo]
    elif str(ev.get("TRANSP") or "OPAQUE").upper() == "TRANSPARENT":
        return None
    if email and _declined(ev, email):
        return None
    return Kind.BUSY


def _declined(ev: Any, email: str) -> bool:
    attendees = ev.get("ATTENDEE")
    if attendees is None:
        return False
    if not isinstance(attendees, list):
        attendees = [attendees]
    me = f"mailto:{email}".lower()
    for attendee in attendees:
        if str(attendee).lower() == me:
            partstat = str(attendee.params.get("PARTSTAT", "")).upper()
            return partstat in ("DECLINED", "TENTATIVE", "NEEDS-ACTION")
    return False


def _when(prop: Any, tz: tzinfo) -> datetime:
    """An aware datetime: dates at local midnight, floating times in ``tz``."""
    value = prop.dt if hasattr(prop, "dt") else prop
    if isinstance(value, datetime):
        return value if value.tzinfo is not None else value.replace(tzinfo=tz)
    if isinstance(value, date):
        return datetime.combine(value, time(0), tzinfo=tz)
    raise InvalidInput(f"not a date or time: {value!r}")
