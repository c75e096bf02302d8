"""Who the users are: dialplan hints naming ``CustomPresence:<id>`` plus config."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace

from .model import InvalidInput, validate_user_id
from .store.base import UserRecord

PRESENCE_PROVIDER = "CustomPresence:"


def parse_hint(hint: str) -> tuple[tuple[str, ...], str | None]:
    """Split a hint into its devices and its presence provider.

    ``PJSIP/2001&Custom:presence-2001,CustomPresence:2001`` ->
    ``(("PJSIP/2001", "Custom:presence-2001"), "CustomPresence:2001")``.
    Devices come before the comma, joined with ``&``; the presence provider
    after it (docs/asterisk.md, "Hints and what phones see").
    """
    devices_part, _, presence_part = hint.partition(",")
    devices = tuple(d.strip() for d in devices_part.split("&") if d.strip())
    provider = presence_part.strip() or None
    return devices, provider


def user_id_from_provider(provider: str | None) -> str | None:
    if not provider or not provider.startswith(PRESENCE_PROVIDER):
        return None
    try:
        return validate_user_id(provider[len(PRESENCE_PROVIDER):])
    except InvalidInput:
        return None


def user_from_hint(exten: str, context: str, hint: str) -> UserRecord | None:
    devices, provider = parse_hint(hint)
    uid = user_id_from_provider(provider)
    if uid is None:
        return None
    return UserRecord(id=uid, extension=exten, context=context, devices=devices, origin="hint")


class UserDirectory:
    """Merges users from config (authoritative where set) and from hints."""

    def __init__(self, config_users: Iterable[UserRecord] = ()) -> None:
        self._config = {u.id: u for u in config_users}
        self._hints: dict[str, UserRecord] = {}

    def load(self, stored: Iterable[UserRecord]) -> None:
        """Users found in hints on an earlier run, so they are known before login."""
        for user in stored:
            if user.origin == "hint":
                self._hints[user.id] = user

    def add_hint_user(self, user: UserRecord) -> bool:
        """Record a user found in a hint; True when it is new or changed."""
        if self._hints.get(user.id) == user:
            return False
        self._hints[user.id] = user
        return True

    def get(self, uid: str) -> UserRecord | None:
        conf = self._config.get(uid)
        hint = self._hints.get(uid)
        if conf is None:
            return hint
        if hint is None:
            return conf
        return replace(
            conf,
            extension=conf.extension or hint.extension,
            context=conf.context or hint.context,
            devices=conf.devices or hint.devices,
        )

    def __contains__(self, uid: object) -> bool:
        return isinstance(uid, str) and (uid in self._config or uid in self._hints)

    def ids(self) -> list[str]:
        return sorted(set(self._config) | set(self._hints), key=_natural)

    def all(self) -> list[UserRecord]:
        out = []
        for uid in self.ids():
            user = self.get(uid)
            assert user is not None
            out.append(user)
        return out

    def hint_users(self) -> list[UserRecord]:
        return list(self._hints.values())


def _natural(uid: str) -> tuple[int, int, str]:
    return (0, int(uid), uid) if uid.isdigit() else (1, 0, uid)
