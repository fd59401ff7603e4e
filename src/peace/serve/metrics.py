"""Request counters and a latency histogram, rendered in the Prometheus text format (v0.0.4).

Labels stay bounded: an endpoint is a route template or ``unmatched``, a method outside
:data:`METHODS` is counted as ``other``, a status outside 100-599 as 0.
"""

from __future__ import annotations

import threading
from collections import defaultdict
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from peace.serve.state import Snapshot

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"})
"""HTTP methods that get their own metric label; any other method is counted as ``other``."""
UNMATCHED = "unmatched"
"""Endpoint label of unknown paths and of requests refused before routing (e.g. 401)."""


class Metrics:
    """Counters and a latency histogram, rendered in the Prometheus text format (v0.0.4)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.requests: dict[tuple[str, str, int], int] = defaultdict(int)
        self.latency_buckets: dict[str, list[int]] = {}
        self.latency_sum: dict[str, float] = defaultdict(float)
        self.latency_count: dict[str, int] = defaultdict(int)
        self.rankers: dict[str, int] = defaultdict(int)
        self.events: dict[str, int] = defaultdict(int)

    def observe(self, endpoint: str, method: str, status: int, seconds: float) -> None:
        """Count one request. Labels stay bounded: ``endpoint`` is a route template or
        ``unmatched``, a method outside :data:`METHODS` becomes ``other``, and a status outside
        100-599 becomes 0."""
        method = method if method in METHODS else "other"
        status = status if 100 <= status <= 599 else 0
        with self._lock:
            self.requests[(endpoint, method, status)] += 1
            buckets = self.latency_buckets.setdefault(endpoint, [0] * len(LATENCY_BUCKETS))
            for i, bound in enumerate(LATENCY_BUCKETS):
                if seconds <= bound:
                    buckets[i] += 1
            self.latency_sum[endpoint] += seconds
            self.latency_count[endpoint] += 1

    def ranker_used(self, ranker: str) -> None:
        with self._lock:
            self.rankers[ranker] += 1

    def event(self, name: str) -> None:
        with self._lock:
            self.events[name] += 1

    def render(self, snapshot: Snapshot | None) -> str:
        lines = [
            "# HELP peace_requests_total HTTP requests by endpoint, method and status.",
            "# TYPE peace_requests_total counter",
        ]
        with self._lock:
            for (ep, method, status), n in sorted(self.requests.items()):
                lines.append(
                    f'peace_requests_total{{endpoint="{_esc(ep)}",method="{method}",'
                    f'status="{status}"}} {n}'
                )
            lines += [
                "# HELP peace_request_duration_seconds Request latency by endpoint.",
                "# TYPE peace_request_duration_seconds histogram",
            ]
            for ep, buckets in sorted(self.latency_buckets.items()):
                label = f'endpoint="{_esc(ep)}"'
                for bound, n in zip(LATENCY_BUCKETS, buckets, strict=True):
                    lines.append(
                        f'peace_request_duration_seconds_bucket{{{label},le="{bound}"}} {n}'
                    )
                lines.append(
                    f'peace_request_duration_seconds_bucket{{{label},le="+Inf"}} '
                    f"{self.latency_count[ep]}"
                )
                lines.append(
                    f"peace_request_duration_seconds_sum{{{label}}} {self.latency_sum[ep]:.6f}"
                )
                lines.append(
                    f"peace_request_duration_seconds_count{{{label}}} {self.latency_count[ep]}"
                )
            lines += [
                "# HELP peace_ranker_used_total Scored requests by the ranker that served.",
                "# TYPE peace_ranker_used_total counter",
            ]
            for ranker, n in sorted(self.rankers.items()):
                lines.append(f'peace_ranker_used_total{{ranker="{ranker}"}} {n}')
            lines += [
                "# HELP peace_events_total Reloads, reload failures and run-time edits.",
                "# TYPE peace_events_total counter",
            ]
            for name, n in sorted(self.events.items()):
                lines.append(f'peace_events_total{{event="{name}"}} {n}')
        if snapshot is not None:
            lines += [
                "# HELP peace_store_info The served store version (value 1).",
                "# TYPE peace_store_info gauge",
                f'peace_store_info{{version="{_esc(snapshot.version.version)}"}} 1',
                "# HELP peace_catalogue_items Items per served domain.",
                "# TYPE peace_catalogue_items gauge",
            ]
            for name, state in sorted(snapshot.domains.items()):
                lines.append(
                    f'peace_catalogue_items{{domain="{_esc(name)}",'
                    f'ranker="{state.ranker}"}} {state.size}'
                )
        return "\n".join(lines) + "\n"


def _esc(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
