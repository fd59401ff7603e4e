"""The service's Prometheus metrics (``prometheus_client``, one registry per service).

* ``peace_requests_total{endpoint, method, status}`` and the latency histogram
  ``peace_request_duration_seconds{endpoint}``, counted by the request guard
  (:mod:`peace.serve.guard`);
* ``peace_ranker_used_total{ranker}``: normal, zero-shot, popularity-fallback;
* ``peace_events_total{event}``: reload, reload_failed, domain_launched, item_put;
* ``peace_store_info{version}`` and ``peace_catalogue_items{domain, ranker}``, read from the
  served snapshot when the metrics are rendered.

Labels stay bounded: an endpoint is a route template or ``unmatched``, a method outside
:data:`METHODS` is counted as ``other``, a status outside 100-599 as 0.

With several server workers (``peace serve --workers N``) the counters and histograms are kept
in prometheus_client's multiprocess mode (``PROMETHEUS_MULTIPROC_DIR``, set by the server
before the workers start), and every worker renders the sums over all of them.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest, values
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector

if TYPE_CHECKING:
    from peace.serve.state import Snapshot

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"})
"""HTTP methods that get their own metric label; any other method is counted as ``other``."""
UNMATCHED = "unmatched"
"""Endpoint label of unknown paths and of requests refused before routing (e.g. 401)."""
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
"""Media type of :meth:`Metrics.render` (the Prometheus text format)."""
MULTIPROCESS_DIR = "PROMETHEUS_MULTIPROC_DIR"
"""The environment variable that puts prometheus_client in multiprocess mode (its folder)."""


class Metrics:
    """Request counters, the latency histogram, ranker and event counters of one service."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._requests = Counter(
            "peace_requests",
            "HTTP requests by endpoint, method and status.",
            ("endpoint", "method", "status"),
            registry=self.registry,
        )
        self._latency = Histogram(
            "peace_request_duration_seconds",
            "Request latency by endpoint.",
            ("endpoint",),
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self._rankers = Counter(
            "peace_ranker_used",
            "Scored requests by the ranker that served.",
            ("ranker",),
            registry=self.registry,
        )
        self._events = Counter(
            "peace_events",
            "Reloads, reload failures and run-time edits.",
            ("event",),
            registry=self.registry,
        )

    def observe(self, endpoint: str, method: str, status: int, seconds: float) -> None:
        """Count one request. Labels stay bounded: ``endpoint`` is a route template or
        ``unmatched``, a method outside :data:`METHODS` becomes ``other``, and a status outside
        100-599 becomes 0."""
        method = method if method in METHODS else "other"
        status = status if 100 <= status <= 599 else 0
        self._requests.labels(endpoint, method, str(status)).inc()
        self._latency.labels(endpoint).observe(seconds)

    def ranker_used(self, ranker: str) -> None:
        self._rankers.labels(ranker).inc()

    def event(self, name: str) -> None:
        self._events.labels(name).inc()

    def value(self, name: str, labels: dict[str, str]) -> float:
        """The current value of one sample (0 when it was never counted), e.g.
        ``value("peace_events_total", {"event": "reload"})``."""
        found = self.registry.get_sample_value(name, labels)
        return 0.0 if found is None else float(found)

    def render(self, snapshot: Snapshot | None) -> str:
        """Every metric in the Prometheus text format, the snapshot's gauges included (with
        several workers, the counters and histograms summed over all of them)."""
        if multiprocess_mode():
            merged = CollectorRegistry()
            MultiProcessCollector(merged, path=os.environ[MULTIPROCESS_DIR])
            text = generate_latest(merged)
        else:
            text = generate_latest(self.registry)
        if snapshot is not None:
            text += generate_latest(_SnapshotGauges(snapshot))
        return text.decode()


def multiprocess_mode() -> bool:
    """True when prometheus_client keeps its values in files shared by processes (it decides
    once, at import, from :data:`MULTIPROCESS_DIR`)."""
    return values.ValueClass is not values.MutexValue and bool(os.environ.get(MULTIPROCESS_DIR))


class _SnapshotGauges:
    """The served store version and catalogue sizes, read when the metrics are rendered."""

    def __init__(self, snapshot: Snapshot) -> None:
        self.snapshot = snapshot

    def collect(self) -> Iterator[Metric]:
        info = GaugeMetricFamily(
            "peace_store_info", "The served store version (value 1).", labels=("version",)
        )
        info.add_metric((self.snapshot.version.version,), 1)
        yield info
        items = GaugeMetricFamily(
            "peace_catalogue_items", "Items per served domain.", labels=("domain", "ranker")
        )
        for name, state in sorted(self.snapshot.domains.items()):
            items.add_metric((name, state.ranker), state.size)
        yield items
