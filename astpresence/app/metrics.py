"""Prometheus metrics, one registry per daemon (tests run several)."""

from __future__ import annotations

from collections import Counter as Tally
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from prometheus_client import Gauge
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from astpresence.domain.model import State
from astpresence.engine.metrics import Metrics as Instruments

if TYPE_CHECKING:
    from astpresence.engine.service import PresenceService


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


class Metrics(Instruments):
    """The instruments, plus collectors for the engine, the sources and the HA role."""

    def watch_ha(self, role: Callable[[], str]) -> None:
        leader = Gauge("astpresence_ha_leader", "1 while this node leads its HA group "
                       "(the only one writing to Asterisk), 0 as a follower",
                       registry=self.registry)
        leader.set_function(lambda: 1.0 if role() == "leader" else 0.0)

    def watch(self, collectors: Iterable[Collector]) -> None:
        """A source's collectors (sources/plugin.py)."""
        for collector in collectors:
            self.registry.register(collector)

    def watch_service(self, service: PresenceService) -> None:
        self.registry.register(_UsersByState(service))
        self.registry.register(_FailingWrites(service))


