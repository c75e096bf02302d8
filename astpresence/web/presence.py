"""Presence: everyone's (``/v1/presence``), the caller's own (``/v1/me``), history
and timed sources.
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from typing import Any

from aiohttp import web

from astpresence.domain import rules
from astpresence.domain.logsafe import clip
from astpresence.domain.model import (
    STATE_NAMES,
    InvalidInput,
    parse_instant,
    parse_presence,
    parse_state,
)
from astpresence.web.openapi import HISTORY_MAX, MAX_TTL_SECONDS
from astpresence.domain import statuses
from astpresence.domain.records import PresenceView, SourceRecord, presence_json

from astpresence.web.http import (MAX_TTL, presence_api, _actor, _json_body, _require_details,
    _visible, own_user, principal)

logger = logging.getLogger(__name__)


# -- presence ----------------------------------------------------------------


async def list_presence(request: web.Request) -> web.Response:
    service = presence_api(request)
    objs = [_visible(request, presence_json(v)) for v in service.views()]
    state = request.query.get("state")
    if state is not None:
        wanted = parse_state(state).value
        objs = [o for o in objs if o["state"] == wanted]
    return web.json_response({"presence": objs})


async def get_presence(request: web.Request) -> web.Response:
    service = presence_api(request)
    view = service.view(request.match_info["user"])
    return web.json_response(_visible(request, presence_json(view)))


async def put_presence(request: web.Request) -> web.Response:
    service = presence_api(request)
    uid = request.match_info["user"]
    service.require_user(uid)  # 404 before looking at the body
    principal(request).require_change(uid)
    view = await _choose(request, uid)
    return web.json_response(presence_json(view))


#: What a body choosing a presence may hold.
CHOICE_FIELDS = {"state", "subtype", "message", "expires", "message_expires", "status"}


async def _choose(request: web.Request, uid: str) -> PresenceView:
    """A chosen presence from the body: state (subtype, message) or a named status,
    with its end and its message's end (absent: the status's duration, else the
    state's ``expire_after``)."""
    service = presence_api(request)
    body = await _json_body(request, CHOICE_FIELDS)
    now = datetime.now(UTC)
    end = _parse_expires("expires", body.get("expires"), now)
    if "status" in body:
        if not isinstance(body["status"], str):
            raise InvalidInput("status must be a status id (GET /v1/statuses)")
        status = statuses.find(service.statuses, body["status"])
        chosen = status.presence
        presence = parse_presence(body.get("state", chosen.state.value),
                                  body.get("subtype", chosen.subtype),
                                  body.get("message", chosen.message))
        if end is None and status.duration is not None:
            end = now + status.duration
    elif "state" not in body:
        raise InvalidInput(f"missing field 'state' (one of {', '.join(STATE_NAMES)}) or "
                           "'status'")
    else:
        presence = parse_presence(body["state"], body.get("subtype"), body.get("message"))
    message_end = _parse_expires("message_expires", body.get("message_expires"), now)
    return await service.set_manual(uid, presence, _actor(request), end=end,
                                    message_end=message_end)


async def list_statuses(request: web.Request) -> web.Response:
    return web.json_response({"statuses": [s.json() for s in presence_api(request).statuses]})


async def delete_presence(request: web.Request) -> web.Response:
    service = presence_api(request)
    uid = request.match_info["user"]
    service.require_user(uid)
    principal(request).require_change(uid)
    view = await service.clear_manual(uid, _actor(request))
    return web.json_response(presence_json(view))


async def get_history(request: web.Request) -> web.Response:
    service = presence_api(request)
    uid = request.match_info["user"]
    raw = request.query.get("limit", "50")
    try:
        limit = int(raw)
    except ValueError:
        raise InvalidInput(f"limit must be an integer 1-{HISTORY_MAX}, got {raw!r}") from None
    if not 1 <= limit <= HISTORY_MAX:
        raise InvalidInput(f"limit must be between 1 and {HISTORY_MAX}, got {limit}")
    _require_details(request, uid)
    rows = await service.history(uid, limit)
    return web.json_response(
        {
            "user": uid,
            "history": [
                {
                    "id": h.id,
                    "at": h.at.isoformat(),
                    "old": h.old.as_dict() if h.old is not None else None,
                    "new": h.new.as_dict(),
                    "source": h.source,
                    "actor": h.actor,
                    "reason": h.reason,
                    "activity": h.activity,
                }
                for h in rows
            ],
        }
    )


# -- the caller's own presence -------------------------------------------------


def _own_user(request: web.Request) -> str:
    return own_user(request, "/v1/presence/{user}")


async def get_me(request: web.Request) -> web.Response:
    p = principal(request)
    service = presence_api(request)
    user = service.users.get(p.user) if p.user else None
    return web.json_response(
        {
            "token": p.to_json(),
            "user": asdict(user) if user is not None else None,
            "presence": presence_json(service.view(user.id)) if user is not None else None,
        }
    )


def _seconds(field: str, raw: object) -> timedelta:
    """A positive, finite number of seconds up to :data:`MAX_TTL`."""
    if (isinstance(raw, bool) or not isinstance(raw, (int, float))
            or not 0 < raw <= MAX_TTL_SECONDS or not math.isfinite(raw)):
        raise InvalidInput(f"{field} must be a number of seconds, more than 0 and at most "
                           f"{MAX_TTL_SECONDS} (366 days)")
    return timedelta(seconds=raw)


def _parse_expires(field: str, raw: object, now: datetime) -> datetime | None:
    """A date-time or seconds from now (None: not given)."""
    if raw is None:
        return None
    if isinstance(raw, (bool, int, float)):
        return now + _seconds(field, raw)
    if not isinstance(raw, str):
        raise InvalidInput(f"{field} must be an ISO 8601 date-time or a number of seconds")
    when = _parse_time(field, raw, now)
    if when <= now:
        raise InvalidInput(f"{field} is in the past")
    return when


async def put_me(request: web.Request) -> web.Response:
    """Self-publish; with ``expires`` the presence reverts by itself at that time."""
    view = await _choose(request, _own_user(request))
    return web.json_response(presence_json(view))


async def delete_me(request: web.Request) -> web.Response:
    service = presence_api(request)
    view = await service.clear_manual(_own_user(request), _actor(request))
    return web.json_response(presence_json(view))


# -- timed sources ------------------------------------------------------------


def _parse_time(field: str, raw: object, now: datetime) -> datetime:
    """An ISO 8601 date-time with a zone, at most :data:`MAX_TTL` after ``now``."""
    value = parse_instant(field, raw)
    if value - now > MAX_TTL:
        raise InvalidInput(f"{field} {clip(raw, 40)} is more than 366 days ahead")
    return value


def parse_source_body(
    uid: str, name: str, body: dict[str, Any], actor: str, now: datetime
) -> SourceRecord:
    """Validate a timed contribution: name, presence, window or TTL."""
    rules.check_source_name(name)
    if "state" not in body:
        raise InvalidInput(f"missing field 'state' (one of {', '.join(STATE_NAMES)})")
    presence = parse_presence(body["state"], body.get("subtype"), body.get("message"))
    start = _parse_time("start", body["start"], now) if body.get("start") is not None else None
    end = _parse_time("end", body["end"], now) if body.get("end") is not None else None
    if body.get("ttl") is not None:
        if end is not None:
            raise InvalidInput("give either 'end' or 'ttl', not both")
        end = (start or now) + _seconds("ttl", body["ttl"])
    if start is not None and end is not None and end <= start:
        raise InvalidInput("end must be after start")
    if end is not None and end <= now:
        raise InvalidInput("the window is already over (end is in the past)")
    return SourceRecord(uid, name, presence, now, actor, start, end)


def _source_json(rec: SourceRecord) -> dict[str, Any]:
    return {
        "source": rec.source,
        **rec.presence.as_dict(),
        "since": rec.since.isoformat(),
        "actor": rec.actor,
        "start": rec.start.isoformat() if rec.start else None,
        "end": rec.end.isoformat() if rec.end else None,
    }


async def list_sources(request: web.Request) -> web.Response:
    service = presence_api(request)
    uid = request.match_info["user"]
    _require_details(request, uid)
    devices = await service.current_devices(uid)
    return web.json_response(
        {
            "user": uid,
            "effective": presence_json(service.view(uid)),
            "sources": [_source_json(r) for r in await service.current_sources(uid)],
            "devices": {
                "states": [s.value for s in devices.states],
                "aggregate": devices.aggregate.value,
                "unavailable_since": devices.unavailable_since.isoformat()
                if devices.unavailable_since else None,
            },
        }
    )


async def put_source(request: web.Request) -> web.Response:
    service = presence_api(request)
    uid = request.match_info["user"]
    service.require_user(uid)
    principal(request).require_change(uid)
    body = await _json_body(request, {"state", "subtype", "message", "start", "end", "ttl"})
    record = parse_source_body(uid, request.match_info["name"], body, _actor(request),
                               datetime.now(UTC))
    view = await service.set_source(record)
    return web.json_response({"source": _source_json(record),
                              "effective": presence_json(view)})


async def delete_source(request: web.Request) -> web.Response:
    service = presence_api(request)
    uid = request.match_info["user"]
    service.require_user(uid)
    principal(request).require_change(uid)
    view = await service.delete_source(uid, request.match_info["name"], _actor(request))
    return web.json_response({"effective": presence_json(view)})
