"""Who the users are: dialplan hints naming ``CustomPresence:<id>`` plus config.

The hints arrive already parsed (translate.py); this only merges and bounds them.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace

from astpresence.domain.model import DEFAULT_NODE
from astpresence.domain.records import UserRecord

#: Users found in hints, at most: a flood of events naming new presentities
#: must not create users without end (config users do not count).
DEFAULT_MAX_USERS = 20_000


class UserDirectory:
    """Merges users from config (authoritative where set) and from hints.

    With several Asterisk servers each one's hints are kept apart
    (``node``): a user is the union of the hints naming it on every server
    (its plainest extension, all of their devices), and leaves when no
    server has such a hint any more. The users stored by an earlier run
    count until every server has been read once.
    """

    def __init__(self, config_users: Iterable[UserRecord] = (), *,
                 max_users: int = DEFAULT_MAX_USERS,
                 nodes: Iterable[str] = (DEFAULT_NODE,)) -> None:
        self._config = {u.id: u for u in config_users}
        self._nodes = tuple(nodes)
        self._by_node: dict[str, dict[str, UserRecord]] = {}
        self._stored: dict[str, UserRecord] = {}
        self._hints: dict[str, UserRecord] = {}  # merged over the nodes
        self.max_users = max_users
        self.refused = 0  # hint users not taken because of the cap, since the last sync

    def replace_stored(self, stored: Iterable[UserRecord]) -> None:
        """Only the stored users, as if no server had been read yet (a follower reloading,
        or taking over: the servers are read again after its login)."""
        self._stored = {u.id: u for u in stored if u.origin == "hint"}
        self._by_node = {}
        self._merge_all()

    def add_hint_user(self, user: UserRecord, node: str = DEFAULT_NODE) -> bool:
        """Record a user found in a hint on ``node``; True when the user is new or changed.

        A new user past :attr:`max_users` is refused (counted in :attr:`refused`).
        """
        hints = self._by_node.setdefault(node, {})
        old = hints.get(user.id)
        # A second hint of the same presentity (FreePBX's *80<ext> intercom hint, in a
        # PresenceStatus event) joins the user: the plainer extension stays shown.
        new = _combined(old, user) if old is not None else user
        if old == new:
            return False
        if old is None and len(hints) >= self.max_users:
            self.refused += 1
            return False
        hints[user.id] = new
        return self._merge(user.id)

    def replace_hint_users(self, users: Iterable[UserRecord], node: str = DEFAULT_NODE
                           ) -> tuple[list[UserRecord], list[str]]:
        """``node``'s dialplan as Asterisk lists it now: (new or changed users, ids gone).

        A hint removed by a reload takes its user away (unless another server
        has one); a presentity named by several hints (an intercom or feature
        code beside the extension) is one user, shown with its plainest
        extension (``2000``, not ``*802000``).
        """
        fresh: dict[str, UserRecord] = {}
        self.refused = 0
        for user in users:
            if user.id in fresh:
                fresh[user.id] = _combined(fresh[user.id], user)
                continue
            if len(fresh) >= self.max_users:
                self.refused += 1
                continue
            fresh[user.id] = user
        before = self._hints
        self._by_node[node] = fresh
        if all(n in self._by_node for n in self._nodes):
            self._stored = {}  # every server has been read: the stored ones are void
        self._merge_all()
        changed = [u for uid, u in self._hints.items() if before.get(uid) != u]
        gone = [uid for uid in before if uid not in self._hints]
        return changed, gone

    def _merge_all(self) -> None:
        merged: dict[str, UserRecord] = {}
        for node in self._nodes:
            for uid, user in self._by_node.get(node, {}).items():
                merged[uid] = _combined(merged[uid], user) if uid in merged else user
        for uid, user in self._stored.items():
            merged.setdefault(uid, user)  # until every server has been read
        self._hints = merged

    def _merge(self, uid: str) -> bool:
        records = [h[uid] for n in self._nodes if uid in (h := self._by_node.get(n, {}))]
        if not records:
            return False
        user = records[0]
        for other in records[1:]:
            user = _combined(user, other)
        if self._hints.get(uid) == user:
            return False
        self._hints[uid] = user
        return True

    def nodes_with_device(self, uid: str, device: str) -> list[str]:
        """The servers whose hints give user ``uid`` the device ``device``."""
        return [n for n in self._nodes
                if (u := self._by_node.get(n, {}).get(uid)) is not None and device in u.devices]

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

    def records(self) -> list[UserRecord]:
        """Every user, in no particular order (cheaper than :meth:`all`: no sort)."""
        out = []
        for uid in self._config.keys() | self._hints.keys():
            user = self.get(uid)
            assert user is not None
            out.append(user)
        return out

    def ids(self) -> list[str]:
        return sorted(set(self._config) | set(self._hints), key=_natural)

    def all(self) -> list[UserRecord]:
        """Every user, in natural order of their ids."""
        return sorted(self.records(), key=lambda user: _natural(user.id))


def _combined(a: UserRecord, b: UserRecord) -> UserRecord:
    """One user named by two hints: the plainer extension, the devices of both."""
    first, second = (b, a) if _plainer(b.extension, a.extension) else (a, b)
    devices = tuple(dict.fromkeys((*first.devices, *second.devices)))
    return first if devices == first.devices else replace(first, devices=devices)


def _plainer(a: str, b: str) -> bool:
    """Is extension ``a`` the one to show rather than ``b``? No feature-code star, shorter."""
    return (a.startswith("*"), len(a), a) < (b.startswith("*"), len(b), b)


def _natural(uid: str) -> tuple[int, int, str]:
    return (0, int(uid), uid) if uid.isdigit() else (1, 0, uid)
