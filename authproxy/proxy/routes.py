"""What the proxy contributes to the root prefix table, and how its parts are built."""

from __future__ import annotations

from typing import Any

from twisted.web.client import Agent, HTTPConnectionPool
from twisted.web.iweb import IAgent
from twisted.web.resource import Resource

from authproxy.config import Config
from authproxy.interfaces import IUpstreamProvider
from authproxy.keys import KeyRing
from authproxy.proxy.guard import BearerGuard
from authproxy.proxy.metadata import WELL_KNOWN, ProtectedResourceMetadata
from authproxy.proxy.resource import MCPProxy
from authproxy.storage.interface import IStorage

# Idle pooled connections are closed well before typical server keep-alive timeouts
# would race a new request on them.
CACHED_CONNECTION_TIMEOUT = 30


def proxy_routes(config: Config) -> dict[str, Resource]:
    """Exact paths served beside the proxy: the RFC 9728 metadata (plain and path-inserted)."""
    metadata = ProtectedResourceMetadata(config)
    return {WELL_KNOWN: metadata, WELL_KNOWN + config.backend.path: metadata}


def make_pool(config: Config, reactor: Any) -> HTTPConnectionPool:
    """A persistent connection pool bounded by ``backend.max_connections`` per host."""
    pool = HTTPConnectionPool(reactor, persistent=True)
    pool.maxPersistentPerHost = config.backend.max_connections
    pool.cachedConnectionTimeout = CACHED_CONNECTION_TIMEOUT
    pool.retryAutomatically = True
    return pool


def make_backend_agent(config: Config, reactor: Any, pool: HTTPConnectionPool) -> IAgent:
    """The Agent that talks to the backend MCP server (connect timeout from config)."""
    return Agent(reactor, connectTimeout=config.backend.connect_timeout, pool=pool)


def make_proxy_resource(
    config: Config,
    ring: KeyRing,
    storage: IStorage,
    provider: IUpstreamProvider | None,
    reactor: Any,
    agent: IAgent | None = None,
) -> MCPProxy:
    """The guarded streaming proxy, to mount as the root prefix table's fallback.

    Without ``agent`` a pooled Agent is built; ``close()`` on the result closes its idle
    connections (call it when the service stops).
    """
    pool: HTTPConnectionPool | None = None
    if agent is None:
        pool = make_pool(config, reactor)
        agent = make_backend_agent(config, reactor, pool)
    guard = BearerGuard.from_config(config, ring, storage, reactor)
    return MCPProxy(
        config=config, guard=guard, agent=agent, clock=reactor, provider=provider, pool=pool
    )
