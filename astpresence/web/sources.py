"""The sources' routes (sources/plugin.py): each plug-in that has them names its
routes' module (``<package>/web.py``: ``setup(app)``, ``PATHS``, ``SCHEMAS`` and
``STATUS``, its part of ``/v1/status``), loaded here by name like an entry point.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from astpresence.sources.registry import SOURCES


def source_routes() -> list[tuple[str, ModuleType]]:
    """(source name, its routes' module) for every source that has routes."""
    return [(plugin.name, importlib.import_module(plugin.web)) for plugin in SOURCES
            if plugin.web]
