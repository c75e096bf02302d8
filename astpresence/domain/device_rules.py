"""What the rules read from a user's devices: registered, in a call, offline, and the
activity they show. Pure functions over plain values, like rules.py.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from astpresence.domain.model import DEVICE_RANK, DeviceState, aggregate_devices
from astpresence.domain.rule_names import (
    ACTIVITY_OFFLINE,
    ACTIVITY_ON_HOLD,
    ACTIVITY_ON_PHONE,
    ACTIVITY_RINGING,
)
from astpresence.domain.rule_config import (
    DEFAULT_RULES,
    RuleConfig,
)


@dataclass(frozen=True)
class DeviceView:
    """What the rules need to know about one user's devices.

    ``states`` are the user's own devices (never the ``Custom:`` mirror device,
    which is derived from the result). ``unavailable_since`` is when all of
    them became UNAVAILABLE (see :func:`track_unavailable_since`), else None.
    """

    states: tuple[DeviceState, ...] = ()
    unavailable_since: datetime | None = None

    @property
    def aggregate(self) -> DeviceState:
        """What Asterisk would show for a hint joining these devices with ``&``."""
        return aggregate_devices(self.states)


def all_unavailable(states: Sequence[DeviceState]) -> bool:
    """True if the user has devices and, aggregated, they are UNAVAILABLE.

    Aggregated the way a hint is: INVALID and UNKNOWN rank below UNAVAILABLE,
    so a device that does not exist does not keep the user online.
    """
    return bool(states) and aggregate_devices(states) is DeviceState.UNAVAILABLE


def track_unavailable_since(
    previous: datetime | None, states: Sequence[DeviceState], now: datetime
) -> datetime | None:
    """The new ``DeviceView.unavailable_since`` after the devices became ``states``."""
    if not all_unavailable(states):
        return None
    return previous if previous is not None else now


def in_call(devices: DeviceView, config: RuleConfig = DEFAULT_RULES) -> bool:
    """True if any device is in a call state.

    Any device, not the aggregate: the aggregate ranks RINGING above ONHOLD, so
    a held call plus a second phone ringing would not look like a call.
    """
    return any(state in config.call_states for state in devices.states)


def is_registered(devices: DeviceView) -> bool:
    """True if a device is reachable: idle or in a call (not UNAVAILABLE, INVALID or
    UNKNOWN, which rank below it in the hint)."""
    return any(DEVICE_RANK[s] > DEVICE_RANK[DeviceState.UNAVAILABLE] for s in devices.states)


def device_activity(devices: DeviceView, now: datetime,
                    config: RuleConfig = DEFAULT_RULES) -> str:
    """What the devices say is going on: on-the-phone, on-hold, ringing, offline, or ""."""
    states = set(devices.states)
    if states & _TALKING:
        return ACTIVITY_ON_PHONE
    if DeviceState.ONHOLD in states:
        return ACTIVITY_ON_HOLD
    if DeviceState.RINGING in states:
        return ACTIVITY_RINGING
    if is_offline(devices, now, config):
        return ACTIVITY_OFFLINE
    return ""


_TALKING = frozenset({DeviceState.INUSE, DeviceState.BUSY, DeviceState.RINGINUSE})


def is_offline(devices: DeviceView, now: datetime, config: RuleConfig = DEFAULT_RULES) -> bool:
    """True if all devices have been UNAVAILABLE for ``offline_after`` or longer."""
    since = devices.unavailable_since
    if since is None or not all_unavailable(devices.states):
        return False
    # Subtract rather than add: now - since cannot overflow.
    return now - since >= config.offline_after
