"""Every kind of value astpresence keeps in Asterisk, in one table.

A row says, for one kind: its name (its tracker's, its failures' label in
status and metrics), the value Asterisk holds before anything is written,
which writes a user's wanted presence asks for, how a write is keyed and
valued for its tracker (writes.py states the tracker's rules: own echoes,
retries, what a lost link or a login resets), how it is sent, what the log
calls it, and whether a successful action confirms the value (else its echo
does). A new kind is one row and one send function; the outbox and the
bridge's writer go through the table and name no kind.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Hashable, Iterable
from dataclasses import dataclass
from typing import Any, Generic, NamedTuple, Protocol, TypeVar

from astpresence.asterisk.ami.client import ActionError, ActionTimeout, AMIClient
from astpresence.asterisk import call_codec
from astpresence.asterisk.ari import AriClient, AriError
from astpresence.asterisk.codec import encode_presence_value
from astpresence.asterisk.queues import QueueMembers
from astpresence.asterisk.writes import (
    CallRuleWrite,
    DndWrite,
    MirrorWrite,
    PauseWrite,
    PresenceWrite,
    WriteTracker,
)
from astpresence.domain import mirror
from astpresence.domain import behaviours
from astpresence.domain.model import NOT_SET, InvalidInput, Presence, State
from astpresence.domain.rules import RuleConfig
from astpresence.engine.calls import CallHandling
from astpresence.engine.metrics import Metrics
from astpresence.engine.users import UserDirectory

logger = logging.getLogger(__name__)

#: What Asterisk answers a DBDel of a key that is not there: main/db.c says "could
#: not be deleted" (seen on Asterisk 22); older fakes and forks say "not found".
ABSENT = ("could not be deleted", "not found")

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")
W = TypeVar("W")

#: What Asterisk answers when it refuses a write (it is retried with backoff);
#: anything else (a lost link) is left to the resync after the next login.
REFUSALS = (ActionError, ActionTimeout, AriError, InvalidInput, ValueError)


class Target(NamedTuple):
    """What a user should have in Asterisk: the effective presence (PRESENCE_STATE)
    and the chosen one (what the mirror, queue pauses and FreePBX DND follow: a
    call overlays nothing of what the person chose; docs/presence-rules.md)."""

    effective: Presence
    chosen: Presence


class Wanting(Protocol):
    """What the table's ``wanted`` functions read (the outbox of one server)."""

    config: RuleConfig
    users: UserDirectory
    members: QueueMembers
    calls: CallHandling | None

    def tracker(self, kind: str) -> WriteTracker[Any, Any]: ...

    def dnd_device(self, uid: str) -> str | None: ...

    def wants_mirror(self, uid: str) -> bool: ...


@dataclass(frozen=True)
class Link:
    """What a send function may use: the server's AMI session and its neighbours."""

    client: AMIClient
    ari: AriClient | None
    metrics: Metrics
    per_device_dnd: Callable[[str], Iterable[str]]
    log: logging.LoggerAdapter  # type: ignore[type-arg]


@dataclass(frozen=True)
class WriteKind(Generic[K, V, W]):
    name: str
    default: V
    #: (outbox, user, what the user should have) -> the writes it may ask for.
    wanted: Callable[[Wanting, str, Target], Iterable[W]]
    key: Callable[[W], K]
    value: Callable[[W], V]
    #: Sends one write: a coroutine (run as a task), or the future of the one action
    #: it has put in flight (no task: what the hot path's kind does).
    send: Callable[[Link, W], Awaitable[Any]]
    #: The write as the log names it ("writing presence of 2000").
    what: Callable[[W], str]
    #: True: a successful action means Asterisk holds the value (no echo to wait for).
    confirmed_by_success: bool = False
    #: A key's user, for a refused write that is due again (None: the key is gone).
    owner: Callable[[Wanting, K], str | None] = lambda outbox, key: str(key)
    #: Does this server's configuration ask for the kind at all? (An inactive kind is
    #: skipped per change; its tracker still retries what it holds.)
    active: Callable[[Wanting], bool] = lambda outbox: True


# -- presence: PRESENCE_STATE(CustomPresence:<user>) -------------------------------


def _presence_wanted(outbox: Wanting, uid: str, want: Target) -> list[PresenceWrite]:
    return [PresenceWrite(uid, want.effective)]


def _send_presence(link: Link, write: PresenceWrite) -> asyncio.Future[Any]:
    """One Setvar, in flight when this returns: the future, no task (the hot path)."""
    value = encode_presence_value(write.presence)
    started = time.perf_counter()
    # Its answers only confirm it (writes.py): they may wait in the socket (ami/client.py).
    future = link.client.submit("Setvar", (
        ("Variable", f"PRESENCE_STATE(CustomPresence:{write.user})"), ("Value", value)),
        unawaited=True)
    observe = link.metrics.setvar_seconds.observe

    def timed(done: asyncio.Future[Any]) -> None:
        if not done.cancelled() and done.exception() is None:
            observe(time.perf_counter() - started)

    future.add_done_callback(timed)
    return future


# -- the BLF mirror: DEVICE_STATE(Custom:<prefix><user>) ---------------------------


def _mirror_wanted(outbox: Wanting, uid: str, want: Target) -> list[MirrorWrite]:
    cfg = outbox.config
    if not cfg.mirror or uid not in outbox.users or not outbox.wants_mirror(uid):
        return []
    # The phone's own device shows a call: the mirror shows what the person chose
    # (before 0.2, projection = "legacy": the effective presence).
    shown = want.effective if cfg.projection == "legacy" else want.chosen
    return [MirrorWrite(uid, mirror.mirror_device(uid, cfg),
                        mirror.mirror_state(shown.state, cfg))]


async def _send_mirror(link: Link, write: MirrorWrite) -> None:
    if link.ari is not None:
        await link.ari.set_device_state(write.device, write.state)
    else:
        await link.client.send_action("Setvar", {"Variable": f"DEVICE_STATE({write.device})",
                                                 "Value": write.state})


# -- queue pauses: QueuePause of each of the user's members ------------------------


def _pause_wanted(outbox: Wanting, uid: str, target: Target) -> list[PauseWrite]:
    cfg = outbox.config
    if not cfg.queue_pause:
        return []
    out = []
    tracker = outbox.tracker("queue_pause")
    want = target.chosen  # a call is no reason to pause (nor to unpause)
    for member in outbox.members.of(uid):
        paused, reason = tracker.current(member.key)
        action = behaviours.queue_pause_action(want.state, paused, reason, cfg)
        if action is None:
            continue
        paused = action == "pause"
        reason = behaviours.pause_reason(want.state, cfg) if paused else ""
        out.append(PauseWrite(member.queue, member.interface, paused, reason, uid))
    return out


def _pause_owner(outbox: Wanting, key: tuple[str, str]) -> str | None:
    member = outbox.members.get(key)
    return outbox.members.owner(member) if member is not None else None


async def _send_pause(link: Link, write: PauseWrite) -> None:
    headers = {"Interface": write.interface, "Queue": write.queue,
               "Paused": "true" if write.paused else "false"}
    if write.paused:
        headers["Reason"] = write.reason
    await link.client.send_action("QueuePause", headers)
    link.log.info("%s %s in queue %s (%s)", "paused" if write.paused else "unpaused",
                  write.interface, write.queue, write.user)


# -- FreePBX DND: astdb DND/<ext> and the DND devices ------------------------------


def _dnd_wanted(outbox: Wanting, uid: str, want: Target) -> list[DndWrite]:
    device = outbox.dnd_device(uid)
    on = want.chosen.state is State.DND  # a call read as busy switches no FreePBX DND
    return [] if device is None else [DndWrite(uid, device, on)]


async def _send_dnd(link: Link, write: DndWrite) -> None:
    """What FreePBX's *78/*79 do (docs/asterisk.md, "FreePBX conventions"): the
    astdb key ``DND/<ext>`` its routing reads, and the DND device in the hint."""
    client = link.client
    if write.on:
        await client.send_action("DBPut", {"Family": "DND", "Key": write.user, "Val": "YES"})
    else:
        try:
            await client.send_action("DBDel", {"Family": "DND", "Key": write.user})
        except ActionError as exc:
            if not any(text in str(exc).lower() for text in ABSENT):
                raise  # already off in astdb is fine
    # The user's DND device, then FreePBX's per-device ones (Custom:DEVDND<id>).
    for device in (write.device, *link.per_device_dnd(write.user)):
        await client.send_action("Setvar", {"Variable": f"DEVICE_STATE({device})",
                                            "Value": "BUSY" if write.on else "UNAVAILABLE"})
    link.log.info("FreePBX DND of %s switched %s", write.user, "on" if write.on else "off")


# -- call handling: astdb astpresence-calls/<user>/<internal|external> -------------


def _calls_wanted(outbox: Wanting, uid: str, want: Target) -> list[CallRuleWrite]:
    calls = outbox.calls
    if calls is None or not calls.enabled:
        return []
    state = want.chosen.state  # a call is the phone's own busy, seen by Dial
    out = []
    for callers, handling in calls.handling(uid, want.chosen).items():
        try:
            value = call_codec.encode(handling, state, calls.settings)
        except InvalidInput as exc:  # never written; the kit routes by presence
            logger.warning("call handling of %s not written: %s", uid, exc)
            value = ""
        out.append(CallRuleWrite(uid, callers.value, value))
    # The name callers see with the callee's presence ("" = not shown); it changes with
    # the name or the setting, never with presence.
    out.append(CallRuleWrite(uid, call_codec.SHOW, call_codec.shown(calls.display(uid))))
    return out


async def _send_call_rule(link: Link, write: CallRuleWrite) -> None:
    """DBPut of the value, or DBDel when no rule holds (the kit's presence routing)."""
    key = call_codec.key(write.user, write.callers)
    if write.value:
        await link.client.send_action("DBPut", {"Family": call_codec.FAMILY, "Key": key,
                                                "Val": write.value})
        return
    try:
        await link.client.send_action("DBDel", {"Family": call_codec.FAMILY, "Key": key})
    except ActionError as exc:
        if not any(text in str(exc).lower() for text in ABSENT):
            raise  # not there is what was wanted


#: Every kind, in the order a user's writes are sent.
KINDS: tuple[WriteKind[Any, Any, Any], ...] = (
    WriteKind[str, Presence, PresenceWrite](
        "presence", NOT_SET, _presence_wanted, lambda w: w.user, lambda w: w.presence,
        _send_presence, lambda w: f"writing presence of {w.user}"),
    WriteKind[str, str, MirrorWrite](
        "mirror", "", _mirror_wanted, lambda w: w.user, lambda w: w.state, _send_mirror,
        lambda w: f"writing BLF mirror of {w.user} ({w.state})", confirmed_by_success=True,
        active=lambda outbox: outbox.config.mirror),
    WriteKind[tuple[str, str], tuple[bool, str], PauseWrite](
        "queue_pause", (False, ""), _pause_wanted, lambda w: (w.queue, w.interface),
        lambda w: (w.paused, w.reason), _send_pause,
        lambda w: f"{'pausing' if w.paused else 'unpausing'} {w.interface} in queue "
                  f"{w.queue} for {w.user}", owner=_pause_owner,
        active=lambda outbox: outbox.config.queue_pause),
    WriteKind[str, bool, DndWrite](
        "freepbx_dnd", False, _dnd_wanted, lambda w: w.user, lambda w: w.on, _send_dnd,
        lambda w: f"switching FreePBX DND of {w.user} {'on' if w.on else 'off'}"),
    WriteKind[tuple[str, str], str, CallRuleWrite](
        "call_rule", "", _calls_wanted, lambda w: (w.user, w.callers), lambda w: w.value,
        _send_call_rule, lambda w: f"writing call handling of {w.user} ({w.callers} callers)",
        confirmed_by_success=True, owner=lambda outbox, key: key[0],
        active=lambda outbox: outbox.calls is not None and outbox.calls.enabled),
)
KIND_BY_NAME = {kind.name: kind for kind in KINDS}
