"""What astpresence knows about people, as plain values: the domain's records.

The engine decides with them, the store keeps them, the API shows them;
none of those layers owns them.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from astpresence.domain.model import NOT_SET, Presence


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


@dataclass(frozen=True, slots=True)
class EffectiveRecord:
    """The presence astpresence computed for a user and wants in Asterisk."""

    user: str
    presence: Presence
    source: str
    reason: str
    since: datetime


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

    @classmethod
    def unset(cls, uid: str, *, pending: bool = False, name: str = "",
              voicemail: int | None = None) -> PresenceView:
        """A user nothing was ever decided for."""
        return cls(uid, NOT_SET, "default", "", None, pending, name=name, voicemail=voicemail)
