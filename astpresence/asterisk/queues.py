"""Queue members and whose they are: the membership side of queue pauses.

Whether a member is paused is a value astpresence writes, so it lives in a
:class:`~astpresence.asterisk.writes.WriteTracker`; here is only who is a member of
which queue, and which user that member is.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass

from astpresence.engine.devices import Devices
from astpresence.engine.users import UserDirectory

logger = logging.getLogger(__name__)

MemberKey = tuple[str, str]  # (queue, interface)
#: Queue members kept, at most (the next QueueStatus after a login replaces them).
MAX_MEMBERS = 100_000


@dataclass(frozen=True, slots=True)
class QueueMember:
    """A queue member as ``QueueStatus``/``QueueMemberPause`` describe it."""

    queue: str
    interface: str
    #: (extension, context) when the member's state comes from a hint
    #: (``StateInterface: hint:2000@internal``); context may be empty.
    hint: tuple[str, str] | None = None
    paused: bool = False
    reason: str = ""

    @property
    def key(self) -> MemberKey:
        return (self.queue, self.interface)


class QueueMembers:
    def __init__(self, users: UserDirectory, devices: Devices) -> None:
        self._users = users
        self._devices = devices
        self._members: dict[MemberKey, QueueMember] = {}
        self._full_logged = False

    def __len__(self) -> int:
        return len(self._members)

    def __contains__(self, key: object) -> bool:
        return key in self._members

    def get(self, key: MemberKey) -> QueueMember | None:
        return self._members.get(key)

    def update(self, member: QueueMember) -> QueueMember | None:
        """Add or change a member; a hint seen before is kept when the event lacks one.

        None when a new member is left out: at most :data:`MAX_MEMBERS` are
        kept, so a flood of made-up members from the AMI link stops there.
        """
        old = self._members.get(member.key)
        if old is None and len(self._members) >= MAX_MEMBERS:
            if not self._full_logged:
                logger.warning("more than %d queue members; new ones are left out until "
                               "the next sync", MAX_MEMBERS)
                self._full_logged = True
            return None
        if old is not None and member.hint is None and old.hint is not None:
            member = QueueMember(member.queue, member.interface, old.hint, member.paused,
                                 member.reason)
        self._members[member.key] = member
        return member

    def remove(self, key: MemberKey) -> None:
        self._members.pop(key, None)

    def replace(self, members: Iterable[QueueMember]) -> None:
        self._members = {m.key: m for m in members}
        self._full_logged = False

    def owner(self, member: QueueMember) -> str | None:
        """The user whose device (or hint) the member is."""
        for uid in self._devices.users_of(member.interface):
            return uid
        if member.hint is not None:
            exten, context = member.hint
            for user in self._users.all():
                if user.extension == exten and (not context or user.context == context):
                    return user.id
        return None

    def of(self, uid: str) -> list[QueueMember]:
        return [m for m in self._members.values() if self.owner(m) == uid]
