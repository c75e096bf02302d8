"""A source keeping its one contribution per person in line with what it wants.

Calendars and sessions (sources/) each compute the record a person should have
from them now; :func:`align` brings the engine there: deletes the source's own
record when it wants none (one another actor set under its name is left alone),
sets the wanted one when it differs in what ``same`` compares.
"""

from __future__ import annotations

from collections.abc import Callable

from astpresence.domain.records import SourceRecord
from astpresence.engine.service import PresenceService


async def align(service: PresenceService, uid: str, name: str, want: SourceRecord | None,
                same: Callable[[SourceRecord, SourceRecord], bool]) -> SourceRecord | None:
    """Bring ``uid``'s ``name`` contribution to ``want``; returns what was there."""
    have = service.contributions.get(uid, name)
    if want is None:
        if have is not None and have.actor == name:
            await service.delete_source(uid, name, name)
    elif have is None or not same(have, want):
        await service.set_source(want)
    return have
