"""Asking Asterisk without changing anything: answers kept as plain values, the
events seen after login, and the probes a check needs.
"""

from __future__ import annotations

import logging

from collections.abc import Mapping
from dataclasses import dataclass, field

from astpresence.asterisk.ami.client import ActionError, AMIClient
from astpresence.asterisk.ami.frames import Message
from astpresence.app.settings import Config

from astpresence.cli.checks import Check, PERMISSION_DENIED, UNKNOWN_COMMAND
from astpresence.cli.permissions import parse_manager_show_user, privilege_classes
from astpresence.cli.hints import AmpuserProbe, HintEntry

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Reply:
    ok: bool
    message: str = ""  # the Message header of an error answer
    frame: Message | None = None

    @property
    def denied(self) -> bool:
        return not self.ok and self.message == PERMISSION_DENIED

    @property
    def unknown_action(self) -> bool:
        return not self.ok and self.message.startswith(UNKNOWN_COMMAND)

    @property
    def answered(self) -> bool:
        """Asterisk ran the action's handler (it answered, and not with a refusal)."""
        return self.frame is not None and not self.denied and not self.unknown_action


async def _ask(client: AMIClient, action: str, headers: Mapping[str, str] | None = None) -> _Reply:
    """One action; an AMI error answer becomes a :class:`_Reply`.

    A lost link or a timeout is not caught: Asterisk runs one session's
    actions one after the other, so once one goes unanswered every later
    probe would wait its full timeout too.
    """
    try:
        return _Reply(True, "", await client.send_action(action, headers or {}))
    except ActionError as exc:
        return _Reply(False, exc.response.get("Message") or "", exc.response)


async def _ask_list(client: AMIClient, action: str) -> tuple[_Reply, list[Message]]:
    try:
        return _Reply(True), await client.send_list_action(action)
    except ActionError as exc:
        return _Reply(False, exc.response.get("Message") or "", exc.response), []


@dataclass
class _Events:
    """Classes of the events received during the run: evidence for read=."""

    classes: set[str] = field(default_factory=set)
    fully_booted: bool = False

    def __call__(self, event: Message) -> None:
        self.classes |= privilege_classes(event.get("Privilege"))
        if event.event == "FullyBooted":
            self.fully_booted = True


@dataclass
class _Probes:
    """What the run learned; turned into checks at the end."""

    write: dict[str, tuple[bool, str]] = field(default_factory=dict)
    shown: tuple[frozenset[str], frozenset[str]] | None = None
    queue_pause: _Reply | None = None
    modules: Check | None = None
    hints: list[HintEntry] | None = None
    hints_reply: _Reply | None = None  # the failed ExtensionStateList, if it failed
    ampuser: AmpuserProbe = AmpuserProbe()


async def _probe_write(client: AMIClient, config: Config, probes: _Probes) -> None:
    # Setvar without Variable: the permission check comes first (write=call),
    # then action_setvar() answers "No variable specified" and returns.
    reply = await _ask(client, "Setvar")
    if reply.denied or reply.answered:
        probes.write["call"] = (not reply.denied, "Setvar without a variable")
    if config.rules.queue_pause:
        # QueuePause without Interface/Paused: manager_pause_queue_member()
        # answers "Need 'Interface' and 'Paused' parameters." and pauses nothing.
        reply = probes.queue_pause = await _ask(client, "QueuePause")
        if reply.denied or reply.answered:
            probes.write["agent"] = (not reply.denied, "QueuePause without an interface")
    username = client.username
    if username and not any(c.isspace() for c in username):
        # Read-only CLI command; its output shows the secret as "<Set>" and
        # is never printed here, only the two perm lines are read.
        reply = await _ask(client, "Command", {"Command": f"manager show user {username}"})
        if reply.ok and reply.frame is not None:
            probes.shown = parse_manager_show_user(reply.frame.get_all("Output"))
