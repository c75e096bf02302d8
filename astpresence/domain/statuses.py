"""The catalogue of named statuses: "Lunch" -> away + "At lunch" for an hour, ...

One list in the config (``[[statuses]]``) feeds the API (``GET /v1/statuses``,
``"status": "lunch"`` in a presence body), the board's picker, the CLI
(``astpresence set 2000 --status lunch``) and the dialplan kit's ``*37N``
presets (a status with a ``digit``). A presence adopted from Asterisk that
matches a status (a preset code) takes that status's duration, so feature
codes can expire too. Also: the one grammar of a duration (``90``, ``15m``,
``2h``, ``1d``).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from astpresence.domain.model import InvalidInput, Presence, State, check_label, parse_presence

#: A status id: what the API, the CLI and the board name it by.
STATUS_ID = re.compile(r"[a-z0-9][a-z0-9_-]{0,31}")
#: A duration, at most (also what the API allows for an expiry).
MAX_DURATION = timedelta(days=366)
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(raw: object, what: str = "duration") -> timedelta:
    """Seconds as a number, or ``90s``, ``15m``, ``2h``, ``1d``: more than 0, at most
    366 days; InvalidInput naming ``what`` otherwise."""
    seconds: float
    if isinstance(raw, (int, float)) and not isinstance(raw, bool):
        seconds = float(raw)
    elif isinstance(raw, str):
        text = raw.strip().lower()
        unit = _UNITS.get(text[-1:], 1)
        if text[-1:] in _UNITS:
            text = text[:-1]
        try:
            seconds = float(text) * unit
        except ValueError:
            raise InvalidInput(f"{what}: invalid duration {raw[:40]!r}: use e.g. 90s, 15m, 2h "
                               "or 1d") from None
    else:
        raise InvalidInput(f"{what}: expected a duration (seconds, or e.g. 15m, 2h, 1d)")
    if not math.isfinite(seconds) or not 0 < seconds <= MAX_DURATION.total_seconds():
        raise InvalidInput(f"{what}: a duration must be more than 0 and at most 366 days")
    return timedelta(seconds=seconds)


@dataclass(frozen=True)
class Status:
    """One named status of the catalogue."""

    id: str
    label: str
    presence: Presence
    #: How long it lasts once chosen (None: until changed).
    duration: timedelta | None = None
    #: The N of the dialplan kit's ``*37N`` preset code (None: no code).
    digit: int | None = None

    def json(self) -> dict[str, Any]:
        return {"id": self.id, "label": self.label, **self.presence.as_dict(),
                "duration": self.duration.total_seconds() if self.duration else None,
                "digit": self.digit}


_KEYS = {"id", "label", "state", "subtype", "message", "for", "digit"}


def parse_status(table: Mapping[str, Any], where: str) -> Status:
    """One ``[[statuses]]`` table; InvalidInput naming the entry and the key."""
    unknown = sorted(set(table) - _KEYS)
    if unknown:
        raise InvalidInput(f"{where}: unknown key(s) {', '.join(unknown)} (known: "
                           f"{', '.join(sorted(_KEYS))})")
    sid = table.get("id")
    if not isinstance(sid, str) or not STATUS_ID.fullmatch(sid):
        raise InvalidInput(f"{where}.id: lowercase letters, digits, '-' and '_', at most 32, "
                           f"got {sid!r}")
    if "state" not in table:
        raise InvalidInput(f"{where}: missing 'state'")
    try:
        presence = parse_presence(table["state"], table.get("subtype"), table.get("message"))
        label = check_label(table.get("label", sid))
    except InvalidInput as exc:
        raise InvalidInput(f"{where}: {exc}") from None
    if presence.state is State.NOT_SET:
        raise InvalidInput(f"{where}.state: a status cannot be not_set (that clears)")
    duration = parse_duration(table["for"], f"{where}.for") if "for" in table else None
    digit = table.get("digit")
    if digit is not None and (isinstance(digit, bool) or not isinstance(digit, int)
                              or not 0 <= digit <= 9):
        raise InvalidInput(f"{where}.digit: 0-9 (the N of *37N), got {digit!r}")
    return Status(sid, label, presence, duration, digit)


def check_catalogue(statuses: Iterable[Status], where: str) -> tuple[Status, ...]:
    """Ids and digits used once each."""
    out: list[Status] = []
    for status in statuses:
        for other in out:
            if other.id == status.id:
                raise InvalidInput(f"{where}: status {status.id!r} is defined twice")
            if status.digit is not None and other.digit == status.digit:
                raise InvalidInput(f"{where}: digit {status.digit} is used by {other.id!r} and "
                                   f"{status.id!r}")
        out.append(status)
    return tuple(out)


def find(statuses: Iterable[Status], sid: str) -> Status:
    for status in statuses:
        if status.id == sid:
            return status
    raise InvalidInput(f"unknown status {sid[:40]!r}")


def matching(statuses: Iterable[Status], presence: Presence) -> Status | None:
    """The status whose presence this is (a preset code's write), if one is."""
    for status in statuses:
        if status.presence == presence:
            return status
    return None
