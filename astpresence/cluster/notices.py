"""What an HA group's leader tells its followers, by LISTEN/NOTIFY, and how a
follower reads it back: a change (with its event number and view), a link, "written",
"users changed". Each notice stays under PostgreSQL's 8,000-byte NOTIFY limit.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import datetime


from astpresence.engine.events import LinkEvent
from astpresence.domain.model import InvalidInput, parse_instant
from astpresence.domain.records import PresenceView, presence_json, view_from_json


logger = logging.getLogger(__name__)


# -- notices ----------------------------------------------------------------------


def time_json(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def parse_time(value: object) -> datetime | None:
    return None if value is None else parse_instant("time", value)


def change_notice(seq: int, view: PresenceView) -> str:
    return json.dumps({"t": "change", "seq": seq, "view": presence_json(view)},
                      ensure_ascii=False, separators=(",", ":"))


def link_notice(event: LinkEvent) -> str:
    return json.dumps({"t": "link", "state": event.state, "since": time_json(event.since),
                       "asterisk": event.asterisk, "reason": event.reason,
                       "node": event.node}, ensure_ascii=False, separators=(",", ":"))


USERS_NOTICE = '{"t":"users"}'


def written_notice(uid: str) -> str:
    """The user's presence is on every Asterisk server now (no longer pending)."""
    return json.dumps({"t": "written", "user": uid}, ensure_ascii=False)


class LeaderNotices:
    """The engine's ``Notices`` port while this node leads its group."""

    def change(self, seq: int, view: PresenceView) -> str:
        return change_notice(seq, view)

    def link(self, event: LinkEvent) -> str:
        return link_notice(event)

    def written(self, uid: str) -> str:
        return written_notice(uid)

    def users(self) -> str:
        return USERS_NOTICE


@dataclass(frozen=True, slots=True)
class Change:
    seq: int
    view: PresenceView


@dataclass(frozen=True, slots=True)
class UsersChanged:
    pass


@dataclass(frozen=True, slots=True)
class Written:
    user: str


Notice = Change | LinkEvent | UsersChanged | Written


def parse_notice(text: str) -> Notice:
    """A notice as the leader sent it; InvalidInput for anything else."""
    try:
        data = json.loads(text)
        kind = data["t"]
        if kind == "change":
            return Change(int(data["seq"]), view_from_json(data["view"]))
        if kind == "link":
            since = parse_time(data["since"])
            assert since is not None
            return LinkEvent(str(data["state"]), since, str(data["asterisk"]),
                             data.get("reason"), str(data["node"]))
        if kind == "users":
            return UsersChanged()
        if kind == "written":
            return Written(str(data["user"]))
    except (ValueError, KeyError, TypeError, AssertionError) as exc:
        raise InvalidInput(f"not a notice of astpresence: {exc}") from None
    raise InvalidInput(f"unknown notice {kind!r}")
