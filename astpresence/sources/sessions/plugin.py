"""The sessions' registration (sources/plugin.py): ``[sessions]``, the sessions at
work on the leader, the one command its followers forward (``sessions``: open,
report, close, list), and the routes in web.py.

```toml
[sessions]
expire_after = 60          # seconds a session lives without a report
idle_away_after = "5m"     # every session idle this long: away / idle
idle_xa_after = "30m"      # ... this long (or every session locked): xa / away-from-desk
idle = "away"              # the states those give (subtypes idle, away-from-desk)
away_from_desk = "xa"
```
"""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from typing import Any

from astpresence.domain.model import InvalidInput, Presence, parse_state
from astpresence.domain.statuses import parse_duration
from astpresence.engine.service import PresenceService
from astpresence.sources.plugin import SourcePlugin
from astpresence.sources.settings_reader import section
from astpresence.sources.sessions.model import (
    Session,
    SessionRules,
    parse_activity,
    parse_client,
    parse_idle_seconds,
    parse_kind,
)
from astpresence.sources.sessions.source import SessionSource, UnknownSession

_KEYS = {"expire_after", "idle_away_after", "idle_xa_after", "idle", "away_from_desk"}


def parse_section(raw: object, where: str) -> SessionRules:
    raw = section(raw, where, "sessions", _KEYS)
    times: dict[str, Any] = {
        key: parse_duration(raw[key], f"{where} sessions.{key}")
        for key in ("expire_after", "idle_away_after", "idle_xa_after") if key in raw}
    states: dict[str, Any] = {
        key: Presence(parse_state(raw[key]), getattr(SessionRules(), key).subtype)
        for key in ("idle", "away_from_desk") if key in raw}
    rules = replace(SessionRules(), **times, **states)
    if rules.expire_after < timedelta(seconds=1) or rules.idle_xa_after < rules.idle_away_after:
        raise InvalidInput(f"{where} [sessions]: expire_after is at least 1 s, and "
                           "idle_xa_after is not shorter than idle_away_after")
    return rules


def session_json(session: Session, now: Any) -> dict[str, Any]:
    """A session as the API shows it to the person and admins (web.py cuts it down to
    ``last_active_ago``, to the minute, for others)."""
    ago = None
    if session.last_active is not None:
        ago = max(0, int((now - session.last_active).total_seconds()))
    return {"id": session.id, "client": session.client, "kind": session.kind.value,
            "state": session.activity.value, "opened": session.opened.isoformat(),
            "last_report": session.last_report.isoformat(),
            "last_active": session.last_active.isoformat() if session.last_active else None,
            "last_active_ago": ago}


async def answer(source: SessionSource, body: dict[str, Any]) -> dict[str, Any]:
    """What the leader does with a session request (its own or a follower's)."""
    op, uid = body.get("op"), body.get("user")
    if not isinstance(uid, str):
        raise InvalidInput("user: expected a string")
    now = source.now()
    try:
        if op == "open":
            session = await source.open(uid, parse_client(body.get("client")),
                                        parse_kind(body.get("kind", "api")))
        elif op == "report":
            session = await source.report(uid, str(body.get("id")),
                                          parse_activity(body.get("state")),
                                          parse_idle_seconds(body.get("idle_seconds")))
        elif op == "touch":  # a heartbeat that repeats nothing (a stream's session)
            session = await source.touch(uid, str(body.get("id")))
        elif op == "close":
            await source.close(uid, str(body.get("id")))
            return {"closed": True}
        elif op == "list":
            source.service.require_user(uid)
            return {"sessions": [session_json(s, now) for s in source.of(uid)]}
        else:
            raise InvalidInput(f"unknown session operation {str(op)[:20]!r}")
    except UnknownSession:
        return {"unknown_session": True}
    return {"session": session_json(session, now),
            "expire_after": source.rules.expire_after.total_seconds()}


def _start(rules: SessionRules, service: PresenceService) -> SessionSource:
    return SessionSource(rules, service)


def _show(rules: SessionRules) -> dict[str, Any]:
    return {"expire_after": rules.expire_after.total_seconds(),
            "idle_away_after": rules.idle_away_after.total_seconds(),
            "idle_xa_after": rules.idle_xa_after.total_seconds(),
            "idle": rules.idle.as_dict(), "away_from_desk": rules.away_from_desk.as_dict(),
            "offline": rules.offline.as_dict()}


PLUGIN = SourcePlugin(
    name="sessions",
    default=SessionRules(),
    parse=parse_section,
    start=_start,
    show=_show,
    commands={"sessions": answer},
    web="astpresence.sources.sessions.web",
)
