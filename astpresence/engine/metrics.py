"""The daemon's Prometheus instruments, one registry per daemon (tests run several).

What the parts count as they work (AMI links, events, writes, WebSocket clients,
refused API requests); app/metrics.py adds the collectors that read the engine's
and the calendars' state when scraped.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector


class EventCounts(Collector):
    """AMI events received, by type: a plain count per event (the hot path: no lock,
    no label lookup), read when /metrics is scraped."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}

    def collect(self) -> Iterable[Any]:
        family = CounterMetricFamily("astpresence_ami_events", "AMI events received, by type",
                                     labels=["type"])
        for name, count in sorted(self.counts.items()):
            family.add_metric([name], count)
        yield family


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        # "node": the Asterisk server's name ("asterisk" for the single [ami] one).
        self.ami_up = Gauge("astpresence_ami_up", "1 while logged in to AMI and synced",
                            ["node"], registry=self.registry)
        self.reconnects = Counter("astpresence_ami_reconnects",
                                  "AMI reconnect attempts", ["node"], registry=self.registry)
        self.events = EventCounts()
        self.registry.register(self.events)
        self.setvar_seconds = Histogram(
            "astpresence_setvar_seconds", "Time from sending a Setvar to its response",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=self.registry)
        self.websockets = Gauge("astpresence_websocket_clients",
                                "WebSocket clients connected", registry=self.registry)
        self.api_refused = Counter("astpresence_api_refused",
                                   "API requests refused, by status", ["status"],
                                   registry=self.registry)
