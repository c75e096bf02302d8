"""The rules' vocabulary: source and rule names, the precedence, activities,
projections and the default values (rule_config.py turns them into settings).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from types import MappingProxyType
from typing import Final

from astpresence.domain.model import DeviceState, Presence, State


# --- names ---------------------------------------------------------------

SOURCE_MANUAL: Final = "manual"
SOURCE_DEVICE: Final = "device"
SOURCE_AUTO: Final = "auto"
#: ``Decision.source`` when no contribution applies.
SOURCE_DEFAULT: Final = "default"
#: Source names a timed entry may not use.
RESERVED_SOURCES: Final = frozenset({SOURCE_MANUAL, SOURCE_DEVICE, SOURCE_AUTO, SOURCE_DEFAULT})

RULE_MANUAL_PROTECTED: Final = "manual-protected"
RULE_ON_PHONE: Final = "on-the-phone"
RULE_OFFLINE: Final = "offline"
RULE_TIMED_PREFIX: Final = "timed:"
RULE_AUTO: Final = "auto:missed-calls"
RULE_MANUAL: Final = "manual"
RULE_REGISTERED: Final = "registered"
RULE_DEFAULT: Final = "default"

#: Rule identifiers in precedence order (``timed:`` stands for every timed source).
PRECEDENCE: Final = (
    RULE_MANUAL_PROTECTED,
    RULE_ON_PHONE,
    RULE_OFFLINE,
    RULE_TIMED_PREFIX,
    RULE_AUTO,
    RULE_MANUAL,
    RULE_REGISTERED,
    RULE_DEFAULT,
)

#: What is going on now, beside the chosen presence (``Decision.activity``).
ACTIVITY_ON_PHONE: Final = "on-the-phone"
ACTIVITY_RINGING: Final = "ringing"
ACTIVITY_ON_HOLD: Final = "on-hold"
ACTIVITY_OFFLINE: Final = "offline"

#: How the effective presence is projected to CustomPresence: "standard" (the
#: defaults below: a call reads as busy, the chosen message kept; a registered
#: idle user reads as available) or "legacy" (before 0.2: a call reads as
#: unavailable, nothing chosen reads as not_set; docs/presence-rules.md).
PROJECTIONS: Final = ("standard", "legacy")

# --- defaults ------------------------------------------------------------

#: XMPP's dnd is "the entity or resource is busy" (RFC 6121 4.7.2.1): the nearest
#: CustomPresence word for "busy, on a call". Unavailable would read as offline.
DEFAULT_ON_PHONE: Final = Presence(State.DND, "on-the-phone")
LEGACY_ON_PHONE: Final = Presence(State.UNAVAILABLE, "on-the-phone")
#: A user with nothing chosen and a registered device (Teams, Wazo, Synapse and 3CX
#: show a connected user as available; FreePBX UCP draws not_set as "Offline").
DEFAULT_REGISTERED: Final = Presence(State.AVAILABLE)
DEFAULT_OFFLINE: Final = Presence(State.UNAVAILABLE, "offline")
DEFAULT_OFFLINE_AFTER: Final = timedelta(seconds=60)
#: Upper bound for ``offline_after``; keeps ``since + offline_after`` far from
#: ``datetime.max`` and catches a value typed in milliseconds.
MAX_OFFLINE_AFTER: Final = timedelta(days=7)
DEFAULT_CALL_STATES: Final = frozenset(
    {DeviceState.INUSE, DeviceState.BUSY, DeviceState.RINGINUSE, DeviceState.ONHOLD}
)
DEFAULT_OVERRIDABLE_MANUAL: Final = frozenset({State.AVAILABLE, State.CHAT, State.NOT_SET})
DEFAULT_AUTO_PRESENCE: Final = Presence(State.AWAY, "missed-calls")
DEFAULT_PAUSE_STATES: Final = frozenset({State.DND, State.AWAY, State.XA})
DEFAULT_MIRROR_PREFIX: Final = "presence-"
DEFAULT_PAUSE_REASON_PREFIX: Final = "astpresence:"

#: Presence state -> state of the ``Custom:`` mirror device. Anything not
#: listed maps to INVALID: in a hint, devices joined with ``&`` aggregate to the
#: busiest, ``INVALID < UNKNOWN < UNAVAILABLE < NOT_INUSE < ONHOLD < RINGING <
#: INUSE < BUSY < RINGINUSE``, so INVALID is the only value that never changes
#: what the phone's own state shows (NOT_INUSE would make an unplugged phone
#: look idle). Verified on Asterisk: PJSIP/2001 UNAVAILABLE + Custom INVALID ->
#: hint Unavailable; + Custom NOT_INUSE -> Idle.
MIRROR_MAP: Final[Mapping[State, DeviceState]] = MappingProxyType(
    {
        State.DND: DeviceState.BUSY,
        # Offline lights no key busy: BUSY is not UNAVAILABLE for app_queue either.
        State.UNAVAILABLE: DeviceState.UNAVAILABLE,
        # The trade-off (docs/presence-rules.md, "BLF mirror"): ONHOLD shows away
        # on a key, but dialog watchers see a confirmed dialog and PIDF says "On
        # hold"; mirror_map = { away = "UNAVAILABLE", xa = "UNAVAILABLE" } shows
        # the key as unavailable instead.
        State.AWAY: DeviceState.ONHOLD,
        State.XA: DeviceState.ONHOLD,
    }
)
#: The mirror before 0.2 (projection = "legacy").
LEGACY_MIRROR_MAP: Final[Mapping[State, DeviceState]] = MappingProxyType(
    {**MIRROR_MAP, State.UNAVAILABLE: DeviceState.BUSY})
