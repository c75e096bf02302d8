"""``[[calendars]]`` in the config: one feed of one user, validated at load time."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from astpresence.domain.model import InvalidInput, parse_presence, validate_user_id
from astpresence.sources.calendars.entries import (
    DEFAULT_BUSY,
    DEFAULT_OOF,
    CalendarMapping,
    check_template,
)
from astpresence.sources.calendars.fetch import DEFAULT_MAX_BYTES
from astpresence.sources.msgraph import M365_AUTHORITY, M365_GRAPH
from astpresence.sources.settings_reader import Credential, Reader

__all__ = ["Credential", "M365_AUTHORITY", "M365_GRAPH"]

KINDS = ("ics", "caldav", "m365")


@dataclass(frozen=True)
class FeedConfig:
    user: str
    kind: str
    url: str = ""  # ics: URL or file; caldav: collection URL (not shown: may hold a secret)
    username: str = ""
    password: Credential = Credential()
    tenant: str = ""
    client_id: str = ""
    mailbox: str = ""
    authority: str = M365_AUTHORITY
    graph: str = M365_GRAPH
    refresh: float = 300.0
    days: int = 7
    timezone: str = ""  # "" = the machine's local zone
    email: str = ""
    max_bytes: int = DEFAULT_MAX_BYTES
    mapping: CalendarMapping = CalendarMapping(DEFAULT_BUSY, DEFAULT_OOF)

    @property
    def name(self) -> str:
        """How logs, status and the CLI name the feed (no URL: it may hold a token)."""
        return f"{self.user}/{self.kind}"

    def zone(self) -> Any:
        return ZoneInfo(self.timezone) if self.timezone else None


_COMMON = {"user", "kind", "refresh", "days", "timezone", "show_subject", "max_bytes",
           "email", "busy_state", "busy_subtype", "busy_message", "oof_state", "oof_subtype",
           "oof_message"}
_KEYS = {
    "ics": _COMMON | {"url", "username", "password_env", "password_file"},
    "caldav": _COMMON | {"url", "username", "password_env", "password_file"},
    "m365": _COMMON | {"tenant", "client_id", "client_secret_env", "client_secret_file",
                       "mailbox", "authority", "graph"},
}


def parse_feed(table: Mapping[str, Any], where: str) -> FeedConfig:
    """One ``[[calendars]]`` table; InvalidInput naming the entry and the key."""
    kind = table.get("kind")
    if kind not in KINDS:
        raise InvalidInput(f"{where}.kind: expected one of {', '.join(KINDS)}, got {kind!r}")
    unknown = sorted(set(table) - _KEYS[kind])
    if unknown:
        raise InvalidInput(f"{where}: unknown setting(s) {', '.join(unknown)} for kind "
                           f"{kind!r}; known: {', '.join(sorted(_KEYS[kind]))}")
    get = _Getter(table, where)
    try:
        user = validate_user_id(table.get("user"))
    except InvalidInput as exc:
        raise InvalidInput(f"{where}.user: {exc}") from None
    timezone = get.text("timezone", "")
    if timezone:
        try:
            ZoneInfo(timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise InvalidInput(f"{where}.timezone: unknown time zone {timezone!r} "
                               "(an IANA name like 'Europe/Berlin')") from None
    mapping = CalendarMapping(
        get.presence("busy", DEFAULT_BUSY), get.presence("oof", DEFAULT_OOF),
        get.flag("show_subject", False))
    common: dict[str, Any] = dict(
        user=user, kind=kind, refresh=get.number("refresh", 300.0, 1.0, 86400.0),
        days=int(get.number("days", 7, 1, 62, integer=True)), timezone=timezone,
        email=get.text("email", ""), mapping=mapping,
        max_bytes=int(get.number("max_bytes", DEFAULT_MAX_BYTES, 1024, 200 * 1024 * 1024,
                                 integer=True)))
    if kind in ("ics", "caldav"):
        url = get.text("url", None)
        if kind == "caldav" and not url.startswith(("http://", "https://")):
            raise InvalidInput(f"{where}.url: a CalDAV collection URL (http:// or https://)")
        return FeedConfig(url=url, username=get.text("username", ""),
                          password=get.credential("password"), **common)
    secret = get.credential("client_secret")
    if not secret.set:
        raise InvalidInput(f"{where}: client_secret_env or client_secret_file is required")
    return FeedConfig(tenant=get.text("tenant", None), client_id=get.text("client_id", None),
                      mailbox=get.text("mailbox", None), password=secret,
                      authority=get.url("authority", M365_AUTHORITY),
                      graph=get.url("graph", M365_GRAPH), **common)


class _Getter(Reader):
    def presence(self, prefix: str, default: Any) -> Any:
        state = self.table.get(f"{prefix}_state", default.state.value)
        subtype = self.table.get(f"{prefix}_subtype", default.subtype)
        message = self.table.get(f"{prefix}_message", default.message)
        try:
            check_template(message if isinstance(message, str) else "", f"{prefix}_message")
            return parse_presence(state, subtype, message)
        except InvalidInput as exc:
            raise InvalidInput(f"{self.where}.{prefix}: {exc}") from None



#: One feed's parse may take this long before its worker is killed (``[limits]
#: calendar_parse_seconds``).
DEFAULT_PARSE_SECONDS = 30


@dataclass(frozen=True)
class CalendarSettings:
    """The calendars' part of the config: every ``[[calendars]]`` feed and the parse
    time limit."""

    feeds: tuple[FeedConfig, ...] = ()
    parse_seconds: int = DEFAULT_PARSE_SECONDS


def parse_section(raw: object, where: str) -> CalendarSettings:
    """The ``calendars`` key of a config file: an array of tables."""
    if not isinstance(raw, list):
        raise InvalidInput(f"{where}: 'calendars' must be an array of tables ([[calendars]])")
    feeds = []
    for i, table in enumerate(raw):
        what = f"{where} calendars[{i}]"
        if not isinstance(table, Mapping):
            raise InvalidInput(f"{what}: expected a table")
        feeds.append(parse_feed(table, what))
    return CalendarSettings(feeds=tuple(feeds))


def with_parse_seconds(settings: CalendarSettings, raw: object, what: str) -> CalendarSettings:
    """``[limits] calendar_parse_seconds``: 1-600."""
    if isinstance(raw, bool) or not isinstance(raw, int) or not 1 <= raw <= 600:
        raise InvalidInput(f"{what}: expected 1-600, got {raw!r}")
    return CalendarSettings(settings.feeds, raw)
