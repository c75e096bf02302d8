"""Who answers the API now: the engine (a lone daemon, a leader) or the follower's
port (following.py), picked by the daemon at wiring and switched at a takeover.

The web layer asks :attr:`Serving.api` for presence and :meth:`Serving.call` for
a source's question (a command of its plug-in): run here when this node leads,
forwarded to the leader when it follows.
"""

from __future__ import annotations

from typing import Any

from astpresence.engine.ports import PresenceAPI

from astpresence.cluster.commands import CommandTable, Remote


class Serving:
    def __init__(self, api: PresenceAPI, table: CommandTable) -> None:
        self.api = api
        self.table = table
        self._leader: Remote | None = None

    @property
    def following(self) -> bool:
        return self._leader is not None

    def follow(self, api: PresenceAPI, leader: Remote) -> None:
        self.api, self._leader = api, leader

    def lead(self, api: PresenceAPI) -> None:
        self.api, self._leader = api, None

    async def call(self, kind: str, body: dict[str, Any]) -> dict[str, Any]:
        """A command by kind, answered by the node that can (errors raised)."""
        if self._leader is not None:
            return await self._leader.call(kind, body)
        return await self.table.run(kind, body)
