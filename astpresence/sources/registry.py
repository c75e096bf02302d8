"""Every source plug-in, in the order their sections are read and they start.

Adding a source is a package under ``sources/`` and one line here.
"""

from __future__ import annotations

from astpresence.sources.calendars.plugin import PLUGIN as CALENDARS
from astpresence.sources.plugin import SourcePlugin
from astpresence.sources.sessions.plugin import PLUGIN as SESSIONS
from astpresence.sources.teams.plugin import PLUGIN as TEAMS

SOURCES: tuple[SourcePlugin, ...] = (
    CALENDARS,
    SESSIONS,
    TEAMS,
)
