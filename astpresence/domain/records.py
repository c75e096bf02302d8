"""What astpresence knows about people, as plain values: the domain's records.

The engine decides with them, the store keeps them, the API shows them;
none of those layers owns them.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from astpresence.domain.forwarding import Forwarding, forwarding_from_json
from astpresence.domain.model import (
    NOT_SET,
    InvalidInput,
    Presence,
    normalise_text,
    parse_instant,
    parse_presence,
)


@dataclass(frozen=True, slots=True)
class UserRecord:
    """A person whose presence is ``CustomPresence:<id>``."""

    id: str
    name: str = ""
    extension: str = ""
    context: str = ""
    devices: tuple[str, ...] = ()
    origin: str = "hint"  # "hint" (found in dialplan) or "config"
    mailbox: str = ""  # voicemail box from the config ("" = the [cards] pattern)


@dataclass(frozen=True, slots=True)
class SourceRecord:
    """One source's contribution to one user's presence."""

    user: str
    source: str  # "manual", "calendar", ...
    presence: Presence
    since: datetime  # when it was set (aware, UTC)
    actor: str  # who set it: "api", "cli", "asterisk", ...
    start: datetime | None = None  # timed sources: window
    end: datetime | None = None
    #: The message lapses then, the state stays (a manual choice; None: with the state).
    message_end: datetime | None = None


@dataclass(frozen=True, slots=True)
class EffectiveRecord:
    """The presence astpresence computed for a user and wants in Asterisk."""

    user: str
    presence: Presence
    source: str
    reason: str
    since: datetime
    #: What the person chose apart from device overlays (None: ``presence``) and what
    #: is going on now. Derived again at every decision, not stored.
    chosen: Presence | None = None
    activity: str = ""


@dataclass(frozen=True, slots=True)
class HistoryEntry:
    """One row of the append-only history. ``id`` is 0 until stored."""

    at: datetime
    user: str
    old: Presence | None
    new: Presence
    source: str
    actor: str
    reason: str = ""
    id: int = 0
    #: What was going on when the presence changed (on-the-phone, offline, ...).
    activity: str = ""


@dataclass(frozen=True, slots=True)
class TokenRecord:
    """An API token; only the SHA-256 of the secret is kept."""

    id: str
    hash: str
    role: str  # "user", "operator" or "admin"
    user: str | None
    label: str
    created_at: datetime
    revoked_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class PresenceView:
    """A user's effective presence as clients see it (the web code renders it)."""

    user: str
    presence: Presence
    source: str
    actor: str
    since: datetime | None
    pending: bool
    rule: str = "default"
    name: str = ""  # the contact card (cards.py)
    voicemail: int | None = None  # new messages waiting; None: no known mailbox
    #: What the person chose, apart from a call or offline overlay (None: ``presence``).
    chosen: Presence | None = None
    #: What is going on now: on-the-phone, ringing, on-hold, offline, meeting, ... or "".
    activity: str = ""
    #: Forwarding FreePBX applies (CF/CFB/CFU, follow-me), part of the contact card.
    forwarding: Forwarding | None = None
    #: What happens to a call now by astpresence's own rules ("" when off or none).
    calls: str = ""

    def __post_init__(self) -> None:
        if self.chosen is None:  # given as None: the chosen presence is the effective one
            object.__setattr__(self, "chosen", self.presence)

    @classmethod
    def unset(cls, uid: str, *, pending: bool = False, name: str = "",
              voicemail: int | None = None, forwarding: Forwarding | None = None,
              calls: str = "") -> PresenceView:
        """A user nothing was ever decided for."""
        return cls(uid, NOT_SET, "default", "", None, pending, name=name, voicemail=voicemail,
                   forwarding=forwarding, calls=calls)


def presence_json(view: PresenceView) -> dict[str, Any]:
    """A presence object as the API, the event stream and an HA group's notices show
    it: the one JSON shape of a :class:`PresenceView`."""
    return {
        "user": view.user,
        "state": view.presence.state.value,
        "subtype": view.presence.subtype,
        "message": view.presence.message,
        "source": view.source,
        "actor": view.actor,
        "since": view.since.isoformat() if view.since else None,
        "pending": view.pending,
        "rule": view.rule,
        "name": view.name,
        "voicemail": view.voicemail,
        "chosen": (view.chosen or view.presence).as_dict(),
        "activity": view.activity,
        "forwarding": view.forwarding.json() if view.forwarding else None,
        "calls": view.calls,
    }


def view_from_json(data: object) -> PresenceView:
    """:func:`presence_json` read back (a follower reads its leader's notices)."""
    if not isinstance(data, dict):
        raise InvalidInput("expected a presence object")
    voicemail = data.get("voicemail")
    if voicemail is not None and (isinstance(voicemail, bool) or not isinstance(voicemail, int)):
        raise InvalidInput("voicemail: expected a number")
    since = data.get("since")
    # Before 0.2 the value was nested ({"presence": {"state", ...}}): a node of
    # an HA group upgraded before the others still reads it.
    value = data["presence"] if isinstance(data.get("presence"), dict) else data
    try:
        presence = parse_presence(value["state"], value.get("subtype"), value.get("message"))
        return PresenceView(
            str(data["user"]),
            presence,
            str(data["source"]), str(data["actor"]),
            parse_instant("since", since) if since is not None else None,
            data.get("pending") is True, str(data["rule"]),
            str(data.get("name") or ""), voicemail,
            _chosen(data.get("chosen"), presence),
            str(data.get("activity") or ""),
            forwarding_from_json(data.get("forwarding")),
            normalise_text(str(data.get("calls") or ""))[:300])
    except KeyError as exc:
        raise InvalidInput(f"a presence object without {exc}") from None


def _chosen(data: object, effective: Presence) -> Presence:
    """The chosen presence read back (a notice from before 0.2 has none: the effective)."""
    if not isinstance(data, dict):
        return effective
    return parse_presence(data.get("state"), data.get("subtype"), data.get("message"))
