"""Who is who in Teams: ``[teams.users]`` (astpresence user -> object id or UPN), each
UPN resolved once to its object id (``GET /users/{upn}``) and kept."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from astpresence.sources.msgraph import RemoteError
from astpresence.sources.teams.graph import Missing, TeamsGraph
from astpresence.sources.teams.settings import is_object_id

logger = logging.getLogger(__name__)


class TeamsDirectory:
    def __init__(self, users: Mapping[str, str]) -> None:
        self.refs = dict(users)
        self._oid: dict[str, str] = {}
        self._uid: dict[str, str] = {}
        #: Why a UPN is not resolved (no such user, no permission, ...).
        self.errors: dict[str, str] = {}
        for uid, ref in self.refs.items():
            if is_object_id(ref):
                self._set(uid, ref.lower())

    def _set(self, uid: str, oid: str) -> None:
        self._oid[uid] = oid
        self._uid[oid] = uid
        self.errors.pop(uid, None)

    def oid(self, uid: str) -> str | None:
        return self._oid.get(uid)

    def uid(self, oid: str) -> str | None:
        return self._uid.get(oid.lower())

    def ids(self) -> list[str]:
        """Every resolved object id, in the config's order."""
        return [self._oid[u] for u in self.refs if u in self._oid]

    def users(self) -> list[str]:
        return [u for u in self.refs if u in self._oid]

    @property
    def unresolved(self) -> list[str]:
        return [u for u in self.refs if u not in self._oid]

    async def resolve(self, graph: TeamsGraph) -> None:
        """Resolve what is not yet; each failure is kept for ``teams map``."""
        for uid in self.unresolved:
            upn = self.refs[uid]
            try:
                oid = (await graph.resolve(upn)).lower()
            except Missing:
                self.errors[uid] = "no such user in the tenant"
            except RemoteError as exc:
                self.errors[uid] = str(exc)
            else:
                if oid in self._uid and self._uid[oid] != uid:
                    self.errors[uid] = f"the same Teams user as {self._uid[oid]}"
                    continue
                self._set(uid, oid)
                continue
            logger.warning("teams: %s (%s) is not resolved: %s", uid, upn, self.errors[uid])

    def rows(self) -> list[dict[str, Any]]:
        return [{"user": uid, "teams": ref, "object_id": self._oid.get(uid),
                 "error": self.errors.get(uid, "")} for uid, ref in self.refs.items()]
