"""The Teams source's metrics (counts and times only)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Protocol

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector


class _Status(Protocol):
    def status_json(self) -> dict[str, Any]: ...


class TeamsCollector(Collector):
    def __init__(self, source: _Status) -> None:
        self._source = source

    def collect(self) -> Iterable[Any]:
        status = self._source.status_json()
        requests = CounterMetricFamily("astpresence_teams_requests",
                                       "Requests to Microsoft Graph, by kind", labels=["kind"])
        for kind, count in sorted(status.get("requests", {}).items()):
            requests.add_metric([kind], count)
        yield requests
        yield CounterMetricFamily("astpresence_teams_throttled",
                                  "Graph answers 429/503 (Retry-After honoured)",
                                  value=status.get("throttled", 0))
        yield CounterMetricFamily("astpresence_teams_failures", "Graph requests that failed",
                                  value=status.get("failures", 0))
        yield CounterMetricFamily("astpresence_teams_notifications",
                                  "Change notifications accepted",
                                  value=status.get("notifications", 0))
        users = GaugeMetricFamily("astpresence_teams_users", "People mapped to Teams",
                                  labels=["state"])
        users.add_metric(["mapped"], status.get("users_mapped", 0))
        users.add_metric(["resolved"], status.get("users_resolved", 0))
        yield users
        yield GaugeMetricFamily("astpresence_teams_subscriptions",
                                "Graph subscriptions alive", value=status.get("subscriptions", 0))
        yield GaugeMetricFamily("astpresence_teams_polling",
                                "1 while presence is polled (no live notifications)",
                                value=1 if status.get("polling") else 0)
