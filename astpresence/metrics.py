"""Prometheus metrics, one registry per daemon (tests run several)."""

from __future__ import annotations

from collections import Counter as Tally
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from .model import State

if TYPE_CHECKING:
    from .calendars.feeds import CalendarFeeds
    from .service import PresenceService


class _Calendars(Collector):
    """Calendar feeds by state (ok, stale, failing, new) and failed fetches."""

    def __init__(self, feeds: CalendarFeeds) -> None:
        self._feeds = feeds

    def collect(self) -> Iterable[Metric]:
        states = GaugeMetricFamily("astpresence_calendar_feeds", "Calendar feeds by state",
                                   labels=["state"])
        for state, count in self._feeds.status_json().items():
            if state != "feeds":
                states.add_metric([state], count)
        yield states
        failures = CounterMetricFamily("astpresence_calendar_fetch_failures",
                                       "Calendar fetches that failed")
        failures.add_metric([], sum(f.status.failed_total for f in self._feeds.feeds))
        yield failures


class _UsersByState(Collector):
    """Users by effective state, computed at scrape time (no per-change cost)."""

    def __init__(self, service: PresenceService) -> None:
        self._service = service

    def collect(self) -> Iterable[Metric]:
        family = GaugeMetricFamily(
            "astpresence_users", "Users by effective presence state", labels=["state"])
        counts = Tally(v.presence.state.value for v in self._service.views())
        for state in State:
            family.add_metric([state.value], counts.get(state.value, 0))
        yield family


class _FailingWrites(Collector):
    """Writes Asterisk refused and that wait for a retry, by kind (retry.py)."""

    def __init__(self, service: PresenceService) -> None:
        self._service = service

    def collect(self) -> Iterable[Metric]:
        failing = GaugeMetricFamily(
            "astpresence_writes_failing", "Writes refused by Asterisk, waiting for a retry",
            labels=["kind", "node"])
        total = CounterMetricFamily(
            "astpresence_write_failures", "Writes refused by Asterisk", labels=["kind", "node"])
        for name, node in self._service.nodes.items():
            for failures in node.outbox.failures():
                failing.add_metric([failures.kind, name], len(failures))
                total.add_metric([failures.kind, name], failures.total)
        yield failing
        yield total


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        # "node": the Asterisk server's name ("asterisk" for the single [ami] one).
        self.ami_up = Gauge("astpresence_ami_up", "1 while logged in to AMI and synced",
                            ["node"], registry=self.registry)
        self.reconnects = Counter("astpresence_ami_reconnects",
                                  "AMI reconnect attempts", ["node"], registry=self.registry)
        self.events = Counter("astpresence_ami_events", "AMI events received, by type",
                              ["type"], registry=self.registry)
        self.setvar_seconds = Histogram(
            "astpresence_setvar_seconds", "Time from sending a Setvar to its response",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=self.registry)
        self.websockets = Gauge("astpresence_websocket_clients",
                                "WebSocket clients connected", registry=self.registry)
        self.api_refused = Counter("astpresence_api_refused",
                                   "API requests refused, by status", ["status"],
                                   registry=self.registry)

    def watch_ha(self, role: Callable[[], str]) -> None:
        leader = Gauge("astpresence_ha_leader", "1 while this node leads its HA group "
                       "(the only one writing to Asterisk), 0 as a follower",
                       registry=self.registry)
        leader.set_function(lambda: 1.0 if role() == "leader" else 0.0)

    def watch_calendars(self, feeds: CalendarFeeds) -> None:
        self.registry.register(_Calendars(feeds))

    def watch_service(self, service: PresenceService) -> None:
        self.registry.register(_UsersByState(service))
        self.registry.register(_FailingWrites(service))


