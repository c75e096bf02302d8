"""The devices side of presence: device states, whose they are, offline, missed calls.

Plain domain values in (``DeviceState``), decisions out; the bridge has
already turned AMI's strings into them.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Mapping
from datetime import datetime

from astpresence.domain import freepbx, mirror, rules
from astpresence.domain import behaviours
from astpresence.domain.model import DEFAULT_NODE, DeviceState, aggregate_devices
from astpresence.domain.rules import DeviceView, RuleConfig
from astpresence.engine.users import UserDirectory

logger = logging.getLogger(__name__)

#: FreePBX's per-device DND switch (docs/asterisk.md, "FreePBX conventions").
DEVDND_PREFIX = "Custom:DEVDND"

#: Device states kept, at most, beyond those of the users' own devices.
MAX_DEVICES = 100_000

_RINGING = (DeviceState.RINGING, DeviceState.RINGINUSE)
_TALKING = (DeviceState.INUSE, DeviceState.BUSY, DeviceState.ONHOLD)


class CallEnd(enum.Enum):
    """How a ring ended, for missed-call auto-away."""

    ANSWERED = "answered"
    MISSED = "missed"  # not enough misses in a row for auto-away yet
    AUTO_AWAY = "auto-away"  # this miss makes the person auto-away


class Devices:
    """Device states by name, the users each device belongs to, per-user call tracking."""

    def __init__(self, users: UserDirectory, config: RuleConfig, *,
                 dnd_device: str = "") -> None:
        self._users = users
        self._config = config
        # FreePBX's DND device, "Custom:DND{user}" (docs/asterisk.md, "FreePBX
        # conventions"): a switch the person flips, never a phone.
        self._dnd_pattern = dnd_device
        #: Each device's state, combined over the Asterisk servers (:meth:`set`).
        self.states: dict[str, DeviceState] = {}
        self._by_node: dict[str, dict[str, DeviceState]] = {}
        self._full_logged = False
        self._index: dict[str, set[str]] | None = None  # device -> users
        self._phones: dict[str, tuple[str, ...]] = {}  # uid -> its phones (is_phone)
        self._unavailable_since: dict[str, datetime] = {}
        self._missed: dict[str, int] = {}
        self._ring: dict[str, CallEnd] = {}  # uid -> ANSWERED or MISSED while ringing

    def users_changed(self) -> None:
        self._index = None
        self._phones.clear()

    def users_of(self, device: str) -> set[str]:
        if self._index is None:
            index: dict[str, set[str]] = {}
            for user in self._users.records():
                for dev in user.devices:
                    index.setdefault(dev, set()).add(user.id)
            self._index = index
        return self._index.get(device, set())

    def mirror_owner(self, device: str) -> str | None:
        """Whose BLF mirror ``device`` is (None: not a mirror device)."""
        return mirror.mirror_user(device, self._config) if self._config.mirror else None

    def dnd_owner(self, device: str) -> str | None:
        """Whose FreePBX DND device ``device`` is (None: not one, or no such user)."""
        uid = freepbx.dnd_user(self._dnd_pattern, device)
        return uid if uid is not None and uid in self._users else None

    def dnd_device_of(self, uid: str) -> str | None:
        """The user's FreePBX DND device, when their hint has one."""
        user = self._users.get(uid)
        if not self._dnd_pattern or user is None:
            return None
        device = freepbx.dnd_device(self._dnd_pattern, uid)
        return device if device in user.devices else None

    @property
    def freepbx(self) -> bool:
        """FreePBX's DND devices are recognised (``[freepbx] dnd_device`` set)."""
        return bool(self._dnd_pattern)

    def is_phone(self, device: str) -> bool:
        """Devices that say whether the person is on the phone or offline: not the
        BLF mirror (derived from the result) and not a FreePBX DND switch."""
        return not (mirror.is_mirror_device(device, self._config)
                    or self.dnd_owner(device) is not None
                    or bool(self._dnd_pattern) and device.startswith(DEVDND_PREFIX))

    def set(self, device: str, state: DeviceState, node: str = DEFAULT_NODE) -> bool:
        """Record a live state on Asterisk server ``node``; False when it was left out
        (see :data:`MAX_DEVICES`).

        Devices nobody owns are kept too (a hint may name them after a
        reload), but only up to the bound, per server: a flood of made-up
        device names from an AMI link must not grow memory without end.
        """
        states = self._by_node.setdefault(node, {})
        if (device not in states and len(states) >= MAX_DEVICES
                and not self.users_of(device)):
            if not self._full_logged:
                logger.warning("more than %d device states known on %s; states of devices "
                               "no user has are left out until the next sync", MAX_DEVICES,
                               node)
                self._full_logged = True
            return False
        states[device] = state
        self._combine(device)
        return True

    def replace(self, states: Mapping[str, DeviceState], node: str = DEFAULT_NODE) -> None:
        """After a login to ``node``: what it reports now; nothing from before counts."""
        old = self._by_node.get(node, {})
        self._by_node[node] = dict(states)
        if len(self._by_node) == 1:
            self.states = dict(states)
        else:
            for device in {*old, *states}:
                self._combine(device)
        self._full_logged = False
        self._ring.clear()

    def _combine(self, device: str) -> None:
        """A device known to several servers (one phone behind a proxy, or the same
        name on each) is as busy as the busiest says, as a hint combines devices."""
        if len(self._by_node) == 1:
            state = next(iter(self._by_node.values())).get(device)
        else:
            seen = [s[device] for s in self._by_node.values() if device in s]
            state = aggregate_devices(seen) if seen else None
        if state is None:
            self.states.pop(device, None)
        else:
            self.states[device] = state

    def view(self, uid: str) -> DeviceView:
        """The states of the user's own phones (see :meth:`is_phone`)."""
        phones = self._phones.get(uid)
        if phones is None:
            user = self._users.get(uid)
            if user is None:
                return DeviceView((), self._unavailable_since.get(uid))
            phones = self._phones[uid] = tuple(d for d in user.devices if self.is_phone(d))
        known = self.states
        states = tuple(known[d] for d in phones if d in known)
        return DeviceView(states, self._unavailable_since.get(uid))

    def note_unavailable(self, uid: str, now: datetime) -> DeviceView:
        """Note since when all of the user's devices are UNAVAILABLE (for offline)."""
        view = self.view(uid)
        since = rules.track_unavailable_since(self._unavailable_since.get(uid), view.states, now)
        if since is None:
            self._unavailable_since.pop(uid, None)
        else:
            self._unavailable_since[uid] = since
        return view

    def reset_missed(self, uid: str) -> None:
        """Any manual change starts the missed-call count again."""
        self._missed[uid] = 0

    def call_step(self, uid: str, states: tuple[DeviceState, ...]) -> CallEnd | None:
        """Follow a ring; when it ends, say how (None: still ringing, or no ring)."""
        if self._config.missed_calls_away <= 0:
            return None
        ringing = any(s in _RINGING for s in states)
        talking = any(s in _TALKING for s in states)
        phase = self._ring.get(uid)
        if ringing and phase is None:
            self._ring[uid] = CallEnd.ANSWERED if talking else CallEnd.MISSED
        elif phase is CallEnd.MISSED and talking:
            self._ring[uid] = CallEnd.ANSWERED
        if phase is None or ringing:
            return None
        del self._ring[uid]  # the ring is over
        answered = phase is CallEnd.ANSWERED or talking
        count, active = behaviours.missed_calls_step(
            self._missed.get(uid, 0), "answered" if answered else "missed", self._config)
        self._missed[uid] = count
        if answered:
            return CallEnd.ANSWERED
        return CallEnd.AUTO_AWAY if active else CallEnd.MISSED
