"""Who the users are: dialplan hints naming ``CustomPresence:<id>`` plus config.

The hints arrive already parsed (translate.py); this only merges and bounds them.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace

from .records import UserRecord

#: Users found in hints, at most: a flood of events naming new presentities
#: must not create users without end (config users do not count).
DEFAULT_MAX_USERS = 20_000


class UserDirectory:
    """Merges users from config (authoritative where set) and from hints."""

    def __init__(self, config_users: Iterable[UserRecord] = (), *,
                 max_users: int = DEFAULT_MAX_USERS) -> None:
        self._config = {u.id: u for u in config_users}
        self._hints: dict[str, UserRecord] = {}
        self.max_users = max_users
        self.refused = 0  # hint users not taken because of the cap, since the last sync

    def load(self, stored: Iterable[UserRecord]) -> None:
        """Users found in hints on an earlier run, so they are known before login."""
        for user in stored:
            if user.origin == "hint":
                self._hints[user.id] = user

    def add_hint_user(self, user: UserRecord) -> bool:
        """Record a user found in a hint; True when it is new or changed.

        A new user past :attr:`max_users` is refused (counted in :attr:`refused`).
        """
        old = self._hints.get(user.id)
        if old == user:
            return False
        if old is None and len(self._hints) >= self.max_users:
            self.refused += 1
            return False
        self._hints[user.id] = user
        return True

    def replace_hint_users(self, users: Iterable[UserRecord]) -> tuple[list[UserRecord],
                                                                         list[str]]:
        """The dialplan as Asterisk lists it now: (new or changed users, ids gone).

        A hint removed by a reload takes its user away; a presentity named by
        several hints (an intercom or feature code beside the extension) is
        one user, shown with its plainest extension (``2000``, not ``*802000``).
        """
        fresh: dict[str, UserRecord] = {}
        self.refused = 0
        for user in users:
            if user.id in fresh:
                if _plainer(user.extension, fresh[user.id].extension):
                    fresh[user.id] = user
                continue
            if len(fresh) >= self.max_users:
                self.refused += 1
                continue
            fresh[user.id] = user
        changed = [u for uid, u in fresh.items() if self._hints.get(uid) != u]
        gone = [uid for uid in self._hints if uid not in fresh]
        self._hints = fresh
        return changed, gone

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



def _plainer(a: str, b: str) -> bool:
    """Is extension ``a`` the one to show rather than ``b``? No feature-code star, shorter."""
    return (a.startswith("*"), len(a), a) < (b.startswith("*"), len(b), b)


def _natural(uid: str) -> tuple[int, int, str]:
    return (0, int(uid), uid) if uid.isdigit() else (1, 0, uid)
