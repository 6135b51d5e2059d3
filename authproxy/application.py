"""Wiring: build every part of authproxy from a validated Config.

The one place that knows all the parts. Each part gets its collaborators passed in
(reactor, key ring, storage, upstream provider), so tests can build any subset.
Startup checks that can fail (key files, development-upstream restrictions) raise
ConfigError here, before anything listens.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import attrs
from twisted.application.service import IService, Service
from twisted.logger import Logger
from twisted.web.server import Site

from authproxy.authserver.jwks import JWKSResource
from authproxy.authserver.routes import auth_routes
from authproxy.config import Config, ConfigError
from authproxy.http.connection_limits import ConnectionLimits
from authproxy.http.hosts import ServedHosts
from authproxy.http.request_id import RequestIds
from authproxy.http.responses import TrustedProxies
from authproxy.http.routing import (
    HealthResource,
    JSONNotFound,
    PrefixTable,
    Readiness,
    ReadyResource,
)
from authproxy.http.site import AuthproxySite
from authproxy.keys.ring import KeyFileError, KeyRing, KeySources
from authproxy.keys.watcher import SecretWatcher
from authproxy.ops.access_log import AccessLog
from authproxy.ops.metrics import AuthproxyMetrics, MetricsResource, metrics_only_site
from authproxy.ops.shutdown import Drain
from authproxy.ops.signals import HangupHandler
from authproxy.proxy import make_proxy_resource, make_request_factory, proxy_routes
from authproxy.proxy.early import BodyGate
from authproxy.storage import Storage
from authproxy.storage.factory import build_storage
from authproxy.storage.sweeper import StorageSweeper
from authproxy.supervisor import backend_services
from authproxy.upstream.reachability import ReachabilityProbe
from authproxy.upstream.registry import make_upstream_provider, upstream_services

log = Logger()


@attrs.frozen
class HostFacilities:
    """What authproxy may do beyond its reactor's timers and listeners.

    Decided here, never by inspecting the reactor: the twistd daemon turns both on
    (``DAEMON``); an application built on a test reactor gets neither unless it asks.
    """

    #: Watch the key directories with inotify too (else they are only polled).
    inotify: bool = False
    #: Open a TCP connection to the IdP before each login redirect (``ReachabilityProbe``).
    idp_probe: bool = False
    #: Bind SIGHUP (process-wide) to key re-reading and log reopening (``HangupHandler``).
    signals: bool = False


DAEMON = HostFacilities(inotify=True, idp_probe=True, signals=True)


@attrs.define
class Application:
    config: Config
    reactor: Any
    root: PrefixTable
    site: AuthproxySite
    readiness: Readiness
    ring: KeyRing
    storage: Storage
    services: list[IService] = attrs.field(factory=list)
    provider: Any = None
    #: graceful shutdown (ops/shutdown.py)
    drain: Drain | None = None
    #: services stopped after all others: the supervised backend
    last_services: list[IService] = attrs.field(factory=list)
    #: the Site serving only /metrics on ``server.metrics_listen`` (None: on the main Site)
    metrics_site: Site | None = None


class _Closing(Service):
    """Runs ``close`` when the application stops (closes the backend connection pool)."""

    def __init__(self, close: Callable[[], Any]) -> None:
        self._close = close

    def stopService(self) -> Any:
        super().stopService()
        return self._close()


def load_ring(config: Config) -> tuple[KeyRing, KeySources]:
    sources = KeySources.from_config(config.auth_server)
    try:
        return KeyRing.load(sources, log), sources
    except KeyFileError as e:
        raise ConfigError([f"auth_server keys: {e}"]) from None


def bound_connections(site: AuthproxySite, config: Config) -> None:
    """The head deadline, idle timeout and connection caps of ``server``."""
    server = config.server
    site.header_timeout = server.header_timeout
    site.timeOut = site.idle_timeout = server.idle_timeout
    site.limits = ConnectionLimits(
        server.max_connections,
        server.max_connections_per_source,
        TrustedProxies.from_cidrs(server.trusted_proxies),
    )


def build_application(
    config: Config, reactor: Any, facilities: HostFacilities = HostFacilities()
) -> Application:
    """Every part of authproxy for a validated ``config``, on ``reactor``."""
    readiness = Readiness()
    root = PrefixTable()
    services: list[IService] = []
    metrics = AuthproxyMetrics(route_of=root.route_name)
    metrics.add_process()
    events = metrics.events

    ring, sources = load_ring(config)
    watcher = SecretWatcher(
        ring=ring, sources=sources, clock=reactor, use_inotify=facilities.inotify
    )
    services.append(watcher)
    if facilities.signals:
        services.append(HangupHandler(reactor, watcher))
    metrics.add_key_reloads(watcher)
    readiness.register("keys", lambda: (True, watcher.readiness_detail()["keys"]))

    storage = build_storage(config, reactor, ring)
    services.extend(storage.services)
    if storage.readiness is not None:
        readiness.register("storage", storage.readiness)
    sweep_interval = config.storage.sweep_interval
    services.append(StorageSweeper(storage.upkeep, reactor, interval=sweep_interval))

    secret_env = config.upstream.client_secret_env
    backend, probe = backend_services(
        config.backend, reactor, withheld=(secret_env,) if secret_env else ()
    )
    if probe is not None:
        readiness.register("backend", probe)

    reachability = ReachabilityProbe(reactor) if facilities.idp_probe else None
    provider = make_upstream_provider(
        config, storage.upstream_sessions, reactor, reachability=reachability
    )
    services.extend(upstream_services(provider))
    count_requests = getattr(provider, "count_requests", None)  # an IdP over HTTP
    if count_requests is not None:
        count_requests(events)
    readiness.register("upstream", provider.readiness)

    root.mount_all(auth_routes(config, ring, storage, provider, reactor, events=events))
    root.mount_all(proxy_routes(config))
    proxy = make_proxy_resource(config, ring, storage.revocations, provider, reactor, events=events)
    metrics.add_backend_connections(lambda: proxy.limits.in_use)
    root.fallback = proxy
    services.append(_Closing(proxy.close))
    root.mount("/health", HealthResource())
    root.mount("/ready", ReadyResource(readiness))
    root.mount("/.well-known/jwks.json", JWKSResource(ring))

    metrics.add_state(ring, readiness)
    metrics.add_storage(storage.upkeep)
    metrics_site = None
    if config.server.metrics_listen is None:
        root.mount("/metrics", MetricsResource(metrics))
    else:
        # Not relayed to the MCP server either: /metrics is authproxy's, wherever it is served.
        root.mount("/metrics", JSONNotFound())
        metrics_site = metrics_only_site(metrics, reactor)
    # Unknown well-known names are not the MCP server's: a 404, not the guard's 401.
    root.mount("/.well-known/", JSONNotFound(), prefix=True)
    root.hosts = ServedHosts(config.server.public_url, config.server.allowed_hosts)
    # Probes and scrapers address the pod by its IP (Kubernetes httpGet sends Host: IP:port).
    root.any_host_paths = frozenset({b"/health", b"/ready", b"/metrics"})

    site = AuthproxySite(
        root,
        reactor=reactor,
        requestFactory=make_request_factory(config.server.max_request_body),
        # Twisted would parse every POST's Content-Type with the email package and buffer
        # form bodies into request.args: costly on the proxy's hot path and never needed,
        # since the endpoints that take forms parse their own bodies.
        parsePOSTFormSubmission=False,
    )
    site.displayTracebacks = False
    bound_connections(site, config)
    site.head_check = BodyGate(
        root.route_name, proxy.guard, config.server.max_request_body, root.misdirected
    )
    site.metrics = metrics
    drain = Drain(reactor, site.open_channels, proxy.end_streams, config.server.shutdown_grace)
    readiness.register("shutdown", drain.readiness)
    trusted = TrustedProxies.from_cidrs(config.server.trusted_proxies)
    site.request_ids = RequestIds(trusted)
    logging = config.logging
    # Access lines are info events: a level above info leaves them out, as it always did.
    if logging.access_log and logging.level.lower() in ("debug", "info"):
        site.access_log = AccessLog(reactor, logging.format, trusted=trusted)
        services.insert(0, site.access_log)  # stopped last: it flushes what the others log
    return Application(
        config=config,
        reactor=reactor,
        root=root,
        site=site,
        readiness=readiness,
        ring=ring,
        storage=storage,
        services=services,
        provider=provider,
        drain=drain,
        last_services=backend,
        metrics_site=metrics_site,
    )
