"""Teams presence <-> astpresence presence, as tables and small pure helpers (no I/O).

Graph's presence has an ``availability`` (Available, AvailableIdle, Away,
BeRightBack, Busy, BusyIdle, DoNotDisturb, Offline, PresenceUnknown) and an
``activity`` that says more (InACall, InAMeeting, Presenting, OffWork, ...).
Teams -> astpresence looks the activity up first, then the availability; the
astpresence subtype is the activity in words (``InAMeeting`` -> ``in-a-meeting``).
astpresence -> Teams sets a *preferred presence*, one of the six pairs Graph
accepts for ``setUserPreferredPresence``, or clears it.

What Graph shows is an aggregate: the user's preferred presence when one is
set, else the "busiest" of the presence sessions (DoNotDisturb > Busy >
Available > Away). :func:`is_echo` says when a reported presence is just what
astpresence itself set coming back.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from astpresence.domain.model import InvalidInput, Presence, State, normalise_text

AVAILABILITIES: Final = ("Available", "AvailableIdle", "Away", "BeRightBack", "Busy",
                         "BusyIdle", "DoNotDisturb", "Offline", "PresenceUnknown")
ACTIVITIES: Final = ("Available", "Away", "BeRightBack", "Busy", "DoNotDisturb", "InACall",
                     "InAConferenceCall", "Inactive", "InAMeeting", "Offline", "OffWork",
                     "OutOfOffice", "PresenceUnknown", "Presenting", "UrgentInterruptionsOnly",
                     "Focusing")
#: A Teams word mapped to nothing: Teams says nothing astpresence should adopt.
NONE: Final = "none"

#: Teams activity or availability -> astpresence state (or :data:`NONE`). The busy
#: meaning is dnd, as for a call on the desk phone (docs/presence-rules.md).
#: "Available" adds nothing: what the person chose (and its message) or
#: "registered" applies, so Teams' green never covers a message set on the phone.
#: A Teams client that is closed ("Offline") says nothing about the desk phone.
DEFAULT_FROM_TEAMS: Final[Mapping[str, str]] = {
    "DoNotDisturb": "dnd", "Presenting": "dnd", "Focusing": "dnd",
    "UrgentInterruptionsOnly": "dnd",
    "Busy": "dnd", "BusyIdle": "dnd", "InAMeeting": "dnd", "InAConferenceCall": "dnd",
    "InACall": "dnd",
    "Away": "away", "BeRightBack": "away", "Inactive": "away",
    "OffWork": "xa", "OutOfOffice": "xa",
    "Available": NONE, "AvailableIdle": "away",
    "Offline": NONE, "PresenceUnknown": NONE,
}

#: The pairs ``setUserPreferredPresence`` accepts: availability -> its activity.
PREFERRED: Final[Mapping[str, str]] = {
    "Available": "Available", "Busy": "Busy", "DoNotDisturb": "DoNotDisturb",
    "BeRightBack": "BeRightBack", "Away": "Away", "Offline": "OffWork",
}
#: astpresence state -> the preferred availability Teams gets, or "clear".
CLEAR: Final = "clear"
DEFAULT_TO_TEAMS: Final[Mapping[str, str]] = {
    "dnd": "DoNotDisturb", "away": "Away", "xa": "Away", "unavailable": "Offline",
    "available": CLEAR, "chat": CLEAR, "not_set": CLEAR,
}
#: What the app's presence session shows while the person is on an Asterisk call.
CALL_SESSION: Final = ("Busy", "InACall")

_WORD = re.compile(r"(?<=[a-z])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")


def words(name: str) -> str:
    """``InAMeeting`` -> ``in-a-meeting``: a Teams word as an astpresence subtype."""
    return _WORD.sub("-", name).lower()


@dataclass(frozen=True, slots=True)
class TeamsPresence:
    """What Graph reports of one user (already checked: known words, plain text)."""

    availability: str
    activity: str
    message: str = ""

    def pair(self) -> tuple[str, str]:
        return self.availability, self.activity


def parse_presence(item: object) -> tuple[str, TeamsPresence]:
    """One ``presence`` object of a Graph answer -> (object id, presence); InvalidInput
    when it is not one. Unknown words read as PresenceUnknown (Graph adds words)."""
    if not isinstance(item, dict):
        raise InvalidInput("a presence is not an object")
    oid = item.get("id")
    if not isinstance(oid, str) or not 0 < len(oid) <= 64 or not oid.isprintable():
        raise InvalidInput("a presence without a usable id")
    availability = _known(item.get("availability"), AVAILABILITIES)
    activity = _known(item.get("activity"), ACTIVITIES)
    return oid, TeamsPresence(availability, activity, _status_message(item))


def _known(word: object, known: tuple[str, ...]) -> str:
    return word if isinstance(word, str) and word in known else "PresenceUnknown"


_TAG = re.compile(r"<[^>]{0,500}>")


def _status_message(item: dict[str, object]) -> str:
    """The status message's text (HTML tags dropped), fit for Asterisk: control
    characters out, at most 255 bytes."""
    status = item.get("statusMessage")
    if not isinstance(status, dict):
        return ""
    message = status.get("message")
    if not isinstance(message, dict) or not isinstance(message.get("content"), str):
        return ""
    text = str(message["content"])[:4096]
    if str(message.get("contentType", "text")).lower() == "html":
        text = _TAG.sub(" ", text)
    return " ".join(normalise_text(" ".join(text.split())).split())


def from_teams(reported: TeamsPresence, table: Mapping[str, str]) -> Presence | None:
    """The astpresence presence Teams' report gives (None: nothing to adopt)."""
    state = table.get(reported.activity) or table.get(reported.availability) or NONE
    if state == NONE:
        return None
    subtype = words(reported.activity) if reported.activity != "PresenceUnknown" else ""
    if state == "available" and subtype == "available":
        subtype = ""
    return Presence(State(state), subtype, reported.message)


def to_teams(state: State, table: Mapping[str, str]) -> tuple[str, str] | None:
    """The preferred presence a chosen state gives in Teams (None: clear it)."""
    availability = table.get(state.value, CLEAR)
    return None if availability == CLEAR else (availability, PREFERRED[availability])


def is_echo(reported: TeamsPresence, preferred: tuple[str, str] | None,
            in_call_session: bool) -> bool:
    """Is ``reported`` what astpresence's own writes make Teams show? A preferred
    presence astpresence set shows as itself; with none, its call session shows as
    Busy/InACall unless a busier session (DoNotDisturb) wins the aggregate."""
    if preferred is not None:
        return reported.pair() == preferred
    return in_call_session and reported.pair() == CALL_SESSION


def parse_from_table(raw: object, where: str) -> dict[str, str]:
    """``[teams.from_teams]``: Teams word -> astpresence state or "none", over the
    defaults."""
    table = dict(DEFAULT_FROM_TEAMS)
    for key, value in _table(raw, where).items():
        if key not in AVAILABILITIES and key not in ACTIVITIES:
            raise InvalidInput(f"{where}: {key[:40]!r} is not a Teams availability or activity")
        if value != NONE and value not in {s.value for s in State}:
            raise InvalidInput(f"{where}.{key}: expected an astpresence state or "
                               f"\"{NONE}\", got {value[:40]!r}")
        table[key] = value
    return table


def parse_to_table(raw: object, where: str) -> dict[str, str]:
    """``[teams.to_teams]``: astpresence state -> a preferred availability or "clear"."""
    table = dict(DEFAULT_TO_TEAMS)
    for key, value in _table(raw, where).items():
        if key not in {s.value for s in State}:
            raise InvalidInput(f"{where}: {key[:40]!r} is not an astpresence state")
        if value != CLEAR and value not in PREFERRED:
            raise InvalidInput(f"{where}.{key}: expected one of {', '.join(PREFERRED)} or "
                               f"\"{CLEAR}\", got {value[:40]!r}")
        table[key] = value
    return table


def _table(raw: object, where: str) -> dict[str, str]:
    if raw is None:
        return {}
    if not isinstance(raw, Mapping) or not all(isinstance(v, str) for v in raw.values()):
        raise InvalidInput(f"{where}: expected a table of strings")
    return {str(k): str(v) for k, v in raw.items()}
