"""The BLF mirror's device for each user, and the device state that shows a presence.

Ordinary phones show device state only (docs/asterisk.md, "Hints and what
phones see"), so presence is mirrored into a device that is part of the
user's hint: ``Custom:<prefix><user>`` written over AMI, or
``Stasis:<prefix><user>`` written through ARI. The rules (rules.py) never
need to know which; this module names the devices.
"""

from __future__ import annotations

from astpresence.domain.model import DeviceState, State, validate_user_id
from astpresence.domain.rules import DEFAULT_RULES, RuleConfig


def mirror_state(state: State, config: RuleConfig = DEFAULT_RULES) -> str:
    """Device state string for the ``Custom:`` mirror of a presence state."""
    return config.mirror_map.get(state, DeviceState.INVALID).value


def mirror_device(user: str, config: RuleConfig = DEFAULT_RULES) -> str:
    """``Custom:<prefix><user>`` (``Stasis:`` through ARI), the device for the user's hint."""
    return f"{mirror_technology(config)}:{config.mirror_prefix}{validate_user_id(user)}"


def mirror_technology(config: RuleConfig = DEFAULT_RULES) -> str:
    """``Custom`` (written over AMI) or ``Stasis`` (ARI-controlled device states)."""
    return "Stasis" if config.mirror_via == "ari" else "Custom"


def mirror_user(device: str, config: RuleConfig = DEFAULT_RULES) -> str | None:
    """The user whose mirror ``device`` is, or None."""
    prefix = f"{mirror_technology(config)}:{config.mirror_prefix}"
    return device[len(prefix):] if device.startswith(prefix) and len(device) > len(prefix) else None


def is_mirror_device(device: str, config: RuleConfig = DEFAULT_RULES) -> bool:
    """True for a mirror device name; such devices never go into a DeviceView."""
    return device.startswith(f"{mirror_technology(config)}:{config.mirror_prefix}")
