"""What a source plug-in is: one registration per source package.

A source (calendars today; Teams and desktop sessions next) is a package under
``sources/`` that exposes one :class:`SourcePlugin`. The core never names a
source: the config reads each plug-in's section with its parser, the daemon
starts what :attr:`SourcePlugin.start` returns, the API mounts the plug-in's
routes, the CLI adds its commands, the metrics register its collectors, and
the leader of an HA group runs its followers' commands from its table.

A plug-in's parts live in the layers they belong to: the source itself (this
layer: it imports the engine and below, no HTTP server, no CLI), its routes
in ``<package>/web.py`` (the web layer) and its commands in
``<package>/cli.py`` (the CLI layer). The registration names those two by
module path, the way packaging entry points do, so this layer imports
neither; tests/app/test_architecture.py checks each module's layer.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from prometheus_client.registry import Collector

from astpresence.engine.service import PresenceService

#: A follower's question or write that only the leader's source can answer:
#: (the leader's running source, the request's body) -> the answer. Errors are
#: raised as InvalidInput / UnknownUser and sent back by the command server.
SourceCommand = Callable[[Any, dict[str, Any]], Awaitable[dict[str, Any]]]


@dataclass(frozen=True)
class DoctorCheck:
    """One of a source's ``astpresence doctor`` checks (the CLI shows it as its own)."""

    name: str
    ok: bool
    detail: str
    fix: str = ""


class RunningSource(Protocol):
    """A source at work, built by :attr:`SourcePlugin.start`."""

    async def run(self, stop: asyncio.Event) -> None:
        """Work until ``stop`` is set (only the leader of an HA group runs it)."""

    def status_json(self) -> dict[str, Any]:
        """Its part of ``/v1/status`` (counts only: nothing secret)."""

    def collectors(self) -> Iterable[Collector]:
        """Prometheus collectors for ``/metrics``."""


@dataclass(frozen=True)
class SourcePlugin:
    """One source, as the core sees it."""

    #: The source's name: its config key, its key in ``/v1/status``, its routes'
    #: prefix (``/v1/<name>``) and its place in log lines.
    name: str
    #: The settings when the config does not mention the source.
    default: Any
    #: (the raw value of its top-level config key, where) -> its settings; raises
    #: InvalidInput naming the setting.
    parse: Callable[[object, str], Any]
    #: (settings, the engine) -> the running source.
    start: Callable[[Any, PresenceService], RunningSource]
    #: Its own keys in ``[limits]``: key -> (settings, raw value, where) -> settings.
    limits: Mapping[str, Callable[[Any, object, str], Any]] = field(default_factory=dict)
    #: Its settings as ``/v1/config`` shows them (nothing secret).
    show: Callable[[Any], Any] = repr
    #: What its followers may ask of the leader: command kind -> handler.
    commands: Mapping[str, SourceCommand] = field(default_factory=dict)
    #: ``astpresence doctor``'s checks of it, when it is configured (read-only).
    doctor: Callable[[Any], Awaitable[list[DoctorCheck]]] | None = None
    #: Is it configured (its settings differ from "off")?
    configured: Callable[[Any], bool] = bool
    #: The module of its routes (``routes(app)``, ``paths()``, ``schemas()``), or "".
    web: str = ""
    #: The module of its CLI commands (``commands()``), or "".
    cli: str = ""
