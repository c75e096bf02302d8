"""Teams' registration (sources/plugin.py): ``[teams]``, the source at work on the
leader, the one command its followers forward (``teams``: notify, map), the
routes in web.py and the ``teams`` commands in cli.py."""

from __future__ import annotations

from typing import Any

from astpresence.domain.model import InvalidInput
from astpresence.engine.service import PresenceService
from astpresence.sources.plugin import SourcePlugin
from astpresence.sources.teams.doctor import check
from astpresence.sources.teams.settings import TeamsSettings, parse_section, show
from astpresence.sources.teams.source import TeamsSource


async def answer(source: TeamsSource, body: dict[str, Any]) -> dict[str, Any]:
    """The leader's part: notifications handed over, and the mapping as it stands."""
    op = body.get("op")
    if op == "notify":
        items = body.get("value")
        if not isinstance(items, list):
            raise InvalidInput("value: expected a list of notifications")
        return await source.notified(items)
    if op == "map":
        return {"status": source.status_json(), "map": source.map_json()}
    raise InvalidInput(f"unknown teams operation {str(op)[:20]!r}")


def _start(settings: TeamsSettings, service: PresenceService) -> TeamsSource:
    return TeamsSource(settings, service)


PLUGIN = SourcePlugin(
    name="teams",
    default=TeamsSettings(),
    parse=parse_section,
    start=_start,
    show=show,
    commands={"teams": answer},
    doctor=check,
    configured=lambda settings: bool(settings.enabled),
    web="astpresence.sources.teams.web",
    cli="astpresence.sources.teams.cli",
)
