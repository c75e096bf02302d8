"""Every user's contributions (manual, timed sources, auto-away) and what they decide.

The records here are what people and the engine put in; :func:`rules.decide`
turns them, with the devices, into one presence. Changes go into the
caller's :class:`~astpresence.store.base.Batch`, so they are stored together
with whatever they caused.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from astpresence.domain import rules
from astpresence.domain.model import InvalidInput
from astpresence.domain.records import SourceRecord
from astpresence.domain.rules import Decision, DeviceView, RuleConfig
from astpresence.store.base import Batch

MANUAL = rules.SOURCE_MANUAL
#: Sources one user may have at once (manual, auto and calendar included): each one
#: is looked at on every decision, so a client must not be able to add thousands.
MAX_SOURCES = 32


class Contributions:
    def __init__(self, config: RuleConfig) -> None:
        self._config = config
        self._by_user: dict[str, dict[str, SourceRecord]] = {}

    def replace(self, records: Iterable[SourceRecord]) -> None:
        """Every contribution anew (what the store holds)."""
        self._by_user = {}
        for rec in records:
            self._by_user.setdefault(rec.user, {})[rec.source] = rec

    def of(self, uid: str) -> list[SourceRecord]:
        return sorted(self._by_user.get(uid, {}).values(), key=lambda r: r.source)

    def get(self, uid: str, name: str) -> SourceRecord | None:
        return self._by_user.get(uid, {}).get(name)

    def check_room(self, uid: str, name: str) -> None:
        """InvalidInput when ``name`` would be one source too many for ``uid``."""
        have = self._by_user.get(uid, {})
        if name not in have and len(have) >= MAX_SOURCES:
            raise InvalidInput(f"user {uid!r} has {len(have)} sources already, the most "
                               f"there may be; delete one first")

    def put(self, rec: SourceRecord, batch: Batch) -> None:
        self._by_user.setdefault(rec.user, {})[rec.source] = rec
        batch.put_sources.append(rec)

    def drop(self, uid: str, name: str, batch: Batch) -> None:
        if self._by_user.get(uid, {}).pop(name, None) is not None:
            batch.delete_sources.append((uid, name))

    def expire(self, uid: str, now: datetime, batch: Batch) -> None:
        """Nothing stale remains: records whose window is over are deleted."""
        for name, rec in list(self._by_user.get(uid, {}).items()):
            if rules.is_expired(rec, now):
                self.drop(uid, name, batch)

    def _split(self, uid: str) -> tuple[SourceRecord | None, list[SourceRecord],
                                        SourceRecord | None]:
        mine = self._by_user.get(uid, {})
        timed = [r for name, r in mine.items() if name not in rules.RESERVED_SOURCES]
        return mine.get(MANUAL), timed, mine.get(rules.SOURCE_AUTO)

    def decide(self, uid: str, devices: DeviceView, now: datetime) -> Decision:
        manual, timed, auto = self._split(uid)
        return rules.decide(manual, timed, devices, auto, now, self._config)

    def next_change(self, uid: str, devices: DeviceView, now: datetime) -> datetime | None:
        """When the decision may change by time alone, or a record ends (to delete it)."""
        manual, timed, auto = self._split(uid)
        when = rules.next_change_at(manual, timed, devices, auto, now, self._config)
        ends = [r.end for r in self._by_user.get(uid, {}).values()
                if r.end is not None and r.end > now]
        if ends:
            when = min(ends) if when is None else min(when, *ends)
        return when
