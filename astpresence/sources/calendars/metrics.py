"""The calendars' Prometheus collector: feeds by state and failed fetches, computed
at scrape time."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector


class FeedStates(Collector):
    """Calendar feeds by state (ok, stale, failing, new) and failed fetches."""

    def __init__(self, states: Callable[[], dict[str, int]], failed: Callable[[], int]) -> None:
        self._states = states
        self._failed = failed

    def collect(self) -> Iterable[Metric]:
        states = GaugeMetricFamily("astpresence_calendar_feeds", "Calendar feeds by state",
                                   labels=["state"])
        for state, count in self._states().items():
            if state != "feeds":
                states.add_metric([state], count)
        yield states
        failures = CounterMetricFamily("astpresence_calendar_fetch_failures",
                                       "Calendar fetches that failed")
        failures.add_metric([], self._failed())
        yield failures
