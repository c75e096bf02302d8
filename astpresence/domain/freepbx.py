"""FreePBX's naming conventions (docs/asterisk.md, "FreePBX conventions")."""

from __future__ import annotations


def dnd_device(pattern: str, uid: str) -> str:
    """``Custom:DND{user}`` and ``2000`` -> ``Custom:DND2000``."""
    return pattern.replace("{user}", uid)


def dnd_user(pattern: str, device: str) -> str | None:
    """Whose DND device ``device`` is by its name (None: not one, or no pattern)."""
    if not pattern:
        return None
    prefix, _, suffix = pattern.partition("{user}")
    if not device.startswith(prefix) or not device.endswith(suffix):
        return None
    uid = device[len(prefix):len(device) - len(suffix)]
    return uid or None
