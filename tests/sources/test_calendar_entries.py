"""Calendars without I/O: feed formats -> events -> entries -> presence.

The ICS files in tests/support/calendars/ are shaped like real exports:
Outlook/Exchange (Windows zone names, X-MICROSOFT-CDO-BUSYSTATUS, a moved
and a deleted instance, an all-day OOF), Google (X-WR-TIMEZONE, a cancelled
instance, a declined invitation, a floating time) and Nextcloud (COUNT,
RDATE, an RRULE without end).
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from astpresence.sources.calendars.entries import (
    DEFAULT_MAPPING,
    MAX_EVENTS,
    Busy,
    CalendarMapping,
    Entry,
    Kind,
    current_and_next,
    merge,
    to_presence,
)
from astpresence.sources.calendars.graph import busy_from_graph
from astpresence.sources.calendars.ics import busy_intervals, parse_calendar
from astpresence.app.config import load_config
from astpresence.app.config_view import config_json
from astpresence.app.settings import ConfigError
from astpresence.domain.model import InvalidInput, Presence, State
from tests.support.calendar_servers import CALENDARS

BERLIN = ZoneInfo("Europe/Berlin")
NY = ZoneInfo("America/New_York")


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def spans(busy: list[Busy]) -> list[tuple[str, str, str, str]]:
    return [(b.start.astimezone(UTC).strftime("%m-%d %H:%M"),
             b.end.astimezone(UTC).strftime("%m-%d %H:%M"), b.kind.name, b.subject)
            for b in busy]


def load(name: str, tz: ZoneInfo, start: datetime, end: datetime,
         email: str = "") -> list[Busy]:
    cal = parse_calendar((CALENDARS / f"{name}.ics").read_bytes())
    return busy_intervals(cal, start, end, tz, email=email)


def test_outlook_export() -> None:
    got = spans(load("outlook", BERLIN, utc(2026, 10, 24), utc(2026, 11, 22)))
    assert got == [
        # 01:30 CEST to 03:30 CET on the night the clocks go back: three real hours.
        ("10-24 23:30", "10-25 02:30", "BUSY", "Across the DST change"),
        # 10:00 in Berlin is 09:00 UTC after the change; 2 Nov is an EXDATE.
        ("10-26 09:00", "10-26 10:00", "BUSY", "Weekly sync"),
        # 9 Nov moved to 10 Nov 14:00 (RECURRENCE-ID).
        ("11-10 13:00", "11-10 14:00", "BUSY", "Weekly sync (moved)"),
        # All-day OOF, TRANSP:TRANSPARENT but Outlook's busy status says OOF.
        ("11-15 23:00", "11-20 23:00", "OOF", "Vacation"),
        ("11-16 09:00", "11-16 10:00", "BUSY", "Weekly sync"),
    ]  # tentative and free events are left out


def test_google_export() -> None:
    got = spans(load("google", NY, utc(2026, 11, 2), utc(2026, 11, 5), "alice@example.com"))
    assert got == [
        ("11-02 14:00", "11-02 14:30", "BUSY", "Standup"),
        ("11-02 14:20", "11-02 15:00", "BUSY", "Customer call"),
        ("11-03 14:00", "11-03 14:30", "BUSY", "Standup"),
        # Floating time in the calendar's X-WR-TIMEZONE (17:00 New York).
        ("11-03 22:00", "11-03 23:00", "BUSY", "Floating gym"),
    ]  # 4 Nov cancelled, "All hands" declined, the birthday is transparent


def test_nextcloud_export_and_an_endless_rrule() -> None:
    got = spans(load("nextcloud", ZoneInfo("Europe/Paris"), utc(2026, 11, 2), utc(2026, 11, 9)))
    reviews = [g for g in got if g[3] == "Review"]
    assert reviews == [("11-02 13:00", "11-02 14:00", "BUSY", "Review"),
                       ("11-05 15:00", "11-05 16:00", "BUSY", "Review")]  # RDATE
    # The daily RRULE without an end gives only the window's 7 instances.
    assert len([g for g in got if g[3] == "Every day, no end"]) == 7


def test_feeds_that_are_not_calendars_or_too_big() -> None:
    for bad in (b"", b"<html>login</html>", b"BEGIN:VCALENDAR\r\nBEGIN:VEVENT\r\n\xff\xfe"):
        with pytest.raises(InvalidInput):
            cal = parse_calendar(bad)
            busy_intervals(cal, utc(2026, 1, 1), utc(2026, 1, 8), UTC)
    every_minute = ("BEGIN:VCALENDAR\r\nVERSION:2.0\r\nBEGIN:VEVENT\r\nUID:x\r\n"
                    "DTSTART:20260101T000000Z\r\nDTEND:20260101T000030Z\r\n"
                    "RRULE:FREQ=MINUTELY\r\nSUMMARY:spam\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n")
    with pytest.raises(InvalidInput, match=f"more than {MAX_EVENTS} events"):
        busy_intervals(parse_calendar(every_minute), utc(2026, 1, 1), utc(2026, 2, 1), UTC)


def test_merge_overlaps_and_oof_wins() -> None:
    b = [Busy(utc(2026, 1, 5, 9), utc(2026, 1, 5, 10), Kind.BUSY, "A"),
         Busy(utc(2026, 1, 5, 9, 30), utc(2026, 1, 5, 11), Kind.BUSY, "B"),
         Busy(utc(2026, 1, 5, 11), utc(2026, 1, 5, 12), Kind.BUSY, "C"),  # touching
         Busy(utc(2026, 1, 5, 13), utc(2026, 1, 5, 17), Kind.BUSY, "D"),
         Busy(utc(2026, 1, 5, 14), utc(2026, 1, 6), Kind.OOF, "Off")]
    got = [(e.start.hour, e.end.hour if e.end.day == 5 else 24, e.kind.name, e.subject)
           for e in merge(b, utc(2026, 1, 5), utc(2026, 1, 7))]
    assert got == [(9, 12, "BUSY", "A"), (13, 14, "BUSY", "D"), (14, 24, "OOF", "Off")]
    # An entry running at the window's start keeps its real start (a manual state
    # set after it began must win); only the end is cut to the window.
    running = merge(b, utc(2026, 1, 5, 10), utc(2026, 1, 5, 10, 30))
    assert [(e.start, e.end, e.subject) for e in running] == [
        (utc(2026, 1, 5, 9, 30), utc(2026, 1, 5, 10, 30), "B")]  # A ended at 10:00
    # the same answer however late "now" is: a refresh never moves the start
    assert merge(b, utc(2026, 1, 5, 10, 17), utc(2026, 1, 6))[0].start == utc(2026, 1, 5, 9, 30)
    assert merge([], utc(2026, 1, 1), utc(2026, 1, 2)) == []


@pytest.mark.parametrize(("entry", "mapping", "expect"), [
    (Entry(utc(2026, 1, 5, 9), utc(2026, 1, 5, 14), Kind.BUSY, "Board", False), DEFAULT_MAPPING,
     Presence(State.AWAY, "meeting", "In a meeting until 15:00")),
    (Entry(utc(2026, 1, 5, 9), utc(2026, 1, 6, 14), Kind.BUSY, "Board", False), DEFAULT_MAPPING,
     Presence(State.AWAY, "meeting", "In a meeting until Tue 15:00")),
    (Entry(utc(2026, 1, 5, 9), utc(2026, 1, 9, 23), Kind.OOF, "Ski", True), DEFAULT_MAPPING,
     Presence(State.XA, "out-of-office", "Out of office until 9 Jan")),
    # Privacy first: the subject only with show_subject.
    (Entry(utc(2026, 1, 5, 9), utc(2026, 1, 5, 14), Kind.BUSY, "Pay\x07 review  X", False),
     CalendarMapping(DEFAULT_MAPPING.busy, DEFAULT_MAPPING.oof, show_subject=True),
     Presence(State.AWAY, "meeting", "Pay review X until 15:00")),
])
def test_what_an_entry_shows(entry: Entry, mapping: CalendarMapping, expect: Presence) -> None:
    assert to_presence(entry, mapping, utc(2026, 1, 5, 9, 30), BERLIN) == expect


def test_current_and_next() -> None:
    a = Entry(utc(2026, 1, 5, 9), utc(2026, 1, 5, 10), Kind.BUSY, "", False)
    b = Entry(utc(2026, 1, 5, 11), utc(2026, 1, 5, 12), Kind.BUSY, "", False)
    assert current_and_next([a, b], utc(2026, 1, 5, 9, 30)) == (a, b)
    assert current_and_next([a, b], utc(2026, 1, 5, 10)) == (None, b)  # end is exclusive
    assert current_and_next([a, b], utc(2026, 1, 5, 12)) == (None, None)


def test_graph_items() -> None:
    def item(show: str, **more: object) -> dict[str, object]:
        return {"subject": show, "showAs": show, "isAllDay": False, "isCancelled": False,
                "start": {"dateTime": "2026-12-03T14:00:00.0000000", "timeZone": "UTC"},
                "end": {"dateTime": "2026-12-03T15:00:00.0000000", "timeZone": "UTC"},
                "responseStatus": {"response": "accepted"}, **more}
    got = busy_from_graph([
        item("busy"), item("oof"), item("free"), item("tentative"), item("workingElsewhere"),
        item("busy", isCancelled=True), item("busy", responseStatus={"response": "declined"}),
        item("busy", subject="Windows zone",
             start={"dateTime": "2026-12-03T09:00:00", "timeZone": "Eastern Standard Time"},
             end={"dateTime": "2026-12-03T10:00:00", "timeZone": "Eastern Standard Time"}),
    ])
    assert spans(got) == [("12-03 14:00", "12-03 15:00", "BUSY", "busy"),
                          ("12-03 14:00", "12-03 15:00", "OOF", "oof"),
                          ("12-03 14:00", "12-03 15:00", "BUSY", "Windows zone")]
    for bad in ({"start": None}, {"start": {"dateTime": "yesterday"}},
                {"start": {"dateTime": "2026-12-03T09:00:00", "timeZone": "Mars/Olympus"}}):
        with pytest.raises(InvalidInput):
            busy_from_graph([item("busy", **bad)])


def test_private_events_keep_their_subject() -> None:
    """ICS CLASS (RFC 5545 3.8.1.3) and Graph's sensitivity: only a public / normal
    event lends its subject to a message, whatever show_subject says."""
    def vevent(uid: str, extra: str) -> str:
        return (f"BEGIN:VEVENT\r\nUID:{uid}\r\nDTSTAMP:20261101T000000Z\r\n"
                f"DTSTART:20261203T140000Z\r\nDTEND:20261203T150000Z\r\n"
                f"SUMMARY:Subject {uid}\r\n{extra}END:VEVENT\r\n")
    ics = ("BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//t//EN\r\n"
           + vevent("a", "") + vevent("b", "CLASS:PUBLIC\r\n")
           + vevent("c", "CLASS:PRIVATE\r\n") + vevent("d", "CLASS:CONFIDENTIAL\r\n")
           + vevent("e", "CLASS:x-secret\r\n") + "END:VCALENDAR\r\n")
    got = busy_intervals(parse_calendar(ics), utc(2026, 12, 1), utc(2026, 12, 5), UTC)
    assert sorted(b.subject for b in got) == ["", "", "", "Subject a", "Subject b"]

    def item(**more: object) -> dict[str, object]:
        return {"subject": "Board meeting", "showAs": "busy",
                "start": {"dateTime": "2026-12-03T14:00:00", "timeZone": "UTC"},
                "end": {"dateTime": "2026-12-03T15:00:00", "timeZone": "UTC"}, **more}
    subjects = [b.subject for b in busy_from_graph([
        item(), item(sensitivity="normal"), item(sensitivity="private"),
        item(sensitivity="confidential"), item(sensitivity="personal")])]
    assert subjects == ["Board meeting", "Board meeting", "", "", ""]
    mapping = replace(DEFAULT_MAPPING, show_subject=True)
    for busy in got:
        shown = to_presence(Entry(busy.start, busy.end, busy.kind, busy.subject, False), mapping,
                            utc(2026, 12, 3, 14, 30), UTC)
        assert "Subject c" not in shown.message and "Subject d" not in shown.message


@pytest.mark.parametrize(("toml", "error"), [
    ('kind = "ics"\nurl = "https://x/a.ics"', "calendars[0].user"),
    ('user = "2000"\nkind = "exchange"', "calendars[0].kind"),
    ('user = "2000"\nkind = "ics"', "calendars[0]: missing 'url'"),
    ('user = "2000"\nkind = "caldav"\nurl = "/tmp/x"', "calendars[0].url"),
    ('user = "2000"\nkind = "ics"\nurl = "a.ics"\nrefresh = 0', "calendars[0].refresh"),
    ('user = "2000"\nkind = "ics"\nurl = "a.ics"\ntimezone = "Mars/Base"',
     "calendars[0].timezone"),
    ('user = "2000"\nkind = "ics"\nurl = "a.ics"\nbusy_message = "until {end}"',
     "calendars[0].busy"),
    ('user = "2000"\nkind = "ics"\nurl = "a.ics"\nbusy_state = "sleeping"',
     "calendars[0].busy"),
    ('user = "2000"\nkind = "ics"\nurl = "a.ics"\npassword_env = "A B"',
     "calendars[0].password_env"),
    ('user = "2000"\nkind = "ics"\nurl = "a.ics"\ntenant = "t"',
     "unknown setting(s) tenant for kind 'ics'"),
    ('user = "2000"\nkind = "m365"\ntenant = "t"\nclient_id = "c"\nmailbox = "a@b"',
     "client_secret_env or client_secret_file is required"),
])
def test_calendar_config_errors_name_the_entry_and_key(tmp_path: Path, toml: str,
                                                       error: str) -> None:
    path = tmp_path / "c.toml"
    path.write_text(f"[[calendars]]\n{toml}\n")
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    assert error in str(info.value)


def test_calendar_secrets_never_in_the_config_json(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('[[calendars]]\nuser = "2000"\nkind = "ics"\n'
                    'url = "https://cal.example.com/private-5ecret/basic.ics"\n'
                    'username = "alice"\npassword_env = "CAL_PW"\n'
                    '[[calendars]]\nuser = "2001"\nkind = "m365"\ntenant = "contoso"\n'
                    'client_id = "app"\nclient_secret_file = "/etc/astp/m365"\n'
                    'mailbox = "bob@contoso.com"\nrefresh = 600\nshow_subject = true\n')
    cfg = load_config(path, env={"CAL_PW": "hunter2"})
    text = str(config_json(cfg))
    assert "5ecret" not in text and "hunter2" not in text
    shown = config_json(cfg)["sources"]["calendars"]["feeds"]
    assert shown[0]["url"] == "https://cal.example.com/..."
    assert shown[0]["password"] == {"env": "CAL_PW", "file": ""}  # a reference only
    assert shown[1]["refresh"] == 600 and shown[1]["mapping"]["show_subject"] is True
    assert timedelta(seconds=cfg.sources["calendars"].feeds[1].refresh) == timedelta(minutes=10)


@pytest.mark.parametrize(("name", "tz"), [("outlook", BERLIN), ("google", NY),
                                          ("nextcloud", ZoneInfo("Europe/Paris"))])
@pytest.mark.parametrize("day", [0, 10, 20, 25])
def test_prefilter_changes_nothing_inside_the_window(name: str, tz: ZoneInfo, day: int) -> None:
    """Events dropped before parsing (dates plainly outside the window) are exactly
    events that would not have been in it."""
    data = (CALENDARS / f"{name}.ics").read_bytes()
    start = utc(2026, 10, 20) + timedelta(days=day)
    end = start + timedelta(days=3)
    whole = busy_intervals(parse_calendar(data), start, end, tz)
    assert busy_intervals(parse_calendar(data, (start, end)), start, end, tz) == whole


def test_the_parse_limit_is_the_calendars_key_in_limits(tmp_path: Path) -> None:
    """``[limits] calendar_parse_seconds`` belongs to the calendars' plug-in; it holds
    wherever the table stands in the file, and a bad value names the setting."""
    path = tmp_path / "c.toml"
    path.write_text('[limits]\ncalendar_parse_seconds = 45\nmax_users = 50\n'
                    '[[calendars]]\nuser = "2000"\nkind = "ics"\nurl = "https://x/a.ics"\n')
    cfg = load_config(path, env={})
    assert cfg.sources["calendars"].parse_seconds == 45 and cfg.max_users == 50
    assert len(cfg.sources["calendars"].feeds) == 1
    assert config_json(cfg)["sources"]["calendars"]["parse_seconds"] == 45
    assert load_config(None, env={}).sources == {}  # defaults: the plug-in's own
    path.write_text('[limits]\ncalendar_parse_seconds = 0\n')
    with pytest.raises(ConfigError, match=r"limits\.calendar_parse_seconds: expected 1-600"):
        load_config(path, env={})
    path.write_text('[limits]\ncalendar_parse = 5\n')
    with pytest.raises(ConfigError, match="calendar_parse_seconds"):  # the known keys listed
        load_config(path, env={})
