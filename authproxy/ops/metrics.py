"""Prometheus metrics at ``/metrics``.

Requests are counted where every request already passes once: ``AuthproxySite.log``.
Paths are reduced to the route that served them (never the raw path, whose variety would
explode label cardinality, and never the query, which carries codes). Key-ring and
readiness figures are read when scraped, so they are never stale.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, Protocol

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from twisted.web.resource import Resource
from twisted.web.server import Request

from authproxy.http.routing import Readiness
from authproxy.keys.ring import KeyRing


class AuthproxyMetrics:
    """The registry and the request instruments of one authproxy process."""

    def __init__(self, route_of: Callable[[bytes], str]) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._route_of = route_of
        self._children: dict[tuple[str, str, int], tuple[Any, Any]] = {}
        self.requests = Counter(
            "authproxy_http_requests",
            "HTTP requests answered, by route and status code.",
            ["route", "method", "code"],
            registry=self.registry,
        )
        self.duration = Histogram(
            "authproxy_http_request_duration_seconds",
            "Time from request received to response finished (streams: their whole life).",
            ["route"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10, 60),
            registry=self.registry,
        )

    def observe(self, request: Request, elapsed: float | None) -> None:
        # PrefixTable.render labelled the request; look it up only if it never got there.
        route = getattr(request, "route", None) or self._route_of(request.path)
        method = request.method.decode("ascii", "replace")
        if method not in ("GET", "POST", "DELETE", "OPTIONS", "HEAD", "PUT", "PATCH"):
            method = "other"
        key = (route, method, request.code)
        children = self._children.get(key)
        if children is None:
            # labels() costs a lock and a dict walk per call: resolve each series once.
            children = (
                self.requests.labels(route, method, str(request.code)),
                self.duration.labels(route),
            )
            self._children[key] = children
        children[0].inc()
        if elapsed is not None:
            children[1].observe(elapsed)

    def add_state(self, ring: KeyRing, readiness: Readiness) -> None:
        self.registry.register(_StateCollector(ring, readiness))

    def add_storage(self, storage: StorageFigures) -> None:
        self.registry.register(_StorageCollector(storage))


class StorageFigures(Protocol):
    """What a storage reports for metrics (its upkeep, ``Storage.upkeep``)."""

    def record_counts(self) -> dict[str, int]: ...

    def refusals(self) -> dict[str, int]: ...


class _StorageCollector(Collector):
    """Read at scrape time from the storage's own counts."""

    def __init__(self, storage: StorageFigures) -> None:
        self._storage = storage

    def collect(self) -> Iterable[Metric]:
        records = GaugeMetricFamily(
            "authproxy_storage_records", "Records held, by collection.", labels=["collection"]
        )
        for collection, size in sorted(self._storage.record_counts().items()):
            records.add_metric([collection], size)
        refusals = CounterMetricFamily(
            "authproxy_storage_refusals",
            "Requests refused because a collection was full at its cap and nothing of the "
            "requester's own could make room (a revocation is never forgotten instead).",
            labels=["collection"],
        )
        for collection, count in sorted(self._storage.refusals().items()):
            refusals.add_metric([collection], count)
        return [records, refusals]


class _StateCollector(Collector):
    def __init__(self, ring: KeyRing, readiness: Readiness) -> None:
        self._ring = ring
        self._readiness = readiness

    def collect(self) -> Iterable[Metric]:
        generation = GaugeMetricFamily(
            "authproxy_key_ring_generation", "Bumped on every successful key reload."
        )
        generation.add_metric([], self._ring.generation)
        keys = GaugeMetricFamily(
            "authproxy_signing_keys", "Signing keys in the ring (the first signs)."
        )
        keys.add_metric([], len(self._ring.signing_keys))
        _, details, missing = self._readiness.evaluate()
        ready = GaugeMetricFamily(
            "authproxy_ready", "1 when the named readiness condition holds.", labels=["check"]
        )
        for name in details:
            ready.add_metric([name], 0 if name in missing else 1)
        return [generation, keys, ready]


class MetricsResource(Resource):
    """GET /metrics in the Prometheus text format."""

    isLeaf = True

    def __init__(self, metrics: AuthproxyMetrics) -> None:
        super().__init__()
        self._metrics = metrics

    def render_GET(self, request: Request) -> bytes:
        request.setHeader("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
        request.setHeader("Cache-Control", "no-store")
        return generate_latest(self._metrics.registry)
