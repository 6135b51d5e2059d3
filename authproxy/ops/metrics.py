"""Prometheus metrics at ``/metrics``.

Requests are counted where every request already passes once: ``AuthproxySite.log``.
Paths are reduced to the route that served them (never the raw path, whose variety would
explode label cardinality, and never the query, which carries codes). Key-ring, key-reload,
backend-connection and readiness figures are read when scraped, so they are never stale.

Events (logins, grants, refusals, IdP requests...) are counted by ``EventCounters``, handed
to the parts where they happen. Every label value comes from a small fixed set (an OAuth
error code, a grant type this server supports, a refusal reason), never from the request.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, Protocol

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from twisted.web.resource import Resource
from twisted.web.server import Request, Site

from authproxy.http.routing import PrefixTable, Readiness
from authproxy.keys.ring import KeyRing


class LabelledCounter:
    """A labelled Counter whose children are resolved once per label tuple.

    ``Counter.labels`` takes a lock and walks a dict per call; a hot path only pays a dict
    lookup here. Callers pass label values from fixed sets (see the module docstring).
    """

    def __init__(
        self, name: str, documentation: str, labels: list[str], registry: CollectorRegistry
    ) -> None:
        self._counter = Counter(name, documentation, labels, registry=registry)
        self._children: dict[tuple[str, ...], Any] = {}

    def inc(self, *values: str) -> None:
        child = self._children.get(values)
        if child is None:
            child = self._children[values] = self._counter.labels(*values)
        child.inc()


#: IdP request latency buckets: an IdP answers in tens to hundreds of milliseconds.
_IDP_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class EventCounters:
    """What happened, for alerting: logins, grants, reuse, refusals, IdP requests, streams.

    Built by ``AuthproxyMetrics`` on its registry; parts built without one (unit tests,
    embedding programs) get their own, unexported (``EventCounters()``).
    """

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry = registry or CollectorRegistry(auto_describe=True)
        self.logins = LabelledCounter(
            "authproxy_logins",
            "Upstream logins finished at /oauth/callback, by outcome.",
            ["outcome"],
            registry,
        )
        self.token_grants = LabelledCounter(
            "authproxy_token_grants",
            "Token requests by grant type and outcome (success, or the OAuth error code).",
            ["grant_type", "outcome"],
            registry,
        )
        self.refresh_token_reuse = Counter(
            "authproxy_refresh_token_reuse",
            "Rotated refresh tokens presented after the grace: each revoked its family.",
            registry=registry,
        )
        self.authorization_code_replay = Counter(
            "authproxy_authorization_code_replay",
            "Authorization codes redeemed a second time: each revoked its tokens.",
            registry=registry,
        )
        self.revocations = LabelledCounter(
            "authproxy_revocations",
            "Tokens revoked at /oauth/revoke, by token type.",
            ["token_type"],
            registry,
        )
        self.registrations = LabelledCounter(
            "authproxy_registrations",
            "Dynamic client registrations, by outcome (success, or the OAuth error code).",
            ["outcome"],
            registry,
        )
        self.client_document_fetches = LabelledCounter(
            "authproxy_client_document_fetches",
            "Client ID metadata documents fetched from the network (cache misses), by outcome: "
            "success, fetch_failed (address refused, unreachable, HTTP status, not JSON, too "
            "large, timeout) or invalid_document (fetched, but describes no usable client).",
            ["outcome"],
            registry,
        )
        self.guard_refusals = LabelledCounter(
            "authproxy_guard_refusals",
            "Proxied requests the bearer guard refused, by reason.",
            ["reason"],
            registry,
        )
        self.rate_limit_refusals = LabelledCounter(
            "authproxy_rate_limit_refusals",
            "Requests refused by a rate limit, by limit.",
            ["limit"],
            registry,
        )
        self.upstream_requests = LabelledCounter(
            "authproxy_upstream_requests",
            "Requests to the upstream IdP, by endpoint and outcome.",
            ["endpoint", "outcome"],
            registry,
        )
        self._upstream_duration = Histogram(
            "authproxy_upstream_request_duration_seconds",
            "Time from sending a request to the upstream IdP to its answer (or failure).",
            ["endpoint"],
            buckets=_IDP_BUCKETS,
            registry=registry,
        )
        self._upstream_children: dict[str, Any] = {}
        self.open_streams = Gauge(
            "authproxy_open_streams",
            "Event streams (text/event-stream responses) being relayed now.",
            registry=registry,
        )
        self.streams_ended = LabelledCounter(
            "authproxy_streams_ended",
            "Relayed event streams that ended, by who ended them (backend, backend_error, "
            "client, proxy, shutdown).",
            ["by"],
            registry,
        )

    def upstream_request(self, endpoint: str, outcome: str, elapsed: float) -> None:
        """One request to the IdP's ``endpoint`` ended with ``outcome`` after ``elapsed`` s."""
        self.upstream_requests.inc(endpoint, outcome)
        child = self._upstream_children.get(endpoint)
        if child is None:
            child = self._upstream_children[endpoint] = self._upstream_duration.labels(endpoint)
        child.observe(elapsed)


class AuthproxyMetrics:
    """The registry and the request instruments of one authproxy process."""

    def __init__(self, route_of: Callable[[bytes], str] = lambda path: "proxy") -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._route_of = route_of
        self.events = EventCounters(self.registry)
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

    def add_process(self) -> None:
        """prometheus-client's process (CPU, memory, fds), platform and GC collectors."""
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        GCCollector(registry=self.registry)

    def add_key_reloads(self, reloads: KeyReloads) -> None:
        self.registry.register(_KeyReloadCollector(reloads))

    def add_backend_connections(self, in_use: Callable[[], int]) -> None:
        self.registry.register(_BackendCollector(in_use))


class KeyReloads(Protocol):
    """What the key watcher reports: the last reload's error, the last success's time."""

    last_error: str | None
    last_success_at: float | None


class _KeyReloadCollector(Collector):
    def __init__(self, reloads: KeyReloads) -> None:
        self._reloads = reloads

    def collect(self) -> Iterable[Metric]:
        ok = GaugeMetricFamily(
            "authproxy_key_reload_ok",
            "1 when the last reading of the key files succeeded, 0 while authproxy keeps "
            "serving the previous keys because the files on disk are unusable.",
        )
        ok.add_metric([], 1 if self._reloads.last_error is None else 0)
        at = GaugeMetricFamily(
            "authproxy_key_reload_last_success_timestamp_seconds",
            "Unix time of the last successful reading of the key files.",
        )
        at.add_metric([], self._reloads.last_success_at or 0.0)
        return [ok, at]


class _BackendCollector(Collector):
    def __init__(self, in_use: Callable[[], int]) -> None:
        self._in_use = in_use

    def collect(self) -> Iterable[Metric]:
        connections = GaugeMetricFamily(
            "authproxy_backend_connections",
            "Connections to the MCP server in use now (requests in flight and open streams).",
        )
        connections.add_metric([], self._in_use())
        return [connections]


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


class _UnloggedSite(Site):
    def log(self, request: Any) -> None:
        """Scrapes are not access-logged (one every few seconds, every one alike)."""


def metrics_only_site(metrics: AuthproxyMetrics, reactor: Any) -> Site:
    """The Site of ``server.metrics_listen``: ``/metrics`` and nothing else (JSON 404s)."""
    root = PrefixTable()
    root.mount("/metrics", MetricsResource(metrics))
    site = _UnloggedSite(root, reactor=reactor)
    site.displayTracebacks = False
    return site
