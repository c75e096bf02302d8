"""astpresence -> Teams: each mapped person's Teams presence kept in line with what
astpresence knows, as Graph's own mechanisms allow.

- An Asterisk call: the app's presence session (``setPresence``, session id =
  the app's client id) shows Busy/InACall, renewed at half its
  ``expirationDuration`` and cleared (``clearPresence``) when the call ends, so
  Teams falls back to its own aggregate.
- A state the person chose (the ``manual`` source: a feature code, the kit, the
  API, the CLI): their preferred presence (``setUserPreferredPresence``, with
  the choice's end as its expiry), cleared when they leave it; the chosen
  message as their status message.
- What Teams itself gave (the ``teams`` source), a calendar entry or a
  session's idle are never sent: Teams has them already, and sending them
  back is how two systems start a ping-pong.

What astpresence holds in Teams is kept in the store (meta ``teams/<user>``), so
a new leader clears what an earlier one set. Writes are coalesced per person:
a person marked again while a write is under way is looked at once more after.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from astpresence.domain.device_rules import in_call
from astpresence.domain.rule_names import RULE_AUTO, RULE_TIMED_PREFIX, SOURCE_MANUAL
from astpresence.domain.rules import in_window
from astpresence.engine.service import PresenceService
from astpresence.engine.timers import DueTimes, woken_within
from astpresence.sources.msgraph import RemoteError
from astpresence.sources.teams.directory import TeamsDirectory
from astpresence.sources.teams.graph import TeamsGraph
from astpresence.sources.teams.mapping import CALL_SESSION, TeamsPresence, is_echo, to_teams
from astpresence.sources.teams.settings import TeamsSettings
from astpresence.store.base import Batch

logger = logging.getLogger(__name__)

META = "teams/"
#: Writers at once (each person is written by one of them at a time).
WORKERS = 8
#: A failed write is tried again this much later.
RETRY = timedelta(seconds=30)


@dataclass(frozen=True, slots=True)
class Held:
    """What astpresence has set in Teams for one person."""

    preferred: tuple[str, str] | None = None
    preferred_end: datetime | None = None
    message: str | None = None  # None: astpresence set no status message
    call_until: datetime | None = None  # the call session runs out then (None: none)

    def json(self) -> str:
        return json.dumps({"preferred": list(self.preferred) if self.preferred else None,
                           "preferred_end": _iso(self.preferred_end), "message": self.message,
                           "call_until": _iso(self.call_until)})

    @classmethod
    def parse(cls, text: str) -> Held:
        try:
            data = json.loads(text)
            pair = data.get("preferred")
            message = data.get("message")
            preferred = (str(pair[0]), str(pair[1])) \
                if isinstance(pair, list) and len(pair) == 2 else None
            return cls(preferred, _when(data.get("preferred_end")),
                       message if isinstance(message, str) else None,
                       _when(data.get("call_until")))
        except (ValueError, AttributeError, TypeError):
            return cls()


@dataclass(frozen=True, slots=True)
class Want:
    preferred: tuple[str, str] | None
    preferred_end: datetime | None
    message: str
    message_end: datetime | None
    call: bool


class Outbound:
    def __init__(self, settings: TeamsSettings, service: PresenceService, graph: TeamsGraph,
                 directory: TeamsDirectory, *, clock: Callable[[], datetime],
                 cleared: Callable[[str], None]) -> None:
        self.settings = settings
        self.service = service
        self.graph = graph
        self.directory = directory
        self._clock = clock
        self._cleared = cleared  # read this person's Teams presence again soon
        self.held: dict[str, Held] = {}
        self._inflight: dict[str, Held] = {}
        self._dirty: dict[str, None] = {}
        self._ready = asyncio.Event()
        self._due = DueTimes()  # renewals and retries
        self._due_wake = asyncio.Event()
        self.writes = 0
        self.failures = 0

    async def load(self) -> None:
        for key, text in (await self.service.load_meta(META)).items():
            self.held[key[len(META):]] = Held.parse(text)

    def mark(self, uid: str) -> None:
        if uid in self.directory.refs:
            self._dirty[uid] = None
            self._ready.set()

    def mark_all(self) -> None:
        for uid in self.directory.refs:
            self.mark(uid)

    def echo(self, uid: str, reported: TeamsPresence) -> bool:
        """Is this report just astpresence's own writes (done or under way) coming back?"""
        now = self._clock()
        for held in (self.held.get(uid), self._inflight.get(uid)):
            if held is not None and is_echo(reported, held.preferred,
                                            held.call_until is not None and held.call_until > now):
                return True
        return False

    # -- what the person should show --------------------------------------------

    def want(self, uid: str, now: datetime) -> Want:
        service = self.service
        view = service.view(uid)
        call = in_call(service.device_view(uid), service.rules)
        manual = service.contributions.get(uid, SOURCE_MANUAL)
        chosen = view.chosen or view.presence
        mine = (manual is not None and in_window(manual, now)
                and (chosen.state, chosen.subtype) == (manual.presence.state,
                                                       manual.presence.subtype)
                and not view.rule.startswith(RULE_TIMED_PREFIX) and view.rule != RULE_AUTO)
        if not mine or manual is None:
            return Want(None, None, "", None, call)
        return Want(to_teams(chosen.state, self.settings.to_teams), manual.end, chosen.message,
                    manual.message_end or manual.end, call)

    # -- writing ----------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(self._timer(stop))
            for _ in range(WORKERS):
                tasks.create_task(self._worker(stop))

    async def _worker(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            uid = next((u for u in self._dirty if u not in self._inflight), None)
            if uid is None:
                self._ready.clear()
                await woken_within(self._ready, stop, 60.0)
                continue
            del self._dirty[uid]
            try:
                await self.sync(uid)
            except Exception:  # one person's trouble stops nobody else's writes
                logger.exception("teams: writing %s's presence failed", uid)
                self._later(uid, self._clock() + RETRY)

    async def _timer(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            for uid in self._due.pop_due(self._clock()):
                self.mark(uid)
            nxt = self._due.next()
            wait = 60.0 if nxt is None else min(60.0, (nxt - self._clock()).total_seconds())
            self._due_wake.clear()
            await woken_within(self._due_wake, stop, max(wait, 0.0))

    def _later(self, uid: str, when: datetime) -> None:
        if self._due.set(uid, when):
            self._due_wake.set()

    async def sync(self, uid: str) -> None:
        """Bring ``uid``'s Teams presence in line with :meth:`want` (a few requests at
        most; none when nothing differs)."""
        oid = self.directory.oid(uid)
        if oid is None or uid not in self.service.users:
            return
        now = self._clock()
        want, held = self.want(uid, now), self.held.get(uid, Held())
        target = self._target(want, held, now)
        if target == held:
            self._schedule(uid, held)
            return
        self._inflight[uid] = target
        progress = [held]  # what is done so far, step by step
        failed = False
        try:
            await self._write(oid, want, target, now, progress)
        except RemoteError as exc:
            failed = True
            self.failures += 1
            logger.warning("teams: writing %s's presence failed: %s (again in %d s)", uid, exc,
                           RETRY.total_seconds())
        finally:
            del self._inflight[uid]
            done = progress[0]
            if done != held:
                self.held[uid] = done
                await self.service.commit(Batch(meta={META + uid: done.json()}))
        if done.preferred is None and held.preferred is not None \
                or done.call_until is None and held.call_until is not None:
            self._cleared(uid)  # what Teams shows now without astpresence's part
        if failed:
            self._later(uid, now + RETRY)  # not sooner, even when a renewal is overdue
        else:
            self._schedule(uid, done)

    def _target(self, want: Want, held: Held, now: datetime) -> Held:
        seconds = self.settings.call_session
        call_until = held.call_until
        if want.call and (call_until is None or now >= call_until - timedelta(seconds=seconds / 2)):
            call_until = now + timedelta(seconds=seconds)
        elif not want.call:
            call_until = None
        message = held.message
        if want.message != (held.message or "") and not (held.message is None and not want.message):
            message = want.message or None
        return Held(want.preferred, want.preferred_end if want.preferred else None, message,
                    call_until)

    async def _write(self, oid: str, want: Want, target: Held, now: datetime,
                     progress: list[Held]) -> None:
        """The requests from ``progress[0]`` (what is held) to ``target``; each done
        step is in ``progress[0]`` at once (a later step may fail)."""
        graph, held = self.graph, progress[0]
        session = self.settings.client_id
        if target.call_until != held.call_until:
            if target.call_until is not None:
                await graph.set_presence(oid, session, CALL_SESSION, self.settings.call_session)
            elif held.call_until is not None and held.call_until > now:
                await graph.clear_presence(oid, session)
            progress[0] = replace(progress[0], call_until=target.call_until)
            self.writes += 1
        if (target.preferred, target.preferred_end) != (held.preferred, held.preferred_end):
            if target.preferred is None:
                await graph.clear_preferred(oid)
            else:
                await graph.set_preferred(oid, target.preferred,
                                          _seconds(target.preferred_end, now))
            progress[0] = replace(progress[0], preferred=target.preferred,
                                  preferred_end=target.preferred_end)
            self.writes += 1
        if target.message != held.message:
            until = want.message_end if target.message else None
            await graph.set_status_message(oid, target.message or "", until)
            progress[0] = replace(progress[0], message=target.message)
            self.writes += 1

    def _schedule(self, uid: str, held: Held) -> None:
        if held.call_until is not None:
            self._later(uid, held.call_until - timedelta(seconds=self.settings.call_session / 2))

    def status_json(self) -> dict[str, Any]:
        now = self._clock()
        return {"calls_shown": sum(1 for h in self.held.values()
                                   if h.call_until is not None and h.call_until > now),
                "preferred_set": sum(1 for h in self.held.values() if h.preferred is not None),
                "writes": self.writes, "write_failures": self.failures,
                "waiting": len(self._dirty)}


def _seconds(end: datetime | None, now: datetime) -> float | None:
    if end is None:
        return None
    return max((end - now).total_seconds(), 60.0)


def _iso(when: datetime | None) -> str | None:
    return when.isoformat() if when is not None else None


def _when(raw: object) -> datetime | None:
    if not isinstance(raw, str):
        return None
    try:
        return datetime.fromisoformat(raw)
    except ValueError:
        return None
