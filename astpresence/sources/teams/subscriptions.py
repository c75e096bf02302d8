"""Change notifications for Teams presence: Graph subscriptions on
``/communications/presences?$filter=id in (...)``, 650 ids each.

A subscription lives at most an hour: each is made for :data:`LIFETIME` and
renewed :data:`RENEW_BEFORE` ahead, spread a few seconds apart so a thousand
renewals never land at once. A renewal that finds it gone (404) makes it
again, and so do the lifecycle events ``subscriptionRemoved`` and
``reauthorizationRequired``; ``missed`` asks for a full read. While any group
of ids has no live subscription, the source polls (source.py).

Every notification must carry this run's ``clientState`` (a random secret,
never shown) and a known subscription id, or it is ignored.
"""

from __future__ import annotations

import hmac
import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from astpresence.engine.timers import BACKOFF
from astpresence.sources.msgraph import RemoteError
from astpresence.sources.teams.graph import BATCH, Missing, TeamsGraph

logger = logging.getLogger(__name__)

LIFETIME = timedelta(minutes=55)
RENEW_BEFORE = timedelta(minutes=10)
#: Renewals of successive subscriptions this far apart.
SPREAD = timedelta(seconds=5)


@dataclass
class Subscription:
    id: str
    ids: tuple[str, ...]
    expires: datetime


class Subscriptions:
    def __init__(self, graph: TeamsGraph, url: str, clock: Callable[[], datetime]) -> None:
        self.graph = graph
        self.url = url
        self._clock = clock
        self.client_state = secrets.token_urlsafe(24)
        self.groups: list[tuple[str, ...]] = []
        self.live: dict[int, Subscription] = {}
        self._retry_at: dict[int, datetime] = {}
        self._failures: dict[int, int] = {}  # a group's failures in a row (the backoff)
        self._stale: list[str] = []  # subscriptions of groups that changed: to delete
        self.error = ""
        self.last_notification: datetime | None = None
        self.notifications = 0
        self.refused = 0
        self.renewals = 0

    def watch(self, ids: list[str]) -> None:
        """The ids to be told about, in groups of 650 (a changed group is made anew)."""
        groups = [tuple(ids[i:i + BATCH]) for i in range(0, len(ids), BATCH)]
        for index, sub in list(self.live.items()):
            if index >= len(groups) or sub.ids != groups[index]:
                self._stale.append(self.live.pop(index).id)  # deleted at the next tick
        self.groups = groups

    @property
    def alive(self) -> bool:
        """Every id is covered by a subscription that has not run out."""
        now = self._clock()
        return bool(self.url) and bool(self.groups) and all(
            i in self.live and self.live[i].expires > now for i in range(len(self.groups)))

    def next_due(self) -> datetime | None:
        times = [max(self._renew_at(i, s), self._retry_at.get(i, s.expires - LIFETIME))
                 for i, s in self.live.items()]
        times += [t for i, t in self._retry_at.items() if i not in self.live]
        return min(times, default=None)

    def _renew_at(self, index: int, sub: Subscription) -> datetime:
        return sub.expires - RENEW_BEFORE - SPREAD * (index % 60)

    async def tick(self) -> None:
        """Make what is missing and renew what is due."""
        while self._stale:
            try:
                await self.graph.unsubscribe(self._stale.pop())
            except RemoteError:
                pass  # it runs out within the hour; its notifications are refused
        now = self._clock()
        for index, ids in enumerate(self.groups):
            if self._retry_at.get(index, now) > now:
                continue  # failed a moment ago: its backoff first
            sub = self.live.get(index)
            if sub is None:
                await self._create(index, ids)
            elif now >= self._renew_at(index, sub):
                await self._renew(index, sub)

    async def _create(self, index: int, ids: tuple[str, ...]) -> None:
        expires = self._clock() + LIFETIME
        try:
            answer = await self.graph.subscribe(list(ids), self.url, self.client_state, expires)
        except RemoteError as exc:
            self._failed(index, f"subscribing failed: {exc}")
            return
        sid = answer.get("id")
        if not isinstance(sid, str) or not sid or len(sid) > 100:
            self._failed(index, "subscribing failed: Graph answered without an id")
            return
        self.live[index] = Subscription(sid, ids, _expiry(answer, expires))
        self._retry_at.pop(index, None)
        self._failures.pop(index, None)
        self.error = ""
        logger.info("teams: subscribed to the presence of %d people (until %s)", len(ids),
                    self.live[index].expires.isoformat(timespec="seconds"))

    async def _renew(self, index: int, sub: Subscription) -> None:
        expires = self._clock() + LIFETIME
        try:
            answer = await self.graph.renew(sub.id, expires)
        except Missing:
            logger.info("teams: a subscription was gone at renewal; making it again")
            del self.live[index]
            await self._create(index, sub.ids)
            return
        except RemoteError as exc:
            self._failed(index, f"renewing failed: {exc}")
            return
        sub.expires = _expiry(answer, expires)
        self.renewals += 1
        self._retry_at.pop(index, None)
        self._failures.pop(index, None)

    def _failed(self, index: int, error: str) -> None:
        """Try again after 1, 2, 4, ... 32 s (a renewal: while the subscription lasts)."""
        failures = self._failures[index] = self._failures.get(index, 0) + 1
        wait = BACKOFF[min(failures, len(BACKOFF)) - 1]
        self._retry_at[index] = self._clock() + timedelta(seconds=wait)
        self.error = error
        logger.warning("teams: %s (again in %g s; polling meanwhile)", error, wait)

    def known(self, item: dict[str, Any]) -> bool:
        """Is this notification ours (this run's clientState, a live subscription)?"""
        state = item.get("clientState")
        sid = item.get("subscriptionId")
        ok = (isinstance(state, str) and hmac.compare_digest(state.encode(),
                                                             self.client_state.encode())
              and any(s.id == sid for s in self.live.values()))
        if ok:
            self.notifications += 1
            self.last_notification = self._clock()
        else:
            self.refused += 1
        return ok

    async def lifecycle(self, event: str, sid: str) -> bool:
        """A lifecycle event; True when a full read should follow (``missed``, or a
        subscription lost)."""
        index = next((i for i, s in self.live.items() if s.id == sid), None)
        if index is None:
            return False
        if event == "reauthorizationRequired":
            await self._renew(index, self.live[index])
            return False
        if event == "subscriptionRemoved":
            ids = self.live.pop(index).ids
            await self._create(index, ids)
        return event in ("subscriptionRemoved", "missed")

    async def close(self) -> None:
        """Delete ours (a new leader makes its own, with its own clientState)."""
        for sub in list(self.live.values()):
            try:
                await self.graph.unsubscribe(sub.id)
            except RemoteError:
                pass
        self.live.clear()

    def status_json(self) -> dict[str, Any]:
        return {"notification_url": bool(self.url), "subscriptions": len(self.live),
                "subscriptions_needed": len(self.groups) if self.url else 0,
                "notifications": self.notifications, "notifications_refused": self.refused,
                "renewals": self.renewals,
                "last_notification": (self.last_notification.isoformat()
                                      if self.last_notification else None),
                "next_expiry": (min(s.expires for s in self.live.values()).isoformat()
                                if self.live else None),
                "error": self.error}


def _expiry(answer: dict[str, Any], asked: datetime) -> datetime:
    """The expiry Graph granted (it may cut what was asked), else what was asked."""
    raw = answer.get("expirationDateTime")
    if isinstance(raw, str):
        try:
            granted = datetime.fromisoformat(raw.replace("Z", "+00:00"))
            if granted.tzinfo is not None:
                return min(granted, asked)
        except ValueError:
            pass
    return asked
