"""Microsoft Graph ``calendarView`` items -> :class:`Busy` intervals (no I/O).

Graph gives one item per instance (recurrences expanded), with ``showAs``
(free, tentative, busy, oof, workingElsewhere, unknown), ``isCancelled`` and
the mailbox owner's ``responseStatus``. Times come as ``{"dateTime":
"2026-12-03T14:00:00.0000000", "timeZone": "UTC"}``; the zone is UTC when the
``Prefer: outlook.timezone`` header was honoured, else an IANA or a Windows
name.
"""

from __future__ import annotations

from datetime import UTC, datetime, tzinfo
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from icalendar.timezone.windows_to_olson import WINDOWS_TO_OLSON

from astpresence.domain.model import InvalidInput, normalise_text
from astpresence.sources.calendars.entries import MAX_EVENTS, Busy, Kind

SHOW_AS: dict[str, Kind | None] = {"busy": Kind.BUSY, "oof": Kind.OOF, "free": None,
                                   "tentative": None, "workingelsewhere": None,
                                   "unknown": None}


def busy_from_graph(items: list[dict[str, Any]]) -> list[Busy]:
    """The items that make the person unavailable; an item that does not parse
    raises :class:`InvalidInput` naming what is wrong."""
    if len(items) > MAX_EVENTS:
        raise InvalidInput(f"more than {MAX_EVENTS} events in the window")
    out = []
    for item in items:
        if item.get("isCancelled") is True:
            continue
        response = item.get("responseStatus")
        if isinstance(response, dict) and response.get("response") == "declined":
            continue
        kind = SHOW_AS.get(str(item.get("showAs", "busy")).lower())
        if kind is None:
            continue
        start, end = _when(item.get("start")), _when(item.get("end"))
        if end <= start:
            continue
        subject = item.get("subject")
        # Graph's sensitivity: normal, personal, private, confidential. Only a
        # normal (or unsaid) one shows its subject; private stays private.
        shown = str(item.get("sensitivity") or "normal").lower() == "normal"
        out.append(Busy(start, end, kind,
                        normalise_text(subject) if shown and isinstance(subject, str) else "",
                        item.get("isAllDay") is True))
    return out


def _when(raw: object) -> datetime:
    if not isinstance(raw, dict) or not isinstance(raw.get("dateTime"), str):
        raise InvalidInput("an event without a start or end dateTime")
    text = raw["dateTime"]
    head, _, frac = text.partition(".")
    try:
        value = datetime.fromisoformat(head + ("." + frac[:6] if frac else ""))
    except ValueError:
        raise InvalidInput(f"not a date and time: {text[:40]!r}") from None
    if value.tzinfo is not None:
        return value
    return value.replace(tzinfo=zone(str(raw.get("timeZone") or "UTC")))


def zone(name: str) -> tzinfo:
    """A time zone by IANA or Windows name (as Outlook writes them)."""
    if name.upper() in ("UTC", "Z", "COORDINATED UNIVERSAL TIME"):
        return UTC
    try:
        return ZoneInfo(WINDOWS_TO_OLSON.get(name, name))
    except (ZoneInfoNotFoundError, ValueError):
        raise InvalidInput(f"unknown time zone {name[:60]!r}") from None
